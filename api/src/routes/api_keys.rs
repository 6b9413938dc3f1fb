//! API keys of a tenant: create (secret shown once), list, revoke.

use crate::auth::Caller;
use crate::body::JsonBody;
use crate::error::{ApiError, ApiResult};
use crate::routes::tenants::{ensure_not_leaving, ensure_quota, lock_active_as};
use crate::routes::{PageOf, PageQuery, parse_id};
use crate::state::AppState;
use actix_web::{HttpResponse, web};
use bulkhead_core::audit::AuditResult;
use bulkhead_core::authz::{Action, Object};
use bulkhead_core::domain::{TenantRole, Validator, parse_display_text};
use bulkhead_core::limits::Quota;
use bulkhead_core::secrets;
use bulkhead_core::store::{self, api_keys::ApiKey, api_keys::NewApiKey, principals::NewPrincipal};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

page_schema!(ApiKeyPage, ApiKeyView, api_key_page);

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = crate::examples::api_key_view)]
pub struct ApiKeyView {
    pub id: Uuid,
    pub name: String,
    pub role: String,
    /// `bk_` and the first 8 characters of the secret, to recognise it.
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// Updated at most once a minute.
    pub last_used_at: Option<DateTime<Utc>>,
}

impl From<ApiKey> for ApiKeyView {
    fn from(k: ApiKey) -> Self {
        Self {
            id: k.id,
            name: k.name,
            role: k.role,
            prefix: k.prefix,
            created_at: k.created_at,
            expires_at: k.expires_at,
            revoked_at: k.revoked_at,
            last_used_at: k.last_used_at,
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = crate::examples::create_api_key_request)]
pub struct CreateApiKeyRequest {
    #[schema(schema_with = crate::schemas::key_name)]
    pub name: String,
    /// `tenant_admin`, `operator`, `approver`, `viewer` or `billing`.
    #[schema(schema_with = crate::schemas::key_role)]
    pub role: String,
    /// 1 to 3650; omitted (or `null`) = never expires.
    #[serde(default, deserialize_with = "crate::body::whole_number")]
    #[schema(minimum = 1, maximum = 3650)]
    pub expires_in_days: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = crate::examples::api_key_created)]
pub struct ApiKeyCreated {
    pub api_key: ApiKeyView,
    /// The key itself, shown only in this response; store it in a secret manager.
    pub secret: String,
}

#[utoipa::path(post, operation_id = "createApiKey", path = "/v1/tenants/{tenant}/api-keys", tag = "api-keys", security(("bearer" = [])),
    params(("tenant" = String, Path, description = "Tenant id or slug")),
    request_body = CreateApiKeyRequest, responses(
        (status = 201, body = ApiKeyCreated), (status = 403, body = crate::error::Problem),
        (status = 404, body = crate::error::Problem),
        (status = 409, description = "The tenant is offboarding, or at its `api_keys` quota (`quota-exceeded`)", body = crate::error::Problem),
        (status = 422, body = crate::error::Problem)))]
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    body: JsonBody<CreateApiKeyRequest>,
) -> ApiResult<HttpResponse> {
    let tenant = state
        .authorize_tenant(&caller, &path, Object::ApiKey, Action::Create)
        .await?;
    let body = body.into_inner()?;
    let mut v = Validator::new();
    let name = v.check(parse_display_text("name", &body.name).and_then(|n| {
        if n.chars().count() > 100 {
            Err(bulkhead_core::domain::FieldError::new(
                "name",
                "must be at most 100 characters",
            ))
        } else {
            Ok(n)
        }
    }));
    let role = v.check(TenantRole::parse_for_api_key("role", &body.role));
    let expires_at = match body.expires_in_days {
        None => None,
        Some(days) if (1..=3650).contains(&days) => Some(Utc::now() + chrono::Duration::days(days)),
        Some(_) => {
            v.push(bulkhead_core::domain::FieldError::new(
                "expires_in_days",
                "must be from 1 to 3650, or omitted for a key that does not expire",
            ));
            None
        }
    };
    v.finish().map_err(ApiError::Validation)?;
    let (Some(name), Some(role)) = (name, role) else {
        return Err(ApiError::internal(anyhow::anyhow!(
            "validated fields missing"
        )));
    };
    ensure_not_leaving(&tenant)?;
    // No one grants more than they hold, and keys do not mint keys (a key made by a key would
    // outlive its parent's expiry and revocation).
    let refusal = if caller.key.is_some() {
        Some(
            "API keys cannot create API keys (a key made by a key would outlive its parent's \
             expiry and revocation); sign in as a person who holds api_key:create in this tenant"
                .to_owned(),
        )
    } else {
        state.exceeds_own(&caller, &tenant, role).await
    };
    if let Some(reason) = refusal {
        return Err(state
            .deny(&caller, &tenant, Object::ApiKey, Action::Create, reason)
            .await);
    }
    let generated = secrets::generate_api_key();
    let secret = generated.secret.clone();
    let quotas = state.config.limits.quotas;
    let creator = caller.clone();
    let key = state
        .db(move |conn| {
            conn.build_transaction().run(|conn| {
                lock_active_as(conn, &tenant, &creator, Object::ApiKey, Action::Create)?;
                ensure_quota(conn, tenant.id, &tenant.slug, Quota::ApiKeys, 1, &quotas)?;
                let display_name = format!("API key {name} ({})", tenant.slug);
                let principal = store::principals::insert(
                    conn,
                    &NewPrincipal {
                        id: Uuid::now_v7(),
                        kind: "service_account",
                        email: None,
                        display_name: &display_name,
                        password_hash: None,
                        platform_role: None,
                        invitation_token_hash: None,
                        invitation_expires_at: None,
                    },
                )?;
                store::memberships::add(conn, principal.id, tenant.id, role.as_str(), Some(caller.id))?;
                let key = store::api_keys::insert(
                    conn,
                    &NewApiKey {
                        id: Uuid::now_v7(),
                        principal_id: principal.id,
                        tenant_id: tenant.id,
                        name: &name,
                        role: role.as_str(),
                        prefix: &generated.prefix,
                        secret_hash: &generated.hash,
                        created_by: Some(caller.id),
                        expires_at,
                    },
                )?;
                store::audit::append(
                    conn,
                    &caller.audit(
                        Some(tenant.id),
                        "api_key.create",
                        format!("api_key/{}", key.id),
                        AuditResult::Success,
                        json!({"name": key.name, "role": key.role, "prefix": key.prefix, "expires_at": key.expires_at}),
                    ),
                )?;
                Ok::<_, ApiError>(key)
            })
        })
        .await?;
    Ok(HttpResponse::Created().json(ApiKeyCreated {
        api_key: key.into(),
        secret,
    }))
}

