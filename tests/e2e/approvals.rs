//! Approvals bound to the plan, through the real binaries (issue 11): a production create under
//! a two-approver policy is planned by a worker and waits; its requester may not approve it; a
//! stale plan hash is refused; the wait expires; a change asked for again is planned again, and
//! an approved plan the target no longer matches fails as stale; a fresh plan approved by two
//! people is applied, once.

use crate::helpers::{Options, Stack, execute, texts};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

const WITHIN: Duration = Duration::from_secs(60);
const TENANT: &str = "ledger";

fn text(value: &Value, key: &str) -> String {
    value[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} in {value}"))
        .to_owned()
}

async fn decide(stack: &Stack, token: &str, job: &str, action: &str, body: Value) -> (u16, Value) {
    stack
        .call(
            Method::POST,
            &format!("/v1/tenants/{TENANT}/jobs/{job}/{action}"),
            token,
            Some(body),
        )
        .await
}

async fn apply(stack: &Stack, token: &str, env: &str, reason: &str) -> String {
    let (status, body) = stack
        .call(
            Method::POST,
            &format!("/v1/tenants/{TENANT}/environments/{env}/apply"),
            token,
            Some(json!({"reason": reason})),
        )
        .await;
    assert_eq!(status, 202, "apply: {body}");
    text(&body["job"], "id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_production_change_waits_for_two_approvers_and_runs_only_the_approved_plan() {
    let mut stack = Stack::start(Options {
        workers: 1,
        ..Options::default()
    })
    .await;
    stack.create_tenant(TENANT, "shared").await;
    let (status, policy) = stack
        .call(
            Method::PUT,
            &format!("/v1/tenants/{TENANT}/policy"),
            &stack.admin,
            Some(json!({"stages": {"production": {"approvals_required": 2}}})),
        )
        .await;
    assert_eq!(status, 200, "{policy}");
    let requester = stack.person(TENANT, "tenant_admin").await;
    let approver = stack.person(TENANT, "approver").await;
    let second = stack.admin.clone();

    // The create is planned by the worker, then waits with its plan visible.
    let (status, created) = stack
        .call(
            Method::POST,
            &format!("/v1/tenants/{TENANT}/environments"),
            &requester,
            Some(json!({"name": "erp", "stage": "production"})),
        )
        .await;
    assert_eq!(status, 202, "{created}");
    let (env_id, first) = (
        text(&created["environment"], "id"),
        text(&created["job"], "id"),
    );
    assert_eq!(created["job"]["approvals_required"], 2, "{created}");
    let waiting = stack
        .wait_job_state(TENANT, &first, "awaiting_approval", WITHIN)
        .await;
    let hash = text(&waiting, "plan_hash");
    assert_eq!(hash.len(), 64, "{waiting}");
    assert!(
        !waiting["plan"]["actions"]
            .as_array()
            .is_none_or(Vec::is_empty),
        "the plan is shown: {waiting}"
    );
    assert_eq!(waiting["reason"], "create the environment", "{waiting}");
    assert!(waiting["approval_expires_at"].is_string(), "{waiting}");
    let environment = stack.environment(TENANT, &env_id).await;
    assert_eq!(environment["state"], "pending", "{environment}");
    assert!(
        stack.leftovers(&environment).is_empty(),
        "nothing is built before approval: {:?}",
        stack.leftovers(&environment)
    );

    // The approver's list shows it; the requester's says they may not approve it.
    let path = format!("/v1/tenants/{TENANT}/approvals?state=pending");
    let (status, list) = stack.call(Method::GET, &path, &approver, None).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["items"][0]["job"]["id"], first.as_str(), "{list}");
    assert_eq!(list["items"][0]["you_may_approve"], true, "{list}");
    let (_, list) = stack.call(Method::GET, &path, &requester, None).await;
    assert_eq!(list["items"][0]["you_may_approve"], false, "{list}");

    // The requester cannot approve their own change; a wrong hash is refused; one approval
    // is not enough, and nobody approves twice.
    let (status, body) = decide(
        &stack,
        &requester,
        &first,
        "approve",
        json!({"plan_hash": hash}),
    )
    .await;
    assert_eq!(status, 403, "requester: {body}");
    let wrong = "0".repeat(64);
    let (status, body) = decide(
        &stack,
        &approver,
        &first,
        "approve",
        json!({"plan_hash": wrong}),
    )
    .await;
    assert_eq!(status, 409, "stale hash: {body}");
    assert!(
        body["detail"].as_str().is_some_and(|d| d.contains(&hash)),
        "{body}"
    );
    let (status, body) = decide(
        &stack,
        &approver,
        &first,
        "approve",
        json!({"plan_hash": hash, "comment": "looks right"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "awaiting_approval", "{body}");
    assert_eq!(
        body["approvals"].as_array().map(Vec::len),
        Some(1),
        "{body}"
    );
    let (status, body) = decide(
        &stack,
        &approver,
        &first,
        "approve",
        json!({"plan_hash": hash}),
    )
    .await;
    assert_eq!(status, 409, "twice: {body}");

    // The wait ends (as a day would): the job is expired by a worker's sweep, audited once.
    let mut conn = stack.control_db();
    execute(
        &mut conn,
        &format!(
            "UPDATE jobs SET approval_expires_at = now() - interval '1 second' WHERE id = '{first}'"
        ),
    );
    let expired = stack.wait_job(TENANT, &first, WITHIN).await;
    assert_eq!(expired["state"], "expired", "{expired}");
    let audited = texts(
        &mut conn,
        &format!(
            "SELECT actor AS v FROM audit_events WHERE action = 'job.approval_expired' \
             AND details->>'job_id' = '{first}'"
        ),
    );
    assert_eq!(audited.len(), 1, "{audited:?}");
    let (status, body) = decide(
        &stack,
        &second,
        &first,
        "approve",
        json!({"plan_hash": hash}),
    )
    .await;
    assert_eq!(status, 409, "an expired job is not approved: {body}");
    assert_eq!(stack.environment(TENANT, &env_id).await["state"], "pending");

    // Asked again: planned again. Both approve it, but the worker is away and the target changes
    // behind Bulkhead's back before it runs: the approved plan is stale and nothing is applied.
    let second_job = apply(
        &stack,
        &requester,
        &env_id,
        "second try after the wait ended",
    )
    .await;
    let waiting = stack
        .wait_job_state(TENANT, &second_job, "awaiting_approval", WITHIN)
        .await;
    let approved_hash = text(&waiting, "plan_hash");
    assert_eq!(approved_hash, hash, "the same target gives the same plan");
    let (status, body) = decide(
        &stack,
        &approver,
        &second_job,
        "approve",
        json!({"plan_hash": approved_hash}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    stack.kill_worker(0);
    let names = stack.names(&environment);
    let mut admin = crate::helpers::admin_conn("postgres");
    execute(
        &mut admin,
        &format!("CREATE ROLE \"{}\" NOLOGIN", names.owner_role),
    );
    let (status, body) = decide(
        &stack,
        &second,
        &second_job,
        "approve",
        json!({"plan_hash": approved_hash}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "approved", "{body}");
    let worker = stack.spawn_worker();
    stack.wait_worker_consuming(worker).await;
    let stale = stack.wait_job(TENANT, &second_job, WITHIN).await;
    assert_eq!(stale["state"], "failed", "{stale}");
    assert!(
        stale["error"]
            .as_str()
            .is_some_and(|e| e.contains("stale plan")),
        "{stale}"
    );

    // A third request plans from the changed target: an approval of the old plan is refused,
    // two approvals of the new one apply it.
    let third = apply(
        &stack,
        &requester,
        &env_id,
        "third try on the changed target",
    )
    .await;
    let waiting = stack
        .wait_job_state(TENANT, &third, "awaiting_approval", WITHIN)
        .await;
    let fresh = text(&waiting, "plan_hash");
    assert_ne!(fresh, approved_hash, "{waiting}");
    let (status, body) = decide(
        &stack,
        &approver,
        &third,
        "approve",
        json!({"plan_hash": approved_hash}),
    )
    .await;
    assert_eq!(status, 409, "the old plan: {body}");
    for token in [&approver, &second] {
        let (status, body) = decide(
            &stack,
            token,
            &third,
            "approve",
            json!({"plan_hash": fresh}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let done = stack.wait_succeeded(TENANT, &third, WITHIN).await;
    assert_eq!(
        done["approvals"].as_array().map(Vec::len),
        Some(2),
        "{done}"
    );
    stack
        .wait_environment(TENANT, &env_id, "ready", WITHIN)
        .await;
    let decisions = texts(
        &mut conn,
        &format!(
            "SELECT details->>'plan_hash' AS v FROM audit_events WHERE action = 'job.approve' \
             AND target = 'job/{third}' ORDER BY seq"
        ),
    );
    assert_eq!(decisions, vec![Some(fresh.clone()), Some(fresh.clone())]);
    let applied = texts(
        &mut conn,
        &format!(
            "SELECT state AS v FROM jobs WHERE environment_id = '{env_id}' \
             AND operation = 'apply' ORDER BY created_at"
        ),
    );
    assert_eq!(
        applied,
        vec![
            Some("expired".to_owned()),
            Some("failed".to_owned()),
            Some("succeeded".to_owned())
        ]
    );

    // A reject ends a change: a destroy asked for by the requester, rejected by the approver.
    let (status, destroy) = stack
        .call(
            Method::DELETE,
            &format!("/v1/tenants/{TENANT}/environments/{env_id}"),
            &requester,
            None,
        )
        .await;
    assert_eq!(status, 202, "{destroy}");
    let destroy = text(&destroy["job"], "id");
    stack
        .wait_job_state(TENANT, &destroy, "awaiting_approval", WITHIN)
        .await;
    let (status, body) = decide(
        &stack,
        &approver,
        &destroy,
        "reject",
        json!({"comment": "not today"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "rejected", "{body}");
    assert_eq!(stack.environment(TENANT, &env_id).await["state"], "ready");

    // Clean up: without approvals, the environment is destroyed and nothing is left.
    stack.without_approvals(TENANT).await;
    let (status, gone) = stack
        .call(
            Method::DELETE,
            &format!("/v1/tenants/{TENANT}/environments/{env_id}"),
            &stack.admin,
            None,
        )
        .await;
    assert_eq!(status, 202, "{gone}");
    let gone = stack
        .wait_environment(TENANT, &env_id, "destroyed", WITHIN)
        .await;
    assert!(
        stack.leftovers(&gone).is_empty(),
        "{:?}",
        stack.leftovers(&gone)
    );
}
