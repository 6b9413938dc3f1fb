//! Start-up through the real binary: what stops it says which variable and what to do.

use crate::helpers::server_url;
use std::process::{Command, Stdio};

/// Runs `bulkhead <command>` with only `env` set (plus PATH) and returns its exit success and
/// everything it printed. Each case fails before it serves or consumes anything.
fn start(command: &str, env: &[(&str, &str)]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .arg(command)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run bulkhead");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

#[test]
fn api_and_worker_refuse_the_built_in_credentials_key() {
    for command in ["api", "worker"] {
        let (ok, text) = start(command, &[("DATABASE_URL", "postgres://127.0.0.1:1/none")]);
        assert!(!ok, "{command} started without a credentials key: {text}");
        assert!(
            text.contains("BULKHEAD_CREDENTIALS_KEY is not set")
                && text.contains("openssl rand -hex 32"),
            "{command}: {text}"
        );
    }
}

#[test]
fn a_malformed_value_names_the_variable() {
    let (ok, text) = start(
        "api",
        &[
            ("BULKHEAD_CREDENTIALS_KEY", KEY),
            ("BULKHEAD_LEASE_SECONDS", "soon"),
        ],
    );
    assert!(!ok, "{text}");
    assert!(text.contains("BULKHEAD_LEASE_SECONDS"), "{text}");
    assert_eq!(
        text.trim().lines().count(),
        1,
        "one line that names the variable: {text}"
    );

    let (ok, text) = start("api", &[("BULKHEAD_CREDENTIALS_KEY", "abc")]);
    assert!(!ok, "{text}");
    assert!(text.contains("BULKHEAD_CREDENTIALS_KEY"), "{text}");
}

#[test]
fn postgres_unreachable_is_a_message_not_a_panic() {
    let (ok, text) = start(
        "migrate",
        &[("DATABASE_URL", "postgres://postgres@127.0.0.1:1/bulkhead")],
    );
    assert!(!ok, "{text}");
    assert!(
        text.contains("DATABASE_URL: cannot reach PostgreSQL at"),
        "{text}"
    );
    assert!(!text.contains("panicked"), "{text}");
    // The server is there but the database is not: the same kind of message.
    let missing = format!(
        "{}/bh_missing_{}",
        server_url(),
        uuid::Uuid::now_v7().simple()
    );
    let (ok, text) = start("migrate", &[("DATABASE_URL", &missing)]);
    assert!(!ok, "{text}");
    assert!(text.contains("DATABASE_URL"), "{text}");
    assert!(!text.contains("panicked"), "{text}");
}

#[test]
fn api_refuses_to_start_without_a_way_to_mail_invitations() {
    let (ok, text) = start(
        "api",
        &[
            ("BULKHEAD_CREDENTIALS_KEY", KEY),
            ("DATABASE_URL", "postgres://postgres@127.0.0.1:1/bulkhead"),
        ],
    );
    assert!(!ok, "{text}");
    assert!(
        text.contains("BULKHEAD_SMTP_URL") && text.contains("BULKHEAD_MAIL=log"),
        "{text}"
    );
    // Choosing the log explicitly gets past it (to the next problem: no database here).
    let (ok, text) = start(
        "api",
        &[
            ("BULKHEAD_CREDENTIALS_KEY", KEY),
            ("BULKHEAD_MAIL", "log"),
            ("DATABASE_URL", "postgres://postgres@127.0.0.1:1/bulkhead"),
        ],
    );
    assert!(!ok, "{text}");
    assert!(
        text.contains("DATABASE_URL: cannot reach PostgreSQL"),
        "{text}"
    );
    for (var, value) in [
        ("BULKHEAD_MAIL", "pigeon"),
        ("BULKHEAD_SMTP_URL", "http://mail"),
    ] {
        let (ok, text) = start("api", &[("BULKHEAD_CREDENTIALS_KEY", KEY), (var, value)]);
        assert!(!ok, "{text}");
        assert!(text.contains(var), "{var}: {text}");
    }
}
