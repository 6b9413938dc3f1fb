//! The planner: what an environment should be made of (desired resources, from its spec and
//! blueprint), compared with what a target server has (actual resources, read by an executor),
//! gives a plan of ordered create / update / delete actions with a hash. Pure: no I/O.
//!
//! Resource kinds, in the order they are created: `role` → `database` → `schema` → `grant` →
//! `baseline`. Deletes run in the reverse order. Every role, schema and database carries a
//! `comment` attribute that must be null: catalog comments are readable by every role on the
//! server, so nothing about the tenant (slug, environment name, cost tags) is written there;
//! cost tags live in the control database only. An old identifying comment is drift, and the
//! next apply removes it.
//!
//! Containment: a resource whose `database` attribute names a database being deleted, or whose
//! `schema` attribute names a schema being deleted, goes with it, so teardown only lists the
//! objects that must be dropped one by one. Baseline migrations are forward-only: a recorded
//! migration the blueprint no longer lists is kept, not deleted.

use crate::blueprint::Blueprint;
use crate::domain::{Isolation, Stage};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use uuid::Uuid;

pub const KIND_ROLE: &str = "role";
pub const KIND_DATABASE: &str = "database";
pub const KIND_SCHEMA: &str = "schema";
pub const KIND_GRANT: &str = "grant";
pub const KIND_BASELINE: &str = "baseline";
/// An index a baseline migration made (`crate::indexes`): checked for, and made again.
pub const KIND_INDEX: &str = "index";

/// The schema a dedicated environment's objects live in.
pub const DEDICATED_SCHEMA: &str = "app";
/// A dedicated database allows this many connections beyond the app role's limit, for the
/// owner's migrations and operators (superusers bypass the limit but count towards it).
pub const DEDICATED_DATABASE_RESERVE: i32 = 3;
/// The admin-only schema, one per database Bulkhead manages, that holds its bookkeeping (the
/// baseline records). No tenant role has any privilege on it.
pub const META_SCHEMA: &str = "bulkhead_meta";
/// The table, in [`META_SCHEMA`], that records applied baseline migrations per schema.
pub const BASELINE_TABLE: &str = "baseline";
/// Where earlier versions recorded baseline migrations: a table in the environment's own schema.
/// Read (when the admin owns it) so existing environments keep their history; never written.
pub const LEGACY_BASELINE_TABLE: &str = "bulkhead_baseline";

/// Values of `grant` resources' `object_type` attribute.
pub const GRANT_ON_DATABASE: &str = "database";
pub const GRANT_ON_SCHEMA: &str = "schema";
pub const GRANT_DEFAULT_PRIVILEGES: &str = "default_privileges";

/// Everything the planner needs to know about one environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvironmentSpec {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub isolation: Isolation,
    pub stage: Stage,
    pub blueprint: Blueprint,
    pub cost_tags: BTreeMap<String, String>,
    /// Stopped (outside its schedule, or by hand): its app role may not log in, so a drift
    /// check finds a login given back behind Bulkhead's back.
    #[serde(default)]
    pub stopped: bool,
}

/// Names of an environment's objects on its target. They derive from the environment id only,
/// never from user text, and fit PostgreSQL's 63-byte identifiers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvNames {
    pub database: String,
    pub schema: String,
    pub owner_role: String,
    pub app_role: String,
}

/// `bk_<id>` for the schema (shared) or database (dedicated), `bk_<id>_owner` and
/// `bk_<id>_app` for the roles. A shared environment lives in `pooled_database`.
pub fn names(environment_id: Uuid, isolation: Isolation, pooled_database: &str) -> EnvNames {
    let base = format!("bk_{}", environment_id.simple());
    let owner_role = format!("{base}_owner");
    let app_role = format!("{base}_app");
    match isolation {
        Isolation::Shared => EnvNames {
            database: pooled_database.to_owned(),
            schema: base,
            owner_role,
            app_role,
        },
        Isolation::Dedicated => EnvNames {
            database: base,
            schema: DEDICATED_SCHEMA.to_owned(),
            owner_role,
            app_role,
        },
    }
}

