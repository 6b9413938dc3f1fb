//! The jobs that change an environment (destroy, plan, apply, drift check, stop, start) and a tenant's
//! teardown, queued in the caller's transaction under the tenant's lock and audited.

use super::{JobAccepted, environment};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::idempotency;
use crate::routes::jobs::JobView;
use crate::routes::tenants::{ensure_quota, still_holds};
use crate::state::AppState;
use actix_web::{HttpRequest, HttpResponse, web};
use bulkhead_core::audit::AuditResult;
use bulkhead_core::authz::{Action, Object};
use bulkhead_core::domain::{Stage, TenantState, parse_display_text_of};
use bulkhead_core::governance::decisions::ChangeNeeds;
use bulkhead_core::jobs::{JobState, Operation};
use bulkhead_core::lifecycle::EnvironmentState;
use bulkhead_core::limits::Quota;
use bulkhead_core::store;
use bulkhead_core::store::environments::Environment;
use bulkhead_core::store::jobs::NewJob;
use diesel::PgConnection;
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

/// Environments and jobs change only in active tenants. Checked inside the caller's
/// transaction with the tenant row locked for a change: a tenant whose offboarding committed in
/// between is seen, cannot start offboarding until the caller commits (so its teardown sees
/// what the caller wrote), and two requests cannot both take a tenant's last quota.
pub(crate) fn ensure_still_active(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    slug: &str,
) -> ApiResult<()> {
    match store::tenants::lock_for_change(conn, tenant_id)? {
        Some(state) if state == TenantState::Active.as_str() => Ok(()),
        Some(state) => Err(ApiError::Conflict(format!(
            "tenant '{slug}' is {state}; environments change only in active tenants"
        ))),
        None => Err(ApiError::NotFound(format!(
            "tenant '{slug}' no longer exists"
        ))),
    }
}

/// What a tenant's teardown queued: a destroy job per standing environment (none where one is
/// already on its way), and the not-yet-started jobs it canceled so the destroys run next.
#[derive(Debug, Default, Serialize)]
pub struct Teardown {
    pub destroy_jobs: Vec<Uuid>,
    pub canceled_jobs: Vec<Uuid>,
    /// Nothing was left to destroy: the tenant is `offboarded` now.
    pub offboarded: bool,
}

/// Starts (or, for a tenant already offboarding, resumes) the teardown of an offboarding
/// tenant in the caller's transaction, which holds the tenant row (`lock_for_change`): the
/// tenant before its environments, the order a worker's destroy takes them in too. The last destroy to finish marks the tenant
/// `offboarded` (the worker does that); with nothing standing it happens here.
pub fn start_teardown(
    conn: &mut PgConnection,
    caller: &Caller,
    tenant_id: Uuid,
    max_attempts: i32,
) -> ApiResult<Teardown> {
    let mut teardown = Teardown::default();
    for environment in store::environments::standing_for_update(conn, tenant_id)? {
        // Offboarding is the decision (tenant:delete, audited): its destroys await no approval.
        let destroy = queue_destroy(
            conn,
            caller,
            &environment,
            max_attempts,
            "canceled: the tenant is being offboarded",
            Review::None,
        )?;
        teardown.canceled_jobs.extend(destroy.canceled);
        if destroy.created {
            teardown.destroy_jobs.push(destroy.job.id);
        }
    }
    teardown.offboarded = store::tenants::complete_offboarding(conn, tenant_id)?.is_some();
    Ok(teardown)
}

/// A destroy for one environment: the one already on its way, or a new one behind the running
/// job (if any), with the jobs that had not started canceled (they would only be undone).
struct Destroy {
    job: JobView,
    created: bool,
    canceled: Vec<Uuid>,
}

