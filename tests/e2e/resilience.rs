//! Jobs survive what production throws at them: a worker killed mid-apply, a worker stopped
//! with SIGTERM, the broker going away, duplicate messages, a job that always fails, several
//! jobs on one environment, and a running job canceled.

use crate::helpers::{
    BROKEN_SHARED, BROKER_ADDR, FLAKY_SHARED, Options, SLOW_SHARED, Stack, connect_as, drain_queue,
    publish_job_message, queue_depth, slow_shared_blueprint, texts,
};
use crate::proxy::BrokerProxy;
use chrono::{DateTime, Utc};
use diesel::RunQueryDsl;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const JOB_WITHIN: Duration = Duration::from_secs(60);

fn id(value: &Value) -> String {
    value["id"].as_str().expect("id").to_owned()
}

fn time(job: &Value, field: &str) -> DateTime<Utc> {
    job[field]
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| panic!("{field} of {job}"))
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The app role reads its baseline: the environment works.
fn works(credentials: &Value) {
    let mut conn = connect_as(credentials)
        .unwrap_or_else(|e| panic!("connect with the handed-out credentials: {e}"));
    let rows = texts(&mut conn, "SELECT count(*)::text AS v FROM orders");
    assert_eq!(rows, vec![Some("0".to_owned())]);
    diesel::sql_query("INSERT INTO orders (note) VALUES ('after the crash')")
        .execute(&mut conn)
        .expect("insert as the app");
}

