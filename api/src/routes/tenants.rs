//! Tenants: onboard (idempotent), list what the caller can see, read, rename/retag, offboard.

use crate::auth::Caller;
use crate::body::JsonBody;
use crate::error::{ApiError, ApiResult};
use crate::idempotency;
use crate::routes::{PageOf, PageQuery};
use crate::state::AppState;
use actix_web::{HttpRequest, HttpResponse, web};
use bulkhead_core::audit::AuditResult;
use bulkhead_core::authz::{Action, Domain, Object};
use bulkhead_core::domain::{
    CostTags, PlatformRole, Region, Slug, TenantState, Tier, Validator, parse_display_text,
};
use bulkhead_core::limits::{Quota, QuotaDefaults};
use bulkhead_core::store::{self, tenants::NewTenant, tenants::Tenant, tenants::TenantChanges};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

page_schema!(TenantPage, TenantView, tenant_page);

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = crate::examples::tenant_view)]
pub struct TenantView {
    pub id: Uuid,
    pub slug: String,
    pub name: String,
    pub tier: String,
    pub region: String,
    /// `active`, `suspended`, `offboarding` or `offboarded`.
    pub state: String,
    #[schema(value_type = Object)]
    pub cost_tags: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Tenant> for TenantView {
    fn from(t: Tenant) -> Self {
        Self {
            id: t.id,
            slug: t.slug,
            name: t.name,
            tier: t.tier,
            region: t.region,
            state: t.state,
            cost_tags: t.cost_tags,
            created_at: t.created_at,
            updated_at: t.updated_at,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = crate::examples::create_tenant_request)]
pub struct CreateTenantRequest {
    /// `^[a-z][a-z0-9-]{2,39}$`, unique.
    #[schema(schema_with = crate::schemas::slug)]
    pub slug: String,
    #[schema(schema_with = crate::schemas::tenant_name)]
    pub name: String,
    /// `shared` or `dedicated`.
    #[schema(schema_with = crate::schemas::tier)]
    pub tier: String,
    /// Such as `eu-west-1`.
    #[schema(schema_with = crate::schemas::region)]
    pub region: String,
    #[serde(default, deserialize_with = "crate::body::present")]
    #[schema(schema_with = crate::schemas::cost_tags)]
    pub cost_tags: Option<serde_json::Value>,
}

struct ValidTenant {
    slug: Slug,
    name: String,
    tier: Tier,
    region: Region,
    cost_tags: CostTags,
}

fn validate_create(body: &CreateTenantRequest) -> ApiResult<ValidTenant> {
    let mut v = Validator::new();
    let slug = v.check(Slug::parse("slug", &body.slug));
    let name = v.check(parse_display_text("name", &body.name));
    let tier = v.check(Tier::parse("tier", &body.tier));
    let region = v.check(Region::parse("region", &body.region));
    let cost_tags = match &body.cost_tags {
        None => Some(CostTags::default()),
        Some(raw) => match CostTags::parse("cost_tags", raw) {
            Ok(tags) => Some(tags),
            Err(errors) => {
                errors.into_iter().for_each(|e| v.push(e));
                None
            }
        },
    };
    v.finish().map_err(ApiError::Validation)?;
    match (slug, name, tier, region, cost_tags) {
        (Some(slug), Some(name), Some(tier), Some(region), Some(cost_tags)) => Ok(ValidTenant {
            slug,
            name,
            tier,
            region,
            cost_tags,
        }),
        _ => Err(ApiError::internal(anyhow::anyhow!(
            "validated fields missing"
        ))),
    }
}

#[utoipa::path(post, operation_id = "createTenant", path = "/v1/tenants", tag = "tenants", security(("bearer" = [])),
    request_body = CreateTenantRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Same key + same body → the same response; same key + another body → 422")),
    responses(
        (status = 201, body = TenantView),
        (status = 403, body = crate::error::Problem),
        (status = 409, description = "The slug is taken", body = crate::error::Problem),
        (status = 422, body = crate::error::Problem)))]
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    body: JsonBody<CreateTenantRequest>,
) -> ApiResult<HttpResponse> {
    state
        .authorize_platform(&caller, Object::Tenant, Action::Create)
        .await?;
    let body = body.into_inner()?;
    let valid = validate_create(&body)?;
    let key = idempotency::key(&req)?;
    let request_hash = idempotency::request_hash(
        &req,
        &serde_json::to_value(&body).map_err(ApiError::internal)?,
    );
    let is_partner = caller.platform_role == Some(PlatformRole::Partner);
    let (status, response) = state
        .db(move |conn| {
            conn.build_transaction().run(|conn| {
                idempotency::once(conn, caller.id, key.as_deref(), &request_hash, |conn| {
                    let tenant = store::tenants::insert(
                        conn,
                        &NewTenant {
                            id: Uuid::now_v7(),
                            slug: valid.slug.as_str(),
                            name: &valid.name,
                            tier: valid.tier.as_str(),
                            region: valid.region.as_str(),
                            cost_tags: valid.cost_tags.to_json(),
                            created_by: Some(caller.id),
                        },
                    )
                    .map_err(|e| match e {
                        store::StoreError::Conflict(_) => ApiError::Conflict(format!(
                            "the slug '{}' is taken; choose another",
                            valid.slug
                        )),
                        other => other.into(),
                    })?;
                    if is_partner {
                        // A partner sees and manages the tenants it onboards.
                        store::memberships::add(conn, caller.id, tenant.id, "partner", Some(caller.id))?;
                    }
                    store::audit::append(
                        conn,
                        &caller.audit(
                            Some(tenant.id),
                            "tenant.create",
                            format!("tenant/{}", tenant.slug),
                            AuditResult::Success,
                            json!({"slug": tenant.slug, "tier": tenant.tier, "region": tenant.region}),
                        ),
                    )?;
                    let response = serde_json::to_value(TenantView::from(tenant))
                        .map_err(ApiError::internal)?;
                    Ok((201, response))
                })
            })
        })
        .await?;
    idempotency::respond(status, response)
}

