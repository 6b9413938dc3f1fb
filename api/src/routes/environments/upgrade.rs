//! Upgrading an environment to a later version of its blueprint: validated against the catalog,
//! governed by promotion (the version was ready on the stage before, or a platform admin
//! overrides with a reason), and queued as an apply that goes through the stage's approvals.

use super::changes::{Change, Review, ensure_still_active, queue_job};
use super::{JobAccepted, environment};
use crate::auth::Caller;
use crate::body::JsonBody;
use crate::error::{ApiError, ApiResult};
use crate::routes::tenants::ensure_quota;
use crate::routes::tenants::still_holds;
use crate::state::AppState;
use actix_web::{HttpResponse, web};
use bulkhead_core::audit::AuditResult;
use bulkhead_core::authz::{Action, Object};
use bulkhead_core::domain::{Stage, parse_display_text_of};
use bulkhead_core::governance::decisions::promotion_allowed;
use bulkhead_core::jobs::Operation;
use bulkhead_core::lifecycle::EnvironmentState;
use bulkhead_core::limits::Quota;
use bulkhead_core::store;
use serde::Deserialize;
use serde_json::json;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"blueprint_version": 2, "reason": "inventory for the pick lists"}))]
pub struct UpgradeRequest {
    /// A released version of the environment's blueprint, later than its current one
    /// (`GET /v1/blueprints/{name}` lists them and what each changes).
    #[serde(deserialize_with = "crate::body::whole_number")]
    #[schema(required = true, minimum = 1, maximum = 100000, value_type = u32)]
    pub blueprint_version: Option<u32>,
    #[schema(schema_with = crate::schemas::change_reason)]
    pub reason: Option<String>,
    /// Platform admins only: upgrade although the version was not ready on the stage before
    /// this one (promotion evidence); the reason is audited.
    #[schema(schema_with = crate::schemas::override_reason)]
    pub override_reason: Option<String>,
}

#[utoipa::path(post, operation_id = "upgradeEnvironment", path = "/v1/tenants/{tenant}/environments/{env}/upgrade", tag = "environments", security(("bearer" = [])),
    params(("tenant" = String, Path), ("env" = String, Path, description = "Environment id or name")),
    request_body = UpgradeRequest,
    responses((status = 202, description = "An apply to the new version is queued (it waits for approvals where the stage needs them)", body = JobAccepted),
        (status = 403, description = "Your role does not allow applying, or only a platform admin may override promotion", body = crate::error::Problem),
        (status = 404, body = crate::error::Problem),
        (status = 409, description = "The environment is destroyed or being destroyed, already at or past that version, or the version lacks promotion evidence from the stage before", body = crate::error::Problem),
        (status = 422, body = crate::error::Problem)))]
pub async fn upgrade(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String)>,
    body: JsonBody<UpgradeRequest>,
) -> ApiResult<HttpResponse> {
    let (tenant_ref, env_ref) = path.into_inner();
    let body = body.into_inner()?;
    let (tenant, environment) = environment(
        &state,
        &caller,
        &tenant_ref,
        &env_ref,
        Object::Job,
        Action::Create,
    )
    .await?;
    let text = |field: &str, value: Option<String>, max: usize| {
        value
            .map(|t| parse_display_text_of(field, &t, max))
            .transpose()
            .map_err(|e| ApiError::Validation(vec![e]))
    };
    let reason = text("reason", body.reason, 500)?;
    let override_reason = text("override_reason", body.override_reason, 500)?;
    let Some(version) = body.blueprint_version.filter(|v| *v > 0) else {
        return Err(ApiError::validation(
            "blueprint_version",
            "is required: a released version of the environment's blueprint, later than its current one",
        ));
    };
    let released: Vec<u32> = state
        .catalog
        .all()
        .iter()
        .filter(|b| b.name == environment.blueprint)
        .map(|b| b.version)
        .collect();
    if !released.contains(&version) {
        return Err(ApiError::validation(
            "blueprint_version",
            format!(
                "{version} is not a released version of {}; released: {}",
                environment.blueprint,
                released
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    if override_reason.is_some() && !caller.is_platform_admin() {
        return Err(state
            .deny(
                &caller,
                &tenant,
                Object::Job,
                Action::Create,
                "only a platform admin may override promotion; leave override_reason out and \
                 promote the version through the stages before this one"
                    .to_owned(),
            )
            .await);
    }
    let version = i32::try_from(version).map_err(ApiError::internal)?;
    let max_attempts = state.config.worker.max_attempts;
    let quotas = state.config.limits.quotas;
    let (tenant_id, slug) = (tenant.id, tenant.slug.clone());
    let job = state
        .db(move |conn| {
            conn.build_transaction().run(|conn| {
                ensure_still_active(conn, tenant_id, &slug)?;
                still_holds(conn, &tenant, &caller, Object::Job, Action::Create)?;
                ensure_quota(conn, tenant_id, &slug, Quota::QueuedJobs, 1, &quotas)?;
                let environment = store::environments::lock(conn, environment.id)?.ok_or_else(
                    || ApiError::NotFound(format!("environment '{}' no longer exists", environment.name)),
                )?;
                let name = environment.name.clone();
                if environment.state == EnvironmentState::Destroyed
                    || store::jobs::active_for_environment(conn, environment.id)?
                        .iter()
                        .any(|j| j.operation == Operation::Destroy)
                {
                    return Err(ApiError::Conflict(format!(
                        "environment '{name}' is destroyed or being destroyed; nothing else runs on it"
                    )));
                }
                if version <= environment.blueprint_version {
                    return Err(ApiError::Conflict(format!(
                        "environment '{name}' is at {} v{}; an upgrade moves to a later version",
                        environment.blueprint, environment.blueprint_version
                    )));
                }
                let stage = Stage::parse("stage", &environment.stage).map_err(|e| {
                    ApiError::internal(anyhow::anyhow!("stored stage: {}", e.message))
                })?;
                let policy = store::policies::get(conn, tenant_id)?.policy;
                let evidence = store::promotion::ready_at(conn, tenant_id, &environment.blueprint)?;
                let missing = promotion_allowed(&policy, stage, version, &evidence).err();
                match (&missing, &override_reason) {
                    (Some(missing), None) => {
                        return Err(ApiError::Conflict(format!(
                            "{missing}; a platform admin may override with override_reason"
                        )));
                    }
                    (Some(missing), Some(why)) => {
                        store::audit::append(
                            conn,
                            &caller.audit(
                                Some(tenant_id),
                                "environment.promotion_override",
                                format!("environment/{}", environment.id),
                                AuditResult::Success,
                                json!({"blueprint": environment.blueprint, "version": version,
                                       "stage": stage.as_str(), "missing": missing.to_string(),
                                       "reason": why}),
                            ),
                        )?;
                    }
                    (None, _) => {}
                }
                let why = reason.clone().unwrap_or_else(|| {
                    format!("upgrade to {} v{version}", environment.blueprint)
                });
                queue_job(
                    conn,
                    &caller,
                    &environment,
                    Change {
                        operation: Operation::Apply,
                        max_attempts,
                        expected_plan_hash: None,
                        reason: Some(&why),
                        review: Review::Policy,
                        blueprint_version: Some(version),
                    },
                )
            })
        })
        .await?;
    state.relay_wake.notify_one();
    Ok(HttpResponse::Accepted().json(JobAccepted { job }))
}
