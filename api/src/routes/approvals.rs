//! Approvals of planned changes: approve or reject a job awaiting approval (bound to its plan
//! hash, audited), and a tenant's list of what waits for the caller's decision.

use crate::auth::Caller;
use crate::body::JsonBody;
use crate::error::{ApiError, ApiResult};
use crate::routes::jobs::JobView;
use crate::routes::{PageOf, PageQuery, parse_id};
use crate::state::AppState;
use actix_web::{HttpResponse, web};
use bulkhead_core::audit::AuditResult;
use bulkhead_core::authz::{Action, Object};
use bulkhead_core::domain::parse_display_text_of;
use bulkhead_core::governance::decisions::{
    ApprovalProgress, ApprovalRefused, ChangeNeeds, decide_approval,
};
use bulkhead_core::jobs::JobState;
use bulkhead_core::store::{self, jobs::Decision, jobs::Job};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

page_schema!(PendingApprovalPage, PendingApproval, pending_approval_page);

/// `POST …/jobs/{job}/approve`: the plan the approver reviewed.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = crate::examples::approve_request)]
pub struct ApproveRequest {
    /// The job's `plan_hash` as the approver read it; refused (409) if the plan changed since.
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub plan_hash: String,
    #[schema(schema_with = crate::schemas::decision_comment)]
    pub comment: Option<String>,
}

/// `POST …/jobs/{job}/reject`: why.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = crate::examples::reject_request)]
pub struct RejectRequest {
    #[schema(schema_with = crate::schemas::decision_comment)]
    pub comment: Option<String>,
}

/// The comment as kept (trimmed), or a field error.
fn check_comment(comment: Option<String>) -> ApiResult<Option<String>> {
    comment
        .map(|text| parse_display_text_of("comment", &text, 1000))
        .transpose()
        .map_err(|e| ApiError::Validation(vec![e]))
}

/// Approvals are given by people: an API key (a pipeline) could approve the change it asked
/// for under another name.
const KEYS_DO_NOT_APPROVE: &str = "approvals are given by people: sign in as a member with the \
    approver or tenant_admin role; an API key cannot approve or reject";

/// What the review of `job` needs: as its stage's policy said when it was asked for.
fn needs_of(job: &Job) -> ChangeNeeds {
    ChangeNeeds {
        approvals: u8::try_from(job.approvals_required).unwrap_or(u8::MAX),
        requester_may_approve: job.requester_may_approve,
    }
}

fn awaiting(job: &Job) -> ApiResult<()> {
    if job.state == JobState::AwaitingApproval {
        return match job.approval_expires_at {
            Some(until) if until <= chrono::Utc::now() => Err(ApiError::Conflict(format!(
                "the approval wait of job {} ended at {until}; ask for the change again",
                job.id
            ))),
            _ => Ok(()),
        };
    }
    Err(ApiError::Conflict(match job.state {
        JobState::Queued | JobState::Running if job.awaits_review() => format!(
            "job {} is still being planned; approve it once it is awaiting_approval and shows its plan_hash",
            job.id
        ),
        state => format!(
            "job {} is {state}; only a job awaiting approval can be approved or rejected",
            job.id
        ),
    }))
}

#[utoipa::path(post, operation_id = "approveJob", path = "/v1/tenants/{tenant}/jobs/{job}/approve", tag = "governance", security(("bearer" = [])),
    params(("tenant" = String, Path), ("job" = Uuid, Path)),
    request_body = ApproveRequest,
    responses((status = 200, description = "Recorded: the job is `approved` (and runs the approved plan) when this was the last approval needed, else still `awaiting_approval`", body = JobView),
        (status = 403, description = "Your role does not allow approving, you asked for this change and the stage's policy does not let requesters approve, or the caller is an API key", body = crate::error::Problem),
        (status = 404, body = crate::error::Problem),
        (status = 409, description = "The job is not awaiting approval, its plan hash is not the one given, or you already decided on it", body = crate::error::Problem),
        (status = 422, body = crate::error::Problem)))]
pub async fn approve(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String)>,
    body: JsonBody<ApproveRequest>,
) -> ApiResult<HttpResponse> {
    let body = body.into_inner()?;
    if body.plan_hash.len() != 64
        || !body
            .plan_hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(ApiError::validation(
            "plan_hash",
            "must be the 64 lowercase hex digits of the job's plan_hash (GET the job to read it)",
        ));
    }
    let comment = check_comment(body.comment)?;
    decide(
        state,
        caller,
        path,
        Decision::Approved,
        Some(body.plan_hash),
        comment,
    )
    .await
}

