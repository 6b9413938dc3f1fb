//! Provisioning latency through the real binaries: POST an environment, poll GET until `ready`.
//! Sequential shared and dedicated runs (p50/p90/max), then a burst of shared environments
//! requested at once, and where the time goes (queueing, claim, plan, apply, verify) from the
//! jobs' events.
//!
//! Run: `cargo bench --bench provision` (local PostgreSQL and RabbitMQ).
//! Optional: BENCH_SEQUENTIAL (default 30), BENCH_BURST (default 200), BENCH_WORKERS (default 1),
//! BENCH_BLUEPRINT_VERSION (default: the latest),
//! BENCH_CONCURRENCY (worker concurrency, default 4 as in the product; 8 and 16 were slower for the burst on 2 cores).

#[path = "support/mod.rs"]
mod support;

use diesel::{Connection, PgConnection, RunQueryDsl};
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ADMIN_EMAIL: &str = "admin@bench.test";
const ADMIN_PASSWORD: &str = "plum-river-lantern-42";

struct Processes {
    children: Vec<Child>,
    server: String,
    control_db: String,
    pooled_db: String,
    /// `bk_` databases and roles that existed before the run (left alone at the end).
    existing: Vec<String>,
    existing_roles: Vec<String>,
    queue_prefix: String,
}

#[derive(diesel::QueryableByName)]
struct Name {
    #[diesel(sql_type = diesel::sql_types::Text)]
    name: String,
}

fn bk_roles(conn: &mut PgConnection) -> Vec<String> {
    diesel::sql_query("SELECT rolname AS name FROM pg_roles WHERE rolname LIKE 'bk\\_%'")
        .load::<Name>(conn)
        .unwrap_or_default()
        .into_iter()
        .map(|n| n.name)
        .collect()
}

