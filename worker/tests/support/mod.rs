//! The executor tests' fixture: an executor on the real local server with its own pooled
//! database, environments it removes again, and small catalog queries.
#![allow(dead_code)]

use bulkhead_core::blueprint::BlueprintCatalog;
use bulkhead_core::domain::{Isolation, Stage};
use bulkhead_core::guarantees::GuaranteeStatus;
use bulkhead_core::plan::{EnvironmentSpec, Plan};
use bulkhead_worker::executor::{Endpoint, ExecError, GuaranteeCheck, PostgresExecutor, Targets};
use diesel::sql_types::{BigInt, Text};
use diesel::{Connection, PgConnection, QueryableByName, RunQueryDsl};
use std::collections::BTreeMap;
use uuid::Uuid;

pub fn server_url() -> String {
    std::env::var("TEST_DATABASE_SERVER")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
        .trim_end_matches('/')
        .to_owned()
}

pub fn endpoint() -> Endpoint {
    Endpoint::from_url(&server_url()).expect("TEST_DATABASE_SERVER is a URL")
}

pub struct Fixture {
    pub exec: PostgresExecutor,
    pub pooled: String,
    pub made: Vec<EnvironmentSpec>,
}

impl Fixture {
    pub fn new() -> Self {
        Self::with_spares(0)
    }

    pub fn with_spares(spares: usize) -> Self {
        let pooled = format!("bh_pool_{}", Uuid::now_v7().simple());
        let admin = format!("{}/postgres", server_url());
        let exec = PostgresExecutor::new(Targets {
            shared_admin_url: admin.clone(),
            pooled_database: pooled.clone(),
            dedicated_admin_url: admin,
            shared_endpoint: endpoint(),
            dedicated_endpoint: endpoint(),
        })
        .with_spare_databases(spares);
        exec.prepare().expect("prepare");
        Self {
            exec,
            pooled,
            made: Vec::new(),
        }
    }

    pub fn spec(&mut self, isolation: Isolation) -> EnvironmentSpec {
        let catalog = BlueprintCatalog::builtin().expect("blueprints");
        let spec = EnvironmentSpec {
            id: Uuid::now_v7(),
            tenant_id: Uuid::now_v7(),
            isolation,
            stage: Stage::Development,
            // Version 1: the tests that change a blueprint build their own next version on it.
            blueprint: catalog
                .default_for(isolation)
                .and_then(|latest| catalog.get(&latest.name, Some(1)))
                .expect("default blueprint, version 1")
                .clone(),
            cost_tags: BTreeMap::from([
                ("cost_center".to_owned(), "cc-1042".to_owned()),
                ("team".to_owned(), "o'brien's \"wms\"".to_owned()),
            ]),
            stopped: false,
        };
        self.made.push(spec.clone());
        spec
    }

    pub fn admin(&self, database: &str) -> PgConnection {
        PgConnection::establish(&format!("{}/{database}", server_url())).expect("admin connection")
    }

    pub fn apply(
        &self,
        spec: &EnvironmentSpec,
        plan: &Plan,
        password: &str,
    ) -> Result<(), ExecError> {
        self.exec.apply(spec, plan, password, &mut |_| Ok(()))
    }

    /// plan → apply → the next plan is empty.
    pub fn provision(&self, spec: &EnvironmentSpec, password: &str) {
        let plan = self.exec.plan(spec).expect("plan");
        self.apply(spec, &plan, password).expect("apply");
        let again = self.exec.plan(spec).expect("re-plan");
        assert!(again.is_empty(), "plan after apply: {:?}", again.summary());
    }

    pub fn destroy(&self, spec: &EnvironmentSpec) {
        let plan = self.exec.destroy_plan(spec).expect("destroy plan");
        self.apply(spec, &plan, "unused").expect("destroy");
        assert!(
            self.exec
                .destroy_plan(spec)
                .expect("destroy plan")
                .is_empty()
        );
    }

    pub fn app_url(&self, spec: &EnvironmentSpec, password: &str) -> String {
        let info = self.exec.connection_info(spec);
        format!(
            "postgres://{}:{password}@{}:{}/{}",
            info.username, info.host, info.port, info.database
        )
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for spec in &self.made {
            let result = self
                .exec
                .destroy_plan(spec)
                .and_then(|plan| self.exec.apply(spec, &plan, "unused", &mut |_| Ok(())));
            if let Err(e) = result {
                eprintln!("cleanup of {} failed: {e}", spec.id);
            }
        }
        // Fence rows outlive their environments (tombstones); a dedicated environment's row on
        // the maintenance database would outlive the test.
        let ids: Vec<String> = self.made.iter().map(|s| format!("'{}'", s.id)).collect();
        if !ids.is_empty() {
            let mut maintenance = self.admin("postgres");
            let _ = diesel::connection::SimpleConnection::batch_execute(
                &mut maintenance,
                &format!(
                    "DO $$BEGIN IF to_regclass('bulkhead_meta.fence') IS NOT NULL THEN \
                     DELETE FROM bulkhead_meta.fence WHERE environment_id IN ({}); END IF; END$$",
                    ids.join(", ")
                ),
            );
        }
        if let Err(e) = self.exec.drop_prepared() {
            eprintln!("cleanup of {} failed: {e}", self.pooled);
        }
    }
}

