//! The test kit both suites share: calls with a bearer token, login, and joining a tenant the
//! way an invited person does (through the mail the API sent).

use crate::smtp::SmtpSink;
use serde_json::{Value, json};

/// Server of the test databases (`TEST_DATABASE_SERVER`, default the local PostgreSQL).
pub fn server_url() -> String {
    std::env::var("TEST_DATABASE_SERVER")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

/// A Bulkhead API at `base`, reached through `client`.
#[derive(Clone, Copy)]
pub struct Api<'a> {
    pub base: &'a str,
    pub client: &'a reqwest::Client,
}

impl Api<'_> {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a request (with a bearer token unless `token` is empty, and an optional JSON
    /// body); returns the status and the body (JSON, else a string; `null` when empty).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self.client.request(method, self.url(path));
        if !token.is_empty() {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, body)
    }

    /// Signs in; returns the access token.
    pub async fn login(&self, email: &str, password: &str) -> String {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                "/v1/auth/login",
                "",
                Some(json!({"email": email, "password": password})),
            )
            .await;
        assert_eq!(status, 200, "login of {email}: {body}");
        body["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }

    /// Accepts a mailed invitation token, choosing `password`.
    pub async fn accept_invitation(&self, token: &str, password: &str) {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                "/v1/auth/accept-invitation",
                "",
                Some(json!({"token": token, "password": password})),
            )
            .await;
        assert_eq!(status, 200, "accept invitation: {body}");
    }

    /// `inviter` adds `email` to `tenant` with `role`; the person then does what the mail says:
    /// a new account accepts the invitation token with `password`, an existing one signs in
    /// with `password` and accepts the offered membership. Returns (principal id, session).
    pub async fn join(
        &self,
        mail: &SmtpSink,
        inviter: &str,
        tenant: &str,
        email: &str,
        role: &str,
        password: &str,
    ) -> (String, String) {
        let seen = mail.mails_to(email).len();
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                &format!("/v1/tenants/{tenant}/members"),
                inviter,
                Some(json!({"email": email, "role": role})),
            )
            .await;
        assert_eq!(status, 201, "add member {email}: {body}");
        assert_eq!(body["member"]["state"], "invited", "{body}");
        let principal = body["member"]["principal_id"]
            .as_str()
            .expect("principal id")
            .to_owned();
        let received = mail.mail_after(email, seen).await;
        if let Some(token) = crate::smtp::token_in(&received.text) {
            self.accept_invitation(&token, password).await;
            return (principal, self.login(email, password).await);
        }
        // An existing account: the mail names the offer to accept, signed in.
        let accept = received
            .text
            .split_whitespace()
            .find(|word| word.starts_with("/v1/me/invitations/") && word.ends_with("/accept"))
            .unwrap_or_else(|| panic!("no accept link in the offer mail: {}", received.text))
            .to_owned();
        let session = self.login(email, password).await;
        let (status, accepted) = self
            .call(reqwest::Method::POST, &accept, &session, None)
            .await;
        assert_eq!(status, 200, "accept the membership in {tenant}: {accepted}");
        (principal, session)
    }
}