fn bk_databases(conn: &mut PgConnection) -> Vec<String> {
    diesel::sql_query("SELECT datname AS name FROM pg_database WHERE datname LIKE 'bk\\_%'")
        .load::<Name>(conn)
        .unwrap_or_default()
        .into_iter()
        .map(|n| n.name)
        .collect()
}

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let Ok(mut admin) = PgConnection::establish(&format!("{}/postgres", self.server)) else {
            return;
        };
        // Environments were destroyed by the benchmark; remove what the run made besides them
        // (the probes' canary database, anything a failed run left).
        for db in bk_databases(&mut admin) {
            if !self.existing.contains(&db) {
                let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
                    .execute(&mut admin);
            }
        }
        support::remove_broker_objects(&self.queue_prefix);
        for db in [&self.pooled_db, &self.control_db] {
            let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
                .execute(&mut admin);
        }
        // Roles of environments a failed run did not destroy (their objects went with the
        // databases above).
        for role in bk_roles(&mut admin) {
            if !self.existing_roles.contains(&role) {
                let _ = diesel::sql_query(format!("DROP ROLE IF EXISTS \"{role}\""))
                    .execute(&mut admin);
            }
        }
    }
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = std::env::var("TEST_DATABASE_SERVER")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned());
    let id = uuid::Uuid::now_v7().simple().to_string();
    let control_db = format!("bh_bench_{id}");
    let pooled_db = format!("bh_pool_bench_{id}");
    let mut admin = PgConnection::establish(&format!("{server}/postgres"))?;
    let existing = bk_databases(&mut admin);
    let existing_roles = bk_roles(&mut admin);
    diesel::sql_query(format!("CREATE DATABASE {control_db}")).execute(&mut admin)?;
    let port = 18_500 + (std::process::id() % 400) as u16;
    let base = format!("http://127.0.0.1:{port}");
    let workers = env_or("BENCH_WORKERS", 1);
    let queue_prefix = format!("bench-{id}");
    // Everything is on loopback: TLS to PostgreSQL protects nothing here and costs a handshake
    // per probe connection. BENCH_SSLMODE=require measures it, given a server certificate the
    // system trusts (the request pool and the probes verify it; the local snakeoil one fails).
    let ssl = std::env::var("BENCH_SSLMODE").unwrap_or_else(|_| "disable".to_owned());
    let env = [
        (
            "DATABASE_URL",
            format!("{server}/{control_db}?sslmode={ssl}"),
        ),
        (
            "BULKHEAD_TARGET_SHARED_URL",
            format!("{server}/postgres?sslmode={ssl}"),
        ),
        (
            "BULKHEAD_TARGET_DEDICATED_URL",
            format!("{server}/postgres?sslmode={ssl}"),
        ),
        ("BULKHEAD_LISTEN", format!("127.0.0.1:{port}")),
        ("BULKHEAD_BOOTSTRAP_ADMIN_EMAIL", ADMIN_EMAIL.to_owned()),
        (
            "BULKHEAD_BOOTSTRAP_ADMIN_PASSWORD",
            ADMIN_PASSWORD.to_owned(),
        ),
        ("BULKHEAD_QUEUE_PREFIX", queue_prefix.clone()),
        ("BULKHEAD_TARGET_POOLED_DATABASE", pooled_db.clone()),
        (
            "BULKHEAD_WORKER_CONCURRENCY",
            env_or("BENCH_CONCURRENCY", 4).to_string(),
        ),
        ("BULKHEAD_DB_POOL_SIZE", "16".to_owned()),
        // The driver polls as one principal, faster than a client should.
        ("BULKHEAD_RATE_LIMIT_PER_MINUTE", "6000000".to_owned()),
        ("BULKHEAD_RATE_LIMIT_BURST", "1000000".to_owned()),
        // ... and writes its burst of environments at once.
        ("BULKHEAD_WRITE_RATE_LIMIT_PER_MINUTE", "6000000".to_owned()),
        ("BULKHEAD_WRITE_RATE_LIMIT_BURST", "1000000".to_owned()),
        // `api` and `worker` refuse the built-in development key; one for this run.
        (
            "BULKHEAD_CREDENTIALS_KEY",
            hex::encode(rand::random::<[u8; 32]>()),
        ),
        ("RUST_LOG", "warn".to_owned()),
        // `api` needs a mail setting; this run sends no invitations.
        ("BULKHEAD_MAIL", "log".to_owned()),
    ];
    let spawn = |command: &str| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_bulkhead"));
        cmd.arg(command).stdout(Stdio::null());
        for (k, v) in &env {
            cmd.env(k, v);
        }
        cmd.spawn()
    };
    let mut processes = Processes {
        children: vec![spawn("api")?],
        server,
        control_db,
        pooled_db,
        existing,
        existing_roles,
        queue_prefix: queue_prefix.clone(),
    };
    for _ in 0..workers {
        processes.children.push(spawn("worker")?);
    }
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let token: Value = client
        .post(format!("{base}/v1/auth/login"))
        .json(&json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}))
        .send()
        .await?
        .json()
        .await?;
    let token = token["access_token"]
        .as_str()
        .ok_or("login failed")?
        .to_owned();
    let sequential = env_or("BENCH_SEQUENTIAL", 30);
    let burst = env_or("BENCH_BURST", 200);
    for (slug, tier) in [("bench-shared", "shared"), ("bench-dedicated", "dedicated")] {
        client
            .post(format!("{base}/v1/tenants"))
            .bearer_auth(&token)
            .json(
                &json!({"slug": slug, "name": slug, "tier": tier, "region": "eu-west-1",
                          "cost_tags": {"business_unit": "bench", "cost_center": "cc-0"}}),
            )
            .send()
            .await?
            .error_for_status()?;
        // The burst holds more environments and queued jobs than a tenant's default quotas
        // allow: raised the way an operator would, per tenant.
        let most = burst + sequential;
        client
            .put(format!("{base}/v1/tenants/{slug}/quotas"))
            .bearer_auth(&token)
            .json(&json!({"environments": most, "queued_jobs": most}))
            .send()
            .await?
            .error_for_status()?;
    }
    // Let the worker finish preparing targets before timing anything.
    tokio::time::sleep(Duration::from_millis(500)).await;

    println!(
        "provisioning benchmark: {workers} worker(s), release build, API + worker + PostgreSQL + RabbitMQ on this machine"
    );
    let mut created = Vec::new();
    for (tenant, isolation) in [("bench-shared", "shared"), ("bench-dedicated", "dedicated")] {
        let mut latencies = Vec::new();
        for i in 0..sequential {
            let started = Instant::now();
            let (env_id, job_id) =
                create(&client, &base, &token, tenant, &format!("{isolation}-{i}"))
                    .await
                    .map_err(|e| e.to_string())?;
            wait_ready(&client, &base, &token, tenant, &env_id).await?;
            latencies.push(started.elapsed().as_secs_f64() * 1e3);
            created.push((tenant, env_id, job_id));
        }
        latencies.sort_by(f64::total_cmp);
        println!(
            "{isolation:>9}: {sequential} sequential POST -> ready: p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms",
            pct(&latencies, 0.5),
            pct(&latencies, 0.9),
            pct(&latencies, 1.0)
        );
        phases(
            &client,
            &base,
            &token,
            &created[created.len() - sequential..],
        )
        .await?;
    }

    let started = Instant::now();
    let mut posts = Vec::new();
    for i in 0..burst {
        let (client, base, token) = (client.clone(), base.clone(), token.clone());
        posts.push(tokio::spawn(async move {
            create(
                &client,
                &base,
                &token,
                "bench-shared",
                &format!("burst-{i}"),
            )
            .await
            .map_err(|e| e.to_string())
        }));
    }
    let mut burst_envs = Vec::new();
    for post in posts {
        burst_envs.push(post.await??);
    }
    let accepted = started.elapsed();
    let mut ready = 0;
    for (env_id, _) in &burst_envs {
        wait_state(
            &client,
            &base,
            &token,
            "bench-shared",
            env_id,
            "ready",
            COARSE_POLL,
        )
        .await?;
        ready += 1;
    }
    let all_ready = started.elapsed();
    // None lost or duplicated: every job succeeded exactly once.
    let mut duplicates = 0;
    for (_, job_id) in &burst_envs {
        let events: Value = client
            .get(format!(
                "{base}/v1/tenants/bench-shared/jobs/{job_id}/events?limit=200"
            ))
            .bearer_auth(&token)
            .send()
            .await?
            .json()
            .await?;
        let succeeded = events["items"].as_array().map_or(0, |items| {
            items.iter().filter(|e| e["kind"] == "succeeded").count()
        });
        if succeeded != 1 {
            duplicates += 1;
        }
    }
    println!(
        "    burst: {burst} shared environments POSTed at once: all accepted in {:.2} s, {ready} ready in {:.2} s ({:.0}/s); jobs not succeeded exactly once: {duplicates}",
        accepted.as_secs_f64(),
        all_ready.as_secs_f64(),
        ready as f64 / all_ready.as_secs_f64()
    );
    let burst_jobs: Vec<(&str, String, String)> = burst_envs
        .iter()
        .map(|(e, j)| ("bench-shared", e.clone(), j.clone()))
        .collect();
    phases(&client, &base, &token, &burst_jobs).await?;

    // Tear everything down through the API (and time it).
    let started = Instant::now();
    let mut teardown = Vec::new();
    for (tenant, env_id, _) in created
        .iter()
        .map(|(t, e, j)| (*t, e.clone(), j.clone()))
        .chain(burst_jobs.clone())
    {
        let response: Value = client
            .delete(format!("{base}/v1/tenants/{tenant}/environments/{env_id}"))
            .bearer_auth(&token)
            .send()
            .await?
            .json()
            .await?;
        teardown.push((
            tenant,
            env_id,
            response["job"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        ));
    }
    for (tenant, env_id, _) in &teardown {
        wait_state(
            &client,
            &base,
            &token,
            tenant,
            env_id,
            "destroyed",
            COARSE_POLL,
        )
        .await?;
    }
    println!(
        "  destroy: {} environments destroyed in {:.2} s",
        teardown.len(),
        started.elapsed().as_secs_f64()
    );
    drop(processes);
    Ok(())
}

