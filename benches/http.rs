//! HTTP benchmarks against the real `bulkhead api` binary and the local PostgreSQL:
//! authorized `GET /v1/tenants/{tenant}` under wrk at 10,000 tenants × 5 members, and login
//! throughput at the hashing bound.
//!
//! Run: `cargo bench --bench http` (needs `wrk` on PATH: `apt-get install wrk`).
//! Optional: BENCH_SECONDS (default 20), BENCH_CONNECTIONS (default 64).

#[path = "../tests/support/smtp.rs"]
mod smtp;
#[path = "support/mod.rs"]
mod support;

use diesel::{Connection, PgConnection, RunQueryDsl};
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TENANTS: i64 = 10_000;
const MEMBERS_PER_TENANT: i64 = 5;
const ADMIN_EMAIL: &str = "admin@bench.test";
const ADMIN_PASSWORD: &str = "plum-river-lantern-42";
const USER_PASSWORD: &str = "orchard-kettle-cobalt-7";

struct Api {
    child: Child,
    db_name: String,
    server: String,
    /// The relay declares its topology under this prefix; removed at the end.
    queue_prefix: String,
}

impl Drop for Api {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Ok(mut conn) = PgConnection::establish(&format!("{}/postgres", self.server)) {
            let _ = diesel::sql_query(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.db_name
            ))
            .execute(&mut conn);
        }
        support::remove_broker_objects(&self.queue_prefix);
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = std::env::var("TEST_DATABASE_SERVER")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned());
    let db_name = format!("bh_bench_{}", uuid::Uuid::now_v7().simple());
    // API and PostgreSQL share the machine: TLS on loopback protects nothing.
    let db_url = format!("{server}/{db_name}?sslmode=disable");
    let mut maintenance = PgConnection::establish(&format!("{server}/postgres"))?;
    diesel::sql_query(format!("CREATE DATABASE {db_name}")).execute(&mut maintenance)?;

    let port = 18_000 + (std::process::id() % 1000) as u16;
    // Its own queue names: the API's relay declares them, and a real instance may share the broker.
    let queue_prefix = format!("bench-http-{}", uuid::Uuid::now_v7().simple());
    let base = format!("http://127.0.0.1:{port}");
    let mail = smtp::SmtpSink::start().await;
    let child = Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .arg("api")
        .env("DATABASE_URL", &db_url)
        .env("BULKHEAD_LISTEN", format!("127.0.0.1:{port}"))
        .env("BULKHEAD_BOOTSTRAP_ADMIN_EMAIL", ADMIN_EMAIL)
        .env("BULKHEAD_BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("RUST_LOG", "warn")
        // Invitations are mailed: to a sink this run reads them from.
        .env("BULKHEAD_SMTP_URL", mail.url())
        .env("BULKHEAD_QUEUE_PREFIX", &queue_prefix)
        // One principal drives the whole load: its bucket is checked on every request (that
        // cost is measured) but set above what this machine can send.
        .env("BULKHEAD_RATE_LIMIT_PER_MINUTE", "6000000")
        .env("BULKHEAD_RATE_LIMIT_BURST", "1000000")
        .env("BULKHEAD_ANONYMOUS_RATE_LIMIT_PER_MINUTE", "6000000")
        .env("BULKHEAD_ANONYMOUS_RATE_LIMIT_BURST", "1000000")
        // `api` refuses the built-in development key; one for this run.
        .env(
            "BULKHEAD_CREDENTIALS_KEY",
            hex::encode(rand::random::<[u8; 32]>()),
        )
        .stdout(Stdio::null())
        .spawn()?;
    let api = Api {
        child,
        db_name,
        server,
        queue_prefix,
    };
    let client = reqwest::Client::new();
    wait_ready(&client, &base).await?;

    // Seed 10,000 tenants with 5 members each directly in SQL (the enforcer then loads 50,000
    // assignments), then make one real user we can log in as.
    let seed_started = Instant::now();
    let mut conn = PgConnection::establish(&db_url)?;
    diesel::sql_query(format!(
        "INSERT INTO tenants (id, slug, name, tier, region) \
         SELECT gen_random_uuid(), 'tenant-' || i, 'Tenant ' || i, 'shared', 'eu-west-1' \
         FROM generate_series(1, {TENANTS}) i"
    ))
    .execute(&mut conn)?;
    diesel::sql_query(format!(
        "WITH p AS (INSERT INTO principals (id, kind, email, display_name) \
           SELECT gen_random_uuid(), 'user', 'user' || i || '@bench.test', 'User ' || i \
           FROM generate_series(1, {}) i RETURNING id, email), \
         pn AS (SELECT id, row_number() OVER (ORDER BY email) - 1 AS pn FROM p), \
         tn AS (SELECT id, row_number() OVER (ORDER BY slug) - 1 AS tn FROM tenants) \
         INSERT INTO memberships (principal_id, tenant_id, role) \
         SELECT pn.id, tn.id, (ARRAY['tenant_admin','operator','approver','viewer','billing'])[1 + (pn.pn % 5)] \
         FROM pn JOIN tn ON tn.tn = pn.pn / {MEMBERS_PER_TENANT}",
        TENANTS * MEMBERS_PER_TENANT
    ))
    .execute(&mut conn)?;
    let seed = seed_started.elapsed();

    let admin = login(&client, &base, ADMIN_EMAIL, ADMIN_PASSWORD).await?;
    let slug = "tenant-4242";
    let added: Value = client
        .post(format!("{base}/v1/tenants/{slug}/members"))
        .bearer_auth(&admin)
        .json(&json!({"email": "viewer@bench.test", "role": "viewer"}))
        .send()
        .await?
        .json()
        .await?;
    if !added["invitation"].is_object() {
        return Err("no invitation".into());
    }
    let invitation = mail.invitation_token("viewer@bench.test").await;
    client
        .post(format!("{base}/v1/auth/accept-invitation"))
        .json(&json!({"token": invitation, "password": USER_PASSWORD}))
        .send()
        .await?
        .error_for_status()?;
    let viewer = login(&client, &base, "viewer@bench.test", USER_PASSWORD).await?;
    let check = client
        .get(format!("{base}/v1/tenants/{slug}"))
        .bearer_auth(&viewer)
        .send()
        .await?;
    if check.status() != 200 {
        return Err(format!("viewer GET answered {}", check.status()).into());
    }

    let seconds: u64 = env_or("BENCH_SECONDS", 20);
    let connections: u64 = env_or("BENCH_CONNECTIONS", 64);
    println!(
        "seeded {TENANTS} tenants x {MEMBERS_PER_TENANT} members in {:.1} s",
        seed.as_secs_f64()
    );
    println!(
        "\n== GET /v1/tenants/{{tenant}} as a viewer (wrk -t2 -c{connections} -d{seconds}s) =="
    );
    let output = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--latency",
        ])
        .args(["-H", &format!("Authorization: Bearer {viewer}")])
        .arg(format!("{base}/v1/tenants/{slug}"))
        .output()
        .map_err(|e| format!("wrk not runnable ({e}); apt-get install wrk"))?;
    println!("{}", String::from_utf8_lossy(&output.stdout));

    println!(
        "== POST /v1/auth/login, {} concurrent clients for 10 s ==",
        8
    );
    login_throughput(&client, &base, 8, Duration::from_secs(10)).await?;
    drop(api);
    Ok(())
}

async fn wait_ready(
    client: &reqwest::Client,
    base: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    for _ in 0..100 {
        if let Ok(response) = client.get(format!("{base}/readyz")).send().await
            && response.status() == 200
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err("bulkhead api did not become ready".into())
}

async fn login(
    client: &reqwest::Client,
    base: &str,
    email: &str,
    password: &str,
) -> Result<String, Box<dyn std::error::Error>> {
    let body: Value = client
        .post(format!("{base}/v1/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(body["access_token"].as_str().ok_or("no token")?.to_owned())
}

async fn login_throughput(
    client: &reqwest::Client,
    base: &str,
    concurrency: usize,
    duration: Duration,
) -> Result<(), Box<dyn std::error::Error>> {
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, base) = (client.clone(), base.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let started = Instant::now();
                let ok = login(&client, &base, ADMIN_EMAIL, ADMIN_PASSWORD)
                    .await
                    .is_ok();
                if ok {
                    latencies.push(started.elapsed());
                }
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await?);
    }
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or_default()
    };
    println!(
        "logins: {} in {:?} = {:.1}/s; latency p50 {:.0} ms, p99 {:.0} ms",
        all.len(),
        duration,
        all.len() as f64 / duration.as_secs_f64(),
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3
    );
    Ok(())
}
