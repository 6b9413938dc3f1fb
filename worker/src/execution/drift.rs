//! A drift check at its worker: the plan against the target; a difference on a settled
//! environment makes it `drifted` (audited) and, for a scheduled check on a `repair` stage,
//! queues the repair; no difference re-probes the isolation walls. A stopped environment is
//! compared with its roles' logins off and not probed.

use super::conclude::{open, record_verification};
use super::{Execution, Stop, ms};
use bulkhead_core::audit::AuditResult;
use bulkhead_core::lifecycle::{EnvironmentState, can_transition};
use bulkhead_core::plan::EnvironmentSpec;
use bulkhead_core::store::{self, environments::Environment};
use serde_json::json;
use std::time::Instant;

impl Execution {
    pub(super) async fn drift_check(
        &self,
        environment: &Environment,
        spec: &EnvironmentSpec,
    ) -> Result<(), Stop> {
        let plan = self.plan(spec, false).await?;
        let drifted = !plan.is_empty();
        if environment.state == EnvironmentState::Stopped {
            return self
                .stopped_drift(spec, drifted.then(|| plan.summary()))
                .await;
        }
        let settled = environment.state.is_settled();
        if !drifted && settled {
            // The objects are as planned: probe the walls again, as every apply does.
            return self.reverify(spec).await;
        }
        // A drift found on an environment that was never applied, failed or is changing is
        // reported on the job (its plan), not as a state: the table allows `drifted` only from
        // a settled environment.
        if !(drifted && can_transition(environment.state, EnvironmentState::Drifted)) {
            return Ok(());
        }
        let summary = plan.summary();
        let (environment_id, stage, scheduled) = (spec.id, spec.stage, self.job.scheduled);
        let (audit, job_id, max_attempts) = (
            self.audit(spec),
            self.job.id,
            self.worker.config.worker.max_attempts,
        );
        let repair = self
            .fenced_db(move |conn| {
                store::environments::set_state(
                    conn,
                    environment_id,
                    EnvironmentState::Drifted,
                    Some(Some(summary.clone())),
                )?;
                let repair = if scheduled {
                    store::scheduler::queue_repair(
                        conn,
                        audit.tenant_id,
                        environment_id,
                        stage,
                        max_attempts,
                    )?
                } else {
                    None
                };
                store::audit::append(
                    conn,
                    &audit.event(
                        "environment.drifted",
                        format!("environment/{environment_id}"),
                        AuditResult::Failure,
                        json!({"job_id": job_id, "scheduled": scheduled,
                               "changes": summary["changes"], "repair_job_id": repair}),
                    ),
                )?;
                Ok(repair)
            })
            .await?;
        if repair.is_some() {
            self.worker.wake.notify_one();
        }
        Ok(())
    }

    /// A drift check of a stopped environment: its roles cannot log in, so the walls are not
    /// probed; a difference (a login given back behind Bulkhead's back, say) is recorded on the
    /// environment, which stays `stopped` (audited `environment.drifted`), and is not repaired
    /// while it is stopped: starting it refuses, an apply brings it back.
    async fn stopped_drift(
        &self,
        spec: &EnvironmentSpec,
        summary: Option<serde_json::Value>,
    ) -> Result<(), Stop> {
        let (environment_id, job_id, audit, scheduled) =
            (spec.id, self.job.id, self.audit(spec), self.job.scheduled);
        self.fenced_db(move |conn| {
            store::environments::set_state(
                conn,
                environment_id,
                EnvironmentState::Stopped,
                Some(summary.clone()),
            )?;
            if let Some(summary) = &summary {
                store::audit::append(
                    conn,
                    &audit.event(
                        "environment.drifted",
                        format!("environment/{environment_id}"),
                        AuditResult::Failure,
                        json!({"job_id": job_id, "scheduled": scheduled, "stopped": true,
                               "changes": summary["changes"]}),
                    ),
                )?;
            }
            store::jobs::add_event(
                conn,
                job_id,
                "verified",
                if summary.is_some() {
                    "drift found on a stopped environment; it stays stopped (apply it to repair)"
                } else {
                    "no drift; stopped, so the walls were not probed (its roles cannot log in)"
                },
                json!({}),
            )
        })
        .await
    }

    /// A drift check's verification: the isolation probes with the stored password; the
    /// environment is `ready` when every wall holds, else `drifted` with the violations.
    async fn reverify(&self, spec: &EnvironmentSpec) -> Result<(), Stop> {
        let environment_id = spec.id;
        let keys = self.worker.config.credentials_keys.clone();
        let Some(stored) = self
            .db(move |conn| store::environments::credentials(conn, environment_id))
            .await?
        else {
            return Err(Stop::Fatal(
                "the environment has no stored credentials to probe its isolation with; apply \
                 it to set a new password"
                    .to_owned(),
            ));
        };
        let password = open(&keys, &stored)?;
        let started = Instant::now();
        let (executor, spec_owned) = (self.worker.executor.clone(), spec.clone());
        let checks =
            tokio::task::spawn_blocking(move || executor.verify_isolation(&spec_owned, &password))
                .await
                .map_err(|e| Stop::Fatal(format!("verify task: {e}")))??;
        let verify_ms = ms(started);
        let (job_id, audit) = (self.job.id, self.audit(spec));
        self.fenced_db(move |conn| {
            let violations = record_verification(conn, environment_id, &checks, &audit)?;
            store::jobs::add_event(
                conn,
                job_id,
                "verified",
                "no drift; verified isolation",
                json!({"verify_ms": verify_ms, "checks": checks.len(), "violations": violations.len()}),
            )
        })
        .await?;
        Ok(())
    }
}
