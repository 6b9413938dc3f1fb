//! A change that needs approval, at its worker: planned, checked against a reviewed plan it
//! names, recorded, and parked in `awaiting_approval` (audited) until its approvers decide.

use super::{Execution, Stop};
use bulkhead_core::audit::AuditResult;
use bulkhead_core::jobs::Operation;
use bulkhead_core::plan::EnvironmentSpec;
use bulkhead_core::store::{self, StoreError};
use serde_json::json;

impl Execution {
    /// A change that needs approval: its plan is computed, checked against a reviewed plan it
    /// names, and recorded; the job then waits in `awaiting_approval` (audited) until enough
    /// approvers approve that plan, someone rejects it, or the wait ends. Nothing on the target
    /// or the environment's state changes.
    pub(super) async fn await_review(&self, spec: &EnvironmentSpec) -> Result<(), Stop> {
        let plan = self
            .plan(spec, self.job.operation == Operation::Destroy)
            .await?;
        if let Some(expected) = &self.job.expected_plan_hash
            && expected != &plan.hash
        {
            return Err(Stop::Fatal(format!(
                "stale plan: the environment changed since the reviewed plan {expected} was \
                 made (it would now be {}); run plan again and apply that one",
                plan.hash
            )));
        }
        let (job_id, token, wait) = (
            self.job.id,
            self.job.fencing_token,
            self.worker.config.worker.approval_wait,
        );
        let (audit, environment_id, approvals) =
            (self.audit(spec), spec.id, self.job.approvals_required);
        let (hash, summary) = (plan.hash.clone(), plan.summary());
        self.fenced_db(move |conn| {
            let Some(until) = store::jobs::park(conn, job_id, token, wait)? else {
                return Err(StoreError::Transition(
                    "the job stopped running before it could await approval".to_owned(),
                ));
            };
            store::jobs::add_event(
                conn,
                job_id,
                "awaiting_approval",
                &format!("planned; awaiting {approvals} approval(s) of plan {hash}"),
                json!({"plan_hash": hash, "approvals_required": approvals, "until": until}),
            )?;
            store::audit::append(
                conn,
                &audit.event(
                    "job.approval_requested",
                    format!("environment/{environment_id}"),
                    AuditResult::Success,
                    json!({"job_id": job_id, "plan_hash": hash, "summary": summary,
                           "approvals_required": approvals, "until": until}),
                ),
            )
        })
        .await?;
        Err(Stop::Parked)
    }
}
