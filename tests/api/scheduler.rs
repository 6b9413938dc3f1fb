//! The scheduler's store path without a worker: due environments of ready tenants get one
//! scheduled drift check each and their next due time an interval later; one tenant whose
//! stored policy cannot be read does not hold back the others (put off an hour).

use crate::helpers::TestApp;
use bulkhead_core::store;
use serde_json::json;

fn sql(app: &TestApp, statement: &str) {
    let mut db = app.db();
    diesel::RunQueryDsl::execute(diesel::sql_query(statement), &mut db).expect(statement);
}

#[actix_web::test]
async fn due_checks_are_queued_and_one_broken_policy_holds_back_no_one() {
    let app = TestApp::spawn().await;
    let mut ids = Vec::new();
    for slug in ["sched-good", "sched-bad"] {
        app.create_tenant(slug).await;
        let (status, created) = app
            .post(
                &format!("/v1/tenants/{slug}/environments"),
                &app.admin,
                json!({"name": "wms", "stage": "development", "cost_tags": {"business_unit": "x"}}),
            )
            .await;
        assert_eq!(status, 202, "{created}");
        let id = created["environment"]["id"]
            .as_str()
            .expect("id")
            .to_owned();
        // Ready (as a worker would leave it), its create done, its check due.
        sql(
            &app,
            &format!(
                "UPDATE jobs SET state = 'succeeded', finished_at = now() WHERE environment_id = '{id}'"
            ),
        );
        sql(
            &app,
            &format!(
                "UPDATE environments SET state = 'ready', drift_check_due_at = now() - interval '1 minute' \
             WHERE id = '{id}'"
            ),
        );
        ids.push(id);
    }
    let (status, body) = app
        .call(
            reqwest::Method::PUT,
            "/v1/tenants/sched-bad/policy",
            &app.admin,
            Some(json!({"stages": {"development": {"drift_check_interval_hours": 12}}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // A stored policy this version cannot read (written by hand, or by a later version).
    sql(
        &app,
        "UPDATE tenant_policies SET policy = '{\"stages\": 7}'::jsonb",
    );

    let mut db = app.db();
    let tick = store::scheduler::queue_due_drift_checks(&mut db, 3, 20).expect("tick");
    assert_eq!(tick.queued.len(), 1, "{tick:?}");
    assert_eq!(tick.queued[0].0.to_string(), ids[0]);
    assert_eq!(tick.failed.len(), 1, "{tick:?}");
    assert_eq!(tick.failed[0].0.to_string(), ids[1]);
    assert_eq!(
        app.count(&format!(
            "jobs WHERE environment_id = '{}' AND operation = 'drift_check' AND scheduled \
             AND requested_by IS NULL AND state = 'queued'",
            ids[0]
        )),
        1
    );
    assert_eq!(
        app.count(&format!(
            "environments WHERE id = '{}' AND drift_check_due_at > now() + interval '23 hours'",
            ids[0]
        )),
        1,
        "the next check is a day away (development's default)"
    );
    assert_eq!(
        app.count(&format!(
            "environments WHERE id = '{}' AND drift_check_due_at BETWEEN now() + interval '50 minutes' \
             AND now() + interval '70 minutes'",
            ids[1]
        )),
        1,
        "the broken one is put off an hour"
    );
    // Nothing is due now: the next tick queues nothing.
    let again = store::scheduler::queue_due_drift_checks(&mut db, 3, 20).expect("tick");
    assert!(
        again.queued.is_empty() && again.failed.is_empty(),
        "{again:?}"
    );
}
