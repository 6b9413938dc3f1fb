//! Drift checks on a schedule, through the real binaries (issue 11): a grant changed and an
//! index dropped behind Bulkhead's back are found by the scheduled check on both stages; the
//! development environment (policy: repair) gets a repair job and is ready again with both
//! restored, the production one (policy: report) stays `drifted` and shows both differences at
//! `GET …/drift`.

use crate::helpers::{Options, Stack, admin_conn, execute, texts};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const WITHIN: Duration = Duration::from_secs(60);
const TENANT: &str = "coldstore";

fn id(value: &Value) -> String {
    value["id"].as_str().expect("id").to_owned()
}

/// Waits until the control database has a job of `operation` queued by the scheduler for the
/// environment; returns its id.
async fn scheduled_job(stack: &Stack, environment: &str, operation: &str) -> String {
    let deadline = Instant::now() + WITHIN;
    let mut conn = stack.control_db();
    loop {
        let found = texts(
            &mut conn,
            &format!(
                "SELECT id::text AS v FROM jobs WHERE environment_id = '{environment}' \
                 AND operation = '{operation}' AND scheduled ORDER BY created_at"
            ),
        );
        if let Some(Some(job)) = found.into_iter().next() {
            return job;
        }
        assert!(
            Instant::now() < deadline,
            "no scheduled {operation} for {environment}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn has_index(stack: &Stack, environment: &Value) -> bool {
    let names = stack.names(environment);
    let mut pooled = admin_conn(&stack.pooled_database);
    texts(
        &mut pooled,
        &format!(
            "SELECT indexname::text AS v FROM pg_indexes WHERE schemaname = '{}' \
             AND indexname = 'order_lines_sku'",
            names.schema
        ),
    )
    .len()
        == 1
}

fn may_create(stack: &Stack, environment: &Value) -> bool {
    let names = stack.names(environment);
    let mut pooled = admin_conn(&stack.pooled_database);
    texts(
        &mut pooled,
        &format!(
            "SELECT has_schema_privilege('{}', '{}', 'CREATE')::text AS v",
            names.app_role, names.schema
        ),
    ) == vec![Some("true".to_owned())]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_checks_repair_development_and_report_production() {
    let stack = Stack::start(Options {
        workers: 1,
        ..Options::default()
    })
    .await;
    stack.create_tenant(TENANT, "shared").await;
    stack.without_approvals(TENANT).await;
    let mut environments = Vec::new();
    for stage in ["development", "production"] {
        let created = stack
            .create_environment(TENANT, json!({"name": stage, "stage": stage}))
            .await;
        stack
            .wait_succeeded(TENANT, &id(&created["job"]), WITHIN)
            .await;
        let ready = stack
            .wait_environment(TENANT, &id(&created["environment"]), "ready", WITHIN)
            .await;
        // The first check is a quarter to a whole interval away: nothing runs by itself now.
        let (_, report) = stack
            .get(&format!(
                "/v1/tenants/{TENANT}/environments/{}/drift",
                id(&ready)
            ))
            .await;
        assert!(report["job_id"].is_null(), "{report}");
        assert!(report["next_check_at"].is_string(), "{report}");
        environments.push(ready);
    }
    let (dev, prod) = (&environments[0], &environments[1]);

    // Behind Bulkhead's back: the app roles lose CREATE on their schemas, and an index of the
    // baseline is dropped.
    let mut pooled = admin_conn(&stack.pooled_database);
    for env in [dev, prod] {
        let names = stack.names(env);
        execute(
            &mut pooled,
            &format!(
                "REVOKE CREATE ON SCHEMA \"{}\" FROM \"{}\"",
                names.schema, names.app_role
            ),
        );
        execute(
            &mut pooled,
            &format!("DROP INDEX \"{}\".order_lines_sku", names.schema),
        );
        assert!(!may_create(&stack, env));
        assert!(!has_index(&stack, env));
    }
    // Their checks come due (as time would make them).
    let mut conn = stack.control_db();
    execute(
        &mut conn,
        &format!(
            "UPDATE environments SET drift_check_due_at = now() - interval '1 second' \
             WHERE id IN ('{}', '{}')",
            id(dev),
            id(prod)
        ),
    );

    // Development repairs: the scheduled check finds it, a repair job restores the grant.
    let check = scheduled_job(&stack, &id(dev), "drift_check").await;
    stack.wait_succeeded(TENANT, &check, WITHIN).await;
    let repair = scheduled_job(&stack, &id(dev), "apply").await;
    let repaired = stack.wait_succeeded(TENANT, &repair, WITHIN).await;
    assert_eq!(
        repaired["reason"], "repair the drift a scheduled check found",
        "{repaired}"
    );
    stack
        .wait_environment(TENANT, &id(dev), "ready", WITHIN)
        .await;
    assert!(may_create(&stack, dev), "the grant is back");
    assert!(has_index(&stack, dev), "the index is back");

    // Production reports: drifted, the difference shown, nothing repaired.
    let check = scheduled_job(&stack, &id(prod), "drift_check").await;
    stack.wait_succeeded(TENANT, &check, WITHIN).await;
    stack
        .wait_environment(TENANT, &id(prod), "drifted", WITHIN)
        .await;
    let (status, report) = stack
        .get(&format!(
            "/v1/tenants/{TENANT}/environments/{}/drift",
            id(prod)
        ))
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["state"], "drifted", "{report}");
    assert_eq!(report["scheduled"], true, "{report}");
    let names = stack.names(prod);
    let differences = report["differences"].as_array().expect("differences");
    assert!(
        differences.iter().any(|d| d["object"]
            .as_str()
            .is_some_and(|o| o.contains(&format!("on schema {}", names.schema)))
            && d["change"] == "update"),
        "{report}"
    );
    assert!(
        differences
            .iter()
            .any(|d| d["object"] == "index order_lines_sku" && d["change"] == "create"),
        "{report}"
    );
    assert!(!may_create(&stack, prod), "a report stage is not repaired");
    assert!(!has_index(&stack, prod), "a report stage is not repaired");
    let applies = texts(
        &mut conn,
        &format!(
            "SELECT id::text AS v FROM jobs WHERE environment_id = '{}' AND operation = 'apply' \
             AND scheduled",
            id(prod)
        ),
    );
    assert!(applies.is_empty(), "{applies:?}");
    // Each drift found is audited once, and the next checks are an interval away.
    let audited = texts(
        &mut conn,
        "SELECT target AS v FROM audit_events WHERE action = 'environment.drifted' ORDER BY seq",
    );
    assert_eq!(audited.len(), 2, "{audited:?}");
    let later = texts(
        &mut conn,
        &format!(
            "SELECT (drift_check_due_at > now() + interval '5 hours')::text AS v \
             FROM environments WHERE id IN ('{}', '{}')",
            id(dev),
            id(prod)
        ),
    );
    assert_eq!(
        later,
        vec![Some("true".to_owned()), Some("true".to_owned())]
    );
}
