//! `/metrics` behind `BULKHEAD_METRICS_TOKEN`: without the token set it stays open (as
//! `tenants.rs` checks); with it set, only `Authorization: Bearer <token>` reads the metrics,
//! and everything else is a 401 problem that shows nothing of them.

use crate::helpers::TestApp;
use serde_json::Value;

const TOKEN: &str = "scrape-token-4f7c2a9e1b";

async fn scrape(app: &TestApp, authorization: Option<&str>) -> (u16, Option<String>, String) {
    let mut request = app.client.get(app.url("/metrics"));
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    let response = request.send().await.expect("metrics request");
    let status = response.status().as_u16();
    let kind = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (status, kind, response.text().await.expect("body"))
}

#[tokio::test]
async fn metrics_need_the_configured_token() {
    let app = TestApp::spawn_with(|config| config.metrics_token = Some(TOKEN.to_owned())).await;

    let (status, kind, body) = scrape(&app, Some(&format!("Bearer {TOKEN}"))).await;
    assert_eq!(status, 200, "{body}");
    assert!(kind.is_some_and(|k| k.starts_with("text/plain")));
    assert!(body.contains("bulkhead_http_requests_total"), "{body}");

    let wrong = format!("Bearer {}x", &TOKEN[..TOKEN.len() - 1]);
    let admin = format!("Bearer {}", app.admin);
    for authorization in [
        None,
        Some(wrong.as_str()),
        Some("Bearer "),
        Some(TOKEN),
        Some(admin.as_str()),
    ] {
        let (status, kind, body) = scrape(&app, authorization).await;
        assert_eq!(status, 401, "{authorization:?}: {body}");
        assert_eq!(kind.as_deref(), Some("application/problem+json"));
        let problem: Value = serde_json::from_str(&body).expect("problem+json");
        assert_eq!(
            problem["type"],
            "https://bulkhead.dev/problems/unauthenticated"
        );
        assert!(
            problem["detail"]
                .as_str()
                .is_some_and(|d| d.contains("BULKHEAD_METRICS_TOKEN")),
            "{problem}"
        );
        assert!(!body.contains("bulkhead_http"), "{body}");
    }
}

#[tokio::test]
async fn without_a_token_metrics_stay_open() {
    let app = TestApp::spawn().await;
    let (status, _, body) = scrape(&app, None).await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = scrape(&app, Some("Bearer anything-at-all")).await;
    assert_eq!(status, 200, "{body}");
}

/// From a live attack: any token is a method to HTTP, and every request is observed (a 405
/// too), so methods taken as sent let anyone, signed in or not, add series to `/metrics`
/// without end. Methods outside the standard ones share one label.
#[tokio::test]
async fn made_up_methods_add_no_series() {
    let app = TestApp::spawn().await;
    for i in 0..5 {
        let method =
            reqwest::Method::from_bytes(format!("ZZMADEUP{i}").as_bytes()).expect("method");
        let response = app
            .client
            .request(method, app.url("/metrics"))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status().as_u16(), 405);
    }
    let (status, _, body) = scrape(&app, None).await;
    assert_eq!(status, 200);
    assert!(!body.contains("ZZMADEUP"), "{body}");
    assert!(
        body.lines()
            .any(|line| line.starts_with("bulkhead_http_requests_total")
                && line.contains("method=\"other\"")
                && line.contains("route=\"/metrics\"")
                && line.contains("status=\"405\"")
                && line.ends_with(" 5")),
        "{body}"
    );
}
