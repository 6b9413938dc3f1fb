//! HTTPS: the API serves TLS with the configured certificate and key (rustls), and only TLS.

use crate::helpers::{ADMIN_EMAIL, ADMIN_PASSWORD, TestApp};
use bulkhead_core::config::TlsFiles;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;

/// A self-signed certificate for `localhost` written to a fresh temporary directory, removed
/// when dropped (also when the test fails).
struct SelfSigned {
    dir: PathBuf,
    cert_pem: String,
    files: TlsFiles,
}

impl SelfSigned {
    fn localhost() -> SelfSigned {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
            .expect("generate a self-signed certificate");
        let cert_pem = certified.cert.pem();
        let key_pem = certified.signing_key.serialize_pem();
        let dir = std::env::temp_dir().join(format!(
            "bulkhead-tls-test-{}",
            uuid::Uuid::now_v7().simple()
        ));
        std::fs::create_dir(&dir).expect("create temporary directory");
        let files = TlsFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        std::fs::write(&files.cert, &cert_pem).expect("write certificate");
        std::fs::write(&files.key, key_pem).expect("write key");
        SelfSigned {
            dir,
            cert_pem,
            files,
        }
    }
}

impl Drop for SelfSigned {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn serves_https_with_the_configured_certificate() {
    let tls = SelfSigned::localhost();
    let files = tls.files.clone();
    let app = TestApp::spawn_with(move |config| config.tls = Some(files)).await;
    assert!(app.base.starts_with("https://localhost:"), "{}", app.base);

    let trusted = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(tls.cert_pem.as_bytes()).expect("certificate PEM"),
        )
        .timeout(Duration::from_secs(10))
        .build()
        .expect("HTTPS client");

    let response = trusted
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("GET /healthz over HTTPS");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body, json!({"status": "ok"}));

    let response = trusted
        .post(app.url("/v1/auth/login"))
        .json(&json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}))
        .send()
        .await
        .expect("login over HTTPS");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("login body");
    let token = body["access_token"].as_str().expect("access_token");
    assert!(token.starts_with("bkt_"));
    let response = trusted
        .get(app.url("/v1/me"))
        .bearer_auth(token)
        .send()
        .await
        .expect("GET /v1/me over HTTPS");
    assert_eq!(response.status(), 200);
    let me: Value = response.json().await.expect("me");
    assert_eq!(me["email"], ADMIN_EMAIL);

    // A client that does not trust the certificate refuses the connection.
    let untrusting = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let refused = untrusting.get(app.url("/healthz")).send().await;
    assert!(
        refused.is_err(),
        "an untrusted self-signed certificate must fail: {refused:?}"
    );

    // Plain HTTP to the HTTPS port gets no HTTP answer.
    let plain_url = app.url("/healthz").replacen("https://", "http://", 1);
    let plain = untrusting.get(&plain_url).send().await;
    assert!(
        plain.is_err(),
        "plain HTTP to the HTTPS port must fail: {plain:?}"
    );
}

#[tokio::test]
async fn a_missing_or_mismatched_key_stops_start_up() {
    let tls = SelfSigned::localhost();
    let other = SelfSigned::localhost();
    // Build the service directly (TestApp panics on failure); `build_on` needs a pool, so
    // borrow a test app's database.
    let app = TestApp::spawn().await;
    let pool = bulkhead_core::db::connect(&app.db_url, 2).expect("pool");
    for (files, expected) in [
        (
            TlsFiles {
                cert: tls.files.cert.clone(),
                key: other.files.key.clone(),
            },
            "BULKHEAD_TLS_CERT/BULKHEAD_TLS_KEY",
        ),
        (
            TlsFiles {
                cert: tls.files.cert.clone(),
                key: tls.dir.join("missing.pem"),
            },
            "BULKHEAD_TLS_KEY",
        ),
        (
            TlsFiles {
                cert: tls.files.key.clone(),
                key: tls.files.key.clone(),
            },
            "BULKHEAD_TLS_CERT",
        ),
    ] {
        let mut config =
            bulkhead_core::config::Config::from_lookup(|_| None).expect("default config");
        config.database_url = app.db_url.clone();
        config.http_workers = 1;
        config.tls = Some(files);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let error = match bulkhead_api::build_on(config, pool.clone(), listener).await {
            Ok(_) => panic!("start-up must fail for a bad TLS configuration ({expected})"),
            Err(error) => format!("{error:#}"),
        };
        assert!(error.contains(expected), "{expected}: {error}");
    }
}
