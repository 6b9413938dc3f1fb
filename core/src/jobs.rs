//! The job state machine: states, operations, and the one table of allowed transitions that
//! every write checks.

use serde::{Deserialize, Serialize};

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    diesel::AsExpression,
    diesel::FromSqlRow,
)]
#[diesel(sql_type = diesel::sql_types::Text)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Planned,
    AwaitingApproval,
    Approved,
    Running,
    Succeeded,
    Failed,
    Canceled,
    /// An approver rejected the planned change.
    Rejected,
    /// Not enough approvals came before the wait expired.
    Expired,
}

crate::text_enum_sql!(JobState);

/// The states of a job still in its environment's line (queued, waiting for review, running),
/// as an SQL list. Queries spell it out rather than bind it, as the partial index `jobs_line`
/// spells it: a cached generic plan could not prove a bound list matches the index. A test
/// holds it equal to [`JobState::ACTIVE`].
#[macro_export]
macro_rules! active_job_states_sql {
    () => {
        "('queued','planned','awaiting_approval','approved','running')"
    };
}

impl JobState {
    /// The states of a job still in its environment's line: [`active_job_states_sql!`] in SQL.
    pub const ACTIVE: [JobState; 5] = [
        JobState::Queued,
        JobState::Planned,
        JobState::AwaitingApproval,
        JobState::Approved,
        JobState::Running,
    ];

    pub const ALL: [JobState; 10] = [
        JobState::Queued,
        JobState::Planned,
        JobState::AwaitingApproval,
        JobState::Approved,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Canceled,
        JobState::Rejected,
        JobState::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Planned => "planned",
            Self::AwaitingApproval => "awaiting_approval",
            Self::Approved => "approved",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
            Self::Rejected => "rejected",
            Self::Expired => "expired",
        }
    }

    pub fn from_db(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::Canceled | Self::Rejected | Self::Expired
        )
    }

    /// Whether the job is still in its environment's line.
    pub fn is_active(self) -> bool {
        Self::ACTIVE.contains(&self)
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every allowed transition. `Running → Queued` is a retry or a lease given back (crash,
/// SIGTERM); `Queued → Failed` is the sweeper giving up on a job that used all its attempts.
/// `Running → AwaitingApproval` is a change that needs approval, planned by its worker and
/// parked; an approval moves it to `Approved` (claimed like a queued job), a rejection or the
/// end of the wait ends it.
pub const TRANSITIONS: &[(JobState, JobState)] = {
    use JobState::*;
    &[
        (Queued, Running),
        (Queued, Canceled),
        (Queued, Failed),
        (Queued, Planned),
        (Planned, AwaitingApproval),
        (Planned, Queued),
        (Planned, Canceled),
        (Running, AwaitingApproval),
        (AwaitingApproval, Approved),
        (AwaitingApproval, Canceled),
        (AwaitingApproval, Rejected),
        (AwaitingApproval, Expired),
        (Approved, Running),
        (Approved, Canceled),
        (Approved, Failed),
        (Running, Succeeded),
        (Running, Failed),
        (Running, Queued),
        (Running, Canceled),
    ]
};

pub fn can_transition(from: JobState, to: JobState) -> bool {
    TRANSITIONS.contains(&(from, to))
}

/// The states a job may be in for a move to `to` (for `UPDATE … WHERE state IN (…)`).
pub fn sources_of(to: JobState) -> Vec<JobState> {
    TRANSITIONS
        .iter()
        .filter(|(_, target)| *target == to)
        .map(|(from, _)| *from)
        .collect()
}

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    diesel::AsExpression,
    diesel::FromSqlRow,
)]
#[diesel(sql_type = diesel::sql_types::Text)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    Apply,
    Plan,
    Destroy,
    DriftCheck,
    /// Takes the login away from the environment's roles and ends their sessions (`stopped`).
    Stop,
    /// Gives the login back and probes the walls again (`ready`).
    Start,
}

crate::text_enum_sql!(Operation);

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Apply => "apply",
            Self::Plan => "plan",
            Self::Destroy => "destroy",
            Self::DriftCheck => "drift_check",
            Self::Stop => "stop",
            Self::Start => "start",
        }
    }

    pub const ALL: [Operation; 6] = [
        Self::Apply,
        Self::Plan,
        Self::Destroy,
        Self::DriftCheck,
        Self::Stop,
        Self::Start,
    ];

    /// Whether the operation changes the target's objects (an apply or a destroy), and so may
    /// need review; plans and drift checks only read it, and a stop or start only turns the
    /// environment's logins off or on.
    pub fn changes_target(self) -> bool {
        matches!(self, Self::Apply | Self::Destroy)
    }

    pub fn from_db(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == raw)
    }
}

/// Delay before retry `attempt` (1-based) of a failed job: 1 s, 2 s, 4 s … capped at 5 min.
pub fn retry_backoff(attempt: u32, base: std::time::Duration) -> std::time::Duration {
    let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(16));
    base.saturating_mul(factor)
        .min(std::time::Duration::from_secs(300))
}

#[cfg(test)]
mod tests {
    use super::*;
    use JobState::*;

    #[test]
    fn terminal_states_have_no_way_out() {
        for state in JobState::ALL.into_iter().filter(|s| s.is_terminal()) {
            for to in JobState::ALL {
                assert!(!can_transition(state, to), "{state:?} -> {to:?}");
            }
        }
    }

    #[test]
    fn the_happy_paths_are_allowed() {
        assert!(can_transition(Queued, Running));
        assert!(can_transition(Running, Succeeded));
        assert!(can_transition(Running, Queued));
        assert!(can_transition(AwaitingApproval, Approved));
        assert!(can_transition(Approved, Running));
        assert!(!can_transition(Queued, Succeeded));
        assert!(!can_transition(AwaitingApproval, Running));
    }

    #[test]
    fn sources_match_the_table() {
        assert_eq!(sources_of(Running), vec![Queued, Approved]);
        assert_eq!(sources_of(Succeeded), vec![Running]);
        for state in JobState::ALL {
            assert_eq!(JobState::from_db(state.as_str()), Some(state));
        }
    }

    #[test]
    fn the_sql_line_is_the_active_states() {
        let words: Vec<String> = JobState::ACTIVE
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect();
        assert_eq!(active_job_states_sql!(), format!("({})", words.join(",")));
        for state in JobState::ALL {
            assert_eq!(state.is_active(), !state.is_terminal(), "{state}");
        }
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let base = std::time::Duration::from_secs(1);
        assert_eq!(retry_backoff(1, base).as_secs(), 1);
        assert_eq!(retry_backoff(3, base).as_secs(), 4);
        assert_eq!(retry_backoff(40, base).as_secs(), 300);
    }
}
