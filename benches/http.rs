//! HTTP benchmarks against the real `bulkhead api` binary and the local PostgreSQL:
//! authorized `GET /v1/tenants/{tenant}` under wrk at 10,000 tenants × 5 members, quiet and
//! while another tenant churns its members and floods denied requests (and that churn alone, for
//! its share of the machine; then both again at a fixed offered load, open loop), and login
//! throughput at
//! the hashing bound.
//!
//! Run: `cargo bench --bench http` (needs `wrk` on PATH: `apt-get install wrk`).
//! Optional: BENCH_SECONDS (default 20, each phase), BENCH_ROUNDS (default 3: quiet and churn
//! phases alternate, medians compared), BENCH_CONNECTIONS (default 64), BENCH_CHURN_PER_SECOND
//! (default: none, the churn runs at the server's default write budgets; a number paces each
//! churning principal at that many writes a second and raises the server's write limits to
//! let it through, as the bench did before those limits existed), BENCH_OPEN_LOOP_SHARE (default
//! 0.5: the open-loop rate as a share of the quiet saturated throughput), BENCH_PIN (1: the load
//! generator on the last CPU, the API and PostgreSQL on the others; needs 2+ CPUs, `taskset`,
//! and the right to re-pin PostgreSQL's processes, which the run undoes at its end),
//! BENCH_CHURN_ONLY (`changes` or `denials`: only that part of the churn runs; the churn-alone
//! phase prints the CPU the API, PostgreSQL and the generator used).

#[path = "../tests/support/smtp.rs"]
mod smtp;
#[path = "support/mod.rs"]
mod support;
#[path = "support/api.rs"]
mod support_api;
#[path = "support/cpu.rs"]
mod support_cpu;
#[path = "support/pin.rs"]
mod support_pin;

