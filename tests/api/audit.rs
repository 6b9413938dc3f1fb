//! The audit trail through HTTP: what is recorded, who may read it, chain verification against
//! tampering in the database, and paging.

use crate::helpers::{ADMIN_EMAIL, TestApp};
use diesel::RunQueryDsl;
use reqwest::Method;
use serde_json::{Value, json};

/// Sends a request as `token` (with an optional `X-Request-Id`); returns status, the response's
/// `x-request-id` header and the JSON body.
async fn traced(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
    request_id: Option<&str>,
) -> (u16, String, Value) {
    let mut request = app.client.request(method, app.url(path)).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    if let Some(id) = request_id {
        request = request.header("X-Request-Id", id);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let echoed = response
        .headers()
        .get("x-request-id")
        .expect("every response carries x-request-id")
        .to_str()
        .expect("readable x-request-id")
        .to_owned();
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, echoed, body)
}

/// Every item of a list endpoint, following `next_cursor` with pages of `limit`.
async fn walk(app: &TestApp, path: &str, token: &str, limit: u32) -> (Vec<Value>, usize) {
    let mut items = Vec::new();
    let mut pages = 0;
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            None => format!("{path}?limit={limit}"),
            Some(c) => format!("{path}?limit={limit}&cursor={c}"),
        };
        let (status, page) = app.get(&url, token).await;
        assert_eq!(status, 200, "{url}: {page}");
        pages += 1;
        let batch = page["items"].as_array().expect("items");
        assert!(batch.len() <= limit as usize, "page larger than the limit");
        items.extend(batch.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => {
                assert_eq!(batch.len(), limit as usize, "a full page before a cursor");
                cursor = Some(next.to_owned());
            }
            None => break,
        }
        assert!(pages < 1000, "paging does not end");
    }
    (items, pages)
}

#[derive(diesel::QueryableByName)]
struct Seq {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    seq: i64,
}

fn stored_seqs(app: &TestApp) -> Vec<i64> {
    diesel::sql_query("SELECT seq FROM audit_events ORDER BY seq")
        .load::<Seq>(&mut app.db())
        .expect("seqs")
        .into_iter()
        .map(|s| s.seq)
        .collect()
}

fn events_with<'a>(events: &'a [Value], action: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["action"] == action).collect()
}

