//! `bulkhead reseal` through the real binary: after a key rotation it moves every stored
//! credential to the current key (rows from before key ids too), is idempotent, and refuses to
//! report success while a row only an absent key opens is left.

use crate::helpers::{admin_conn, execute, server_url};
use bulkhead_core::crypto::Keyring;
use bulkhead_core::store::environments::{self, StoredCredentials};
use std::process::{Command, Stdio};

const OLD: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";
const NEW: &str = "a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5";

/// `bulkhead reseal <args>` on `database_url` with only these keys set: success and output.
fn reseal(database_url: &str, keys: &[(&str, &str)], args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .arg("reseal")
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", database_url)
        .envs(keys.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run bulkhead reseal");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn reseal_moves_every_credential_to_the_current_key() {
    let name = format!("bh_reseal_{}", uuid::Uuid::now_v7().simple());
    let mut admin = admin_conn("postgres");
    execute(
        &mut admin,
        &format!("CREATE DATABASE {name} ALLOW_CONNECTIONS false"),
    );
    execute(
        &mut admin,
        &format!("REVOKE CONNECT, TEMPORARY ON DATABASE {name} FROM PUBLIC"),
    );
    execute(
        &mut admin,
        &format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"),
    );
    let url = format!("{}/{name}?sslmode=disable", server_url());
    let mut conn = admin_conn(&name);
    bulkhead_core::db::run_migrations(&mut conn).expect("migrations");

    // Two environments whose passwords were sealed with the old key, one before key ids.
    let tenant = uuid::Uuid::now_v7();
    execute(
        &mut conn,
        &format!(
            "INSERT INTO tenants (id, slug, name, tier, region, cost_tags) \
             VALUES ('{tenant}', 'reseal-e2e', 'Reseal', 'shared', 'eu-west', '{{}}')"
        ),
    );
    let old = Keyring::from_hex(OLD, None).expect("old key");
    let ids: Vec<uuid::Uuid> = (0..2).map(|_| uuid::Uuid::now_v7()).collect();
    for (n, id) in ids.iter().enumerate() {
        execute(
            &mut conn,
            &format!(
                "INSERT INTO environments (id, tenant_id, name, stage, isolation, blueprint, \
                 blueprint_version, cost_tags) VALUES ('{id}', '{tenant}', 'env-{n}', \
                 'development', 'shared', 'shared-basic', 1, '{{}}')"
            ),
        );
        let sealed = old.seal(&format!("pw-{n}"), id.as_bytes()).expect("seal");
        environments::store_credentials_once(
            &mut conn,
            &StoredCredentials {
                environment_id: *id,
                host: "127.0.0.1".into(),
                port: 5432,
                database: "bh_pool".into(),
                schema: format!("bk_{}", id.simple()),
                username: format!("bk_{}_app", id.simple()),
                nonce: sealed.nonce,
                ciphertext: sealed.ciphertext,
                created_at: chrono::Utc::now(),
                key_id: if n == 0 { None } else { sealed.key_id },
            },
        )
        .expect("store");
    }
    let new = Keyring::from_hex(NEW, None).expect("new key");
    let new_id = new.current().id().to_owned();

    // The old key dropped too early: the rows are reported, left alone, and it fails.
    let (ok, text) = reseal(&url, &[("BULKHEAD_CREDENTIALS_KEY", NEW)], &[]);
    assert!(!ok, "{text}");
    assert!(
        text.contains("2 failed") && text.contains("BULKHEAD_CREDENTIALS_KEYS"),
        "{text}"
    );
    assert!(!text.contains(OLD) && !text.contains(NEW), "{text}");

    // Rotated: new key current, old key for reading; one row per batch.
    let rotated = [
        ("BULKHEAD_CREDENTIALS_KEY", NEW),
        ("BULKHEAD_CREDENTIALS_KEYS", OLD),
    ];
    let (ok, text) = reseal(&url, &rotated, &["--batch-size", "1"]);
    assert!(ok, "{text}");
    assert!(
        text.contains(&format!(
            "resealed 2 credential(s) with key {new_id} in 2 batch(es); 0 already sealed with it; 0 failed; 0 left"
        )),
        "{text}"
    );
    // Again: nothing to do.
    let (ok, text) = reseal(&url, &rotated, &[]);
    assert!(ok, "{text}");
    assert!(
        text.contains("resealed 0 credential(s)") && text.contains("2 already sealed with it"),
        "{text}"
    );
    // The old key gone for good: everything still opens.
    let (ok, text) = reseal(&url, &[("BULKHEAD_CREDENTIALS_KEY", NEW)], &[]);
    assert!(ok, "{text}");
    for (n, id) in ids.iter().enumerate() {
        let row = environments::credentials(&mut conn, *id)
            .expect("read")
            .expect("row");
        assert_eq!(row.key_id.as_deref(), Some(new_id.as_str()));
        let password = new.open(&row.sealed(), id.as_bytes()).expect("open");
        assert_eq!(password, format!("pw-{n}"));
    }

    // The built-in development key is never a reseal target; bad flags are refused.
    let (ok, text) = reseal(&url, &[], &[]);
    assert!(
        !ok && text.contains("BULKHEAD_CREDENTIALS_KEY is not set"),
        "{text}"
    );
    let (ok, text) = reseal(
        &url,
        &[("BULKHEAD_CREDENTIALS_KEY", NEW)],
        &["--batch-size", "0"],
    );
    assert!(!ok && text.contains("--batch-size"), "{text}");

    drop(conn);
    execute(
        &mut admin,
        &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
    );
}
