//! The classic paused-process fault, through the real binaries: a worker is `SIGSTOP`ped for
//! longer than its lease in the middle of a job, another worker takes the job over and
//! finishes it, and the first is `SIGCONT`ed. It must write nothing more, on the target or in
//! the control database; the job and the environment must agree.

use crate::helpers::{Options, Stack, slow_shared_blueprint, text1, texts};
use serde_json::{Value, json};
use std::process::Command;
use std::time::{Duration, Instant};

/// Its second migration sleeps 4 s, longer than the 3 s lease.
const SLOW_FOUR: (&str, &str) = slow_shared_blueprint!("slow-four", "4");
const JOB_WITHIN: Duration = Duration::from_secs(90);

fn signal(stack: &Stack, index: usize, signal: &str) {
    let pid = stack.workers[index].id().to_string();
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid])
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{signal} {pid}");
}

async fn stack(fault: Option<&str>) -> Stack {
    let mut worker_env = vec![
        ("BULKHEAD_LEASE_SECONDS".to_owned(), "3".to_owned()),
        ("BULKHEAD_SWEEP_MS".to_owned(), "300".to_owned()),
    ];
    if let Some(fault) = fault {
        worker_env.push(("BULKHEAD_FAULT_PAUSE".to_owned(), fault.to_owned()));
    }
    Stack::start(Options {
        workers: 1,
        worker_env,
        blueprints: vec![SLOW_FOUR],
        ..Options::default()
    })
    .await
}

fn id(value: &Value) -> String {
    value["id"].as_str().expect("id").to_owned()
}

