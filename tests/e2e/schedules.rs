//! Lifecycle schedules through the real binaries (issue 11): a development environment whose
//! stage gets a schedule it is outside of is stopped by the scheduler (its login refused, its open session ended,
//! `stopped`, audited); the tenant cannot give the login back with its own credentials; a
//! drift check of a stopped environment is clean, and a change made behind Bulkhead's back
//! while stopped makes a start refuse (an apply brings it back and starts it); stop and start
//! by hand; a window that begins starts it again; production is never stopped.

use crate::helpers::{Stack, admin_conn, connect_as, execute, texts};
use chrono::Timelike;
use diesel::{Connection, RunQueryDsl};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const WITHIN: Duration = Duration::from_secs(60);
const TENANT: &str = "nightshift";

fn id(value: &Value) -> String {
    value["id"].as_str().expect("id").to_owned()
}

/// A daily window in UTC, `from` to `to` hours after the current hour.
fn window(from: i64, to: i64) -> Value {
    let hour = i64::from(chrono::Utc::now().hour());
    let at = |h: i64| format!("{:02}:00", (hour + h).rem_euclid(24));
    json!({"time_zone": "UTC", "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
           "start": at(from), "end": at(to)})
}

async fn put_schedule(stack: &Stack, schedule: Value) {
    let (status, body) = stack
        .call(
            reqwest::Method::PUT,
            &format!("/v1/tenants/{TENANT}/policy"),
            &stack.admin,
            Some(json!({"stages": {"production": {"approvals_required": 0},
                                   "development": {"schedule": schedule}}})),
        )
        .await;
    assert_eq!(status, 200, "policy: {body}");
}

/// Waits for the `n`-th job of `operation` the scheduler queued for the environment.
async fn scheduled_job(stack: &Stack, environment: &str, operation: &str, n: usize) -> String {
    let deadline = Instant::now() + WITHIN;
    let mut conn = stack.control_db();
    loop {
        let found = texts(
            &mut conn,
            &format!(
                "SELECT id::text AS v FROM jobs WHERE environment_id = '{environment}' \
                 AND operation = '{operation}' AND scheduled ORDER BY created_at"
            ),
        );
        if let Some(Some(job)) = found.into_iter().nth(n - 1) {
            return job;
        }
        assert!(
            Instant::now() < deadline,
            "no scheduled {operation} #{n} for {environment}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every audit event of the tenant with `action` (all pages, oldest first).
async fn audit_of(stack: &Stack, action: &str) -> Vec<Value> {
    let mut found = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => format!("/v1/tenants/{TENANT}/audit-events?limit=200"),
            Some(c) => format!("/v1/tenants/{TENANT}/audit-events?limit=200&cursor={c}"),
        };
        let (status, page) = stack.get(&path).await;
        assert_eq!(status, 200, "audit: {page}");
        found.extend(
            page["items"]
                .as_array()
                .expect("items")
                .iter()
                .filter(|e| e["action"] == action)
                .cloned(),
        );
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return found,
        }
    }
}

