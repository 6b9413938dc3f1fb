//! Fair use: one principal's flood is answered 429 with when to come back, and nobody else
//! waits for it; requests without a valid credential are counted per client address; a
//! tenant's members and keys share one budget of writes that nobody outside can spend.

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
        principal_writes: Rate {
            per_minute: 1,
            burst: 1000,
        },
        tenant_writes: Rate {
            per_minute: 1,
            burst: 1000,
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

#[tokio::test]
async fn a_tenants_members_and_keys_share_one_budget_of_writes_nobody_else_can_spend() {
    const TENANT_BURST: usize = 6;
    let app = TestApp::spawn_with(|config| {
        let mut rates = tight(1000, 1000);
        rates.tenant_writes.burst = TENANT_BURST as u32;
        rates.principal_writes.burst = 20;
        config.limits.rate = rates;
    })
    .await;
    app.create_tenant("acme").await;
    app.create_tenant("globex").await;
    let (_, admin_a) = app.member("acme", "a@acme.test", "tenant_admin").await;
    let (_, admin_b) = app.member("acme", "b@acme.test", "tenant_admin").await;
    let (_, key) = app.api_key("acme", "tenant_admin").await;
    let (_, viewer) = app.member("acme", "v@acme.test", "viewer").await;
    let (_, approver_key) = app.api_key("acme", "approver").await;
    let (_, outsider) = app.member("globex", "o@globex.test", "tenant_admin").await;
    let write = |token: String, tenant: &'static str, n: usize| {
        let request = app
            .client
            .patch(app.url(&format!("/v1/tenants/{tenant}")))
            .bearer_auth(token)
            .json(&json!({"cost_tags": {"round": n.to_string()}}));
        async move { request.send().await.expect("write") }
    };

    // Someone outside acme cannot spend its budget: its writes there are answered as for a
    // tenant that does not exist, counted only against its own bucket of writes.
    for n in 0..(TENANT_BURST * 2) {
        let response = write(outsider.clone(), "acme", n).await;
        assert_eq!(response.status(), 404);
        assert!(!header(&response, "ratelimit-policy").contains("tenant-writes"));
    }
    // Nor can a member flooding writes its role does not allow: refused writes spend only its
    // own budget, so it cannot hold back the tenant's admins.
    for n in 0..(TENANT_BURST * 2) {
        let response = write(viewer.clone(), "acme", n).await;
        assert_eq!(response.status(), 403);
        let policy = header(&response, "ratelimit-policy");
        assert!(
            policy.contains("\"writes\";q=20") && !policy.contains("tenant-writes"),
            "{policy}"
        );
    }

    // Nor can a key whose role's one write (approving) keys are never allowed (found by a live
    // attack: its refusals spent the tenant's budget and locked its admins out).
    for _ in 0..(TENANT_BURST * 2) {
        let response = app
            .client
            .post(app.url(&format!(
                "/v1/tenants/acme/jobs/{}/approve",
                uuid::Uuid::now_v7()
            )))
            .bearer_auth(&approver_key)
            .json(&json!({"plan_hash": "a".repeat(64)}))
            .send()
            .await
            .expect("approve");
        assert_eq!(response.status(), 403);
        assert!(!header(&response, "ratelimit-policy").contains("tenant-writes"));
    }

    // acme's two admins and its key make changes: together they get exactly the tenant's
    // burst, then 429 naming the tenant's bucket.
    let members = [admin_a.clone(), admin_b.clone(), key.clone()];
    let mut admitted = 0;
    let mut refused = None;
    for n in 0..(TENANT_BURST * 3) {
        let response = write(members[n % 3].clone(), "acme", n).await;
        if response.status() == 429 {
            refused = Some(response);
            break;
        }
        assert_eq!(response.status(), 200);
        let policy = header(&response, "ratelimit-policy");
        assert!(
            policy.contains("\"principal\";")
                && policy.contains("\"writes\";q=20")
                && policy.contains(&format!("\"tenant-writes\";q={TENANT_BURST}")),
            "{policy}"
        );
        admitted += 1;
    }
    // The key was made by a tenant admin (platform admins may not mint `tenant_admin` keys),
    // an allowed write of a member: it spent one of the budget already.
    assert_eq!(
        admitted,
        TENANT_BURST - 1,
        "the members and the key share one budget"
    );
    let refused = refused.expect("the tenant's writes beyond its budget are refused");
    assert!(header(&refused, "ratelimit").starts_with("\"tenant-writes\";r=0;t="));
    assert!(header(&refused, "retry-after").parse::<u64>().is_ok());
    let problem: serde_json::Value = refused.json().await.expect("problem");
    assert_eq!(
        problem["type"],
        "https://bulkhead.dev/problems/rate-limited"
    );
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("by this tenant's members and keys together"),
        "{problem}"
    );
    // The refused change did not happen: the tags are the last admitted round's.
    let (status, tenant) = app.get("/v1/tenants/acme", &admin_a).await;
    assert_eq!(status, 200);
    assert_eq!(
        tenant["cost_tags"]["round"],
        (TENANT_BURST - 2).to_string(),
        "{tenant}"
    );

    // Reads are not writes: acme's members still read.
    let (status, _) = app.get("/v1/tenants/acme", &viewer).await;
    assert_eq!(status, 200);
    // Another tenant's writes have their own budget.
    let response = write(outsider.clone(), "globex", 0).await;
    assert_eq!(response.status(), 200);
    // Platform staff are not locked out of acme by acme's own writes.
    let (status, body) = app
        .post(
            "/v1/tenants/acme/api-keys",
            &app.admin,
            json!({"name": "ops", "role": "viewer"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test]
async fn a_principals_writes_have_a_budget_of_their_own() {
    let app = TestApp::spawn_with(|config| {
        let mut rates = tight(1000, 1000);
        rates.principal_writes.burst = 3;
        config.limits.rate = rates;
    })
    .await;
    app.create_tenant("acme").await;
    let (_, viewer) = app.member("acme", "a@acme.test", "viewer").await;
    for _ in 0..3 {
        let (status, _) = app
            .post(
                "/v1/tenants/acme/api-keys",
                &viewer,
                json!({"name": "k", "role": "viewer"}),
            )
            .await;
        assert_eq!(status, 403);
    }
    let (status, problem) = app
        .post(
            "/v1/tenants/acme/api-keys",
            &viewer,
            json!({"name": "k", "role": "viewer"}),
        )
        .await;
    assert_eq!(status, 429, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("changes in"),
        "{problem}"
    );
    // Its reads go on.
    let (status, _) = app.get("/v1/tenants/acme", &viewer).await;
    assert_eq!(status, 200);
}
