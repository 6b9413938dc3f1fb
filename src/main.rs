//! The `bulkhead` binary: wires configuration, the control database and the API together.
//! Subcommands: `migrate`, `api`, `worker`, `dev` (migrate + bootstrap + serve), `reseal`,
//! `meter --once`.

use anyhow::Context;
use bulkhead_api::bootstrap::{Bootstrap, ensure_platform_admin};
use bulkhead_core::config::{BootstrapAdmin, Config};
use bulkhead_core::db;
use std::process::ExitCode;

const USAGE: &str = "usage: bulkhead <migrate|api|worker|dev|reseal|meter --once>
  migrate  apply pending control-database migrations and exit
  reseal   seal every stored credential with BULKHEAD_CREDENTIALS_KEY (after a key rotation;
           older keys in BULKHEAD_CREDENTIALS_KEYS), in batches (--batch-size N, default 100)
  meter --once
           run one metering pass now (measure usage, charge it, check budgets) and exit;
           workers run one every BULKHEAD_METERING_INTERVAL seconds by themselves
  api      serve the HTTP API and its outbox relay (applies migrations first)
  worker   run a job worker: consume jobs from RabbitMQ and provision PostgreSQL
  dev      migrate, create the bootstrap admin, serve the API and run a worker in one process;
           prints the URL and login
configuration: environment variables, see README.md";

/// The admin `dev` creates when none is configured: local use only.
const DEV_ADMIN_EMAIL: &str = "admin@bulkhead.local";
const DEV_ADMIN_PASSWORD: &str = "change-me-bulkhead-dev";

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,actix_server=warn".into()),
        )
        .with_target(false)
        .init();
    let command = std::env::args().nth(1).unwrap_or_default();
    let result = match command.as_str() {
        "migrate" | "api" | "dev" | "worker" | "reseal" | "meter" => run(&command),
        "" | "-h" | "--help" | "help" => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        other => {
            eprintln!("bulkhead: unknown command {other:?}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bulkhead: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: &str) -> anyhow::Result<()> {
    let mut config = Config::from_env().map_err(|e| anyhow::anyhow!("configuration: {e}"))?;
    if matches!(command, "api" | "worker" | "reseal") && config.credentials_key_is_default {
        // The built-in key is in the source: credentials sealed with it are as good as plain
        // text, so only `dev` (local use) may run with it.
        anyhow::bail!(
            "configuration: BULKHEAD_CREDENTIALS_KEY is not set; `bulkhead {command}` needs your \
             own key, 64 hex characters (for example from `openssl rand -hex 32`), the same for \
             the API and every worker. Only `bulkhead dev` runs with the built-in development key"
        );
    }
    if config.mail.is_none() {
        if command == "api" {
            // Invitation tokens travel only by mail: without a way to send it, nobody could
            // accept an invitation (and handing tokens to inviters lets them own addresses).
            anyhow::bail!(
                "configuration: no mail delivery; `bulkhead api` mails invitation tokens. Set \
                 BULKHEAD_SMTP_URL (smtps://user:password@host:465, or \
                 smtp://user:password@host:587?tls=required), or BULKHEAD_MAIL=log to write each \
                 mail to the log instead (development only: the log then holds one-time tokens)"
            );
        }
        if command == "dev" {
            config.mail = Some(bulkhead_core::config::MailDelivery::Log);
        }
    }
    if command == "dev" && config.bootstrap_admin.is_none() {
        config.bootstrap_admin = Some(BootstrapAdmin {
            email: DEV_ADMIN_EMAIL.into(),
            password: DEV_ADMIN_PASSWORD.into(),
        });
    }
    if command == "dev" && db::create_database_if_missing(&config.database_url).unwrap_or(false) {
        println!(
            "Created database {}",
            bulkhead_core::dburl::redact(&config.database_url)
        );
    }
    let pool = db::connect(&config.database_url, config.db_pool_size).map_err(|e| {
        anyhow::anyhow!(
            "DATABASE_URL: cannot reach PostgreSQL at {} ({}); start PostgreSQL or fix DATABASE_URL",
            bulkhead_core::dburl::redact(&config.database_url),
            one_line(&e.to_string())
        )
    })?;
    let applied = {
        let mut conn = pool.get().context("control database connection")?;
        db::run_migrations(&mut conn)?
    };
    tracing::info!(applied = applied.len(), "migrations up to date");
    if command == "migrate" {
        println!("applied {} migration(s)", applied.len());
        return Ok(());
    }
    if command == "reseal" {
        let mut conn = pool.get().context("control database connection")?;
        return reseal(&mut conn, &config, batch_size()?);
    }
    if command == "meter" {
        return meter_once(&pool, &config);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    runtime.block_on(serve(command, config, pool))
}

/// A watch channel that turns true on SIGTERM or Ctrl-C.
fn shutdown_signal() -> tokio::sync::watch::Receiver<bool> {
    let (sender, receiver) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = terminate => {}
        }
        tracing::info!("shutdown requested");
        let _ = sender.send(true);
    });
    receiver
}

