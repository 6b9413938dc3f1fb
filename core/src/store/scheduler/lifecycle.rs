//! Lifecycle schedules at the scheduler: an environment whose stage has a schedule is looked
//! at on each edge of it (`environments.schedule_due_at`), and stopped outside its window or
//! started at its start, with a job queued by no person. Between edges, a stop or start by hand
//! holds.

use super::super::jobs::{self, NewJob};
use super::super::{StoreError, metering::now as now_of};
use super::{policy_of, stage_of};
use crate::governance::TenantPolicy;
use crate::jobs::Operation;
use crate::lifecycle::EnvironmentState;
use chrono::{DateTime, Duration, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Int8, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use std::collections::HashMap;
use uuid::Uuid;

/// Environments at an edge of their schedule, of active tenants, oldest first, locked past
/// the other workers' ticks (served by the partial index `environments_schedule_due`).
pub const DUE_SCHEDULE_SQL: &str = "SELECT e.id, e.tenant_id, e.stage, e.state FROM environments e \
     JOIN tenants t ON t.id = e.tenant_id AND t.state = 'active' \
     WHERE e.schedule_due_at <= now() \
     ORDER BY e.schedule_due_at LIMIT $1 FOR UPDATE OF e SKIP LOCKED";

/// How long an edge waits while its environment is busy with another job (a first apply, a
/// drift check): it is looked at again then, so an environment made outside its window is
/// stopped once it is ready.
const BUSY_RETRY: Duration = Duration::minutes(1);

#[derive(Debug, QueryableByName)]
struct Due {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    tenant_id: Uuid,
    #[diesel(sql_type = Text)]
    stage: String,
    #[diesel(sql_type = Text)]
    state: EnvironmentState,
}

/// One tick's work: the stops and starts it queued (environment, job, operation), the edges
/// it put off (busy), and the environments it could not look at (put off an hour), with why.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tick {
    pub queued: Vec<(Uuid, Uuid, Operation)>,
    pub put_off: usize,
    pub failed: Vec<(Uuid, String)>,
}

/// What one due environment needs, and when it is looked at next.
enum Decision {
    /// A job queued (or none needed), and the next edge (`None`: no schedule, no more edges).
    Done(Option<(Uuid, Operation)>, Option<DateTime<Utc>>),
    /// Another job is in its line.
    Busy,
}

/// Queues the stops and starts that due schedule edges call for (at most `limit`
/// environments), in one transaction with a savepoint per environment.
pub fn queue_due_changes(
    conn: &mut PgConnection,
    max_attempts: i32,
    limit: i64,
) -> Result<Tick, StoreError> {
    conn.transaction(|conn| {
        let due: Vec<Due> = diesel::sql_query(DUE_SCHEDULE_SQL)
            .bind::<Int8, _>(limit)
            .load(conn)?;
        if due.is_empty() {
            return Ok(Tick::default());
        }
        let now = now_of(conn)?;
        let mut cache = HashMap::new();
        let mut tick = Tick::default();
        for environment in due {
            let decided =
                conn.transaction(|conn| decide(conn, &mut cache, &environment, now, max_attempts));
            let next = match decided {
                Ok(Decision::Done(job, next)) => {
                    if let Some((job_id, operation)) = job {
                        tick.queued.push((environment.id, job_id, operation));
                    }
                    next
                }
                Ok(Decision::Busy) => {
                    tick.put_off += 1;
                    Some(now + BUSY_RETRY)
                }
                Err(error) => {
                    tick.failed.push((environment.id, error.to_string()));
                    Some(now + Duration::hours(1))
                }
            };
            diesel::sql_query("UPDATE environments SET schedule_due_at = $2 WHERE id = $1")
                .bind::<SqlUuid, _>(environment.id)
                .bind::<Nullable<Timestamptz>, _>(next)
                .execute(conn)?;
        }
        Ok(tick)
    })
}

fn decide(
    conn: &mut PgConnection,
    cache: &mut HashMap<Uuid, TenantPolicy>,
    environment: &Due,
    now: DateTime<Utc>,
    max_attempts: i32,
) -> Result<Decision, StoreError> {
    if matches!(
        environment.state,
        EnvironmentState::Destroying | EnvironmentState::Destroyed
    ) {
        return Ok(Decision::Done(None, None));
    }
    let policy = policy_of(cache, conn, environment.tenant_id)?;
    // No schedule (any more): nothing to do; one stopped by hand stays stopped until started.
    let Some(schedule) = policy.stage(stage_of(&environment.stage)?).schedule.clone() else {
        return Ok(Decision::Done(None, None));
    };
    let unreadable = || StoreError::Unavailable("the stored schedule does not parse".to_owned());
    let active = schedule.is_active_at(now).ok_or_else(unreadable)?;
    let next = schedule.next_change_after(now).ok_or_else(unreadable)?;
    let operation = match (active, environment.state) {
        (false, EnvironmentState::Ready | EnvironmentState::Drifted) => Operation::Stop,
        (true, EnvironmentState::Stopped) => Operation::Start,
        // Running inside its window, stopped outside it, or not standing (failed): as it is.
        _ => return Ok(Decision::Done(None, Some(next))),
    };
    if !jobs::active_for_environment(conn, environment.id)?.is_empty() {
        return Ok(Decision::Busy);
    }
    let window = format!(
        "{} {}–{} {}",
        days(&schedule.days),
        schedule.start,
        schedule.end,
        schedule.time_zone
    );
    let reason = match operation {
        Operation::Stop => format!("outside its schedule ({window})"),
        _ => format!("its scheduled window began ({window})"),
    };
    let job = jobs::insert(
        conn,
        &NewJob::scheduled(
            environment.tenant_id,
            environment.id,
            operation,
            max_attempts,
            &reason,
        ),
    )?;
    Ok(Decision::Done(Some((job.id, operation)), Some(next)))
}

fn days(days: &[crate::governance::schedule::Day]) -> String {
    days.iter()
        .map(|d| d.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// Has the scheduler look at the tenant's environments on the stages that have a schedule now
/// (at its next tick), and forget the others: after a policy change, or for a new environment.
pub fn reschedule(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    policy: &TenantPolicy,
) -> Result<(), StoreError> {
    let scheduled: Vec<String> = crate::domain::Stage::ALL
        .into_iter()
        .filter(|stage| policy.stage(*stage).schedule.is_some())
        .map(|stage| stage.as_str().to_owned())
        .collect();
    diesel::sql_query(
        "UPDATE environments SET schedule_due_at = CASE WHEN stage = ANY($2) THEN now() END \
         WHERE tenant_id = $1 AND state <> 'destroyed' \
           AND (schedule_due_at IS NOT NULL OR stage = ANY($2))",
    )
    .bind::<SqlUuid, _>(tenant_id)
    .bind::<diesel::sql_types::Array<Text>, _>(&scheduled)
    .execute(conn)?;
    Ok(())
}
