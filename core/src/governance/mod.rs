//! Governed change: a tenant's policy per stage (approvals, drift checks, schedules, TTLs,
//! promotion order), parsed from its request with field errors, and the pure decisions about
//! what a change needs (`decisions`) and when a schedule is active (`schedule`).

pub mod decisions;
pub mod schedule;
pub mod versions;

use crate::domain::{FieldError, Stage};
use schedule::{Schedule, ScheduleRequest};
use serde::{Deserialize, Serialize};

/// The most approvals a stage may require.
pub const MAX_APPROVALS: u8 = 5;
/// Drift checks run at most hourly and at least monthly (30 days).
pub const DRIFT_INTERVAL_HOURS: std::ops::RangeInclusive<u32> = 1..=720;
/// A default TTL lies between an hour and 90 days.
pub const TTL_HOURS: std::ops::RangeInclusive<u32> = 1..=2160;

/// What a drift check does when it finds a difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Remediation {
    /// Mark the environment `drifted` and show the differences; a person decides.
    Report,
    /// Queue a repair job (through approvals where the stage needs them).
    Repair,
}

/// The rules for one stage's environments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StagePolicy {
    /// Distinct approvals a change needs before it runs (0: none).
    pub approvals_required: u8,
    /// Whether the member who asked for a change may approve it.
    pub requester_may_approve: bool,
    /// Hours between scheduled drift checks.
    pub drift_check_interval_hours: u32,
    pub drift_remediation: Remediation,
    /// When the stage's environments run (non-production only); outside it they are stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
    /// TTL given to a new environment of the stage that names none (non-production only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_ttl_hours: Option<u32>,
}

impl StagePolicy {
    /// The default: production needs one approval and reports drift every 6 h; other stages
    /// need none and repair drift every 24 h; nobody approves their own change.
    pub fn default_for(stage: Stage) -> Self {
        let production = stage == Stage::Production;
        Self {
            approvals_required: u8::from(production),
            requester_may_approve: false,
            drift_check_interval_hours: if production { 6 } else { 24 },
            drift_remediation: if production {
                Remediation::Report
            } else {
                Remediation::Repair
            },
            schedule: None,
            default_ttl_hours: None,
        }
    }
}

/// Every stage's policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StagePolicies {
    pub development: StagePolicy,
    pub staging: StagePolicy,
    pub production: StagePolicy,
}

/// A tenant's change policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TenantPolicy {
    pub stages: StagePolicies,
    /// The order a blueprint version is promoted in: it reaches a stage only after it was
    /// `ready` on the stage before it.
    pub promotion_order: Vec<Stage>,
}

impl Default for TenantPolicy {
    fn default() -> Self {
        Self {
            stages: StagePolicies {
                development: StagePolicy::default_for(Stage::Development),
                staging: StagePolicy::default_for(Stage::Staging),
                production: StagePolicy::default_for(Stage::Production),
            },
            promotion_order: vec![Stage::Development, Stage::Staging, Stage::Production],
        }
    }
}

impl TenantPolicy {
    pub fn stage(&self, stage: Stage) -> &StagePolicy {
        match stage {
            Stage::Development => &self.stages.development,
            Stage::Staging => &self.stages.staging,
            Stage::Production => &self.stages.production,
        }
    }

    /// The stage a version must have reached before `stage`, per the promotion order.
    pub fn stage_before(&self, stage: Stage) -> Option<Stage> {
        let at = self.promotion_order.iter().position(|s| *s == stage)?;
        at.checked_sub(1)
            .and_then(|before| self.promotion_order.get(before))
            .copied()
    }
}

/// One stage's rules as a request gives them: what is left out takes the stage's default.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StagePolicyRequest {
    #[serde(default, deserialize_with = "crate::domain::whole_number")]
    #[schema(minimum = 0, maximum = 5)]
    pub approvals_required: Option<i64>,
    pub requester_may_approve: Option<bool>,
    #[serde(default, deserialize_with = "crate::domain::whole_number")]
    #[schema(minimum = 1, maximum = 720)]
    pub drift_check_interval_hours: Option<i64>,
    pub drift_remediation: Option<Remediation>,
    /// Non-production stages only.
    pub schedule: Option<ScheduleRequest>,
    /// Non-production stages only; 1 to 2160 hours.
    #[serde(default, deserialize_with = "crate::domain::whole_number")]
    #[schema(minimum = 1, maximum = 2160)]
    pub default_ttl_hours: Option<i64>,
}

