//! The review of a change that needs approval: how many approvals a job needs when it is asked
//! for, a planned job parked to await them, the approvers' decisions, and the end of a wait.

use super::Job;
use crate::domain::Stage;
use crate::governance::decisions::ChangeNeeds;
use crate::jobs::{JobState, Operation, can_transition};
use crate::schema::{api_keys, job_approvals, jobs};
use crate::store::{Page, StoreError, outbox, tenants::page};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Int8, Uuid as SqlUuid};
use std::time::Duration;
use uuid::Uuid;

/// What a change of a `stage` environment by `operation` needs under the tenant's policy as it
/// is now (the job keeps it; a later policy applies to later jobs).
pub fn approvals_needed(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    stage: Stage,
    operation: Operation,
) -> Result<ChangeNeeds, StoreError> {
    let policy = crate::store::policies::get(conn, tenant_id)?.policy;
    Ok(crate::governance::decisions::change_needs(
        &policy, stage, operation,
    ))
}

/// Parks a running job (holding `token`) whose plan is recorded to await approval for `wait`;
/// the fencing token moves on, so the worker that planned it holds nothing. Returns when the
/// wait ends, or `None` if the lease was lost meanwhile.
pub fn park(
    conn: &mut PgConnection,
    job_id: Uuid,
    token: i64,
    wait: Duration,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    #[derive(QueryableByName)]
    struct Parked {
        #[diesel(sql_type = diesel::sql_types::Timestamptz)]
        approval_expires_at: DateTime<Utc>,
    }
    if !can_transition(JobState::Running, JobState::AwaitingApproval) {
        return Err(StoreError::Unavailable(
            "job transition running -> awaiting_approval is not in the state machine".to_owned(),
        ));
    }
    let parked: Option<Parked> = diesel::sql_query(
        "UPDATE jobs SET state = 'awaiting_approval', lease_owner = NULL, \
                lease_expires_at = NULL, fencing_token = nextval('fencing_tokens'), \
                approval_expires_at = now() + make_interval(secs => $3), updated_at = now() \
         WHERE id = $1 AND fencing_token = $2 AND state = 'running' \
         RETURNING approval_expires_at",
    )
    .bind::<SqlUuid, _>(job_id)
    .bind::<Int8, _>(token)
    .bind::<Int8, _>(i64::try_from(wait.as_secs()).unwrap_or(i64::MAX))
    .get_result(conn)
    .optional()?;
    Ok(parked.map(|p| p.approval_expires_at))
}

/// Locks a job of the tenant for a decision on it.
pub fn lock(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    job_id: Uuid,
) -> Result<Option<Job>, StoreError> {
    Ok(jobs::table
        .filter(jobs::tenant_id.eq(tenant_id))
        .filter(jobs::id.eq(job_id))
        .select(Job::as_select())
        .for_update()
        .first(conn)
        .optional()?)
}

/// An approver's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Approved,
    Rejected,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Approved => "approved",
            Self::Rejected => "rejected",
        }
    }

    pub fn from_db(raw: &str) -> Option<Self> {
        [Self::Approved, Self::Rejected]
            .into_iter()
            .find(|d| d.as_str() == raw)
    }
}

/// One approver's decision on a job.
#[derive(Debug, Clone, Queryable)]
pub struct Approval {
    pub job_id: Uuid,
    pub approver_id: Uuid,
    pub decision: String,
    pub plan_hash: String,
    pub comment: Option<String>,
    pub decided_at: DateTime<Utc>,
}

/// The decisions on each of `job_ids`, oldest first.
pub fn approvals_of(
    conn: &mut PgConnection,
    job_ids: &[Uuid],
) -> Result<Vec<Approval>, StoreError> {
    if job_ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(job_approvals::table
        .filter(job_approvals::job_id.eq_any(job_ids))
        .order((
            job_approvals::decided_at.asc(),
            job_approvals::approver_id.asc(),
        ))
        .select((
            job_approvals::job_id,
            job_approvals::approver_id,
            job_approvals::decision,
            job_approvals::plan_hash,
            job_approvals::comment,
            job_approvals::decided_at,
        ))
        .load(conn)?)
}

/// Whether `approver` asked for the job, directly or through an API key they created (a key's
/// request is its creator's for the rule that no one approves their own change).
pub fn is_requester(
    conn: &mut PgConnection,
    job: &Job,
    approver: Uuid,
) -> Result<bool, StoreError> {
    let Some(requester) = job.requested_by else {
        return Ok(false);
    };
    if requester == approver {
        return Ok(true);
    }
    let created_by: Option<Option<Uuid>> = api_keys::table
        .filter(api_keys::principal_id.eq(requester))
        .select(api_keys::created_by)
        .first(conn)
        .optional()?;
    Ok(created_by.flatten() == Some(approver))
}

