//! The OpenAPI document as partners' generators consume it: every operation has a unique,
//! stable `operationId`. `BULKHEAD_OPENAPI_OUT=<file>` writes the served document there (CI
//! runs `openapi-spec-validator` on it).

use crate::helpers::TestApp;
use std::collections::BTreeMap;

#[tokio::test]
async fn every_operation_has_a_unique_operation_id() {
    let app = TestApp::spawn().await;
    let (status, document) = app.get("/openapi.json", &app.admin).await;
    assert_eq!(status, 200);
    if let Some(out) = std::env::var_os("BULKHEAD_OPENAPI_OUT") {
        std::fs::write(&out, document.to_string()).expect("write the OpenAPI document");
    }
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    let paths = document["paths"].as_object().expect("paths");
    for (path, item) in paths {
        for (method, operation) in item.as_object().expect("path item") {
            let where_ = format!("{} {path}", method.to_uppercase());
            let id = operation["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{where_} has no operationId"))
                .to_owned();
            assert!(
                id.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                    && id.chars().all(|c| c.is_ascii_alphanumeric()),
                "{where_}: operationId {id:?} is not lowerCamelCase"
            );
            if let Some(other) = seen.insert(id.clone(), where_.clone()) {
                panic!("operationId {id:?} is used by {other} and {where_}");
            }
        }
    }
    assert_eq!(seen.len(), 35, "{seen:?}");
    for id in [
        "createTenant",
        "listEnvironments",
        "getEnvironmentIsolation",
        "cancelJob",
    ] {
        assert!(seen.contains_key(id), "{id} missing: {seen:?}");
    }
}
