//! Blueprint upgrades and promotion through the real binaries (issue 11): version 2 of the
//! shipped blueprint (an `inventory` table and index) is refused on staging and production
//! until it was ready on the stage before, then applied in order; each upgraded environment
//! has the new table on its target and reports the new version.

use crate::helpers::{Options, Stack, admin_conn, text1};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

const WITHIN: Duration = Duration::from_secs(60);
const TENANT: &str = "pickwave";

fn id(value: &Value) -> String {
    value["id"].as_str().expect("id").to_owned()
}

async fn upgrade(stack: &Stack, env: &str) -> (u16, Value) {
    stack
        .call(
            Method::POST,
            &format!("/v1/tenants/{TENANT}/environments/{env}/upgrade"),
            &stack.admin,
            Some(json!({"blueprint_version": 2})),
        )
        .await
}

fn has_inventory(stack: &Stack, environment: &Value) -> bool {
    let names = stack.names(environment);
    let mut conn = admin_conn(&stack.pooled_database);
    text1(
        &mut conn,
        "SELECT to_regclass($1)::text AS v",
        &format!("\"{}\".inventory", names.schema),
    )
    .is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_two_is_promoted_development_then_staging_then_production() {
    let stack = Stack::start(Options {
        workers: 1,
        ..Options::default()
    })
    .await;
    stack.create_tenant(TENANT, "shared").await;
    // Production changes here need no approval: this test is about promotion.
    stack.without_approvals(TENANT).await;
    let mut environments = Vec::new();
    for stage in ["development", "staging", "production"] {
        let created = stack
            .create_environment(
                TENANT,
                json!({"name": stage, "stage": stage, "blueprint_version": 1}),
            )
            .await;
        stack
            .wait_succeeded(TENANT, &id(&created["job"]), WITHIN)
            .await;
        environments.push(created["environment"].clone());
    }
    let [dev, staging, prod] = [&environments[0], &environments[1], &environments[2]];
    assert_eq!(dev["blueprint_version"], 1, "{dev}");
    assert!(!has_inventory(&stack, dev), "version 1 has no inventory");

    // Refused before the stage before had it ready, naming that stage.
    for (env, before) in [(prod, "staging"), (staging, "development")] {
        let (status, body) = upgrade(&stack, &id(env)).await;
        assert_eq!(status, 409, "{body}");
        assert!(
            body["detail"].as_str().is_some_and(|d| d.contains(before)),
            "{body}"
        );
    }
    // Development first (no evidence needed), then each next stage.
    for env in [dev, staging, prod] {
        let (status, body) = upgrade(&stack, &id(env)).await;
        assert_eq!(status, 202, "{body}");
        assert_eq!(body["job"]["blueprint_version"], 2, "{body}");
        stack
            .wait_succeeded(TENANT, &id(&body["job"]), WITHIN)
            .await;
        let now = stack
            .wait_environment(TENANT, &id(env), "ready", WITHIN)
            .await;
        assert_eq!(now["blueprint_version"], 2, "{now}");
        assert!(
            has_inventory(&stack, env),
            "no inventory table after the upgrade: {now}"
        );
    }
    // A drift check finds the upgraded environment as its version says.
    let (status, body) = stack
        .post_empty(&format!(
            "/v1/tenants/{TENANT}/environments/{}/drift-check",
            id(prod)
        ))
        .await;
    assert_eq!(status, 202, "{body}");
    let checked = stack
        .wait_succeeded(TENANT, &id(&body["job"]), WITHIN)
        .await;
    assert_eq!(checked["plan"]["actions"], json!([]), "{checked}");
    for env in [dev, staging, prod] {
        let (status, body) = stack
            .delete(&format!("/v1/tenants/{TENANT}/environments/{}", id(env)))
            .await;
        assert_eq!(status, 202, "{body}");
        let gone = stack
            .wait_environment(TENANT, &id(env), "destroyed", WITHIN)
            .await;
        assert!(
            stack.leftovers(&gone).is_empty(),
            "{:?}",
            stack.leftovers(&gone)
        );
    }
}
