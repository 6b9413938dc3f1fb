//! The hostile-tenant suite (issue 8): two tenants, A and B, each with a shared environment in
//! the same pooled database and a dedicated one, provisioned through the real API and worker.
//! Each test then plays A with A's own handed-out credentials and tries what a hostile tenant
//! would: reach B, learn about B, become someone else, plant code the admin will run, outgrow
//! its limits. The assertions are the server's answers and the rows left behind.
//!
//! A's environments use the `hostile-*` blueprints: version 1 has no baseline migration yet (so
//! A can plant objects before the admin first makes or touches any of its own), version 2 adds a
//! migration that creates and writes to a table and calls functions and an operator by names A
//! can shadow. B uses the default blueprints (tables with identity sequences).

mod abuse;
mod access;
mod connect;
mod credentials;
mod gaps;
mod identity;
mod limits;
mod metadata;
mod traps;

use crate::helpers::{Options, Stack, connect_as};
use bulkhead_core::plan::EnvNames;
use diesel::sql_types::{Nullable, Text};
use diesel::{Connection, PgConnection, QueryableByName, RunQueryDsl};
use serde_json::{Value, json};
use std::time::Duration;

pub const JOB_WITHIN: Duration = Duration::from_secs(60);

const HOSTILE_SHARED_V1: (&str, &str) = (
    "hostile-shared.toml",
    r#"name = "hostile-shared"
version = 1
isolation = "shared"
description = "e2e: a hostile tenant's schema; no baseline yet, so the tenant acts first."

[limits]
connection_limit = 3
statement_timeout_ms = 30000
"#,
);

/// The migration of version 2: creates a table (unless one is there), writes to it, calls
/// `upper(varchar)` and `=` on varchar, and makes a second table with an index.
macro_rules! inventory_migration {
    () => {
        r#"
[[baseline]]
id = "0001_inventory"
sql = """
CREATE TABLE IF NOT EXISTS inventory (sku varchar(40));
INSERT INTO inventory VALUES (upper('x'::varchar));
CREATE TABLE inventory_moves (sku varchar(40) NOT NULL, quantity integer NOT NULL);
INSERT INTO inventory_moves SELECT v.s, 1 FROM (VALUES ('a'::varchar)) AS v (s) WHERE v.s = 'a';
CREATE INDEX inventory_moves_sku ON inventory_moves (sku);
"""
"#
    };
}

const HOSTILE_SHARED_V2: (&str, &str) = (
    "hostile-shared.v2.toml",
    concat!(
        r#"name = "hostile-shared"
version = 2
isolation = "shared"
description = "e2e: version 2 of the hostile tenant's schema: an inventory migration."

[limits]
connection_limit = 3
statement_timeout_ms = 30000
"#,
        inventory_migration!()
    ),
);

const HOSTILE_DEDICATED_V1: (&str, &str) = (
    "hostile-dedicated.toml",
    r#"name = "hostile-dedicated"
version = 1
isolation = "dedicated"
description = "e2e: a hostile tenant's database; no baseline yet, so the tenant acts first."

[limits]
connection_limit = 3
statement_timeout_ms = 30000
"#,
);

const HOSTILE_DEDICATED_V2: (&str, &str) = (
    "hostile-dedicated.v2.toml",
    concat!(
        r#"name = "hostile-dedicated"
version = 2
isolation = "dedicated"
description = "e2e: version 2 of the hostile tenant's database: an inventory migration."

[limits]
connection_limit = 3
statement_timeout_ms = 30000
"#,
        inventory_migration!()
    ),
);

/// The stack options every two-tenant test uses: the hostile blueprints next to the standard.
pub fn options() -> Options {
    Options {
        blueprints: vec![
            HOSTILE_SHARED_V1,
            HOSTILE_SHARED_V2,
            HOSTILE_DEDICATED_V1,
            HOSTILE_DEDICATED_V2,
        ],
        ..Options::default()
    }
}

/// One ready environment and what its tenant was handed.
pub struct Env {
    pub tenant: String,
    pub name: String,
    pub id: String,
    pub value: Value,
    pub names: EnvNames,
    pub creds: Value,
}