#[utoipa::path(post, operation_id = "rejectJob", path = "/v1/tenants/{tenant}/jobs/{job}/reject", tag = "governance", security(("bearer" = [])),
    params(("tenant" = String, Path), ("job" = Uuid, Path)),
    request_body = RejectRequest,
    responses((status = 200, description = "The job is `rejected`; the environment's next job may run", body = JobView),
        (status = 403, description = "Your role does not allow approving, or the caller is an API key", body = crate::error::Problem),
        (status = 404, body = crate::error::Problem),
        (status = 409, description = "The job is not awaiting approval, or you already decided on it", body = crate::error::Problem),
        (status = 422, body = crate::error::Problem)))]
pub async fn reject(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String)>,
    body: JsonBody<RejectRequest>,
) -> ApiResult<HttpResponse> {
    let body = body.into_inner()?;
    let comment = check_comment(body.comment)?;
    decide(state, caller, path, Decision::Rejected, None, comment).await
}

async fn decide(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String)>,
    decision: Decision,
    plan_hash: Option<String>,
    comment: Option<String>,
) -> ApiResult<HttpResponse> {
    let (tenant_ref, job_ref) = path.into_inner();
    // Keys never approve: a key is refused below whatever its role, after only the tenant's
    // visibility is checked, so its refusals do not spend the tenant's budget of writes (an
    // approver key, which has no write it may make, could otherwise exhaust it).
    let needed = if caller.key.is_some() {
        Action::Read
    } else {
        Action::Approve
    };
    let tenant = state
        .authorize_tenant(&caller, &tenant_ref, Object::Job, needed)
        .await?;
    if caller.key.is_some() {
        return Err(state
            .deny(
                &caller,
                &tenant,
                Object::Job,
                Action::Approve,
                KEYS_DO_NOT_APPROVE.to_owned(),
            )
            .await);
    }
    let job_id = parse_id(&job_ref, "job")?;
    let (who, scope) = (caller.clone(), tenant.clone());
    let decided = state
        .db(move |conn| {
            conn.build_transaction().run(|conn| {
                // The approver as it is now (its membership share-locked to the commit): one
                // removed while its approval was on its way approves nothing.
                crate::routes::tenants::still_holds(
                    conn,
                    &tenant,
                    &caller,
                    Object::Job,
                    Action::Approve,
                )?;
                let job = store::jobs::lock(conn, tenant.id, job_id)?.ok_or_else(|| {
                    ApiError::NotFound(format!("no job {job_id} in tenant '{}'", tenant.slug))
                })?;
                awaiting(&job)?;
                let current = job.plan_hash.clone().ok_or_else(|| {
                    ApiError::internal(anyhow::anyhow!("a job awaiting approval has no plan"))
                })?;
                let decided = store::jobs::approvals_of(conn, &[job.id])?;
                if decided.iter().any(|a| a.approver_id == caller.id) {
                    return Err(ApiError::Conflict(format!(
                        "you already decided on job {}; another approver is needed",
                        job.id
                    )));
                }
                let needs = needs_of(&job);
                let requester = store::jobs::is_requester(conn, &job, caller.id)?;
                let (completes, remaining, hash) = match decision {
                    Decision::Approved => {
                        let approved_by: Vec<Uuid> = decided
                            .iter()
                            .filter(|a| a.decision == Decision::Approved.as_str())
                            .map(|a| a.approver_id)
                            .collect();
                        let given = plan_hash.unwrap_or_default();
                        // The requester is passed as the caller when the job was asked for by
                        // the caller or one of the caller's API keys.
                        let asked_by = requester.then_some(caller.id).or(job.requested_by);
                        let progress = decide_approval(
                            needs,
                            asked_by,
                            caller.id,
                            &approved_by,
                            &given,
                            &current,
                        )
                        .map_err(|refused| match refused {
                            ApprovalRefused::Requester => ApiError::Forbidden(format!(
                                "{refused}; ask another member with job:approve"
                            )),
                            other => ApiError::Conflict(other.to_string()),
                        })?;
                        match progress {
                            ApprovalProgress::Approved => (true, 0, given),
                            ApprovalProgress::Waiting { remaining } => (false, remaining, given),
                        }
                    }
                    Decision::Rejected => (true, 0, current.clone()),
                };
                store::jobs::decide(
                    conn,
                    &job,
                    caller.id,
                    decision,
                    &hash,
                    comment.as_deref(),
                    completes,
                )?;
                let (kind, message) = match (decision, completes) {
                    (Decision::Rejected, _) => {
                        ("rejected", format!("rejected by {}", caller.label))
                    }
                    (Decision::Approved, true) => (
                        "approved",
                        format!("approved by {}; the approved plan runs next", caller.label),
                    ),
                    (Decision::Approved, false) => (
                        "approval",
                        format!(
                            "approved by {}; {remaining} more approval(s) needed",
                            caller.label
                        ),
                    ),
                };
                store::jobs::add_event(
                    conn,
                    job.id,
                    kind,
                    &message,
                    json!({"approver_id": caller.id, "plan_hash": hash, "comment": comment}),
                )?;
                let action = match decision {
                    Decision::Approved => "job.approve",
                    Decision::Rejected => "job.reject",
                };
                store::audit::append(
                    conn,
                    &caller.audit(
                        Some(job.tenant_id),
                        action,
                        format!("job/{}", job.id),
                        AuditResult::Success,
                        json!({"plan_hash": hash, "comment": comment, "completes": completes,
                               "remaining": remaining, "environment_id": job.environment_id}),
                    ),
                )?;
                let job = store::jobs::get(conn, job.id)?
                    .ok_or_else(|| ApiError::internal(anyhow::anyhow!("job vanished")))?;
                Ok::<_, ApiError>(JobView::one(conn, job)?)
            })
        })
        .await;
    let view = match decided {
        // Refused as the change's requester: a denial, audited as every other.
        Err(ApiError::Forbidden(reason)) => {
            return Err(state
                .deny(&who, &scope, Object::Job, Action::Approve, reason)
                .await);
        }
        other => other?,
    };
    state.relay_wake.notify_one();
    Ok(HttpResponse::Ok().json(view))
}