#[utoipa::path(get, operation_id = "listApiKeys", path = "/v1/tenants/{tenant}/api-keys", tag = "api-keys", security(("bearer" = [])),
    params(("tenant" = String, Path, description = "Tenant id or slug"), PageQuery),
    responses((status = 200, body = ApiKeyPage), (status = 403, body = crate::error::Problem),
        (status = 404, body = crate::error::Problem)))]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    query: web::Query<PageQuery>,
) -> ApiResult<HttpResponse> {
    let tenant = state
        .authorize_tenant(&caller, &path, Object::ApiKey, Action::Read)
        .await?;
    let (limit, after) = (query.limit()?, query.uuid_cursor()?);
    let page = state
        .db(move |conn| Ok(store::api_keys::list(conn, tenant.id, after, limit)?))
        .await?;
    Ok(HttpResponse::Ok().json(PageOf::from_page(page, ApiKeyView::from)))
}

#[utoipa::path(delete, operation_id = "revokeApiKey", path = "/v1/tenants/{tenant}/api-keys/{key}", tag = "api-keys", security(("bearer" = [])),
    params(("tenant" = String, Path, description = "Tenant id or slug"), ("key" = Uuid, Path)),
    responses((status = 204, description = "Revoked; the key stops working on the next request"),
        (status = 403, body = crate::error::Problem), (status = 404, body = crate::error::Problem)))]
pub async fn revoke(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let (tenant_ref, key_ref) = path.into_inner();
    let tenant = state
        .authorize_tenant(&caller, &tenant_ref, Object::ApiKey, Action::Delete)
        .await?;
    let key_id = parse_id(&key_ref, "API key")?;
    state
        .db(move |conn| {
            conn.build_transaction().run(|conn| {
                // Under the tenant's lock, with its author re-checked, like every member's change.
                store::tenants::lock_for_change(conn, tenant.id)?;
                crate::routes::tenants::still_holds(
                    conn,
                    &tenant,
                    &caller,
                    Object::ApiKey,
                    Action::Delete,
                )?;
                let Some((key, withdrawn)) = store::api_keys::revoke(conn, tenant.id, key_id)?
                else {
                    return Err(ApiError::NotFound(format!(
                        "no live API key {key_id} in '{}'",
                        tenant.slug
                    )));
                };
                store::audit::append(
                    conn,
                    &caller.audit(
                        Some(tenant.id),
                        "api_key.delete",
                        format!("api_key/{}", key.id),
                        AuditResult::Success,
                        json!({"prefix": key.prefix}),
                    ),
                )?;
                crate::routes::members::audit_withdrawn(
                    conn,
                    &caller,
                    &tenant,
                    &withdrawn,
                    &format!("api_key/{}", key.id),
                )?;
                Ok(())
            })
        })
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
