//! A tenant's change policy through the API: the default until set, a PUT that replaces it
//! (what it leaves out takes its default), every wrong field named at once, the change audited
//! with what it was before, and who may read or change it (a viewer may not read, an operator
//! may read but not change, another tenant's admin gets a 404, an offboarding tenant a 409).

use crate::helpers::TestApp;
use reqwest::Method;
use serde_json::json;

#[actix_web::test]
async fn policy_defaults_replacement_validation_audit_and_access() {
    let app = TestApp::spawn().await;
    app.create_tenant("acme").await;
    app.create_tenant("globex").await;
    let path = "/v1/tenants/acme/policy";

    // The default, as the issue sets it.
    let (status, body) = app.get(path, &app.admin).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["customized"], false);
    assert_eq!(body["stages"]["production"]["approvals_required"], 1);
    assert_eq!(body["stages"]["production"]["requester_may_approve"], false);
    assert_eq!(
        body["stages"]["production"]["drift_check_interval_hours"],
        6
    );
    assert_eq!(body["stages"]["production"]["drift_remediation"], "report");
    assert_eq!(body["stages"]["development"]["approvals_required"], 0);
    assert_eq!(body["stages"]["development"]["drift_remediation"], "repair");
    assert_eq!(body["stages"]["staging"]["drift_check_interval_hours"], 24);
    assert_eq!(
        body["promotion_order"],
        json!(["development", "staging", "production"])
    );

    // Replace it: two approvers for production, office hours and a TTL for development.
    let (_, tenant_admin) = app
        .member("acme", "lead@acme.example", "tenant_admin")
        .await;
    let wanted = json!({"stages": {
        "production": {"approvals_required": 2},
        "development": {"default_ttl_hours": 72, "schedule": {"time_zone": "Europe/Berlin",
            "days": ["mon", "tue", "wed", "thu", "fri"], "start": "07:00", "end": "19:00"}}
    }});
    let (status, body) = app
        .call(Method::PUT, path, &tenant_admin, Some(wanted))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["customized"], true);
    assert_eq!(body["stages"]["production"]["approvals_required"], 2);
    // What the request left out kept its default.
    assert_eq!(
        body["stages"]["production"]["drift_check_interval_hours"],
        6
    );
    assert_eq!(body["stages"]["development"]["default_ttl_hours"], 72);
    assert_eq!(
        body["stages"]["development"]["schedule"]["time_zone"],
        "Europe/Berlin"
    );
    let (_, read_back) = app.get(path, &app.admin).await;
    assert_eq!(read_back, body);

    // Audited with what it was before.
    let mut db = app.db();
    #[derive(diesel::QueryableByName)]
    struct Event {
        #[diesel(sql_type = diesel::sql_types::Jsonb)]
        details: serde_json::Value,
    }
    let events: Vec<Event> = diesel::RunQueryDsl::load(
        diesel::sql_query(
            "SELECT details FROM audit_events WHERE action = 'policy.updated' ORDER BY id",
        ),
        &mut db,
    )
    .expect("audit");
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].details["before"]["stages"]["production"]["approvals_required"],
        1
    );
    assert_eq!(
        events[0].details["after"]["stages"]["production"]["approvals_required"],
        2
    );

    // Every wrong field at once, each with its path; nothing changes.
    let (status, body) = app
        .call(
            Method::PUT,
            path,
            &app.admin,
            Some(json!({
                "stages": {
                    "production": {"approvals_required": 6, "schedule": {"time_zone": "Europe/Berlin",
                        "days": ["mon"], "start": "07:00", "end": "19:00"}},
                    "staging": {"drift_check_interval_hours": 0,
                        "schedule": {"time_zone": "Mars/Olympus", "days": ["mon"], "start": "09:00", "end": "09:00"}}
                },
                "promotion_order": ["production", "staging", "staging"]
            })),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    for expected in [
        "stages.production.approvals_required",
        "stages.production.schedule",
        "stages.staging.drift_check_interval_hours",
        "stages.staging.schedule.time_zone",
        "stages.staging.schedule.end",
        "promotion_order",
    ] {
        assert!(fields.contains(&expected), "{expected} not in {fields:?}");
    }
    let (_, unchanged) = app.get(path, &app.admin).await;
    assert_eq!(unchanged["stages"]["production"]["approvals_required"], 2);

    // Who may: an operator reads, cannot change; a viewer cannot read; another tenant's admin
    // does not see the tenant at all.
    let (_, operator) = app.member("acme", "ops@acme.example", "operator").await;
    let (_, viewer) = app.member("acme", "view@acme.example", "viewer").await;
    let (_, other_admin) = app
        .member("globex", "lead@globex.example", "tenant_admin")
        .await;
    assert_eq!(app.get(path, &operator).await.0, 200);
    let (status, body) = app
        .call(Method::PUT, path, &operator, Some(json!({})))
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(app.get(path, &viewer).await.0, 403);
    assert_eq!(app.get(path, &other_admin).await.0, 404);
    let (status, _) = app
        .call(Method::PUT, path, &other_admin, Some(json!({})))
        .await;
    assert_eq!(status, 404);

    // An offboarding tenant's policy no longer changes.
    let (status, body) = app.delete("/v1/tenants/globex", &app.admin).await;
    assert!(status == 202 || status == 200, "{body}");
    let (status, body) = app
        .call(
            Method::PUT,
            "/v1/tenants/globex/policy",
            &app.admin,
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 409, "{body}");
}
