//! A change that needs approval, at its worker: planned, checked against a reviewed plan it
//! names, recorded, and parked in `awaiting_approval` (audited) until its approvers decide.

use super::{Execution, Stop};
use bulkhead_core::audit::AuditResult;
use bulkhead_core::jobs::Operation;
use bulkhead_core::plan::{EnvironmentSpec, Plan};
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
        self.check_reviewed(&plan).await?;
        // Canceled while it was being planned: nobody is asked to approve it.
        self.stop_if_canceled()?;
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

    /// Whether `plan` is the reviewed one the job names (a plan job's, or the approved one):
    /// a different plan fails the job as stale before the target changes. Checked until an
    /// attempt starts changing the target with it (`plan_matched`, written with that state
    /// change); a later attempt finishes what is left, whose plan is a remainder of it.
    /// Returns the hash to record as matched, if any.
    pub(super) async fn check_reviewed(&self, plan: &Plan) -> Result<Option<String>, Stop> {
        let Some(expected) = self.job.expected_plan_hash.clone() else {
            return Ok(None);
        };
        let job_id = self.job.id;
        let matched_before = self
            .db(move |conn| store::jobs::has_event(conn, job_id, PLAN_MATCHED))
            .await?;
        if matched_before {
            return Ok(None);
        }
        if expected != plan.hash {
            return Err(Stop::Fatal(format!(
                "stale plan: the environment changed since the reviewed plan {expected} was \
                 made (it would now be {}); run plan again and apply that one",
                plan.hash
            )));
        }
        Ok(Some(expected))
    }
}

/// The job event that says an attempt started changing the target with the reviewed plan.
const PLAN_MATCHED: &str = "plan_matched";

/// Records, with the state change that starts changing the target, that the reviewed plan
/// matched (`hash`), so a retry of this job does not refuse its own remainder.
pub(super) fn record_match(
    conn: &mut bulkhead_core::db::PgConn,
    job_id: uuid::Uuid,
    hash: Option<String>,
) -> Result<(), StoreError> {
    match hash {
        Some(hash) => store::jobs::add_event(
            conn,
            job_id,
            PLAN_MATCHED,
            "the reviewed plan matched; the target changes now",
            json!({"plan_hash": hash}),
        ),
        None => Ok(()),
    }
}
