//! How long an environment lives: `PATCH …/environments/{env}` {ttl_hours} sets its expiry to
//! that many hours from now (extending or shortening it), audited; a worker destroys it once
//! the time has passed (`store::expiry`). Setting a TTL schedules a destroy, so it takes the
//! permission to destroy (`environment:delete`), not just to create.

use super::{EnvironmentView, environment};
use crate::auth::Caller;
use crate::body::JsonBody;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use actix_web::{HttpResponse, web};
use bulkhead_core::audit::AuditResult;
use bulkhead_core::authz::{Action, Object};
use bulkhead_core::domain::{FieldError, Stage};
use bulkhead_core::store;
use chrono::{Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"ttl_hours": 48}))]
pub struct UpdateEnvironmentRequest {
    /// Hours from now until a worker destroys the environment (1 to 2160; not for production).
    #[serde(default, deserialize_with = "crate::body::whole_number")]
    #[schema(minimum = 1, maximum = 2160, value_type = u32)]
    pub ttl_hours: Option<u32>,
}

#[utoipa::path(patch, operation_id = "updateEnvironment", path = "/v1/tenants/{tenant}/environments/{env}", tag = "environments", security(("bearer" = [])),
    params(("tenant" = String, Path), ("env" = String, Path, description = "Environment id or name")),
    request_body = UpdateEnvironmentRequest,
    responses((status = 200, description = "The environment with its new expiry", body = EnvironmentView),
        (status = 403, body = crate::error::Problem), (status = 404, body = crate::error::Problem),
        (status = 409, description = "The environment is destroyed, being destroyed or has a destroy queued, or its tenant is offboarding", body = crate::error::Problem),
        (status = 422, body = crate::error::Problem)))]
pub async fn update(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String)>,
    body: JsonBody<UpdateEnvironmentRequest>,
) -> ApiResult<HttpResponse> {
    let (tenant_ref, env_ref) = path.into_inner();
    let (tenant, environment) = environment(
        &state,
        &caller,
        &tenant_ref,
        &env_ref,
        Object::Environment,
        Action::Delete,
    )
    .await?;
    let body = body.into_inner()?;
    let hours = body.ttl_hours.ok_or_else(|| {
        ApiError::validation("ttl_hours", "is required: hours from now, 1 to 2160")
    })?;
    if environment.stage == Stage::Production.as_str() {
        return Err(ApiError::Validation(vec![FieldError::new(
            "ttl_hours",
            "production environments do not expire",
        )]));
    }
    if !bulkhead_core::governance::TTL_HOURS.contains(&hours) {
        return Err(ApiError::validation(
            "ttl_hours",
            "must be 1 to 2160 hours (90 days)",
        ));
    }
    let expires_at = Utc::now() + Duration::hours(i64::from(hours));
    let updated = state
        .db(move |conn| {
            conn.build_transaction().run(|conn| {
                crate::routes::tenants::lock_active_as(conn, &tenant, &caller, Object::Environment, Action::Delete)?;
                // Under the environment's row lock: a destroy queued (by a person, a teardown or
                // the expiry sweep) makes a new lifetime meaningless.
                store::environments::lock(conn, environment.id)?;
                if store::jobs::active_for_environment(conn, environment.id)?
                    .iter()
                    .any(|j| j.operation == bulkhead_core::jobs::Operation::Destroy)
                {
                    return Err(ApiError::Conflict(format!(
                        "environment '{}' has a destroy queued; its lifetime no longer changes",
                        environment.name
                    )));
                }
                let updated = store::environments::set_expiry(conn, environment.id, Some(expires_at), caller.id)?
                    .ok_or_else(|| {
                        ApiError::Conflict(format!(
                            "environment '{}' is destroyed or being destroyed; its lifetime no longer changes",
                            environment.name
                        ))
                    })?;
                store::audit::append(
                    conn,
                    &caller.audit(
                        Some(tenant.id),
                        "environment.ttl_set",
                        format!("environment/{}", environment.id),
                        AuditResult::Success,
                        json!({"environment": environment.name, "ttl_hours": hours,
                               "expires_at": expires_at, "was": environment.expires_at}),
                    ),
                )?;
                Ok::<_, ApiError>(updated)
            })
        })
        .await?;
    Ok(HttpResponse::Ok().json(EnvironmentView::from(updated)))
}
