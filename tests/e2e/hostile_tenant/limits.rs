//! Limits as a hostile tenant meets them: walls (connection limit, temp_file_limit) hold,
//! defaults (statement_timeout, work_mem, idle_in_transaction_session_timeout) lift with `SET`,
//! and the isolation view says which is which.

use super::{
    Env, JOB_WITHIN, assert_report_shape, guarantee, id_of, isolation, run, suffix, value,
};
use crate::helpers::{Options, Stack, admin_conn, connect_as};
use serde_json::json;

/// Small limits, so a test can reach them: 3 connections, 500 ms statements, 1 MB of temp
/// files, 1 MB work_mem, 5 s idle in a transaction.
const LIMITS_SHARED: (&str, &str) = (
    "limits-shared.toml",
    r#"name = "limits-shared"
version = 1
isolation = "shared"
description = "e2e: a shared environment with limits small enough to reach."

[limits]
connection_limit = 3
statement_timeout_ms = 500
idle_in_transaction_session_timeout_ms = 5000
temp_file_limit_kb = 1024
work_mem_kb = 1024
"#,
);

/// A sort that needs far more than 1 MB of temporary files once work_mem is small.
const BIG_SORT: &str = "SELECT count(*) FROM (SELECT md5(g::text) AS m FROM generate_series(1, 200000) AS g \
     ORDER BY 1) AS sorted";

/// Waits until the role has at most `sessions` sessions on the server (a closed session's
/// backend may take a moment to exit).
async fn wait_no_other_sessions(role: &str, sessions: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let mut server = admin_conn("postgres");
    loop {
        let now: usize = value(
            &mut server,
            &format!("SELECT count(*)::text AS v FROM pg_catalog.pg_stat_activity WHERE usename = '{role}'"),
        )
        .parse()
        .expect("a count");
        if now <= sessions {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{role} still has {now} sessions"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A tenant on `limits-shared`: the role carries every limit of the blueprint; the 4th
/// connection is refused ("too many connections for role"); a big sort after `SET work_mem =
/// '64kB'` fails with "temporary file size exceeds temp_file_limit" and `SET temp_file_limit`
/// is refused; `pg_sleep(1)` is canceled by the 500 ms statement_timeout until A runs `SET
/// statement_timeout = 0`, after which it completes. The isolation view: role_connection_limit
/// and temp_file_limit verified as walls, resource_limits verified as a default, and nothing
/// about statement_timeout claimed as a wall.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_hold_where_they_are_walls_and_say_so_where_they_are_defaults() {
    let stack = Stack::start(Options {
        blueprints: vec![LIMITS_SHARED],
        ..Options::default()
    })
    .await;
    let slug = format!("atlas-{}", suffix());
    stack.create_tenant(&slug, "shared").await;
    let accepted = stack
        .create_environment(
            &slug,
            json!({"name": "floor", "stage": "development", "blueprint": "limits-shared"}),
        )
        .await;
    stack
        .wait_succeeded(&slug, &id_of(&accepted["job"]), JOB_WITHIN)
        .await;
    let value_env = stack
        .wait_environment(&slug, &id_of(&accepted["environment"]), "ready", JOB_WITHIN)
        .await;
    let env = Env {
        tenant: slug.clone(),
        name: "floor".to_owned(),
        id: id_of(&value_env),
        names: stack.names(&value_env),
        creds: stack.credentials(&slug, &id_of(&value_env)).await,
        value: value_env,
    };

    // The worker's probe sessions count against the limit while they last: wait them out.
    wait_no_other_sessions(&env.names.app_role, 0).await;

    // The role carries every limit of the blueprint.
    let mut conn = env.connect();
    for (setting, want) in [
        ("statement_timeout", "500ms"),
        ("idle_in_transaction_session_timeout", "5s"),
        ("temp_file_limit", "1MB"),
        ("work_mem", "1MB"),
    ] {
        assert_eq!(
            value(
                &mut conn,
                &format!("SELECT current_setting('{setting}') AS v")
            ),
            want,
            "{setting} of A's role"
        );
    }

    // The connection limit is a wall: three sessions, and the fourth is refused.
    let mut held = vec![conn];
    while held.len() < 3 {
        held.push(env.connect());
    }
    let refused = connect_as(&env.creds)
        .map(|_| ())
        .expect_err("a 4th connection beyond the limit of 3");
    assert!(
        refused.contains("too many connections for role"),
        "{refused}"
    );
    let mut conn = held.pop().expect("a session");
    drop(held);

    // temp_file_limit is a wall: A can shrink work_mem, not lift the temp file cap.
    run(&mut conn, "SET statement_timeout = '5min'").expect("A may raise its statement timeout");
    run(&mut conn, "SET work_mem = '64kB'").expect("work_mem is A's to set");
    let error = run(&mut conn, BIG_SORT).expect_err("the sort must hit temp_file_limit");
    assert!(
        error.contains("temporary file size exceeds temp_file_limit"),
        "{error}"
    );
    for lift in [
        "SET temp_file_limit = -1".to_owned(),
        "SET temp_file_limit = '10GB'".to_owned(),
        format!("ALTER ROLE {} SET temp_file_limit = -1", env.names.app_role),
    ] {
        let error = run(&mut conn, &lift).expect_err("only a superuser changes temp_file_limit");
        assert!(
            error.contains("permission denied to set parameter \"temp_file_limit\""),
            "{lift}: {error}"
        );
    }

    // statement_timeout is a default: A lifts it for its session.
    let mut fresh = env.connect();
    let error = run(&mut fresh, "SELECT pg_sleep(1)").expect_err("500 ms statement timeout");
    assert!(
        error.contains("canceling statement due to statement timeout"),
        "{error}"
    );
    run(&mut fresh, "SET statement_timeout = 0").expect("A may lift its statement timeout");
    run(&mut fresh, "SELECT pg_sleep(1)").expect("no timeout once A lifted it");

    // The view says which is which.
    let report = isolation(&stack, &env).await;
    assert_report_shape(&report);
    for (mechanism, enforcement) in [
        ("role_connection_limit", "wall"),
        ("temp_file_limit", "wall"),
        ("resource_limits", "default"),
    ] {
        let g = guarantee(&report, "compute", mechanism);
        assert_eq!(g["status"], "verified", "{g}");
        assert_eq!(g["enforcement"], enforcement, "{g}");
    }
    for g in report["guarantees"].as_array().expect("guarantees") {
        let mechanism = g["mechanism"].as_str().unwrap_or_default();
        if ["statement_timeout", "work_mem", "idle_in_transaction"]
            .iter()
            .any(|s| mechanism.contains(s))
        {
            assert_ne!(
                g["enforcement"], "wall",
                "a setting A can SET is no wall: {g}"
            );
        }
    }
}
