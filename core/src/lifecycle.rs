//! The environment state machine: its states (an enum stored as text) and the one table of
//! allowed transitions, with the state sets that jobs and queries act on.

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
pub enum EnvironmentState {
    /// Created; its first apply has not started.
    Pending,
    /// An apply is changing the target.
    Provisioning,
    /// The target matches the blueprint as last applied.
    Ready,
    /// A drift check found the target differs from the blueprint.
    Drifted,
    /// A job failed for good while changing the target.
    Failed,
    /// Stopped outside its schedule or by hand: its login roles cannot log in.
    Stopped,
    /// A destroy is removing it from the target.
    Destroying,
    /// Gone from the target; its name may be reused.
    Destroyed,
}

crate::text_enum_sql!(EnvironmentState);

impl EnvironmentState {
    pub const ALL: [EnvironmentState; 8] = [
        Self::Pending,
        Self::Provisioning,
        Self::Ready,
        Self::Drifted,
        Self::Failed,
        Self::Stopped,
        Self::Destroying,
        Self::Destroyed,
    ];

    /// A job that failed for good was creating, changing or destroying the environment in these.
    pub const CHANGING: [EnvironmentState; 3] =
        [Self::Pending, Self::Provisioning, Self::Destroying];

    /// A job stopped on request had started changing the target only in these: a `pending`
    /// environment whose first apply was canceled before it began stays `pending`.
    pub const MIDWAY: [EnvironmentState; 2] = [Self::Provisioning, Self::Destroying];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Provisioning => "provisioning",
            Self::Ready => "ready",
            Self::Drifted => "drifted",
            Self::Failed => "failed",
            Self::Stopped => "stopped",
            Self::Destroying => "destroying",
            Self::Destroyed => "destroyed",
        }
    }

    pub fn from_db(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    /// Whether the target is as last applied or merely drifted from it: the states a drift
    /// check reports from and a credentials read is served in.
    pub fn is_settled(self) -> bool {
        matches!(self, Self::Ready | Self::Drifted)
    }
}

impl std::fmt::Display for EnvironmentState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every allowed transition; every state write checks it (`store::environments::set_state`).
/// A state moving to itself is a retried job redoing its step. Any standing state may start to
/// be destroyed; `destroyed` is final.
pub const TRANSITIONS: &[(EnvironmentState, EnvironmentState)] = {
    use EnvironmentState::*;
    &[
        (Pending, Provisioning),
        (Pending, Failed),
        (Pending, Destroying),
        (Provisioning, Provisioning),
        (Provisioning, Ready),
        (Provisioning, Drifted),
        (Provisioning, Failed),
        (Provisioning, Destroying),
        (Ready, Provisioning),
        (Ready, Drifted),
        (Ready, Ready),
        (Ready, Stopped),
        (Ready, Destroying),
        (Drifted, Provisioning),
        (Drifted, Ready),
        (Drifted, Drifted),
        (Drifted, Stopped),
        (Drifted, Destroying),
        (Failed, Provisioning),
        (Failed, Destroying),
        (Stopped, Ready),
        (Stopped, Stopped),
        (Stopped, Drifted),
        (Stopped, Provisioning),
        (Stopped, Destroying),
        (Destroying, Destroying),
        (Destroying, Destroyed),
        (Destroying, Failed),
    ]
};

pub fn can_transition(from: EnvironmentState, to: EnvironmentState) -> bool {
    TRANSITIONS.contains(&(from, to))
}

/// The states an environment may be in for a move to `to`.
pub fn sources_of(to: EnvironmentState) -> Vec<EnvironmentState> {
    TRANSITIONS
        .iter()
        .filter(|(_, target)| *target == to)
        .map(|(from, _)| *from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::EnvironmentState::*;
    use super::*;

    #[test]
    fn destroyed_is_final_and_every_state_can_be_destroyed() {
        for to in EnvironmentState::ALL {
            assert!(!can_transition(Destroyed, to), "destroyed -> {to}");
        }
        for from in EnvironmentState::ALL
            .into_iter()
            .filter(|s| *s != Destroyed)
        {
            assert!(
                from == Destroying || can_transition(from, Destroying),
                "{from} cannot be destroyed"
            );
        }
        assert_eq!(sources_of(Destroyed), vec![Destroying]);
    }

    #[test]
    fn the_sets_jobs_act_on_are_states_that_can_fail() {
        for state in EnvironmentState::CHANGING
            .into_iter()
            .chain(EnvironmentState::MIDWAY)
        {
            assert!(can_transition(state, Failed), "{state} cannot fail");
        }
        assert!(
            EnvironmentState::MIDWAY
                .iter()
                .all(|s| EnvironmentState::CHANGING.contains(s))
        );
    }

    #[test]
    fn words_round_trip_and_match_the_database_check() {
        for state in EnvironmentState::ALL {
            assert_eq!(EnvironmentState::from_db(state.as_str()), Some(state));
            assert_eq!(
                serde_json::to_value(state).expect("serializes"),
                serde_json::json!(state.as_str())
            );
        }
        assert_eq!(EnvironmentState::from_db("gone"), None);
    }
}
