//! The scheduler's store side: environments whose scheduled drift check is due get one (a job
//! queued by no person), then their next due time from their stage's policy; a scheduled check
//! that found drift on a `repair` stage queues the repair (reviewed as the stage says); and
//! environments at an edge of their stage's schedule are stopped or started (`lifecycle`).

pub mod lifecycle;

use super::jobs::{self, NewJob};
use super::{StoreError, policies};
use crate::domain::Stage;
use crate::governance::{Remediation, TenantPolicy};
use crate::jobs::Operation;
use diesel::prelude::*;
use diesel::sql_types::{Int4, Int8, Text, Uuid as SqlUuid};
use std::collections::HashMap;
use uuid::Uuid;

/// Due environments of active tenants that can be checked, oldest due first, locked past the
/// other workers' ticks (served by the partial index `environments_drift_due`).
pub const DUE_DRIFT_SQL: &str = "SELECT e.id, e.tenant_id, e.stage FROM environments e \
     JOIN tenants t ON t.id = e.tenant_id AND t.state = 'active' \
     WHERE e.state IN ('ready', 'drifted') AND e.drift_check_due_at <= now() \
     ORDER BY e.drift_check_due_at LIMIT $1 FOR UPDATE OF e SKIP LOCKED";

/// Due environments one tick takes at most (drift checks, and again stops and starts): a tick
/// costs 2–5 ms per environment it queues a job for (a job, its event, its outbox row, the
/// next due time: a dozen round trips), so a backlog (workers were down; a migration made
/// every environment due) is worked off in ticks of ≤ 50 ms, 8 a second per worker
/// (BENCHMARKS.md, "Scheduler").
pub const TICK_LIMIT: i64 = 8;

/// How long a due check waits when its environment is busy with another job.
const BUSY_RETRY_MINUTES: i32 = 10;

#[derive(Debug, QueryableByName)]
struct Due {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    tenant_id: Uuid,
    #[diesel(sql_type = Text)]
    stage: String,
}

/// One tick's work: the drift checks it queued, the due environments it put off (busy), and
/// those it could not schedule (put off an hour), with why.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tick {
    pub queued: Vec<(Uuid, Uuid)>,
    pub put_off: usize,
    pub failed: Vec<(Uuid, String)>,
}

pub(crate) fn policy_of(
    cache: &mut HashMap<Uuid, TenantPolicy>,
    conn: &mut PgConnection,
    tenant_id: Uuid,
) -> Result<TenantPolicy, StoreError> {
    if let Some(policy) = cache.get(&tenant_id) {
        return Ok(policy.clone());
    }
    let policy = policies::get(conn, tenant_id)?.policy;
    cache.insert(tenant_id, policy.clone());
    Ok(policy)
}

pub(crate) fn stage_of(raw: &str) -> Result<Stage, StoreError> {
    Stage::parse("stage", raw)
        .map_err(|e| StoreError::Unavailable(format!("stored stage: {}", e.message)))
}

/// Queues the due scheduled drift checks (at most `limit`) in one transaction: a drift-check
/// job per idle due environment (environment id, job id), the next due time one stage interval
/// later by the database's clock; a busy environment is looked at again in ten minutes. One
/// that cannot be scheduled (a stored policy or stage that does not parse) does not hold back
/// the others: its savepoint is rolled back and it is put off an hour.
pub fn queue_due_drift_checks(
    conn: &mut PgConnection,
    max_attempts: i32,
    limit: i64,
) -> Result<Tick, StoreError> {
    conn.transaction(|conn| {
        let due: Vec<Due> = diesel::sql_query(DUE_DRIFT_SQL)
            .bind::<Int8, _>(limit)
            .load(conn)?;
        let mut cache = HashMap::new();
        let mut tick = Tick::default();
        for environment in due {
            let scheduled =
                conn.transaction(|conn| schedule_one(conn, &mut cache, &environment, max_attempts));
            let minutes = match scheduled {
                Ok(Some(job_id)) => {
                    tick.queued.push((environment.id, job_id.0));
                    job_id.1
                }
                Ok(None) => {
                    tick.put_off += 1;
                    BUSY_RETRY_MINUTES
                }
                Err(error) => {
                    tick.failed.push((environment.id, error.to_string()));
                    60
                }
            };
            diesel::sql_query(
                "UPDATE environments SET drift_check_due_at = now() + make_interval(mins => $2) \
                 WHERE id = $1",
            )
            .bind::<SqlUuid, _>(environment.id)
            .bind::<Int4, _>(minutes)
            .execute(conn)?;
        }
        Ok(tick)
    })
}

/// Queues one due environment's check: its job id and the minutes to its next one; `None`
/// while the environment is busy with another job.
fn schedule_one(
    conn: &mut PgConnection,
    cache: &mut HashMap<Uuid, TenantPolicy>,
    environment: &Due,
    max_attempts: i32,
) -> Result<Option<(Uuid, i32)>, StoreError> {
    let policy = policy_of(cache, conn, environment.tenant_id)?;
    // Re-checked: a stored policy is not trusted to be in range.
    let interval = policy
        .stage(stage_of(&environment.stage)?)
        .drift_check_interval_hours
        .clamp(1, 720);
    if !jobs::active_for_environment(conn, environment.id)?.is_empty() {
        return Ok(None);
    }
    let reason = format!("scheduled drift check (every {interval} h)");
    let job = jobs::insert(
        conn,
        &NewJob::scheduled(
            environment.tenant_id,
            environment.id,
            Operation::DriftCheck,
            max_attempts,
            &reason,
        ),
    )?;
    Ok(Some((job.id, i32::try_from(interval).unwrap_or(720) * 60)))
}

/// After a scheduled check found drift: on a stage whose policy repairs, queues the repair (an
/// apply, reviewed as the stage's changes are) unless another job waits already; returns it.
pub fn queue_repair(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    environment_id: Uuid,
    stage: Stage,
    max_attempts: i32,
) -> Result<Option<Uuid>, StoreError> {
    let policy = policies::get(conn, tenant_id)?.policy;
    if policy.stage(stage).drift_remediation != Remediation::Repair {
        return Ok(None);
    }
    // The check itself is running; anything else in line would change the target anyway.
    if jobs::active_for_environment(conn, environment_id)?.len() > 1 {
        return Ok(None);
    }
    let needs = jobs::approvals_needed(conn, tenant_id, stage, Operation::Apply)?;
    let job = jobs::insert(
        conn,
        &NewJob {
            id: Uuid::now_v7(),
            tenant_id,
            environment_id,
            operation: Operation::Apply,
            max_attempts,
            expected_plan_hash: None,
            requested_by: None,
            approvals_required: i16::from(needs.approvals),
            reason: Some("repair the drift a scheduled check found"),
            blueprint_version: None,
            requester_may_approve: needs.requester_may_approve,
            scheduled: true,
        },
    )?;
    Ok(Some(job.id))
}
