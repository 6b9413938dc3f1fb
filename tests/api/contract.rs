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
    // Lists are typed: an array of objects refers to the item's named schema.
    let schemas = document["components"]["schemas"]
        .as_object()
        .expect("schemas");
    for (name, schema) in schemas {
        for (field, property) in schema["properties"].as_object().into_iter().flatten() {
            assert!(
                property["items"]["properties"].is_null(),
                "{name}.{field}: array items are an inline object; refer to a named schema"
            );
        }
    }
    for id in [
        "createTenant",
        "listEnvironments",
        "getEnvironmentIsolation",
        "cancelJob",
    ] {
        assert!(seen.contains_key(id), "{id} missing: {seen:?}");
    }
}

/// The served document is committed (`tests/api/openapi.snapshot.json`): a change to the
/// contract shows in review. Additive changes only within `/v1` (see the README); rewrite the
/// snapshot with `BULKHEAD_BLESS=1 cargo test --test api openapi_snapshot`.
#[tokio::test]
async fn openapi_snapshot_matches_the_served_document() {
    let app = TestApp::spawn().await;
    let (status, document) = app.get("/openapi.json", &app.admin).await;
    assert_eq!(status, 200);
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/api/openapi.snapshot.json");
    let served = serde_json::to_string_pretty(&document).expect("JSON") + "\n";
    if std::env::var_os("BULKHEAD_BLESS").is_some() {
        std::fs::write(&path, &served).expect("write the snapshot");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != served {
        let first = committed
            .lines()
            .zip(served.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| committed.lines().count().min(served.lines().count()));
        panic!(
            "the served OpenAPI document differs from tests/api/openapi.snapshot.json from line {}: \
             committed {:?}, served {:?}. If the change is intended (additive within /v1), run \
             BULKHEAD_BLESS=1 cargo test --test api openapi_snapshot and commit the snapshot",
            first + 1,
            committed.lines().nth(first).unwrap_or("(end)"),
            served.lines().nth(first).unwrap_or("(end)")
        );
    }
}