fn queue_destroy(
    conn: &mut PgConnection,
    caller: &Caller,
    environment: &Environment,
    max_attempts: i32,
    why_canceled: &str,
    review_of_destroy: Review,
) -> ApiResult<Destroy> {
    let active = store::jobs::active_for_environment(conn, environment.id)?;
    let mut canceled = Vec::new();
    if let Some(existing) = active.iter().find(|j| j.operation == Operation::Destroy) {
        // An offboarding's teardown does not wait on a destroy still awaiting its review (it
        // could be rejected or expire and leave the tenant offboarding): that one is replaced.
        let replace = review_of_destroy == Review::None && existing.awaits_review();
        if !replace {
            let position = store::jobs::queue_position(conn, existing)?;
            return Ok(Destroy {
                job: JobView::new(existing.clone(), position),
                created: false,
                canceled: Vec::new(),
            });
        }
        let why = "canceled: replaced by the destroy of the tenant's offboarding";
        if store::jobs::cancel(conn, existing.id)? {
            store::jobs::add_event(conn, existing.id, "canceled", why, json!({}))?;
            canceled.push(existing.id);
        } else if store::jobs::request_cancel(conn, existing.id)? {
            // Being planned right now: its worker stops before it would park it.
            store::jobs::add_event(conn, existing.id, "cancel_requested", why, json!({}))?;
        }
    }
    // A destroy that waits for approvals cancels nothing before it is approved: it takes its
    // place in line behind the jobs already there.
    let reviewed = review_of_destroy == Review::Policy && {
        let stage = Stage::parse("stage", &environment.stage)
            .map_err(|e| ApiError::internal(anyhow::anyhow!("stored stage: {}", e.message)))?;
        store::jobs::approvals_needed(conn, environment.tenant_id, stage, Operation::Destroy)?
            .needs_approval()
    };
    for job in active
        .iter()
        .filter(|j| j.state != JobState::Running && !reviewed && j.operation != Operation::Destroy)
    {
        if store::jobs::cancel(conn, job.id)? {
            store::jobs::add_event(conn, job.id, "canceled", why_canceled, json!({}))?;
            canceled.push(job.id);
        }
    }
    let job = queue_job(
        conn,
        caller,
        environment,
        Change {
            operation: Operation::Destroy,
            max_attempts,
            expected_plan_hash: None,
            reason: None,
            review: review_of_destroy,
            blueprint_version: None,
        },
    )?;
    Ok(Destroy {
        job,
        created: true,
        canceled,
    })
}

/// Whether a change waits for approvals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Review {
    /// As the tenant's policy says for the environment's stage.
    Policy,
    /// The change was decided elsewhere (a tenant's offboarding).
    None,
}

/// A job to queue: what, how often it may be tried, which reviewed plan it must find, why.
pub(crate) struct Change<'a> {
    pub operation: Operation,
    pub max_attempts: i32,
    pub expected_plan_hash: Option<&'a str>,
    pub reason: Option<&'a str>,
    pub review: Review,
    /// For an upgrade: the blueprint version the apply brings the environment to.
    pub blueprint_version: Option<i32>,
}

/// Queues a job in the caller's transaction and audits it; returns its view. A change of a
/// stage whose policy needs approvals is planned by a worker and then waits for them.
pub(super) fn queue_job(
    conn: &mut PgConnection,
    caller: &Caller,
    environment: &Environment,
    change: Change<'_>,
) -> ApiResult<JobView> {
    let operation = change.operation;
    let needs = match change.review {
        Review::None => ChangeNeeds {
            approvals: 0,
            requester_may_approve: false,
        },
        Review::Policy => {
            let stage = Stage::parse("stage", &environment.stage)
                .map_err(|e| ApiError::internal(anyhow::anyhow!("stored stage: {}", e.message)))?;
            store::jobs::approvals_needed(conn, environment.tenant_id, stage, operation)?
        }
    };
    let approvals_required = i16::from(needs.approvals);
    let job = store::jobs::insert(
        conn,
        &NewJob {
            id: Uuid::now_v7(),
            tenant_id: environment.tenant_id,
            environment_id: environment.id,
            operation,
            max_attempts: change.max_attempts,
            expected_plan_hash: change.expected_plan_hash,
            requested_by: Some(caller.id),
            approvals_required,
            reason: change.reason,
            blueprint_version: change.blueprint_version,
            requester_may_approve: needs.requester_may_approve,
            scheduled: false,
        },
    )?;
    store::audit::append(
        conn,
        &caller.audit(
            Some(environment.tenant_id),
            &format!("job.{}", operation.as_str()),
            format!("environment/{}", environment.id),
            AuditResult::Success,
            json!({"job_id": job.id, "environment": environment.name,
                   "approvals_required": approvals_required, "reason": change.reason}),
        ),
    )?;
    let position = store::jobs::queue_position(conn, &job)?;
    Ok(JobView::new(job, position))
}