use diesel::{Connection, PgConnection, RunQueryDsl};
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support_api::{login, wait_ready};

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
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
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
    let (pace, explicit_pace) = Pace::from_env();
    let mut command = Command::new(env!("CARGO_BIN_EXE_bulkhead"));
    if explicit_pace.is_some() {
        // A pace above the default write budgets, to compare with: let it through.
        for var in [
            "BULKHEAD_WRITE_RATE_LIMIT_PER_MINUTE",
            "BULKHEAD_TENANT_WRITE_RATE_LIMIT_PER_MINUTE",
        ] {
            command.env(var, "6000000");
        }
        for var in [
            "BULKHEAD_WRITE_RATE_LIMIT_BURST",
            "BULKHEAD_TENANT_WRITE_RATE_LIMIT_BURST",
        ] {
            command.env(var, "1000000");
        }
    }
    let child = command
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
        // cost is measured) but set above what this machine can send. Writes keep their
        // default budgets (the churn below runs within them).
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
    // A request that gets no answer in 30 s fails the run with its error instead of hanging it.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
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
    // One statement inserted 50,000 memberships, so their row triggers bumped the single
    // authz generation row (and each principal's) 50,000 times in one transaction. An
    // installation whose members came one by one has none of that (each update is pruned as
    // the next one comes), but here the generation table is left ~280 pages long with its one
    // live row on the last page: plain VACUUM cannot cut the empty pages before it, and every
    // later membership change scanned them all (0.30 ms per generation bump, 0.02 ms after
    // this). And autovacuum would clean the rest at some random moment of the measurement.
    diesel::sql_query("VACUUM (FULL, ANALYZE)").execute(&mut conn)?;
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

    // With BENCH_PIN=1 the load generator runs on a CPU of its own, apart from the API and
    // PostgreSQL it measures (undone at the end); the comparison is then of the server alone.
    let _pinned = if env_or("BENCH_PIN", 0) == 1 {
        Some(support_pin::Pinned::generator_apart(api.child.id())?)
    } else {
        None
    };
    let seconds: u64 = env_or("BENCH_SECONDS", 20);
    let connections: u64 = env_or("BENCH_CONNECTIONS", 64);
    println!(
        "seeded {TENANTS} tenants x {MEMBERS_PER_TENANT} members in {:.1} s",
        seed.as_secs_f64()
    );
    println!(
        "\n== GET /v1/tenants/{{tenant}} as a viewer, quiet (wrk -t2 -c{connections} -d{seconds}s) =="
    );
    let target = format!("{base}/v1/tenants/{slug}");
    let before = cpu_ticks()?;
    let quiet = wrk(&viewer, &target, connections, seconds)?;
    let quiet_cpu = cpu_busy_since(before)?;

    // Another tenant's admin adds and removes members (each change reaches the enforcer of
    // every request after it), and two of its viewers flood requests they may not make (each one
    // audited as denied), each principal at its default write budget's sustained pace (`Pace`):
    // as hard as one tenant's principals can push a default installation.
    let churn_slug = "tenant-77";
    let flooder = member(
        &client,
        &base,
        &admin,
        &mail,
        churn_slug,
        "flooder@bench.test",
    )
    .await?;
    let churners = seed_churners(&mut conn, CHURNERS)?;
    let churn_tenant: Value = client
        .get(format!("{base}/v1/tenants/{churn_slug}"))
        .bearer_auth(&admin)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let churn_tenant_id = churn_tenant["id"]
        .as_str()
        .ok_or("no tenant id")?
        .to_owned();
    let flooders = [
        flooder,
        member(
            &client,
            &base,
            &admin,
            &mail,
            churn_slug,
            "flooder-2@bench.test",
        )
        .await?,
    ];
    let churn = Churn {
        client: client.clone(),
        base: base.clone(),
        admin: admin.clone(),
        tenant: (churn_slug, churn_tenant_id),
        churners,
        flooders,
        pace,
        next: std::sync::Arc::default(),
        parts: Parts::from_env()?,
    };
    println!(
        "churn pace: the admin every {:.0} ms, each flooder every {:.0} ms{}",
        pace.admin.as_secs_f64() * 1e3,
        pace.flooder.as_secs_f64() * 1e3,
        if explicit_pace.is_some() {
            " (BENCH_CHURN_PER_SECOND; write limits raised)"
        } else {
            " (the default write budgets per principal and per tenant)"
        }
    );

    // What the churn costs the machine on its own: its share of both cores, measured the same
    // way as the quiet run's, so the slowdown below can be read against it.
    println!("== {churn_slug} churns members and floods denials, alone for {seconds} s ==");
    // What the processes use on their own (background polls, PostgreSQL's own processes), to
    // take from the churn's figures below.
    let idle_from = support_cpu::read(api.child.id());
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let idle = support_cpu::read(api.child.id()).since(&idle_from);
    let before = cpu_ticks()?;
    let by_process = support_cpu::read(api.child.id());
    let (alone_changes, alone_denials) = churn.run_for(Duration::from_secs(seconds)).await?;
    let split = support_cpu::read(api.child.id()).since(&by_process);
    let churn_cpu = cpu_busy_since(before)?;
    println!(
        "membership changes: {alone_changes} ({:.0}/s); denied requests: {alone_denials} ({:.0}/s); machine busy {:.0} %",
        alone_changes as f64 / seconds as f64,
        alone_denials as f64 / seconds as f64,
        churn_cpu * 100.0
    );
    // Each offer → accept → remove cycle counts as two changes and makes three requests.
    let churn_requests = (alone_changes / 2 * 3 + alone_denials).max(1) as f64;
    println!(
        "CPU by process over the churn alone: API {:.2} s, PostgreSQL {:.2} s, generator {:.2} s; \
         idle for as long: API {:.2} s, PostgreSQL {:.2} s (per churn request, idle taken off: \
         API {:.2} ms, PostgreSQL {:.2} ms)",
        split.api,
        split.postgres,
        split.generator,
        idle.api,
        idle.postgres,
        (split.api - idle.api).max(0.0) * 1e3 / churn_requests,
        (split.postgres - idle.postgres).max(0.0) * 1e3 / churn_requests
    );

    // Quiet and churn phases alternate, so that drift of the machine over the run (a noisy
    // neighbour on the VM, autovacuum, caches) falls on both alike; the medians are compared.
    let rounds: usize = env_or("BENCH_ROUNDS", 3).max(1);
    println!(
        "== the same wrk: {rounds} rounds of quiet, then while {churn_slug} churns members and floods denials =="
    );
    let (mut quiet_p99, mut churn_p99, mut quiet_rps, mut churn_rps) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut busy_cpu = Vec::new();
    for round in 1..=rounds {
        let calm = if round == 1 {
            quiet
        } else {
            wrk(&viewer, &target, connections, seconds)?
        };
        let running = churn.start();
        let before = cpu_ticks()?;
        let busy = tokio::task::spawn_blocking({
            let (viewer, target) = (viewer.clone(), target.clone());
            move || wrk(&viewer, &target, connections, seconds)
        })
        .await??;
        busy_cpu.push(cpu_busy_since(before)?);
        let (changes, denials) = running.stop().await?;
        println!(
            "round {round}: p99 quiet {:.2} ms ({:.0} req/s), under churn {:.2} ms ({:.0} req/s), \
             {:.0} changes/s, {:.0} denials/s, {} answered 429 so far",
            calm.p99_ms,
            calm.requests_per_second,
            busy.p99_ms,
            busy.requests_per_second,
            changes as f64 / seconds as f64,
            denials as f64 / seconds as f64,
            THROTTLED.load(std::sync::atomic::Ordering::Relaxed)
        );
        quiet_p99.push(calm.p99_ms);
        churn_p99.push(busy.p99_ms);
        quiet_rps.push(calm.requests_per_second);
        churn_rps.push(busy.requests_per_second);
    }
    let (quiet_p99, churn_p99) = (median(quiet_p99), median(churn_p99));
    let (quiet_rps, churn_rps) = (median(quiet_rps), median(churn_rps));
    println!(
        "GET p99 quiet {quiet_p99:.2} ms, under churn {churn_p99:.2} ms ({:+.0} %) (medians of \
         {rounds} rounds); throughput {quiet_rps:.0} → {churn_rps:.0} req/s; machine busy {:.0} % \
         quiet, {:.0} % churn alone, {:.0} % both\n",
        (churn_p99 / quiet_p99 - 1.0) * 100.0,
        quiet_cpu * 100.0,
        churn_cpu * 100.0,
        median(busy_cpu) * 100.0
    );

    // The same comparison at a fixed offered load below saturation (BENCH_OPEN_LOOP_SHARE of
    // the quiet throughput, default a half), measured open-loop: each request has its scheduled
    // send time and its latency runs from then, so a stall counts for every request it delays
    // (no coordinated omission).
    // At saturation any added work lengthens every queue; here the question is only whether
    // another tenant's churn slows this tenant's requests.
    let share: f64 = env_or("BENCH_OPEN_LOOP_SHARE", 0.5);
    let rate = (quiet_rps * share.clamp(0.01, 1.0)).max(100.0);
    println!(
        "== GET at a fixed {rate:.0} requests/s (open loop): {rounds} rounds of quiet, then under churn =="
    );
    let (mut quiet_fixed, mut churn_fixed) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let calm = open_loop(
            &client,
            &target,
            &viewer,
            rate,
            Duration::from_secs(seconds),
        )
        .await?;
        let running = churn.start();
        let busy = open_loop(
            &client,
            &target,
            &viewer,
            rate,
            Duration::from_secs(seconds),
        )
        .await?;
        running.stop().await?;
        println!(
            "round {round}: p50 {:.2} → {:.2} ms, p99 quiet {:.2} ms, under churn {:.2} ms",
            calm.p50_ms, busy.p50_ms, calm.p99_ms, busy.p99_ms
        );
        quiet_fixed.push(calm.p99_ms);
        churn_fixed.push(busy.p99_ms);
    }
    let (quiet_fixed, churn_fixed) = (median(quiet_fixed), median(churn_fixed));
    println!(
        "fixed {rate:.0}/s: p99 quiet {quiet_fixed:.2} ms, under churn {churn_fixed:.2} ms ({:+.0} %) \
         (medians of {rounds} rounds)\n",
        (churn_fixed / quiet_fixed - 1.0) * 100.0
    );

    println!(
        "== POST /v1/auth/login, {} concurrent clients for 10 s ==",
        8
    );
    login_throughput(&client, &base, 8, Duration::from_secs(10)).await?;
    drop(api);
    Ok(())
}