#[tokio::test]
async fn mutations_are_recorded_with_actor_result_and_request_id() {
    let app = TestApp::spawn().await;
    let mine = "audit-test.create-1";
    let (status, echoed, tenant) = traced(
        &app,
        Method::POST,
        "/v1/tenants",
        &app.admin,
        Some(json!({"slug": "acme", "name": "Acme", "tier": "shared", "region": "eu-west-1"})),
        Some(mine),
    )
    .await;
    assert_eq!(status, 201, "{tenant}");
    assert_eq!(echoed, mine, "a sane X-Request-Id is echoed");
    let tenant_id = tenant["id"].as_str().expect("id").to_owned();

    let (status, member_rid, added) = traced(
        &app,
        Method::POST,
        "/v1/tenants/acme/members",
        &app.admin,
        Some(json!({"email": "ops@acme.example", "role": "operator"})),
        None,
    )
    .await;
    assert_eq!(status, 201, "{added}");
    assert!(!member_rid.is_empty());
    let (status, key_rid, key) = traced(
        &app,
        Method::POST,
        "/v1/tenants/acme/api-keys",
        &app.admin,
        Some(json!({"name": "ci", "role": "viewer"})),
        None,
    )
    .await;
    assert_eq!(status, 201, "{key}");
    let key_id = key["api_key"]["id"].as_str().expect("key id");
    // An insane request id (spaces, too long) is replaced by a fresh one.
    let insane = format!("not sane {}", "x".repeat(80));
    let (status, revoke_rid, _) = traced(
        &app,
        Method::DELETE,
        &format!("/v1/tenants/acme/api-keys/{key_id}"),
        &app.admin,
        None,
        Some(&insane),
    )
    .await;
    assert_eq!(status, 204);
    assert_ne!(revoke_rid, insane);
    assert!(!revoke_rid.is_empty() && revoke_rid.len() <= 64);
    assert_ne!(revoke_rid, member_rid);

    let (status, page) = app.get("/v1/tenants/acme/audit-events", &app.admin).await;
    assert_eq!(status, 200, "{page}");
    let events = page["items"].as_array().expect("items").clone();
    let expected = [
        ("tenant.create", mine.to_owned(), "tenant/acme".to_owned()),
        (
            "member.create",
            member_rid,
            format!(
                "principal/{}",
                added["member"]["principal_id"].as_str().expect("id")
            ),
        ),
        ("api_key.create", key_rid, format!("api_key/{key_id}")),
        ("api_key.delete", revoke_rid, format!("api_key/{key_id}")),
    ];
    let actions: Vec<&str> = events
        .iter()
        .map(|e| e["action"].as_str().expect("action"))
        .collect();
    assert_eq!(
        actions,
        [
            "tenant.create",
            "member.create",
            "api_key.create",
            "api_key.delete"
        ],
        "the tenant's events, in order"
    );
    for (action, request_id, target) in expected {
        let found = events_with(&events, action);
        assert_eq!(found.len(), 1, "one {action} event: {events:?}");
        let event = found[0];
        assert_eq!(event["result"], "success", "{event}");
        assert_eq!(event["actor"], ADMIN_EMAIL, "{event}");
        assert_eq!(event["tenant_id"], tenant_id.as_str(), "{event}");
        assert_eq!(event["request_id"], request_id.as_str(), "{event}");
        assert_eq!(event["target"], target.as_str(), "{event}");
        assert_eq!(event["hash"].as_str().expect("hash").len(), 64);
    }
    let seqs: Vec<i64> = events
        .iter()
        .map(|e| e["seq"].as_i64().expect("seq"))
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in seq order");
    // The invitation token and the key secret are never written to the trail.
    let text = page.to_string();
    assert!(!text.contains(&app.mail.invitation_token("ops@acme.example").await));
    assert!(!text.contains(key["secret"].as_str().expect("secret")));
}

#[tokio::test]
async fn denials_are_recorded_in_the_tenants_trail() {
    let app = TestApp::spawn().await;
    let acme = app.create_tenant("acme").await;
    app.create_tenant("globex").await;
    let viewer_email = "viewer@acme.example";
    let (_, viewer) = app.member("acme", viewer_email, "viewer").await;
    let outsider_email = "someone@globex.example";
    let (_, outsider) = app.member("globex", outsider_email, "tenant_admin").await;

    let (status, rid, body) = traced(
        &app,
        Method::PATCH,
        "/v1/tenants/acme",
        &viewer,
        Some(json!({"name": "Not yours"})),
        Some("viewer-patch-1"),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(rid, "viewer-patch-1");
    // Not visible: answered 404, still recorded under the tenant that exists.
    let (status, _, _) = traced(
        &app,
        Method::GET,
        "/v1/tenants/acme",
        &outsider,
        None,
        Some("outsider-get-1"),
    )
    .await;
    assert_eq!(status, 404);

    let (status, page) = app.get("/v1/tenants/acme/audit-events", &app.admin).await;
    assert_eq!(status, 200, "{page}");
    let events = page["items"].as_array().expect("items").clone();
    let denied: Vec<&Value> = events.iter().filter(|e| e["result"] == "denied").collect();
    assert_eq!(denied.len(), 2, "{events:?}");
    let patch = denied
        .iter()
        .find(|e| e["request_id"] == "viewer-patch-1")
        .expect("the viewer's denied PATCH");
    assert_eq!(patch["action"], "tenant.update");
    assert_eq!(patch["actor"], viewer_email);
    assert_eq!(patch["tenant_id"], acme["id"]);
    assert_eq!(patch["target"], "tenant/acme");
    let read = denied
        .iter()
        .find(|e| e["request_id"] == "outsider-get-1")
        .expect("the outsider's denied read");
    assert_eq!(read["action"], "tenant.read");
    assert_eq!(read["actor"], outsider_email);
    // The denied PATCH changed nothing.
    let (_, tenant) = app.get("/v1/tenants/acme", &app.admin).await;
    assert_eq!(tenant["name"], "Tenant acme");
}

#[tokio::test]
async fn a_tenant_admin_reads_only_its_tenants_trail() {
    let app = TestApp::spawn().await;
    let acme = app.create_tenant("acme").await;
    let globex = app.create_tenant("globex").await;
    app.api_key("globex", "viewer").await;
    let (_, admin_of_acme) = app
        .member("acme", "boss@acme.example", "tenant_admin")
        .await;
    app.api_key("acme", "viewer").await;

    let (events, _) = walk(&app, "/v1/tenants/acme/audit-events", &admin_of_acme, 50).await;
    assert!(events.len() >= 3, "{events:?}");
    assert!(
        events.iter().all(|e| e["tenant_id"] == acme["id"]),
        "only acme's events: {events:?}"
    );
    let (status, _) = app
        .get("/v1/tenants/globex/audit-events", &admin_of_acme)
        .await;
    assert_eq!(status, 404);
    let (status, body) = app.get("/v1/audit-events", &admin_of_acme).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["type"], "https://bulkhead.dev/problems/forbidden");
    let (status, _) = app.get("/v1/audit-events/verify", &admin_of_acme).await;
    assert_eq!(status, 403);

    let (all, _) = walk(&app, "/v1/audit-events", &app.admin, 200).await;
    assert_eq!(all.len(), stored_seqs(&app).len(), "every stored event");
    for tenant in [&acme, &globex] {
        assert!(all.iter().any(|e| e["tenant_id"] == tenant["id"]));
    }
    assert!(
        all.iter()
            .any(|e| e["tenant_id"].is_null() && e["action"] == "auth.login")
    );
    // The denial of the platform-wide read is itself recorded (platform-wide, no tenant).
    assert!(all.iter().any(|e| {
        e["actor"] == "boss@acme.example"
            && e["action"] == "audit_trail.read"
            && e["result"] == "denied"
            && e["tenant_id"].is_null()
    }));
}

