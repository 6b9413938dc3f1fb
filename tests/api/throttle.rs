//! Login throttling as an attacker meets it: attempts are counted in the control database
//! before any password is hashed (so concurrent guesses cannot all slip under the limit), the
//! count holds across API replicas, a lock is per account *and* client address (nobody can
//! lock an account out from elsewhere), and invitation tokens are looked up before hashing.

use crate::helpers::{ADMIN_EMAIL, ADMIN_PASSWORD, TestApp, USER_PASSWORD};
use serde_json::json;

/// POSTs a login from `client`; the answer's status.
pub(crate) async fn login(
    client: &reqwest::Client,
    base: &str,
    email: &str,
    password: &str,
) -> u16 {
    client
        .post(format!("{base}/v1/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .expect("login request")
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_guesses_are_counted_before_hashing() {
    let app = TestApp::spawn_with(|config| config.login_max_failures = 5).await;
    app.create_tenant("acme").await;
    app.member("acme", "ops@acme.example", "operator").await;
    let base = app.base.clone();
    let tasks: Vec<_> = (0..40)
        .map(|_| {
            let (client, base) = (app.client.clone(), base.clone());
            tokio::spawn(async move {
                login(
                    &client,
                    &base,
                    "ops@acme.example",
                    "wrong-guess-wrong-guess",
                )
                .await
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.expect("task"));
    }
    let checked = statuses.iter().filter(|s| **s == 401).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(
        checked, 5,
        "only the limit's worth reached a password check: {statuses:?}"
    );
    assert_eq!(refused, 35, "{statuses:?}");
}

#[tokio::test]
async fn the_count_holds_across_replicas() {
    let app = TestApp::spawn_with(|config| config.login_max_failures = 5).await;
    app.create_tenant("acme").await;
    app.member("acme", "ops@acme.example", "operator").await;
    let other = app.replica().await;
    for base in [&app.base, &other, &app.base, &other, &app.base] {
        assert_eq!(
            login(&app.client, base, "ops@acme.example", "nope-nope-nope").await,
            401
        );
    }
    // The sixth, on either replica, is refused before it is checked.
    assert_eq!(
        login(&app.client, &other, "ops@acme.example", USER_PASSWORD).await,
        429
    );
    assert_eq!(
        login(&app.client, &app.base, "ops@acme.example", USER_PASSWORD).await,
        429
    );
}

#[tokio::test]
async fn nobody_locks_an_account_out_from_another_address() {
    let app = TestApp::spawn_with(|config| config.login_max_failures = 3).await;
    // The attacker (127.0.0.1) fails the admin's password until locked out…
    for _ in 0..3 {
        assert_eq!(
            login(&app.client, &app.base, ADMIN_EMAIL, "guess-guess-guess").await,
            401
        );
    }
    assert_eq!(
        login(&app.client, &app.base, ADMIN_EMAIL, ADMIN_PASSWORD).await,
        429
    );
    // …and the admin, from another address (127.0.0.2), still logs in (after a short delay
    // that grows with the failures against the account).
    let elsewhere = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .expect("client");
    assert_eq!(
        login(&elsewhere, &app.base, ADMIN_EMAIL, ADMIN_PASSWORD).await,
        200
    );
}

#[tokio::test]
async fn invitation_guesses_are_throttled_without_hashing() {
    let app = TestApp::spawn_with(|config| config.login_max_failures = 1).await;
    let mut statuses = Vec::new();
    for i in 0..12 {
        let response = app
            .client
            .post(app.url("/v1/auth/accept-invitation"))
            .json(&json!({"token": format!("bki_{i:064x}"), "password": USER_PASSWORD}))
            .send()
            .await
            .expect("accept");
        statuses.push(response.status().as_u16());
    }
    // Ten tries per window for one address (ten times the limit), then 429.
    assert_eq!(&statuses[..10], &[404; 10], "{statuses:?}");
    assert_eq!(&statuses[10..], &[429, 429], "{statuses:?}");
}

#[tokio::test]
async fn malformed_emails_are_wrong_logins_not_errors() {
    let app = TestApp::spawn().await;
    let long = format!("{}@example.com", "a".repeat(3000));
    for email in [
        long.as_str(),
        "nul\u{0}@example.com",
        "x<admin@bulkhead.test>",
    ] {
        let status = login(&app.client, &app.base, email, "whatever-whatever").await;
        assert_eq!(status, 401, "{:?}", &email[..email.len().min(40)]);
    }
}
