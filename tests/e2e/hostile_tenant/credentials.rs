//! Credentials are handed out only once an environment is ready, and never cached.

use super::{JOB_WITHIN, id_of, run, suffix, value};
use crate::helpers::{Options, Stack, admin_conn};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// A shared environment whose only migration waits for an advisory lock the test holds in
/// the pooled database: the apply stops there, with the roles made, until the test lets go.
const GATED_SHARED: (&str, &str) = (
    "gated-shared.toml",
    r#"name = "gated-shared"
version = 1
isolation = "shared"
description = "e2e: a shared environment whose apply waits for the test."

[limits]
connection_limit = 3
statement_timeout_ms = 30000

[[baseline]]
id = "0001_gate"
sql = "SELECT pg_advisory_xact_lock(4242, 8);"
"#,
);

struct Answer {
    status: u16,
    cache_control: Option<String>,
    content_type: Option<String>,
    body: Value,
}

/// GET …/credentials as the tenant's operator, with the headers.
async fn credentials(stack: &Stack, tenant: &str, env: &str) -> Answer {
    let token = stack.operator(tenant).await;
    let response = stack
        .client
        .get(stack.url(&format!(
            "/v1/tenants/{tenant}/environments/{env}/credentials"
        )))
        .bearer_auth(token)
        .send()
        .await
        .expect("credentials request");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (cache_control, content_type) = (header("cache-control"), header("content-type"));
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    Answer {
        status,
        cache_control,
        content_type,
        body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
    }
}

/// What is wrong with the answer for an environment that is not ready.
fn not_ready_problems(answer: &Answer, state: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if answer.status != 409 {
        problems.push(format!(
            "{state}: status {} (want 409): {}",
            answer.status, answer.body
        ));
    }
    if answer.cache_control.as_deref() != Some("no-store") {
        problems.push(format!(
            "{state}: Cache-Control {:?} (want no-store)",
            answer.cache_control
        ));
    }
    if !answer
        .content_type
        .as_deref()
        .is_some_and(|c| c.starts_with("application/problem+json"))
    {
        problems.push(format!("{state}: content type {:?}", answer.content_type));
    }
    let kind = answer.body["type"].as_str().unwrap_or_default();
    let slug = kind.rsplit('/').next().unwrap_or_default();
    if slug.is_empty() || !slug.chars().all(|c| c.is_ascii_lowercase() || c == '-') {
        problems.push(format!(
            "{state}: problem type {kind:?} does not end with a slug"
        ));
    }
    let detail = answer.body["detail"].as_str().unwrap_or_default();
    if !detail.contains("credentials are available once it is ready") || !detail.contains(state) {
        problems.push(format!("{state}: detail {detail:?}"));
    }
    if answer.body.get("password").is_some() || answer.body.get("url").is_some() {
        problems.push(format!("{state}: the password was handed out"));
    }
    problems
}

/// What is wrong with the answer for a ready environment.
fn ready_problems(answer: &Answer, which: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if answer.status != 200 || !answer.body["password"].is_string() {
        problems.push(format!(
            "{which}: status {}: {}",
            answer.status, answer.body
        ));
    }
    if answer.cache_control.as_deref() != Some("no-store") {
        problems.push(format!(
            "{which}: Cache-Control {:?} (want no-store)",
            answer.cache_control
        ));
    }
    problems
}

/// Credentials are refused (409 problem+json, "credentials are available once it is ready",
/// `Cache-Control: no-store`) while an environment is `pending` (no worker yet) and while it is
/// `provisioning` (its roles made, its baseline held at a lock the test owns), and handed out
/// with `Cache-Control: no-store` once it is ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_only_once_ready_and_never_cached() {
    let mut stack = Stack::start(Options {
        no_workers: true,
        blueprints: vec![GATED_SHARED],
        ..Options::default()
    })
    .await;
    let slug = format!("atlas-{}", suffix());
    stack.create_tenant(&slug, "shared").await;

    // Pending: no worker has picked it up.
    let first = stack
        .create_environment(&slug, json!({"name": "floor", "stage": "development"}))
        .await;
    let first_id = id_of(&first["environment"]);
    assert_eq!(
        stack.environment(&slug, &first_id).await["state"],
        "pending"
    );
    let mut problems = not_ready_problems(&credentials(&stack, &slug, &first_id).await, "pending");

    let index = stack.spawn_worker();
    stack.wait_worker_consuming(index).await;
    stack
        .wait_succeeded(&slug, &id_of(&first["job"]), JOB_WITHIN)
        .await;
    stack
        .wait_environment(&slug, &first_id, "ready", JOB_WITHIN)
        .await;
    problems.extend(ready_problems(
        &credentials(&stack, &slug, &first_id).await,
        "ready (default blueprint)",
    ));

    // Provisioning: the apply waits at the gate, after the roles (and, today, the stored
    // password) were made.
    let mut gate = admin_conn(&stack.pooled_database);
    run(&mut gate, "SELECT pg_advisory_lock(4242, 8)").expect("close the gate");
    let second = stack
        .create_environment(
            &slug,
            json!({"name": "gated", "stage": "development", "blueprint": "gated-shared"}),
        )
        .await;
    let second_id = id_of(&second["environment"]);
    let deadline = Instant::now() + JOB_WITHIN;
    loop {
        let waiting = value(
            &mut gate,
            "SELECT count(*)::text AS v FROM pg_catalog.pg_locks WHERE locktype = 'advisory'
               AND NOT granted AND classid = 4242 AND objid = 8
               AND database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())",
        );
        if waiting != "0" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the apply never reached the gate"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        stack.environment(&slug, &second_id).await["state"],
        "provisioning"
    );
    let answer = credentials(&stack, &slug, &second_id).await;
    run(&mut gate, "SELECT pg_advisory_unlock(4242, 8)").expect("open the gate");
    problems.extend(not_ready_problems(&answer, "provisioning"));

    stack
        .wait_succeeded(&slug, &id_of(&second["job"]), JOB_WITHIN)
        .await;
    stack
        .wait_environment(&slug, &second_id, "ready", JOB_WITHIN)
        .await;
    problems.extend(ready_problems(
        &credentials(&stack, &slug, &second_id).await,
        "ready (after the gate)",
    ));
    assert!(problems.is_empty(), "credentials:\n{}", problems.join("\n"));
}