async fn create(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    tenant: &str,
    name: &str,
) -> Result<(String, String), Box<dyn std::error::Error + Send + Sync>> {
    let body: Value = client
        .post(format!("{base}/v1/tenants/{tenant}/environments"))
        .bearer_auth(token)
        .json(&match std::env::var("BENCH_BLUEPRINT_VERSION").ok() {
            // An older version of the blueprint (what an earlier build provisioned), to compare
            // like with like; default: the latest.
            Some(version) => json!({"name": name, "stage": "development",
                                    "blueprint_version": version.parse::<u32>()?}),
            None => json!({"name": name, "stage": "development"}),
        })
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok((
        body["environment"]["id"]
            .as_str()
            .ok_or("no environment id")?
            .to_owned(),
        body["job"]["id"].as_str().ok_or("no job id")?.to_owned(),
    ))
}

/// Polls one environment every 2 ms: the resolution the single-environment latency needs.
async fn wait_ready(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    tenant: &str,
    env: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    wait_state(client, base, token, tenant, env, "ready", FINE_POLL).await
}

const FINE_POLL: Duration = Duration::from_millis(2);
/// Bursts are timed in seconds: polling every 2 ms there would mostly measure the poller,
/// whose requests compete for the same two cores as the work.
const COARSE_POLL: Duration = Duration::from_millis(25);