/// One object on a target, identified by kind and name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resource {
    pub kind: String,
    pub name: String,
    pub attributes: BTreeMap<String, Value>,
}

impl Resource {
    pub fn new(kind: &str, name: impl Into<String>, attributes: Value) -> Self {
        let attributes = match attributes {
            Value::Object(map) => map.into_iter().collect(),
            _ => BTreeMap::new(),
        };
        Self {
            kind: kind.to_owned(),
            name: name.into(),
            attributes,
        }
    }

    /// A string attribute, if present.
    pub fn attr_str(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).and_then(Value::as_str)
    }

    /// The catalog comment attribute, if this kind carries one (desired: always null).
    pub fn comment(&self) -> Option<&Value> {
        self.attributes.get("comment")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Create,
    Update,
    Delete,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Update => "update",
            Self::Delete => "delete",
        }
    }
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanAction {
    pub op: Op,
    pub kind: String,
    pub name: String,
    /// What changes, for people.
    pub detail: String,
    /// The resource as it should be (absent for a delete).
    pub desired: Option<Resource>,
    /// The resource as it was read (absent for a create).
    pub actual: Option<Resource>,
}

impl PlanAction {
    /// `create role bk_…_app`.
    pub fn headline(&self) -> String {
        format!("{} {} {}", self.op.as_str(), self.kind, self.name)
    }
}

/// Ordered actions, the fingerprint of the actual state they were computed from, and a hash of
/// both: the same hash means the same changes from the same state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub actions: Vec<PlanAction>,
    pub actual_fingerprint: String,
    pub hash: String,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }

    /// `{"create": n, "update": n, "delete": n, "changes": ["create role bk_…", …]}`.
    pub fn summary(&self) -> Value {
        let count = |op: Op| self.actions.iter().filter(|a| a.op == op).count();
        json!({
            "create": count(Op::Create),
            "update": count(Op::Update),
            "delete": count(Op::Delete),
            "changes": self.actions.iter().map(PlanAction::headline).collect::<Vec<_>>(),
        })
    }

    /// The hash the plan's actions and fingerprint should carry; differs from `hash` when the
    /// plan was altered after it was made.
    pub fn recompute_hash(&self) -> String {
        plan_hash(&self.actions, &self.actual_fingerprint)
    }

    fn build(actions: Vec<PlanAction>, actual: &[Resource]) -> Self {
        let actual_fingerprint = fingerprint(actual);
        let hash = plan_hash(&actions, &actual_fingerprint);
        Self {
            actions,
            actual_fingerprint,
            hash,
        }
    }
}

/// SHA-256 (hex) of the canonical JSON of `{"actions": …, "actual_fingerprint": …}`.
fn plan_hash(actions: &[PlanAction], actual_fingerprint: &str) -> String {
    let body = json!({
        "actions": serde_json::to_value(actions).unwrap_or(Value::Null),
        "actual_fingerprint": actual_fingerprint,
    });
    sha256_hex(canonical_json(&body).as_bytes())
}

