//! The scheduler's cost (issue 11): one tick of `store::scheduler::queue_due_drift_checks`, as
//! every worker runs it after each sweep, over 10,000 ready environments of 200 tenants under
//! policy (half with a policy of their own), their next checks spread over a day:
//! 1. a quiet tick (nothing due: the common case, every second);
//! 2. a busy tick (as many due as a tick takes, `TICK_LIMIT`: jobs queued, next due times
//!    written), and one of 100 for the per-check cost;
//! 3. both again without the partial index `environments_drift_due`, for comparison, and the
//!    busy tick with the webhook trigger on `jobs` turned off.
//!
//! Each with the due query's own execution time from `EXPLAIN (ANALYZE)`. Then the lifecycle
//! schedules' share of the same sweep: a quiet and a busy tick of
//! `store::scheduler::lifecycle::queue_due_changes` (the development stage of the tenants with
//! a policy has a schedule whose window is not now, so a due ready environment gets a stop
//! job), with and without the partial index `environments_schedule_due`, and the stray-session
//! check's control-database read (`store::stops::stopped_idle`) with 1,000 stopped environments.
//!
//! Run: `cargo bench --bench scheduler`. The database it makes is dropped at the end.

use bulkhead_core::store::scheduler::lifecycle::queue_due_changes;
use bulkhead_core::store::scheduler::{DUE_DRIFT_SQL, TICK_LIMIT, queue_due_drift_checks};
use bulkhead_core::store::stops::stopped_idle;
use chrono::Timelike;
use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection, RunQueryDsl};
use std::time::{Duration, Instant};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

const TENANTS: i64 = 200;
const ENVIRONMENTS: i64 = 10_000;
const QUIET_TICKS: usize = 200;
const BUSY_TICKS: usize = 20;

struct DropDatabase {
    server: String,
    name: String,
}