/// The middle value (the mean of the two middle ones for an even count).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// What wrk measured.
#[derive(Debug, Clone, Copy)]
struct Wrk {
    p99_ms: f64,
    requests_per_second: f64,
}

fn wrk(
    bearer: &str,
    url: &str,
    connections: u64,
    seconds: u64,
) -> Result<Wrk, Box<dyn std::error::Error + Send + Sync>> {
    let output = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--latency",
        ])
        .args(["-H", &format!("Authorization: Bearer {bearer}")])
        .arg(url)
        .output()
        .map_err(|e| format!("wrk not runnable ({e}); apt-get install wrk"))?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    println!("{text}");
    let field = |prefix: &str| {
        text.lines().find_map(|line| {
            line.trim()
                .strip_prefix(prefix)
                .map(str::trim)
                .map(str::to_owned)
        })
    };
    let p99 = field("99%").ok_or("wrk printed no 99% latency")?;
    let p99_ms = if let Some(ms) = p99.strip_suffix("ms") {
        ms.parse()?
    } else if let Some(us) = p99.strip_suffix("us") {
        us.parse::<f64>()? / 1e3
    } else if let Some(s) = p99.strip_suffix('s') {
        s.parse::<f64>()? * 1e3
    } else {
        return Err(format!("unreadable latency {p99}").into());
    };
    let requests_per_second = field("Requests/sec:")
        .ok_or("wrk printed no Requests/sec")?
        .parse()?;
    if text.contains("Non-2xx") {
        return Err("wrk saw non-2xx answers: the measured requests were refused".into());
    }
    Ok(Wrk {
        p99_ms,
        requests_per_second,
    })
}