/// The resources the environment should have on its target.
pub fn desired(spec: &EnvironmentSpec, names: &EnvNames) -> Vec<Resource> {
    // No comment: catalog comments are readable by every role on the server.
    let tags = Value::Null;
    let limits = spec.blueprint.limits;
    let db = names.database.as_str();
    let schema = names.schema.as_str();
    let (owner, app) = (names.owner_role.as_str(), names.app_role.as_str());
    let mut resources = vec![
        Resource::new(
            KIND_ROLE,
            owner,
            json!({
                "login": false,
                // It logs in only for the migrations after the first apply, with one session:
                // no other session as it may open meanwhile.
                "connection_limit": 1,
                "capabilities": [],
                "settings": {},
                "database_settings": [],
                "comment": tags,
            }),
        ),
        Resource::new(
            KIND_ROLE,
            app,
            json!({
                "login": !spec.stopped,
                "connection_limit": limits.connection_limit,
                "capabilities": [],
                "settings": {
                    "search_path": schema,
                    "statement_timeout": limits.statement_timeout_ms.to_string(),
                    "idle_in_transaction_session_timeout":
                        limits.idle_in_transaction_session_timeout_ms.to_string(),
                    "temp_file_limit": limits.temp_file_limit_kb.to_string(),
                    "work_mem": limits.work_mem_kb.to_string(),
                },
                // A role may set its own defaults per database (`ALTER ROLE … IN DATABASE …
                // SET`); none are wanted, so one is drift that apply resets.
                "database_settings": [],
                "comment": tags,
            }),
        ),
    ];
    if spec.isolation == Isolation::Dedicated {
        resources.push(Resource::new(
            KIND_DATABASE,
            db,
            json!({
                "owner": owner,
                "connection_limit": limits.connection_limit.saturating_add(DEDICATED_DATABASE_RESERVE),
                "public_privileges": [],
                "public_schema_privileges": [],
                "comment": tags,
            }),
        ));
    }
    resources.push(Resource::new(
        KIND_SCHEMA,
        schema,
        json!({
            "database": db,
            "owner": owner,
            "public_privileges": [],
            "comment": tags,
        }),
    ));
    resources.push(Resource::new(
        KIND_GRANT,
        grant_on_database_name(db, app),
        json!({
            "object_type": GRANT_ON_DATABASE,
            "database": db,
            "grantee": app,
            "privileges": ["CONNECT"],
        }),
    ));
    resources.push(Resource::new(
        KIND_GRANT,
        grant_on_schema_name(schema, app),
        json!({
            "object_type": GRANT_ON_SCHEMA,
            "database": db,
            "schema": schema,
            "grantee": app,
            "privileges": ["CREATE", "USAGE"],
        }),
    ));
    resources.push(Resource::new(
        KIND_GRANT,
        default_privileges_name(schema, owner, app),
        json!({
            "object_type": GRANT_DEFAULT_PRIVILEGES,
            "database": db,
            "schema": schema,
            "owner": owner,
            "grantee": app,
            "tables": ["DELETE", "INSERT", "SELECT", "UPDATE"],
            "sequences": ["SELECT", "USAGE"],
        }),
    ));
    for migration in &spec.blueprint.baseline {
        resources.push(Resource::new(
            KIND_BASELINE,
            migration.id.clone(),
            json!({
                "database": db,
                "schema": schema,
                "checksum": sha256_hex(migration.sql.as_bytes()),
            }),
        ));
    }
    resources.extend(index_resources(spec, names));
    resources
}

/// The indexes the baseline makes, as resources (a drift check compares them with the
/// schema's; see `crate::indexes`).
pub fn index_resources(spec: &EnvironmentSpec, names: &EnvNames) -> Vec<Resource> {
    crate::indexes::of_blueprint(&spec.blueprint)
        .into_iter()
        .map(|index| {
            Resource::new(
                KIND_INDEX,
                index.name,
                json!({
                    "database": names.database,
                    "schema": names.schema,
                    "migration": index.migration,
                }),
            )
        })
        .collect()
}

/// Name of the grant of privileges on database `database` to `grantee`.
pub fn grant_on_database_name(database: &str, grantee: &str) -> String {
    format!("on database {database} to {grantee}")
}

/// Name of the grant of privileges on schema `schema` to `grantee`.
pub fn grant_on_schema_name(schema: &str, grantee: &str) -> String {
    format!("on schema {schema} to {grantee}")
}

/// Name of the default privileges on `owner`'s future tables and sequences in `schema`.
pub fn default_privileges_name(schema: &str, owner: &str, grantee: &str) -> String {
    format!("on future tables of {owner} in schema {schema} to {grantee}")
}

/// Creation order of a resource; deletes run in the reverse order. The app role's grant on the
/// schema (CREATE, USAGE) comes after the baseline: the tenant cannot make objects in its schema
/// before the baseline ran (objects a baseline migration would then meet).
fn rank(resource: &Resource) -> u8 {
    match resource.kind.as_str() {
        KIND_ROLE => 0,
        KIND_DATABASE => 1,
        KIND_SCHEMA => 2,
        KIND_GRANT if resource.attr_str("object_type") == Some(GRANT_ON_SCHEMA) => 5,
        KIND_GRANT => 3,
        KIND_BASELINE | KIND_INDEX => 4,
        _ => 6,
    }
}