impl Drop for DropDatabase {
    fn drop(&mut self) {
        if let Ok(mut conn) = PgConnection::establish(&format!("{}/postgres", self.server)) {
            let _ = diesel::sql_query(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .execute(&mut conn);
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Seeds tenants, policies and ready environments whose next checks are spread over a day.
fn seed(conn: &mut PgConnection) -> Result<()> {
    // A daily window two to three hours from now: every scheduled environment is outside it.
    let hour = chrono::Utc::now().hour();
    let schedule = format!(
        "{{\"time_zone\": \"UTC\", \"days\": [\"mon\", \"tue\", \"wed\", \"thu\", \"fri\",          \"sat\", \"sun\"], \"start\": \"{:02}:00\", \"end\": \"{:02}:00\"}}",
        (hour + 2) % 24,
        (hour + 3) % 24
    );
    conn.batch_execute(&format!(
        "INSERT INTO tenants (id, slug, name, tier, region) \
         SELECT gen_random_uuid(), 'tenant-' || g, 'Tenant ' || g, 'shared', 'eu-west-1' \
         FROM generate_series(1, {TENANTS}) g; \
         INSERT INTO tenant_policies (tenant_id, policy, updated_at) \
         SELECT id, '{{\"stages\": {{\"development\": {{\"approvals_required\": 0, \
           \"requester_may_approve\": false, \"drift_check_interval_hours\": 12, \
           \"drift_remediation\": \"repair\", \"schedule\": {schedule}}}, \
           \"staging\": {{\"approvals_required\": 0, \
           \"requester_may_approve\": false, \"drift_check_interval_hours\": 24, \
           \"drift_remediation\": \"repair\"}}, \"production\": {{\"approvals_required\": 2, \
           \"requester_may_approve\": false, \"drift_check_interval_hours\": 6, \
           \"drift_remediation\": \"report\"}}}}, \"promotion_order\": [\"development\", \
           \"staging\", \"production\"]}}'::jsonb, now() \
         FROM tenants WHERE slug ~ '[02468]$'; \
         INSERT INTO environments (id, tenant_id, name, stage, isolation, blueprint, \
           blueprint_version, cost_tags, state, drift_check_due_at) \
         SELECT gen_random_uuid(), t.id, 'env-' || g, \
           (ARRAY['development', 'staging', 'production'])[1 + g % 3], 'shared', \
           'shared-basic', 2, '{{}}', 'ready', \
           now() + make_interval(secs => 60 + random() * 86400) \
         FROM generate_series(1, {ENVIRONMENTS}) g \
         JOIN LATERAL (SELECT id FROM tenants ORDER BY slug OFFSET (g % {TENANTS}) LIMIT 1) t \
           ON true; \
         UPDATE environments e SET schedule_due_at = now() + make_interval(secs => 60 + random() * 86400) \
         FROM tenant_policies p WHERE p.tenant_id = e.tenant_id AND e.stage = 'development'; \
         ANALYZE tenants; ANALYZE environments; ANALYZE jobs; ANALYZE tenant_policies;"
    ))?;
    Ok(())
}

/// Makes `count` environments due now (the next ones of the day).
fn make_due(conn: &mut PgConnection, count: i64) -> Result<()> {
    conn.batch_execute(&format!(
        "UPDATE environments SET drift_check_due_at = now() - interval '1 second' \
         WHERE id IN (SELECT id FROM environments WHERE drift_check_due_at > now() \
                      ORDER BY drift_check_due_at LIMIT {count})"
    ))?;
    Ok(())
}

/// The due query's execution time as PostgreSQL measures it (in its own transaction).
fn explain_ms(conn: &mut PgConnection) -> Result<f64> {
    #[derive(diesel::QueryableByName)]
    struct Line {
        #[diesel(sql_type = diesel::sql_types::Text, column_name = "QUERY PLAN")]
        line: String,
    }
    let lines: Vec<Line> = conn.transaction(|conn| {
        diesel::sql_query(format!(
            "EXPLAIN (ANALYZE) {}",
            DUE_DRIFT_SQL.replace("$1", &TICK_LIMIT.to_string())
        ))
        .load(conn)
    })?;
    Ok(lines
        .iter()
        .find_map(|l| {
            l.line
                .strip_prefix("Execution Time: ")
                .and_then(|rest| rest.trim_end_matches(" ms").parse().ok())
        })
        .unwrap_or(f64::NAN))
}

fn run(conn: &mut PgConnection, label: &str, batch: i64) -> Result<()> {
    let mut quiet = Vec::with_capacity(QUIET_TICKS);
    for _ in 0..QUIET_TICKS {
        let started = Instant::now();
        let tick = queue_due_drift_checks(conn, 3, batch)?;
        quiet.push(started.elapsed());
        assert!(tick.queued.is_empty(), "nothing is due in a quiet tick");
    }
    quiet.sort();
    let quiet_explain = explain_ms(conn)?;
    let mut busy = Vec::with_capacity(BUSY_TICKS);
    let mut queued = 0;
    for _ in 0..BUSY_TICKS {
        make_due(conn, batch)?;
        let started = Instant::now();
        let tick = queue_due_drift_checks(conn, 3, batch)?;
        busy.push(started.elapsed());
        queued += tick.queued.len();
        // The checks run and finish, as workers would make them.
        conn.batch_execute(
            "UPDATE jobs SET state = 'succeeded', finished_at = now() WHERE state = 'queued'",
        )?;
    }
    busy.sort();
    make_due(conn, batch)?;
    let busy_explain = explain_ms(conn)?;
    conn.batch_execute(
        "UPDATE environments SET drift_check_due_at = now() + interval '1 hour' \
         WHERE drift_check_due_at <= now()",
    )?;
    println!(
        "{label}, {batch} a tick: quiet tick p50 {:.2} ms, p99 {:.2} ms (due query {:.3} ms in \
         PostgreSQL); busy tick p50 {:.1} ms, p99 {:.1} ms, {} checks queued in {} ticks (due \
         query {:.3} ms)",
        ms(percentile(&quiet, 0.5)),
        ms(percentile(&quiet, 0.99)),
        quiet_explain,
        ms(percentile(&busy, 0.5)),
        ms(percentile(&busy, 0.99)),
        queued,
        BUSY_TICKS,
        busy_explain,
    );
    Ok(())
}

/// The lifecycle tick: quiet (nothing at an edge), busy (`TICK_LIMIT` environments at an edge,
/// each getting a stop job), and the stray-session check's read of stopped environments.
fn run_lifecycle(conn: &mut PgConnection, label: &str) -> Result<()> {
    let mut quiet = Vec::with_capacity(QUIET_TICKS);
    for _ in 0..QUIET_TICKS {
        let started = Instant::now();
        let tick = queue_due_changes(conn, 3, TICK_LIMIT)?;
        quiet.push(started.elapsed());
        assert!(
            tick.queued.is_empty(),
            "nothing is at an edge in a quiet tick"
        );
    }
    quiet.sort();
    let mut busy = Vec::with_capacity(BUSY_TICKS);
    let mut queued = 0;
    for _ in 0..BUSY_TICKS {
        conn.batch_execute(&format!(
            "UPDATE environments SET schedule_due_at = now() - interval '1 second' \
             WHERE id IN (SELECT id FROM environments WHERE schedule_due_at > now() \
                          AND state = 'ready' ORDER BY schedule_due_at LIMIT {TICK_LIMIT})"
        ))?;
        let started = Instant::now();
        let tick = queue_due_changes(conn, 3, TICK_LIMIT)?;
        busy.push(started.elapsed());
        queued += tick.queued.len();
        conn.batch_execute(
            "UPDATE jobs SET state = 'succeeded', finished_at = now() WHERE state = 'queued'",
        )?;
    }
    busy.sort();
    let mut sweep = Vec::with_capacity(QUIET_TICKS);
    for _ in 0..QUIET_TICKS {
        let started = Instant::now();
        let stopped = stopped_idle(conn)?;
        sweep.push(started.elapsed());
        assert_eq!(stopped.len(), 1000);
    }
    sweep.sort();
    println!(
        "lifecycle, {label}: quiet tick p50 {:.2} ms, p99 {:.2} ms; busy tick p50 {:.1} ms, p99 \
         {:.1} ms, {queued} stops queued in {BUSY_TICKS} ticks; stopped-environment read p50 \
         {:.2} ms, p99 {:.2} ms",
        ms(percentile(&quiet, 0.5)),
        ms(percentile(&quiet, 0.99)),
        ms(percentile(&busy, 0.5)),
        ms(percentile(&busy, 0.99)),
        ms(percentile(&sweep, 0.5)),
        ms(percentile(&sweep, 0.99)),
    );
    Ok(())
}

fn main() -> Result<()> {
    let server = std::env::var("TEST_DATABASE_SERVER")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned());
    let name = format!("bh_bench_sched_{}", uuid::Uuid::now_v7().simple());
    let mut admin = PgConnection::establish(&format!("{server}/postgres"))?;
    diesel::sql_query(format!("CREATE DATABASE {name}")).execute(&mut admin)?;
    let _cleanup = DropDatabase {
        server: server.clone(),
        name: name.clone(),
    };
    let mut conn = PgConnection::establish(&format!("{server}/{name}"))?;
    bulkhead_core::db::run_migrations(&mut conn)?;
    let started = Instant::now();
    seed(&mut conn)?;
    println!(
        "seeded {TENANTS} tenants, {ENVIRONMENTS} ready environments in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    run(&mut conn, "with the partial index", TICK_LIMIT)?;
    // The webhook triggers' share: every job inserted fires one (no webhooks registered here).
    conn.batch_execute("ALTER TABLE jobs DISABLE TRIGGER jobs_webhook_events;")?;
    run(&mut conn, "webhook triggers off (comparison)", TICK_LIMIT)?;
    conn.batch_execute("ALTER TABLE jobs ENABLE TRIGGER jobs_webhook_events;")?;
    run(&mut conn, "with the partial index", 100)?;
    // 1,000 stopped environments (without schedules) for the stray-session check.
    conn.batch_execute(
        "UPDATE environments SET state = 'stopped' WHERE id IN (SELECT id FROM environments \
         WHERE stage = 'staging' ORDER BY id LIMIT 1000); ANALYZE environments;",
    )?;
    run_lifecycle(&mut conn, "with the partial indexes")?;
    conn.batch_execute(
        "DROP INDEX environments_schedule_due; DROP INDEX environments_stopped; ANALYZE environments;",
    )?;
    run_lifecycle(&mut conn, "without them (comparison)")?;
    conn.batch_execute("DROP INDEX environments_drift_due; ANALYZE environments;")?;
    run(&mut conn, "without it (comparison)", TICK_LIMIT)?;
    Ok(())
}