/// Stages a request sets; a stage left out takes its default.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StagePoliciesRequest {
    pub development: Option<StagePolicyRequest>,
    pub staging: Option<StagePolicyRequest>,
    pub production: Option<StagePolicyRequest>,
}

/// A whole policy (`PUT` replaces it); what is left out takes its default.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = example_request)]
pub struct TenantPolicyRequest {
    pub stages: Option<StagePoliciesRequest>,
    /// Each of `development`, `staging`, `production` exactly once.
    #[schema(min_items = 3, max_items = 3)]
    pub promotion_order: Option<Vec<Stage>>,
}

/// The example in the API document: two approvers for production, office hours and a 3-day
/// TTL for development.
pub fn example_request() -> serde_json::Value {
    serde_json::json!({
        "stages": {
            "production": {"approvals_required": 2},
            "development": {
                "default_ttl_hours": 72,
                "schedule": {"time_zone": "Europe/Berlin", "days": ["mon", "tue", "wed", "thu", "fri"],
                    "start": "07:00", "end": "19:00"}
            }
        }
    })
}

impl TenantPolicyRequest {
    /// The policy, or every field that is wrong (JSON paths such as
    /// `stages.production.schedule`).
    pub fn parse(&self) -> Result<TenantPolicy, Vec<FieldError>> {
        let mut errors = Vec::new();
        let stages = self.stages.clone().unwrap_or_default();
        let mut stage = |stage: Stage, request: Option<&StagePolicyRequest>| {
            parse_stage(stage, request, &mut errors)
        };
        let development = stage(Stage::Development, stages.development.as_ref());
        let staging = stage(Stage::Staging, stages.staging.as_ref());
        let production = stage(Stage::Production, stages.production.as_ref());
        let promotion_order = match &self.promotion_order {
            None => TenantPolicy::default().promotion_order,
            Some(order) => {
                let every_stage_once = order.len() == 3
                    && [Stage::Development, Stage::Staging, Stage::Production]
                        .iter()
                        .all(|s| order.contains(s));
                if !every_stage_once {
                    errors.push(FieldError::new(
                        "promotion_order",
                        "must name development, staging and production, each exactly once",
                    ));
                }
                order.clone()
            }
        };
        if errors.is_empty() {
            Ok(TenantPolicy {
                stages: StagePolicies {
                    development,
                    staging,
                    production,
                },
                promotion_order,
            })
        } else {
            Err(errors)
        }
    }
}