#[tokio::test]
async fn verify_detects_an_edited_row() {
    let app = TestApp::spawn().await;
    for slug in ["acme", "globex", "initech"] {
        app.create_tenant(slug).await;
    }
    app.member("acme", "ops@acme.example", "operator").await;

    let seqs = stored_seqs(&app);
    assert!(seqs.len() >= 6, "{seqs:?}");
    let (status, report) = app.get("/v1/audit-events/verify", &app.admin).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        report,
        json!({"valid": true, "checked": seqs.len(), "first_broken": null})
    );

    // The append-only trigger refuses a plain UPDATE and DELETE.
    let middle_index = seqs.len() / 2;
    let middle = seqs[middle_index];
    let mut conn = app.db();
    let refused = diesel::sql_query(format!(
        "UPDATE audit_events SET target = 'tampered' WHERE seq = {middle}"
    ))
    .execute(&mut conn)
    .expect_err("the trigger must refuse an UPDATE");
    assert!(refused.to_string().contains("append-only"), "{refused}");
    let refused = diesel::sql_query(format!("DELETE FROM audit_events WHERE seq = {middle}"))
        .execute(&mut conn)
        .expect_err("the trigger must refuse a DELETE");
    assert!(refused.to_string().contains("append-only"), "{refused}");
    let (_, report) = app.get("/v1/audit-events/verify", &app.admin).await;
    assert_eq!(report["valid"], true, "{report}");

    // Someone with the power to disable the trigger edits a row: verify names it.
    diesel::sql_query("ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only")
        .execute(&mut conn)
        .expect("disable trigger");
    let changed = diesel::sql_query(format!(
        "UPDATE audit_events SET target = 'tampered' WHERE seq = {middle}"
    ))
    .execute(&mut conn)
    .expect("tamper");
    assert_eq!(changed, 1);
    diesel::sql_query("ALTER TABLE audit_events ENABLE TRIGGER audit_events_append_only")
        .execute(&mut conn)
        .expect("enable trigger");

    let (status, report) = app.get("/v1/audit-events/verify", &app.admin).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["valid"], false, "{report}");
    assert_eq!(report["first_broken"]["seq"], middle, "{report}");
    assert_eq!(
        report["first_broken"]["kind"], "content_mismatch",
        "{report}"
    );
    assert_eq!(
        report["checked"],
        middle_index + 1,
        "rows up to the broken one"
    );
    let (_, all) = app.get("/v1/audit-events?limit=200", &app.admin).await;
    let tampered = all["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|e| e["seq"] == middle)
        .expect("tampered row listed");
    assert_eq!(report["first_broken"]["id"], tampered["id"]);
}