/// Names of the job's `step` events, in order.
async fn steps(stack: &Stack, tenant: &str, job_id: &str) -> Vec<String> {
    stack
        .events(tenant, job_id)
        .await
        .iter()
        .filter(|e| e["kind"] == "step")
        .map(|e| e["details"]["name"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Polls until the slow blueprint's job has applied `0001_orders`: its next step,
/// `0002_slow`, takes 1.5 s, so the apply is now in the middle of a step.
async fn wait_mid_apply(stack: &Stack, tenant: &str, job_id: &str) {
    let deadline = Instant::now() + JOB_WITHIN;
    loop {
        let done = steps(stack, tenant, job_id).await;
        if done.iter().any(|s| s == "0001_orders") {
            assert!(
                !done.iter().any(|s| s == "0002_slow"),
                "the test polled too late to act during the slow step: {done:?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no 0001_orders step within {JOB_WITHIN:?}: {done:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let job = stack.job(tenant, job_id).await;
    assert_eq!(
        job["state"], "running",
        "the job should be mid-apply: {job}"
    );
}

/// Onboards a shared-tier `tenant` and asks for its `dev` environment from `blueprint`;
/// returns the apply job's id.
async fn start_apply(stack: &Stack, tenant: &str, blueprint: &str) -> String {
    stack.create_tenant(tenant, "shared").await;
    let accepted = stack
        .create_environment(
            tenant,
            json!({"name": "dev", "stage": "development", "blueprint": blueprint}),
        )
        .await;
    id(&accepted["job"])
}

/// A shared-tier `tenant` whose `dev` environment (slow-shared blueprint) is being applied:
/// in the middle of its slow step, the worker holding the job is killed with `kill -9`.
/// Returns the job id, and the killed worker's index and name.
async fn kill_lease_owner_mid_apply(stack: &mut Stack, tenant: &str) -> (String, usize, String) {
    let job_id = start_apply(stack, tenant, "slow-shared").await;
    wait_mid_apply(stack, tenant, &job_id).await;
    let owner = stack
        .lease_owner(&job_id)
        .expect("a running job has a lease owner");
    let victim = stack
        .worker_index(&owner)
        .unwrap_or_else(|| panic!("lease owner {owner} is none of this stack's workers"));
    stack.kill_worker(victim);
    (job_id, victim, owner)
}

async fn destroy_and_check(stack: &Stack, tenant: &str, env: &Value) {
    let (status, body) = stack
        .delete(&format!("/v1/tenants/{tenant}/environments/{}", id(env)))
        .await;
    assert_eq!(status, 202, "destroy: {body}");
    stack
        .wait_succeeded(tenant, &id(&body["job"]), JOB_WITHIN)
        .await;
    stack
        .wait_environment(tenant, &id(env), "destroyed", JOB_WITHIN)
        .await;
    assert_eq!(
        stack.leftovers(env),
        Vec::<String>::new(),
        "left after destroy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_apply() {
    let mut stack = Stack::start(Options {
        workers: 2,
        blueprints: vec![SLOW_SHARED],
        worker_env: env(&[
            ("BULKHEAD_LEASE_SECONDS", "2"),
            ("BULKHEAD_SWEEP_MS", "200"),
        ]),
        ..Options::default()
    })
    .await;
    let (job_id, victim, owner) = kill_lease_owner_mid_apply(&mut stack, "hooli").await;
    let at_kill = stack.job("hooli", &job_id).await;
    assert_eq!(
        at_kill["state"], "running",
        "the kill landed mid-apply: {at_kill}"
    );

    let job = stack.wait_succeeded("hooli", &job_id, JOB_WITHIN).await;
    let kinds = stack.event_kinds("hooli", &job_id).await;
    eprintln!("killed worker {victim} ({owner}); events {kinds:?}");
    assert_eq!(
        kinds.iter().filter(|k| *k == "succeeded").count(),
        1,
        "{kinds:?}"
    );
    assert!(
        job["attempts"].as_i64().unwrap_or(0) >= 2 || kinds.iter().any(|k| k == "lease_expired"),
        "another attempt took over: {job} {kinds:?}"
    );
    let survivor = stack.lease_owner(&job_id);
    assert!(
        survivor.is_none(),
        "a finished job holds no lease: {survivor:?}"
    );
    let env = stack
        .wait_environment("hooli", "dev", "ready", JOB_WITHIN)
        .await;
    works(&stack.credentials("hooli", "dev").await);
    destroy_and_check(&stack, "hooli", &env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_step_and_releases() {
    let mut stack = Stack::start(Options {
        blueprints: vec![SLOW_SHARED],
        ..Options::default()
    })
    .await;
    let job_id = start_apply(&stack, "pied-piper", "slow-shared").await;
    wait_mid_apply(&stack, "pied-piper", &job_id).await;
    let started = Instant::now();
    let status = stack.terminate_worker(0, Duration::from_secs(15)).await;
    assert!(status.success(), "worker exit after SIGTERM: {status}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "SIGTERM took {:?}",
        started.elapsed()
    );
    let job = stack.job("pied-piper", &job_id).await;
    let kinds = stack.event_kinds("pied-piper", &job_id).await;
    eprintln!(
        "after SIGTERM ({:?}): job {}\nevents {kinds:?}",
        started.elapsed(),
        job["state"]
    );
    assert!(
        kinds.iter().any(|k| k == "released") || job["state"] == "succeeded",
        "after SIGTERM the lease is given back (or the job done): {job} {kinds:?}"
    );
    // The step in progress (the slow migration) was finished, not cut off.
    let done = steps(&stack, "pied-piper", &job_id).await;
    assert!(
        done.iter().any(|s| s == "0002_slow"),
        "the current step finished: {done:?}"
    );
    if job["state"] != "succeeded" {
        assert_eq!(job["state"], "queued", "released job: {job}");
        assert!(
            stack.lease_owner(&job_id).is_none(),
            "the lease was given back"
        );
    }

    let second = stack.spawn_worker();
    stack.wait_worker_consuming(second).await;
    let job = stack
        .wait_succeeded("pied-piper", &job_id, JOB_WITHIN)
        .await;
    let kinds = stack.event_kinds("pied-piper", &job_id).await;
    assert_eq!(
        kinds.iter().filter(|k| *k == "succeeded").count(),
        1,
        "{kinds:?}"
    );
    // The second worker continued where the first stopped: the slow migration ran once.
    let done = steps(&stack, "pied-piper", &job_id).await;
    assert_eq!(
        done.iter().filter(|s| *s == "0002_slow").count(),
        1,
        "{done:?}"
    );
    let planned: Vec<&str> = job["plan"]["actions"]
        .as_array()
        .expect("plan actions")
        .iter()
        .filter_map(|a| a["name"].as_str())
        .collect();
    assert!(
        !planned.contains(&"0002_slow"),
        "the last attempt's plan: {planned:?}"
    );
    stack
        .wait_environment("pied-piper", "dev", "ready", JOB_WITHIN)
        .await;
    works(&stack.credentials("pied-piper", "dev").await);
    // An idle worker stops at once.
    let status = stack.terminate_worker(second, Duration::from_secs(5)).await;
    assert!(status.success(), "idle worker exit after SIGTERM: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage() {
    let proxy = BrokerProxy::start(BROKER_ADDR).await;
    let stack = Stack::start(Options {
        amqp_url: Some(proxy.amqp_url()),
        ..Options::default()
    })
    .await;
    stack.create_tenant("stark", "shared").await;
    proxy.cut();
    let mut accepted = Vec::new();
    for n in 0..5 {
        let started = Instant::now();
        let body = stack
            .create_environment(
                "stark",
                json!({"name": format!("env-{n}"), "stage": "development"}),
            )
            .await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "POST took {:?} with the broker down",
            started.elapsed()
        );
        accepted.push(body);
    }
    // Without a broker nothing runs, and nothing is lost.
    let quiet_until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < quiet_until {
        for body in &accepted {
            let job = stack.job("stark", &id(&body["job"])).await;
            assert_eq!(job["state"], "queued", "no broker, no run: {job}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for body in &accepted {
        let env = stack.environment("stark", &id(&body["environment"])).await;
        assert_eq!(env["state"], "pending", "{env}");
    }
    proxy.restore();
    let deadline = Duration::from_secs(30);
    let restored = Instant::now();
    for body in &accepted {
        let left = deadline.saturating_sub(restored.elapsed());
        stack.wait_succeeded("stark", &id(&body["job"]), left).await;
        stack
            .wait_environment(
                "stark",
                &id(&body["environment"]),
                "ready",
                deadline.saturating_sub(restored.elapsed()),
            )
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_delivery() {
    let stack = Stack::start(Options {
        blueprints: vec![SLOW_SHARED],
        ..Options::default()
    })
    .await;
    let job_id = start_apply(&stack, "wayne", "slow-shared").await;
    // Once while it runs…
    wait_mid_apply(&stack, "wayne", &job_id).await;
    publish_job_message(&stack, &job_id, "apply");
    let job = stack.wait_succeeded("wayne", &job_id, JOB_WITHIN).await;
    assert_eq!(job["attempts"], 1, "{job}");
    let finished_at = time(&job, "finished_at");
    // …and twice after it finished.
    publish_job_message(&stack, &job_id, "apply");
    publish_job_message(&stack, &job_id, "apply");
    // A later job of the same environment is delivered after the duplicates: once it is done,
    // the worker has seen them.
    let check = stack.job_action("wayne", "dev", "drift-check", None).await;
    stack.wait_succeeded("wayne", &id(&check), JOB_WITHIN).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while queue_depth(&stack.topology().queue) > 0 {
        assert!(Instant::now() < deadline, "the job queue does not drain");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let job = stack.job("wayne", &job_id).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(
        job["attempts"], 1,
        "duplicates must not run the job again: {job}"
    );
    let kinds = stack.event_kinds("wayne", &job_id).await;
    assert_eq!(
        kinds.iter().filter(|k| *k == "succeeded").count(),
        1,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| *k == "claimed").count(),
        1,
        "{kinds:?}"
    );
    assert_eq!(time(&job, "finished_at"), finished_at, "{job}");
    let env = stack.environment("wayne", "dev").await;
    assert_eq!(env["state"], "ready", "{env}");
    assert_eq!(
        queue_depth(&stack.topology().dead_letter_queue),
        0,
        "nothing dead-lettered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_failing_job_is_retried_then_dead_lettered() {
    let stack = Stack::start(Options {
        blueprints: vec![FLAKY_SHARED, BROKEN_SHARED],
        env: env(&[("BULKHEAD_JOB_MAX_ATTEMPTS", "3")]),
        worker_env: env(&[
            ("BULKHEAD_RETRY_BASE_MS", "100"),
            ("BULKHEAD_SWEEP_MS", "200"),
        ]),
        ..Options::default()
    })
    .await;
    stack.create_tenant("flaky-co", "shared").await;
    stack.create_tenant("broken-co", "shared").await;
    stack.create_tenant("healthy-co", "shared").await;
    let flaky = stack
        .create_environment(
            "flaky-co",
            json!({"name": "dev", "stage": "development", "blueprint": "flaky-shared"}),
        )
        .await;
    let broken = stack
        .create_environment(
            "broken-co",
            json!({"name": "dev", "stage": "development", "blueprint": "broken-shared"}),
        )
        .await;
    let healthy = stack
        .create_environment("healthy-co", json!({"name": "dev", "stage": "development"}))
        .await;
    let flaky_job = id(&flaky["job"]);

    stack
        .wait_succeeded("healthy-co", &id(&healthy["job"]), JOB_WITHIN)
        .await;
    stack
        .wait_environment("healthy-co", "dev", "ready", JOB_WITHIN)
        .await;

    // A transient error is retried until the attempts run out.
    let job = stack.wait_job("flaky-co", &flaky_job, JOB_WITHIN).await;
    let kinds = stack.event_kinds("flaky-co", &flaky_job).await;
    assert_eq!(job["state"], "failed", "{job} {kinds:?}");
    assert_eq!(job["attempts"], 3, "{job} {kinds:?}");
    assert_eq!(job["max_attempts"], 3, "{job}");
    assert_eq!(
        kinds.iter().filter(|k| *k == "retry").count(),
        2,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| *k == "failed").count(),
        1,
        "{kinds:?}"
    );
    let error = job["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("0002_flaky"),
        "the error names the baseline: {error}"
    );
    assert!(
        error.contains("could not serialize"),
        "the error carries the SQL error: {error}"
    );
    let env = stack.environment("flaky-co", "dev").await;
    assert_eq!(env["state"], "failed", "{env}");

    // A step the target refuses (division by zero) fails at once, with the reason: trying it
    // again cannot help.
    let broken_job = id(&broken["job"]);
    let job = stack.wait_job("broken-co", &broken_job, JOB_WITHIN).await;
    let kinds = stack.event_kinds("broken-co", &broken_job).await;
    assert_eq!(job["state"], "failed", "{job} {kinds:?}");
    assert_eq!(job["attempts"], 1, "{job} {kinds:?}");
    assert!(!kinds.iter().any(|k| k == "retry"), "{kinds:?}");
    let error = job["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("0002_boom") && error.contains("division by zero"),
        "{error}"
    );

    // The last deliveries went to the dead-letter queue.
    let dead = stack.topology().dead_letter_queue;
    let deadline = Instant::now() + Duration::from_secs(10);
    while queue_depth(&dead) < 2 {
        assert!(Instant::now() < deadline, "not both in {dead}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let messages = drain_queue(&dead);
    assert_eq!(messages.len(), 2, "{messages:?}");
    let mut dead_jobs: Vec<&str> = messages
        .iter()
        .filter_map(|m| m["job_id"].as_str())
        .collect();
    dead_jobs.sort_unstable();
    let mut expected = vec![flaky_job.as_str(), broken_job.as_str()];
    expected.sort_unstable();
    assert_eq!(dead_jobs, expected, "{messages:?}");
    assert!(
        messages.iter().all(|m| m["operation"] == "apply"),
        "{messages:?}"
    );

    // What the failed attempts made can still be torn down.
    for tenant in ["flaky-co", "broken-co"] {
        let env = stack.environment(tenant, "dev").await;
        destroy_and_check(&stack, tenant, &env).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_jobs_wait_in_order() {
    let stack = Stack::start(Options {
        blueprints: vec![SLOW_SHARED],
        ..Options::default()
    })
    .await;
    stack.create_tenant("tyrell", "shared").await;
    let accepted = stack
        .create_environment(
            "tyrell",
            json!({"name": "dev", "stage": "development", "blueprint": "slow-shared"}),
        )
        .await;
    let first = accepted["job"].clone();
    let second = stack.job_action("tyrell", "dev", "apply", None).await;
    let third = stack.job_action("tyrell", "dev", "apply", None).await;
    assert_eq!(second["state"], "queued", "{second}");
    assert!(
        second["queue_position"].as_i64().unwrap_or(0) >= 1,
        "{second}"
    );
    assert!(
        third["queue_position"].as_i64().unwrap_or(0) >= 2,
        "{third}"
    );

    // While the first runs, the later ones wait their turn.
    wait_mid_apply(&stack, "tyrell", &id(&first)).await;
    let waiting = stack.job("tyrell", &id(&third)).await;
    assert_eq!(waiting["state"], "queued", "{waiting}");
    assert!(
        waiting["queue_position"].as_i64().unwrap_or(0) >= 1,
        "{waiting}"
    );
    assert!(waiting["started_at"].is_null(), "{waiting}");

    let mut done = Vec::new();
    for job in [&first, &second, &third] {
        done.push(stack.wait_succeeded("tyrell", &id(job), JOB_WITHIN).await);
    }
    for pair in done.windows(2) {
        assert!(
            time(&pair[0], "finished_at") <= time(&pair[1], "started_at"),
            "jobs ran in creation order, one at a time: {} then {}",
            pair[0],
            pair[1]
        );
        assert!(time(&pair[0], "started_at") < time(&pair[1], "started_at"));
    }
    stack
        .wait_environment("tyrell", "dev", "ready", JOB_WITHIN)
        .await;
}

/// A baseline whose middle step takes 3 s: long enough that a cancel request sent during it is
/// always seen (the worker looks once a second) before the step ends.
const LONG_STEP_SHARED: (&str, &str) = slow_shared_blueprint!("long-step-shared", "3");

/// Cancel of a running apply: 202, the worker stops at the next step boundary (the slow step
/// completes, the one after it never starts), the job ends `canceled` with an error that says
/// what to do, the environment is `failed`, the job queued behind runs next, and a later apply
/// finishes the environment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_running_apply_stops_at_a_step_boundary() {
    let stack = Stack::start(Options {
        blueprints: vec![LONG_STEP_SHARED],
        ..Options::default()
    })
    .await;
    let apply = start_apply(&stack, "cyberdyne", "long-step-shared").await;
    let plan = stack.job_action("cyberdyne", "dev", "plan", None).await;
    wait_mid_apply(&stack, "cyberdyne", &apply).await;

    let cancel = format!("/v1/tenants/cyberdyne/jobs/{apply}/cancel");
    let (status, requested) = stack.post_empty(&cancel).await;
    assert_eq!(status, 202, "{requested}");
    assert_eq!(requested["state"], "running", "{requested}");
    assert!(requested["cancel_requested_at"].is_string(), "{requested}");
    let (status, again) = stack.post_empty(&cancel).await;
    assert_eq!(status, 202, "asking twice is one request: {again}");
    assert_eq!(
        again["cancel_requested_at"],
        requested["cancel_requested_at"]
    );

    let canceled = stack.wait_job("cyberdyne", &apply, JOB_WITHIN).await;
    assert_eq!(canceled["state"], "canceled", "{canceled}");
    let error = canceled["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("canceled by request") && error.contains("apply"),
        "the error says what happened and what to do: {error}"
    );
    let done = steps(&stack, "cyberdyne", &apply).await;
    assert!(done.iter().any(|s| s == "0002_slow"), "{done:?}");
    assert!(
        !done.iter().any(|s| s == "0003_order_notes"),
        "no step starts after the cancel was seen: {done:?}"
    );
    let kinds = stack.event_kinds("cyberdyne", &apply).await;
    assert!(
        kinds.iter().any(|k| k == "cancel_requested") && kinds.iter().any(|k| k == "canceled"),
        "{kinds:?}"
    );
    let env = stack.environment("cyberdyne", "dev").await;
    assert_eq!(
        env["state"], "failed",
        "a partly applied environment: {env}"
    );
    let (status, finished) = stack.post_empty(&cancel).await;
    assert_eq!(status, 409, "a finished job cannot be canceled: {finished}");

    // The job waiting behind it runs, and sees what is left to do.
    let plan = stack
        .wait_succeeded("cyberdyne", &id(&plan), JOB_WITHIN)
        .await;
    let remaining = plan["plan"]["actions"].to_string();
    assert!(remaining.contains("0003_order_notes"), "{remaining}");
    assert!(!remaining.contains("0001_orders"), "{remaining}");

    let repair = stack.job_action("cyberdyne", "dev", "apply", None).await;
    stack
        .wait_succeeded("cyberdyne", &id(&repair), JOB_WITHIN)
        .await;
    let env = stack
        .wait_environment("cyberdyne", "dev", "ready", JOB_WITHIN)
        .await;
    destroy_and_check(&stack, "cyberdyne", &env).await;
}

/// Cancel of a running job whose worker then dies (`kill -9` before it could look): the job
/// is not run again. The sweeper of the next worker ends it `canceled`, saying so, after one
/// attempt, and the environment can be finished by a new apply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_outlives_a_killed_worker() {
    let mut stack = Stack::start(Options {
        blueprints: vec![SLOW_SHARED],
        worker_env: env(&[
            ("BULKHEAD_LEASE_SECONDS", "2"),
            ("BULKHEAD_SWEEP_MS", "200"),
        ]),
        ..Options::default()
    })
    .await;
    let (job_id, _, _) = kill_lease_owner_mid_apply(&mut stack, "soylent").await;

    let (status, requested) = stack
        .post_empty(&format!("/v1/tenants/soylent/jobs/{job_id}/cancel"))
        .await;
    assert_eq!(status, 202, "the row still says running: {requested}");

    let next = stack.spawn_worker();
    stack.wait_worker_consuming(next).await;
    let job = stack.wait_job("soylent", &job_id, JOB_WITHIN).await;
    assert_eq!(job["state"], "canceled", "{job}");
    assert_eq!(job["attempts"], 1, "not run again: {job}");
    let error = job["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("canceled by request") && error.contains("stopped heartbeating"),
        "{error}"
    );
    let kinds = stack.event_kinds("soylent", &job_id).await;
    assert!(!kinds.iter().any(|k| k == "lease_expired"), "{kinds:?}");
    let env = stack.environment("soylent", "dev").await;
    assert_eq!(env["state"], "failed", "{env}");

    let repair = stack.job_action("soylent", "dev", "apply", None).await;
    stack
        .wait_succeeded("soylent", &id(&repair), JOB_WITHIN)
        .await;
    let env = stack
        .wait_environment("soylent", "dev", "ready", JOB_WITHIN)
        .await;
    destroy_and_check(&stack, "soylent", &env).await;
}

/// A job that raced an environment's destroy (queued while the destroy was being queued, as
/// an attacker sending DELETE and apply at once managed) runs after it and must not make the
/// environment again: it fails with the reason, and the environment stays destroyed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_raced_a_destroy_does_not_resurrect_the_environment() {
    let stack = Stack::start(Options::default()).await;
    stack.create_tenant("lazarus", "shared").await;
    let accepted = stack
        .create_environment("lazarus", json!({"name": "dev", "stage": "development"}))
        .await;
    let env = accepted["environment"].clone();
    stack
        .wait_succeeded("lazarus", &id(&accepted["job"]), JOB_WITHIN)
        .await;
    destroy_and_check(&stack, "lazarus", &env).await;
    // The apply that lost the race: queued for the environment, woken after the destroy.
    let job_id = uuid::Uuid::now_v7().to_string();
    let mut control = stack.control_db();
    diesel::sql_query(format!(
        "INSERT INTO jobs (id, tenant_id, environment_id, operation, state, attempts, max_attempts, \
           run_after, fencing_token, created_at, updated_at) \
         SELECT '{job_id}', tenant_id, id, 'apply', 'queued', 0, 3, now(), 0, now(), now() \
         FROM environments WHERE id = '{}'",
        id(&env)
    ))
    .execute(&mut control)
    .expect("queue the raced apply");
    publish_job_message(&stack, &job_id, "apply");
    let job = stack.wait_job("lazarus", &job_id, JOB_WITHIN).await;
    assert_eq!(job["state"], "failed", "{job}");
    assert!(
        job["error"]
            .as_str()
            .is_some_and(|e| e.contains("was destroyed")),
        "{job}"
    );
    assert_eq!(job["attempts"], 1, "not retried: {job}");
    let after = stack.environment("lazarus", &id(&env)).await;
    assert_eq!(after["state"], "destroyed", "{after}");
    assert_eq!(
        stack.leftovers(&env),
        Vec::<String>::new(),
        "nothing made again"
    );
}
