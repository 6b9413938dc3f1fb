//! Every query that runs periodically (the sweeper's, the claim's, the relays', the retention
//! pass's) is planned over its indexes on a seeded control database, with no sequential scan
//! anywhere in its plan.

use crate::seed;
use crate::support::TestDb;
use bulkhead_core::store;
use diesel::query_builder::SqlQuery;
use diesel::query_dsl::LoadQuery;
use diesel::sql_types::{Array, BigInt, Json, Text, Uuid as SqlUuid};
use diesel::{PgConnection, QueryableByName};

/// A control database as a busy installation has it, in steady state: 20,000 finished jobs over
/// 200 environments (a few queued or running), their published wake-ups and events, mail,
/// sessions, idempotency keys and throttle windows, each spread over a little more than its
/// retention age (so a small share is due for deletion). Then ANALYZE.
fn seed_busy_installation(conn: &mut PgConnection) {
    let (tenant, _) = seed::environment(conn);
    let statements = [
        format!(
            "INSERT INTO environments (id, tenant_id, name, stage, isolation, blueprint, \
             blueprint_version, cost_tags) SELECT gen_random_uuid(), '{tenant}', 'e' || i, \
             'development', 'shared', 'shared-basic', 1, '{{}}' FROM generate_series(1, 200) i"
        ),
        "CREATE TEMP TABLE envs AS SELECT id, row_number() OVER (ORDER BY id) AS n \
         FROM environments"
            .to_owned(),
        format!(
            "INSERT INTO jobs (id, tenant_id, environment_id, operation, state, created_at, \
             finished_at) SELECT gen_random_uuid(), '{tenant}', e.id, 'apply', 'succeeded', \
             now() - i * interval '1 minute', now() - i * interval '1 minute' + interval '5 s' \
             FROM generate_series(1, 20000) i JOIN envs e ON e.n = i % 200 + 1"
        ),
        format!(
            "INSERT INTO jobs (id, tenant_id, environment_id, operation, state, lease_owner, \
             lease_expires_at, started_at) SELECT gen_random_uuid(), '{tenant}', e.id, 'apply', \
             'running', 'w', now() + interval '20 s', now() FROM envs e WHERE e.n <= 10"
        ),
        format!(
            "INSERT INTO jobs (id, tenant_id, environment_id, operation) \
             SELECT gen_random_uuid(), '{tenant}', e.id, 'plan' FROM envs e WHERE e.n <= 50"
        ),
        "INSERT INTO outbox (job_id, payload, created_at, sent_at) \
         SELECT id, '{}', created_at, CASE WHEN state = 'queued' THEN NULL \
           ELSE now() - (random() * 25) * interval '1 hour' END FROM jobs"
            .to_owned(),
        "INSERT INTO job_events (job_id, occurred_at, kind, message) \
         SELECT id, now() - (random() * 93) * interval '1 day', 'step', 'm' \
         FROM jobs, generate_series(1, 3)"
            .to_owned(),
        "INSERT INTO mail_outbox (id, recipient, subject, body, kind, send_after, sent_at) \
         SELECT gen_random_uuid(), 'm' || i || '@example.com', 's', 'b', 'invitation', now(), \
           CASE WHEN i <= 20 THEN NULL ELSE now() - (i % 31) * interval '1 day' END \
         FROM generate_series(1, 10000) i"
            .to_owned(),
        "INSERT INTO principals (id, kind, email, display_name) \
         VALUES (gen_random_uuid(), 'user', 'p@example.com', 'P')"
            .to_owned(),
        "INSERT INTO sessions (id, principal_id, token_hash, created_at, expires_at) \
         SELECT gen_random_uuid(), p.id, sha256(i::text::bytea), \
           now() - (i % 1500) * interval '1 minute', \
           now() - (i % 1500) * interval '1 minute' + interval '15 minutes' \
         FROM principals p, generate_series(1, 10000) i"
            .to_owned(),
        "INSERT INTO idempotency_keys (principal_id, key, request_hash, response_status, \
           response_body, created_at) \
         SELECT p.id, 'k' || i, sha256(i::text::bytea), 202, '{}', \
           now() - (i % 1500) * interval '1 minute' \
         FROM principals p, generate_series(1, 10000) i"
            .to_owned(),
        "INSERT INTO login_throttle (key, attempts, window_start) \
         SELECT 'login-ip:' || i, 1, now() - (i % 35) * interval '1 minute' \
         FROM generate_series(1, 10000) i"
            .to_owned(),
        "INSERT INTO housekeeping (task, last_run_at) VALUES ('retention', now())".to_owned(),
        "ANALYZE".to_owned(),
    ];
    for statement in statements {
        seed::exec(conn, &statement);
    }
}

#[derive(QueryableByName)]
struct Plan {
    #[diesel(sql_type = Json)]
    #[diesel(column_name = "QUERY PLAN")]
    plan: serde_json::Value,
}

/// The relations a plan reads with a sequential scan, and the indexes it reads.
fn walk(node: &serde_json::Value, scanned: &mut Vec<String>, indexes: &mut Vec<String>) {
    if node["Node Type"] == "Seq Scan" {
        scanned.push(node["Relation Name"].as_str().unwrap_or("?").to_owned());
    }
    if let Some(index) = node["Index Name"].as_str() {
        indexes.push(index.to_owned());
    }
    for child in node["Plans"].as_array().into_iter().flatten() {
        walk(child, scanned, indexes);
    }
}

