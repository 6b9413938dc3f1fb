//! Isolation probes: the environment's app role, with its real password over TCP, tries what
//! it must not be able to do, and each refusal (or success) is recorded with the server's words.
//!
//! - data: connect to another database (the canary database; for a dedicated environment also
//!   the pooled database); read another schema (the canary table; shared environments).
//! - identity: create a table in schema `public`.
//! - compute: hold connections up to the role's limit, the next one must be refused; the
//!   role's `statement_timeout` is the blueprint's.
//!
//! The connect probes run first, concurrently; then the compute probe opens its connections
//! concurrently and the identity and schema probes reuse one of them. Sessions are plain
//! tokio-postgres sessions: nothing runs on them but the probes (a diesel connection would
//! first set the time zone and encoding on each, which costs the server more than the probe).

use super::postgres::{CANARY_SCHEMA, PostgresExecutor};
use super::sql::one_line;
use super::{Endpoint, ExecError, GuaranteeCheck, STATUS_VERIFIED, STATUS_VIOLATED};
use bulkhead_core::db::{SessionError, open_session};
use bulkhead_core::domain::Isolation;
use bulkhead_core::plan::{EnvNames, EnvironmentSpec};
use std::future::Future;
use std::time::Duration;
use tokio_postgres::Client;
use tokio_postgres::config::SslMode;

fn check(layer: &str, mechanism: &str, verified: bool, evidence: String) -> GuaranteeCheck {
    GuaranteeCheck {
        layer: layer.to_owned(),
        mechanism: mechanism.to_owned(),
        status: if verified {
            STATUS_VERIFIED
        } else {
            STATUS_VIOLATED
        }
        .to_owned(),
        evidence,
    }
}

fn inconclusive(what: &str, answer: &str) -> ExecError {
    ExecError::Unreachable(format!("isolation probe inconclusive: {what}: {answer}"))
}

/// The server's answer on one line, as `SEVERITY: message` when the server gave one.
fn server_message(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => one_line(&format!("{}: {}", db.severity(), db.message())),
        None => one_line(&error.to_string()),
    }
}

/// Connection settings for the app role, as its applications would connect.
fn settings(
    endpoint: &Endpoint,
    database: &str,
    user: &str,
    password: &str,
) -> tokio_postgres::Config {
    let mut config = tokio_postgres::Config::new();
    config
        .host(&endpoint.host)
        .port(endpoint.port)
        .dbname(database)
        .user(user)
        .password(password)
        .application_name("bulkhead-probe")
        .connect_timeout(Duration::from_secs(5))
        .ssl_mode(match endpoint.ssl_mode.as_deref() {
            None | Some("prefer" | "allow") => SslMode::Prefer,
            Some("disable") => SslMode::Disable,
            Some(_) => SslMode::Require,
        });
    config
}

/// A probe's session: the client and the task driving its connection.
struct Session {
    client: Client,
    driver: tokio::task::JoinHandle<()>,
}

impl Session {
    /// Ends the session and waits until the server has been told, so the role's connection
    /// slot is free again when the probe returns.
    async fn close(self) {
        drop(self.client);
        let _ = tokio::time::timeout(Duration::from_secs(2), self.driver).await;
    }
}

async fn connect(config: tokio_postgres::Config) -> Result<Session, String> {
    match open_session(&config).await {
        Ok((client, driver)) => Ok(Session { client, driver }),
        Err(SessionError::Postgres(e)) => Err(server_message(&e)),
        Err(SessionError::Tls(e)) => Err(e),
    }
}

/// Opens one session per configuration at once; the results are in the same order.
async fn connect_all(configs: Vec<tokio_postgres::Config>) -> Vec<Result<Session, String>> {
    let tasks: Vec<_> = configs
        .into_iter()
        .map(|config| tokio::spawn(connect(config)))
        .collect();
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        results.push(
            task.await
                .unwrap_or_else(|e| Err(format!("probe task failed: {e}"))),
        );
    }
    results
}

/// Whether the server refused for lack of rights. A pg_hba.conf rejection is not counted: it
/// may only mean the probe's connection settings differ from what the server accepts.
fn refused_access(message: &str) -> bool {
    message.contains("permission denied")
        || message.contains("does not exist")
        || message.contains("password authentication failed")
}

fn too_many_for_role(message: &str) -> bool {
    message.contains("too many connections for role")
}

