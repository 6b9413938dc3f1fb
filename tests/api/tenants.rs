//! Tenants through HTTP: create, idempotency, listing, update, offboarding.

use crate::helpers::TestApp;
use diesel::RunQueryDsl;
use serde_json::{Value, json};

#[tokio::test]
async fn bootstrap_admin_creates_and_reads_a_tenant() {
    let app = TestApp::spawn().await;
    let tenant = app.create_tenant("acme").await;
    assert_eq!(tenant["slug"], "acme");
    assert_eq!(tenant["state"], "active");
    let (status, body) = app.get("/v1/tenants/acme", &app.admin).await;
    assert_eq!(status, 200);
    assert_eq!(body["id"], tenant["id"]);
    let id = tenant["id"].as_str().expect("id");
    let (status, body) = app.get(&format!("/v1/tenants/{id}"), &app.admin).await;
    assert_eq!((status, &body["slug"]), (200, &json!("acme")));
}

/// POST /v1/tenants as `token` with an optional Idempotency-Key; returns status, raw body text
/// and JSON.
async fn create_with_key(
    app: &TestApp,
    token: &str,
    key: Option<&str>,
    body: &Value,
) -> (u16, String, Value) {
    let mut request = app
        .client
        .post(app.url("/v1/tenants"))
        .bearer_auth(token)
        .json(body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, text, json)
}

fn tenant_body(slug: &str) -> Value {
    json!({"slug": slug, "name": format!("Tenant {slug}"), "tier": "dedicated",
           "region": "us-east-1", "cost_tags": {"business_unit": "wms", "cost_center": "cc-7"}})
}

fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|t| t["id"].as_str().expect("id").to_owned())
        .collect()
}

#[tokio::test]
async fn idempotency_key_replays_the_first_response_and_refuses_another_body() {
    let app = TestApp::spawn().await;
    let body = tenant_body("acme");
    let (first_status, first_text, first) =
        create_with_key(&app, &app.admin, Some("onboard-acme-1"), &body).await;
    assert_eq!(first_status, 201, "{first_text}");
    assert_eq!(first["slug"], "acme");
    assert_eq!(first["tier"], "dedicated");
    assert_eq!(
        first["cost_tags"],
        json!({"business_unit": "wms", "cost_center": "cc-7"})
    );
    let audit_after_first = app.count("audit_events");

    let (again_status, _, again) =
        create_with_key(&app, &app.admin, Some("onboard-acme-1"), &body).await;
    assert_eq!(again_status, first_status);
    assert_eq!(again, first, "a replay answers the identical body");
    assert_eq!(app.count("tenants"), 1);
    assert_eq!(
        app.count("audit_events"),
        audit_after_first,
        "a replay is not a second creation"
    );

    let mut other = tenant_body("acme");
    other["name"] = json!("Acme, renamed in the retry");
    let (status, _, reused) =
        create_with_key(&app, &app.admin, Some("onboard-acme-1"), &other).await;
    assert_eq!(status, 422, "{reused}");
    assert_eq!(
        reused["type"],
        "https://bulkhead.dev/problems/idempotency-key-reused"
    );
    let (status, _, reused) = create_with_key(
        &app,
        &app.admin,
        Some("onboard-acme-1"),
        &tenant_body("globex"),
    )
    .await;
    assert_eq!(status, 422, "{reused}");
    assert_eq!(app.count("tenants"), 1);

    // Keys belong to their principal: another caller's identical key is a new request.
    let (_, partner) = app.partner("partner@example.com").await;
    let (status, _, created) = create_with_key(
        &app,
        &partner,
        Some("onboard-acme-1"),
        &tenant_body("globex"),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["slug"], "globex");
    assert_eq!(app.count("tenants"), 2);
}

#[tokio::test]
async fn a_taken_slug_without_a_key_is_a_conflict() {
    let app = TestApp::spawn().await;
    let body = tenant_body("acme");
    let (status, _, _) = create_with_key(&app, &app.admin, None, &body).await;
    assert_eq!(status, 201);
    let audit_before = app.count("audit_events");
    let (status, _, conflict) = create_with_key(&app, &app.admin, None, &body).await;
    assert_eq!(status, 409, "{conflict}");
    assert_eq!(conflict["type"], "https://bulkhead.dev/problems/conflict");
    // A new key does not make a taken slug free.
    let (status, _, _) = create_with_key(&app, &app.admin, Some("fresh-key"), &body).await;
    assert_eq!(status, 409);
    assert_eq!(app.count("tenants"), 1);
    assert_eq!(app.count("audit_events"), audit_before);
    // Nothing was saved under the key of the failed attempt: it works for another tenant.
    let (status, _, created) =
        create_with_key(&app, &app.admin, Some("fresh-key"), &tenant_body("globex")).await;
    assert_eq!(status, 201, "{created}");
}

