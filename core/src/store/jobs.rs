//! Jobs: creation, reads, and the worker's fenced writes (claim, heartbeat, finish, requeue).
//! Every state change names its allowed source states from `jobs::TRANSITIONS`.

use crate::jobs::{JobState, Operation, can_transition, sources_of};
use crate::schema::{job_events, jobs};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Int8, Text, Uuid as SqlUuid};
use std::time::Duration;
use uuid::Uuid;

use super::tenants::page;
use super::{Page, StoreError};

mod line;
mod review;
pub use line::{
    QUEUE_POSITIONS_SQL, active_for_environment, next_in_line, queue_position, queue_positions,
    wake_next,
};
pub use review::{
    AWAITING_EXPIRED_SQL, Approval, Decision, approvals_needed, approvals_of, decide, expire_waits,
    is_requester, lock, park, pending_for_tenant,
};

#[derive(Debug, Clone, Queryable, Selectable, QueryableByName)]
#[diesel(table_name = jobs)]
pub struct Job {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub environment_id: Uuid,
    pub operation: Operation,
    pub state: JobState,
    pub attempts: i32,
    pub max_attempts: i32,
    pub run_after: DateTime<Utc>,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub fencing_token: i64,
    pub plan: Option<serde_json::Value>,
    pub plan_hash: Option<String>,
    pub expected_plan_hash: Option<String>,
    pub requested_by: Option<Uuid>,
    pub approved_by: Option<Uuid>,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Set when someone asked to cancel the job while it ran; its worker stops at the next step.
    pub cancel_requested_at: Option<DateTime<Utc>>,
    /// Distinct approvals the change needs before it runs (its stage's policy when asked for).
    pub approvals_required: i16,
    /// Why the change was asked for, for its approvers.
    pub reason: Option<String>,
    /// While it awaits approval: when the wait ends (`expired`).
    pub approval_expires_at: Option<DateTime<Utc>>,
    /// When its last needed approval came; it then runs the approved plan.
    pub approved_at: Option<DateTime<Utc>>,
    /// For an upgrade: the blueprint version this apply brings the environment to.
    pub blueprint_version: Option<i32>,
    /// Whether its requester may approve it (the stage's policy when it was asked for).
    pub requester_may_approve: bool,
    /// Queued by the scheduler (a scheduled drift check), not by a person.
    pub scheduled: bool,
}

impl Job {
    /// Whether the job must be planned and approved before it may change the target.
    pub fn awaits_review(&self) -> bool {
        self.approvals_required > 0 && self.approved_at.is_none()
    }
}

#[derive(Debug, Insertable)]
#[diesel(table_name = jobs)]
pub struct NewJob<'a> {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub environment_id: Uuid,
    pub operation: Operation,
    pub max_attempts: i32,
    pub expected_plan_hash: Option<&'a str>,
    pub requested_by: Option<Uuid>,
    pub approvals_required: i16,
    pub reason: Option<&'a str>,
    pub blueprint_version: Option<i32>,
    pub requester_may_approve: bool,
    pub scheduled: bool,
}

impl<'a> NewJob<'a> {
    /// A job the scheduler queues (no person asked, nothing to review).
    pub fn scheduled(
        tenant_id: Uuid,
        environment_id: Uuid,
        operation: Operation,
        max_attempts: i32,
        reason: &'a str,
    ) -> Self {
        Self {
            id: Uuid::now_v7(),
            tenant_id,
            environment_id,
            operation,
            max_attempts,
            expected_plan_hash: None,
            requested_by: None,
            approvals_required: 0,
            reason: Some(reason),
            blueprint_version: None,
            requester_may_approve: false,
            scheduled: true,
        }
    }
}

/// Inserts a queued job and its wake-up message in the caller's transaction.
pub fn insert(conn: &mut PgConnection, new: &NewJob<'_>) -> Result<Job, StoreError> {
    let job: Job = diesel::insert_into(jobs::table)
        .values(new)
        .returning(Job::as_returning())
        .get_result(conn)?;
    add_event(conn, job.id, "queued", "job queued", serde_json::json!({}))?;
    super::outbox::enqueue(conn, job.id, job.operation.as_str())?;
    Ok(job)
}

pub fn find(conn: &mut PgConnection, tenant_id: Uuid, id: Uuid) -> Result<Option<Job>, StoreError> {
    Ok(jobs::table
        .filter(jobs::tenant_id.eq(tenant_id))
        .filter(jobs::id.eq(id))
        .select(Job::as_select())
        .first(conn)
        .optional()?)
}

