//! The pure decisions of governed change: what a change of a stage needs (approvals), whether
//! an approval counts, whether a blueprint version may be promoted to a stage, and when an
//! environment's next scheduled drift check is due (spread over the interval).

use super::TenantPolicy;
use crate::domain::Stage;
use crate::jobs::Operation;
use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

/// What a change must pass before it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeNeeds {
    /// Distinct approvals needed (0: the change runs once planned).
    pub approvals: u8,
    pub requester_may_approve: bool,
}

impl ChangeNeeds {
    pub fn needs_approval(self) -> bool {
        self.approvals > 0
    }
}

/// What `operation` on an environment of `stage` needs. Plans and drift checks change nothing
/// on the target and need nothing; neither do stops and starts, which only turn the logins off
/// and on (and run on non-production stages, on a schedule the policy set); applies (a create
/// is an apply), destroys and repairs need the stage's approvals.
pub fn change_needs(policy: &TenantPolicy, stage: Stage, operation: Operation) -> ChangeNeeds {
    let rules = policy.stage(stage);
    let approvals = match operation {
        Operation::Plan | Operation::DriftCheck | Operation::Stop | Operation::Start => 0,
        Operation::Apply | Operation::Destroy => rules.approvals_required,
    };
    ChangeNeeds {
        approvals,
        requester_may_approve: rules.requester_may_approve,
    }
}

/// Why an approval is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApprovalRefused {
    #[error("the member who asked for this change may not approve it in this stage")]
    Requester,
    #[error("this member already approved this change; another approver is needed")]
    AlreadyApproved,
    #[error(
        "the approval names plan {given}, but the job's plan is now {current}: review the current plan and approve that"
    )]
    PlanChanged { given: String, current: String },
}

/// Where a change stands after an approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalProgress {
    /// More distinct approvals are needed.
    Waiting { remaining: u8 },
    /// Enough: the job may run the approved plan.
    Approved,
}

/// Whether `approver`'s approval of the plan `given_hash` counts for a job whose current plan
/// is `current_hash`, asked for by `requester`, already approved by `approved_by`.
pub fn decide_approval(
    needs: ChangeNeeds,
    requester: Option<Uuid>,
    approver: Uuid,
    approved_by: &[Uuid],
    given_hash: &str,
    current_hash: &str,
) -> Result<ApprovalProgress, ApprovalRefused> {
    if given_hash != current_hash {
        return Err(ApprovalRefused::PlanChanged {
            given: given_hash.to_owned(),
            current: current_hash.to_owned(),
        });
    }
    if requester == Some(approver) && !needs.requester_may_approve {
        return Err(ApprovalRefused::Requester);
    }
    if approved_by.contains(&approver) {
        return Err(ApprovalRefused::AlreadyApproved);
    }
    let have = approved_by.len().saturating_add(1);
    let need = usize::from(needs.approvals);
    Ok(if have >= need {
        ApprovalProgress::Approved
    } else {
        ApprovalProgress::Waiting {
            remaining: u8::try_from(need - have).unwrap_or(u8::MAX),
        }
    })
}

/// A promotion refused for want of evidence: `version` never reached `ready` on `stage`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "blueprint version {version} has not been ready on a {stage} environment of this tenant; promote it there first",
    stage = stage.as_str()
)]
pub struct MissingEvidence {
    pub stage: Stage,
    pub version: i32,
}

/// Whether `version` may reach `stage`: the stage before it in the promotion order must have
/// had an environment `ready` at that version (`ready_at`: stage and version pairs that
/// reached `ready` in this tenant). The first stage needs no evidence.
pub fn promotion_allowed(
    policy: &TenantPolicy,
    stage: Stage,
    version: i32,
    ready_at: &[(Stage, i32)],
) -> Result<(), MissingEvidence> {
    match policy.stage_before(stage) {
        None => Ok(()),
        Some(before) if ready_at.contains(&(before, version)) => Ok(()),
        Some(before) => Err(MissingEvidence {
            stage: before,
            version,
        }),
    }
}

