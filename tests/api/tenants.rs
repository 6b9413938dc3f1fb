//! Tenants through HTTP: create, idempotency, listing, update, offboarding.

use crate::helpers::TestApp;
use serde_json::json;

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