pub fn get(conn: &mut PgConnection, id: Uuid) -> Result<Option<Job>, StoreError> {
    Ok(jobs::table
        .find(id)
        .select(Job::as_select())
        .first(conn)
        .optional()?)
}

pub fn list(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    environment_id: Option<Uuid>,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Page<Job>, StoreError> {
    let mut query = jobs::table
        .filter(jobs::tenant_id.eq(tenant_id))
        .select(Job::as_select())
        .order(jobs::id.asc())
        .limit(limit + 1)
        .into_boxed();
    if let Some(environment_id) = environment_id {
        query = query.filter(jobs::environment_id.eq(environment_id));
    }
    if let Some(after) = after {
        query = query.filter(jobs::id.gt(after));
    }
    let rows = query.load(conn)?;
    Ok(page(rows, limit, |j| j.id.to_string()))
}

pub fn add_event(
    conn: &mut PgConnection,
    job_id: Uuid,
    kind: &str,
    message: &str,
    details: serde_json::Value,
) -> Result<(), StoreError> {
    diesel::insert_into(job_events::table)
        .values((
            job_events::job_id.eq(job_id),
            job_events::kind.eq(kind),
            job_events::message.eq(message),
            job_events::details.eq(details),
        ))
        .execute(conn)?;
    Ok(())
}

/// The environment's last drift check that succeeded (its plan holds what differed).
pub fn last_drift_check(
    conn: &mut PgConnection,
    environment_id: Uuid,
) -> Result<Option<Job>, StoreError> {
    Ok(jobs::table
        .filter(jobs::environment_id.eq(environment_id))
        .filter(jobs::operation.eq(Operation::DriftCheck))
        .filter(jobs::state.eq(JobState::Succeeded))
        .order(jobs::finished_at.desc())
        .select(Job::as_select())
        .first(conn)
        .optional()?)
}

/// Whether the job has an event of `kind`.
pub fn has_event(conn: &mut PgConnection, job_id: Uuid, kind: &str) -> Result<bool, StoreError> {
    Ok(diesel::select(diesel::dsl::exists(
        job_events::table
            .filter(job_events::job_id.eq(job_id))
            .filter(job_events::kind.eq(kind)),
    ))
    .get_result(conn)?)
}

/// Whether the job is still `running` under `token`; locks the row (`FOR SHARE`) until the
/// end of the transaction, so no claim, requeue or sweep can move the token meanwhile. Every
/// write a running job makes goes in a transaction that starts with this.
pub fn hold(conn: &mut PgConnection, job_id: Uuid, token: i64) -> Result<bool, StoreError> {
    let held = jobs::table
        .filter(jobs::id.eq(job_id))
        .filter(jobs::fencing_token.eq(token))
        .filter(jobs::state.eq(JobState::Running))
        .select(jobs::id)
        .for_share()
        .first::<Uuid>(conn)
        .optional()?;
    Ok(held.is_some())
}

/// Locks a running job whose lease has expired, if it still is (sweeper): a worker that
/// renewed its lease after the sweeper listed the job keeps it.
pub fn lock_expired(conn: &mut PgConnection, job_id: Uuid, token: i64) -> Result<bool, StoreError> {
    let expired = jobs::table
        .filter(jobs::id.eq(job_id))
        .filter(jobs::fencing_token.eq(token))
        .filter(jobs::state.eq(JobState::Running))
        .filter(jobs::lease_expires_at.lt(diesel::dsl::now))
        .select(jobs::id)
        .for_update()
        // A row locked by a write in flight (perhaps of a paused worker) waits for the next
        // sweep instead of holding this one.
        .skip_locked()
        .first::<Uuid>(conn)
        .optional()?;
    Ok(expired.is_some())
}

/// Several events of one kind in one statement (one commit), in the given order.
pub fn add_events(
    conn: &mut PgConnection,
    job_id: Uuid,
    kind: &str,
    events: &[(String, serde_json::Value)],
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let rows: Vec<_> = events
        .iter()
        .map(|(message, details)| {
            (
                job_events::job_id.eq(job_id),
                job_events::kind.eq(kind),
                job_events::message.eq(message),
                job_events::details.eq(details),
            )
        })
        .collect();
    diesel::insert_into(job_events::table)
        .values(&rows)
        .execute(conn)?;
    Ok(())
}

/// Deletes up to `limit` events older than `age` of jobs that have finished, oldest first
/// (retention; the job row keeps its result and error).
pub const DELETE_EVENTS_SQL: &str = "DELETE FROM job_events WHERE id = ANY(ARRAY(\
     SELECT e.id FROM job_events e JOIN jobs j ON j.id = e.job_id \
     WHERE e.occurred_at < now() - make_interval(secs => $1::double precision) \
       AND j.finished_at IS NOT NULL \
     ORDER BY e.occurred_at LIMIT $2 FOR UPDATE OF e SKIP LOCKED))";

pub fn delete_events_before(
    conn: &mut PgConnection,
    age: Duration,
    limit: i64,
) -> Result<usize, StoreError> {
    Ok(diesel::sql_query(DELETE_EVENTS_SQL)
        .bind::<Int8, _>(super::seconds(age))
        .bind::<Int8, _>(limit)
        .execute(conn)?)
}

#[derive(Debug, Clone, Queryable)]
pub struct JobEvent {
    pub id: i64,
    pub occurred_at: DateTime<Utc>,
    pub kind: String,
    pub message: String,
    pub details: serde_json::Value,
}

pub fn events(
    conn: &mut PgConnection,
    job_id: Uuid,
    after: Option<i64>,
    limit: i64,
) -> Result<Page<JobEvent>, StoreError> {
    let mut query = job_events::table
        .filter(job_events::job_id.eq(job_id))
        .order(job_events::id.asc())
        .limit(limit + 1)
        .select((
            job_events::id,
            job_events::occurred_at,
            job_events::kind,
            job_events::message,
            job_events::details,
        ))
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(job_events::id.gt(after));
    }
    let rows = query.load(conn)?;
    Ok(page(rows, limit, |e: &JobEvent| e.id.to_string()))
}

