//! What changed between two versions of a blueprint: the baseline migrations the later one
//! adds and the limits it changes, as shown to the people who approve an upgrade.

use crate::blueprint::Blueprint;
use serde::Serialize;
use std::collections::BTreeMap;

/// One limit that differs between two versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct LimitChange {
    /// The earlier version's value (a number).
    pub from: serde_json::Value,
    /// This version's value.
    pub to: serde_json::Value,
}

/// What a version changes from the one before it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, utoipa::ToSchema)]
pub struct VersionChanges {
    /// The version compared against.
    pub from_version: u32,
    /// Baseline migrations this version adds (applied in order by an upgrade).
    pub baseline_added: Vec<String>,
    /// Baseline migrations of the earlier version this one no longer has (an upgrade cannot
    /// undo them; a blueprint that drops one is a new blueprint, not a version).
    pub baseline_removed: Vec<String>,
    /// Limits whose value differs, by name.
    pub limits_changed: BTreeMap<String, LimitChange>,
}

/// What `next` changes from `previous`.
pub fn changes(previous: &Blueprint, next: &Blueprint) -> VersionChanges {
    let ids = |b: &Blueprint| -> Vec<String> { b.baseline.iter().map(|m| m.id.clone()).collect() };
    let (before, after) = (ids(previous), ids(next));
    let as_map = |b: &Blueprint| match serde_json::to_value(b.limits) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    let (old, new) = (as_map(previous), as_map(next));
    let limits_changed = new
        .iter()
        .filter_map(|(name, to)| {
            let from = old.get(name).cloned().unwrap_or(serde_json::Value::Null);
            (from != *to).then(|| {
                (
                    name.clone(),
                    LimitChange {
                        from,
                        to: to.clone(),
                    },
                )
            })
        })
        .collect();
    VersionChanges {
        from_version: previous.version,
        baseline_added: after
            .iter()
            .filter(|id| !before.contains(id))
            .cloned()
            .collect(),
        baseline_removed: before
            .iter()
            .filter(|id| !after.contains(id))
            .cloned()
            .collect(),
        limits_changed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blueprint::{BaselineMigration, BlueprintCatalog};

    #[test]
    fn a_later_version_adds_migrations_and_changes_limits() {
        let catalog = BlueprintCatalog::builtin().expect("builtin");
        let v1 = catalog.get("shared-basic", Some(1)).expect("v1").clone();
        let mut v2 = v1.clone();
        v2.version = 2;
        v2.limits.connection_limit += 5;
        v2.baseline.push(BaselineMigration {
            id: "0003_inventory".into(),
            sql: "CREATE TABLE inventory (sku text PRIMARY KEY);".into(),
        });
        let diff = changes(&v1, &v2);
        assert_eq!(diff.from_version, 1);
        assert_eq!(diff.baseline_added, ["0003_inventory"]);
        assert!(diff.baseline_removed.is_empty());
        assert_eq!(diff.limits_changed.len(), 1);
        let change = &diff.limits_changed["connection_limit"];
        assert_eq!(change.to.as_i64(), change.from.as_i64().map(|n| n + 5));
        assert_eq!(
            changes(&v1, &v1),
            VersionChanges {
                from_version: 1,
                ..VersionChanges::default()
            }
        );
    }
}