#[tokio::test]
async fn audit_events_page_in_order_without_duplicates() {
    let app = TestApp::spawn().await;
    for slug in ["acme", "globex"] {
        app.create_tenant(slug).await;
    }
    for role in ["viewer", "approver", "billing"] {
        app.api_key("acme", role).await;
    }
    let stored = stored_seqs(&app);
    assert!(stored.len() >= 7, "{stored:?}");

    let (items, pages) = walk(&app, "/v1/audit-events", &app.admin, 2).await;
    let seqs: Vec<i64> = items
        .iter()
        .map(|e| e["seq"].as_i64().expect("seq"))
        .collect();
    assert_eq!(seqs, stored, "all events, once each, in append order");
    assert_eq!(pages, stored.len().div_ceil(2));

    // A tenant's trail pages the same way.
    let (items, _) = walk(&app, "/v1/tenants/acme/audit-events", &app.admin, 2).await;
    let seqs: Vec<i64> = items
        .iter()
        .map(|e| e["seq"].as_i64().expect("seq"))
        .collect();
    assert_eq!(seqs.len(), 4, "tenant.create + three api_key.create");
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
}

#[tokio::test]
async fn verify_detects_a_removed_row() {
    let app = TestApp::spawn().await;
    for slug in ["acme", "globex", "initech", "umbrella"] {
        app.create_tenant(slug).await;
    }
    let seqs = stored_seqs(&app);
    let removed_index = seqs.len() / 2;
    let mut conn = app.db();
    diesel::sql_query("ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only")
        .execute(&mut conn)
        .expect("disable trigger");
    let removed = diesel::sql_query(format!(
        "DELETE FROM audit_events WHERE seq = {}",
        seqs[removed_index]
    ))
    .execute(&mut conn)
    .expect("remove a row");
    assert_eq!(removed, 1);
    diesel::sql_query("ALTER TABLE audit_events ENABLE TRIGGER audit_events_append_only")
        .execute(&mut conn)
        .expect("enable trigger");

    // The row after the gap no longer chains onto its predecessor.
    let (status, report) = app.get("/v1/audit-events/verify", &app.admin).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["valid"], false, "{report}");
    assert_eq!(report["first_broken"]["seq"], seqs[removed_index + 1]);
    assert_eq!(report["first_broken"]["kind"], "prev_hash_mismatch");
    assert_eq!(report["checked"], removed_index + 1);
}

#[tokio::test]
async fn concurrent_writes_keep_the_chain_valid() {
    let app = TestApp::spawn_with(|config| config.login_max_failures = 1000).await;
    let mut writes = tokio::task::JoinSet::new();
    for i in 0..10 {
        let create = app
            .client
            .post(app.url("/v1/tenants"))
            .bearer_auth(&app.admin)
            .json(
                &json!({"slug": format!("tenant-{i}"), "name": format!("Tenant {i}"),
                          "tier": "shared", "region": "eu-west-1"}),
            );
        writes.spawn(async move { (201, create.send().await.expect("create").status()) });
        let failed_login = app
            .client
            .post(app.url("/v1/auth/login"))
            .json(&json!({"email": ADMIN_EMAIL, "password": format!("wrong-{i}")}));
        writes.spawn(async move { (401, failed_login.send().await.expect("login").status()) });
    }
    for (expected, status) in writes.join_all().await {
        assert_eq!(status.as_u16(), expected);
    }
    let stored = stored_seqs(&app);
    let (status, report) = app.get("/v1/audit-events/verify", &app.admin).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        report,
        json!({"valid": true, "checked": stored.len(), "first_broken": null})
    );
    let (all, _) = walk(&app, "/v1/audit-events", &app.admin, 200).await;
    assert_eq!(events_with(&all, "tenant.create").len(), 10);
    assert_eq!(
        all.iter()
            .filter(|e| e["action"] == "auth.login" && e["result"] == "denied")
            .count(),
        10
    );
}