/// Polls the job's events until `ready` says the moment has come.
async fn wait_for_event(
    stack: &Stack,
    tenant: &str,
    job_id: &str,
    what: &str,
    ready: impl Fn(&[Value]) -> bool,
) {
    let deadline = Instant::now() + JOB_WITHIN;
    loop {
        let events = stack.events(tenant, job_id).await;
        if ready(&events) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {what} within {JOB_WITHIN:?}: {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn count(events: &[Value], kind: &str) -> usize {
    events.iter().filter(|e| e["kind"] == kind).count()
}

/// Pauses worker 0 (the only one), starts worker 1, waits until the job ends, resumes worker 0
/// and gives it time to try to write. Returns the job's events (before and after the resume,
/// which must be the same) and the finished job.
async fn pause_take_over_resume(
    stack: &mut Stack,
    tenant: &str,
    job_id: &str,
) -> (Vec<Value>, Value) {
    let owner = stack.lease_owner(job_id).expect("the job is running");
    assert_eq!(stack.worker_index(&owner), Some(0), "worker 0 runs it");
    signal(stack, 0, "STOP");
    let second = stack.spawn_worker();
    stack.wait_worker_consuming(second).await;
    let done = stack.wait_job(tenant, job_id, JOB_WITHIN).await;
    let settled = stack.events(tenant, job_id).await;
    signal(stack, 0, "CONT");
    // Worker 0 resumes: heartbeats, finishes its statement, tries its next writes.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = stack.events(tenant, job_id).await;
    assert_eq!(
        after.len(),
        settled.len(),
        "the resumed worker wrote events: {:?}",
        &after[settled.len()..]
    );
    assert_eq!(stack.job(tenant, job_id).await["state"], done["state"]);
    let log = stack.log_tail(200);
    assert!(!log.contains("panicked"), "a process panicked:\n{log}");
    (after, done)
}

/// The job and the environment agree: the environment is `state`, and the target's fence
/// holds the token of the job that finished last (no stale worker raised or used it).
fn agree(stack: &Stack, environment: &Value, job_id: &str, state: &str) {
    let mut control = stack.control_db();
    let env_id = id(environment);
    let stored = text1(
        &mut control,
        "SELECT state AS v FROM environments WHERE id = $1::uuid",
        &env_id,
    );
    assert_eq!(stored.as_deref(), Some(state), "environment state");
    let token = text1(
        &mut control,
        "SELECT fencing_token::text AS v FROM jobs WHERE id = $1::uuid",
        job_id,
    )
    .expect("job token");
    let running = texts(
        &mut control,
        &format!(
            "SELECT id::text AS v FROM jobs WHERE environment_id = '{env_id}' AND state = 'running'"
        ),
    );
    assert!(
        running.is_empty(),
        "no job of the environment still runs: {running:?}"
    );
    let mut pooled = crate::helpers::admin_conn(&stack.pooled_database);
    let fence = text1(
        &mut pooled,
        "SELECT token::text || '/' || job_id::text AS v FROM bulkhead_meta.fence WHERE environment_id = $1::uuid",
        &env_id,
    );
    assert_eq!(
        fence,
        Some(format!("{token}/{job_id}")),
        "the fence holds the finishing job's token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_worker_mid_migration_writes_nothing_after_a_takeover() {
    let mut stack = stack(None).await;
    stack.create_tenant("initech", "shared").await;
    let accepted = stack
        .create_environment(
            "initech",
            json!({"name": "dev", "stage": "development", "blueprint": "slow-four"}),
        )
        .await;
    let (environment, job_id) = (accepted["environment"].clone(), id(&accepted["job"]));
    // 0001_orders is done: the 4 s migration is running now.
    wait_for_event(&stack, "initech", &job_id, "0001_orders", |events| {
        events.iter().any(|e| e["details"]["name"] == "0001_orders")
    })
    .await;
    let (events, job) = pause_take_over_resume(&mut stack, "initech", &job_id).await;

    assert_eq!(job["state"], "succeeded", "{job}");
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["kind"].as_str()).collect();
    assert_eq!(count(&events, "succeeded"), 1, "{kinds:?}");
    assert_eq!(count(&events, "verified"), 1, "{kinds:?}");
    assert_eq!(count(&events, "failed"), 0, "{kinds:?}");
    assert_eq!(count(&events, "claimed"), 2, "{kinds:?}");
    assert_eq!(count(&events, "lease_expired"), 1, "{kinds:?}");
    // The takeover waited for the paused session's transaction, then ended it.
    let takeover: Vec<&Value> = events.iter().filter(|e| e["kind"] == "takeover").collect();
    assert_eq!(takeover.len(), 1, "{kinds:?}");
    assert_eq!(takeover[0]["details"]["ended"], true, "{:?}", takeover[0]);
    agree(&stack, &environment, &job_id, "ready");
    let names = stack.names(&environment);
    let mut pooled = crate::helpers::admin_conn(&stack.pooled_database);
    let applied = texts(
        &mut pooled,
        &format!(
            "SELECT id AS v FROM bulkhead_meta.baseline WHERE schema_name = '{}' ORDER BY id",
            names.schema
        ),
    );
    assert_eq!(
        applied,
        ["0001_orders", "0002_slow", "0003_order_notes"].map(|s| Some(s.to_owned())),
        "each migration applied once"
    );
    let credentials = stack.credentials("initech", &id(&environment)).await;
    assert_eq!(credentials["schema"], names.schema.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_paused_in_verification_does_not_mark_the_environment() {
    let mut stack = stack(Some("verify:10000")).await;
    stack.create_tenant("umbrella", "shared").await;
    let accepted = stack
        .create_environment("umbrella", json!({"name": "dev", "stage": "development"}))
        .await;
    let (environment, job_id) = (accepted["environment"].clone(), id(&accepted["job"]));
    wait_for_event(&stack, "umbrella", &job_id, "the verify fault", |events| {
        count(events, "fault") == 1
    })
    .await;
    let (events, job) = pause_take_over_resume(&mut stack, "umbrella", &job_id).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(count(&events, "verified"), 1);
    assert_eq!(count(&events, "succeeded"), 1);
    assert_eq!(count(&events, "claimed"), 2);
    agree(&stack, &environment, &job_id, "ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_paused_in_a_destroy_writes_nothing_after_a_takeover() {
    let mut stack = stack(Some("destroy_step:10000")).await;
    stack.create_tenant("cyberdyne", "shared").await;
    let accepted = stack
        .create_environment("cyberdyne", json!({"name": "dev", "stage": "development"}))
        .await;
    let environment = accepted["environment"].clone();
    stack
        .wait_succeeded("cyberdyne", &id(&accepted["job"]), JOB_WITHIN)
        .await;
    let (status, body) = stack
        .delete(&format!(
            "/v1/tenants/cyberdyne/environments/{}",
            id(&environment)
        ))
        .await;
    assert_eq!(status, 202, "{body}");
    let job_id = id(&body["job"]);
    wait_for_event(
        &stack,
        "cyberdyne",
        &job_id,
        "the destroy fault",
        |events| count(events, "fault") == 1,
    )
    .await;
    let (events, job) = pause_take_over_resume(&mut stack, "cyberdyne", &job_id).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(count(&events, "succeeded"), 1);
    assert_eq!(count(&events, "claimed"), 2);
    agree(&stack, &environment, &job_id, "destroyed");
    assert_eq!(stack.leftovers(&environment), Vec::<String>::new());
}

/// A worker cut off from the control database (its connections go through a proxy the test
/// cuts) cannot renew its lease: it stops before its next step on the target within a lease,
/// however long the cut lasts, and once the database is back the job finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_cut_off_from_the_control_database_stops_touching_the_target() {
    let mut stack = Stack::start(Options {
        no_workers: true,
        worker_env: vec![
            ("BULKHEAD_LEASE_SECONDS".to_owned(), "3".to_owned()),
            ("BULKHEAD_SWEEP_MS".to_owned(), "300".to_owned()),
        ],
        blueprints: vec![SLOW_FOUR],
        ..Options::default()
    })
    .await;
    let server = crate::helpers::server_url();
    let upstream = server
        .rsplit_once('@')
        .map_or(server.as_str(), |(_, host)| host)
        .trim_end_matches('/')
        .to_owned();
    let proxy = crate::proxy::BrokerProxy::start(&upstream).await;
    let database = stack
        .db_url
        .rsplit('/')
        .next()
        .expect("database name")
        .to_owned();
    let through_proxy = format!("postgres://postgres@{}/{database}", proxy.addr);
    let worker = stack.spawn_worker_with(&[("DATABASE_URL".to_owned(), through_proxy)]);
    stack.wait_worker_consuming(worker).await;

    stack.create_tenant("massive", "shared").await;
    let accepted = stack
        .create_environment(
            "massive",
            json!({"name": "dev", "stage": "development", "blueprint": "slow-four"}),
        )
        .await;
    let (environment, job_id) = (accepted["environment"].clone(), id(&accepted["job"]));
    wait_for_event(&stack, "massive", &job_id, "0001_orders", |events| {
        events.iter().any(|e| e["details"]["name"] == "0001_orders")
    })
    .await;
    // The 4 s migration is running; the worker loses the control database now.
    proxy.cut();
    let names = stack.names(&environment);
    let applied = |pooled: &mut diesel::PgConnection| {
        texts(
            pooled,
            &format!(
                "SELECT id AS v FROM bulkhead_meta.baseline WHERE schema_name = '{}' ORDER BY id",
                names.schema
            ),
        )
    };
    let mut pooled = crate::helpers::admin_conn(&stack.pooled_database);
    // The slow step ends ~4 s after it started; a lease (3 s) after its last renewal the worker
    // may not start another step. Wait well past both.
    tokio::time::sleep(Duration::from_secs(9)).await;
    let after_cut = applied(&mut pooled);
    assert!(
        !after_cut.contains(&Some("0003_order_notes".to_owned())),
        "the cut-off worker went on with the next step: {after_cut:?}"
    );
    let active = texts(
        &mut pooled,
        &format!(
            "SELECT pid::text AS v FROM pg_stat_activity WHERE application_name LIKE 'bulkhead/{job_id}/%' \
             AND state = 'active'"
        ),
    );
    assert!(
        active.is_empty(),
        "still running statements on the target: {active:?}"
    );

    // The control database is back: the expired lease is requeued and the job finishes.
    proxy.restore();
    let job = stack.wait_job("massive", &job_id, JOB_WITHIN).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    agree(&stack, &environment, &job_id, "ready");
    assert_eq!(
        applied(&mut pooled),
        ["0001_orders", "0002_slow", "0003_order_notes"].map(|s| Some(s.to_owned()))
    );
}