#[derive(Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = crate::examples::apply_request)]
pub struct ApplyRequest {
    /// Apply exactly what this succeeded plan job showed; refused if the target changed since.
    pub plan_job_id: Option<Uuid>,
    #[schema(schema_with = crate::schemas::change_reason)]
    pub reason: Option<String>,
}

async fn job_action(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    operation: Operation,
    body: Option<web::Bytes>,
) -> ApiResult<HttpResponse> {
    let (tenant_ref, env_ref) = path.into_inner();
    let (object, action) = match operation {
        Operation::Destroy => (Object::Environment, Action::Delete),
        _ => (Object::Job, Action::Create),
    };
    let (tenant, environment) =
        environment(&state, &caller, &tenant_ref, &env_ref, object, action).await?;
    if environment.state == EnvironmentState::Destroyed {
        return Err(ApiError::Conflict(format!(
            "environment '{}' is destroyed; create a new one",
            environment.name
        )));
    }
    // The body is optional (none, or `null`, as the document says); when present it must parse
    // (a typo must not silently apply whatever the planner finds instead of the reviewed plan).
    let body = match body.filter(|raw| !raw.iter().all(u8::is_ascii_whitespace)) {
        None => ApplyRequest::default(),
        Some(raw) => {
            let object = serde_json::from_slice::<Option<serde_json::Map<_, _>>>(&raw)
                .map_err(|e| {
                    ApiError::Malformed(format!(
                        "the JSON body does not fit this endpoint: {e}; send {{\"plan_job_id\": \"<uuid>\"}} or no body"
                    ))
                })?;
            object
                .map(crate::body::from_object)
                .transpose()?
                .unwrap_or_default()
        }
    };
    let mut body = body;
    body.reason = body
        .reason
        .map(|text| parse_display_text_of("reason", &text, 500))
        .transpose()
        .map_err(|e| ApiError::Validation(vec![e]))?;
    let key = idempotency::key(&req)?;
    let request_hash = idempotency::request_hash(
        &req,
        &serde_json::to_value(&body).map_err(ApiError::internal)?,
    );
    let max_attempts = state.config.worker.max_attempts;
    let quotas = state.config.limits.quotas;
    let (tenant_id, slug) = (tenant.id, tenant.slug.clone());
    let (status, response) = state
        .db(move |conn| {
            conn.build_transaction().run(|conn| {
                idempotency::once(conn, caller.id, key.as_deref(), &request_hash, |conn| {
                    // Destroying is how an offboarding tenant is torn down, and always allowed
                    // (it frees what quotas count).
                    if operation != Operation::Destroy {
                        ensure_still_active(conn, tenant_id, &slug)?;
                        ensure_quota(conn, tenant_id, &slug, Quota::QueuedJobs, 1, &quotas)?;
                    } else {
                        store::tenants::lock_for_change(conn, tenant_id)?;
                    }
                    // Under the tenant row's lock, which removals take too: a member removed
                    // (or a key revoked) while this request was on its way queues nothing.
                    still_holds(conn, &tenant, &caller, object, action)?;
                    // The environment as it is now, locked: a destroy committed since the
                    // lookup above is seen, and none can commit until this job is queued.
                    let environment = store::environments::lock(conn, environment.id)?
                        .ok_or_else(|| ApiError::NotFound(format!("environment '{}' no longer exists", environment.name)))?;
                    if environment.state == EnvironmentState::Destroyed {
                        return Err(ApiError::Conflict(format!(
                            "environment '{}' is destroyed; create a new one",
                            environment.name
                        )));
                    }
                    if operation != Operation::Destroy
                        && store::jobs::active_for_environment(conn, environment.id)?
                            .iter()
                            .any(|j| j.operation == Operation::Destroy)
                    {
                        return Err(ApiError::Conflict(format!(
                            "environment '{}' is being destroyed; nothing else runs on it now",
                            environment.name
                        )));
                    }
                    ensure_can(conn, &environment, operation)?;
                    let expected = match body.plan_job_id {
                        None => None,
                        Some(plan_job_id) => {
                            let plan_job = store::jobs::find(conn, environment.tenant_id, plan_job_id)?
                                .filter(|j| j.environment_id == environment.id && j.operation == Operation::Plan)
                                .ok_or_else(|| ApiError::validation("plan_job_id", "is not a plan job of this environment"))?;
                            match (plan_job.state, plan_job.plan_hash) {
                                (JobState::Succeeded, Some(hash)) => Some(hash),
                                _ => {
                                    return Err(ApiError::validation(
                                        "plan_job_id",
                                        "names a plan job that has not succeeded; wait for it or run plan again",
                                    ));
                                }
                            }
                        }
                    };
                    let job = if operation == Operation::Destroy {
                        queue_destroy(conn, &caller, &environment, max_attempts, "canceled: the environment is being destroyed", Review::Policy)?.job
                    } else {
                        queue_job(conn, &caller, &environment, Change {
                            operation,
                            max_attempts,
                            expected_plan_hash: expected.as_deref(),
                            reason: body.reason.as_deref(),
                            review: Review::Policy,
                            blueprint_version: None,
                        })?
                    };
                    let body = serde_json::to_value(JobAccepted { job }).map_err(ApiError::internal)?;
                    Ok((202, body))
                })
            })
        })
        .await?;
    state.relay_wake.notify_one();
    idempotency::respond(status, response)
}

