//! Jobs of a tenant: list, read (with queue position and plan), events, cancel.

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::routes::{PageOf, PageQuery, SeqPageQuery, parse_id};
use crate::state::AppState;
use actix_web::{HttpResponse, http::StatusCode, web};
use bulkhead_core::audit::AuditResult;
use bulkhead_core::authz::{Action, Object};
use bulkhead_core::jobs::JobState;
use bulkhead_core::lifecycle::EnvironmentState;
use bulkhead_core::store::{self, jobs::Job, jobs::JobEvent, tenants::Tenant};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

page_schema!(JobPage, JobView, job_page);
page_schema!(JobEventPage, JobEventView, job_event_page);

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = crate::examples::job_view)]
pub struct JobView {
    pub id: Uuid,
    pub environment_id: Uuid,
    /// `apply`, `plan`, `destroy` or `drift_check`.
    pub operation: String,
    /// `queued`, `planned`, `awaiting_approval`, `approved`, `running`, `succeeded`, `failed`,
    /// `canceled`, `rejected` (an approver said no) or `expired` (the approval wait ended).
    pub state: String,
    /// For an unfinished job: active jobs of the same environment ahead of it (0 = next).
    pub queue_position: Option<i64>,
    pub attempts: i32,
    pub max_attempts: i32,
    /// What went wrong, for a person: what, where, why.
    pub error: Option<String>,
    pub plan_hash: Option<String>,
    /// The plan: ordered actions, the actual-state fingerprint and the hash.
    #[schema(value_type = Option<Object>)]
    pub plan: Option<serde_json::Value>,
    pub requested_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// When someone asked to cancel it while it ran; its worker stops at the next step boundary.
    pub cancel_requested_at: Option<DateTime<Utc>>,
    /// Distinct approvals the change needs before it runs (0: none; its stage's policy when it
    /// was asked for).
    pub approvals_required: i16,
    /// Why the change was asked for.
    pub reason: Option<String>,
    /// While it awaits approval: when the wait ends and the job is `expired`.
    pub approval_expires_at: Option<DateTime<Utc>>,
    /// When the last needed approval came.
    pub approved_at: Option<DateTime<Utc>>,
    /// The approvers' decisions so far, oldest first.
    pub approvals: Vec<ApprovalView>,
    /// For an upgrade: the blueprint version this apply brings the environment to.
    pub blueprint_version: Option<i32>,
}

/// One approver's decision on a job.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApprovalView {
    pub approver_id: Uuid,
    /// `approved` or `rejected`.
    pub decision: String,
    /// The plan the decision was made on.
    pub plan_hash: String,
    pub comment: Option<String>,
    pub decided_at: DateTime<Utc>,
}

impl From<store::jobs::Approval> for ApprovalView {
    fn from(a: store::jobs::Approval) -> Self {
        Self {
            approver_id: a.approver_id,
            decision: a.decision,
            plan_hash: a.plan_hash,
            comment: a.comment,
            decided_at: a.decided_at,
        }
    }
}

impl JobView {
    pub fn new(job: Job, queue_position: Option<i64>) -> Self {
        Self {
            id: job.id,
            environment_id: job.environment_id,
            operation: job.operation.as_str().to_owned(),
            state: job.state.as_str().to_owned(),
            queue_position,
            attempts: job.attempts,
            max_attempts: job.max_attempts,
            error: job.error,
            plan_hash: job.plan_hash,
            plan: job.plan,
            requested_by: job.requested_by,
            created_at: job.created_at,
            started_at: job.started_at,
            finished_at: job.finished_at,
            cancel_requested_at: job.cancel_requested_at,
            approvals_required: job.approvals_required,
            reason: job.reason,
            approval_expires_at: job.approval_expires_at,
            approved_at: job.approved_at,
            approvals: Vec::new(),
            blueprint_version: job.blueprint_version,
        }
    }

    /// Views of `jobs`, each with its approvals, in two queries (positions, decisions).
    pub fn many(
        conn: &mut diesel::PgConnection,
        jobs: Vec<Job>,
    ) -> Result<Vec<Self>, store::StoreError> {
        let positions = store::jobs::queue_positions(conn, &jobs)?;
        let reviewed: Vec<Uuid> = jobs
            .iter()
            .filter(|j| j.approvals_required > 0)
            .map(|j| j.id)
            .collect();
        let mut approvals: std::collections::HashMap<Uuid, Vec<ApprovalView>> =
            std::collections::HashMap::new();
        for approval in store::jobs::approvals_of(conn, &reviewed)? {
            approvals
                .entry(approval.job_id)
                .or_default()
                .push(approval.into());
        }
        Ok(jobs
            .into_iter()
            .zip(positions)
            .map(|(job, position)| {
                let mut view = Self::new(job, position);
                view.approvals = approvals.remove(&view.id).unwrap_or_default();
                view
            })
            .collect())
    }