/// Runs `probe` to completion from synchronous code: on the caller's runtime when called from
/// one of its blocking threads, else on a runtime of its own (tests, tools).
fn block_on<F: Future>(probe: F) -> Result<F::Output, ExecError> {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => Ok(handle.block_on(probe)),
        Err(_) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map(|runtime| runtime.block_on(probe))
            .map_err(|e| ExecError::Unreachable(format!("isolation probe runtime: {e}"))),
    }
}

pub(crate) fn verify(
    executor: &PostgresExecutor,
    spec: &EnvironmentSpec,
    names: &EnvNames,
    password: &str,
) -> Result<Vec<GuaranteeCheck>, ExecError> {
    block_on(verify_async(executor, spec, names, password))?
}

async fn verify_async(
    executor: &PostgresExecutor,
    spec: &EnvironmentSpec,
    names: &EnvNames,
    password: &str,
) -> Result<Vec<GuaranteeCheck>, ExecError> {
    let targets = executor.targets();
    let endpoint = executor.endpoint(spec.isolation);
    let app = names.app_role.as_str();
    let mut checks = Vec::new();

    // data: other databases refuse the connection.
    let canary = executor.canary_database();
    // (mechanism, endpoint, database, whether the role lives on that server)
    let mut attempts = vec![(
        "database_connect_privilege",
        endpoint,
        canary.as_str(),
        true,
    )];
    if spec.isolation == Isolation::Dedicated {
        attempts.push((
            "pooled_database_connect_privilege",
            &targets.shared_endpoint,
            targets.pooled_database.as_str(),
            executor.same_server(),
        ));
    }
    let configs: Vec<_> = attempts
        .iter()
        .map(|(_, ep, db, _)| settings(ep, db, app, password))
        .collect();
    let outcomes = connect_all(configs).await;
    for ((mechanism, ep, db, role_is_there), outcome) in attempts.iter().zip(outcomes) {
        let tried = format!(
            "connect to database {db} at {}:{} as {app}",
            ep.host, ep.port
        );
        match outcome {
            Ok(session) => {
                session.close().await;
                checks.push(check(
                    "data",
                    mechanism,
                    false,
                    format!("{tried} → accepted"),
                ));
            }
            // Where the role exists, only a privilege refusal counts; on another server, the
            // role being unknown there is the isolation.
            Err(message)
                if message.contains("permission denied")
                    || (!role_is_there && refused_access(&message)) =>
            {
                checks.push(check(
                    "data",
                    mechanism,
                    true,
                    format!("{tried} → refused: {message}"),
                ));
            }
            Err(message) => return Err(inconclusive(&tried, &message)),
        }
    }

    // compute: connections up to the role's limit, then a refusal.
    let limit = usize::try_from(spec.blueprint.limits.connection_limit).unwrap_or(0);
    let own = settings(endpoint, &names.database, app, password);
    let mut held: Vec<Session> = Vec::new();
    let mut refusal: Option<String> = None;
    let unexpected =
        |message: &str| inconclusive(&format!("connect to {} as {app}", names.database), message);
    for outcome in connect_all(vec![own.clone(); limit]).await {
        match outcome {
            Ok(session) => held.push(session),
            Err(message) if too_many_for_role(&message) => refusal = Some(message),
            Err(message) => return Err(unexpected(&message)),
        }
    }
    while refusal.is_none() && held.len() <= limit {
        match connect(own.clone()).await {
            Ok(session) => held.push(session),
            Err(message) if too_many_for_role(&message) => refusal = Some(message),
            Err(message) => return Err(unexpected(&message)),
        }
    }
    let compute = match &refusal {
        Some(message) => {
            let elsewhere = limit.saturating_sub(held.len());
            let note = if elsewhere > 0 {
                format!(", {elsewhere} in use elsewhere")
            } else {
                String::new()
            };
            check(
                "compute",
                "role_connection_limit",
                true,
                format!(
                    "held {} connections as {app} (limit {limit}{note}); connection {} → refused: {message}",
                    held.len(),
                    held.len() + 1
                ),
            )
        }
        None => check(
            "compute",
            "role_connection_limit",
            false,
            format!(
                "held {} connections as {app}, beyond its limit of {limit}",
                held.len()
            ),
        ),
    };

    let Some(session) = held.first() else {
        return Err(unexpected("every connection the role may open is in use"));
    };
    let probed = probe_statements(&session.client, spec, names, app).await;
    for session in held {
        session.close().await;
    }
    checks.extend(probed?);
    checks.push(compute);

    checks.sort_by(|a, b| {
        let order = |layer: &str| {
            ["data", "identity", "compute"]
                .iter()
                .position(|l| *l == layer)
        };
        order(&a.layer).cmp(&order(&b.layer))
    });
    Ok(checks)
}

