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

/// A daily window in UTC, `from` to `to` hours after the current hour.
fn window(from: i64, to: i64) -> serde_json::Value {
    use chrono::Timelike;
    let hour = i64::from(chrono::Utc::now().hour());
    let at = |h: i64| format!("{:02}:00", (hour + h).rem_euclid(24));
    json!({"time_zone": "UTC", "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
           "start": at(from), "end": at(to)})
}

async fn set_schedule(app: &TestApp, slug: &str, schedule: Option<serde_json::Value>) {
    let stages = match schedule {
        Some(schedule) => json!({"development": {"schedule": schedule}}),
        None => json!({}),
    };
    let (status, body) = app
        .call(
            reqwest::Method::PUT,
            &format!("/v1/tenants/{slug}/policy"),
            &app.admin,
            Some(json!({"stages": stages})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[actix_web::test]
async fn schedule_edges_stop_and_start_environments_and_busy_ones_wait() {
    let app = TestApp::spawn().await;
    let slug = "sched-life";
    app.create_tenant(slug).await;
    // Development runs two to three hours from now only.
    set_schedule(&app, slug, Some(window(2, 3))).await;
    let mut ids = Vec::new();
    for (name, stage) in [
        ("idle", "development"),
        ("busy", "development"),
        ("qa", "staging"),
    ] {
        let (status, created) = app
            .post(
                &format!("/v1/tenants/{slug}/environments"),
                &app.admin,
                json!({"name": name, "stage": stage, "cost_tags": {"business_unit": "x"}}),
            )
            .await;
        assert_eq!(status, 202, "{created}");
        ids.push(
            created["environment"]["id"]
                .as_str()
                .expect("id")
                .to_owned(),
        );
    }
    let (idle, busy, qa) = (&ids[0], &ids[1], &ids[2]);
    // Made on a scheduled stage: looked at now; on the other, never.
    assert_eq!(
        app.count(&format!(
            "environments WHERE id IN ('{idle}', '{busy}') AND schedule_due_at <= now()"
        )),
        2
    );
    assert_eq!(
        app.count(&format!(
            "environments WHERE id = '{qa}' AND schedule_due_at IS NULL"
        )),
        1
    );
    // All ready (as a worker would leave them); only `busy` still has a job in its line.
    sql(
        &app,
        &format!(
            "UPDATE jobs SET state = 'succeeded', finished_at = now() \
             WHERE environment_id IN ('{idle}', '{qa}')"
        ),
    );
    sql(
        &app,
        &format!(
            "UPDATE environments SET state = 'ready' WHERE tenant_id = (SELECT tenant_id FROM environments WHERE id = '{idle}')"
        ),
    );

    let mut db = app.db();
    let tick = store::scheduler::lifecycle::queue_due_changes(&mut db, 3, 20).expect("tick");
    assert_eq!(tick.queued.len(), 1, "{tick:?}");
    assert_eq!(tick.queued[0].0.to_string(), *idle);
    assert_eq!(tick.queued[0].2, bulkhead_core::jobs::Operation::Stop);
    assert_eq!(tick.put_off, 1, "{tick:?}");
    assert_eq!(
        app.count(&format!(
            "jobs WHERE environment_id = '{idle}' AND operation = 'stop' AND scheduled \
             AND requested_by IS NULL AND state = 'queued'"
        )),
        1
    );
    // `idle` next at its window's start (about two hours away), `busy` again in a minute.
    assert_eq!(
        app.count(&format!(
            "environments WHERE id = '{idle}' AND schedule_due_at > now() + interval '1 hour'"
        )),
        1
    );
    assert_eq!(
        app.count(&format!(
            "environments WHERE id = '{busy}' AND schedule_due_at BETWEEN now() + interval '50 seconds' \
             AND now() + interval '70 seconds'"
        )),
        1
    );
    // Nothing due now: a stop by hand would hold until the next edge.
    let again = store::scheduler::lifecycle::queue_due_changes(&mut db, 3, 20).expect("tick");
    assert!(again.queued.is_empty() && again.put_off == 0, "{again:?}");

    // `idle` stopped (its stop ran); the window moves to include now: the policy change makes
    // the scheduler look at once, and it starts `idle`.
    sql(
        &app,
        &format!(
            "UPDATE jobs SET state = 'succeeded', finished_at = now() WHERE environment_id = '{idle}'"
        ),
    );
    sql(
        &app,
        &format!("UPDATE environments SET state = 'stopped' WHERE id = '{idle}'"),
    );
    set_schedule(&app, slug, Some(window(-1, 1))).await;
    let tick = store::scheduler::lifecycle::queue_due_changes(&mut db, 3, 20).expect("tick");
    let started: Vec<_> = tick
        .queued
        .iter()
        .map(|(env, _, op)| (env.to_string(), *op))
        .collect();
    assert_eq!(
        started,
        [(idle.clone(), bulkhead_core::jobs::Operation::Start)],
        "{tick:?}"
    );
    // Without a schedule the scheduler forgets them; a stopped one stays stopped.
    set_schedule(&app, slug, None).await;
    assert_eq!(
        app.count(&format!(
            "environments WHERE id IN ('{idle}', '{busy}', '{qa}') AND schedule_due_at IS NOT NULL"
        )),
        0
    );
}
