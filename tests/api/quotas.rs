//! Tenant quotas: what a tenant may hold at once, checked under the tenant's lock so a burst of
//! requests cannot take more than the quota; overrides by platform admins only. And the state
//! checks that guard a change, made under the same lock as the change.

use crate::helpers::TestApp;
use bulkhead_core::limits::QuotaDefaults;
use serde_json::{Value, json};

const QUOTA_EXCEEDED: &str = "https://bulkhead.dev/problems/quota-exceeded";

fn small() -> QuotaDefaults {
    QuotaDefaults {
        environments: 2,
        queued_jobs: 4,
        api_keys: 1,
        members: 2,
    }
}

fn env_body(name: &str) -> Value {
    json!({"name": name, "stage": "development", "cost_tags": {"business_unit": "wms"}})
}

fn assert_quota(status: u16, body: &Value, quota: &str, limit: i64) {
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["type"], QUOTA_EXCEEDED, "{body}");
    assert_eq!(body["quota"], quota, "{body}");
    assert_eq!(body["limit"], limit, "{body}");
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(quota) && detail.contains("platform admin"),
        "{detail}"
    );
}

#[tokio::test]
async fn each_quota_stops_the_one_too_many_and_names_itself() {
    let app = TestApp::spawn_with(|c| c.limits.quotas = small()).await;
    app.create_tenant("acme").await;
    let envs = "/v1/tenants/acme/environments";

    // Environments: two stand, the third is refused.
    app.create_environment("acme", "one").await;
    app.create_environment("acme", "two").await;
    let (status, body) = app.post(envs, &app.admin, env_body("three")).await;
    assert_quota(status, &body, "environments", 2);
    assert_eq!(app.count("environments"), 2);

    // Queued jobs: two applies are queued; two plans fill the quota of four.
    app.job_action("acme", "one", "plan").await;
    app.job_action("acme", "two", "plan").await;
    let (status, body) = app
        .post(&format!("{envs}/one/drift-check"), &app.admin, json!({}))
        .await;
    assert_quota(status, &body, "queued_jobs", 4);
    // Destroying is always allowed: it frees what quotas count.
    let (status, body) = app.delete(&format!("{envs}/two"), &app.admin).await;
    assert_eq!(status, 202, "{body}");

    // API keys: one, then none.
    let keys = "/v1/tenants/acme/api-keys";
    let (status, body) = app
        .post(keys, &app.admin, json!({"name": "ci", "role": "viewer"}))
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = app
        .post(keys, &app.admin, json!({"name": "ci-2", "role": "viewer"}))
        .await;
    assert_quota(status, &body, "api_keys", 1);

    // Members: the key is counted as a key, not a member; two invitations fill the quota, and
    // re-sending one of them takes no new place.
    let members = "/v1/tenants/acme/members";
    for email in ["a@acme.test", "b@acme.test"] {
        let (status, body) = app
            .post(
                members,
                &app.admin,
                json!({"email": email, "role": "viewer"}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, body) = app
        .post(
            members,
            &app.admin,
            json!({"email": "c@acme.test", "role": "viewer"}),
        )
        .await;
    assert_quota(status, &body, "members", 2);

    // The tenant's view of its quotas.
    let (status, view) = app.get("/v1/tenants/acme/quotas", &app.admin).await;
    assert_eq!(status, 200, "{view}");
    let used = |quota: &str| {
        view["quotas"]
            .as_array()
            .expect("quotas")
            .iter()
            .find(|q| q["quota"] == quota)
            .map(|q| (q["limit"].as_i64(), q["used"].as_i64(), q["source"].clone()))
            .expect(quota)
    };
    assert_eq!(used("environments"), (Some(2), Some(2), json!("default")));
    assert_eq!(used("api_keys"), (Some(1), Some(1), json!("default")));
    assert_eq!(used("members"), (Some(2), Some(2), json!("default")));
}

#[tokio::test]
async fn only_a_platform_admin_raises_a_quota_and_the_override_is_used() {
    let app = TestApp::spawn_with(|c| c.limits.quotas = small()).await;
    app.create_tenant("acme").await;
    let (_, tenant_admin) = app.member("acme", "boss@acme.test", "tenant_admin").await;
    let quotas = "/v1/tenants/acme/quotas";

    let (status, body) = app
        .call(
            reqwest::Method::PUT,
            quotas,
            &tenant_admin,
            Some(json!({"environments": 50})),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    let (status, _) = app.get(quotas, &tenant_admin).await;
    assert_eq!(status, 200, "members read their tenant's quotas");

    let (status, body) = app
        .call(
            reqwest::Method::PUT,
            quotas,
            &app.admin,
            Some(json!({"environments": -1, "members": 1_000_000})),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    assert_eq!(fields, ["environments", "members"]);

    let (status, body) = app
        .call(
            reqwest::Method::PUT,
            quotas,
            &app.admin,
            Some(json!({"environments": 3})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    for name in ["one", "two", "three"] {
        app.create_environment("acme", name).await;
    }
    let (status, body) = app
        .post(
            "/v1/tenants/acme/environments",
            &app.admin,
            env_body("four"),
        )
        .await;
    assert_quota(status, &body, "environments", 3);
    // Back to the default (null): what already stands stays, nothing more is added.
    let (status, body) = app
        .call(
            reqwest::Method::PUT,
            quotas,
            &app.admin,
            Some(json!({"environments": null})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = app
        .post(
            "/v1/tenants/acme/environments",
            &app.admin,
            env_body("four"),
        )
        .await;
    assert_quota(status, &body, "environments", 2);
    let mut db = app.db();
    let audited: i64 = diesel::RunQueryDsl::get_result::<Count>(
        diesel::sql_query(
            "SELECT count(*) AS n FROM audit_events WHERE action = 'tenant.quotas_set' AND result = 'success'",
        ),
        &mut db,
    )
    .expect("count")
    .n;
    assert_eq!(audited, 2);
}

/// POSTs every (path, body) at once as the admin; the answers in order.
async fn all(app: &TestApp, requests: Vec<(String, Value)>) -> Vec<(u16, Value)> {
    let mut set = tokio::task::JoinSet::new();
    for (i, (path, body)) in requests.into_iter().enumerate() {
        let request = app
            .client
            .post(app.url(&path))
            .bearer_auth(&app.admin)
            .json(&body);
        set.spawn(async move {
            let response = request.send().await.expect("request");
            let status = response.status().as_u16();
            (
                i,
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        });
    }
    let mut answers = set.join_all().await;
    answers.sort_by_key(|(i, _, _)| *i);
    answers.into_iter().map(|(_, s, b)| (s, b)).collect()
}

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

#[tokio::test]
async fn a_burst_of_creates_cannot_take_more_than_the_quota() {
    let app = TestApp::spawn_with(|c| {
        c.limits.quotas = QuotaDefaults {
            environments: 3,
            queued_jobs: 100,
            ..small()
        };
    })
    .await;
    app.create_tenant("acme").await;
    let answers = all(
        &app,
        (0..12)
            .map(|i| {
                (
                    "/v1/tenants/acme/environments".to_owned(),
                    env_body(&format!("burst-{i}")),
                )
            })
            .collect(),
    )
    .await;
    let accepted = answers.iter().filter(|(status, _)| *status == 202).count();
    for (status, body) in answers.iter().filter(|(status, _)| *status != 202) {
        assert_quota(*status, body, "environments", 3);
    }
    assert_eq!(accepted, 3, "{answers:?}");
    assert_eq!(app.count("environments"), 3);
}

#[tokio::test]
async fn nothing_is_queued_on_an_environment_after_its_destroy() {
    let app = TestApp::spawn().await;
    app.create_tenant("acme").await;
    app.create_environment("acme", "one").await;
    let (status, body) = app
        .delete("/v1/tenants/acme/environments/one", &app.admin)
        .await;
    assert_eq!(status, 202, "{body}");
    for action in ["apply", "plan", "drift-check"] {
        let (status, body) = app
            .post(
                &format!("/v1/tenants/acme/environments/one/{action}"),
                &app.admin,
                json!({}),
            )
            .await;
        assert_eq!(status, 409, "{action} after destroy: {body}");
        assert!(
            body["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("being destroyed"),
            "{body}"
        );
    }
    // Applies racing a destroy: none is queued behind it.
    app.create_environment("acme", "two").await;
    let path = "/v1/tenants/acme/environments/two";
    let applies = all(&app, vec![(format!("{path}/apply"), json!({})); 6]);
    let (_, destroy) = tokio::join!(applies, app.delete(path, &app.admin));
    assert_eq!(destroy.0, 202, "{}", destroy.1);
    let (_, jobs) = app.get("/v1/tenants/acme/jobs?limit=200", &app.admin).await;
    let mut of_two: Vec<&Value> = jobs["items"]
        .as_array()
        .expect("jobs")
        .iter()
        .filter(|j| j["environment_id"] == destroy.1["job"]["environment_id"])
        .filter(|j| j["state"] == "queued")
        .collect();
    of_two.sort_by_key(|j| j["created_at"].as_str().unwrap_or_default().to_owned());
    let last = of_two.last().expect("the destroy is queued");
    assert_eq!(last["operation"], "destroy", "{of_two:?}");
}

#[tokio::test]
async fn reviving_an_expired_offer_takes_a_place_again() {
    let app = TestApp::spawn_with(|c| {
        c.limits.quotas = QuotaDefaults {
            members: 1,
            ..small()
        };
    })
    .await;
    app.create_tenant("acme").await;
    app.create_tenant("globex").await;
    app.member("globex", "pat@globex.test", "viewer").await;
    let members = "/v1/tenants/acme/members";
    let offer = json!({"email": "pat@globex.test", "role": "viewer"});
    let (status, body) = app.post(members, &app.admin, offer.clone()).await;
    assert_eq!(status, 201, "{body}");
    // The offer expires: it holds no place, so someone else takes the tenant's one place ...
    diesel::RunQueryDsl::execute(
        diesel::sql_query(
            "UPDATE memberships SET invitation_expires_at = now() - interval '1 hour' \
             WHERE state = 'invited'",
        ),
        &mut app.db(),
    )
    .expect("expire the offer");
    let (status, body) = app
        .post(
            members,
            &app.admin,
            json!({"email": "new@acme.test", "role": "viewer"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    // ... and re-sending the expired offer would make two.
    let (status, body) = app.post(members, &app.admin, offer).await;
    assert_quota(status, &body, "members", 1);
}