async fn wait_state(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    tenant: &str,
    env: &str,
    wanted: &str,
    poll_every: Duration,
) -> Result<(), Box<dyn std::error::Error>> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let body: Value = client
            .get(format!("{base}/v1/tenants/{tenant}/environments/{env}"))
            .bearer_auth(token)
            .send()
            .await?
            .json()
            .await?;
        match body["state"].as_str() {
            Some(state) if state == wanted => return Ok(()),
            Some("failed") => return Err(format!("environment {env} failed").into()),
            _ => {}
        }
        if Instant::now() > deadline {
            return Err(format!("environment {env} not {wanted} in 120 s: {body}").into());
        }
        tokio::time::sleep(poll_every).await;
    }
}

/// Medians of the phases recorded in the jobs' events.
async fn phases(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    jobs: &[(&str, String, String)],
) -> Result<(), Box<dyn std::error::Error>> {
    let mut series: [Vec<f64>; 5] = Default::default();
    for (tenant, _, job_id) in jobs {
        let events: Value = client
            .get(format!(
                "{base}/v1/tenants/{tenant}/jobs/{job_id}/events?limit=200"
            ))
            .bearer_auth(token)
            .send()
            .await?
            .json()
            .await?;
        for event in events["items"].as_array().into_iter().flatten() {
            let d = &event["details"];
            match event["kind"].as_str() {
                Some("claimed") => {
                    series[0].push(d["since_created_ms"].as_f64().unwrap_or(f64::NAN));
                    series[1].push(d["claim_ms"].as_f64().unwrap_or(f64::NAN));
                }
                Some("planned") => series[2].push(d["plan_ms"].as_f64().unwrap_or(f64::NAN)),
                Some("verified") => {
                    series[3].push(d["apply_ms"].as_f64().unwrap_or(f64::NAN));
                    series[4].push(d["verify_ms"].as_f64().unwrap_or(f64::NAN));
                }
                _ => {}
            }
        }
    }
    let names = ["queue (commit→claim)", "claim", "plan", "apply", "verify"];
    let line: Vec<String> = names
        .iter()
        .zip(series.iter_mut())
        .map(|(name, values)| {
            values.sort_by(f64::total_cmp);
            format!("{name} {:.1}", pct(values, 0.5))
        })
        .collect();
    println!("           phases, median ms: {}", line.join(" | "));
    Ok(())
}
