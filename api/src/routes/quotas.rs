//! Tenant quotas: what a tenant may hold and holds now (its members read it), and the
//! per-tenant overrides only a platform admin sets.

use crate::auth::Caller;
use crate::body::JsonBody;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use actix_web::{HttpResponse, web};
use bulkhead_core::audit::AuditResult;
use bulkhead_core::authz::{Action, Object};
use bulkhead_core::domain::{FieldError, Validator};
use bulkhead_core::limits::{MAX_QUOTA, Quota};
use bulkhead_core::store::{self, quotas::Overrides};
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum QuotaSource {
    /// The installation's default (`BULKHEAD_QUOTA_*`).
    Default,
    /// Set for this tenant by a platform admin.
    Override,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct QuotaView {
    pub quota: Quota,
    /// The most the tenant may hold at once.
    pub limit: i64,
    /// What it holds now.
    pub used: i64,
    pub source: QuotaSource,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = crate::examples::quotas_view)]
pub struct QuotasView {
    /// `environments` (not yet destroyed), `queued_jobs` (queued or running), `api_keys` (live)
    /// and `members` (active or invited; API keys are counted as keys).
    pub quotas: Vec<QuotaView>,
}

/// The tenant's overrides: a number sets one, `null` or absent returns it to the default.
#[derive(Debug, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = crate::examples::set_quotas_request)]
pub struct SetQuotasRequest {
    #[serde(default, deserialize_with = "crate::body::whole_number")]
    #[schema(minimum = 0, maximum = 100000)]
    pub environments: Option<i64>,
    #[serde(default, deserialize_with = "crate::body::whole_number")]
    #[schema(minimum = 0, maximum = 100000)]
    pub queued_jobs: Option<i64>,
    #[serde(default, deserialize_with = "crate::body::whole_number")]
    #[schema(minimum = 0, maximum = 100000)]
    pub api_keys: Option<i64>,
    #[serde(default, deserialize_with = "crate::body::whole_number")]
    #[schema(minimum = 0, maximum = 100000)]
    pub members: Option<i64>,
}

fn view(
    state: &AppState,
    tenant_id: uuid::Uuid,
    conn: &mut diesel::PgConnection,
) -> ApiResult<QuotasView> {
    let standings = store::quotas::standings(conn, tenant_id, &state.config.limits.quotas)?;
    Ok(QuotasView {
        quotas: standings
            .into_iter()
            .map(|s| QuotaView {
                quota: s.quota,
                limit: s.limit,
                used: s.used,
                source: if s.overridden {
                    QuotaSource::Override
                } else {
                    QuotaSource::Default
                },
            })
            .collect(),
    })
}

#[utoipa::path(get, operation_id = "getTenantQuotas", path = "/v1/tenants/{tenant}/quotas", tag = "tenants", security(("bearer" = [])),
    params(("tenant" = String, Path, description = "Tenant id or slug")),
    responses((status = 200, body = QuotasView), (status = 404, body = crate::error::Problem)))]
pub async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let tenant = state
        .authorize_tenant(&caller, &path, Object::Tenant, Action::Read)
        .await?;
    let app = state.clone();
    let quotas = state.db(move |conn| view(&app, tenant.id, conn)).await?;
    Ok(HttpResponse::Ok().json(quotas))
}

#[utoipa::path(put, operation_id = "setTenantQuotas", path = "/v1/tenants/{tenant}/quotas", tag = "tenants", security(("bearer" = [])),
    params(("tenant" = String, Path, description = "Tenant id or slug")),
    request_body = SetQuotasRequest,
    responses((status = 200, description = "The overrides are in force; what the tenant already \
        holds above a lowered quota stays, and nothing more is added until it is below", body = QuotasView),
        (status = 403, description = "Only platform admins set quotas", body = crate::error::Problem),
        (status = 404, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn set(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    body: JsonBody<SetQuotasRequest>,
) -> ApiResult<HttpResponse> {
    let tenant = state
        .authorize_tenant(&caller, &path, Object::Tenant, Action::Read)
        .await?;
    if !caller.is_platform_admin() {
        let reason = "only platform admins set a tenant's quotas".to_owned();
        return Err(state
            .deny(&caller, &tenant, Object::Tenant, Action::Update, reason)
            .await);
    }
    let body = body.into_inner()?;
    let mut v = Validator::new();
    for (quota, value) in [
        (Quota::Environments, body.environments),
        (Quota::QueuedJobs, body.queued_jobs),
        (Quota::ApiKeys, body.api_keys),
        (Quota::Members, body.members),
    ] {
        if value.is_some_and(|n| !(0..=MAX_QUOTA).contains(&n)) {
            v.push(FieldError::new(
                quota.as_str(),
                format!("must be from 0 to {MAX_QUOTA}, or null for the installation's default"),
            ));
        }
    }
    v.finish().map_err(ApiError::Validation)?;
    let overrides = Overrides {
        environments: body.environments,
        queued_jobs: body.queued_jobs,
        api_keys: body.api_keys,
        members: body.members,
    };
    let app = state.clone();
    let quotas = state
        .db(move |conn| {
            conn.build_transaction().run(|conn| {
                store::tenants::lock_for_change(conn, tenant.id)?;
                store::quotas::set(conn, tenant.id, &overrides, caller.id)?;
                store::audit::append(
                    conn,
                    &caller.audit(
                        Some(tenant.id),
                        "tenant.quotas_set",
                        format!("tenant/{}", tenant.slug),
                        AuditResult::Success,
                        json!(body),
                    ),
                )?;
                view(&app, tenant.id, conn)
            })
        })
        .await?;
    Ok(HttpResponse::Ok().json(quotas))
}
