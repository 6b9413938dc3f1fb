//! Bad input through HTTP: every rejected request answers problem+json with the right status
//! and `type`, and writes nothing (no tenant, no audit event).

use crate::helpers::TestApp;
use serde_json::{Value, json};

const PROBLEM: &str = "https://bulkhead.dev/problems/";

struct Reply {
    status: u16,
    content_type: String,
    text: String,
    body: Value,
}

impl Reply {
    async fn from(response: reqwest::Response) -> Reply {
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let text = response.text().await.expect("response body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            content_type,
            text,
            body,
        }
    }

    /// Asserts a problem+json answer with one of `statuses`, and of `kind` if given.
    fn assert_problem(&self, statuses: &[u16], kind: Option<&str>, what: &str) {
        assert!(
            statuses.contains(&self.status),
            "{what}: status {} not in {statuses:?}: {}",
            self.status,
            self.text
        );
        assert_eq!(
            self.content_type, "application/problem+json",
            "{what}: content type of {}",
            self.text
        );
        assert_eq!(self.body["status"], self.status, "{what}: {}", self.text);
        let kind_uri = self.body["type"].as_str().expect("problem type");
        assert!(kind_uri.starts_with(PROBLEM), "{what}: {kind_uri}");
        if let Some(kind) = kind {
            assert_eq!(
                kind_uri,
                format!("{PROBLEM}{kind}"),
                "{what}: {}",
                self.text
            );
        }
        assert!(self.body["title"].is_string() && self.body["detail"].is_string());
    }