/// Claims a job for `worker`: only if it is runnable now and first in its environment's line.
/// Bumps the fencing token; every later write must present it. (The line's states are spelled
/// out, not bound, so the plan can use the `jobs_line` index of active jobs.)
pub const CLAIM_SQL: &str = concat!(
    "UPDATE jobs SET state = 'running', lease_owner = $2, \
         lease_expires_at = now() + make_interval(secs => $3), \
         fencing_token = nextval('fencing_tokens'), attempts = attempts + 1, \
         started_at = coalesce(started_at, now()), updated_at = now() \
     WHERE id = $1 AND state = ANY($4) AND run_after <= now() \
       AND id = (SELECT j.id FROM jobs j WHERE j.environment_id = jobs.environment_id \
                 AND j.state IN ",
    crate::active_job_states_sql!(),
    " ORDER BY j.created_at, j.id LIMIT 1) \
     RETURNING *"
);

pub fn claim(
    conn: &mut PgConnection,
    job_id: Uuid,
    worker: &str,
    lease: Duration,
) -> Result<Option<Job>, StoreError> {
    let lease_secs = i64::try_from(lease.as_secs()).unwrap_or(30);
    let sources = sources_of(JobState::Running);
    let job = diesel::sql_query(CLAIM_SQL)
        .bind::<SqlUuid, _>(job_id)
        .bind::<Text, _>(worker)
        .bind::<Int8, _>(lease_secs)
        .bind::<diesel::sql_types::Array<Text>, _>(sources)
        .get_result::<Job>(conn)
        .optional();
    match job {
        // Another worker holds this environment's running slot right now.
        Err(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            _,
        )) => Ok(None),
        other => Ok(other?),
    }
}

/// Extends the lease. `None` when the lease was lost (token moved on); else whether a cancel
/// was requested, so one statement serves both questions a running job asks.
pub fn heartbeat(
    conn: &mut PgConnection,
    job_id: Uuid,
    token: i64,
    lease: Duration,
) -> Result<Option<bool>, StoreError> {
    #[derive(QueryableByName)]
    struct Beat {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        cancel_requested: bool,
    }
    let lease_secs = i64::try_from(lease.as_secs()).unwrap_or(30);
    let beat: Option<Beat> = diesel::sql_query(
        "UPDATE jobs SET lease_expires_at = now() + make_interval(secs => $3) \
         WHERE id = $1 AND fencing_token = $2 AND state = 'running' \
         RETURNING cancel_requested_at IS NOT NULL AS cancel_requested",
    )
    .bind::<SqlUuid, _>(job_id)
    .bind::<Int8, _>(token)
    .bind::<Int8, _>(lease_secs)
    .get_result(conn)
    .optional()?;
    Ok(beat.map(|b| b.cancel_requested))
}