#[utoipa::path(get, operation_id = "listTenants", path = "/v1/tenants", tag = "tenants", security(("bearer" = [])),
    params(PageQuery), responses((status = 200, body = TenantPage)))]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<PageQuery>,
) -> ApiResult<HttpResponse> {
    let (limit, after) = (query.limit()?, query.uuid_cursor()?);
    let sees_all = state.authz.read().await.allows(
        caller.id,
        Domain::Everywhere,
        Object::Tenant,
        Action::Read,
    );
    let member = (!sees_all).then_some(caller.id);
    let page = state
        .db(move |conn| Ok(store::tenants::list(conn, member, after, limit)?))
        .await?;
    Ok(HttpResponse::Ok().json(PageOf::from_page(page, TenantView::from)))
}

#[utoipa::path(get, operation_id = "getTenant", path = "/v1/tenants/{tenant}", tag = "tenants", security(("bearer" = [])),
    params(("tenant" = String, Path, description = "Tenant id or slug")),
    responses((status = 200, body = TenantView), (status = 404, body = crate::error::Problem)))]
pub async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let tenant = state
        .authorize_tenant(&caller, &path, Object::Tenant, Action::Read)
        .await?;
    Ok(HttpResponse::Ok().json(TenantView::from(tenant)))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = crate::examples::update_tenant_request)]
pub struct UpdateTenantRequest {
    #[schema(schema_with = crate::schemas::tenant_rename)]
    pub name: Option<String>,
    /// Replaces all cost tags.
    #[serde(default, deserialize_with = "crate::body::present")]
    #[schema(schema_with = crate::schemas::replacing_cost_tags)]
    pub cost_tags: Option<serde_json::Value>,
}

#[utoipa::path(patch, operation_id = "updateTenant", path = "/v1/tenants/{tenant}", tag = "tenants", security(("bearer" = [])),
    params(("tenant" = String, Path, description = "Tenant id or slug")),
    request_body = UpdateTenantRequest,
    responses((status = 200, body = TenantView), (status = 403, body = crate::error::Problem),
        (status = 404, body = crate::error::Problem),
        (status = 409, description = "The tenant is offboarding", body = crate::error::Problem),
        (status = 422, body = crate::error::Problem)))]
