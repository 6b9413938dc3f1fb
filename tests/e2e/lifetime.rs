//! Environments with a TTL through the real binaries: one created with `ttl_hours` whose expiry
//! is moved into the past (as time would) is destroyed by the workers' sweep, leaves nothing on
//! the target and is audited `environment.expired` once; its neighbour without a TTL stays.

use crate::helpers::{Options, Stack, execute, texts};
use serde_json::{Value, json};
use std::time::Duration;

const WITHIN: Duration = Duration::from_secs(60);

fn id(value: &Value) -> String {
    value["id"].as_str().expect("id").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_environment_is_destroyed_by_the_workers() {
    let stack = Stack::start(Options {
        workers: 2,
        ..Options::default()
    })
    .await;
    stack.create_tenant("preview", "shared").await;
    let ephemeral = stack
        .create_environment(
            "preview",
            json!({"name": "pr-42", "stage": "development", "ttl_hours": 24}),
        )
        .await;
    let standing = stack
        .create_environment("preview", json!({"name": "main", "stage": "staging"}))
        .await;
    for accepted in [&ephemeral, &standing] {
        stack
            .wait_succeeded("preview", &id(&accepted["job"]), WITHIN)
            .await;
    }
    let env = stack
        .wait_environment("preview", &id(&ephemeral["environment"]), "ready", WITHIN)
        .await;
    assert!(env["expires_at"].is_string(), "{env}");
    assert!(!stack.leftovers(&env).is_empty(), "not provisioned: {env}");

    // A day passes (for this environment only).
    let mut conn = stack.control_db();
    execute(
        &mut conn,
        &format!(
            "UPDATE environments SET expires_at = now() - interval '1 second' WHERE id = '{}'",
            id(&env)
        ),
    );
    let gone = stack
        .wait_environment("preview", &id(&env), "destroyed", WITHIN)
        .await;
    assert!(
        stack.leftovers(&gone).is_empty(),
        "left on the target: {:?}",
        stack.leftovers(&gone)
    );
    let expired = texts(
        &mut conn,
        &format!(
            "SELECT actor AS v FROM audit_events WHERE action = 'environment.expired' \
             AND target = 'environment/{}'",
            id(&env)
        ),
    );
    assert_eq!(expired.len(), 1, "audited once: {expired:?}");
    assert!(
        expired[0]
            .as_deref()
            .is_some_and(|a| a.starts_with("worker:")),
        "{expired:?}"
    );
    // One destroy job, queued by no person.
    let destroys = texts(
        &mut conn,
        &format!(
            "SELECT state AS v FROM jobs WHERE environment_id = '{0}' AND operation = 'destroy' \
             AND requested_by = (SELECT created_by FROM environments WHERE id = '{0}')",
            id(&env)
        ),
    );
    assert_eq!(destroys, [Some("succeeded".to_owned())]);
    // The neighbour without a TTL still stands.
    let main = stack.environment("preview", "main").await;
    assert_eq!(main["state"], "ready", "{main}");
    assert!(main["expires_at"].is_null(), "{main}");
}
