//! A tenant's change policy: read it (the default until someone sets one) and replace it,
//! validated with field errors and audited with what it was before.

use crate::auth::Caller;
use crate::body::JsonBody;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use actix_web::{HttpResponse, web};
use bulkhead_core::audit::AuditResult;
use bulkhead_core::authz::{Action, Object};
use bulkhead_core::domain::Stage;
use bulkhead_core::governance::{StagePolicies, TenantPolicyRequest};
use bulkhead_core::store::{self, policies::StoredPolicy};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

/// The policy in force for a tenant.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = crate::examples::policy_view)]
pub struct PolicyView {
    pub stages: StagePolicies,
    /// The order a blueprint version is promoted in.
    pub promotion_order: Vec<Stage>,
    /// `false` while the tenant runs on the default policy.
    pub customized: bool,
    pub updated_at: Option<DateTime<Utc>>,
    pub updated_by: Option<Uuid>,
}

impl From<StoredPolicy> for PolicyView {
    fn from(stored: StoredPolicy) -> Self {
        Self {
            stages: stored.policy.stages,
            promotion_order: stored.policy.promotion_order,
            customized: stored.updated_at.is_some(),
            updated_at: stored.updated_at,
            updated_by: stored.updated_by,
        }
    }
}

#[utoipa::path(get, operation_id = "getTenantPolicy", path = "/v1/tenants/{tenant}/policy", tag = "governance", security(("bearer" = [])),
    params(("tenant" = String, Path, description = "Tenant id or slug")),
    responses((status = 200, body = PolicyView), (status = 403, body = crate::error::Problem),
        (status = 404, body = crate::error::Problem)))]
pub async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let tenant = state
        .authorize_tenant(&caller, &path, Object::Policy, Action::Read)
        .await?;
    let stored = state
        .db(move |conn| Ok::<_, ApiError>(store::policies::get(conn, tenant.id)?))
        .await?;
    Ok(HttpResponse::Ok().json(PolicyView::from(stored)))
}

#[utoipa::path(put, operation_id = "setTenantPolicy", path = "/v1/tenants/{tenant}/policy", tag = "governance", security(("bearer" = [])),
    params(("tenant" = String, Path, description = "Tenant id or slug")),
    request_body = TenantPolicyRequest,
    responses((status = 200, description = "The policy now in force (what the request left out took its default)", body = PolicyView),
        (status = 403, description = "Your role does not allow this, or the caller is an API key (people set the policy)", body = crate::error::Problem),
        (status = 404, body = crate::error::Problem),
        (status = 409, description = "The tenant is offboarding", body = crate::error::Problem),
        (status = 422, body = crate::error::Problem)))]
pub async fn put(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    body: JsonBody<TenantPolicyRequest>,
) -> ApiResult<HttpResponse> {
    let tenant = state
        .authorize_tenant(&caller, &path, Object::Policy, Action::Update)
        .await?;
    // The policy says who must approve changes: a pipeline's key that could lower it could
    // approve its own changes in effect. People change it, audited.
    if caller.key.is_some() {
        return Err(state
            .deny(
                &caller,
                &tenant,
                Object::Policy,
                Action::Update,
                "the change policy is set by people: sign in as a tenant admin; an API key \
                 cannot change it (it could lift the approvals its own changes need)"
                    .to_owned(),
            )
            .await);
    }
    let policy = body.into_inner()?.parse().map_err(ApiError::Validation)?;
    let stored = state
        .db(move |conn| {
            conn.build_transaction().run(|conn| {
                // The same rule, under the same lock, as every other change to a tenant.
                crate::routes::tenants::lock_active_as(
                    conn,
                    &tenant,
                    &caller,
                    Object::Policy,
                    Action::Update,
                )?;
                let before = store::policies::get(conn, tenant.id)?;
                let stored = store::policies::put(conn, tenant.id, &policy, caller.id)?;
                // Schedules take effect at the scheduler's next tick, whatever the edge.
                store::scheduler::lifecycle::reschedule(conn, tenant.id, &policy)?;
                store::audit::append(
                    conn,
                    &caller.audit(
                        Some(tenant.id),
                        "policy.updated",
                        format!("tenant/{}/policy", tenant.slug),
                        AuditResult::Success,
                        json!({"before": before.policy, "after": policy}),
                    ),
                )?;
                Ok::<_, ApiError>(stored)
            })
        })
        .await?;
    Ok(HttpResponse::Ok().json(PolicyView::from(stored)))
}