/// Invites `email` into `tenant` as a viewer, accepts the invitation and logs in.
async fn member(
    client: &reqwest::Client,
    base: &str,
    admin: &str,
    mail: &smtp::SmtpSink,
    tenant: &str,
    email: &str,
) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    client
        .post(format!("{base}/v1/tenants/{tenant}/members"))
        .bearer_auth(admin)
        .json(&json!({"email": email, "role": "viewer"}))
        .send()
        .await?
        .error_for_status()?;
    let token = mail.invitation_token(email).await;
    client
        .post(format!("{base}/v1/auth/accept-invitation"))
        .json(&json!({"token": token, "password": USER_PASSWORD}))
        .send()
        .await?
        .error_for_status()?;
    login(client, base, email, USER_PASSWORD).await
}

/// How fast the churning tenant's principals write.
#[derive(Debug, Clone, Copy)]
struct Pace {
    /// Between two writes of the admin (two per offer → accept → remove cycle).
    admin: Duration,
    /// Between two denied writes of each flooder.
    flooder: Duration,
}

impl Pace {
    /// As hard as one tenant can push an installation with the default limits: its admin at
    /// the default writes per principal (its changes are allowed: they spend the tenant's
    /// budget too, which has room for them), its two flooders each at the default writes per
    /// principal (their writes are refused, and refused writes spend only their author's own
    /// budget; the accepts are the invited accounts' own). Or, with BENCH_CHURN_PER_SECOND,
    /// every churning principal at that pace.
    fn from_env() -> (Self, Option<f64>) {
        let defaults = bulkhead_core::limits::Limits::from_lookup(&|_| None)
            .map(|limits| limits.rate)
            .ok();
        let explicit: Option<f64> = std::env::var("BENCH_CHURN_PER_SECOND")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|v: &f64| *v > 0.0);
        let per_second = |rate: bulkhead_core::limits::Rate| f64::from(rate.per_minute) / 60.0;
        let (admin, flooder) = match (explicit, defaults) {
            (Some(each), _) => (each, each),
            (None, Some(rates)) => {
                let each = per_second(rates.principal_writes);
                (each.min(per_second(rates.tenant_writes)), each)
            }
            (None, None) => (10.0, 10.0),
        };
        (
            Self {
                admin: Duration::from_secs_f64(1.0 / admin),
                flooder: Duration::from_secs_f64(1.0 / flooder),
            },
            explicit,
        )
    }
}