/// When an environment's next scheduled drift check is due after one at `last`: one interval
/// later, and for an environment never checked, between a quarter and the whole of the first
/// interval after its creation, at an offset taken from its id, so environments created
/// together are not all checked at once (and none right after the apply that made it).
pub fn next_drift_check(
    environment_id: Uuid,
    interval_hours: u32,
    created_at: DateTime<Utc>,
    last: Option<DateTime<Utc>>,
) -> DateTime<Utc> {
    let interval = Duration::hours(i64::from(interval_hours.max(1)));
    match last {
        Some(last) => last + interval,
        None => {
            let seconds = interval.num_seconds().max(4);
            let quarter = seconds / 4;
            let spread = (environment_id.as_u128() % (seconds - quarter) as u128) as i64;
            created_at + Duration::seconds(quarter + spread)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::governance::TenantPolicyRequest;
    use serde_json::json;

    fn policy(body: serde_json::Value) -> TenantPolicy {
        serde_json::from_value::<TenantPolicyRequest>(body)
            .expect("shape")
            .parse()
            .expect("valid")
    }

    #[test]
    fn production_changes_need_approval_plans_do_not() {
        let default = TenantPolicy::default();
        assert!(change_needs(&default, Stage::Production, Operation::Apply).needs_approval());
        assert!(change_needs(&default, Stage::Production, Operation::Destroy).needs_approval());
        assert!(!change_needs(&default, Stage::Production, Operation::Plan).needs_approval());
        assert!(!change_needs(&default, Stage::Production, Operation::DriftCheck).needs_approval());
        assert!(!change_needs(&default, Stage::Development, Operation::Apply).needs_approval());
    }

    #[test]
    fn two_distinct_approvers_not_the_requester() {
        let two = policy(json!({"stages": {"production": {"approvals_required": 2}}}));
        let needs = change_needs(&two, Stage::Production, Operation::Apply);
        let (requester, alice, bob) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(
            decide_approval(needs, Some(requester), requester, &[], "h1", "h1"),
            Err(ApprovalRefused::Requester)
        );
        assert_eq!(
            decide_approval(needs, Some(requester), alice, &[], "h1", "h1"),
            Ok(ApprovalProgress::Waiting { remaining: 1 })
        );
        assert_eq!(
            decide_approval(needs, Some(requester), alice, &[alice], "h1", "h1"),
            Err(ApprovalRefused::AlreadyApproved)
        );
        assert_eq!(
            decide_approval(needs, Some(requester), bob, &[alice], "h1", "h1"),
            Ok(ApprovalProgress::Approved)
        );
        assert!(matches!(
            decide_approval(needs, Some(requester), bob, &[alice], "h0", "h1"),
            Err(ApprovalRefused::PlanChanged { .. })
        ));
        let own = policy(json!({"stages": {"production": {"requester_may_approve": true}}}));
        let needs = change_needs(&own, Stage::Production, Operation::Apply);
        assert_eq!(
            decide_approval(needs, Some(requester), requester, &[], "h", "h"),
            Ok(ApprovalProgress::Approved)
        );
    }

    #[test]
    fn a_version_reaches_production_only_after_staging() {
        let default = TenantPolicy::default();
        assert_eq!(
            promotion_allowed(&default, Stage::Production, 2, &[(Stage::Development, 2)]),
            Err(MissingEvidence {
                stage: Stage::Staging,
                version: 2
            })
        );
        assert_eq!(
            promotion_allowed(&default, Stage::Production, 2, &[(Stage::Staging, 2)]),
            Ok(())
        );
        assert_eq!(
            promotion_allowed(&default, Stage::Production, 2, &[(Stage::Staging, 1)]),
            Err(MissingEvidence {
                stage: Stage::Staging,
                version: 2
            })
        );
        assert_eq!(
            promotion_allowed(&default, Stage::Development, 7, &[]),
            Ok(())
        );
    }

    #[test]
    fn first_drift_checks_spread_over_the_interval() {
        let created = Utc::now();
        let firsts: Vec<DateTime<Utc>> = (0..200)
            .map(|_| next_drift_check(Uuid::now_v7(), 6, created, None))
            .collect();
        let quarter = created + Duration::minutes(90);
        assert!(
            firsts
                .iter()
                .all(|t| *t >= quarter && *t < created + Duration::hours(6))
        );
        // Uniform over 1.5 h to 6 h: a third of them before 3 h.
        let early = firsts
            .iter()
            .filter(|t| **t < created + Duration::hours(3))
            .count();
        assert!((35..=100).contains(&early), "{early} of 200 before 3 h");
        let last = created + Duration::hours(1);
        assert_eq!(
            next_drift_check(Uuid::now_v7(), 6, created, Some(last)),
            last + Duration::hours(6)
        );
    }
}