fn parse_stage(
    stage: Stage,
    request: Option<&StagePolicyRequest>,
    errors: &mut Vec<FieldError>,
) -> StagePolicy {
    let mut policy = StagePolicy::default_for(stage);
    let Some(request) = request else {
        return policy;
    };
    let field = |name: &str| format!("stages.{}.{name}", stage.as_str());
    if let Some(n) = request.approvals_required {
        match u8::try_from(n) {
            Ok(n) if n <= MAX_APPROVALS => policy.approvals_required = n,
            _ => errors.push(FieldError::new(
                field("approvals_required"),
                format!("must be 0 to {MAX_APPROVALS}"),
            )),
        }
    }
    if let Some(may) = request.requester_may_approve {
        policy.requester_may_approve = may;
    }
    if let Some(hours) = request.drift_check_interval_hours {
        match u32::try_from(hours) {
            Ok(h) if DRIFT_INTERVAL_HOURS.contains(&h) => policy.drift_check_interval_hours = h,
            _ => errors.push(FieldError::new(
                field("drift_check_interval_hours"),
                "must be 1 to 720 hours (hourly to every 30 days)",
            )),
        }
    }
    if let Some(remediation) = request.drift_remediation {
        policy.drift_remediation = remediation;
    }
    if let Some(schedule) = &request.schedule {
        if stage == Stage::Production {
            errors.push(FieldError::new(
                field("schedule"),
                "production environments are never stopped by a schedule; remove it",
            ));
        } else {
            match schedule.parse(&field("schedule")) {
                Ok(parsed) => policy.schedule = Some(parsed),
                Err(mut wrong) => errors.append(&mut wrong),
            }
        }
    }
    if let Some(hours) = request.default_ttl_hours {
        if stage == Stage::Production {
            errors.push(FieldError::new(
                field("default_ttl_hours"),
                "production environments do not expire; remove it",
            ));
        } else {
            match u32::try_from(hours) {
                Ok(h) if TTL_HOURS.contains(&h) => policy.default_ttl_hours = Some(h),
                _ => errors.push(FieldError::new(
                    field("default_ttl_hours"),
                    "must be 1 to 2160 hours (90 days)",
                )),
            }
        }
    }
    policy
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(body: serde_json::Value) -> Result<TenantPolicy, Vec<FieldError>> {
        serde_json::from_value::<TenantPolicyRequest>(body)
            .expect("request shape")
            .parse()
    }

    #[test]
    fn defaults_follow_the_issue() {
        let policy = parse(json!({})).expect("empty is the default");
        assert_eq!(policy, TenantPolicy::default());
        let production = policy.stage(Stage::Production);
        assert_eq!(production.approvals_required, 1);
        assert!(!production.requester_may_approve);
        assert_eq!(production.drift_check_interval_hours, 6);
        assert_eq!(production.drift_remediation, Remediation::Report);
        let development = policy.stage(Stage::Development);
        assert_eq!(development.approvals_required, 0);
        assert_eq!(development.drift_check_interval_hours, 24);
        assert_eq!(development.drift_remediation, Remediation::Repair);
        assert_eq!(policy.stage_before(Stage::Production), Some(Stage::Staging));
        assert_eq!(policy.stage_before(Stage::Development), None);
    }

    #[test]
    fn a_stage_left_out_keeps_its_default_and_a_field_left_out_too() {
        let policy =
            parse(json!({"stages": {"production": {"approvals_required": 2}}})).expect("valid");
        assert_eq!(policy.stage(Stage::Production).approvals_required, 2);
        assert_eq!(
            policy.stage(Stage::Production).drift_check_interval_hours,
            6
        );
        assert_eq!(
            policy.stage(Stage::Staging),
            &StagePolicy::default_for(Stage::Staging)
        );
    }

    #[test]
    fn every_wrong_field_is_named_at_once() {
        let errors = parse(json!({
            "stages": {
                "production": {"approvals_required": 9, "schedule": {
                    "time_zone": "Europe/Berlin", "days": ["mon"], "start": "07:00", "end": "19:00"},
                    "default_ttl_hours": 24},
                "development": {"drift_check_interval_hours": 0, "default_ttl_hours": 99999,
                    "schedule": {"time_zone": "Mars/Olympus", "days": [], "start": "07:00", "end": "07:00"}}
            },
            "promotion_order": ["production", "staging", "staging"]
        }))
        .expect_err("invalid");
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        for expected in [
            "stages.production.approvals_required",
            "stages.production.schedule",
            "stages.production.default_ttl_hours",
            "stages.development.drift_check_interval_hours",
            "stages.development.default_ttl_hours",
            "stages.development.schedule.time_zone",
            "stages.development.schedule.days",
            "stages.development.schedule.end",
            "promotion_order",
        ] {
            assert!(
                fields.contains(&expected),
                "{expected} missing from {fields:?}"
            );
        }
    }

    #[test]
    fn whole_numbers_may_be_written_as_floats() {
        let policy = parse(json!({"stages": {"staging": {"default_ttl_hours": 195.0,
            "drift_check_interval_hours": 370.0}}}))
        .expect("valid");
        assert_eq!(policy.stage(Stage::Staging).default_ttl_hours, Some(195));
        assert!(
            serde_json::from_value::<TenantPolicyRequest>(
                json!({"stages": {"staging": {"approvals_required": 1.5}}})
            )
            .is_err()
        );
    }

    #[test]
    fn a_reordered_promotion_is_kept() {
        let policy = parse(json!({"promotion_order": ["staging", "development", "production"]}))
            .expect("valid");
        assert_eq!(
            policy.stage_before(Stage::Development),
            Some(Stage::Staging)
        );
        assert_eq!(policy.stage_before(Stage::Staging), None);
    }

    #[test]
    fn the_stored_form_round_trips() {
        let policy = parse(json!({"stages": {"development": {"default_ttl_hours": 72, "schedule": {
            "time_zone": "America/Chicago", "days": ["mon", "tue"], "start": "07:30", "end": "18:00"}}}}))
        .expect("valid");
        let stored = serde_json::to_value(&policy).expect("serializes");
        let back: TenantPolicy = serde_json::from_value(stored).expect("reads back");
        assert_eq!(back, policy);
    }
}