impl Env {
    /// A session with the handed-out credentials.
    pub fn connect(&self) -> PgConnection {
        connect_as(&self.creds).unwrap_or_else(|e| {
            panic!(
                "{} connects to its own environment {}: {e}",
                self.tenant, self.name
            )
        })
    }
}

pub struct Tenant {
    pub slug: String,
    /// Values of the tenant's own cost tags (business unit, cost center, customer).
    pub tag_values: Vec<String>,
    pub shared: Env,
    pub dedicated: Env,
}

impl Tenant {
    /// What identifies the tenant to a neighbour: slug, environment names, cost tag values.
    pub fn identifying(&self) -> Vec<String> {
        let mut out = vec![
            self.slug.clone(),
            self.shared.name.clone(),
            self.dedicated.name.clone(),
        ];
        out.extend(self.tag_values.iter().cloned());
        out
    }
}

pub struct World {
    pub a: Tenant,
    pub b: Tenant,
}

pub fn suffix() -> String {
    hex::encode(rand::random::<[u8; 4]>())
}

pub fn id_of(value: &Value) -> String {
    value["id"].as_str().expect("id").to_owned()
}

/// Tenants A (`atlas-…`, on the hostile blueprints) and B (`borealis-…`, on the defaults), each
/// with a ready shared and dedicated environment and its credentials. B writes a marker row in
/// each of its environments.
pub async fn two_tenants(stack: &Stack) -> World {
    let (sa, sb) = (suffix(), suffix());
    let specs = [
        (
            "atlas",
            sa.as_str(),
            Some(("hostile-shared", "hostile-dedicated")),
        ),
        ("borealis", sb.as_str(), None),
    ];
    let mut accepted = Vec::new();
    for (who, sfx, blueprints) in specs {
        let slug = format!("{who}-{sfx}");
        let tags = vec![
            format!("{who}-unit-{sfx}"),
            format!("{who}-cc-{sfx}"),
            format!("{who}-customer-{sfx}"),
        ];
        stack
            .create_tenant_with_tags(
                &slug,
                "shared",
                json!({"business_unit": tags[0], "cost_center": tags[1], "customer": tags[2]}),
            )
            .await;
        stack.without_approvals(&slug).await;
        let shared_name = format!("{who}-floor-{sfx}");
        let dedicated_name = format!("{who}-vault-{sfx}");
        let mut shared =
            json!({"name": shared_name, "stage": "development", "isolation": "shared"});
        let mut dedicated =
            json!({"name": dedicated_name, "stage": "production", "isolation": "dedicated"});
        if let Some((for_shared, for_dedicated)) = blueprints {
            shared["blueprint"] = json!(for_shared);
            shared["blueprint_version"] = json!(1);
            dedicated["blueprint"] = json!(for_dedicated);
            dedicated["blueprint_version"] = json!(1);
        }
        let s = stack.create_environment(&slug, shared).await;
        let d = stack.create_environment(&slug, dedicated).await;
        accepted.push((slug, tags, [(shared_name, s), (dedicated_name, d)]));
    }
    let mut tenants = Vec::new();
    for (slug, tag_values, envs) in accepted {
        let mut ready = Vec::new();
        for (name, body) in envs {
            stack
                .wait_succeeded(&slug, &id_of(&body["job"]), JOB_WITHIN)
                .await;
            let value = stack
                .wait_environment(&slug, &id_of(&body["environment"]), "ready", JOB_WITHIN)
                .await;
            let creds = stack.credentials(&slug, &id_of(&value)).await;
            ready.push(Env {
                tenant: slug.clone(),
                name,
                id: id_of(&value),
                names: stack.names(&value),
                value,
                creds,
            });
        }
        let dedicated = ready.pop().expect("dedicated environment");
        let shared = ready.pop().expect("shared environment");
        tenants.push(Tenant {
            slug,
            tag_values,
            shared,
            dedicated,
        });
    }
    let b = tenants.pop().expect("tenant B");
    let a = tenants.pop().expect("tenant A");
    for env in [&b.shared, &b.dedicated] {
        let mut conn = env.connect();
        run(
            &mut conn,
            "INSERT INTO orders (external_id, customer) VALUES ('b-marker', 'borealis')",
        )
        .unwrap_or_else(|e| panic!("B writes its marker into {}: {e}", env.name));
    }
    World { a, b }
}