/// Records `approver`'s decision on a job awaiting approval (locked by the caller) and, when it
/// completes the review, moves the job on: `approved` (the plan hash becomes the one the run
/// must find; its wake-up is queued, and it gets its full attempts) or `rejected`.
pub fn decide(
    conn: &mut PgConnection,
    job: &Job,
    approver: Uuid,
    decision: Decision,
    plan_hash: &str,
    comment: Option<&str>,
    completes: bool,
) -> Result<(), StoreError> {
    diesel::insert_into(job_approvals::table)
        .values((
            job_approvals::job_id.eq(job.id),
            job_approvals::approver_id.eq(approver),
            job_approvals::decision.eq(decision.as_str()),
            job_approvals::plan_hash.eq(plan_hash),
            job_approvals::comment.eq(comment),
        ))
        .execute(conn)?;
    if !completes {
        return Ok(());
    }
    let now = Utc::now();
    let waiting = jobs::table
        .filter(jobs::id.eq(job.id))
        .filter(jobs::state.eq(JobState::AwaitingApproval))
        .filter(jobs::approval_expires_at.gt(diesel::dsl::now));
    let changed = match decision {
        Decision::Approved => diesel::update(waiting)
            .set((
                jobs::state.eq(JobState::Approved),
                jobs::approved_at.eq(Some(now)),
                jobs::approved_by.eq(Some(approver)),
                jobs::expected_plan_hash.eq(Some(plan_hash)),
                jobs::attempts.eq(0),
                jobs::run_after.eq(now),
                jobs::error.eq(None::<String>),
                jobs::updated_at.eq(now),
            ))
            .execute(conn)?,
        Decision::Rejected => diesel::update(waiting)
            .set((
                jobs::state.eq(JobState::Rejected),
                jobs::finished_at.eq(Some(now)),
                jobs::error.eq(Some(match comment {
                    Some(comment) => format!("rejected by an approver: {comment}"),
                    None => "rejected by an approver".to_owned(),
                })),
                jobs::updated_at.eq(now),
            ))
            .execute(conn)?,
    };
    if changed != 1 {
        return Err(StoreError::Transition(format!(
            "job {} is no longer awaiting approval",
            job.id
        )));
    }
    match decision {
        Decision::Approved => outbox::enqueue(conn, job.id, job.operation.as_str()),
        Decision::Rejected => super::wake_next(conn, job.environment_id),
    }
}

/// Jobs awaiting approval whose wait has ended, up to a batch, locked past others.
pub const AWAITING_EXPIRED_SQL: &str = "UPDATE jobs SET state = 'expired', finished_at = now(), \
        updated_at = now(), error = 'the approval wait ended before enough approvals came; \
        ask for the change again' \
     WHERE id = ANY(ARRAY(SELECT id FROM jobs WHERE state = 'awaiting_approval' \
        AND approval_expires_at < now() ORDER BY approval_expires_at LIMIT $1 \
        FOR UPDATE SKIP LOCKED)) \
     RETURNING *";

/// Ends the waits that expired (at most `limit`, by the database's clock) in one transaction,
/// audited by `actor` and waking each environment's next job; returns the jobs, now `expired`.
pub fn expire_waits(
    conn: &mut PgConnection,
    actor: &str,
    limit: i64,
) -> Result<Vec<Job>, StoreError> {
    use diesel::Connection;
    conn.transaction(|conn| expire_batch(conn, actor, limit))
}

fn expire_batch(conn: &mut PgConnection, actor: &str, limit: i64) -> Result<Vec<Job>, StoreError> {
    let expired: Vec<Job> = diesel::sql_query(AWAITING_EXPIRED_SQL)
        .bind::<Int8, _>(limit)
        .load(conn)?;
    for job in &expired {
        crate::store::audit::append(
            conn,
            &crate::store::audit::NewAuditEvent {
                actor_id: None,
                actor: actor.to_owned(),
                tenant_id: Some(job.tenant_id),
                action: "job.approval_expired".to_owned(),
                target: format!("environment/{}", job.environment_id),
                result: crate::audit::AuditResult::Failure,
                request_id: format!("job:{}", job.id),
                details: serde_json::json!({
                    "job_id": job.id,
                    "plan_hash": job.plan_hash,
                    "approvals_required": job.approvals_required,
                }),
            },
        )?;
        super::add_event(
            conn,
            job.id,
            "expired",
            "the approval wait ended before enough approvals came",
            serde_json::json!({"approvals_required": job.approvals_required}),
        )?;
        super::wake_next(conn, job.environment_id)?;
    }
    Ok(expired)
}

/// A tenant's jobs awaiting approval that `approver` has not decided on yet, in the order they
/// were asked for (ids are time-ordered).
pub fn pending_for_tenant(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    approver: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Page<Job>, StoreError> {
    let decided = job_approvals::table
        .filter(job_approvals::job_id.eq(jobs::id))
        .filter(job_approvals::approver_id.eq(approver));
    let mut query = jobs::table
        .filter(jobs::tenant_id.eq(tenant_id))
        .filter(jobs::state.eq(JobState::AwaitingApproval))
        .filter(jobs::approval_expires_at.gt(diesel::dsl::now))
        .filter(diesel::dsl::not(diesel::dsl::exists(decided)))
        .select(Job::as_select())
        .order(jobs::id.asc())
        .limit(limit + 1)
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(jobs::id.gt(after));
    }
    let rows = query.load(conn)?;
    Ok(page(rows, limit, |j| j.id.to_string()))
}
