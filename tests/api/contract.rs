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
    assert_eq!(seen.len(), 64, "{seen:?}");
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

/// Every operation shows an example of each body it takes and answers, and every example
/// validates against its own schema, unknown fields refused: an example cannot drift from
/// the contract. Error bodies are declared with the content type the server sends.
#[tokio::test]
async fn every_body_has_an_example_that_fits_its_schema() {
    let app = TestApp::spawn().await;
    let (status, document) = app.get("/openapi.json", &app.admin).await;
    assert_eq!(status, 200);
    let schemas = document["components"]["schemas"].clone();
    let mut strict = schemas.clone();
    for schema in strict.as_object_mut().expect("schemas").values_mut() {
        if schema.get("properties").is_some() {
            schema["unevaluatedProperties"] = serde_json::json!(false);
        }
    }
    let validate = |name: &str, example: &serde_json::Value| {
        let root = serde_json::json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$ref": format!("#/components/schemas/{name}"),
            "components": { "schemas": strict },
        });
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .build(&root)
            .unwrap_or_else(|e| panic!("{name}: the schema does not compile: {e}"));
        let errors: Vec<String> = validator
            .iter_errors(example)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{name}'s example does not fit its schema: {errors:?}"
        );
    };
    let mut checked = 0;
    for (name, schema) in schemas.as_object().expect("schemas") {
        if let Some(example) = schema.get("example") {
            validate(name, example);
            checked += 1;
        }
    }
    // Every body of every operation refers to a schema that carries an example.
    let referenced = |media: &serde_json::Value| -> Option<String> {
        let schema = &media["schema"];
        let reference = schema["$ref"].as_str().or_else(|| {
            schema["oneOf"]
                .as_array()?
                .iter()
                .find_map(|s| s["$ref"].as_str())
        })?;
        reference.rsplit('/').next().map(str::to_owned)
    };
    let mut bodies = 0;
    for (path, item) in document["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            let where_ = format!("{} {path}", method.to_uppercase());
            let mut contents: Vec<(String, &serde_json::Value)> = Vec::new();
            for (content_type, media) in operation["requestBody"]["content"]
                .as_object()
                .into_iter()
                .flatten()
            {
                contents.push((format!("request {content_type}"), media));
            }
            for (status, response) in operation["responses"].as_object().expect("responses") {
                for (content_type, media) in response["content"].as_object().into_iter().flatten() {
                    if status.starts_with('4') || status.starts_with('5') {
                        assert_eq!(
                            content_type, "application/problem+json",
                            "{where_} {status}: error bodies are problem+json"
                        );
                    }
                    contents.push((format!("{status} {content_type}"), media));
                }
            }
            for (what, media) in contents {
                if media["schema"]["type"] == "string" {
                    continue; // text bodies (metrics, readiness) are not JSON
                }
                bodies += 1;
                let name = referenced(media)
                    .unwrap_or_else(|| panic!("{where_} {what}: the body is not a named schema"));
                assert!(
                    media.get("example").is_some() || schemas[&name].get("example").is_some(),
                    "{where_} {what}: {name} has no example; add one in api/src/examples.rs"
                );
            }
        }
    }
    assert!(checked >= 30, "only {checked} schemas carry an example");
    assert!(bodies >= 60, "only {bodies} bodies were checked");
}
