//! Environments whose TTL passed: a worker queues their destroy, as a person's DELETE would
//! (the jobs that had not started are canceled, a destroy already on its way is left alone),
//! audited `environment.expired`. Once per expiry: a destroy queued since `expires_at` (even
//! one that failed) is not queued again until someone sets a new TTL.

use super::StoreError;
use super::audit::{self, NewAuditEvent};
use super::environments::Environment;
use super::jobs::{self, NewJob};
use crate::audit::AuditResult;
use crate::jobs::{JobState, Operation};
use crate::schema::environments;
use diesel::dsl::sql;
use diesel::prelude::*;
use diesel::sql_types::Bool;
use serde_json::json;
use uuid::Uuid;

/// One expired environment and the destroy job queued for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    pub environment_id: Uuid,
    pub tenant_id: Uuid,
    pub job_id: Uuid,
}

/// Due by the database's clock, standing, with no destroy on its way and none queued since it
/// expired (the partial index `environments_expiring` serves the first two).
const DUE: &str = "environments.expires_at <= now() \
     AND environments.state NOT IN ('destroyed', 'destroying') \
     AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.environment_id = environments.id \
         AND j.operation = 'destroy' \
         AND (j.created_at >= environments.expires_at OR j.state IN ";

/// Queues a destroy for up to `limit` environments whose `expires_at` has passed, each in a
/// transaction of its own. Each row is locked `FOR NO KEY UPDATE SKIP LOCKED` and checked
/// again: two workers never queue the same destroy, and a row a request is changing is taken
/// on the next sweep. `actor` names the worker in the audit trail.
pub fn queue_expired(
    conn: &mut PgConnection,
    actor: &str,
    max_attempts: i32,
    limit: i64,
) -> Result<Vec<Expired>, StoreError> {
    let due = || sql::<Bool>(&format!("{DUE}{}))", crate::active_job_states_sql!()));
    let candidates: Vec<Uuid> = environments::table
        .filter(environments::expires_at.is_not_null())
        .filter(due())
        .order(environments::expires_at.asc())
        .limit(limit)
        .select(environments::id)
        .load(conn)?;
    let mut queued = Vec::new();
    for id in candidates {
        let expired = conn.transaction(|conn| {
            let Some(environment) = environments::table
                .find(id)
                .filter(due())
                .select(Environment::as_select())
                .for_no_key_update()
                .skip_locked()
                .first(conn)
                .optional()?
            else {
                return Ok::<_, StoreError>(None);
            };
            queue_destroy(conn, &environment, actor, max_attempts).map(Some)
        })?;
        queued.extend(expired);
    }
    Ok(queued)
}

fn queue_destroy(
    conn: &mut PgConnection,
    environment: &Environment,
    actor: &str,
    max_attempts: i32,
) -> Result<Expired, StoreError> {
    // A destroy of a stage whose policy needs approvals waits for them like any other (setting
    // a TTL is not a way around the review); it then waits in line behind the jobs before it
    // rather than canceling them before anyone approved it.
    let stage = crate::domain::Stage::parse("stage", &environment.stage)
        .map_err(|e| StoreError::Unavailable(format!("stored stage: {}", e.message)))?;
    let needs = jobs::approvals_needed(conn, environment.tenant_id, stage, Operation::Destroy)?;
    let approvals_required = i16::from(needs.approvals);
    for job in jobs::active_for_environment(conn, environment.id)?
        .iter()
        .filter(|j| j.state != JobState::Running && approvals_required == 0)
    {
        if jobs::cancel(conn, job.id)? {
            jobs::add_event(
                conn,
                job.id,
                "canceled",
                "canceled: the environment expired and is being destroyed",
                json!({}),
            )?;
        }
    }
    let job = jobs::insert(
        conn,
        &NewJob {
            id: Uuid::now_v7(),
            tenant_id: environment.tenant_id,
            environment_id: environment.id,
            operation: Operation::Destroy,
            max_attempts,
            expected_plan_hash: None,
            // The destroy is the TTL setter's: they may not approve it where the stage's
            // requesters may not.
            requested_by: environment.expires_set_by,
            approvals_required,
            reason: Some("the environment's TTL expired"),
            blueprint_version: None,
            requester_may_approve: needs.requester_may_approve,
            scheduled: false,
        },
    )?;
    audit::append(
        conn,
        &NewAuditEvent {
            actor_id: None,
            actor: actor.to_owned(),
            tenant_id: Some(environment.tenant_id),
            action: "environment.expired".to_owned(),
            target: format!("environment/{}", environment.id),
            result: AuditResult::Success,
            request_id: format!("job:{}", job.id),
            details: json!({
                "environment": environment.name,
                "expires_at": environment.expires_at,
                "job_id": job.id,
            }),
        },
    )?;
    Ok(Expired {
        environment_id: environment.id,
        tenant_id: environment.tenant_id,
        job_id: job.id,
    })
}