fn explain(sql: &str) -> SqlQuery {
    diesel::sql_query(format!("EXPLAIN (FORMAT JSON) {sql}"))
}

/// The plan PostgreSQL chooses for an `explain(…)` with its parameters bound.
fn plan<Q>(conn: &mut PgConnection, query: Q) -> serde_json::Value
where
    Q: for<'a> LoadQuery<'a, PgConnection, Plan>,
{
    query.get_result::<Plan>(conn).expect("EXPLAIN").plan
}

#[test]
fn every_periodic_query_is_planned_over_indexes() {
    let db = TestDb::migrated();
    let mut conn = db.connect();
    seed_busy_installation(&mut conn);

    let day = 86_400_i64;
    let c = &mut conn;
    let states = vec!["queued".to_owned(), "approved".to_owned()];
    // (query, its plan, indexes it must use: `a|b` for either)
    let plans = [
        // The sweeper, every BULKHEAD_SWEEP_MS in every worker.
        (
            "expired leases",
            plan(c, explain(store::jobs::EXPIRED_LEASES_SQL)),
            vec!["jobs_one_running_per_environment|jobs_active"],
        ),
        (
            "stranded jobs",
            plan(
                c,
                explain(store::jobs::STRANDED_SQL).bind::<BigInt, _>(10_000),
            ),
            vec!["jobs_line", "outbox_job"],
        ),
        // Every job message.
        (
            "claim",
            plan(
                c,
                explain(store::jobs::CLAIM_SQL)
                    .bind::<SqlUuid, _>(uuid::Uuid::now_v7())
                    .bind::<Text, _>("w")
                    .bind::<BigInt, _>(30)
                    .bind::<Array<Text>, _>(states),
            ),
            vec!["jobs_pkey", "jobs_line"],
        ),
        // Every page of the jobs list.
        (
            "queue positions",
            plan(
                c,
                explain(store::jobs::QUEUE_POSITIONS_SQL)
                    .bind::<Array<SqlUuid>, _>(vec![uuid::Uuid::now_v7(); 3]),
            ),
            vec!["jobs_pkey", "jobs_line"],
        ),
        // The relays: the job outbox (every API and worker), the mail outbox (every API).
        (
            "job outbox relay",
            plan(
                c,
                explain(store::outbox::TAKE_UNSENT_SQL)
                    .bind::<BigInt, _>(100)
                    .bind::<BigInt, _>(30),
            ),
            vec!["outbox_unsent", "outbox_pkey"],
        ),
        (
            "mail relay",
            plan(c, explain(store::mail::TAKE_DUE_SQL).bind::<BigInt, _>(1)),
            vec!["mail_outbox_due", "mail_outbox_pkey"],
        ),
        // The retention pass, once per interval per installation: the rows to delete found by
        // age, then deleted by key.
        (
            "retention claim",
            plan(
                c,
                explain(store::housekeeping::CLAIM_SQL)
                    .bind::<Text, _>("retention")
                    .bind::<BigInt, _>(600),
            ),
            vec![],
        ),
        (
            "sent mail",
            plan(
                c,
                explain(store::mail::DELETE_DONE_SQL)
                    .bind::<BigInt, _>(30 * day)
                    .bind::<BigInt, _>(500),
            ),
            vec!["mail_outbox_done", "mail_outbox_pkey"],
        ),
        (
            "published wake-ups",
            plan(
                c,
                explain(store::outbox::DELETE_SENT_SQL)
                    .bind::<BigInt, _>(day)
                    .bind::<BigInt, _>(500),
            ),
            vec!["outbox_sent", "outbox_pkey"],
        ),
        (
            "expired sessions",
            plan(
                c,
                explain(store::sessions::DELETE_EXPIRED_SQL)
                    .bind::<BigInt, _>(day)
                    .bind::<BigInt, _>(500),
            ),
            vec!["sessions_expires_at", "sessions_pkey"],
        ),
        (
            "idempotency keys",
            plan(
                c,
                explain(store::idempotency::DELETE_OLD_SQL)
                    .bind::<BigInt, _>(day)
                    .bind::<BigInt, _>(500),
            ),
            vec!["idempotency_keys_created_at"],
        ),
        (
            "job events",
            plan(
                c,
                explain(store::jobs::DELETE_EVENTS_SQL)
                    .bind::<BigInt, _>(90 * day)
                    .bind::<BigInt, _>(500),
            ),
            vec!["job_events_occurred_at", "jobs_pkey", "job_events_pkey"],
        ),
        (
            "throttle windows",
            plan(
                c,
                explain(store::throttle::FORGET_OLD_SQL)
                    .bind::<BigInt, _>(1800)
                    .bind::<BigInt, _>(500),
            ),
            vec!["login_throttle_window_start", "login_throttle_pkey"],
        ),
    ];
    let mut problems = Vec::new();
    for (name, plan, required) in plans {
        let (mut scanned, mut indexes) = (Vec::new(), Vec::new());
        walk(&plan[0]["Plan"], &mut scanned, &mut indexes);
        let missing: Vec<_> = required
            .iter()
            .filter(|any_of| {
                !any_of
                    .split('|')
                    .any(|index| indexes.iter().any(|used| used == index))
            })
            .collect();
        if !scanned.is_empty() || !missing.is_empty() {
            problems.push(format!(
                "{name}: sequential scan of {scanned:?}; indexes not used: {missing:?}\n{}",
                serde_json::to_string_pretty(&plan[0]["Plan"]).unwrap_or_default()
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}