/// The actions that turn `actual` into `desired`: creates and updates by kind order (roles,
/// database, schema, grants, baseline, the schema grant; the desired order within a kind), then deletes in
/// reverse kind order. Resources contained in a deleted database or schema are not listed.
pub fn diff(desired: &[Resource], actual: &[Resource]) -> Plan {
    let actual_by_key: BTreeMap<(&str, &str), &Resource> = actual
        .iter()
        .map(|r| ((r.kind.as_str(), r.name.as_str()), r))
        .collect();
    let desired_keys: BTreeSet<(&str, &str)> = desired
        .iter()
        .map(|r| (r.kind.as_str(), r.name.as_str()))
        .collect();

    let mut ordered: Vec<&Resource> = desired.iter().collect();
    ordered.sort_by_key(|r| rank(r)); // stable: keeps the desired order within a kind
    // A baseline index is looked for only once its migration is recorded: a migration this
    // plan runs makes it.
    let recorded: BTreeSet<&str> = actual
        .iter()
        .filter(|r| r.kind == KIND_BASELINE)
        .map(|r| r.name.as_str())
        .collect();
    ordered.retain(|r| {
        r.kind != KIND_INDEX
            || r.attr_str("migration")
                .is_some_and(|m| recorded.contains(m))
    });
    let mut actions = Vec::new();
    for want in ordered {
        match actual_by_key.get(&(want.kind.as_str(), want.name.as_str())) {
            None => actions.push(PlanAction {
                op: Op::Create,
                kind: want.kind.clone(),
                name: want.name.clone(),
                detail: create_detail(want),
                desired: Some(want.clone()),
                actual: None,
            }),
            Some(have) if have.attributes != want.attributes => actions.push(PlanAction {
                op: Op::Update,
                kind: want.kind.clone(),
                name: want.name.clone(),
                detail: update_detail(want, have),
                desired: Some(want.clone()),
                actual: Some((*have).clone()),
            }),
            Some(_) => {}
        }
    }

    let unwanted: Vec<&Resource> = actual
        .iter()
        .filter(|r| !desired_keys.contains(&(r.kind.as_str(), r.name.as_str())))
        // Forward-only: a recorded migration is history, and so are the indexes it made;
        // dropping their schema removes them.
        .filter(|r| r.kind != KIND_BASELINE && r.kind != KIND_INDEX)
        .collect();
    actions.extend(delete_actions(&unwanted, actual));
    Plan::build(actions, actual)
}

/// The plan that removes everything in `actual`: destroy is a plan to nothing.
pub fn teardown(actual: &[Resource]) -> Plan {
    let all: Vec<&Resource> = actual.iter().collect();
    Plan::build(delete_actions(&all, actual), actual)
}

fn delete_actions(unwanted: &[&Resource], actual: &[Resource]) -> Vec<PlanAction> {
    let deleted_databases: BTreeSet<&str> = unwanted
        .iter()
        .filter(|r| r.kind == KIND_DATABASE)
        .map(|r| r.name.as_str())
        .collect();
    let deleted_schemas: BTreeSet<(&str, &str)> = unwanted
        .iter()
        .filter(|r| r.kind == KIND_SCHEMA)
        .map(|r| (r.attr_str("database").unwrap_or(""), r.name.as_str()))
        .collect();
    let contained = |r: &Resource| -> bool {
        if r.kind == KIND_DATABASE || r.kind == KIND_ROLE {
            return false;
        }
        let database = r.attr_str("database").unwrap_or("");
        if deleted_databases.contains(database) {
            return true;
        }
        r.kind != KIND_SCHEMA
            && r.attr_str("schema")
                .is_some_and(|schema| deleted_schemas.contains(&(database, schema)))
    };

    let mut deletes: Vec<&Resource> = unwanted.iter().copied().filter(|r| !contained(r)).collect();
    deletes.sort_by(|a, b| (rank(b), b.name.as_str()).cmp(&(rank(a), a.name.as_str())));
    deletes
        .into_iter()
        .map(|gone| {
            let inside: Vec<String> = actual
                .iter()
                .filter(|r| contained(r) && is_inside(r, gone))
                .map(|r| format!("{} {}", r.kind, r.name))
                .collect();
            let mut detail = format!("drop {} {}", gone.kind, gone.name);
            if !inside.is_empty() {
                detail.push_str(&format!(" with what it contains: {}", inside.join(", ")));
            }
            PlanAction {
                op: Op::Delete,
                kind: gone.kind.clone(),
                name: gone.name.clone(),
                detail,
                desired: None,
                actual: Some(gone.clone()),
            }
        })
        .collect()
}