#[tokio::test]
async fn tenants_page_with_a_cursor() {
    let app = TestApp::spawn().await;
    let mut created = Vec::new();
    for slug in ["t-one", "t-two", "t-three", "t-four", "t-five"] {
        created.push(
            app.create_tenant(slug).await["id"]
                .as_str()
                .expect("id")
                .to_owned(),
        );
    }

    let (status, first) = app.get("/v1/tenants?limit=2", &app.admin).await;
    assert_eq!(status, 200, "{first}");
    let cursor = first["next_cursor"].as_str().expect("cursor after page 1");
    let (status, second) = app
        .get(&format!("/v1/tenants?limit=2&cursor={cursor}"), &app.admin)
        .await;
    assert_eq!(status, 200, "{second}");
    let cursor = second["next_cursor"].as_str().expect("cursor after page 2");
    let (status, third) = app
        .get(&format!("/v1/tenants?limit=2&cursor={cursor}"), &app.admin)
        .await;
    assert_eq!(status, 200, "{third}");
    assert!(
        third.get("next_cursor").is_none_or(Value::is_null),
        "the last page has no next_cursor: {third}"
    );

    let pages = [ids(&first), ids(&second), ids(&third)];
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 1]);
    let mut seen: Vec<String> = pages.concat();
    let in_order = seen.clone();
    seen.sort();
    assert_eq!(in_order, seen, "listed in a stable (id) order");
    seen.dedup();
    assert_eq!(seen.len(), 5, "no duplicates");
    let mut expected = created;
    expected.sort();
    assert_eq!(seen, expected, "every tenant once");

    let (status, all) = app.get("/v1/tenants", &app.admin).await;
    assert_eq!(status, 200);
    assert_eq!(ids(&all), in_order);
    assert!(all["next_cursor"].is_null());
}

#[tokio::test]
async fn patch_then_offboard_a_tenant() {
    let app = TestApp::spawn().await;
    let tenant = app.create_tenant("acme").await;

    let (status, updated) = app
        .call(
            reqwest::Method::PATCH,
            "/v1/tenants/acme",
            &app.admin,
            Some(json!({"name": "  Acme Distribution  ",
                        "cost_tags": {"cost_center": "cc-2", "business_unit": "edi"}})),
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["name"], "Acme Distribution");
    assert_eq!(
        updated["cost_tags"],
        json!({"business_unit": "edi", "cost_center": "cc-2"})
    );
    assert_eq!(updated["slug"], "acme");
    assert_eq!(updated["id"], tenant["id"]);
    let (_, read) = app.get("/v1/tenants/acme", &app.admin).await;
    assert_eq!(read, updated, "the change is stored");
    // Only the name: the cost tags stay.
    let (status, renamed) = app
        .call(
            reqwest::Method::PATCH,
            "/v1/tenants/acme",
            &app.admin,
            Some(json!({"name": "Acme"})),
        )
        .await;
    assert_eq!(status, 200, "{renamed}");
    assert_eq!(renamed["cost_tags"], updated["cost_tags"]);

    let (status, empty) = app
        .call(
            reqwest::Method::PATCH,
            "/v1/tenants/acme",
            &app.admin,
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 422, "{empty}");
    assert_eq!(
        empty["type"],
        "https://bulkhead.dev/problems/validation-failed"
    );
    let (status, bad) = app
        .call(
            reqwest::Method::PATCH,
            "/v1/tenants/acme",
            &app.admin,
            Some(json!({"cost_tags": {"Bad": "x"}})),
        )
        .await;
    assert_eq!(status, 422, "{bad}");
    assert_eq!(bad["errors"][0]["field"], "cost_tags.Bad");

    let (status, deleted) = app.delete("/v1/tenants/acme", &app.admin).await;
    assert_eq!(status, 202, "{deleted}");
    // Nothing to tear down: offboarded at once.
    assert_eq!(deleted["state"], "offboarded");
    let (status, again) = app.delete("/v1/tenants/acme", &app.admin).await;
    assert_eq!(status, 202, "{again}");
    assert_eq!(again["state"], "offboarded");
    let (_, read) = app.get("/v1/tenants/acme", &app.admin).await;
    assert_eq!(read["state"], "offboarded");

    // A tenant on its way out takes no new members, keys or changes.
    let (status, refused) = app
        .post(
            "/v1/tenants/acme/members",
            &app.admin,
            json!({"email": "late@acme.example", "role": "viewer"}),
        )
        .await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["type"], "https://bulkhead.dev/problems/conflict");
    let (status, _) = app
        .post(
            "/v1/tenants/acme/api-keys",
            &app.admin,
            json!({"name": "late", "role": "viewer"}),
        )
        .await;
    assert_eq!(status, 409);
    let (status, _) = app
        .call(
            reqwest::Method::PATCH,
            "/v1/tenants/acme",
            &app.admin,
            Some(json!({"name": "Too late"})),
        )
        .await;
    assert_eq!(status, 409);
}

