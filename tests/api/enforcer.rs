//! The permission enforcer follows membership changes incrementally in every API process: a
//! grant or removal made through one replica holds on the next request to another, and costs
//! that replica one assignment, not a reload of all of them.

use crate::helpers::TestApp;
use diesel::RunQueryDsl;
use serde_json::json;

/// `bulkhead_authz_refreshes_total{kind=…}` of the process at `base`.
async fn refreshes(app: &TestApp, base: &str, kind: &str) -> u64 {
    let text = app
        .client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body");
    let prefix = format!("bulkhead_authz_refreshes_total{{kind=\"{kind}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map_or(0, |n| n.trim().parse().expect("counter"))
}

async fn status_at(app: &TestApp, base: &str, path: &str, token: &str) -> u16 {
    app.client
        .get(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .expect("request")
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_membership_change_reaches_another_replica_as_one_change() {
    let app = TestApp::spawn().await;
    let replica = app.replica().await;
    app.create_tenant("acme").await;
    app.create_tenant("globex").await;
    let (principal, session) = app.member("acme", "ops@acme.test", "viewer").await;
    // The replica catches up with whatever happened before (some way) ...
    assert_eq!(
        status_at(&app, &replica, "/v1/tenants/acme", &session).await,
        200
    );
    assert_eq!(
        status_at(&app, &replica, "/v1/tenants/globex", &session).await,
        404
    );
    let incremental = refreshes(&app, &replica, "incremental").await;
    let reloads = refreshes(&app, &replica, "reload").await;

    // ... then a removal through the first process holds at the replica on the next request,
    // applied as one change.
    let (status, body) = app
        .delete(&format!("/v1/tenants/acme/members/{principal}"), &app.admin)
        .await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(
        status_at(&app, &replica, "/v1/tenants/acme", &session).await,
        404
    );
    assert_eq!(
        refreshes(&app, &replica, "incremental").await,
        incremental + 1
    );
    assert_eq!(refreshes(&app, &replica, "reload").await, reloads);

    // A grant in another tenant (offered, then accepted by the account) as well.
    let (status, body) = app
        .post(
            "/v1/tenants/globex/members",
            &app.admin,
            json!({"email": "ops@acme.test", "role": "viewer"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    app.accept_membership("globex", &session).await;
    assert_eq!(
        status_at(&app, &replica, "/v1/tenants/globex", &session).await,
        200
    );
    assert_eq!(refreshes(&app, &replica, "reload").await, reloads);
}

#[tokio::test]
async fn a_replica_that_missed_forgotten_changes_reloads_everything() {
    let app = TestApp::spawn().await;
    let replica = app.replica().await;
    app.create_tenant("acme").await;
    let (principal, session) = app.member("acme", "ops@acme.test", "viewer").await;
    assert_eq!(
        status_at(&app, &replica, "/v1/tenants/acme", &session).await,
        200
    );
    let reloads = refreshes(&app, &replica, "reload").await;

    // The change is made, then the log forgets it before the replica looks.
    let (status, _) = app
        .delete(&format!("/v1/tenants/acme/members/{principal}"), &app.admin)
        .await;
    assert_eq!(status, 204);
    diesel::sql_query("DELETE FROM authz_changes")
        .execute(&mut app.db())
        .expect("forget the change log");
    assert_eq!(
        status_at(&app, &replica, "/v1/tenants/acme", &session).await,
        404
    );
    assert_eq!(refreshes(&app, &replica, "reload").await, reloads + 1);
}
