//! The permission enforcer follows membership changes incrementally in every API process: a
//! grant or removal made through one replica holds on the next request to another, and costs
//! that replica one assignment, not a reload of all of them; a request waits only for its own
//! principal's changes, never for another tenant's.

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

#[tokio::test]
async fn a_change_to_one_principal_makes_no_one_else_wait_and_holds_for_it_at_once() {
    let app = TestApp::spawn().await;
    let replica = app.replica().await;
    app.create_tenant("acme").await;
    app.create_tenant("globex").await;
    let (_, viewer) = app.member("acme", "viewer@acme.test", "viewer").await;
    let (churned, member) = app.member("globex", "ops@globex.test", "operator").await;
    assert_eq!(
        status_at(&app, &replica, "/v1/tenants/acme", &viewer).await,
        200
    );
    assert_eq!(
        status_at(&app, &replica, "/v1/tenants/globex", &member).await,
        200
    );
    let incremental = refreshes(&app, &replica, "incremental").await;
    let reloads = refreshes(&app, &replica, "reload").await;

    // globex removes its member: acme's viewer is served by the replica as it stands (no
    // refresh at all: it did not wait for globex's change) ...
    let (status, body) = app
        .delete(&format!("/v1/tenants/globex/members/{churned}"), &app.admin)
        .await;
    assert_eq!(status, 204, "{body}");
    for _ in 0..3 {
        assert_eq!(
            status_at(&app, &replica, "/v1/tenants/acme", &viewer).await,
            200
        );
    }
    assert_eq!(
        (
            refreshes(&app, &replica, "incremental").await,
            refreshes(&app, &replica, "reload").await
        ),
        (incremental, reloads),
        "another principal's change made this one's requests wait for a refresh"
    );
    // ... while the removed member is refused on its very next request to the replica, which
    // applies the change for it.
    assert_eq!(
        status_at(&app, &replica, "/v1/tenants/globex", &member).await,
        404
    );
    assert_eq!(
        refreshes(&app, &replica, "incremental").await,
        incremental + 1
    );

    // Its generation is kept on the principal: with the change log forgotten, a later change
    // still holds at once (the replica finds the hole and reloads).
    let (status, body) = app
        .post(
            "/v1/tenants/globex/members",
            &app.admin,
            json!({"email": "ops@globex.test", "role": "viewer"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    app.accept_membership("globex", &member).await;
    diesel::sql_query("DELETE FROM authz_changes")
        .execute(&mut app.db())
        .expect("forget the change log");
    assert_eq!(
        status_at(&app, &replica, "/v1/tenants/globex", &member).await,
        200
    );
}
