//! Cost benchmarks against the local PostgreSQL and the real `bulkhead api` binary:
//! 1. a metering pass over 1,000 environments (900 shared schemas in one pooled database, 100
//!    dedicated databases), run the way workers run it (`bulkhead_worker::metering::run_pass`);
//! 2. `GET …/costs?group_by=tag:cost_center` over a year of charges of 1,000 environments
//!    (what a year of metering leaves in the rollups: 1.46 million per-environment daily rows);
//! 3. the platform-wide FOCUS export of one month of those environments, daily and hourly
//!    (2.2 million hourly charges), with the API's peak RSS before and after.
//!
//! Run: `cargo bench --bench metering`. Everything it makes (databases) is dropped at the end.

#[path = "../tests/support/smtp.rs"]
mod smtp;
#[path = "support/mod.rs"]
mod support;
#[path = "support/api.rs"]
mod support_api;

use bulkhead_core::config::metering::MeteringConfig;
use bulkhead_core::store::metering::Trigger;
use bulkhead_worker::metering::{MeterTargets, run_pass};
use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection, RunQueryDsl};
use serde_json::Value;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

const ENVIRONMENTS: usize = 1_000;
const DEDICATED: usize = 100;
const ADMIN_EMAIL: &str = "admin@bench.test";
const ADMIN_PASSWORD: &str = "plum-river-lantern-42";

/// Drops what the run made, whatever happens.
struct Cleanup {
    server: String,
    databases: Vec<String>,
    child: Option<Child>,
    queue_prefix: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Ok(mut conn) = PgConnection::establish(&format!("{}/postgres", self.server)) {
            for db in &self.databases {
                let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
                    .execute(&mut conn);
            }
        }
        support::remove_broker_objects(&self.queue_prefix);
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> Result<()> {
    let server = std::env::var("TEST_DATABASE_SERVER")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned());
    let id = uuid::Uuid::now_v7().simple().to_string();
    let control = format!("bh_bench_meter_{id}");
    let pooled = format!("bh_bench_pool_{id}");
    let mut cleanup = Cleanup {
        server: server.clone(),
        databases: vec![control.clone(), pooled.clone()],
        child: None,
        queue_prefix: format!("bench-meter-{id}"),
    };
    let mut maintenance = PgConnection::establish(&format!("{server}/postgres"))?;
    for db in [&control, &pooled] {
        maintenance.batch_execute(&format!("CREATE DATABASE {db}"))?;
    }
    let db_url = format!("{server}/{control}?sslmode=disable");
    let pool = bulkhead_core::db::connect(&db_url, 4)?;
    bulkhead_core::db::run_migrations(&mut *pool.get()?)?;

    // ---- Seed: one tenant holding 1,000 environments (ten cost centers), ready 90 min ago.
    let started = Instant::now();
    let mut conn = PgConnection::establish(&db_url)?;
    let tenant = uuid::Uuid::now_v7();
    conn.batch_execute(&format!(
        "INSERT INTO tenants (id, slug, name, tier, region, cost_tags) VALUES \
           ('{tenant}', 'big', 'Big Distribution', 'shared', 'eu-west-1', '{{\"cost_center\": \"cc-0\"}}'); \
         CREATE TEMP TABLE seeded AS SELECT i, (lpad(to_hex(i), 8, '0') || '-0000-7000-8000-' || lpad(to_hex(i), 12, '0'))::uuid AS id \
           FROM generate_series(1, {ENVIRONMENTS}) i; \
         INSERT INTO environments (id, tenant_id, name, stage, isolation, blueprint, blueprint_version, cost_tags, state) \
           SELECT id, '{tenant}', 'env-' || i, 'development', CASE WHEN i <= {DEDICATED} THEN 'dedicated' ELSE 'shared' END, \
                  'shared-basic', 1, jsonb_build_object('cost_center', 'cc-' || (i % 10), 'business_unit', 'bu-' || (i % 2)), 'ready' \
           FROM seeded; \
         INSERT INTO jobs (id, tenant_id, environment_id, operation, state, finished_at) \
           SELECT gen_random_uuid(), '{tenant}', id, 'apply', 'succeeded', now() - interval '90 minutes' FROM seeded"
    ))?;
    let ids: Vec<(usize, String)> = (1..=ENVIRONMENTS)
        .map(|i| (i, format!("{:08x}00007000800{:013x}", i, i)))
        .collect();
    // The targets: a schema with a table of rows per shared environment, a database per
    // dedicated one.
    let mut pooled_conn = PgConnection::establish(&format!("{server}/{pooled}"))?;
    let mut ddl = String::new();
    for (i, hex) in ids.iter().filter(|(i, _)| *i > DEDICATED) {
        let schema = format!("bk_{hex}");
        ddl.push_str(&format!(
            "CREATE SCHEMA {schema}; CREATE TABLE {schema}.orders (id int PRIMARY KEY, note text); \
             INSERT INTO {schema}.orders SELECT g, repeat('x', 100) FROM generate_series(1, {}) g; ",
            10 + i % 50
        ));
    }
    pooled_conn.batch_execute(&ddl)?;
    for (_, hex) in ids.iter().filter(|(i, _)| *i <= DEDICATED) {
        let db = format!("bk_{hex}");
        maintenance.batch_execute(&format!("CREATE DATABASE {db}"))?;
        cleanup.databases.push(db);
    }
    println!(
        "seeded {ENVIRONMENTS} environments ({DEDICATED} dedicated) in {:.1?}",
        started.elapsed()
    );