/// identity (no CREATE in `public`), data (the canary schema, shared tier) and the statement
/// timeout, on one of the role's sessions.
async fn probe_statements(
    client: &Client,
    spec: &EnvironmentSpec,
    names: &EnvNames,
    app: &str,
) -> Result<Vec<GuaranteeCheck>, ExecError> {
    let mut checks = Vec::new();

    // identity: nothing may be created in schema public. Tried inside a transaction that is
    // rolled back, so a success leaves nothing behind (the role could not drop the table: it
    // has no USAGE on public).
    let table = format!("public.bk_probe_{}", hex::encode(rand::random::<[u8; 6]>()));
    let tried = format!("CREATE TABLE {table} as {app} in {}", names.database);
    let not_run = |e: tokio_postgres::Error| inconclusive(&tried, &server_message(&e));
    client.batch_execute("BEGIN").await.map_err(not_run)?;
    let created = client
        .batch_execute(&format!("CREATE TABLE {table} (x integer)"))
        .await;
    client.batch_execute("ROLLBACK").await.map_err(not_run)?;
    match created {
        Ok(()) => checks.push(check(
            "identity",
            "no_create_on_public",
            false,
            format!("{tried} → succeeded (rolled back)"),
        )),
        Err(e) => {
            let message = server_message(&e);
            if refused_access(&message) {
                checks.push(check(
                    "identity",
                    "no_create_on_public",
                    true,
                    format!("{tried} → refused: {message}"),
                ));
            } else {
                return Err(inconclusive(&tried, &message));
            }
        }
    }

    // data: another schema of the pooled database cannot be read.
    if spec.isolation == Isolation::Shared {
        let tried = format!(
            "SELECT FROM {CANARY_SCHEMA}.secret as {app} in {}",
            names.database
        );
        match client
            .batch_execute(&format!("SELECT count(*) FROM {CANARY_SCHEMA}.secret"))
            .await
        {
            Ok(()) => checks.push(check(
                "data",
                "schema_privileges",
                false,
                format!("{tried} → rows returned"),
            )),
            Err(e) => {
                let message = server_message(&e);
                if refused_access(&message) {
                    checks.push(check(
                        "data",
                        "schema_privileges",
                        true,
                        format!("{tried} → refused: {message}"),
                    ));
                } else {
                    return Err(inconclusive(&tried, &message));
                }
            }
        }
    }

    // compute: the role's statement timeout is the blueprint's.
    let want = spec.blueprint.limits.statement_timeout_ms;
    let row = client
        .query_one(
            "SELECT current_setting('statement_timeout') AS shown, \
             (SELECT setting FROM pg_settings WHERE name = 'statement_timeout') AS ms",
            &[],
        )
        .await
        .map_err(|e| inconclusive("read statement_timeout", &server_message(&e)))?;
    let (shown, ms): (String, String) = (
        row.try_get("shown")
            .map_err(|e| inconclusive("read statement_timeout", &e.to_string()))?,
        row.try_get("ms")
            .map_err(|e| inconclusive("read statement_timeout", &e.to_string()))?,
    );
    checks.push(check(
        "compute",
        "statement_timeout",
        ms == want.to_string(),
        format!("SHOW statement_timeout as {app} → {shown} (blueprint {want} ms)"),
    ));
    Ok(checks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_connect_with_the_endpoints_tls_mode() {
        let endpoint = |mode: Option<&str>| Endpoint {
            host: "db.internal".into(),
            port: 5433,
            ssl_mode: mode.map(str::to_owned),
        };
        for (mode, want) in [
            (None, SslMode::Prefer),
            (Some("disable"), SslMode::Disable),
            (Some("prefer"), SslMode::Prefer),
            (Some("require"), SslMode::Require),
            (Some("verify-full"), SslMode::Require),
        ] {
            let config = settings(&endpoint(mode), "d", "u", "p");
            assert_eq!(config.get_ssl_mode(), want, "{mode:?}");
            assert_eq!(config.get_ports(), [5433]);
            assert_eq!(config.get_dbname(), Some("d"));
        }
    }
}