#[derive(QueryableByName)]
struct TextRow {
    #[diesel(sql_type = Nullable<Text>)]
    v: Option<String>,
}

/// Runs a statement; the server's error text on failure.
pub fn run(conn: &mut PgConnection, sql: &str) -> Result<usize, String> {
    diesel::sql_query(sql)
        .execute(conn)
        .map_err(|e| e.to_string())
}

/// Runs `sql` inside a transaction that is rolled back whatever happens (for `LOCK TABLE` and
/// anything that must leave no trace when it unexpectedly succeeds).
pub fn in_rolled_back_tx(conn: &mut PgConnection, sql: &str) -> Result<(), String> {
    let mut outcome = Ok(());
    let _ = conn.transaction::<(), diesel::result::Error, _>(|c| {
        outcome = diesel::sql_query(sql)
            .execute(c)
            .map(|_| ())
            .map_err(|e| e.to_string());
        Err(diesel::result::Error::RollbackTransaction)
    });
    outcome
}

/// The `v` column of every row, or the server's error text.
pub fn rows(conn: &mut PgConnection, sql: &str) -> Result<Vec<String>, String> {
    diesel::sql_query(sql)
        .load::<TextRow>(conn)
        .map(|rows| rows.into_iter().map(|r| r.v.unwrap_or_default()).collect())
        .map_err(|e| e.to_string())
}

/// The `v` column of every row; panics with the statement on error.
pub fn values(conn: &mut PgConnection, sql: &str) -> Vec<String> {
    rows(conn, sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The first row's `v`.
pub fn value(conn: &mut PgConnection, sql: &str) -> String {
    values(conn, sql)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no row from {sql}"))
}

/// Whether the server refused for lack of rights (a privilege, ownership or membership check).
pub fn is_refusal(error: &str) -> bool {
    error.contains("permission denied")
        || error.contains("must be owner")
        || error.contains("must be superuser")
        || error.contains("must have admin option")
        || error.contains("must be a member")
}

/// The isolation report of an environment (through the API, as the platform admin).
pub async fn isolation(stack: &Stack, env: &Env) -> Value {
    let (status, report) = stack
        .get(&format!(
            "/v1/tenants/{}/environments/{}/isolation",
            env.tenant, env.id
        ))
        .await;
    assert_eq!(status, 200, "isolation of {}: {report}", env.name);
    report
}

/// The guarantee `layer`/`mechanism` of a report.
pub fn guarantee(report: &Value, layer: &str, mechanism: &str) -> Value {
    report["guarantees"]
        .as_array()
        .expect("guarantees")
        .iter()
        .find(|g| g["layer"] == layer && g["mechanism"] == mechanism)
        .cloned()
        .unwrap_or_else(|| panic!("no {layer}/{mechanism} guarantee in {report}"))
}

/// Every guarantee has the documented shape: a known status and enforcement, evidence, a
/// check time, and for a gap the tier or placement that closes it.
pub fn assert_report_shape(report: &Value) {
    let guarantees = report["guarantees"].as_array().expect("guarantees");
    assert!(!guarantees.is_empty(), "{report}");
    for g in guarantees {
        let status = g["status"].as_str().unwrap_or_default();
        assert!(
            ["verified", "violated", "not_provided"].contains(&status),
            "status of {g}"
        );
        let enforcement = g["enforcement"].as_str().unwrap_or_default();
        assert!(
            ["wall", "default", "none"].contains(&enforcement),
            "enforcement of {g}"
        );
        assert!(
            g["evidence"].as_str().is_some_and(|e| !e.is_empty()),
            "evidence of {g}"
        );
        assert!(g["checked_at"].is_string(), "checked_at of {g}");
        if status == "not_provided" {
            assert!(
                g["provided_by"].as_str().is_some_and(|p| p.len() > 5),
                "a gap says which tier or placement provides it: {g}"
            );
        }
    }
}

/// Waits for a job to finish and returns it.
pub async fn finished(stack: &Stack, tenant: &str, job: &Value) -> Value {
    stack.wait_job(tenant, &id_of(job), JOB_WITHIN).await
}
