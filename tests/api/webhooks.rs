//! Registering webhooks: where they may point (literal loopback, private and link-local
//! addresses refused with the field named; names are checked at delivery), which events
//! exist, the secret shown once, the per-tenant limit, and deleting one.

use crate::helpers::TestApp;
use serde_json::json;

#[actix_web::test]
async fn webhooks_are_validated_limited_and_their_secret_shown_once() {
    let app = TestApp::spawn().await;
    app.create_tenant("hooked").await;
    let path = "/v1/tenants/hooked/webhooks";
    for (url, events, field) in [
        ("http://127.0.0.1:8080/x", json!(["*"]), "url"),
        (
            "http://169.254.169.254/latest/meta-data",
            json!(["*"]),
            "url",
        ),
        ("http://[::1]/x", json!(["*"]), "url"),
        ("http://localhost/x", json!(["*"]), "url"),
        ("https://user:pw@hooks.example.com/x", json!(["*"]), "url"),
        ("gopher://hooks.example.com/", json!(["*"]), "url"),
        (
            "https://hooks.example.com/x",
            json!(["job.exploded"]),
            "events[0]",
        ),
        ("https://hooks.example.com/x", json!([]), "events"),
    ] {
        let (status, body) = app
            .post(path, &app.admin, json!({"url": url, "events": events}))
            .await;
        assert_eq!(status, 422, "{url} {events}: {body}");
        assert!(
            body["errors"]
                .as_array()
                .is_some_and(|e| e.iter().any(|e| e["field"] == field)),
            "{url}: {body}"
        );
    }
    let mut ids = Vec::new();
    for n in 0..10 {
        let (status, body) = app
            .post(
                path,
                &app.admin,
                json!({"url": format!("https://hooks.example.com/{n}"), "events": ["environment.ready"]}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        assert!(
            body["secret"]
                .as_str()
                .is_some_and(|s| s.starts_with("whsec_"))
        );
        ids.push(body["webhook"]["id"].as_str().expect("id").to_owned());
    }
    let (status, body) = app
        .post(
            path,
            &app.admin,
            json!({"url": "https://hooks.example.com/11", "events": ["*"]}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    let (status, list) = app.get(path, &app.admin).await;
    assert_eq!(status, 200);
    assert_eq!(list["items"].as_array().map(Vec::len), Some(10));
    assert!(!list.to_string().contains("whsec_"), "{list}");
    let (status, _) = app.delete(&format!("{path}/{}", ids[0]), &app.admin).await;
    assert_eq!(status, 204);
    let (status, _) = app.delete(&format!("{path}/{}", ids[0]), &app.admin).await;
    assert_eq!(status, 404);
    let (status, _) = app
        .get(&format!("{path}/{}/deliveries", ids[0]), &app.admin)
        .await;
    assert_eq!(status, 404);
    let (status, deliveries) = app
        .get(&format!("{path}/{}/deliveries", ids[1]), &app.admin)
        .await;
    assert_eq!(status, 200);
    assert_eq!(deliveries["items"], json!([]));
    assert_eq!(
        app.count("audit_events WHERE action = 'webhook.create'"),
        10
    );
}

/// One tenant with ten webhooks full of due events and another with one: a claim takes at most
/// four of the first tenant's (those in flight count), so the other's event goes out at once.
#[actix_web::test]
async fn one_tenants_backlog_takes_at_most_its_share_of_the_senders() {
    let app = TestApp::spawn().await;
    let mut tenants = Vec::new();
    for (slug, hooks) in [("noisy", 10), ("quiet", 1)] {
        let tenant = app.create_tenant(slug).await;
        let id = tenant["id"].as_str().expect("id").to_owned();
        for n in 0..hooks {
            let (status, body) = app
                .post(
                    &format!("/v1/tenants/{slug}/webhooks"),
                    &app.admin,
                    json!({"url": format!("https://hooks.example.com/{slug}/{n}"), "events": ["*"]}),
                )
                .await;
            assert_eq!(status, 201, "{body}");
        }
        tenants.push(id);
    }
    // Fifty events for each of the noisy tenant's webhooks, then one for the quiet one.
    let mut db = app.db();
    for (tenant, events) in [(&tenants[0], 50), (&tenants[1], 1)] {
        diesel::RunQueryDsl::execute(
            diesel::sql_query(format!(
                "SELECT bulkhead_webhook_event('{tenant}', 'environment.ready', 'environments/x', \
                 '{{}}'::jsonb) FROM generate_series(1, {events})"
            )),
            &mut db,
        )
        .expect("events");
    }
    let hold = std::time::Duration::from_secs(60);
    let claimed = bulkhead_core::store::webhooks::claim_due(&mut db, 20, 4, hold).expect("claim");
    let of = |tenant: &str| {
        claimed
            .iter()
            .filter(|d| d.tenant_id.to_string() == tenant)
            .count()
    };
    assert_eq!(of(&tenants[0]), 4, "{claimed:?}");
    assert_eq!(of(&tenants[1]), 1);
    // One per webhook, its oldest: each claimed delivery heads its webhook's line.
    let mut hooks: Vec<_> = claimed.iter().map(|d| d.webhook_id).collect();
    hooks.sort();
    hooks.dedup();
    assert_eq!(hooks.len(), claimed.len());
    // The noisy tenant's four are in flight: the next claim takes none of its others.
    let again = bulkhead_core::store::webhooks::claim_due(&mut db, 20, 4, hold).expect("claim");
    assert!(again.is_empty(), "{again:?}");
}
