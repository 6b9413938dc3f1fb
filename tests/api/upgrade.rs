//! Upgrades through the API (no worker): the version must be a later released one, promotion
//! evidence from the stage before is required, and only a platform admin may override it (with
//! a reason, audited); an accepted upgrade is an apply job naming its version, reviewed as the
//! stage's policy says.

use crate::helpers::TestApp;
use reqwest::Method;
use serde_json::json;

#[actix_web::test]
async fn upgrades_need_a_later_version_and_promotion_evidence_or_an_audited_override() {
    let app = TestApp::spawn().await;
    app.create_tenant("wms-north").await;
    let (status, created) = app
        .post(
            "/v1/tenants/wms-north/environments",
            &app.admin,
            json!({"name": "erp", "stage": "production", "blueprint_version": 1,
                   "cost_tags": {"business_unit": "wms"}}),
        )
        .await;
    assert_eq!(status, 202, "{created}");
    assert_eq!(created["environment"]["blueprint_version"], 1, "{created}");
    let path = "/v1/tenants/wms-north/environments/erp/upgrade";
    let (_, admin) = app
        .member("wms-north", "boss@wms-north.test", "tenant_admin")
        .await;

    let (status, body) = app
        .post(path, &admin, json!({"blueprint_version": 7}))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errors"][0]["field"], "blueprint_version", "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("released: 1, 2")),
        "{body}"
    );
    let (status, body) = app
        .post(path, &admin, json!({"blueprint_version": 1}))
        .await;
    assert_eq!(status, 409, "already there: {body}");
    let (status, body) = app.post(path, &admin, json!({})).await;
    assert!(
        status == 400 || status == 422,
        "no version: {status} {body}"
    );

    // Never ready on staging: refused, naming the missing evidence.
    let (status, body) = app
        .post(path, &admin, json!({"blueprint_version": 2}))
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("staging")),
        "{body}"
    );
    // A tenant admin cannot override (a denial, audited); a platform admin can, with a reason.
    let override_body =
        json!({"blueprint_version": 2, "override_reason": "hotfix for the quarter close"});
    let (status, body) = app.post(path, &admin, override_body.clone()).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = app.post(path, &app.admin, override_body).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["job"]["operation"], "apply", "{body}");
    assert_eq!(body["job"]["blueprint_version"], 2, "{body}");
    assert_eq!(
        body["job"]["approvals_required"], 1,
        "production's default review: {body}"
    );
    let (status, audit) = app
        .call(
            Method::GET,
            "/v1/tenants/wms-north/audit-events?limit=200",
            &app.admin,
            None,
        )
        .await;
    assert_eq!(status, 200, "{audit}");
    let overrides: Vec<_> = audit["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|e| e["action"] == "environment.promotion_override")
        .collect();
    assert_eq!(overrides.len(), 1, "{audit}");
    assert_eq!(
        overrides[0]["details"]["reason"],
        "hotfix for the quarter close"
    );
}
