//! Fair use: one principal's flood is answered 429 with when to come back, and nobody else
//! waits for it; requests without a valid credential are counted per client address.

use crate::helpers::{TestApp, USER_PASSWORD};
use bulkhead_core::limits::{Rate, RateLimits};
use serde_json::json;

/// Buckets that do not refill within a test: what got through is exactly the burst.
fn tight(principal_burst: u32, anonymous_burst: u32) -> RateLimits {
    RateLimits {
        principal: Rate {
            per_minute: 1,
            burst: principal_burst,
        },
        anonymous: Rate {
            per_minute: 1,
            burst: anonymous_burst,
        },
    }
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn a_principal_over_its_rate_gets_429_and_the_others_do_not_wait() {
    // The admin logs in (one anonymous request) and creates a user (who logs in: another).
    let app = TestApp::spawn_with(|config| config.limits.rate = tight(5, 10)).await;
    app.create_tenant("acme").await;
    let (_, session) = app.member("acme", "ops@acme.test", "viewer").await;

    let mut seen = Vec::new();
    let mut refused = None;
    for _ in 0..10 {
        let response = app
            .client
            .get(app.url("/v1/me"))
            .bearer_auth(&session)
            .send()
            .await
            .expect("request");
        if response.status() == 429 {
            refused = Some(response);
            break;
        }
        assert_eq!(response.status(), 200);
        assert_eq!(
            header(&response, "ratelimit-policy"),
            "\"principal\";q=5;w=300"
        );
        seen.push(header(&response, "ratelimit"));
    }
    // A new account: its invitation and login were anonymous; its own bucket was full.
    assert_eq!(seen.len(), 5, "exactly the burst gets through: {seen:?}");
    assert!(seen[0].starts_with("\"principal\";r=4;t="), "{seen:?}");
    assert!(
        seen.last()
            .expect("one")
            .starts_with("\"principal\";r=0;t="),
        "{seen:?}"
    );
    let refused = refused.expect("the flood is refused within ten requests");
    let retry_after: u64 = header(&refused, "retry-after")
        .parse()
        .expect("Retry-After");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert!(header(&refused, "ratelimit").starts_with("\"principal\";r=0;t="));
    assert_eq!(header(&refused, "content-type"), "application/problem+json");
    let problem: serde_json::Value = refused.json().await.expect("problem");
    assert_eq!(
        problem["type"],
        "https://bulkhead.dev/problems/rate-limited"
    );
    assert_eq!(problem["status"], 429);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("retry in"),
        "{problem}"
    );

    // The admin (another principal) is not slowed by it.
    let (status, _) = app.get("/v1/tenants/acme", &app.admin).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn anonymous_requests_and_bad_tokens_count_per_address() {
    // The admin's login takes one of the address's four requests.
    let app = TestApp::spawn_with(|config| config.limits.rate = tight(100, 4)).await;
    let wrong_login = || async {
        app.client
            .post(app.url("/v1/auth/login"))
            .json(&json!({"email": "nobody@acme.test", "password": USER_PASSWORD}))
            .send()
            .await
            .expect("login")
    };
    let first = wrong_login().await;
    assert_eq!(first.status(), 401);
    assert_eq!(
        header(&first, "ratelimit-policy"),
        "\"anonymous\";q=4;w=240"
    );
    // A made-up bearer token costs the address too.
    let (status, _) = app.get("/v1/me", "bk_at_made-up").await;
    assert_eq!(status, 401);
    // An Authorization header does not take a login out of the address's bucket.
    let with_header = app
        .client
        .post(app.url("/v1/auth/login"))
        .bearer_auth("anything")
        .json(&json!({"email": "nobody@acme.test", "password": USER_PASSWORD}))
        .send()
        .await
        .expect("login");
    assert_eq!(with_header.status(), 401);
    let refused = wrong_login().await;
    assert_eq!(refused.status(), 429);
    assert!(header(&refused, "retry-after").parse::<u64>().is_ok());
    let (status, problem) = app.get("/v1/me", "bk_at_made-up").await;
    assert_eq!(status, 429, "{problem}");

    // Probes stay answered, and a valid credential has its own bucket.
    let health = app
        .client
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("health");
    assert_eq!(health.status(), 200);
    let (status, _) = app.get("/v1/me", &app.admin).await;
    assert_eq!(status, 200);
}