pub async fn update(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    body: JsonBody<UpdateTenantRequest>,
) -> ApiResult<HttpResponse> {
    let tenant = state
        .authorize_tenant(&caller, &path, Object::Tenant, Action::Update)
        .await?;
    let body = body.into_inner()?;
    let mut v = Validator::new();
    let mut changes = TenantChanges::default();
    if let Some(name) = &body.name {
        changes.name = v.check(parse_display_text("name", name));
    }
    if let Some(raw) = &body.cost_tags {
        match CostTags::parse("cost_tags", raw) {
            Ok(tags) => changes.cost_tags = Some(tags.to_json()),
            Err(errors) => errors.into_iter().for_each(|e| v.push(e)),
        }
    }
    if body.name.is_none() && body.cost_tags.is_none() {
        return Err(ApiError::validation(
            "body",
            "has nothing to change; send name and/or cost_tags",
        ));
    }
    v.finish().map_err(ApiError::Validation)?;
    ensure_not_leaving(&tenant)?;
    let details = json!({"name": changes.name, "cost_tags": changes.cost_tags});
    let updated = state
        .db(move |conn| {
            conn.build_transaction().run(|conn| {
                lock_active_as(conn, &tenant, &caller, Object::Tenant, Action::Update)?;
                let updated = store::tenants::update(conn, tenant.id, &changes)?;
                store::audit::append(
                    conn,
                    &caller.audit(
                        Some(tenant.id),
                        "tenant.update",
                        format!("tenant/{}", tenant.slug),
                        AuditResult::Success,
                        details,
                    ),
                )?;
                Ok::<_, ApiError>(updated)
            })
        })
        .await?;
    Ok(HttpResponse::Ok().json(TenantView::from(updated)))
}

/// Locks the tenant row for a change (to the end of the caller's transaction) and checks it is
/// still active: the check and the change it guards happen under one lock, so an offboarding
/// (or a quota check of another request) cannot slip in between.
pub fn lock_active(conn: &mut diesel::PgConnection, tenant: &Tenant) -> ApiResult<()> {
    match store::tenants::lock_for_change(conn, tenant.id)? {
        Some(state) if state == TenantState::Active.as_str() => Ok(()),
        Some(state) => Err(ApiError::Conflict(format!(
            "tenant '{}' is {state}; it can no longer be changed",
            tenant.slug
        ))),
        None => Err(ApiError::NotFound(format!(
            "tenant '{}' no longer exists",
            tenant.slug
        ))),
    }
}

/// `lock_active`, then `still_holds`: every change a member makes to its tenant runs under the
/// tenant row's lock with its author re-checked.
pub fn lock_active_as(
    conn: &mut diesel::PgConnection,
    tenant: &Tenant,
    caller: &Caller,
    object: Object,
    action: Action,
) -> ApiResult<()> {
    lock_active(conn, tenant)?;
    still_holds(conn, tenant, caller, object, action)
}

/// In the caller's transaction, whether the caller still holds `object:action` in the tenant
/// by its membership (a platform admin acts by its platform role). The membership row is
/// share-locked until the transaction ends, so a removal (or a key's revocation) racing the
/// request either commits first and is seen here (404/403), or waits until this change has
/// committed, and so comes after it. The front door's check read the enforcer before the
/// transaction began. Most callers hold the tenant row's lock too (removals take it), which
/// the membership lock does not need.
pub fn still_holds(
    conn: &mut diesel::PgConnection,
    tenant: &Tenant,
    caller: &Caller,
    object: Object,
    action: Action,
) -> ApiResult<()> {
    if caller.is_platform_admin() {
        return Ok(());
    }
    let permission = format!("{}:{}", object.as_str(), action.as_str());
    match store::memberships::active_role_locked(conn, tenant.id, caller.id)? {
        None => Err(crate::scope::tenant_not_found(&tenant.slug)),
        Some(role) => {
            let holds = bulkhead_core::domain::TenantRole::parse("role", &role).is_ok_and(|role| {
                bulkhead_core::authz::role_permissions(role.role()).contains(&permission)
            });
            if holds {
                Ok(())
            } else {
                Err(ApiError::Forbidden(format!(
                    "your role in '{}' changed while this request was on its way and no longer \
                     includes {permission}",
                    tenant.slug
                )))
            }
        }
    }
}

