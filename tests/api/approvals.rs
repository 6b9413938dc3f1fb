//! Reviewed changes through the API (no worker plans them here): a destroy that needs approval
//! cancels nothing before it has it, and an offboarding does not wait on it (it replaces it
//! with a destroy of its own, which needs none).

use crate::helpers::TestApp;
use serde_json::json;

#[actix_web::test]
async fn a_reviewed_destroy_cancels_nothing_and_an_offboarding_replaces_it() {
    let app = TestApp::spawn().await;
    app.create_tenant("cold-chain").await;
    let (status, created) = app
        .post(
            "/v1/tenants/cold-chain/environments",
            &app.admin,
            json!({"name": "erp", "stage": "production", "cost_tags": {"business_unit": "cc"}}),
        )
        .await;
    assert_eq!(status, 202, "{created}");
    let apply = created["job"]["id"].as_str().expect("job").to_owned();
    assert_eq!(
        created["job"]["approvals_required"], 1,
        "production's default: {created}"
    );

    let (status, destroy) = app
        .delete("/v1/tenants/cold-chain/environments/erp", &app.admin)
        .await;
    assert_eq!(status, 202, "{destroy}");
    let destroy = destroy["job"]["id"].as_str().expect("job").to_owned();
    assert_eq!(
        app.count(&format!("jobs WHERE id = '{apply}' AND state = 'queued'")),
        1,
        "a destroy nobody approved yet cancels nothing"
    );
    assert_eq!(
        app.count(&format!(
            "jobs WHERE id = '{destroy}' AND approvals_required = 1"
        )),
        1
    );

    // Offboarding is the decision: its teardown replaces the reviewed destroy.
    let (status, body) = app.delete("/v1/tenants/cold-chain", &app.admin).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        app.count(&format!(
            "jobs WHERE id = '{destroy}' AND state = 'canceled'"
        )),
        1,
        "{body}"
    );
    assert_eq!(
        app.count(
            "jobs j JOIN environments e ON e.id = j.environment_id WHERE e.name = 'erp' \
             AND j.operation = 'destroy' AND j.state = 'queued' AND j.approvals_required = 0"
        ),
        1,
        "{body}"
    );
}
