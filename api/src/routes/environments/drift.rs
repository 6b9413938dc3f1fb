//! What an environment's last drift check found: each difference between the target and the
//! blueprint (object, expected, found), the isolation walls that failed their probes, and when
//! the next scheduled check is due.

use super::environment;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use actix_web::{HttpResponse, web};
use bulkhead_core::authz::{Action, Object};
use bulkhead_core::plan::Plan;
use bulkhead_core::store;
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

/// One difference between the target and the blueprint.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DriftDifference {
    /// `<kind> <name>`, such as `grant on schema app to bk_…_app`.
    pub object: String,
    /// What a repair does: `create` (missing), `update` (differs) or `delete` (not wanted).
    pub change: String,
    /// For people: what differs.
    pub detail: String,
    /// The object as the blueprint wants it (`null`: it should not exist).
    #[schema(value_type = Option<Object>)]
    pub expected: Option<serde_json::Value>,
    /// The object as the check found it (`null`: it is missing).
    #[schema(value_type = Option<Object>)]
    pub found: Option<serde_json::Value>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = crate::examples::drift_report)]
pub struct DriftReport {
    pub environment_id: Uuid,
    /// The environment's state (`drifted` when the last check found differences).
    pub state: String,
    /// The last drift check that finished, if any.
    pub job_id: Option<Uuid>,
    pub checked_at: Option<DateTime<Utc>>,
    /// Whether the scheduler queued that check (else a person asked for it).
    pub scheduled: Option<bool>,
    pub differences: Vec<DriftDifference>,
    /// Isolation walls whose probes failed (`layer/mechanism: evidence`).
    pub isolation_violations: Vec<String>,
    /// When the next scheduled check is due.
    pub next_check_at: Option<DateTime<Utc>>,
}

#[utoipa::path(get, operation_id = "getEnvironmentDrift", path = "/v1/tenants/{tenant}/environments/{env}/drift", tag = "environments", security(("bearer" = [])),
    params(("tenant" = String, Path), ("env" = String, Path, description = "Environment id or name")),
    responses((status = 200, body = DriftReport),
        (status = 403, description = "Your role in this tenant does not allow this", body = crate::error::Problem),
        (status = 404, body = crate::error::Problem)))]
pub async fn drift(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let (tenant_ref, env_ref) = path.into_inner();
    let (_, environment) = environment(
        &state,
        &caller,
        &tenant_ref,
        &env_ref,
        Object::Environment,
        Action::Read,
    )
    .await?;
    let environment_id = environment.id;
    let last = state
        .db(move |conn| Ok::<_, ApiError>(store::jobs::last_drift_check(conn, environment_id)?))
        .await?;
    let differences = last
        .as_ref()
        .and_then(|job| job.plan.clone())
        .and_then(|plan| serde_json::from_value::<Plan>(plan).ok())
        .map(|plan| {
            plan.actions
                .into_iter()
                .map(|action| DriftDifference {
                    object: format!("{} {}", action.kind, action.name),
                    change: action.op.as_str().to_owned(),
                    detail: action.detail,
                    expected: action.desired.map(|r| serde_json::json!(r.attributes)),
                    found: action.actual.map(|r| serde_json::json!(r.attributes)),
                })
                .collect()
        })
        .unwrap_or_default();
    let isolation_violations = environment
        .drift
        .as_ref()
        .and_then(|d| d.get("isolation_violations"))
        .and_then(|v| serde_json::from_value::<Vec<String>>(v.clone()).ok())
        .unwrap_or_default();
    Ok(HttpResponse::Ok().json(DriftReport {
        environment_id,
        state: environment.state.as_str().to_owned(),
        job_id: last.as_ref().map(|j| j.id),
        checked_at: last.as_ref().and_then(|j| j.finished_at),
        scheduled: last.as_ref().map(|j| j.scheduled),
        differences,
        isolation_violations,
        next_check_at: environment.drift_check_due_at,
    }))
}