pub fn password() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

#[derive(QueryableByName)]
pub struct Count {
    #[diesel(sql_type = BigInt)]
    pub count: i64,
}

#[derive(QueryableByName)]
pub struct TextValue {
    #[diesel(sql_type = Text)]
    pub value: String,
}

pub fn count(conn: &mut PgConnection, query: &str, bind: &str) -> i64 {
    diesel::sql_query(query)
        .bind::<Text, _>(bind)
        .get_result::<Count>(conn)
        .expect("count query")
        .count
}

/// How many roles, schemas and databases of the environment exist (by its id).
pub fn leftovers(fx: &Fixture, spec: &EnvironmentSpec) -> (i64, i64, i64) {
    let prefix = format!("bk_{}%", spec.id.simple());
    let mut pooled = fx.admin(&fx.pooled);
    let roles = count(
        &mut pooled,
        "SELECT count(*) AS count FROM pg_roles WHERE rolname LIKE $1",
        &prefix,
    );
    let schemas = count(
        &mut pooled,
        "SELECT count(*) AS count FROM pg_namespace WHERE nspname LIKE $1",
        &prefix,
    );
    let databases = count(
        &mut pooled,
        "SELECT count(*) AS count FROM pg_database WHERE datname LIKE $1",
        &prefix,
    );
    (roles, schemas, databases)
}

pub fn all_verified(checks: &[GuaranteeCheck]) {
    for check in checks {
        assert_ne!(check.status, GuaranteeStatus::Violated, "{check:?}");
        assert!(!check.evidence.is_empty());
    }
}

pub fn has(checks: &[GuaranteeCheck], layer: &str, mechanism: &str) -> bool {
    checks
        .iter()
        .any(|c| c.layer == layer && c.mechanism == mechanism)
}

pub fn error_text(result: diesel::QueryResult<usize>) -> String {
    result.expect_err("must be refused").to_string()
}

/// Whether a SCRAM-SHA-256 verifier (a `rolpassword`) accepts `password`: plays the server's
/// side of a login (RFC 5802, as PostgreSQL does it) against postgres-protocol's client. The
/// local test server trusts local connections, so connecting proves no password.
pub fn scram_accepts(verifier: &str, password: &str) -> bool {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use hmac::{Hmac, Mac};
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
    use sha2::{Digest, Sha256};

    let hmac = |key: &[u8], message: &str| {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
        mac.update(message.as_bytes());
        mac.finalize().into_bytes().to_vec()
    };
    let exchange = || -> Option<bool> {
        let rest = verifier.strip_prefix("SCRAM-SHA-256$")?;
        let (params, keys) = rest.split_once('$')?;
        let (iterations, salt) = params.split_once(':')?;
        let (stored_key, server_key) = keys.split_once(':')?;
        let (stored_key, server_key) = (
            STANDARD.decode(stored_key).ok()?,
            STANDARD.decode(server_key).ok()?,
        );
        let mut client = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
        let first = String::from_utf8(client.message().to_vec()).ok()?;
        let first_bare = first.strip_prefix("n,,")?;
        let client_nonce = first_bare.strip_prefix("n=,r=")?;
        let server_first = format!("r={client_nonce}server-nonce,s={salt},i={iterations}");
        client.update(server_first.as_bytes()).ok()?;
        let last = String::from_utf8(client.message().to_vec()).ok()?;
        let (without_proof, proof) = last.rsplit_once(",p=")?;
        let auth_message = format!("{first_bare},{server_first},{without_proof}");
        let signature = hmac(&stored_key, &auth_message);
        let client_key: Vec<u8> = STANDARD
            .decode(proof)
            .ok()?
            .iter()
            .zip(&signature)
            .map(|(p, s)| p ^ s)
            .collect();
        if Sha256::digest(&client_key).as_slice() != stored_key.as_slice() {
            return Some(false);
        }
        let server_signature = STANDARD.encode(hmac(&server_key, &auth_message));
        Some(
            client
                .finish(format!("v={server_signature}").as_bytes())
                .is_ok(),
        )
    };
    exchange().unwrap_or(false)
}