    fn fields(&self) -> Vec<String> {
        self.body["errors"]
            .as_array()
            .map(|errors| {
                errors
                    .iter()
                    .map(|e| e["field"].as_str().expect("field").to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// POST /v1/tenants as the admin with a raw body and content type.
async fn post_raw(app: &TestApp, content_type: Option<&str>, body: impl Into<Vec<u8>>) -> Reply {
    let mut request = app
        .client
        .post(app.url("/v1/tenants"))
        .bearer_auth(&app.admin)
        .body(body.into());
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    Reply::from(request.send().await.expect("request")).await
}

async fn post_json(app: &TestApp, body: &Value) -> Reply {
    post_raw(app, Some("application/json"), body.to_string()).await
}

/// Rows in the tables a rejected request must not touch.
fn written(app: &TestApp) -> (i64, i64) {
    (app.count("tenants"), app.count("audit_events"))
}

fn valid_tenant() -> Value {
    json!({"slug": "acme", "name": "Acme", "tier": "shared", "region": "eu-west-1",
           "cost_tags": {"cost_center": "cc-1"}})
}

#[tokio::test]
async fn malformed_json_is_a_400_problem() {
    let app = TestApp::spawn().await;
    let before = written(&app);
    for body in [r#"{"slug":"#, "", "not json", r#"{"slug": "acme",}"#, "[]"] {
        let reply = post_raw(&app, Some("application/json"), body).await;
        reply.assert_problem(&[400], Some("malformed-request"), body);
    }
    // The same mapping holds on the unauthenticated endpoints.
    let response = app
        .client
        .post(app.url("/v1/auth/login"))
        .header("content-type", "application/json")
        .body(r#"{"email":"#)
        .send()
        .await
        .expect("request");
    Reply::from(response)
        .await
        .assert_problem(&[400], Some("malformed-request"), "login");
    assert_eq!(written(&app), before);
}

#[tokio::test]
async fn wrong_types_and_unknown_fields_are_rejected() {
    let app = TestApp::spawn().await;
    let before = written(&app);
    let mut wrong_tier = valid_tenant();
    wrong_tier["tier"] = json!(5);
    post_json(&app, &wrong_tier)
        .await
        .assert_problem(&[400, 422], None, "tier: 5");
    let mut wrong_slug = valid_tenant();
    wrong_slug["slug"] = json!(["acme"]);
    post_json(&app, &wrong_slug)
        .await
        .assert_problem(&[400, 422], None, "slug: array");
    let mut wrong_tags = valid_tenant();
    wrong_tags["cost_tags"] = json!("x");
    let reply = post_json(&app, &wrong_tags).await;
    reply.assert_problem(&[400, 422], None, "cost_tags: \"x\"");
    if reply.status == 422 {
        assert_eq!(reply.fields(), ["cost_tags"]);
    }
    let mut missing = valid_tenant();
    missing
        .as_object_mut()
        .expect("object")
        .remove("region")
        .expect("region");
    post_json(&app, &missing)
        .await
        .assert_problem(&[400, 422], None, "missing region");

    let mut unknown = valid_tenant();
    unknown["owner"] = json!("someone");
    post_json(&app, &unknown).await.assert_problem(
        &[400],
        Some("malformed-request"),
        "unknown field",
    );
    assert_eq!(written(&app), before);
    // The well-formed body is accepted, so the rejections above were about the changes.
    assert_eq!(post_json(&app, &valid_tenant()).await.status, 201);
}

#[tokio::test]
async fn an_oversized_body_is_413() {
    let app = TestApp::spawn().await;
    let before = written(&app);
    let mut huge = valid_tenant();
    huge["name"] = json!("n".repeat(100 * 1024));
    let reply = post_json(&app, &huge).await;
    reply.assert_problem(&[413], Some("payload-too-large"), "100 KiB name");
    // Just under the limit, the body is read and the name judged on its own merits.
    let mut long = valid_tenant();
    long["name"] = json!("n".repeat(60 * 1024));
    let reply = post_json(&app, &long).await;
    reply.assert_problem(&[422], Some("validation-failed"), "60 KiB name");
    assert_eq!(reply.fields(), ["name"]);
    assert_eq!(written(&app), before);
}

#[tokio::test]
async fn a_body_that_is_not_declared_json_is_refused() {
    let app = TestApp::spawn().await;
    let before = written(&app);
    let body = valid_tenant().to_string();
    post_raw(&app, None, body.clone())
        .await
        .assert_problem(&[400, 415], None, "no content type");
    post_raw(&app, Some("text/plain"), body.clone())
        .await
        .assert_problem(&[400, 415], None, "text/plain");
    post_raw(&app, Some("application/x-www-form-urlencoded"), "slug=acme")
        .await
        .assert_problem(&[400, 415], None, "form");
    assert_eq!(written(&app), before);
}

#[tokio::test]
async fn bad_slugs_are_422_on_the_slug_field() {
    let app = TestApp::spawn().await;
    let before = written(&app);
    let bad = [
        "acme'".to_owned(),
        "ac\"me".to_owned(),
        "a,b,c".to_owned(),
        "acme*".to_owned(),
        "acmé".to_owned(),
        "1acme".to_owned(),
        "-acme".to_owned(),
        "Acme".to_owned(),
        "ACME".to_owned(),
        "ab".to_owned(),
        "ac me".to_owned(),
        "acme;drop".to_owned(),
        String::new(),
        "a".repeat(41),
        "a".repeat(64),
        "a".repeat(300),
    ];
    for slug in bad {
        let mut body = valid_tenant();
        body["slug"] = json!(slug);
        let reply = post_json(&app, &body).await;
        reply.assert_problem(&[422], Some("validation-failed"), &format!("slug {slug:?}"));
        assert_eq!(reply.fields(), ["slug"], "slug {slug:?}");
    }
    assert_eq!(written(&app), before);
    // The boundaries themselves are fine.
    for slug in ["abc".to_owned(), format!("a{}", "b".repeat(39))] {
        let mut body = valid_tenant();
        body["slug"] = json!(slug);
        assert_eq!(post_json(&app, &body).await.status, 201, "slug {slug}");
    }
}

#[tokio::test]
async fn bad_tier_region_and_cost_tags_list_every_field() {
    let app = TestApp::spawn().await;
    let before = written(&app);
    let body = json!({
        "slug": "Bad Slug",
        "name": "   ",
        "tier": "platinum",
        "region": "Europe",
        "cost_tags": {"Cost Center": "x", "9lives": "y", "ok_key": 5, "fine": "yes"}
    });
    let reply = post_json(&app, &body).await;
    reply.assert_problem(&[422], Some("validation-failed"), "many bad fields");
    let mut fields = reply.fields();
    fields.sort();
    assert_eq!(
        fields,
        [
            "cost_tags.9lives",
            "cost_tags.Cost Center",
            "cost_tags.ok_key",
            "name",
            "region",
            "slug",
            "tier"
        ],
        "{}",
        reply.text
    );
    for error in reply.body["errors"].as_array().expect("errors") {
        assert!(
            !error["message"].as_str().expect("message").is_empty(),
            "{error}"
        );
    }

    for (field, value) in [
        ("tier", json!("Shared")),
        ("region", json!("eu_west_1")),
        ("region", json!(format!("eu-{}", "a".repeat(40)))),
        ("cost_tags", json!(["cost_center"])),
    ] {
        let mut body = valid_tenant();
        body[field] = value.clone();
        let reply = post_json(&app, &body).await;
        reply.assert_problem(
            &[422],
            Some("validation-failed"),
            &format!("{field}: {value}"),
        );
        assert_eq!(reply.fields(), [field], "{field}: {value}");
    }
    let too_many: serde_json::Map<String, Value> =
        (0..51).map(|i| (format!("k{i}"), json!("v"))).collect();
    let mut body = valid_tenant();
    body["cost_tags"] = Value::Object(too_many);
    let reply = post_json(&app, &body).await;
    reply.assert_problem(&[422], Some("validation-failed"), "51 tags");
    assert_eq!(reply.fields(), ["cost_tags"]);

    // A malformed Idempotency-Key is refused before anything is written.
    let response = app
        .client
        .post(app.url("/v1/tenants"))
        .bearer_auth(&app.admin)
        .header("Idempotency-Key", "k".repeat(256))
        .json(&valid_tenant())
        .send()
        .await
        .expect("request");
    let reply = Reply::from(response).await;
    reply.assert_problem(&[422], Some("validation-failed"), "long Idempotency-Key");
    assert_eq!(reply.fields(), ["Idempotency-Key"]);
    assert_eq!(written(&app), before);
}

#[tokio::test]
async fn bad_paging_parameters_are_problems() {
    let app = TestApp::spawn().await;
    app.create_tenant("acme").await;
    let before = written(&app);
    for query in [
        "limit=0",
        "limit=201",
        "limit=-1",
        "limit=abc",
        "limit=1.5",
        "cursor=garbage",
        "cursor=",
        "limit=10&cursor=%27%3B--",
        "colour=blue",
    ] {
        let response = app
            .client
            .get(app.url(&format!("/v1/tenants?{query}")))
            .bearer_auth(&app.admin)
            .send()
            .await
            .expect("request");
        let reply = Reply::from(response).await;
        reply.assert_problem(&[400, 422], None, query);
        if reply.status == 422 {
            let fields = reply.fields();
            assert!(
                fields == ["limit"] || fields == ["cursor"],
                "{query}: {fields:?}"
            );
        }
    }
    for path in [
        "/v1/tenants/acme/audit-events?cursor=abc",
        "/v1/audit-events?limit=0",
        "/v1/tenants/acme/members?cursor=12",
        "/v1/tenants/acme/api-keys?limit=1000",
    ] {
        let (status, body) = app.get(path, &app.admin).await;
        assert!(status == 400 || status == 422, "{path}: {status} {body}");
    }
    // The edges of the range are fine.
    for query in ["limit=1", "limit=200"] {
        let (status, body) = app.get(&format!("/v1/tenants?{query}"), &app.admin).await;
        assert_eq!(status, 200, "{query}: {body}");
    }
    assert_eq!(written(&app), before);
}

#[tokio::test]
async fn an_unknown_route_is_a_404_problem() {
    let app = TestApp::spawn().await;
    for path in [
        "/nope",
        "/v1/nope",
        "/v2/tenants",
        "/v1/tenants/acme/environments",
    ] {
        let response = app
            .client
            .get(app.url(path))
            .bearer_auth(&app.admin)
            .send()
            .await
            .expect("request");
        let reply = Reply::from(response).await;
        reply.assert_problem(&[404], Some("not-found"), path);
    }
    // Without credentials too: an unknown route is not an authentication question.
    let response = app
        .client
        .get(app.url("/v1/nope"))
        .send()
        .await
        .expect("request");
    Reply::from(response)
        .await
        .assert_problem(&[404], Some("not-found"), "anonymous");
}

/// An unauthenticated or unauthorized caller learns nothing about a body's schema: the
/// credential and the permission are checked before the body is parsed.
#[tokio::test]
async fn credentials_and_permissions_are_checked_before_the_body() {
    let app = TestApp::spawn().await;
    app.create_tenant("acme").await;
    let (_, viewer) = app.member("acme", "viewer@acme.test", "viewer").await;
    for (token, expected) in [("bkt_nope", 401), (viewer.as_str(), 403)] {
        for (method, path) in [
            (reqwest::Method::POST, "/v1/tenants"),
            (reqwest::Method::PATCH, "/v1/tenants/acme"),
            (reqwest::Method::POST, "/v1/tenants/acme/members"),
            (reqwest::Method::POST, "/v1/tenants/acme/api-keys"),
        ] {
            let response = app
                .client
                .request(method.clone(), app.url(path))
                .bearer_auth(token)
                .header("content-type", "application/json")
                .body(r#"{"nme": "x""#)
                .send()
                .await
                .expect("request");
            assert_eq!(
                response.status().as_u16(),
                expected,
                "{method} {path} with {token:.8}…"
            );
        }
    }
}

/// A NUL in a path reference (PostgreSQL refuses one in text) is a reference to nothing: the
/// same 404 problem as any other unknown one, never a 500, in every path parameter.
#[tokio::test]
async fn a_nul_in_a_path_reference_is_not_found() {
    let app = TestApp::spawn().await;
    app.create_tenant("acme").await;
    app.create_environment("acme", "dev").await;
    use reqwest::Method;
    let (get, post, delete, patch) = (Method::GET, Method::POST, Method::DELETE, Method::PATCH);
    for (method, path) in [
        (&get, "/v1/tenants/%00"),
        (&get, "/v1/tenants/acme%00"),
        (&patch, "/v1/tenants/%00"),
        (&delete, "/v1/tenants/%00"),
        (&get, "/v1/tenants/acme%00/environments"),
        (&get, "/v1/tenants/%00/environments"),
        (&get, "/v1/tenants/acme/environments/%00"),
        (&get, "/v1/tenants/acme/environments/dev%00"),
        (&delete, "/v1/tenants/acme/environments/%00"),
        (&post, "/v1/tenants/acme/environments/%00/plan"),
        (&get, "/v1/tenants/acme/environments/%00/isolation"),
        (&get, "/v1/tenants/acme/jobs/%00"),
        (&get, "/v1/tenants/acme/jobs/%00/events"),
        (&post, "/v1/tenants/acme/jobs/%00/cancel"),
        (&delete, "/v1/tenants/acme/members/%00"),
        (&delete, "/v1/tenants/acme/api-keys/%00"),
        (&get, "/v1/tenants/%00/audit-events"),
        (&post, "/v1/me/invitations/%00/accept"),
        (&post, "/v1/me/invitations/%00/decline"),
    ] {
        let mut request = app
            .client
            .request(method.clone(), app.url(path))
            .bearer_auth(&app.admin);
        if [&post, &patch].contains(&method) {
            request = request.json(&json!({}));
        }
        let reply = Reply::from(request.send().await.expect("request")).await;
        reply.assert_problem(&[404], Some("not-found"), &format!("{method} {path}"));
    }
}

/// Names a portal shows are refused when they carry zero-width or direction-changing
/// characters (U+202E makes "Acme\u{202E}gnp.exe" read as "Acmeexe.png"), with a field error
/// that names the character; nothing is stored.
#[tokio::test]
async fn spoofing_characters_in_names_are_refused() {
    let app = TestApp::spawn().await;
    let tenants_before = app.count("tenants");
    let (status, body) = app
        .post(
            "/v1/tenants",
            &app.admin,
            json!({"slug": "spoof", "name": "Acme\u{202E}gnp.exe", "tier": "shared",
                   "region": "eu-west-1",
                   "cost_tags": {"business_unit": "w\u{200B}ms", "cost_center": "cc-1"}}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        body["type"],
        "https://bulkhead.dev/problems/validation-failed"
    );
    let errors = body["errors"].as_array().expect("errors");
    let field = |name: &str| {
        errors
            .iter()
            .find(|e| e["field"] == name)
            .unwrap_or_else(|| panic!("no error for {name}: {body}"))["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        field("name").contains("U+202E RIGHT-TO-LEFT OVERRIDE"),
        "{body}"
    );
    assert!(
        field("cost_tags.business_unit").contains("direction-changing"),
        "{body}"
    );
    assert_eq!(app.count("tenants"), tenants_before);

    app.create_tenant("acme").await;
    let (status, body) = app
        .post(
            "/v1/tenants/acme/members",
            &app.admin,
            json!({"email": "sam@acme.example", "role": "viewer", "display_name": "Sam\u{2066} Admin"}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errors"][0]["field"], "display_name");
}