/// Moves a running job (holding `token`) to `to`; `false` if the lease was lost meanwhile.
pub fn finish(
    conn: &mut PgConnection,
    job_id: Uuid,
    token: i64,
    to: JobState,
    error: Option<&str>,
) -> Result<bool, StoreError> {
    let sources = sources_of(to);
    if !sources.contains(&JobState::Running) {
        return Err(StoreError::Unavailable(format!(
            "job transition running -> {} is not in the state machine",
            to.as_str()
        )));
    }
    let target = jobs::table
        .filter(jobs::id.eq(job_id))
        .filter(jobs::fencing_token.eq(token))
        .filter(jobs::state.eq(JobState::Running));
    let now = Utc::now();
    let changed = diesel::update(target)
        .set((
            jobs::state.eq(to),
            jobs::error.eq(error),
            jobs::lease_owner.eq(None::<String>),
            jobs::lease_expires_at.eq(None::<DateTime<Utc>>),
            jobs::finished_at.eq(Some(now)),
            jobs::updated_at.eq(now),
        ))
        .execute(conn)?;
    Ok(changed == 1)
}

/// Stores the plan computed so far on a running job (fenced).
pub fn record_plan(
    conn: &mut PgConnection,
    job_id: Uuid,
    token: i64,
    plan: &serde_json::Value,
    hash: &str,
) -> Result<bool, StoreError> {
    let changed = diesel::update(
        jobs::table
            .filter(jobs::id.eq(job_id))
            .filter(jobs::fencing_token.eq(token))
            .filter(jobs::state.eq(JobState::Running)),
    )
    .set((jobs::plan.eq(plan), jobs::plan_hash.eq(hash)))
    .execute(conn)?;
    Ok(changed == 1)
}

/// Gives a running job back to the queue (retry after `delay`, or a released lease), bumping
/// the fencing token so a stale holder can write nothing more, and queues its wake-up.
pub fn requeue(
    conn: &mut PgConnection,
    job_id: Uuid,
    token: i64,
    delay: Duration,
    error: Option<&str>,
) -> Result<bool, StoreError> {
    if !can_transition(JobState::Running, JobState::Queued) {
        return Err(StoreError::Unavailable(
            "job transition running -> queued is not in the state machine".to_owned(),
        ));
    }
    let delay_ms = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
    let changed = diesel::sql_query(
        "UPDATE jobs SET state = 'queued', lease_owner = NULL, lease_expires_at = NULL, \
                fencing_token = nextval('fencing_tokens'), error = $3, updated_at = now(), \
                run_after = now() + make_interval(secs => $4::double precision / 1000) \
         WHERE id = $1 AND fencing_token = $2 AND state = 'running'",
    )
    .bind::<SqlUuid, _>(job_id)
    .bind::<Int8, _>(token)
    .bind::<diesel::sql_types::Nullable<Text>, _>(error)
    .bind::<Int8, _>(delay_ms)
    .execute(conn)?;
    Ok(changed == 1)
}

/// Cancels a job that has not started; `false` if it is running or finished.
pub fn cancel(conn: &mut PgConnection, job_id: Uuid) -> Result<bool, StoreError> {
    let sources: Vec<JobState> = sources_of(JobState::Canceled)
        .into_iter()
        .filter(|s| *s != JobState::Running)
        .collect();
    let now = Utc::now();
    let changed = diesel::update(
        jobs::table
            .filter(jobs::id.eq(job_id))
            .filter(jobs::state.eq_any(sources)),
    )
    .set((
        jobs::state.eq(JobState::Canceled),
        jobs::finished_at.eq(Some(now)),
        jobs::updated_at.eq(now),
    ))
    .execute(conn)?;
    Ok(changed == 1)
}

/// Asks the worker running a job to stop at its next step boundary. `false` if the job is not
/// running (any more) or a cancel was already requested.
pub fn request_cancel(conn: &mut PgConnection, job_id: Uuid) -> Result<bool, StoreError> {
    let now = Utc::now();
    let changed = diesel::update(
        jobs::table
            .filter(jobs::id.eq(job_id))
            .filter(jobs::state.eq(JobState::Running))
            .filter(jobs::cancel_requested_at.is_null()),
    )
    .set((
        jobs::cancel_requested_at.eq(Some(now)),
        jobs::updated_at.eq(now),
    ))
    .execute(conn)?;
    Ok(changed == 1)
}

