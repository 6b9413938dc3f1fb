//! What the contract fuzzer (`.ci/fuzz`, Schemathesis) found, each pinned through HTTP: the
//! server answers what the OpenAPI document says, and takes what it says it takes.

use crate::helpers::TestApp;
use reqwest::Method;
use serde_json::{Value, json};

/// Sends `body` as raw JSON text (numbers as written, arrays, `null`).
async fn raw(app: &TestApp, method: Method, path: &str, body: &str) -> (u16, Value) {
    let response = app
        .client
        .request(method, app.url(path))
        .bearer_auth(&app.admin)
        .header("Content-Type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn another_method_on_a_documented_path_is_405_with_allow() {
    let app = TestApp::spawn().await;
    app.create_tenant("acme").await;
    for (method, path, allow) in [
        ("TRACE", "/healthz", "GET"),
        ("PUT", "/v1/tenants", "GET, POST"),
        ("POST", "/v1/tenants/acme", "DELETE, GET, PATCH"),
        ("GET", "/v1/auth/login", "POST"),
        ("PATCH", "/v1/tenants/acme/members/someone", "DELETE"),
        ("DELETE", "/openapi.json", "GET"),
    ] {
        let response = app
            .client
            .request(
                Method::from_bytes(method.as_bytes()).expect("method"),
                app.url(path),
            )
            .bearer_auth(&app.admin)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status().as_u16(), 405, "{method} {path}");
        assert_eq!(response.headers()["allow"], allow, "{method} {path}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let body: Value = response.json().await.expect("problem");
        assert_eq!(
            body["type"], "https://bulkhead.dev/problems/method-not-allowed",
            "{body}"
        );
    }
    // A path the document does not have is still 404.
    let (status, _) = app.get("/v1/tenants/acme/nothing-here", &app.admin).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn bodies_are_objects_and_whole_numbers_may_be_written_as_floats() {
    let app = TestApp::spawn().await;
    app.create_tenant("acme").await;
    // serde would read a struct's fields from an array: the document says object.
    let (status, body) = raw(&app, Method::PUT, "/v1/tenants/acme/quotas", "[null, null]").await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = raw(
        &app,
        Method::POST,
        "/v1/tenants",
        r#"["acme-two", "Acme", "shared", "eu-west-1"]"#,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    // JSON Schema's `integer` takes 90.0; so does the server. A fraction does not fit.
    let (status, body) = raw(
        &app,
        Method::PUT,
        "/v1/tenants/acme/quotas",
        r#"{"environments": 7.0, "members": 1e2}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let limits: Vec<_> = body["quotas"]
        .as_array()
        .expect("quotas")
        .iter()
        .map(|q| (q["quota"].clone(), q["limit"].clone()))
        .collect();
    assert!(
        limits.contains(&(json!("environments"), json!(7))),
        "{body}"
    );
    assert!(limits.contains(&(json!("members"), json!(100))), "{body}");
    let (status, _) = raw(
        &app,
        Method::PUT,
        "/v1/tenants/acme/quotas",
        r#"{"environments": 7.5}"#,
    )
    .await;
    assert_eq!(status, 400);
    // cost_tags is an object or absent, as documented; `null` was taken as absent.
    let (status, body) = raw(
        &app,
        Method::PATCH,
        "/v1/tenants/acme",
        r#"{"cost_tags": null}"#,
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errors"][0]["field"], "cost_tags", "{body}");
    let (status, body) = raw(
        &app,
        Method::POST,
        "/v1/tenants",
        r#"{"slug": "acme-two", "name": "Acme", "tier": "shared", "region": "eu-west-1",
            "cost_tags": null}"#,
    )
    .await;
    assert_eq!(status, 422, "{body}");
    // blueprint_version is in range even when no blueprint is named (it was then ignored).
    for version in ["0", "2147483648"] {
        let (status, body) = raw(
            &app,
            Method::POST,
            "/v1/tenants/acme/environments",
            &format!(r#"{{"name": "erp", "stage": "staging", "blueprint_version": {version}}}"#),
        )
        .await;
        assert_eq!(status, 422, "{version}: {body}");
        assert_eq!(body["errors"][0]["field"], "blueprint_version", "{body}");
    }
    // Apply's optional body may be `null`, as its schema allows.
    let env = app.create_environment("acme", "erp").await;
    let env_id = env["environment"]["id"].as_str().expect("id");
    let (status, body) = raw(
        &app,
        Method::POST,
        &format!("/v1/tenants/acme/environments/{env_id}/apply"),
        "null",
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let (status, _) = raw(
        &app,
        Method::POST,
        &format!("/v1/tenants/acme/environments/{env_id}/apply"),
        "[]",
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn list_parameters_are_as_documented() {
    let app = TestApp::spawn().await;
    let tenant = app.create_tenant("acme").await;
    let id = tenant["id"].as_str().expect("id");
    let simple = id.replace('-', "");
    for (path, fine) in [
        ("/v1/tenants?limit=200".to_owned(), true),
        (format!("/v1/tenants?cursor={id}"), true),
        ("/v1/tenants/acme/audit-events?cursor=12".to_owned(), true),
        ("/v1/tenants?limit=0".to_owned(), false),
        ("/v1/tenants?limit=201".to_owned(), false),
        // `format: uuid` is the hyphenated form; the cursor of a sequence is digits.
        (format!("/v1/tenants?cursor={simple}"), false),
        (format!("/v1/tenants?cursor=%7B{id}%7D"), false),
        (
            "/v1/tenants/acme/audit-events?cursor=%2B12".to_owned(),
            false,
        ),
        ("/v1/tenants/acme/audit-events?cursor=-1".to_owned(), false),
    ] {
        let (status, body) = app.get(&path, &app.admin).await;
        let expected = if fine { 200 } else { 422 };
        assert_eq!(status, expected, "{path}: {body}");
    }
    // Ids in paths too: another form of the id names nothing.
    let (status, _) = app.get(&format!("/v1/tenants/{id}"), &app.admin).await;
    assert_eq!(status, 200);
    let (status, _) = app
        .get(&format!("/v1/tenants/acme/jobs/{simple}"), &app.admin)
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn headers_and_tokens_are_checked_as_documented() {
    let app = TestApp::spawn().await;
    // An Idempotency-Key is visible ASCII and spaces (the document's pattern); a tab is not.
    for (key, expected) in [("a b~!", 201), ("a\tb", 422)] {
        let response = app
            .client
            .post(app.url("/v1/tenants"))
            .bearer_auth(&app.admin)
            .header("Idempotency-Key", key)
            .json(
                &json!({"slug": format!("t-{expected}"), "name": "T", "tier": "shared",
                          "region": "eu-west-1"}),
            )
            .send()
            .await
            .expect("request");
        assert_eq!(response.status().as_u16(), expected, "{key:?}");
    }
    // Every operation that reads an Idempotency-Key documents the 422 a bad or reused key gets
    // (destroyEnvironment did not).
    let (_, document) = app.get("/openapi.json", &app.admin).await;
    for (path, item) in document["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("item") {
            let keyed = operation["parameters"]
                .as_array()
                .is_some_and(|ps| ps.iter().any(|p| p["name"] == "Idempotency-Key"));
            if keyed {
                assert!(
                    operation["responses"]["422"].is_object(),
                    "{method} {path} documents no 422"
                );
            }
        }
    }
    app.create_tenant("keyed").await;
    let env = app.create_environment("keyed", "erp").await;
    let response = app
        .client
        .delete(app.url(&format!(
            "/v1/tenants/keyed/environments/{}",
            env["environment"]["id"].as_str().expect("id")
        )))
        .bearer_auth(&app.admin)
        .header("Idempotency-Key", "a\tb")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status().as_u16(), 422);
    // An unknown invitation token is 404 whatever the password: the token is looked up first.
    let response = app
        .client
        .post(app.url("/v1/auth/accept-invitation"))
        .json(&json!({"token": "bki_nothing", "password": "short"}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status().as_u16(), 404);
}