type Churned = Result<u64, Box<dyn std::error::Error + Send + Sync>>;

/// Answers the server refused with 429 over the whole run (a tenant pushing at its budgets gets
/// some whenever its client's timer bunches requests).
static THROTTLED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Sends the request `build` makes; on 429 waits as `Retry-After` says and sends it again, as a
/// well-behaved client at its limits does. Any other failure ends the run.
async fn patiently(
    build: impl Fn() -> reqwest::RequestBuilder,
) -> Result<reqwest::Response, Box<dyn std::error::Error + Send + Sync>> {
    loop {
        let response = build().send().await?;
        if response.status() != 429 {
            return Ok(response.error_for_status()?);
        }
        THROTTLED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let wait: u64 = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        if wait > 10 {
            // Not a rate budget (those refill in seconds): the mail limit of an address, say.
            let body = response.text().await.unwrap_or_default();
            return Err(format!("429 for {wait} s, not a rate budget: {body}").into());
        }
        tokio::time::sleep(Duration::from_secs(wait.max(1))).await;
    }
}

/// Accounts the churn offers memberships to: a membership is `invited` until its account
/// accepts it, and one address is mailed at most 3 times a day per tenant, so the churn needs
/// many signed-in accounts. Seeded in SQL with a session each (their passwords are never used).
const CHURNERS: usize = 2_000;

/// Seeds `n` accounts with a live session each; returns their access tokens.
fn seed_churners(
    conn: &mut PgConnection,
    n: usize,
) -> Result<Vec<String>, Box<dyn std::error::Error + Send + Sync>> {
    let tokens: Vec<_> = (0..n)
        .map(|_| bulkhead_core::secrets::generate_access_token())
        .collect();
    let hashes: Vec<String> = tokens.iter().map(|t| hex::encode(t.hash)).collect();
    diesel::sql_query(
        "WITH h AS (SELECT hash, i FROM unnest($1::text[]) WITH ORDINALITY AS h(hash, i)), \
         p AS (INSERT INTO principals (id, kind, email, display_name, password_hash) \
           SELECT gen_random_uuid(), 'user', 'churner-' || i || '@bench.test', 'Churner ' || i, \
                  '$argon2id$never-checked' FROM h RETURNING id, email) \
         INSERT INTO sessions (id, principal_id, token_hash, expires_at) \
         SELECT gen_random_uuid(), p.id, decode(h.hash, 'hex'), now() + interval '1 day' \
         FROM h JOIN p ON p.email = 'churner-' || h.i || '@bench.test'",
    )
    .bind::<diesel::sql_types::Array<diesel::sql_types::Text>, _>(hashes)
    .execute(conn)?;
    Ok(tokens.into_iter().map(|t| t.secret).collect())
}