/// Whether `inner` lives in `outer` (a database or schema).
fn is_inside(inner: &Resource, outer: &Resource) -> bool {
    match outer.kind.as_str() {
        KIND_DATABASE => inner.attr_str("database") == Some(outer.name.as_str()),
        KIND_SCHEMA => {
            inner.kind != KIND_SCHEMA
                && inner.attr_str("database") == outer.attr_str("database")
                && inner.attr_str("schema") == Some(outer.name.as_str())
        }
        _ => false,
    }
}

fn create_detail(resource: &Resource) -> String {
    let attributes: Vec<String> = resource
        .attributes
        .iter()
        .map(|(k, v)| format!("{k}={}", compact(v)))
        .collect();
    format!(
        "create {} {} ({})",
        resource.kind,
        resource.name,
        attributes.join(", ")
    )
}

fn update_detail(want: &Resource, have: &Resource) -> String {
    let keys: BTreeSet<&String> = want
        .attributes
        .keys()
        .chain(have.attributes.keys())
        .collect();
    let changes: Vec<String> = keys
        .into_iter()
        .filter_map(|key| {
            let (old, new) = (have.attributes.get(key), want.attributes.get(key));
            (old != new).then(|| {
                let show = |v: Option<&Value>| v.map_or_else(|| "(none)".to_owned(), compact);
                format!("{key}: {} → {}", show(old), show(new))
            })
        })
        .collect();
    format!("update {} {}: {}", want.kind, want.name, changes.join("; "))
}

fn compact(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => canonical_json(other),
    }
}

/// SHA-256 (hex) of the canonical JSON of `actual`, sorted by kind and name.
pub fn fingerprint(actual: &[Resource]) -> String {
    let mut sorted: Vec<&Resource> = actual.iter().collect();
    sorted.sort_by(|a, b| (&a.kind, &a.name).cmp(&(&b.kind, &b.name)));
    let value = serde_json::to_value(&sorted).unwrap_or(Value::Null);
    sha256_hex(canonical_json(&value).as_bytes())
}

