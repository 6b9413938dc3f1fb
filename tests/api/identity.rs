//! Identity through HTTP: login, lockout, token expiry and revocation, API keys, invitations,
//! membership changes and `GET /v1/me`.

use crate::helpers::{ADMIN_EMAIL, ADMIN_PASSWORD, TestApp, USER_PASSWORD};
use chrono::{DateTime, Utc};
use diesel::RunQueryDsl;
use reqwest::Method;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const PROBLEM: &str = "https://bulkhead.dev/problems/";

/// A response reduced to what the tests look at.
struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    text: String,
    body: Value,
}

impl Reply {
    async fn from(response: reqwest::Response) -> Reply {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.expect("response body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            text,
            body,
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn assert_problem(&self, status: u16, kind: &str) {
        assert_eq!(self.status, status, "status of: {}", self.text);
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "content type of: {}",
            self.text
        );
        assert_eq!(
            self.body["type"],
            format!("{PROBLEM}{kind}"),
            "{}",
            self.text
        );
        assert_eq!(self.body["status"], status, "{}", self.text);
    }
}

async fn login_attempt(app: &TestApp, email: &str, password: &str) -> Reply {
    let response = app
        .client
        .post(app.url("/v1/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .expect("login request");
    Reply::from(response).await
}

async fn accept(app: &TestApp, token: &str, password: &str) -> Reply {
    let response = app
        .client
        .post(app.url("/v1/auth/accept-invitation"))
        .json(&json!({"token": token, "password": password}))
        .send()
        .await
        .expect("accept invitation request");
    Reply::from(response).await
}

async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> Reply {
    let mut request = app.client.request(method, app.url(path)).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    Reply::from(request.send().await.expect("request")).await
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn parse_time(value: &Value) -> DateTime<Utc> {
    value
        .as_str()
        .expect("timestamp string")
        .parse()
        .expect("RFC 3339 timestamp")
}

fn sql(app: &TestApp, statement: &str) -> usize {
    diesel::sql_query(statement)
        .execute(&mut app.db())
        .expect("SQL statement")
}

#[tokio::test]
async fn login_succeeds_and_failures_look_alike() {
    // Many failures on purpose below: keep the lockout out of the way.
    let app = TestApp::spawn_with(|config| config.login_max_failures = 1000).await;

    let before = Utc::now();
    let ok = login_attempt(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    let token = ok.body["access_token"].as_str().expect("access_token");
    assert!(token.starts_with("bkt_"), "token {token}");
    assert_eq!(token.len(), 4 + 64);
    assert_eq!(ok.body["token_type"], "Bearer");
    let expires_at = parse_time(&ok.body["expires_at"]);
    let expected = before + chrono::Duration::seconds(900);
    assert!(
        (expires_at - expected).num_seconds().abs() <= 30,
        "expires_at {expires_at} is not about now + 900 s ({expected})"
    );
    // The email is matched case-insensitively and trimmed.
    let ok = login_attempt(&app, "  Admin@Bulkhead.TEST ", ADMIN_PASSWORD).await;
    assert_eq!(ok.status, 200, "{}", ok.text);

    let wrong = login_attempt(&app, ADMIN_EMAIL, "not-the-right-password").await;
    wrong.assert_problem(401, "unauthenticated");
    assert!(wrong.header("www-authenticate").is_some());
    let unknown = login_attempt(&app, "nobody@bulkhead.test", "not-the-right-password").await;
    unknown.assert_problem(401, "unauthenticated");
    assert_eq!(
        wrong.body, unknown.body,
        "a wrong password and an unknown user must answer the same body"
    );
    assert!(
        !unknown.text.contains("nobody"),
        "the body must not echo the email"
    );

    // A coarse guard against a missing hash, not a timing benchmark: an unknown user must be
    // verified against a dummy argon2 hash, so it costs about as much as a wrong password. If
    // the dummy verification were skipped, the unknown-user median would collapse to the cost
    // of one database lookup (well under a tenth of an argon2 verification). Samples are
    // interleaved so that load from other tests running in parallel hits both sides alike.
    let (mut wrong_times, mut unknown_times) = (Vec::new(), Vec::new());
    for i in 0..7 {
        let started = Instant::now();
        let reply = login_attempt(&app, ADMIN_EMAIL, &format!("wrong-password-{i}")).await;
        wrong_times.push(started.elapsed());
        assert_eq!(reply.status, 401);
        let started = Instant::now();
        let reply = login_attempt(&app, &format!("ghost{i}@bulkhead.test"), "wrong-password").await;
        unknown_times.push(started.elapsed());
        assert_eq!(reply.status, 401);
    }
    let (wrong_median, unknown_median) = (median(wrong_times), median(unknown_times));
    assert!(
        unknown_median * 2 >= wrong_median,
        "unknown-user logins (median {unknown_median:?}) are much faster than wrong-password \
         logins (median {wrong_median:?}): is the dummy hash still verified?"
    );
}

#[tokio::test]
async fn repeated_failures_lock_the_account_but_not_others() {
    let app = TestApp::spawn_with(|config| {
        config.login_max_failures = 3;
        config.login_lockout = Duration::from_secs(900);
    })
    .await;
    let tenant = app.create_tenant("acme").await;
    let slug = tenant["slug"].as_str().expect("slug");
    let email = "ops@acme.example";
    app.member(slug, email, "operator").await;

    for attempt in 1..=3 {
        let reply = login_attempt(&app, email, "definitely-not-it").await;
        assert_eq!(reply.status, 401, "failure {attempt}: {}", reply.text);
    }
    // Locked now: even the right password is refused, before it is checked.
    let locked = login_attempt(&app, email, USER_PASSWORD).await;
    locked.assert_problem(429, "too-many-requests");
    let retry_after: u64 = locked
        .header("retry-after")
        .expect("Retry-After header")
        .parse()
        .expect("Retry-After is whole seconds");
    assert!(
        (1..=900).contains(&retry_after),
        "Retry-After {retry_after}"
    );
    // The lock is per account, whatever case the email is typed in.
    let shouted = login_attempt(&app, "OPS@ACME.EXAMPLE", USER_PASSWORD).await;
    shouted.assert_problem(429, "too-many-requests");

    // Another account from the same client is not locked.
    let other = login_attempt(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!(other.status, 200, "{}", other.text);

    // An unknown email locks the same way, so the lockout does not tell which accounts exist.
    for _ in 0..3 {
        let reply = login_attempt(&app, "ghost@acme.example", "definitely-not-it").await;
        assert_eq!(reply.status, 401);
    }
    let ghost = login_attempt(&app, "ghost@acme.example", "definitely-not-it").await;
    ghost.assert_problem(429, "too-many-requests");
    assert_eq!(ghost.body["title"], locked.body["title"]);
}

#[tokio::test]
async fn a_lockout_ends_when_its_window_passes() {
    let app = TestApp::spawn_with(|config| {
        config.login_max_failures = 2;
        config.login_lockout = Duration::from_secs(2);
    })
    .await;
    for _ in 0..2 {
        let reply = login_attempt(&app, ADMIN_EMAIL, "definitely-not-it").await;
        assert_eq!(reply.status, 401);
    }
    let locked = login_attempt(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    locked.assert_problem(429, "too-many-requests");
    let retry_after: u64 = locked
        .header("retry-after")
        .expect("Retry-After header")
        .parse()
        .expect("whole seconds");
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");

    tokio::time::sleep(Duration::from_millis(2200)).await;
    let ok = login_attempt(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    // The success cleared the failures: one more failure does not lock again.
    let reply = login_attempt(&app, ADMIN_EMAIL, "definitely-not-it").await;
    assert_eq!(reply.status, 401);
    let ok = login_attempt(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
}

#[tokio::test]
async fn an_expired_access_token_is_rejected() {
    // Configuration parsing refuses less than 10 s; the field itself may be set lower.
    let app = TestApp::spawn_with(|config| config.token_ttl = Duration::from_secs(1)).await;
    let token = app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let (status, me) = app.get("/v1/me", &token).await;
    assert_eq!(status, 200, "{me}");

    tokio::time::sleep(Duration::from_millis(2500)).await;
    let expired = send(&app, Method::GET, "/v1/me", &token, None).await;
    expired.assert_problem(401, "unauthenticated");
    assert!(expired.header("www-authenticate").is_some());
    let (status, _) = app.get("/v1/tenants", &token).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn logout_revokes_only_the_presented_token() {
    let app = TestApp::spawn().await;
    let token = app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let (status, _) = app.get("/v1/me", &token).await;
    assert_eq!(status, 200);

    let logout = send(&app, Method::POST, "/v1/auth/logout", &token, None).await;
    assert_eq!(logout.status, 204, "{}", logout.text);
    assert!(logout.text.is_empty());

    let revoked = send(&app, Method::GET, "/v1/me", &token, None).await;
    revoked.assert_problem(401, "unauthenticated");
    let again = send(&app, Method::POST, "/v1/auth/logout", &token, None).await;
    again.assert_problem(401, "unauthenticated");

    // The admin's other session is untouched.
    let (status, _) = app.get("/v1/me", &app.admin).await;
    assert_eq!(status, 200);

    // Missing or malformed credentials are 401 too.
    let response = app
        .client
        .get(app.url("/v1/me"))
        .send()
        .await
        .expect("request");
    Reply::from(response)
        .await
        .assert_problem(401, "unauthenticated");
    let garbage = send(&app, Method::GET, "/v1/me", "bkt_not-a-token", None).await;
    garbage.assert_problem(401, "unauthenticated");
}

#[tokio::test]
async fn an_api_key_is_shown_once_and_authenticates_as_its_service_account() {
    let app = TestApp::spawn().await;
    let tenant = app.create_tenant("acme").await;
    let tenant_id = tenant["id"].as_str().expect("id");

    let created = send(
        &app,
        Method::POST,
        "/v1/tenants/acme/api-keys",
        &app.admin,
        Some(json!({"name": "edi-gateway", "role": "viewer"})),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let secret = created.body["secret"].as_str().expect("secret").to_owned();
    let key_id = created.body["api_key"]["id"]
        .as_str()
        .expect("key id")
        .to_owned();
    assert!(secret.starts_with("bk_"), "secret {secret}");
    assert_eq!(secret.len(), 3 + 48 + 8);
    let prefix = created.body["api_key"]["prefix"].as_str().expect("prefix");
    assert!(secret.starts_with(prefix) && prefix.len() == 11);
    assert_eq!(created.body["api_key"]["role"], "viewer");
    assert_eq!(created.body["api_key"]["last_used_at"], Value::Null);
    assert_eq!(created.body["api_key"]["expires_at"], Value::Null);

    // Shown once: no listing carries the secret, nor its part after the display prefix.
    let listed = send(
        &app,
        Method::GET,
        "/v1/tenants/acme/api-keys",
        &app.admin,
        None,
    )
    .await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    assert!(!listed.text.contains(&secret), "the list leaks the secret");
    assert!(!listed.text.contains(&secret[prefix.len()..]));
    assert_eq!(listed.body["items"][0]["id"], key_id.as_str());
    assert_eq!(listed.body["items"][0]["last_used_at"], Value::Null);

    let (status, body) = app.get("/v1/tenants/acme", &secret).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], tenant_id);
    let (status, me) = app.get("/v1/me", &secret).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["kind"], "service_account");
    assert_eq!(me["api_key_id"], key_id.as_str());
    assert_eq!(me["email"], Value::Null);
    assert_eq!(me["platform_role"], Value::Null);
    assert_eq!(
        me["memberships"],
        json!([{"tenant_id": tenant_id, "role": "viewer"}])
    );
    // A viewer key may read but not change the tenant.
    let (status, _) = app
        .call(
            Method::PATCH,
            "/v1/tenants/acme",
            &secret,
            Some(json!({"name": "Renamed"})),
        )
        .await;
    assert_eq!(status, 403);
    // An API key is not a session: logout refuses it.
    let logout = send(&app, Method::POST, "/v1/auth/logout", &secret, None).await;
    logout.assert_problem(422, "validation-failed");

    let listed = send(
        &app,
        Method::GET,
        "/v1/tenants/acme/api-keys",
        &app.admin,
        None,
    )
    .await;
    let last_used = parse_time(&listed.body["items"][0]["last_used_at"]);
    assert!((Utc::now() - last_used).num_seconds().abs() < 60);
    assert!(!listed.text.contains(&secret));
}

#[tokio::test]
async fn an_expired_api_key_is_rejected() {
    let app = TestApp::spawn().await;
    app.create_tenant("acme").await;
    let created = send(
        &app,
        Method::POST,
        "/v1/tenants/acme/api-keys",
        &app.admin,
        Some(json!({"name": "short-lived", "role": "viewer", "expires_in_days": 1})),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let secret = created.body["secret"].as_str().expect("secret");
    let key_id = created.body["api_key"]["id"].as_str().expect("id");
    let expires_at = parse_time(&created.body["api_key"]["expires_at"]);
    let in_a_day = Utc::now() + chrono::Duration::days(1);
    assert!((expires_at - in_a_day).num_seconds().abs() < 60);

    let (status, _) = app.get("/v1/tenants/acme", secret).await;
    assert_eq!(status, 200);

    // Move the key's life into the past (created_at too: expiry must follow creation).
    let changed = sql(
        &app,
        &format!(
            "UPDATE api_keys SET created_at = now() - interval '2 days', \
             expires_at = now() - interval '1 minute' WHERE id = '{key_id}'"
        ),
    );
    assert_eq!(changed, 1);
    let expired = send(&app, Method::GET, "/v1/tenants/acme", secret, None).await;
    expired.assert_problem(401, "unauthenticated");

    for days in [0, 3651, -1] {
        let (status, body) = app
            .post(
                "/v1/tenants/acme/api-keys",
                &app.admin,
                json!({"name": "bad", "role": "viewer", "expires_in_days": days}),
            )
            .await;
        assert_eq!(status, 422, "expires_in_days {days}: {body}");
        assert_eq!(body["errors"][0]["field"], "expires_in_days");
    }
}

#[tokio::test]
async fn a_revoked_api_key_is_rejected() {
    let app = TestApp::spawn().await;
    app.create_tenant("acme").await;
    let (key_id, secret) = app.api_key("acme", "operator").await;
    let (status, _) = app.get("/v1/tenants/acme", &secret).await;
    assert_eq!(status, 200);

    let path = format!("/v1/tenants/acme/api-keys/{key_id}");
    let revoked = send(&app, Method::DELETE, &path, &app.admin, None).await;
    assert_eq!(revoked.status, 204, "{}", revoked.text);
    let rejected = send(&app, Method::GET, "/v1/tenants/acme", &secret, None).await;
    rejected.assert_problem(401, "unauthenticated");
    let again = send(&app, Method::DELETE, &path, &app.admin, None).await;
    again.assert_problem(404, "not-found");

    let (status, listed) = app.get("/v1/tenants/acme/api-keys", &app.admin).await;
    assert_eq!(status, 200);
    assert!(listed["items"][0]["revoked_at"].is_string(), "{listed}");
}

#[tokio::test]
async fn an_api_key_with_a_changed_character_is_rejected() {
    let app = TestApp::spawn().await;
    app.create_tenant("acme").await;
    let (_, secret) = app.api_key("acme", "viewer").await;
    let (status, _) = app.get("/v1/tenants/acme", &secret).await;
    assert_eq!(status, 200);

    let flip = |index: usize| -> String {
        let mut chars: Vec<char> = secret.chars().collect();
        chars[index] = if chars[index] == 'a' { 'b' } else { 'a' };
        chars.into_iter().collect()
    };
    // In the random part, in the checksum, truncated, and with a stray suffix.
    let variants = [
        flip(10),
        flip(secret.len() - 1),
        secret[..secret.len() - 1].to_owned(),
        format!("{secret}0"),
        secret.to_uppercase().replacen("BK_", "bk_", 1),
    ];
    for variant in variants {
        assert_ne!(variant, secret);
        let reply = send(&app, Method::GET, "/v1/tenants/acme", &variant, None).await;
        reply.assert_problem(401, "unauthenticated");
    }
}

#[tokio::test]
async fn an_api_key_of_another_tenant_does_not_see_this_one() {
    let app = TestApp::spawn().await;
    let acme = app.create_tenant("acme").await;
    let globex = app.create_tenant("globex").await;
    let (_, secret) = app.api_key("globex", "tenant_admin").await;

    let (status, body) = app.get("/v1/tenants/globex", &secret).await;
    assert_eq!(status, 200, "{body}");
    let foreign = send(&app, Method::GET, "/v1/tenants/acme", &secret, None).await;
    foreign.assert_problem(404, "not-found");
    let by_id = send(
        &app,
        Method::GET,
        &format!("/v1/tenants/{}", acme["id"].as_str().expect("id")),
        &secret,
        None,
    )
    .await;
    by_id.assert_problem(404, "not-found");
    let keys = send(
        &app,
        Method::GET,
        "/v1/tenants/acme/api-keys",
        &secret,
        None,
    )
    .await;
    keys.assert_problem(404, "not-found");

    // Nor can acme's admin path reach globex's key.
    let (key_id, other_secret) = app.api_key("globex", "viewer").await;
    let cross = send(
        &app,
        Method::DELETE,
        &format!("/v1/tenants/acme/api-keys/{key_id}"),
        &app.admin,
        None,
    )
    .await;
    cross.assert_problem(404, "not-found");
    let (status, _) = app.get("/v1/tenants/globex", &other_secret).await;
    assert_eq!(status, 200, "the key survived the attempt");

    let (status, listed) = app.get("/v1/tenants", &secret).await;
    assert_eq!(status, 200);
    assert_eq!(
        listed["items"].as_array().expect("items").len(),
        1,
        "{listed}"
    );
    assert_eq!(listed["items"][0]["id"], globex["id"]);
}

#[tokio::test]
async fn an_invitation_is_accepted_once_with_a_strong_password() {
    let app = TestApp::spawn().await;
    app.create_tenant("acme").await;
    let email = "new.person@acme.example";
    let (status, added) = app
        .post(
            "/v1/tenants/acme/members",
            &app.admin,
            json!({"email": email, "role": "operator"}),
        )
        .await;
    assert_eq!(status, 201, "{added}");
    // The token is mailed to the address, never shown to the inviter.
    assert!(added["invitation"]["token"].is_null(), "{added}");
    assert_eq!(added["invitation"]["mailed_to"], email);
    let token = app.mail.invitation_token(email).await;
    assert!(token.starts_with("bki_"), "token {token}");
    assert_eq!(added["member"]["invitation_pending"], true);
    assert_eq!(added["member"]["role"], "operator");
    assert_eq!(added["member"]["email"], email);

    // No password yet: logging in fails like any wrong password.
    let early = login_attempt(&app, email, USER_PASSWORD).await;
    early.assert_problem(401, "unauthenticated");

    for weak in [
        "password1234",
        "short-pass",
        "PASSWORD1234",
        "zzzzzzzzzzzzzz",
    ] {
        let reply = accept(&app, &token, weak).await;
        reply.assert_problem(422, "validation-failed");
        assert_eq!(reply.body["errors"][0]["field"], "password", "{weak}");
    }

    let accepted = accept(&app, &token, USER_PASSWORD).await;
    assert_eq!(accepted.status, 200, "{}", accepted.text);
    assert_eq!(accepted.body["email"], email);
    assert_eq!(
        accepted.body["principal_id"],
        added["member"]["principal_id"]
    );

    let reused = accept(&app, &token, "another-fine-passphrase").await;
    reused.assert_problem(404, "not-found");
    let mistyped = accept(&app, "bki_0000", USER_PASSWORD).await;
    mistyped.assert_problem(404, "not-found");

    let user = app.login(email, USER_PASSWORD).await;
    let (status, tenant) = app.get("/v1/tenants/acme", &user).await;
    assert_eq!(status, 200, "{tenant}");
    // The reuse attempt did not change the password.
    let reply = login_attempt(&app, email, "another-fine-passphrase").await;
    assert_eq!(reply.status, 401);

    let (status, members) = app.get("/v1/tenants/acme/members", &app.admin).await;
    assert_eq!(status, 200);
    let member = members["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|m| m["email"] == email)
        .expect("member listed");
    assert_eq!(member["invitation_pending"], false);
}

#[tokio::test]
async fn an_expired_invitation_is_not_found() {
    let app = TestApp::spawn().await;
    app.create_tenant("acme").await;
    let email = "late@acme.example";
    let (status, added) = app
        .post(
            "/v1/tenants/acme/members",
            &app.admin,
            json!({"email": email, "role": "viewer"}),
        )
        .await;
    assert_eq!(status, 201, "{added}");
    let token = &app.mail.invitation_token(email).await;
    let changed = sql(
        &app,
        &format!(
            "UPDATE principals SET invitation_expires_at = now() - interval '1 hour' \
             WHERE email = '{email}'"
        ),
    );
    assert_eq!(changed, 1);

    let reply = accept(&app, token, USER_PASSWORD).await;
    reply.assert_problem(404, "not-found");
    let login = login_attempt(&app, email, USER_PASSWORD).await;
    assert_eq!(login.status, 401);
}

#[tokio::test]
async fn a_membership_change_takes_effect_on_the_next_request() {
    let app = TestApp::spawn().await;
    app.create_tenant("acme").await;
    let email = "watcher@acme.example";
    let (principal, token) = app.member("acme", email, "viewer").await;

    let (status, _) = app.get("/v1/tenants/acme", &token).await;
    assert_eq!(status, 200);
    let (status, _) = app
        .call(
            Method::PATCH,
            "/v1/tenants/acme",
            &token,
            Some(json!({"name": "Viewer rename"})),
        )
        .await;
    assert_eq!(status, 403);

    let removed = send(
        &app,
        Method::DELETE,
        &format!("/v1/tenants/acme/members/{principal}"),
        &app.admin,
        None,
    )
    .await;
    assert_eq!(removed.status, 204, "{}", removed.text);
    let gone = send(&app, Method::GET, "/v1/tenants/acme", &token, None).await;
    gone.assert_problem(404, "not-found");
    let (status, listed) = app.get("/v1/tenants", &token).await;
    assert_eq!(status, 200);
    assert_eq!(listed["items"], json!([]));

    // Re-added with more rights: an existing account gets no new invitation.
    let (status, added) = app
        .post(
            "/v1/tenants/acme/members",
            &app.admin,
            json!({"email": email, "role": "tenant_admin"}),
        )
        .await;
    assert_eq!(status, 201, "{added}");
    // An existing account: offered, then accepted by its owner signed in.
    assert_eq!(added["member"]["state"], "invited", "{added}");
    assert_eq!(added["member"]["principal_id"], principal.as_str());
    app.accept_membership("acme", &token).await;
    let (status, body) = app
        .call(
            Method::PATCH,
            "/v1/tenants/acme",
            &token,
            Some(json!({"name": "Renamed by its new admin"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["name"], "Renamed by its new admin");
}

#[tokio::test]
async fn me_lists_the_callers_memberships() {
    let app = TestApp::spawn().await;
    let acme = app.create_tenant("acme").await;
    let globex = app.create_tenant("globex").await;
    app.create_tenant("initech").await;
    let email = "both@example.com";
    let (principal, token) = app.member("acme", email, "viewer").await;
    let (status, body) = app
        .post(
            "/v1/tenants/globex/members",
            &app.admin,
            json!({"email": email, "role": "operator"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    app.accept_membership("globex", &token).await;

    let (status, me) = app.get("/v1/me", &token).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["id"], principal.as_str());
    assert_eq!(me["kind"], "user");
    assert_eq!(me["email"], email);
    assert_eq!(me["platform_role"], Value::Null);
    assert_eq!(me["api_key_id"], Value::Null);
    let mut memberships: Vec<(String, String)> = me["memberships"]
        .as_array()
        .expect("memberships")
        .iter()
        .map(|m| {
            (
                m["tenant_id"].as_str().expect("tenant_id").to_owned(),
                m["role"].as_str().expect("role").to_owned(),
            )
        })
        .collect();
    memberships.sort();
    let mut expected = vec![
        (
            acme["id"].as_str().expect("id").to_owned(),
            "viewer".to_owned(),
        ),
        (
            globex["id"].as_str().expect("id").to_owned(),
            "operator".to_owned(),
        ),
    ];
    expected.sort();
    assert_eq!(memberships, expected);

    let (status, me) = app.get("/v1/me", &app.admin).await;
    assert_eq!(status, 200);
    assert_eq!(me["email"], ADMIN_EMAIL);
    assert_eq!(me["platform_role"], "platform_admin");
    assert_eq!(me["memberships"], json!([]));
}

/// Tries to turn `token` into a session of `email` with a password of the caller's choosing;
/// returns the session if that worked.
async fn take_over(app: &TestApp, token: Option<&str>, email: &str) -> Option<String> {
    let token = token?;
    let chosen = "attacker-chosen-passphrase";
    if accept(app, token, chosen).await.status != 200 {
        return None;
    }
    let reply = login_attempt(app, email, chosen).await;
    (reply.status == 200).then(|| {
        reply.body["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    })
}

#[tokio::test]
async fn a_tenant_admin_cannot_take_over_another_tenants_pending_invitee() {
    let app = TestApp::spawn().await;
    app.create_tenant("acme").await;
    app.create_tenant("globex").await;
    // The platform admin invites someone to run acme; the invitation is not accepted yet.
    let email = "future-admin@acme.example";
    let (status, invited) = app
        .post(
            "/v1/tenants/acme/members",
            &app.admin,
            json!({"email": email, "role": "tenant_admin"}),
        )
        .await;
    assert_eq!(status, 201, "{invited}");
    assert!(invited["invitation"]["token"].is_null(), "{invited}");
    let original = app.mail.invitation_token(email).await;

    // globex's admin adds the same email to globex: that is allowed…
    let (_, globex_admin) = app
        .member("globex", "boss@globex.example", "tenant_admin")
        .await;
    let (status, added) = app
        .post(
            "/v1/tenants/globex/members",
            &globex_admin,
            json!({"email": email, "role": "viewer"}),
        )
        .await;
    assert_eq!(status, 201, "{added}");
    // …but must not hand globex's admin a way into the account, and through it into acme.
    let session = take_over(&app, added["invitation"]["token"].as_str(), email).await;
    if let Some(session) = session {
        let (status, _) = app.get("/v1/tenants/acme", &session).await;
        panic!(
            "globex's tenant admin received an invitation token for {email}, set its password \
             and logged in as acme's tenant admin (GET /v1/tenants/acme → {status})"
        );
    }
    // The person who was invited can still accept the invitation they were given.
    let reply = accept(&app, &original, USER_PASSWORD).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
}

#[tokio::test]
async fn a_tenant_admin_cannot_take_over_a_pending_partner() {
    let app = TestApp::spawn().await;
    app.create_tenant("acme").await;
    let (_, acme_admin) = app
        .member("acme", "boss@acme.example", "tenant_admin")
        .await;
    // The platform admin creates a partner account; the partner has not accepted yet.
    let email = "partner@example.com";
    let (status, partner) = app
        .post("/v1/partners", &app.admin, json!({"email": email}))
        .await;
    assert_eq!(status, 201, "{partner}");
    assert!(partner["invitation"]["token"].is_null(), "{partner}");
    let original = app.mail.invitation_token(email).await;

    let (status, added) = app
        .post(
            "/v1/tenants/acme/members",
            &acme_admin,
            json!({"email": email, "role": "viewer"}),
        )
        .await;
    assert!(status == 201 || status == 403 || status == 409, "{added}");
    let session = take_over(&app, added["invitation"]["token"].as_str(), email).await;
    if let Some(session) = session {
        let (status, _) = app
            .post(
                "/v1/tenants",
                &session,
                json!({"slug": "escalated", "name": "Escalated", "tier": "shared",
                       "region": "eu-west-1"}),
            )
            .await;
        panic!(
            "acme's tenant admin received an invitation token for the partner account {email}, \
             set its password and logged in with the platform role partner \
             (POST /v1/tenants → {status})"
        );
    }
    let reply = accept(&app, &original, USER_PASSWORD).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
}