fn logs_in(credentials: &Value) -> Result<(), String> {
    let mut conn = connect_as(credentials)?;
    diesel::sql_query("SELECT 1")
        .execute(&mut conn)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_stop_and_start_development_environments_and_the_tenant_cannot_undo_it() {
    let stack = Stack::start(Default::default()).await;
    stack.create_tenant(TENANT, "shared").await;
    stack.without_approvals(TENANT).await;
    let mut made = Vec::new();
    for stage in ["development", "staging"] {
        let created = stack
            .create_environment(
                TENANT,
                json!({"name": format!("{stage}-wms"), "stage": stage}),
            )
            .await;
        stack
            .wait_succeeded(TENANT, &id(&created["job"]), WITHIN)
            .await;
        made.push(
            stack
                .wait_environment(TENANT, &id(&created["environment"]), "ready", WITHIN)
                .await,
        );
    }
    let (dev, staging) = (id(&made[0]), id(&made[1]));
    assert!(made[0]["schedule_next_check_at"].is_null(), "{}", made[0]);
    let dev_credentials = stack.credentials(TENANT, &dev).await;
    let staging_credentials = stack.credentials(TENANT, &staging).await;
    // A session the tenant holds open when the window closes.
    let mut open_session = connect_as(&dev_credentials).expect("dev logs in while running");
    diesel::sql_query("SELECT 1")
        .execute(&mut open_session)
        .expect("query");

    // Development now runs two to three hours from now only: outside its window, the
    // scheduler stops it at its next tick (a policy change makes it look at once).
    put_schedule(&stack, window(2, 3)).await;
    assert!(
        stack.environment(TENANT, &dev).await["schedule_next_check_at"].is_string(),
        "looked at on the next tick"
    );
    assert!(stack.environment(TENANT, &staging).await["schedule_next_check_at"].is_null());
    let stop = scheduled_job(&stack, &dev, "stop", 1).await;
    let stopped_job = stack.wait_succeeded(TENANT, &stop, WITHIN).await;
    assert!(
        stopped_job["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("outside its schedule")),
        "{stopped_job}"
    );
    let env = stack.environment(TENANT, &dev).await;
    assert_eq!(env["state"], "stopped", "{env}");
    assert!(
        env["schedule_next_check_at"].is_string(),
        "the next edge: {env}"
    );
    // The wall: the open session is gone, a new one is refused.
    assert!(
        diesel::sql_query("SELECT 1")
            .execute(&mut open_session)
            .is_err(),
        "the open session survived the stop"
    );
    let refused = logs_in(&dev_credentials).expect_err("a stopped environment refuses logins");
    assert!(refused.contains("not permitted to log in"), "{refused}");
    // The tenant, with its other environment's credentials, cannot give the login back.
    let mut other = connect_as(&staging_credentials).expect("staging runs (no schedule)");
    let names = stack.names(&made[0]);
    let lifted = diesel::sql_query(format!("ALTER ROLE \"{}\" LOGIN", names.app_role))
        .execute(&mut other)
        .expect_err("a tenant cannot give a role its login");
    assert!(lifted.to_string().contains("permission denied"), "{lifted}");
    assert_eq!(stack.environment(TENANT, &staging).await["state"], "ready");
    let stopped = audit_of(&stack, "environment.stopped").await;
    assert_eq!(stopped.len(), 1, "{stopped:?}");
    assert_eq!(stopped[0]["details"]["scheduled"], true);
    assert_eq!(stopped[0]["details"]["sessions_ended"], 1, "{stopped:?}");
    let mut control = stack.control_db();
    assert_eq!(
        texts(
            &mut control,
            &format!(
                "SELECT count(*)::text AS v FROM environment_stops \
                 WHERE environment_id = '{dev}' AND started_at IS NULL"
            )
        ),
        [Some("1".to_owned())],
        "the stop is recorded for metering"
    );

    // Refused by the API: production is never stopped, a running environment not started.
    let prod = stack
        .create_environment(TENANT, json!({"name": "prod-wms", "stage": "production"}))
        .await;
    let (status, problem) = stack
        .post_empty(&format!(
            "/v1/tenants/{TENANT}/environments/{}/stop",
            id(&prod["environment"])
        ))
        .await;
    assert_eq!(status, 409, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("production"))
    );
    let (status, problem) = stack
        .post_empty(&format!(
            "/v1/tenants/{TENANT}/environments/{staging}/start"
        ))
        .await;
    assert_eq!(status, 409, "{problem}");

    // A drift check of a stopped environment: clean, not probed, still stopped.
    let check = stack.job_action(TENANT, &dev, "drift-check", None).await;
    stack.wait_succeeded(TENANT, &id(&check), WITHIN).await;
    let env = stack.environment(TENANT, &dev).await;
    assert_eq!(env["state"], "stopped", "{env}");
    assert!(env["drift"].is_null(), "{env}");

    // Behind Bulkhead's back while stopped: an index of the baseline is dropped. A start only
    // gives the login back, so it refuses and says what to do; the environment stays stopped.
    let mut pooled = admin_conn(&stack.pooled_database);
    execute(
        &mut pooled,
        &format!("DROP INDEX \"{}\".order_lines_sku", names.schema),
    );
    let start = stack.job_action(TENANT, &dev, "start", None).await;
    let failed = stack.wait_job(TENANT, &id(&start), WITHIN).await;
    assert_eq!(failed["state"], "failed", "{failed}");
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("changed while it was stopped") && error.contains("apply"),
        "{failed}"
    );
    assert_eq!(stack.environment(TENANT, &dev).await["state"], "stopped");
    assert!(logs_in(&dev_credentials).is_err());
    // An apply brings it back to its blueprint and starts it.
    let apply = stack.job_action(TENANT, &dev, "apply", None).await;
    stack.wait_succeeded(TENANT, &id(&apply), WITHIN).await;
    assert_eq!(stack.environment(TENANT, &dev).await["state"], "ready");
    logs_in(&dev_credentials).expect("running again after the apply");

    // By hand: stop, then start; the walls are probed again on the way up. A session that
    // passed the login check just before the stop and holds itself out of `pg_stat_activity`
    // meanwhile (`post_auth_delay`, which any client may set) appears after the stop looked:
    // the workers' sweep ends it and audits it.
    let url = dev_credentials["url"].as_str().expect("url").to_owned();
    let url = format!(
        "{url}{}options=-c%20post_auth_delay%3D12",
        if url.contains('?') { '&' } else { '?' }
    );
    // The login check passes at once; the session shows twelve seconds later, well after the
    // stop (even on a loaded machine), which therefore cannot have seen it.
    let slipped = std::thread::spawn(move || -> Result<bool, String> {
        let Ok(mut conn) = diesel::PgConnection::establish(&url) else {
            return Err("the login was refused: it did not pass before the stop".to_owned());
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if diesel::sql_query("SELECT 1").execute(&mut conn).is_err() {
                return Ok(true);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err("the session that slipped past the stop was still alive 20 s later".to_owned())
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stop = stack.job_action(TENANT, &dev, "stop", None).await;
    stack.wait_succeeded(TENANT, &id(&stop), WITHIN).await;
    assert!(logs_in(&dev_credentials).is_err());
    assert_eq!(
        slipped.join().expect("session thread"),
        Ok(true),
        "{}",
        stack.log_tail(60)
    );
    // Accounted for: audited by the sweep that ended it (`environment.session_ended`), or, when
    // a loaded machine ran the stop after the session appeared, counted by the stop itself.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let swept = audit_of(&stack, "environment.session_ended").await;
        let by_stop = audit_of(&stack, "environment.stopped")
            .await
            .iter()
            .any(|e| e["details"]["scheduled"] == false && e["details"]["sessions_ended"] != 0);
        if !swept.is_empty() || by_stop {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the ended session is not accounted for\n{}",
            stack.log_tail(80)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let start = stack.job_action(TENANT, &dev, "start", None).await;
    let started = stack.wait_succeeded(TENANT, &id(&start), WITHIN).await;
    assert!(
        stack
            .event_kinds(TENANT, &id(&started))
            .await
            .contains(&"started".to_owned())
    );
    assert_eq!(stack.environment(TENANT, &dev).await["state"], "ready");
    logs_in(&dev_credentials).expect("running after a start");
    let started = audit_of(&stack, "environment.started").await;
    assert_eq!(started.len(), 1, "{started:?}");
    assert_eq!(started[0]["details"]["scheduled"], false);

    // Stopped by hand, then the policy's window comes to include now: the scheduler starts it.
    let stop = stack.job_action(TENANT, &dev, "stop", None).await;
    stack.wait_succeeded(TENANT, &id(&stop), WITHIN).await;
    put_schedule(&stack, window(-1, 1)).await;
    let start = scheduled_job(&stack, &dev, "start", 1).await;
    let started = stack.wait_succeeded(TENANT, &start, WITHIN).await;
    assert!(
        started["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("its scheduled window began")),
        "{started}"
    );
    assert_eq!(stack.environment(TENANT, &dev).await["state"], "ready");
    logs_in(&dev_credentials).expect("running inside its window");
    let mut control = stack.control_db();
    assert_eq!(
        texts(
            &mut control,
            &format!(
                "SELECT count(*)::text AS v FROM environment_stops \
                 WHERE environment_id = '{dev}' AND started_at IS NOT NULL"
            )
        ),
        [Some("3".to_owned())],
        "three stops, each ended"
    );
}