    // ---- 1. Metering passes.
    let targets = MeterTargets {
        shared_admin_url: format!("{server}/postgres"),
        pooled_database: pooled.clone(),
        dedicated_admin_url: format!("{server}/postgres"),
    };
    let settings = MeteringConfig::from_lookup(&|_| None)?;
    let catalog = settings.catalog()?;
    println!(
        "\nmetering pass over {ENVIRONMENTS} environments (first: 90 minutes each; then a few seconds)"
    );
    for run in 1..=5 {
        let t = Instant::now();
        let report = run_pass(&pool, &targets, &settings, &catalog, Trigger::Manual)?;
        let took = t.elapsed();
        println!(
            "  pass {run}: {took:>9.1?}  {:?}  {} samples, {} charges{}",
            report.state,
            report.counts.samples,
            report.counts.charges,
            report.error.map(|e| format!(" ({e})")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // ---- 2 & 3: a year of rollups and a month of hourly charges, read through the API.
    let started = Instant::now();
    conn.batch_execute(
        "INSERT INTO charges_daily (environment_id, sku_id, day, tags_digest, tenant_id, currency, unit, \
             region, sku_price_id, list_unit_price, cost_tags, quantity, cost) \
         SELECT e.id, s.sku, d::date, md5(e.cost_tags::text), e.tenant_id, 'EUR', s.unit, 'eu-west-1', \
             s.sku || ':*:EUR:2026-01-01', s.price, e.cost_tags, 24, 24 * s.price \
         FROM environments e CROSS JOIN generate_series(now()::date - 365, now()::date - 1, interval '1 day') d \
         CROSS JOIN (VALUES ('environment-hours-shared', 'Hours', 0.0125), ('storage-gb-hours', 'GB-Hours', 0.000162), \
                            ('connection-hours', 'Connection-Hours', 0.0008), ('pooled-server-hours', 'Hours', 0.00068)) \
             AS s(sku, unit, price); \
         INSERT INTO charges_daily_tags (tenant_id, sku_id, day, tags_digest, currency, unit, cost_tags, quantity, cost) \
         SELECT tenant_id, sku_id, day, tags_digest, currency, unit, cost_tags, sum(quantity), sum(cost) \
         FROM charges_daily GROUP BY tenant_id, sku_id, day, tags_digest, currency, unit, cost_tags \
         ON CONFLICT (tenant_id, day, sku_id, tags_digest) DO UPDATE \
             SET quantity = charges_daily_tags.quantity + excluded.quantity, cost = charges_daily_tags.cost + excluded.cost; \
         INSERT INTO charges (environment_id, sku_id, hour, tenant_id, sku_price_id, region, currency, quantity, \
             list_unit_price, cost, cost_tags) \
         SELECT e.id, s.sku, h, e.tenant_id, s.sku || ':*:EUR:2026-01-01', 'eu-west-1', 'EUR', 1, s.price, s.price, e.cost_tags \
         FROM environments e CROSS JOIN generate_series(date_trunc('month', now()) - interval '1 month', \
             date_trunc('month', now()) - interval '1 hour', interval '1 hour') h \
         CROSS JOIN (VALUES ('environment-hours-shared', 0.0125), ('storage-gb-hours', 0.000162), ('pooled-server-hours', 0.00068)) AS s(sku, price) \
         ON CONFLICT DO NOTHING",
    )?;
    for table in ["charges", "charges_daily", "charges_daily_tags"] {
        conn.batch_execute(&format!("VACUUM ANALYZE {table}"))?;
    }
    println!(
        "\nseeded a year of daily rollups and a month of hourly charges in {:.1?}",
        started.elapsed()
    );

    let port = 19_000 + (std::process::id() % 1000) as u16;
    let base = format!("http://127.0.0.1:{port}");
    let mail = smtp::SmtpSink::start().await;
    let child = Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .arg("api")
        .env("DATABASE_URL", &db_url)
        .env("BULKHEAD_LISTEN", format!("127.0.0.1:{port}"))
        .env("BULKHEAD_BOOTSTRAP_ADMIN_EMAIL", ADMIN_EMAIL)
        .env("BULKHEAD_BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("BULKHEAD_SMTP_URL", mail.url())
        .env("BULKHEAD_QUEUE_PREFIX", &cleanup.queue_prefix)
        .env("BULKHEAD_RATE_LIMIT_PER_MINUTE", "6000000")
        .env("BULKHEAD_RATE_LIMIT_BURST", "1000000")
        .env(
            "BULKHEAD_CREDENTIALS_KEY",
            hex::encode(rand::random::<[u8; 32]>()),
        )
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()?;
    let pid = child.id();
    cleanup.child = Some(child);
    let client = reqwest::Client::new();
    support_api::wait_ready(&client, &base).await?;
    let token = support_api::login(&client, &base, ADMIN_EMAIL, ADMIN_PASSWORD).await?;

    let today = chrono::Utc::now().date_naive();
    let year_ago = today - chrono::Duration::days(365);
    for (label, path, n) in [
        (
            "tenant, group_by=tag:cost_center, 365 days",
            format!("/v1/tenants/big/costs?from={year_ago}&to={today}&group_by=tag:cost_center"),
            200,
        ),
        (
            "tenant, group_by=tag:cost_center&group_by=month",
            format!(
                "/v1/tenants/big/costs?from={year_ago}&to={today}&group_by=tag:cost_center&group_by=month"
            ),
            200,
        ),
        (
            "platform, group_by=tag:cost_center, 365 days",
            format!("/v1/costs?from={year_ago}&to={today}&group_by=tag:cost_center"),
            200,
        ),
        (
            "tenant, group_by=environment, 365 days",
            format!("/v1/tenants/big/costs?from={year_ago}&to={today}&group_by=environment"),
            20,
        ),
    ] {
        let mut times = Vec::with_capacity(n);
        let mut total = String::new();
        for _ in 0..n {
            let t = Instant::now();
            let body: Value = client
                .get(format!("{base}{path}"))
                .bearer_auth(&token)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            times.push(t.elapsed());
            total = body["total_display"].as_str().unwrap_or("").to_owned();
        }
        times.sort();
        println!(
            "GET {label}: {n} requests, p50 {:.1?}, p99 {:.1?}, max {:.1?} (total {total} EUR)",
            percentile(&times, 0.5),
            percentile(&times, 0.99),
            times[times.len() - 1]
        );
    }

    let month_start = (today
        - chrono::Duration::days(i64::from(chrono::Datelike::day(&today)) - 1))
    .checked_sub_months(chrono::Months::new(1))
    .ok_or("month")?;
    let month_end = month_start
        .checked_add_months(chrono::Months::new(1))
        .ok_or("month")?;
    println!(
        "\nAPI peak RSS before the exports: {} MiB",
        peak_rss_kib(pid) / 1024
    );
    for granularity in ["day", "hour"] {
        let t = Instant::now();
        let response = client
            .get(format!(
                "{base}/v1/costs/export?from={month_start}&to={month_end}&granularity={granularity}"
            ))
            .bearer_auth(&token)
            .send()
            .await?
            .error_for_status()?;
        let mut bytes = 0usize;
        let mut lines = 0usize;
        let mut stream = response;
        while let Some(chunk) = stream.chunk().await? {
            bytes += chunk.len();
            lines += chunk.iter().filter(|b| **b == b'\n').count();
        }
        println!(
            "FOCUS export {month_start}..{month_end}, granularity={granularity}: {} rows, {:.1} MiB in {:.2?}; API peak RSS now {} MiB",
            lines.saturating_sub(1),
            bytes as f64 / 1_048_576.0,
            t.elapsed(),
            peak_rss_kib(pid) / 1024
        );
    }
    drop(mail);
    Ok(())
}
