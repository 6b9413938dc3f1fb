//! Environments whose TTL passed: a worker queues their destroy, as a person's DELETE would
//! (the jobs that had not started are canceled, a destroy already on its way is left alone),
//! audited `environment.expired`.

use super::StoreError;
use super::audit::{self, NewAuditEvent};
use super::environments::Environment;
use super::jobs::{self, NewJob};
use crate::audit::AuditResult;
use crate::jobs::{JobState, Operation};
use crate::lifecycle::EnvironmentState;
use crate::schema::environments;
use chrono::Utc;
use diesel::prelude::*;
use serde_json::json;
use uuid::Uuid;

/// One expired environment and the destroy job queued for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    pub environment_id: Uuid,
    pub tenant_id: Uuid,
    pub job_id: Uuid,
}

/// Queues a destroy for up to `limit` environments whose `expires_at` has passed, in one
/// transaction. The due rows are locked `FOR UPDATE SKIP LOCKED`: two workers never queue the
/// same destroy, and a row a request is changing is taken on the next sweep. `actor` names the
/// worker in the audit trail.
pub fn queue_expired(
    conn: &mut PgConnection,
    actor: &str,
    max_attempts: i32,
    limit: i64,
) -> Result<Vec<Expired>, StoreError> {
    conn.transaction(|conn| {
        let due: Vec<Environment> = environments::table
            .filter(environments::expires_at.le(Utc::now()))
            .filter(
                environments::state
                    .ne_all([EnvironmentState::Destroyed, EnvironmentState::Destroying]),
            )
            .order(environments::expires_at.asc())
            .limit(limit)
            .select(Environment::as_select())
            .for_update()
            .skip_locked()
            .load(conn)?;
        let mut queued = Vec::new();
        for environment in due {
            let active = jobs::active_for_environment(conn, environment.id)?;
            if active.iter().any(|j| j.operation == Operation::Destroy) {
                continue;
            }
            for job in active.iter().filter(|j| j.state != JobState::Running) {
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
                    requested_by: None,
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
            queued.push(Expired {
                environment_id: environment.id,
                tenant_id: environment.tenant_id,
                job_id: job.id,
            });
        }
        Ok(queued)
    })
}
