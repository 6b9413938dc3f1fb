//! The blueprint catalog through the API: every shipped blueprint with its versions, limits,
//! baseline and defaults, one by name, and an unknown name as a 404 problem that says where to
//! look.

use crate::helpers::TestApp;
use serde_json::json;

#[actix_web::test]
async fn the_catalog_lists_every_blueprint_and_version() {
    let app = TestApp::spawn().await;
    let (status, body) = app.get("/v1/blueprints", &app.admin).await;
    assert_eq!(status, 200, "{body}");
    let items = body["items"].as_array().expect("items");
    let names: Vec<&str> = items.iter().filter_map(|b| b["name"].as_str()).collect();
    assert!(
        names.contains(&"shared-basic") && names.contains(&"dedicated-basic"),
        "{names:?}"
    );
    let shared = items
        .iter()
        .find(|b| b["name"] == "shared-basic")
        .expect("shared-basic");
    assert_eq!(shared["isolation"], "shared");
    assert_eq!(shared["default"], true);
    let first = &shared["versions"][0];
    assert_eq!(first["version"], 1);
    assert_eq!(
        first["baseline"],
        json!(["0001_orders", "0002_order_lines"])
    );
    assert_eq!(first["limits"]["connection_limit"], 5);
    assert!(first["changes"].is_null(), "{first}");
    let latest = shared["latest_version"].as_u64().expect("latest");
    assert_eq!(
        shared["versions"].as_array().map(Vec::len),
        Some(latest as usize)
    );

    let (status, one) = app.get("/v1/blueprints/shared-basic", &app.admin).await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(&one, shared);

    let (status, problem) = app.get("/v1/blueprints/no-such", &app.admin).await;
    assert_eq!(status, 404, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("GET /v1/blueprints")),
        "{problem}"
    );
}
