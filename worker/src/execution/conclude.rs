//! How an attempt ends: its result written fenced by the token (or nothing, when the lease
//! was lost), the environment's next job woken, and verification results recorded.

use super::{Execution, Outcome, Stop, WorkerAudit, ms};
use crate::executor::{ExecError, GuaranteeCheck};
use crate::runtime::Worker;
use bulkhead_core::audit::AuditResult;
use bulkhead_core::jobs::{JobState, retry_backoff};
use bulkhead_core::lifecycle::EnvironmentState;
use bulkhead_core::store::environments::StoredCredentials;
use bulkhead_core::store::{self, StoreError};
use diesel::Connection;
use serde_json::json;
use std::sync::atomic::Ordering;
use std::time::Duration;

impl Execution {
    /// Writes the attempt's result (fenced), wakes the environment's next job, and says how to
    /// settle the message.
    pub(super) async fn conclude(&self, result: Result<(), Stop>) -> Outcome {
        let (job_id, token, environment_id) =
            (self.job.id, self.job.fencing_token, self.job.environment_id);
        let attempts = self.job.attempts;
        let max_attempts = self.job.max_attempts;
        let total_ms = ms(self.received);
        enum Write {
            Finish(JobState, Option<String>),
            Requeue(Duration, String),
            Release,
        }
        // The fence's error is matched by its text, which tenant code running as the owner
        // role during a migration could raise too: believe it only if the job moved on.
        let result = match result {
            Err(Stop::Exec(ExecError::Fenced(reason))) => {
                let still_held = self
                    .worker
                    .db(move |conn| store::jobs::hold(conn, job_id, token))
                    .await
                    .unwrap_or(false);
                if !still_held {
                    tracing::warn!(%job_id, %reason, "fenced off on the target; writing nothing");
                    return Outcome::LostLease;
                }
                Err(Stop::Fatal(format!(
                    "a step was refused with the fence's error although this job still holds its \
                     lease (code run by a migration may have raised it): {reason}"
                )))
            }
            other => other,
        };
        let write = match result {
            Ok(()) => Write::Finish(JobState::Succeeded, None),
            Err(Stop::Exec(ExecError::Aborted)) if self.lost.load(Ordering::SeqCst) => {
                return Outcome::LostLease;
            }
            // Another worker holds the job (or the target's fence) now: write nothing.
            Err(Stop::LostLease) => return Outcome::LostLease,
            // Parked (fenced, in the step that planned it): the approvals queue it again.
            Err(Stop::Parked) => return Outcome::AwaitingApproval,
            Err(Stop::Canceled) => Write::Finish(
                JobState::Canceled,
                Some("canceled by request before this attempt changed the target".to_owned()),
            ),
            Err(Stop::Exec(ExecError::Aborted)) if self.canceled.load(Ordering::SeqCst) => {
                Write::Finish(
                    JobState::Canceled,
                    Some(format!(
                        "canceled by request between two steps of {}: the target is partly \
                         changed; run apply to finish it or destroy to remove it",
                        self.job.operation
                    )),
                )
            }
            Err(Stop::Exec(ExecError::Aborted)) => Write::Release,
            Err(Stop::Fatal(reason)) => Write::Finish(JobState::Failed, Some(reason)),
            Err(Stop::Exec(error @ ExecError::StalePlan(_))) => {
                Write::Finish(JobState::Failed, Some(error.to_string()))
            }
            // The target refused a step (what it said needs a person): retrying cannot help.
            Err(Stop::Exec(error)) if !error.is_retryable() => {
                Write::Finish(JobState::Failed, Some(error.to_string()))
            }
            Err(Stop::Exec(error)) => {
                retry_or_fail(attempts, max_attempts, error.to_string(), &self.worker)
            }
            Err(Stop::Store(error)) => {
                retry_or_fail(attempts, max_attempts, error.to_string(), &self.worker)
            }
        };
        fn retry_or_fail(attempts: i32, max: i32, reason: String, worker: &Worker) -> Write {
            if attempts < max {
                let delay = retry_backoff(
                    u32::try_from(attempts).unwrap_or(1),
                    worker.config.worker.retry_base,
                );
                Write::Requeue(
                    delay,
                    format!("attempt {attempts} of {max} failed: {reason}"),
                )
            } else {
                Write::Finish(
                    JobState::Failed,
                    Some(format!(
                        "failed after {attempts} attempts; last error: {reason}"
                    )),
                )
            }
        }
        let outcome = match &write {
            Write::Finish(JobState::Succeeded, _) => Outcome::Succeeded,
            Write::Finish(JobState::Canceled, _) => Outcome::Canceled,
            Write::Finish(_, _) => Outcome::Failed,
            Write::Requeue(..) => Outcome::Retrying,
            Write::Release => Outcome::Released,
        };
        let operation = self.job.operation;
        let written = self
            .db(move |conn| {
                conn.transaction(|conn| {
                    let held = match &write {
                        Write::Finish(state, error) => {
                            let held =
                                store::jobs::finish(conn, job_id, token, *state, error.as_deref())?;
                            if held {
                                let (kind, message) = match state {
                                    JobState::Succeeded => {
                                        ("succeeded", "job succeeded".to_owned())
                                    }
                                    JobState::Canceled => {
                                        ("canceled", error.clone().unwrap_or_default())
                                    }
                                    _ => ("failed", error.clone().unwrap_or_default()),
                                };
                                store::jobs::add_event(
                                    conn,
                                    job_id,
                                    kind,
                                    &message,
                                    json!({"total_ms": total_ms}),
                                )?;
                                // Only an environment this job was changing is broken by it
                                // (an apply or a destroy; a plan or drift check changes
                                // nothing); a cancel stops before the state says the target
                                // changes.
                                let broken = match state {
                                    _ if !operation.changes_target() => None,
                                    JobState::Failed => Some(&EnvironmentState::CHANGING[..]),
                                    JobState::Canceled => Some(&EnvironmentState::MIDWAY[..]),
                                    _ => None,
                                };
                                if let Some(states) = broken {
                                    store::environments::mark_failed_if_in(
                                        conn,
                                        environment_id,
                                        states,
                                    )?;
                                }
                                store::jobs::wake_next(conn, environment_id)?;
                            }
                            held
                        }
                        Write::Requeue(delay, reason) => {
                            let held =
                                store::jobs::requeue(conn, job_id, token, *delay, Some(reason))?;
                            if held {
                                store::jobs::add_event(
                                    conn,
                                    job_id,
                                    "retry",
                                    reason,
                                    json!({"retry_in_ms": delay.as_millis() as u64}),
                                )?;
                            }
                            held
                        }
                        Write::Release => {
                            let held =
                                store::jobs::requeue(conn, job_id, token, Duration::ZERO, None)?;
                            if held {
                                store::jobs::add_event(
                                    conn,
                                    job_id,
                                    "released",
                                    "worker stopping; lease given back at a step boundary",
                                    json!({}),
                                )?;
                                store::outbox::enqueue(conn, job_id, operation.as_str())?;
                            }
                            held
                        }
                    };
                    Ok::<_, StoreError>(held)
                })
            })
            .await;
        match written {
            Ok(true) => {
                self.worker.wake.notify_one();
                outcome
            }
            Ok(false) => Outcome::LostLease,
            Err(error) => {
                // The row still says running; the lease will expire and the sweeper requeues it.
                tracing::error!(%job_id, %error, "could not record the job's result; the sweeper will retry it");
                Outcome::Retrying
            }
        }
    }
}