/// A stop needs a standing non-production environment; a start, a stopped one (or a stop in
/// line before it). Checked under the environment's lock; the worker checks again when it runs.
fn ensure_can(
    conn: &mut PgConnection,
    environment: &Environment,
    operation: Operation,
) -> ApiResult<()> {
    let (name, state) = (&environment.name, environment.state);
    match operation {
        Operation::Stop if environment.stage == Stage::Production.as_str() => {
            Err(ApiError::Conflict(format!(
                "environment '{name}' is a production environment, and those are never stopped \
                 (stops and schedules are for non-production stages)"
            )))
        }
        Operation::Stop
            if !matches!(
                state,
                EnvironmentState::Ready | EnvironmentState::Drifted | EnvironmentState::Stopped
            ) =>
        {
            Err(ApiError::Conflict(format!(
                "environment '{name}' is {state}; only a ready or drifted environment can be \
                 stopped (wait for its job to finish)"
            )))
        }
        Operation::Start
            if state != EnvironmentState::Stopped
                && !store::jobs::active_for_environment(conn, environment.id)?
                    .iter()
                    .any(|j| j.operation == Operation::Stop) =>
        {
            Err(ApiError::Conflict(format!(
                "environment '{name}' is {state}, not stopped; there is nothing to start"
            )))
        }
        _ => Ok(()),
    }
}

#[utoipa::path(post, operation_id = "stopEnvironment", path = "/v1/tenants/{tenant}/environments/{env}/stop", tag = "environments", security(("bearer" = [])),
    params(("tenant" = String, Path), ("env" = String, Path), ("Idempotency-Key" = Option<String>, Header, description = "Same key + same body → the same response; same key + another body → 422")),
    responses((status = 202, description = "A stop job is queued: its worker takes the login \
        away from the environment's roles and ends their sessions; the environment is then \
        `stopped` until a start, an apply, or its schedule's next window", body = JobAccepted),
        (status = 403, description = "Your role in this tenant does not allow this", body = crate::error::Problem),
        (status = 404, body = crate::error::Problem),
        (status = 409, description = "A production environment, or one that is not ready, drifted or stopped", body = crate::error::Problem),
        (status = 422, body = crate::error::Problem)))]