/// The jobs of `tenant` as (operation, state, environment id), oldest first.
async fn jobs_of(app: &TestApp, tenant: &str) -> Vec<(String, String, String)> {
    let (status, page) = app
        .get(&format!("/v1/tenants/{tenant}/jobs?limit=100"), &app.admin)
        .await;
    assert_eq!(status, 200, "{page}");
    let mut jobs: Vec<(String, String, String, String)> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|j| {
            let text = |f: &str| j[f].as_str().unwrap_or_default().to_owned();
            (
                text("id"),
                text("operation"),
                text("state"),
                text("environment_id"),
            )
        })
        .collect();
    jobs.sort();
    jobs.into_iter().map(|(_, o, s, e)| (o, s, e)).collect()
}

/// Offboarding a tenant with environments (no worker runs here, so nothing finishes): each
/// standing environment gets one destroy job, what had not started is canceled, a second DELETE
/// queues nothing more, and the tenant takes no new environments or jobs.
#[tokio::test]
async fn offboarding_queues_one_destroy_per_environment() {
    let app = TestApp::spawn().await;
    app.create_tenant("acme").await;
    let mut environments = Vec::new();
    for name in ["dev", "qa"] {
        let accepted = app.create_environment("acme", name).await;
        environments.push(
            accepted["environment"]["id"]
                .as_str()
                .expect("id")
                .to_owned(),
        );
    }
    app.job_action("acme", "dev", "plan").await;
    let outbox_before = app.count("outbox");

    let (status, deleted) = app.delete("/v1/tenants/acme", &app.admin).await;
    assert_eq!(status, 202, "{deleted}");
    assert_eq!(deleted["state"], "offboarding");
    let jobs = jobs_of(&app, "acme").await;
    let (dev, qa) = (environments[0].clone(), environments[1].clone());
    assert_eq!(
        jobs,
        vec![
            ("apply".to_owned(), "canceled".to_owned(), dev.clone()),
            ("apply".to_owned(), "canceled".to_owned(), qa.clone()),
            ("plan".to_owned(), "canceled".to_owned(), dev.clone()),
            ("destroy".to_owned(), "queued".to_owned(), dev.clone()),
            ("destroy".to_owned(), "queued".to_owned(), qa.clone()),
        ]
    );
    assert_eq!(
        app.count("outbox"),
        outbox_before + 2,
        "each destroy job has its message in the outbox"
    );

    // Again: the destroys are on their way, nothing new is queued.
    let (status, again) = app.delete("/v1/tenants/acme", &app.admin).await;
    assert_eq!((status, &again["state"]), (202, &json!("offboarding")));
    assert_eq!(jobs_of(&app, "acme").await, jobs);

    // dev's destroy fails for good (as a worker out of attempts leaves it): DELETE again
    // re-queues a destroy for dev alone.
    let failed = diesel::sql_query(format!(
        "UPDATE jobs SET state = 'failed', finished_at = now(), error = 'target unreachable' \
         WHERE environment_id = '{dev}'::uuid AND operation = 'destroy'"
    ))
    .execute(&mut app.db())
    .expect("fail dev's destroy");
    assert_eq!(failed, 1);
    let (status, retried) = app.delete("/v1/tenants/acme", &app.admin).await;
    assert_eq!((status, &retried["state"]), (202, &json!("offboarding")));
    let after = jobs_of(&app, "acme").await;
    assert_eq!(after.len(), jobs.len() + 1, "{after:?}");
    assert_eq!(
        after.last(),
        Some(&("destroy".to_owned(), "queued".to_owned(), dev.clone())),
        "{after:?}"
    );

    // No new environments or jobs while it goes.
    let (status, refused) = app
        .post(
            "/v1/tenants/acme/environments",
            &app.admin,
            json!({"name": "late", "stage": "development", "cost_tags": {"business_unit": "wms"}}),
        )
        .await;
    assert_eq!(status, 409, "{refused}");
    assert!(
        refused["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("offboarding"),
        "{refused}"
    );
    let (status, _) = app
        .post(
            "/v1/tenants/acme/environments/dev/apply",
            &app.admin,
            json!({}),
        )
        .await;
    assert_eq!(status, 409);
    assert_eq!(jobs_of(&app, "acme").await, after, "nothing new queued");

    // The audit trail says what each teardown did; the DELETE that queued nothing is not in it.
    let (_, events) = app
        .get("/v1/tenants/acme/audit-events?limit=100", &app.admin)
        .await;
    let mut teardowns: Vec<(usize, usize, Value)> = events["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|e| e["action"] == "tenant.delete")
        .map(|e| {
            let count = |list: &str| {
                e["details"]["teardown"][list]
                    .as_array()
                    .map_or(0, Vec::len)
            };
            (
                count("destroy_jobs"),
                count("canceled_jobs"),
                e["details"]["to"].clone(),
            )
        })
        .collect();
    teardowns.sort_by_key(|(destroys, _, _)| *destroys);
    assert_eq!(
        teardowns,
        vec![(1, 0, json!("offboarding")), (2, 3, json!("offboarding")),]
    );
}

#[tokio::test]
async fn a_partner_sees_the_tenants_it_onboards_and_no_others() {
    let app = TestApp::spawn().await;
    app.create_tenant("admins-own").await;
    let (_, partner) = app.partner("partner-one@example.com").await;
    let (_, rival) = app.partner("partner-two@example.com").await;

    let (status, _, created) = create_with_key(&app, &partner, None, &tenant_body("acme")).await;
    assert_eq!(status, 201, "{created}");
    let (status, listed) = app.get("/v1/tenants", &partner).await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(ids(&listed), [created["id"].as_str().expect("id")]);
    let (status, read) = app.get("/v1/tenants/acme", &partner).await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["id"], created["id"]);
    let (status, _) = app.get("/v1/tenants/admins-own", &partner).await;
    assert_eq!(status, 404);

    let (status, hidden) = app.get("/v1/tenants/acme", &rival).await;
    assert_eq!(status, 404, "{hidden}");
    let (status, missing) = app.get("/v1/tenants/no-such-tenant", &rival).await;
    assert_eq!(status, 404);
    assert_eq!(hidden["type"], missing["type"]);
    assert_eq!(hidden["title"], missing["title"]);
    let (status, listed) = app.get("/v1/tenants", &rival).await;
    assert_eq!(status, 200);
    assert_eq!(listed["items"], json!([]));
    let (status, _) = app
        .call(reqwest::Method::DELETE, "/v1/tenants/acme", &rival, None)
        .await;
    assert_eq!(status, 404);
    // The platform admin sees both.
    let (_, all) = app.get("/v1/tenants", &app.admin).await;
    assert_eq!(ids(&all).len(), 2);
}

/// The value of the first sample of `metric` whose line contains every one of `labels`.
fn sample(metrics: &str, metric: &str, labels: &[&str]) -> Option<f64> {
    metrics
        .lines()
        .filter(|line| line.starts_with(&format!("{metric}{{")))
        .find(|line| labels.iter().all(|label| line.contains(label)))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

#[tokio::test]
async fn health_metrics_and_openapi_are_served() {
    let app = TestApp::spawn().await;
    for (path, expected) in [
        ("/healthz", json!({"status": "ok"})),
        ("/readyz", json!({"status": "ready", "database": "ok"})),
    ] {
        let response = app.client.get(app.url(path)).send().await.expect(path);
        assert_eq!(response.status(), 200, "{path}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body, expected, "{path}");
    }

    // Traffic the metrics must show: a tenant read, a failed login, a denial.
    app.create_tenant("acme").await;
    let (status, _) = app.get("/v1/tenants/acme", &app.admin).await;
    assert_eq!(status, 200);
    let response = app
        .client
        .post(app.url("/v1/auth/login"))
        .json(&json!({"email": "admin@bulkhead.test", "password": "wrong-wrong-wrong"}))
        .send()
        .await
        .expect("login");
    assert_eq!(response.status(), 401);
    let (_, viewer) = app.member("acme", "viewer@acme.example", "viewer").await;
    let (status, _) = app
        .call(
            reqwest::Method::PATCH,
            "/v1/tenants/acme",
            &viewer,
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(status, 403);

    let response = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(response.status(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let metrics = response.text().await.expect("metrics text");
    let reads = sample(
        &metrics,
        "bulkhead_http_requests_total",
        &[
            "method=\"GET\"",
            "route=\"/v1/tenants/{tenant}\"",
            "status=\"200\"",
        ],
    );
    assert!(reads.is_some_and(|n| n >= 1.0), "tenant reads:\n{metrics}");
    let patch_denied = sample(
        &metrics,
        "bulkhead_http_requests_total",
        &[
            "method=\"PATCH\"",
            "route=\"/v1/tenants/{tenant}\"",
            "status=\"403\"",
        ],
    );
    assert_eq!(patch_denied, Some(1.0), "{metrics}");
    assert!(
        !metrics.contains("route=\"/v1/tenants/acme\""),
        "routes are labelled by pattern, not by path"
    );
    let failures = sample(
        &metrics,
        "bulkhead_login_failures_total",
        &["reason=\"invalid_credentials\""],
    );
    assert_eq!(failures, Some(1.0), "{metrics}");
    let denials = sample(
        &metrics,
        "bulkhead_authz_denials_total",
        &["object=\"tenant\"", "action=\"update\""],
    );
    assert_eq!(denials, Some(1.0), "{metrics}");
    assert!(metrics.contains("bulkhead_http_request_duration_seconds_bucket"));

    let response = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .expect("openapi");
    assert_eq!(response.status(), 200);
    let document: Value =
        serde_json::from_str(&response.text().await.expect("text")).expect("/openapi.json is JSON");
    assert!(
        document["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with('3')),
        "openapi version: {}",
        document["openapi"]
    );
    let paths = document["paths"].as_object().expect("paths");
    for path in [
        "/v1/tenants",
        "/v1/tenants/{tenant}",
        "/v1/tenants/{tenant}/members",
        "/v1/tenants/{tenant}/api-keys",
        "/v1/auth/login",
        "/v1/audit-events/verify",
    ] {
        assert!(paths.contains_key(path), "{path} documented");
    }
    for method in ["get", "patch", "delete"] {
        assert!(
            paths["/v1/tenants/{tenant}"].get(method).is_some(),
            "{method} /v1/tenants/{{tenant}} documented"
        );
    }
}

#[tokio::test]
async fn concurrent_retries_with_one_key_create_one_tenant() {
    let app = TestApp::spawn().await;
    let mut attempts = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let request = app
            .client
            .post(app.url("/v1/tenants"))
            .bearer_auth(&app.admin)
            .header("Idempotency-Key", "same-retry")
            .json(&tenant_body("acme"));
        attempts.spawn(async move {
            let response = request.send().await.expect("request");
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.expect("json"))
        });
    }
    let answers = attempts.join_all().await;
    for (status, body) in &answers {
        assert_eq!(*status, 201, "{body}");
        assert_eq!(
            body, &answers[0].1,
            "every retry answers the first response"
        );
    }
    assert_eq!(app.count("tenants"), 1);

    // Without a key, the same slug sent at once is created exactly once.
    let mut attempts = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let request = app
            .client
            .post(app.url("/v1/tenants"))
            .bearer_auth(&app.admin)
            .json(&tenant_body("globex"));
        attempts.spawn(async move { request.send().await.expect("request").status().as_u16() });
    }
    let mut statuses = attempts.join_all().await;
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 409, 409, 409, 409, 409, 409, 409]);
    assert_eq!(app.count("tenants"), 2);
}