    /// The view of one job, with its queue position and approvals.
    pub fn one(conn: &mut diesel::PgConnection, job: Job) -> Result<Self, store::StoreError> {
        Self::many(conn, vec![job])?
            .pop()
            .ok_or_else(|| store::StoreError::Unavailable("job view vanished".to_owned()))
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct JobQuery {
    /// 1 to 200; default 50.
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(
        pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    )]
    pub cursor: Option<String>,
    /// Only this environment's jobs (id).
    pub environment: Option<Uuid>,
}

#[utoipa::path(get, operation_id = "listJobs", path = "/v1/tenants/{tenant}/jobs", tag = "jobs", security(("bearer" = [])),
    params(("tenant" = String, Path), JobQuery),
    responses((status = 200, body = JobPage),
        (status = 403, description = "Your role in this tenant does not allow this", body = crate::error::Problem),
        (status = 404, body = crate::error::Problem)))]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    query: web::Query<JobQuery>,
) -> ApiResult<HttpResponse> {
    let tenant = state
        .authorize_tenant(&caller, &path, Object::Job, Action::Read)
        .await?;
    let query = query.into_inner();
    let paging = PageQuery {
        limit: query.limit,
        cursor: query.cursor,
    };
    let (limit, after, environment) = (paging.limit()?, paging.uuid_cursor()?, query.environment);
    let page = state
        .db(move |conn| {
            let page = store::jobs::list(conn, tenant.id, environment, after, limit)?;
            // One query for the whole page's positions, one for its approvals.
            let items = JobView::many(conn, page.items)?;
            Ok::<_, ApiError>(PageOf {
                items,
                next_cursor: page.next_cursor,
            })
        })
        .await?;
    Ok(HttpResponse::Ok().json(page))
}

pub(crate) async fn job(
    state: &AppState,
    caller: &Caller,
    tenant_ref: &str,
    job_ref: &str,
    action: Action,
) -> ApiResult<(Tenant, Job)> {
    let tenant = state
        .authorize_tenant(caller, tenant_ref, Object::Job, action)
        .await?;
    let job_id = parse_id(job_ref, "job")?;
    let tenant_id = tenant.id;
    let job = state
        .db(move |conn| Ok(store::jobs::find(conn, tenant_id, job_id)?))
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(format!("no job {job_id} in tenant '{}'", tenant.slug))
        })?;
    Ok((tenant, job))
}

#[utoipa::path(get, operation_id = "getJob", path = "/v1/tenants/{tenant}/jobs/{job}", tag = "jobs", security(("bearer" = [])),
    params(("tenant" = String, Path), ("job" = Uuid, Path)),
    responses((status = 200, body = JobView),
        (status = 403, description = "Your role in this tenant does not allow this", body = crate::error::Problem),
        (status = 404, body = crate::error::Problem)))]
pub async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let (tenant_ref, job_ref) = path.into_inner();
    let (_, job) = job(&state, &caller, &tenant_ref, &job_ref, Action::Read).await?;
    let view = state
        .db(move |conn| Ok::<_, ApiError>(JobView::one(conn, job)?))
        .await?;
    Ok(HttpResponse::Ok().json(view))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobEventView {
    pub id: i64,
    pub occurred_at: DateTime<Utc>,
    /// `queued`, `claimed`, `planned`, `step`, `verified`, `retry`, `lease_expired`,
    /// `released`, `succeeded`, `failed`.
    pub kind: String,
    pub message: String,
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
}

impl From<JobEvent> for JobEventView {
    fn from(e: JobEvent) -> Self {
        Self {
            id: e.id,
            occurred_at: e.occurred_at,
            kind: e.kind,
            message: e.message,
            details: e.details,
        }
    }
}

#[utoipa::path(get, operation_id = "listJobEvents", path = "/v1/tenants/{tenant}/jobs/{job}/events", tag = "jobs", security(("bearer" = [])),
    params(("tenant" = String, Path), ("job" = Uuid, Path), SeqPageQuery),
    responses((status = 200, body = JobEventPage),
        (status = 403, description = "Your role in this tenant does not allow this", body = crate::error::Problem),
        (status = 404, body = crate::error::Problem)))]