pub async fn stop(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    job_action(state, caller, req, path, Operation::Stop, None).await
}

#[utoipa::path(post, operation_id = "startEnvironment", path = "/v1/tenants/{tenant}/environments/{env}/start", tag = "environments", security(("bearer" = [])),
    params(("tenant" = String, Path), ("env" = String, Path), ("Idempotency-Key" = Option<String>, Header, description = "Same key + same body → the same response; same key + another body → 422")),
    responses((status = 202, description = "A start job is queued: its worker gives the login \
        back, probes the isolation walls and makes the environment `ready`; outside its \
        schedule's window it stays running until the window's next end", body = JobAccepted),
        (status = 403, description = "Your role in this tenant does not allow this", body = crate::error::Problem),
        (status = 404, body = crate::error::Problem),
        (status = 409, description = "The environment is not stopped", body = crate::error::Problem),
        (status = 422, body = crate::error::Problem)))]
pub async fn start(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    job_action(state, caller, req, path, Operation::Start, None).await
}

#[utoipa::path(delete, operation_id = "destroyEnvironment", path = "/v1/tenants/{tenant}/environments/{env}", tag = "environments", security(("bearer" = [])),
    params(("tenant" = String, Path), ("env" = String, Path, description = "Environment id or name"),
        ("Idempotency-Key" = Option<String>, Header, description = "Same key + same body → the same response; same key + another body → 422")),
    responses((status = 202, description = "A destroy job is queued behind the running job, if \
        any; jobs of the environment that had not started are canceled. While a destroy is on its \
        way, DELETE answers that job again.", body = JobAccepted),
        (status = 403, body = crate::error::Problem), (status = 404, body = crate::error::Problem),
        (status = 409, description = "The environment is already destroyed", body = crate::error::Problem)))]
pub async fn destroy(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    job_action(state, caller, req, path, Operation::Destroy, None).await
}

#[utoipa::path(post, operation_id = "planEnvironment", path = "/v1/tenants/{tenant}/environments/{env}/plan", tag = "environments", security(("bearer" = [])),
    params(("tenant" = String, Path), ("env" = String, Path), ("Idempotency-Key" = Option<String>, Header, description = "Same key + same body → the same response; same key + another body → 422")),
    responses((status = 202, description = "A plan job is queued; its plan appears on the job", body = JobAccepted),
        (status = 403, description = "Your role in this tenant does not allow this", body = crate::error::Problem),
        (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem),
        (status = 422, body = crate::error::Problem)))]
pub async fn plan(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    job_action(state, caller, req, path, Operation::Plan, None).await
}

#[utoipa::path(post, operation_id = "applyEnvironment", path = "/v1/tenants/{tenant}/environments/{env}/apply", tag = "environments", security(("bearer" = [])),
    params(("tenant" = String, Path), ("env" = String, Path), ("Idempotency-Key" = Option<String>, Header, description = "Same key + same body → the same response; same key + another body → 422")),
    request_body(content = Option<ApplyRequest>, description = "Optional: the plan job to apply exactly"),
    responses((status = 202, description = "An apply job is queued", body = JobAccepted),
        (status = 403, description = "Your role in this tenant does not allow this", body = crate::error::Problem),
        (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem),
        (status = 422, body = crate::error::Problem)))]
pub async fn apply(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    job_action(state, caller, req, path, Operation::Apply, Some(body)).await
}

#[utoipa::path(post, operation_id = "checkEnvironmentDrift", path = "/v1/tenants/{tenant}/environments/{env}/drift-check", tag = "environments", security(("bearer" = [])),
    params(("tenant" = String, Path), ("env" = String, Path), ("Idempotency-Key" = Option<String>, Header, description = "Same key + same body → the same response; same key + another body → 422")),
    responses((status = 202, description = "A drift-check job is queued", body = JobAccepted),
        (status = 403, description = "Your role in this tenant does not allow this", body = crate::error::Problem),
        (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem),
        (status = 422, body = crate::error::Problem)))]
pub async fn drift_check(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    job_action(state, caller, req, path, Operation::DriftCheck, None).await
}