/// Offers a membership of `tenant` to one account after another, which accepts it (the
/// enforcer gains the assignment) and is removed again (it loses it), until `stop`; returns
/// the assignment changes made.
async fn churn_members(
    client: reqwest::Client,
    base: String,
    admin: String,
    (tenant, tenant_id): (&'static str, String),
    (churners, every, next): (
        Vec<String>,
        Duration,
        std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ),
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Churned {
    let mut changes = 0;
    // The admin makes two writes per cycle.
    let mut pace = tokio::time::interval(every * 2);
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        pace.tick().await;
        // Each start goes on where the last stopped: an address is mailed at most 3 times a day
        // per tenant.
        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let session = churners
            .get(i % churners.len())
            .ok_or("no churner accounts")?;
        let email = format!("churner-{}@bench.test", i % churners.len() + 1);
        let added: Value = patiently(|| {
            client
                .post(format!("{base}/v1/tenants/{tenant}/members"))
                .bearer_auth(&admin)
                .json(&json!({"email": email, "role": "operator"}))
        })
        .await?
        .json()
        .await?;
        let principal = added["member"]["principal_id"]
            .as_str()
            .ok_or("no principal_id")?;
        patiently(|| {
            client
                .post(format!("{base}/v1/me/invitations/{tenant_id}/accept"))
                .bearer_auth(session)
        })
        .await?;
        patiently(|| {
            client
                .delete(format!("{base}/v1/tenants/{tenant}/members/{principal}"))
                .bearer_auth(&admin)
        })
        .await?;
        changes += 2;
    }
    Ok(changes)
}

/// Asks for what a viewer may not do (create an API key), until `stop`; returns the denials.
async fn flood_denials(
    client: reqwest::Client,
    base: String,
    viewer: String,
    tenant: &'static str,
    every: Duration,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Churned {
    let mut denials = 0;
    let mut pace = tokio::time::interval(every);
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        pace.tick().await;
        let status = client
            .post(format!("{base}/v1/tenants/{tenant}/api-keys"))
            .bearer_auth(&viewer)
            .json(&json!({"name": "mine", "role": "viewer"}))
            .send()
            .await?
            .status();
        match status.as_u16() {
            403 => denials += 1,
            // Past the tenant's budget: refused before any work, counted, and the flood goes on.
            429 => {
                THROTTLED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            _ => return Err(format!("the flood expected 403 or 429, got {status}").into()),
        }
    }
    Ok(denials)
}

/// Latencies of an open-loop run.
struct OpenLoop {
    p50_ms: f64,
    p99_ms: f64,
}

/// GETs `url` as `bearer` at `rate` requests per second for `duration`, each sent at its
/// scheduled time whatever the ones before it are doing; latency from the scheduled time.
/// Any answer but 200 fails the run.
async fn open_loop(
    client: &reqwest::Client,
    url: &str,
    bearer: &str,
    rate: f64,
    duration: Duration,
) -> Result<OpenLoop, Box<dyn std::error::Error + Send + Sync>> {
    let started = tokio::time::Instant::now();
    let every = Duration::from_secs_f64(1.0 / rate);
    let total = (rate * duration.as_secs_f64()) as u64;
    let mut requests = tokio::task::JoinSet::new();
    for i in 0..total {
        let due = started + every.mul_f64(i as f64);
        tokio::time::sleep_until(due).await;
        let request = client.get(url).bearer_auth(bearer);
        requests.spawn(async move {
            // A kept-alive connection the server closed just as this request went out fails
            // before any answer (`IncompleteMessage`); a GET is safe to send again, and the
            // latency still runs from the scheduled time.
            let retry = request.try_clone();
            let mut status = request.send().await.map(|r| r.status().as_u16());
            if let (Err(_), Some(retry)) = (&status, retry) {
                status = retry.send().await.map(|r| r.status().as_u16());
            }
            (status, due.elapsed())
        });
    }
    let mut latencies = Vec::with_capacity(total as usize);
    while let Some(done) = requests.join_next().await {
        let (status, latency) = done?;
        let status = status?;
        if status != 200 {
            return Err(format!("open loop: GET answered {status}").into());
        }
        latencies.push(latency);
    }
    latencies.sort_unstable();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    Ok(OpenLoop {
        p50_ms: at(0.50),
        p99_ms: at(0.99),
    })
}

/// One tenant's churn: its admin adds and removes members, two of its viewers flood denials.
struct Churn {
    client: reqwest::Client,
    base: String,
    admin: String,
    tenant: (&'static str, String),
    churners: Vec<String>,
    flooders: [String; 2],
    pace: Pace,
    /// The next churner account to offer a membership to.
    next: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    parts: Parts,
}

/// Which parts of the churn run (BENCH_CHURN_ONLY), to see what each costs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Parts {
    Both,
    Changes,
    Denials,
}

impl Parts {
    fn from_env() -> Result<Self, String> {
        match std::env::var("BENCH_CHURN_ONLY")
            .unwrap_or_default()
            .as_str()
        {
            "" => Ok(Self::Both),
            "changes" => Ok(Self::Changes),
            "denials" => Ok(Self::Denials),
            other => Err(format!(
                "BENCH_CHURN_ONLY={other}: expected `changes` or `denials` (or unset for both)"
            )),
        }
    }
}

/// A churn under way, until `stop`.
struct Running {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    churn: tokio::task::JoinHandle<Churned>,
    floods: Vec<tokio::task::JoinHandle<Churned>>,
}

impl Churn {
    fn start(&self) -> Running {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        if self.parts == Parts::Denials {
            let floods = self.floods(&stop);
            let churn = tokio::spawn(async { Ok(0) });
            return Running {
                stop,
                churn,
                floods,
            };
        }
        let churn = tokio::spawn(churn_members(
            self.client.clone(),
            self.base.clone(),
            self.admin.clone(),
            self.tenant.clone(),
            (self.churners.clone(), self.pace.admin, self.next.clone()),
            stop.clone(),
        ));
        let floods = if self.parts == Parts::Changes {
            Vec::new()
        } else {
            self.floods(&stop)
        };
        Running {
            stop,
            churn,
            floods,
        }
    }

    fn floods(
        &self,
        stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> Vec<tokio::task::JoinHandle<Churned>> {
        self.flooders
            .iter()
            .map(|flooder| {
                tokio::spawn(flood_denials(
                    self.client.clone(),
                    self.base.clone(),
                    flooder.clone(),
                    self.tenant.0,
                    self.pace.flooder,
                    stop.clone(),
                ))
            })
            .collect()
    }

    async fn run_for(
        &self,
        duration: Duration,
    ) -> Result<(u64, u64), Box<dyn std::error::Error + Send + Sync>> {
        let running = self.start();
        tokio::time::sleep(duration).await;
        running.stop().await
    }
}

impl Running {
    /// Stops the churn; the membership changes and denials it made.
    async fn stop(self) -> Result<(u64, u64), Box<dyn std::error::Error + Send + Sync>> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let changes = self.churn.await??;
        let mut denials = 0;
        for flood in self.floods {
            denials += flood.await??;
        }
        Ok((changes, denials))
    }
}

/// Busy and total CPU ticks of the whole machine (`/proc/stat`).
fn cpu_ticks() -> Result<(u64, u64), Box<dyn std::error::Error + Send + Sync>> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().ok_or("empty /proc/stat")?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let total: u64 = ticks.iter().sum();
    // idle and iowait
    let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
    Ok((total - idle, total))
}

/// The share of the machine's CPU that was busy since `before` (0.0 to 1.0).
fn cpu_busy_since(before: (u64, u64)) -> Result<f64, Box<dyn std::error::Error + Send + Sync>> {
    let now = cpu_ticks()?;
    let total = now.1.saturating_sub(before.1).max(1);
    Ok(now.0.saturating_sub(before.0) as f64 / total as f64)
}

async fn login_throughput(
    client: &reqwest::Client,
    base: &str,
    concurrency: usize,
    duration: Duration,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
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
