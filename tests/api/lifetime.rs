//! Environment lifetimes through the API: `ttl_hours` on create, the stage's default TTL from
//! the tenant's policy, `PATCH …/environments/{env}` extending it (audited), production never
//! expiring, and the expiry sweep's store path: a due environment gets one destroy job (its
//! queued jobs canceled), audited once, and a second sweep queues nothing.

use crate::helpers::TestApp;
use bulkhead_core::store;
use chrono::{DateTime, Duration, Utc};
use reqwest::Method;
use serde_json::{Value, json};

fn expires(env: &Value) -> DateTime<Utc> {
    env["expires_at"]
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| panic!("expires_at: {env}"))
}

fn near(at: DateTime<Utc>, hours: i64) -> bool {
    let want = Utc::now() + Duration::hours(hours);
    (at - want).num_seconds().abs() < 120
}

#[actix_web::test]
async fn ttl_on_create_policy_default_patch_and_the_expiry_sweep() {
    let app = TestApp::spawn().await;
    app.create_tenant("ci-pipes").await;
    let create = |name: &str, stage: &str, ttl: Option<i64>| {
        let mut body = json!({"name": name, "stage": stage, "cost_tags": {"business_unit": "wms"}});
        if let Some(ttl) = ttl {
            body["ttl_hours"] = json!(ttl);
        }
        body
    };
    let path = "/v1/tenants/ci-pipes/environments";

    let (status, body) = app
        .post(path, &app.admin, create("pr-1", "development", Some(24)))
        .await;
    assert_eq!(status, 202, "{body}");
    assert!(near(expires(&body["environment"]), 24), "{body}");

    // Never for production, and within 1 to 2160 hours.
    let (status, body) = app
        .post(path, &app.admin, create("prod", "production", Some(24)))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errors"][0]["field"], "ttl_hours", "{body}");
    let (status, body) = app
        .post(path, &app.admin, create("pr-x", "development", Some(3000)))
        .await;
    assert_eq!(status, 422, "{body}");

    // Without one: never, unless the stage's policy has a default TTL.
    let (_, body) = app
        .post(path, &app.admin, create("stay", "staging", None))
        .await;
    assert!(body["environment"]["expires_at"].is_null(), "{body}");
    let (status, policy) = app
        .call(
            Method::PUT,
            "/v1/tenants/ci-pipes/policy",
            &app.admin,
            Some(json!({"stages": {"development": {"default_ttl_hours": 72}}})),
        )
        .await;
    assert_eq!(status, 200, "{policy}");
    let (_, body) = app
        .post(path, &app.admin, create("pr-2", "development", None))
        .await;
    assert!(near(expires(&body["environment"]), 72), "{body}");

    // Extend it; audited with what it was.
    let (status, extended) = app
        .call(
            Method::PATCH,
            &format!("{path}/pr-1"),
            &app.admin,
            Some(json!({"ttl_hours": 100})),
        )
        .await;
    assert_eq!(status, 200, "{extended}");
    assert!(near(expires(&extended), 100), "{extended}");
    assert_eq!(
        app.count("audit_events WHERE action = 'environment.ttl_set'"),
        1
    );
    let (status, body) = app
        .call(
            Method::PATCH,
            &format!("{path}/pr-1"),
            &app.admin,
            Some(json!({"ttl_hours": 0})),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let (_, prod) = app
        .post(path, &app.admin, create("prod", "production", None))
        .await;
    assert!(prod["environment"]["expires_at"].is_null(), "{prod}");
    let (status, body) = app
        .call(
            Method::PATCH,
            &format!("{path}/prod"),
            &app.admin,
            Some(json!({"ttl_hours": 5})),
        )
        .await;
    assert_eq!(status, 422, "{body}");

    // The sweep's store path: pr-1 falls due; its queued apply is canceled and one destroy
    // queued, by no person; a second sweep finds nothing more to do.
    let pr1 = extended["id"].as_str().expect("id").to_owned();
    let mut db = app.db();
    diesel::RunQueryDsl::execute(
        diesel::sql_query(format!(
            "UPDATE environments SET expires_at = now() - interval '1 minute' WHERE id = '{pr1}'"
        )),
        &mut db,
    )
    .expect("expire");
    let queued = store::expiry::queue_expired(&mut db, "worker:test", 3, 50).expect("sweep");
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert_eq!(queued[0].environment_id.to_string(), pr1);
    assert!(
        store::expiry::queue_expired(&mut db, "worker:test", 3, 50)
            .expect("sweep again")
            .is_empty()
    );
    assert_eq!(
        app.count(&format!(
            "jobs WHERE environment_id = '{pr1}' AND operation = 'destroy' AND state = 'queued' \
             AND requested_by = (SELECT created_by FROM environments WHERE id = '{pr1}')"
        )),
        1
    );
    assert_eq!(
        app.count(&format!(
            "jobs WHERE environment_id = '{pr1}' AND operation = 'apply' AND state = 'canceled'"
        )),
        1
    );
    assert_eq!(
        app.count("audit_events WHERE action = 'environment.expired'"),
        1
    );
    // With its destroy queued, its lifetime no longer changes.
    let (status, body) = app
        .call(
            Method::PATCH,
            &format!("{path}/pr-1"),
            &app.admin,
            Some(json!({"ttl_hours": 500})),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    // Once per expiry: the destroy canceled (or failed), the sweep does not queue another until
    // someone sets a new TTL.
    let destroy = queued[0].job_id;
    let (status, body) = app
        .post(
            &format!("/v1/tenants/ci-pipes/jobs/{destroy}/cancel"),
            &app.admin,
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        store::expiry::queue_expired(&mut db, "worker:test", 3, 50)
            .expect("sweep after the cancel")
            .is_empty()
    );
    let (status, body) = app
        .call(
            Method::PATCH,
            &format!("{path}/pr-1"),
            &app.admin,
            Some(json!({"ttl_hours": 1})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // Only pr-2 (72 h) and pr-1 (1 h) carry a TTL; nothing else was touched.
    assert_eq!(
        app.count("environments WHERE expires_at IS NOT NULL AND state <> 'destroyed'"),
        2
    );
    // An operator may create environments but not schedule their destruction.
    let (_, operator) = app.member("ci-pipes", "ops@ci.example", "operator").await;
    let (status, body) = app
        .call(
            Method::PATCH,
            &format!("{path}/pr-2"),
            &operator,
            Some(json!({"ttl_hours": 1})),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    // Nor create one with a TTL (the stage's policy default still applies to what it creates).
    let (status, body) = app
        .post(path, &operator, create("op-ttl", "development", Some(1)))
        .await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = app
        .post(path, &operator, create("op-plain", "development", None))
        .await;
    assert_eq!(status, 202, "{body}");
    assert!(near(expires(&body["environment"]), 72), "{body}");
}

/// A TTL is no way around a stage's review: where the policy wants approvals for staging, the
/// expiry's destroy needs them too, and cancels nothing before it has them.
#[actix_web::test]
async fn an_expiry_destroy_waits_for_the_approvals_its_stage_needs() {
    let app = TestApp::spawn().await;
    app.create_tenant("qa-gate").await;
    let (status, body) = app
        .call(
            Method::PUT,
            "/v1/tenants/qa-gate/policy",
            &app.admin,
            Some(json!({"stages": {"staging": {"approvals_required": 1}}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, created) = app
        .post(
            "/v1/tenants/qa-gate/environments",
            &app.admin,
            json!({"name": "uat", "stage": "staging", "ttl_hours": 1,
                   "cost_tags": {"business_unit": "qa"}}),
        )
        .await;
    assert_eq!(status, 202, "{created}");
    let id = created["environment"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let mut db = app.db();
    diesel::RunQueryDsl::execute(
        diesel::sql_query(format!(
            "UPDATE environments SET expires_at = now() - interval '1 minute' WHERE id = '{id}'"
        )),
        &mut db,
    )
    .expect("expire");
    let queued = store::expiry::queue_expired(&mut db, "worker:test", 3, 50).expect("sweep");
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert_eq!(
        app.count(&format!(
            "jobs WHERE environment_id = '{id}' AND operation = 'destroy' AND approvals_required = 1 \
             AND requested_by = (SELECT created_by FROM environments WHERE id = '{id}')"
        )),
        1,
        "the expiry's destroy is reviewed, and is the TTL setter's (who may not approve it)"
    );
    assert_eq!(
        app.count(&format!(
            "jobs WHERE environment_id = '{id}' AND operation = 'apply' AND state = 'queued'"
        )),
        1,
        "the create is not canceled before anyone approved the destroy"
    );
}