/// Whether a cancel was requested for the job this worker runs (holding `token`).
pub fn cancel_requested(
    conn: &mut PgConnection,
    job_id: Uuid,
    token: i64,
) -> Result<bool, StoreError> {
    Ok(jobs::table
        .filter(jobs::id.eq(job_id))
        .filter(jobs::fencing_token.eq(token))
        .select(jobs::cancel_requested_at.is_not_null())
        .first::<bool>(conn)
        .optional()?
        .unwrap_or(false))
}

#[derive(Debug, Clone, QueryableByName)]
pub struct StaleJob {
    #[diesel(sql_type = SqlUuid)]
    pub id: Uuid,
    #[diesel(sql_type = Text)]
    pub operation: String,
    #[diesel(sql_type = Int8)]
    pub fencing_token: i64,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    pub attempts: i32,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    pub max_attempts: i32,
    #[diesel(sql_type = SqlUuid)]
    pub environment_id: Uuid,
    #[diesel(sql_type = diesel::sql_types::Nullable<Text>)]
    pub lease_owner: Option<String>,
    /// A cancel was requested while it ran: the sweeper cancels it instead of requeueing.
    #[diesel(sql_type = diesel::sql_types::Bool)]
    pub cancel_requested: bool,
}

/// Running jobs whose lease expired (their worker died or stalled).
pub const EXPIRED_LEASES_SQL: &str = "SELECT id, operation, fencing_token, attempts, max_attempts, \
         environment_id, lease_owner, cancel_requested_at IS NOT NULL AS cancel_requested \
     FROM jobs WHERE state = 'running' AND lease_expires_at < now() LIMIT 100";

pub fn expired_leases(conn: &mut PgConnection) -> Result<Vec<StaleJob>, StoreError> {
    Ok(diesel::sql_query(EXPIRED_LEASES_SQL).load(conn)?)
}

/// Queued (or approved) jobs that are due and first in their environment's line but have no wake-up on the
/// way: none waiting in the outbox, and none published since they became due — or the last one
/// was published more than `quiet` ago and evidently lost. Covers retries come due and lost
/// messages.
pub const STRANDED_SQL: &str = concat!(
    "SELECT j.id, j.operation, j.fencing_token, j.attempts, \
         j.max_attempts, j.environment_id, j.lease_owner, \
         j.cancel_requested_at IS NOT NULL AS cancel_requested \
     FROM jobs j \
     WHERE j.state IN ('queued', 'approved') AND j.run_after <= now() \
       AND j.id = (SELECT f.id FROM jobs f WHERE f.environment_id = j.environment_id \
                   AND f.state IN ",
    crate::active_job_states_sql!(),
    " ORDER BY f.created_at, f.id LIMIT 1) \
       AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.job_id = j.id AND o.sent_at IS NULL) \
       AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.job_id = j.id \
             AND o.created_at >= j.run_after \
             AND o.sent_at > now() - make_interval(secs => $1::double precision / 1000)) \
     LIMIT 100"
);

pub fn stranded(conn: &mut PgConnection, quiet: Duration) -> Result<Vec<StaleJob>, StoreError> {
    let quiet_ms = i64::try_from(quiet.as_millis()).unwrap_or(i64::MAX);
    Ok(diesel::sql_query(STRANDED_SQL)
        .bind::<Int8, _>(quiet_ms)
        .load(conn)?)
}

/// Fails a queued job that has used all its attempts (sweeper), if it is still queued.
pub fn give_up(
    conn: &mut PgConnection,
    job_id: Uuid,
    token: i64,
    error: &str,
) -> Result<bool, StoreError> {
    let now = Utc::now();
    let changed = diesel::update(
        jobs::table
            .filter(jobs::id.eq(job_id))
            .filter(jobs::fencing_token.eq(token))
            .filter(jobs::state.eq_any(sources_of(JobState::Failed))),
    )
    .set((
        jobs::state.eq(JobState::Failed.as_str()),
        jobs::error.eq(error),
        jobs::lease_owner.eq(None::<String>),
        jobs::lease_expires_at.eq(None::<DateTime<Utc>>),
        jobs::finished_at.eq(Some(now)),
        jobs::updated_at.eq(now),
    ))
    .execute(conn)?;
    Ok(changed == 1)
}
