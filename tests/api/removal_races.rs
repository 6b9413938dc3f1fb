//! A member removed (or a key revoked) while its own job requests are on their way: whichever
//! commits first, nothing of theirs is queued, canceled or approved after the removal.

use crate::helpers::TestApp;
use serde_json::json;

const ROUNDS: usize = 10;
const HASH: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

/// Successful audit events `action` by `actor` (a principal id) after the audit event
/// `removal_action` on `removal_target`.
fn after_removal(app: &TestApp, actor: &str, action: &str, removal: (&str, &str)) -> i64 {
    let (removal_action, removal_target) = removal;
    app.count(&format!(
        "audit_events k JOIN audit_events d ON d.action = '{removal_action}' \
         AND d.target = '{removal_target}' AND d.result = 'success' \
         WHERE k.action = '{action}' AND k.result = 'success' \
         AND k.actor_id = '{actor}' AND k.seq > d.seq"
    ))
}

#[tokio::test]
async fn a_removal_racing_the_removed_members_job_requests_leaves_nothing_of_theirs_after_it() {
    let app = TestApp::spawn_with(|config| config.limits.quotas.queued_jobs = 1_000).await;
    app.create_tenant("acme").await;
    app.create_environment("acme", "erp").await;
    // A production change parked for review (no worker plans it here) that needs two approvals;
    // each round starts with none given, so every round's approver finds it awaiting one.
    let (status, created) = app
        .post(
            "/v1/tenants/acme/environments",
            &app.admin,
            json!({"name": "ledger", "stage": "production", "cost_tags": {"business_unit": "fin"}}),
        )
        .await;
    assert_eq!(status, 202, "{created}");
    let parked = created["job"]["id"].as_str().expect("job").to_owned();
    {
        use diesel::RunQueryDsl;
        diesel::sql_query(format!(
            "UPDATE jobs SET state = 'awaiting_approval', plan_hash = '{HASH}', \
             approvals_required = 2 WHERE id = '{parked}'"
        ))
        .execute(&mut app.db())
        .expect("park the job for review");
    }

    for round in 0..ROUNDS {
        {
            use diesel::RunQueryDsl;
            diesel::sql_query(format!(
                "DELETE FROM job_approvals WHERE job_id = '{parked}'"
            ))
            .execute(&mut app.db())
            .expect("forget the last round's approval");
        }
        let (oscar, operator) = app
            .member("acme", &format!("oscar{round}@acme.test"), "operator")
            .await;
        let (ada, approver) = app
            .member("acme", &format!("ada{round}@acme.test"), "approver")
            .await;
        // The admin's own plan, for the operator to cancel.
        let victim = app.job_action("acme", "erp", "plan").await;
        let victim = victim["id"].as_str().expect("job").to_owned();

        let plan = app.post(
            "/v1/tenants/acme/environments/erp/plan",
            &operator,
            json!({}),
        );
        let drift = app.post(
            "/v1/tenants/acme/environments/erp/drift-check",
            &operator,
            json!({}),
        );
        let (cancel_path, approve_path) = (
            format!("/v1/tenants/acme/jobs/{victim}/cancel"),
            format!("/v1/tenants/acme/jobs/{parked}/approve"),
        );
        let cancel = app.post(&cancel_path, &operator, json!({}));
        let approve = app.post(&approve_path, &approver, json!({"plan_hash": HASH}));
        let oscar_path = format!("/v1/tenants/acme/members/{oscar}");
        let ada_path = format!("/v1/tenants/acme/members/{ada}");
        let remove_oscar = app.delete(&oscar_path, &app.admin);
        let remove_ada = app.delete(&ada_path, &app.admin);
        let (
            (planned, plan_body),
            (drifted, drift_body),
            (canceled, cancel_body),
            (approved, approve_body),
            (removed_oscar, _),
            (removed_ada, _),
        ) = tokio::join!(plan, drift, cancel, approve, remove_oscar, remove_ada);
        assert_eq!((removed_oscar, removed_ada), (204, 204));
        assert!(
            [202, 404].contains(&planned)
                && [202, 404].contains(&drifted)
                && [200, 202, 404].contains(&canceled)
                && [200, 404].contains(&approved),
            "round {round}: plan {planned} {plan_body} / drift {drifted} {drift_body} / \
             cancel {canceled} {cancel_body} / approve {approved} {approve_body}"
        );
        let oscar_removed = ("member.delete", &*format!("principal/{oscar}"));
        for action in [
            "job.plan",
            "job.drift_check",
            "job.cancel",
            "job.cancel_requested",
        ] {
            assert_eq!(
                after_removal(&app, &oscar, action, oscar_removed),
                0,
                "round {round}: {action} by a member after its removal"
            );
        }
        let ada_removed = ("member.delete", &*format!("principal/{ada}"));
        assert_eq!(
            after_removal(&app, &ada, "job.approve", ada_removed),
            0,
            "round {round}: an approval by a member after its removal ({approve_body})"
        );
    }
}

#[tokio::test]
async fn a_revocation_racing_the_keys_job_requests_leaves_nothing_of_it_after_it() {
    let app = TestApp::spawn_with(|config| config.limits.quotas.queued_jobs = 1_000).await;
    app.create_tenant("acme").await;
    app.create_environment("acme", "erp").await;
    for round in 0..ROUNDS {
        let (key_id, secret) = app.api_key("acme", "operator").await;
        let principal = {
            use diesel::prelude::*;
            use diesel::sql_types::Uuid as SqlUuid;
            #[derive(QueryableByName)]
            struct Row {
                #[diesel(sql_type = SqlUuid)]
                principal_id: uuid::Uuid,
            }
            let row: Row = diesel::sql_query(format!(
                "SELECT principal_id FROM api_keys WHERE id = '{key_id}'"
            ))
            .get_result(&mut app.db())
            .expect("key principal");
            row.principal_id.to_string()
        };
        let plan = app.post("/v1/tenants/acme/environments/erp/plan", &secret, json!({}));
        let apply = app.post(
            "/v1/tenants/acme/environments/erp/apply",
            &secret,
            json!({}),
        );
        let key_path = format!("/v1/tenants/acme/api-keys/{key_id}");
        let revoke = app.delete(&key_path, &app.admin);
        let ((planned, plan_body), (applied, apply_body), (revoked, _)) =
            tokio::join!(plan, apply, revoke);
        assert_eq!(revoked, 204, "round {round}");
        assert!(
            [202, 401, 404].contains(&planned) && [202, 401, 404].contains(&applied),
            "round {round}: plan {planned} {plan_body} / apply {applied} {apply_body}"
        );
        let revoked_event = ("api_key.delete", &*format!("api_key/{key_id}"));
        for action in ["job.plan", "job.apply"] {
            assert_eq!(
                after_removal(&app, &principal, action, revoked_event),
                0,
                "round {round}: {action} by a key after its revocation"
            );
        }
    }
}