/// A change waiting for approvals, as its approvers see it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PendingApproval {
    /// The job, with its plan, plan hash, requester, reason and the decisions so far.
    pub job: JobView,
    pub environment: String,
    pub stage: String,
    /// Whether the caller may approve it (no: they asked for it and the stage's policy does
    /// not let requesters approve).
    pub you_may_approve: bool,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ApprovalsQuery {
    /// `pending` (the default): changes awaiting approval that the caller has not decided on.
    #[param(pattern = "^pending$")]
    pub state: Option<String>,
    /// 1 to 200; default 50.
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(
        pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    )]
    pub cursor: Option<String>,
}

#[utoipa::path(get, operation_id = "listApprovals", path = "/v1/tenants/{tenant}/approvals", tag = "governance", security(("bearer" = [])),
    params(("tenant" = String, Path), ApprovalsQuery),
    responses((status = 200, description = "Changes of the tenant awaiting approval that the caller has not decided on, oldest first", body = PendingApprovalPage),
        (status = 403, description = "Your role in this tenant does not allow approving", body = crate::error::Problem),
        (status = 404, body = crate::error::Problem),
        (status = 422, body = crate::error::Problem)))]
pub async fn pending(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    query: web::Query<ApprovalsQuery>,
) -> ApiResult<HttpResponse> {
    let tenant = state
        .authorize_tenant(&caller, &path, Object::Job, Action::Approve)
        .await?;
    let query = query.into_inner();
    if let Some(other) = query.state.as_deref().filter(|s| *s != "pending") {
        return Err(ApiError::validation(
            "state",
            format!("'{other}' is not a list of approvals; use state=pending (or leave it out)"),
        ));
    }
    let paging = PageQuery {
        limit: query.limit,
        cursor: query.cursor,
    };
    let (limit, after) = (paging.limit()?, paging.uuid_cursor()?);
    let page = state
        .db(move |conn| {
            let page = store::jobs::pending_for_tenant(conn, tenant.id, caller.id, after, limit)?;
            let mut items = Vec::with_capacity(page.items.len());
            for job in page.items {
                let environment = store::environments::find(conn, job.environment_id)?;
                let (name, stage) = environment.map(|e| (e.name, e.stage)).unwrap_or_default();
                let you_may_approve = caller.key.is_none()
                    && (job.requester_may_approve
                        || !store::jobs::is_requester(conn, &job, caller.id)?);
                items.push(PendingApproval {
                    job: JobView::one(conn, job)?,
                    environment: name,
                    stage,
                    you_may_approve,
                });
            }
            Ok::<_, ApiError>(PageOf {
                items,
                next_cursor: page.next_cursor,
            })
        })
        .await?;
    Ok(HttpResponse::Ok().json(page))
}