/// Refuses to add `adding` more of `quota` to a tenant already at its value. Call with the
/// tenant row locked (`lock_active`).
pub fn ensure_quota(
    conn: &mut diesel::PgConnection,
    tenant_id: uuid::Uuid,
    slug: &str,
    quota: Quota,
    adding: i64,
    defaults: &QuotaDefaults,
) -> ApiResult<()> {
    match store::quotas::check(conn, tenant_id, quota, adding, defaults)? {
        Ok(()) => Ok(()),
        Err(exceeded) => Err(ApiError::QuotaExceeded {
            quota,
            limit: exceeded.limit,
            detail: format!(
                "tenant '{slug}' holds {} {} and its quota {} is {}; {}",
                exceeded.used,
                quota.noun(),
                quota.as_str(),
                exceeded.limit,
                quota.remedy()
            ),
        }),
    }
}

/// Changes to a tenant that is being torn down would be lost or race the teardown.
pub fn ensure_not_leaving(tenant: &Tenant) -> ApiResult<()> {
    match tenant.state() {
        Some(TenantState::Offboarding | TenantState::Offboarded) => {
            Err(ApiError::Conflict(format!(
                "tenant '{}' is {}; it can no longer be changed",
                tenant.slug, tenant.state
            )))
        }
        _ => Ok(()),
    }
}

#[utoipa::path(delete, operation_id = "deleteTenant", path = "/v1/tenants/{tenant}", tag = "tenants", security(("bearer" = [])),
    params(("tenant" = String, Path, description = "Tenant id or slug")),
    responses((status = 202, description = "Marked `offboarding`: a destroy job is queued for each \
        environment still standing (not-yet-started jobs are canceled) and the last one to finish \
        marks the tenant `offboarded`; with nothing to destroy it is `offboarded` at once. \
        Deleting an offboarding tenant again re-queues a destroy for any environment whose \
        destroy failed.", body = TenantView),
        (status = 403, body = crate::error::Problem), (status = 404, body = crate::error::Problem)))]
pub async fn delete(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let tenant = state
        .authorize_tenant(&caller, &path, Object::Tenant, Action::Delete)
        .await?;
    let max_attempts = state.config.worker.max_attempts;
    let updated = state
        .db(move |conn| {
            conn.build_transaction().run(|conn| {
                // The tenant row first: an environment created concurrently either committed
                // before and is torn down, or waits and is refused; two DELETEs take turns.
                let locked = store::tenants::lock_for_change(conn, tenant.id)?;
                still_holds(conn, &tenant, &caller, Object::Tenant, Action::Delete)?;
                let resumed = locked.as_deref() == Some(TenantState::Offboarding.as_str());
                if locked.as_deref() == Some(TenantState::Offboarded.as_str()) {
                    // Deleting again is not an error: there is nothing left to tear down.
                    return Ok(store::tenants::find(conn, tenant.id)?);
                }
                if !resumed {
                    store::tenants::update(
                        conn,
                        tenant.id,
                        &TenantChanges {
                            state: Some(TenantState::Offboarding.as_str().to_owned()),
                            ..TenantChanges::default()
                        },
                    )?;
                }
                let teardown =
                    crate::routes::environments::start_teardown(conn, &caller, tenant.id, max_attempts)?;
                let updated = store::tenants::find(conn, tenant.id)?;
                // A repeated DELETE that found nothing to re-queue changed nothing.
                if !resumed || !teardown.destroy_jobs.is_empty() || teardown.offboarded {
                    store::audit::append(
                        conn,
                        &caller.audit(
                            Some(tenant.id),
                            "tenant.delete",
                            format!("tenant/{}", tenant.slug),
                            AuditResult::Success,
                            json!({"from": locked, "to": updated.as_ref().map(|t| &t.state), "teardown": teardown}),
                        ),
                    )?;
                }
                Ok::<_, ApiError>(updated)
            })
        })
        .await?
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("tenant vanished while offboarding")))?;
    state.relay_wake.notify_one();
    Ok(HttpResponse::Accepted().json(TenantView::from(updated)))
}