pub async fn events(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String)>,
    query: web::Query<SeqPageQuery>,
) -> ApiResult<HttpResponse> {
    let (tenant_ref, job_ref) = path.into_inner();
    let (_, job) = job(&state, &caller, &tenant_ref, &job_ref, Action::Read).await?;
    let (limit, after) = (query.limit()?, query.seq_cursor()?);
    let page = state
        .db(move |conn| Ok(store::jobs::events(conn, job.id, after, limit)?))
        .await?;
    Ok(HttpResponse::Ok().json(PageOf::from_page(page, JobEventView::from)))
}

#[utoipa::path(post, operation_id = "cancelJob", path = "/v1/tenants/{tenant}/jobs/{job}/cancel", tag = "jobs", security(("bearer" = [])),
    params(("tenant" = String, Path), ("job" = Uuid, Path)),
    responses((status = 200, description = "Canceled: it had not started", body = JobView),
        (status = 202, description = "Running: cancel requested; the worker stops it at its next \
            step boundary (within about a second) and marks it `canceled`. A job that finishes \
            first keeps its result. Asking again answers 202 again.", body = JobView),
        (status = 403, description = "Your role in this tenant does not allow this", body = crate::error::Problem),
        (status = 404, body = crate::error::Problem),
        (status = 409, description = "Already finished", body = crate::error::Problem)))]
pub async fn cancel(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let (tenant_ref, job_ref) = path.into_inner();
    let (tenant, job) = job(&state, &caller, &tenant_ref, &job_ref, Action::Create).await?;
    // Canceled at once, or (running) asked to stop at its next step.
    let who = caller.clone();
    let audit = move |action: &str| {
        caller.audit(
            Some(job.tenant_id),
            action,
            format!("job/{}", job.id),
            AuditResult::Success,
            json!({}),
        )
    };
    let (status, view) = state
        .db(move |conn| {
            conn.build_transaction().run(|conn| {
                // The caller as it is now (its membership share-locked to the commit): one
                // removed while this request was on its way cancels nothing.
                crate::routes::tenants::still_holds(
                    conn,
                    &tenant,
                    &who,
                    Object::Job,
                    Action::Create,
                )?;
                let was_first = store::jobs::queue_position(conn, &job)? == Some(0);
                if store::jobs::cancel(conn, job.id)? {
                    store::jobs::add_event(
                        conn,
                        job.id,
                        "canceled",
                        "canceled by request",
                        json!({}),
                    )?;
                    store::audit::append(conn, &audit("job.cancel"))?;
                    // It was first in line: the next one may run now.
                    if was_first {
                        store::jobs::wake_next(conn, job.environment_id)?;
                    }
                    let job = store::jobs::get(conn, job.id)?
                        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("job vanished")))?;
                    // A retry of an apply or destroy that had already started changing the
                    // target (waiting between attempts) leaves it partly changed: say so, as a
                    // cancel at a step boundary does, so the next apply or destroy may start.
                    if job.attempts > 0 && job.operation.changes_target() {
                        store::environments::mark_failed_if_in(
                            conn,
                            job.environment_id,
                            &EnvironmentState::MIDWAY,
                        )?;
                    }
                    return Ok::<_, ApiError>((StatusCode::OK, JobView::new(job, None)));
                }
                // Running: the worker stops it at a step boundary (asking twice is one request).
                if store::jobs::request_cancel(conn, job.id)? {
                    store::jobs::add_event(
                        conn,
                        job.id,
                        "cancel_requested",
                        "cancel requested; the worker stops at the next step boundary",
                        json!({}),
                    )?;
                    store::audit::append(conn, &audit("job.cancel_requested"))?;
                }
                let now = store::jobs::get(conn, job.id)?
                    .ok_or_else(|| ApiError::internal(anyhow::anyhow!("job vanished")))?;
                if now.state == JobState::Running && now.cancel_requested_at.is_some() {
                    let position = store::jobs::queue_position(conn, &now)?;
                    return Ok((StatusCode::ACCEPTED, JobView::new(now, position)));
                }
                Err(ApiError::Conflict(format!(
                    "job {} is {}; a finished job cannot be canceled",
                    now.id, now.state
                )))
            })
        })
        .await?;
    state.relay_wake.notify_one();
    Ok(HttpResponse::build(status).json(view))
}
