//! A drift check at its worker: the plan against the target; a difference on a settled
//! environment makes it `drifted` (audited) and, for a scheduled check on a `repair` stage,
//! queues the repair; no difference re-probes the isolation walls.

use super::{Execution, Stop};
use bulkhead_core::audit::AuditResult;
use bulkhead_core::lifecycle::{EnvironmentState, can_transition};
use bulkhead_core::plan::EnvironmentSpec;
use bulkhead_core::store::{self, environments::Environment};
use serde_json::json;

impl Execution {
    pub(super) async fn drift_check(
        &self,
        environment: &Environment,
        spec: &EnvironmentSpec,
    ) -> Result<(), Stop> {
        let plan = self.plan(spec, false).await?;
        let drifted = !plan.is_empty();
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
}