/// JSON with object keys sorted at every level and no whitespace, whatever map type
/// `serde_json` was built with.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                if let Some(v) = map.get(key) {
                    write_canonical(v, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blueprint::BlueprintCatalog;

    fn spec(isolation: Isolation) -> EnvironmentSpec {
        let catalog = BlueprintCatalog::builtin().expect("builtin");
        EnvironmentSpec {
            id: Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001),
            tenant_id: Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0002),
            isolation,
            stage: Stage::Development,
            blueprint: catalog
                .default_for(isolation)
                .and_then(|latest| catalog.get(&latest.name, Some(1)))
                .expect("default, version 1")
                .clone(),
            cost_tags: BTreeMap::from([("cost_center".to_owned(), "cc-1".to_owned())]),
            stopped: false,
        }
    }

    fn desired_of(spec: &EnvironmentSpec) -> (EnvNames, Vec<Resource>) {
        let names = names(spec.id, spec.isolation, "bh_pool");
        let resources = desired(spec, &names);
        (names, resources)
    }

    fn headlines(plan: &Plan) -> Vec<String> {
        plan.actions.iter().map(PlanAction::headline).collect()
    }

    #[test]
    fn names_derive_from_the_id_and_fit_63_bytes() {
        let id = Uuid::from_u128(u128::MAX);
        let shared = names(id, Isolation::Shared, "bh_pool");
        assert_eq!(shared.database, "bh_pool");
        assert_eq!(shared.schema, format!("bk_{}", id.simple()));
        assert_eq!(shared.app_role, format!("bk_{}_app", id.simple()));
        let dedicated = names(id, Isolation::Dedicated, "bh_pool");
        assert_eq!(dedicated.database, format!("bk_{}", id.simple()));
        assert_eq!(dedicated.schema, "app");
        for name in [
            &shared.schema,
            &shared.owner_role,
            &shared.app_role,
            &dedicated.database,
        ] {
            assert!(name.len() <= 63);
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            );
        }
    }

    #[test]
    fn empty_actual_creates_everything_in_dependency_order() {
        let spec = spec(Isolation::Dedicated);
        let (names, desired) = desired_of(&spec);
        let plan = diff(&desired, &[]);
        assert!(plan.actions.iter().all(|a| a.op == Op::Create));
        let kinds: Vec<&str> = plan.actions.iter().map(|a| a.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "role", "role", "database", "schema", "grant", "grant", "baseline", "baseline",
                "baseline", "grant"
            ]
        );
        assert_eq!(plan.actions[0].name, names.owner_role);
        assert_eq!(plan.actions[1].name, names.app_role);
        assert_eq!(plan.actions[6].name, "0001_orders");
        // The tenant may create in its schema only once the baseline ran.
        assert_eq!(
            plan.actions[9].name,
            grant_on_schema_name(&names.schema, &names.app_role)
        );
        let summary = plan.summary();
        assert_eq!(summary["create"], 10);
        assert_eq!(summary["update"], 0);
        assert_eq!(
            summary["changes"][0],
            format!("create role {}", names.owner_role)
        );
        assert!(
            plan.actions[1].detail.contains("connection_limit=10"),
            "{}",
            plan.actions[1].detail
        );

        let shared = self::spec(Isolation::Shared);
        let (_, desired) = desired_of(&shared);
        let plan = diff(&desired, &[]);
        assert!(
            !plan.actions.iter().any(|a| a.kind == KIND_DATABASE),
            "shared has no own database"
        );
        assert_eq!(plan.actions.len(), 2 + 1 + 3 + 2);
    }

    #[test]
    fn nothing_to_do_when_actual_matches() {
        let spec = spec(Isolation::Shared);
        let (_, desired) = desired_of(&spec);
        let mut actual = desired.clone();
        actual.reverse(); // order of the catalog read does not matter
        let plan = diff(&desired, &actual);
        assert!(plan.is_empty());
        assert_eq!(plan.summary()["changes"], json!([]));
    }

    #[test]
    fn a_dropped_role_is_one_create() {
        let spec = spec(Isolation::Shared);
        let (names, desired) = desired_of(&spec);
        let actual: Vec<Resource> = desired
            .iter()
            .filter(|r| r.name != names.app_role)
            .cloned()
            .collect();
        let plan = diff(&desired, &actual);
        assert_eq!(
            headlines(&plan),
            [format!("create role {}", names.app_role)]
        );
        assert_eq!(
            plan.actions[0].desired.as_ref().map(|r| &r.name),
            Some(&names.app_role)
        );
    }

    #[test]
    fn cost_tags_never_reach_the_target() {
        let mut spec = spec(Isolation::Dedicated);
        let (names, actual) = desired_of(&spec);
        spec.cost_tags
            .insert("cost_center".to_owned(), "cc-2".to_owned());
        let desired = desired(&spec, &names);
        assert!(diff(&desired, &actual).is_empty());
        let text = serde_json::to_string(&desired).expect("json");
        assert!(
            !text.contains("cc-2") && !text.contains("cost_center"),
            "{text}"
        );
    }

    #[test]
    fn an_old_identifying_comment_is_drift_that_apply_removes() {
        let spec = spec(Isolation::Dedicated);
        let (names, mut actual) = desired_of(&spec);
        for resource in &mut actual {
            if resource.comment().is_some() {
                resource
                    .attributes
                    .insert("comment".to_owned(), json!({"cost_center": "cc-1"}));
            }
        }
        let plan = diff(&desired(&spec, &names), &actual);
        assert_eq!(
            headlines(&plan),
            [
                format!("update role {}", names.owner_role),
                format!("update role {}", names.app_role),
                format!("update database {}", names.database),
                "update schema app".to_owned(),
            ]
        );
        assert!(
            plan.actions[0]
                .detail
                .contains(r#"comment: {"cost_center":"cc-1"} → null"#),
            "{}",
            plan.actions[0].detail
        );
    }

    #[test]
    fn changed_limits_update_the_app_role() {
        let mut spec = spec(Isolation::Shared);
        let (names, actual) = desired_of(&spec);
        spec.blueprint.limits.connection_limit = 7;
        let plan = diff(&desired(&spec, &names), &actual);
        assert_eq!(
            headlines(&plan),
            [format!("update role {}", names.app_role)]
        );
        assert!(plan.actions[0].detail.contains("connection_limit: 5 → 7"));
    }

    #[test]
    fn teardown_drops_containers_in_reverse_order() {
        let spec = spec(Isolation::Shared);
        let (names, actual) = desired_of(&spec);
        let plan = teardown(&actual);
        assert_eq!(
            headlines(&plan),
            [
                format!("delete grant on database bh_pool to {}", names.app_role),
                format!("delete schema {}", names.schema),
                format!("delete role {}", names.owner_role),
                format!("delete role {}", names.app_role),
            ]
        );
        assert!(
            plan.actions[1].detail.contains("baseline 0001_orders"),
            "{}",
            plan.actions[1].detail
        );

        let spec = self::spec(Isolation::Dedicated);
        let (names, actual) = desired_of(&spec);
        let plan = teardown(&actual);
        assert_eq!(
            headlines(&plan),
            [
                format!("delete database {}", names.database),
                format!("delete role {}", names.owner_role),
                format!("delete role {}", names.app_role),
            ]
        );
        assert!(
            plan.actions
                .iter()
                .all(|a| a.desired.is_none() && a.actual.is_some())
        );
        assert!(teardown(&[]).is_empty());
    }

    #[test]
    fn recorded_migrations_are_never_deleted_by_a_diff() {
        let spec = spec(Isolation::Dedicated);
        let (names, desired) = desired_of(&spec);
        let mut actual = desired.clone();
        actual.push(Resource::new(
            KIND_BASELINE,
            "0009_later",
            json!({"database": names.database, "schema": "app", "checksum": "00"}),
        ));
        assert!(diff(&desired, &actual).is_empty());
    }

    #[test]
    fn an_edited_migration_shows_as_an_update() {
        let mut spec = spec(Isolation::Shared);
        let (names, actual) = desired_of(&spec);
        spec.blueprint.baseline[0].sql.push_str("\n-- edited");
        let plan = diff(&desired(&spec, &names), &actual);
        assert_eq!(headlines(&plan), ["update baseline 0001_orders"]);
        assert!(plan.actions[0].detail.contains("checksum: "));
    }

    #[test]
    fn hash_is_stable_and_follows_the_plan() {
        let spec = spec(Isolation::Shared);
        let (names, desired) = desired_of(&spec);
        let a = diff(&desired, &[]);
        let b = diff(&desired, &[]);
        assert_eq!(a.hash, b.hash);
        assert_eq!(a.hash.len(), 64);
        assert_eq!(a, b);

        let partial: Vec<Resource> = desired
            .iter()
            .filter(|r| r.name == names.owner_role)
            .cloned()
            .collect();
        let c = diff(&desired, &partial);
        assert_ne!(a.hash, c.hash);
        assert_ne!(a.actual_fingerprint, c.actual_fingerprint);

        let mut reversed = desired.clone();
        reversed.reverse();
        assert_eq!(fingerprint(&desired), fingerprint(&reversed));
        assert_eq!(
            diff(&desired, &desired).hash,
            diff(&desired, &reversed).hash
        );

        assert_eq!(a.recompute_hash(), a.hash);
        let mut altered = a.clone();
        altered.actions.pop();
        assert_ne!(altered.recompute_hash(), a.hash);

        let json = serde_json::to_string(&a).expect("serialize");
        let back: Plan = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, a);
        assert!(json.contains(r#""op":"create""#));
    }

    #[test]
    fn canonical_json_sorts_keys() {
        let value = json!({"b": [1, {"z": 1, "a": "x"}], "a": null});
        assert_eq!(
            canonical_json(&value),
            r#"{"a":null,"b":[1,{"a":"x","z":1}]}"#
        );
    }
}