async fn serve(command: &str, config: Config, pool: db::PgPool) -> anyhow::Result<()> {
    let shutdown = shutdown_signal();
    if config.credentials_key_is_default {
        // Only `dev` gets here with it (see `run`).
        tracing::warn!(
            "BULKHEAD_CREDENTIALS_KEY is not set: environment credentials are sealed with the \
             built-in development key; set your own for anything but local use"
        );
    }
    if command == "worker" {
        let worker = bulkhead_worker::runtime::Worker::new(config, pool, shutdown, None).await?;
        worker.run().await;
        return Ok(());
    }
    let bootstrap = ensure_platform_admin(&pool, config.bootstrap_admin.as_ref()).await?;
    let admin = config.bootstrap_admin.clone();
    let service = bulkhead_api::build(config.clone(), pool.clone()).await?;
    let relay = tokio::spawn(bulkhead_core::queue::run_relay(
        pool.clone(),
        bulkhead_core::queue::BrokerAddress::from_config(&config),
        bulkhead_core::queue::Topology::with_prefix(&config.queue_prefix),
        service.relay_wake.clone(),
        std::time::Duration::from_millis(500),
        shutdown.clone(),
    ));
    let worker = if command == "dev" {
        // One relay serves both: the worker wakes the API's relay after its own commits.
        let worker = bulkhead_worker::runtime::Worker::new(
            config,
            pool,
            shutdown.clone(),
            Some(service.relay_wake.clone()),
        )
        .await?;
        Some(tokio::spawn(worker.run()))
    } else {
        None
    };
    let url = format!(
        "{}://{}",
        if service.https { "https" } else { "http" },
        service.addr
    );
    tracing::info!(%url, "serving");
    if command == "dev" {
        println!("Bulkhead is running at {url}  (API docs: {url}/swagger-ui/), with a worker");
        match (bootstrap, admin) {
            (Bootstrap::Created { .. }, Some(admin)) => println!(
                "Platform admin created: {} / {}  (set BULKHEAD_BOOTSTRAP_ADMIN_* to choose)",
                admin.email, admin.password
            ),
            (_, Some(admin)) => println!(
                "Platform admin exists already; log in as it (dev default: {} / {})",
                admin.email, DEV_ADMIN_PASSWORD
            ),
            _ => {}
        }
        println!(
            "Log in: curl -s -X POST {url}/v1/auth/login -H 'content-type: application/json' -d '{{\"email\":\"...\",\"password\":\"...\"}}'"
        );
    }
    // actix stops the server on SIGTERM/SIGINT; the same signal stops the relay and the worker.
    let served = service.server.await.context("HTTP server");
    if let Some(worker) = worker {
        let _ = worker.await;
    }
    let _ = relay.await;
    served
}

/// PostgreSQL's multi-line messages folded into one line.
/// `bulkhead meter --once`: one metering pass, reported on one line; non-zero when it failed.
fn meter_once(pool: &db::PgPool, config: &Config) -> anyhow::Result<()> {
    if std::env::args().nth(2).as_deref() != Some("--once") {
        anyhow::bail!(
            "usage: bulkhead meter --once (workers meter by themselves every BULKHEAD_METERING_INTERVAL seconds)"
        );
    }
    let catalog = config
        .metering
        .catalog()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let targets = bulkhead_worker::metering::MeterTargets::from_config(&config.worker);
    let report = bulkhead_worker::metering::run_pass(
        pool,
        &targets,
        &config.metering,
        &catalog,
        bulkhead_core::store::metering::Trigger::Manual,
    )
    .map_err(|e| anyhow::anyhow!("metering: {e}"))?;
    let c = &report.counts;
    match report.error {
        None => {
            println!(
                "metering pass {} succeeded: {} environment(s), {} sample(s), {} charge(s)",
                report.id, c.environments, c.samples, c.charges
            );
            Ok(())
        }
        Some(error) => anyhow::bail!(
            "metering pass {} {}: {error}",
            report.id,
            report.state.as_str()
        ),
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `--batch-size N` after the command, else 100.
fn batch_size() -> anyhow::Result<usize> {
    let args: Vec<String> = std::env::args().skip(2).collect();
    match args.as_slice() {
        [] => Ok(100),
        [flag, n] if flag == "--batch-size" => match n.parse::<usize>() {
            Ok(n) if (1..=10_000).contains(&n) => Ok(n),
            _ => anyhow::bail!("--batch-size: expected a whole number from 1 to 10000, got {n:?}"),
        },
        _ => anyhow::bail!("usage: bulkhead reseal [--batch-size N]"),
    }
}

/// Seals every stored credential with the current key and says what it did; fails when a row
/// is left on an older key, so a rotation script stops before removing that key.
fn reseal(conn: &mut db::PgConn, config: &Config, batch_size: usize) -> anyhow::Result<()> {
    let keys = &config.credentials_keys;
    let report = bulkhead_core::reseal::reseal_all(conn, keys, batch_size)
        .context("re-sealing credentials")?;
    for (environment, reason) in &report.failed {
        eprintln!("environment {environment}: {reason}");
    }
    println!(
        "resealed {} credential(s) with key {} in {} batch(es); {} already sealed with it; \
         {} failed; {} left on other keys (older keys configured: {})",
        report.resealed,
        keys.current().id(),
        report.batches,
        report.already_current,
        report.failed.len(),
        report.remaining,
        match keys.older_ids().join(", ") {
            ids if ids.is_empty() => "none".to_owned(),
            ids => ids,
        }
    );
    if !report.failed.is_empty() {
        anyhow::bail!(
            "{} credential(s) open with none of the configured keys (listed above); add the key \
             that sealed them to BULKHEAD_CREDENTIALS_KEYS and run `bulkhead reseal` again",
            report.failed.len()
        );
    }
    if report.remaining > 0 {
        anyhow::bail!(
            "{} credential(s) are not sealed with the current key yet; keep the older keys in \
             BULKHEAD_CREDENTIALS_KEYS and run `bulkhead reseal` again",
            report.remaining
        );
    }
    Ok(())
}