/// Records a verification run's guarantees and sets the environment `ready`, or `drifted` with
/// the violations (audited); returns the violations.
pub(super) fn record_verification(
    conn: &mut diesel::PgConnection,
    environment_id: uuid::Uuid,
    checks: &[GuaranteeCheck],
    audit: &WorkerAudit,
) -> Result<Vec<String>, StoreError> {
    let records: Vec<_> = checks
        .iter()
        .map(|c| store::environments::GuaranteeRecord {
            layer: &c.layer,
            mechanism: &c.mechanism,
            status: c.status,
            enforcement: c.enforcement,
            evidence: &c.evidence,
            provided_by: c.provided_by.as_deref(),
        })
        .collect();
    store::environments::record_guarantees(conn, environment_id, &records)?;
    let violations: Vec<String> = checks
        .iter()
        .filter(|c| c.is_violation())
        .map(|c| format!("{}/{}: {}", c.layer, c.mechanism, c.evidence))
        .collect();
    if violations.is_empty() {
        store::environments::set_state(conn, environment_id, EnvironmentState::Ready, Some(None))?;
    } else {
        store::environments::set_state(
            conn,
            environment_id,
            EnvironmentState::Drifted,
            Some(Some(json!({"isolation_violations": violations}))),
        )?;
        store::audit::append(
            conn,
            &audit.event(
                "environment.isolation_violated",
                format!("environment/{environment_id}"),
                AuditResult::Failure,
                json!({"violations": violations}),
            ),
        )?;
    }
    Ok(violations)
}

pub(super) fn open(
    keys: &bulkhead_core::crypto::Keyring,
    stored: &StoredCredentials,
) -> Result<String, Stop> {
    keys.open(&stored.sealed(), stored.environment_id.as_bytes())
        .map_err(|e| Stop::Fatal(e.to_string()))
}
