//! Rotating the credentials key against the real server (`TEST_DATABASE_SERVER`, default
//! `postgres://postgres@127.0.0.1:5432`): rows sealed with an older key, or before key ids,
//! are re-sealed with the current key, after which the older key can go. Each test has its own
//! migrated database and drops it.

use bulkhead_core::crypto::{Keyring, Sealed};
use bulkhead_core::db::run_migrations;
use bulkhead_core::reseal::reseal_all;
use bulkhead_core::store::environments::{self, StoredCredentials};
use diesel::{Connection, PgConnection, RunQueryDsl};
use uuid::Uuid;

const OLD: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const NEW: &str = "2222222222222222222222222222222222222222222222222222222222222222";
const LOST: &str = "3333333333333333333333333333333333333333333333333333333333333333";

fn server_url() -> String {
    std::env::var("TEST_DATABASE_SERVER")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
        .trim_end_matches('/')
        .to_owned()
}

/// A migrated database made for one test, dropped when it ends.
struct TestDb {
    name: String,
}

impl TestDb {
    fn new() -> Self {
        let name = format!("bh_reseal_{}", Uuid::now_v7().simple());
        let mut admin = Self::admin();
        for statement in [
            format!("CREATE DATABASE {name} ALLOW_CONNECTIONS false"),
            format!("REVOKE CONNECT, TEMPORARY ON DATABASE {name} FROM PUBLIC"),
            format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"),
        ] {
            diesel::sql_query(statement)
                .execute(&mut admin)
                .expect("create the test database");
        }
        let db = Self { name };
        run_migrations(&mut db.connect()).expect("migrations");
        db
    }

    fn admin() -> PgConnection {
        PgConnection::establish(&format!("{}/postgres?sslmode=disable", server_url()))
            .expect("connect to the server")
    }

    fn connect(&self) -> PgConnection {
        PgConnection::establish(&format!("{}/{}?sslmode=disable", server_url(), self.name))
            .expect("connect to the test database")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = diesel::sql_query(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&mut Self::admin());
    }
}

fn keys(current: &str, older: &[&str]) -> Keyring {
    Keyring::from_hex(current, Some(&older.join(","))).expect("keys")
}

/// A tenant with `count` environments; returns their ids.
fn environments(conn: &mut PgConnection, count: usize) -> Vec<Uuid> {
    let tenant = Uuid::now_v7();
    diesel::sql_query(format!(
        "INSERT INTO tenants (id, slug, name, tier, region, cost_tags) \
         VALUES ('{tenant}', 't-{}', 'T', 'shared', 'eu-west', '{{}}')",
        tenant.simple()
    ))
    .execute(conn)
    .expect("tenant");
    (0..count)
        .map(|n| {
            let id = Uuid::now_v7();
            diesel::sql_query(format!(
                "INSERT INTO environments (id, tenant_id, name, stage, isolation, blueprint, \
                 blueprint_version, cost_tags) VALUES ('{id}', '{tenant}', 'env-{n}', \
                 'development', 'shared', 'shared-basic', 1, '{{}}')"
            ))
            .execute(conn)
            .expect("environment");
            id
        })
        .collect()
}

fn store(conn: &mut PgConnection, environment_id: Uuid, sealed: Sealed) {
    environments::store_credentials_once(
        conn,
        &StoredCredentials {
            environment_id,
            host: "::1".into(),
            port: 5432,
            database: "bh_pool".into(),
            schema: format!("bk_{}", environment_id.simple()),
            username: format!("bk_{}_app", environment_id.simple()),
            nonce: sealed.nonce,
            ciphertext: sealed.ciphertext,
            created_at: chrono::Utc::now(),
            key_id: sealed.key_id,
        },
    )
    .expect("store credentials");
}

fn password_of(id: Uuid) -> String {
    format!("pw-{}", id.simple())
}

fn stored(conn: &mut PgConnection, id: Uuid) -> StoredCredentials {
    environments::credentials(conn, id)
        .expect("read")
        .expect("credentials")
}

#[test]
fn rotation_reseals_every_row_then_the_old_key_can_go() {
    let db = TestDb::new();
    let mut conn = db.connect();
    let ids = environments(&mut conn, 5);
    let old = keys(OLD, &[]);
    for (n, &id) in ids.iter().enumerate() {
        let mut sealed = old.seal(&password_of(id), id.as_bytes()).expect("seal");
        if n == 0 {
            // A row written before key ids existed.
            sealed.key_id = None;
        }
        store(&mut conn, id, sealed);
    }

    // The new key is current, the old one may still read: rows open before the reseal.
    let rotated = keys(NEW, &[OLD]);
    for &id in &ids {
        let row = stored(&mut conn, id);
        let opened = rotated.open(&row.sealed(), id.as_bytes()).expect("open");
        assert_eq!(opened, password_of(id));
    }
    let report = reseal_all(&mut conn, &rotated, 2).expect("reseal");
    assert_eq!(
        (
            report.resealed,
            report.batches,
            report.already_current,
            report.remaining
        ),
        (5, 3, 0, 0),
        "{report:?}"
    );
    assert!(report.failed.is_empty(), "{report:?}");

    // Idempotent: a second run finds nothing to do.
    let again = reseal_all(&mut conn, &rotated, 2).expect("reseal again");
    assert_eq!(
        (again.resealed, again.batches, again.already_current),
        (0, 0, 5),
        "{again:?}"
    );

    // The old key removed: every credential still opens, with the same password, and names
    // the new key; the rest of the row is as it was.
    let new_only = keys(NEW, &[]);
    for &id in &ids {
        let row = stored(&mut conn, id);
        assert_eq!(row.key_id.as_deref(), Some(new_only.current().id()));
        assert_eq!(row.host, "::1");
        let opened = new_only.open(&row.sealed(), id.as_bytes()).expect("open");
        assert_eq!(opened, password_of(id));
    }
}

#[test]
fn a_row_no_key_opens_is_reported_and_left_alone() {
    let db = TestDb::new();
    let mut conn = db.connect();
    let ids = environments(&mut conn, 3);
    let lost = keys(LOST, &[]);
    let old = keys(OLD, &[]);
    store(
        &mut conn,
        ids[0],
        lost.seal("lost", ids[0].as_bytes()).expect("seal"),
    );
    for &id in &ids[1..] {
        store(
            &mut conn,
            id,
            old.seal(&password_of(id), id.as_bytes()).expect("seal"),
        );
    }
    let before = stored(&mut conn, ids[0]);

    let report = reseal_all(&mut conn, &keys(NEW, &[OLD]), 100).expect("reseal");
    assert_eq!((report.resealed, report.remaining), (2, 1), "{report:?}");
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert_eq!(report.failed[0].0, ids[0]);
    assert!(
        report.failed[0].1.contains(lost.current().id()),
        "the reason names the missing key: {report:?}"
    );
    let after = stored(&mut conn, ids[0]);
    assert_eq!(
        (after.key_id, after.nonce, after.ciphertext),
        (before.key_id, before.nonce, before.ciphertext)
    );
    // With the missing key back among the older ones, the next run finishes the job.
    let report = reseal_all(&mut conn, &keys(NEW, &[OLD, LOST]), 100).expect("reseal");
    assert_eq!((report.resealed, report.remaining), (1, 0), "{report:?}");
}
