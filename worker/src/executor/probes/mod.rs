//! Isolation probes: the environment's app role, with its real password over TCP, tries what
//! it must not be able to do, and each refusal (or success) is recorded with the server's words.
//! What the catalog (`bulkhead_core::guarantees`) lists as a gap of the tier is reported as
//! `not_provided`, demonstrated where a probe can show it.
//!
//! - data: one catalog query for the role's CONNECT privilege on every database of the server,
//!   and a real connection to the canary database (for a dedicated environment also to the
//!   pooled database), which must be refused; other schemas (shared): USAGE on none, the canary
//!   table unreadable; NOTIFY (shared): a notification the role sends reaches a session of
//!   another role in the pooled database (a gap, shown for real).
//! - identity: create a table in schema `public`; the roles' attributes and memberships.
//! - metadata: no comment on this environment's roles, schema or database.
//! - compute: hold connections up to the role's limit, the next one must be refused;
//!   `temp_file_limit` is the blueprint's and cannot be changed; the role-level defaults
//!   (`statement_timeout`, `idle_in_transaction_session_timeout`, `work_mem`) are the blueprint's.
//!
//! The connect probes run first, concurrently; then two of the role's sessions open, the
//! in-session probes (`session`) run on them while the compute probe opens the rest. Sessions
//! are plain tokio-postgres sessions whose `search_path` is pinned to `pg_catalog` at connect,
//! so nothing the tenant made in its schema can answer for the catalog.

mod session;

use super::postgres::PostgresExecutor;
use super::sql::one_line;
use super::{Endpoint, ExecError, GuaranteeCheck};
use bulkhead_core::db::{SessionError, open_session};
use bulkhead_core::domain::Isolation;
use bulkhead_core::guarantees;
use bulkhead_core::plan::{EnvNames, EnvironmentSpec};
use std::future::Future;
use std::time::Duration;
use tokio_postgres::Client;
use tokio_postgres::config::SslMode;

fn check(layer: &str, mechanism: &str, verified: bool, evidence: String) -> GuaranteeCheck {
    GuaranteeCheck::probed(layer, mechanism, verified, evidence)
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
        .options("-c search_path=pg_catalog")
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
    // Shared tier: a session of another role (the admin, standing in for a neighbour) listens
    // on a fresh channel in the pooled database; the app role notifies it during the probes.
    let channel = (spec.isolation == Isolation::Shared)
        .then(|| format!("bk_probe_{}", hex::encode(rand::random::<[u8; 6]>())));
    let mut listener = match &channel {
        Some(channel) => {
            let mut conn = executor.pooled_admin()?;
            conn.batch("listen on a probe channel", &format!("LISTEN {channel}"))?;
            Some(conn)
        }
        None => None,
    };
    let probed = block_on(verify_async(
        executor,
        spec,
        names,
        password,
        channel.as_deref(),
    ))
    .and_then(|probed| probed);
    let mut checks = match probed {
        Ok(checks) => checks,
        Err(error) => {
            // Still listening: not back into the pool.
            if let Some(conn) = listener {
                conn.close();
            }
            return Err(error);
        }
    };
    for gap in guarantees::gaps(spec.isolation) {
        let evidence = match (gap.mechanism, &channel, listener.as_mut()) {
            ("notify_channels", Some(channel), Some(conn)) => {
                let heard = conn.heard(channel)?;
                if heard {
                    format!(
                        "NOTIFY {channel} sent as {} in {} reached a session of another role \
                         (Bulkhead's admin, standing in for a neighbour) listening there: channels \
                         are database-wide",
                        names.app_role, names.database
                    )
                } else {
                    format!(
                        "NOTIFY {channel} sent as {} was not heard this time by another role's \
                         session; PostgreSQL still scopes channels to the database, not the role",
                        names.app_role
                    )
                }
            }
            ("advisory_locks", ..) => format!(
                "advisory lock keys in {} are shared by every role that can connect to it; no \
                 privilege governs them",
                names.database
            ),
            ("schema_structure", ..) => format!(
                "pg_class, pg_attribute, pg_proc and pg_stat_user_tables of {} are readable by \
                 every role connected to it, for every schema",
                names.database
            ),
            ("cpu_io", ..) => {
                let endpoint = executor.endpoint(spec.isolation);
                format!(
                    "{} runs on {}:{} with every other database of that PostgreSQL server{}",
                    names.database,
                    endpoint.host,
                    endpoint.port,
                    if spec.isolation == Isolation::Dedicated && executor.same_server() {
                        ", including the pooled database of the shared tier"
                    } else {
                        ""
                    }
                )
            }
            _ => gap.summary.to_owned(),
        };
        checks.push(GuaranteeCheck::gap(gap, evidence));
    }
    let position = |c: &GuaranteeCheck| {
        guarantees::CATALOG
            .iter()
            .position(|g| g.layer == c.layer && g.mechanism == c.mechanism)
    };
    checks.sort_by_key(position);
    Ok(checks)
}

async fn verify_async(
    executor: &PostgresExecutor,
    spec: &EnvironmentSpec,
    names: &EnvNames,
    password: &str,
    notify_channel: Option<&str>,
) -> Result<Vec<GuaranteeCheck>, ExecError> {
    let targets = executor.targets();
    let endpoint = executor.endpoint(spec.isolation);
    let app = names.app_role.as_str();
    let mut checks = Vec::new();

    // data: other databases refuse the connection.
    let canary = executor.canary_database();
    // (what, endpoint, database, whether the role lives on that server)
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
    // The canary connection's outcome joins the catalog query's below.
    let mut canary_refusal: Option<(bool, String)> = None;
    for ((mechanism, ep, db, role_is_there), outcome) in attempts.iter().zip(outcomes) {
        let tried = format!(
            "connect to database {db} at {}:{} as {app}",
            ep.host, ep.port
        );
        let (refused, evidence) = match outcome {
            Ok(session) => {
                session.close().await;
                (false, format!("{tried} → accepted"))
            }
            // Where the role exists, only a privilege refusal counts; on another server, the
            // role being unknown there is the isolation.
            Err(message)
                if message.contains("permission denied")
                    || (!role_is_there && refused_access(&message)) =>
            {
                (true, format!("{tried} → refused: {message}"))
            }
            Err(message) => return Err(inconclusive(&tried, &message)),
        };
        if *mechanism == "database_connect_privilege" {
            canary_refusal = Some((refused, evidence));
        } else {
            checks.push(check("data", mechanism, refused, evidence));
        }
    }

    // compute: connections up to the role's limit, then a refusal. The in-session probes run
    // on the first connection while the others are being opened (a new backend's first catalog
    // queries are its slowest; this way they cost no extra time).
    let limit = usize::try_from(spec.blueprint.limits.connection_limit).unwrap_or(0);
    let own = settings(endpoint, &names.database, app, password);
    let unexpected =
        |message: &str| inconclusive(&format!("connect to {} as {app}", names.database), message);
    // Backends of the role that just ended (an earlier run's probes) still count against its
    // limit until they have exited: while every slot is taken, try again for up to 2 s.
    let mut firsts = Vec::new();
    for attempt in 0..40 {
        let mut refused = false;
        for outcome in connect_all(vec![own.clone(); limit.clamp(1, 2)]).await {
            match outcome {
                Ok(session) => firsts.push(session),
                Err(message) if too_many_for_role(&message) => refused = true,
                Err(message) => {
                    for session in firsts {
                        session.close().await;
                    }
                    return Err(unexpected(&message));
                }
            }
        }
        if !firsts.is_empty() {
            break;
        }
        if !refused || attempt == 39 {
            return Err(unexpected("every connection the role may open is in use"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let probe = session::Probe {
        clients: firsts.iter().map(|s| &s.client).collect(),
        spec,
        names,
        notify_channel,
    };
    let opened_first = firsts.len();
    let others = async {
        let mut held: Vec<Session> = Vec::new();
        let mut refusal: Option<String> = None;
        for outcome in connect_all(vec![own.clone(); limit.saturating_sub(opened_first)]).await {
            match outcome {
                Ok(session) => held.push(session),
                Err(message) if too_many_for_role(&message) => refusal = Some(message),
                Err(message) => return Err((held, unexpected(&message))),
            }
        }
        while refusal.is_none() && held.len() + opened_first <= limit {
            match connect(own.clone()).await {
                Ok(session) => held.push(session),
                Err(message) if too_many_for_role(&message) => refusal = Some(message),
                Err(message) => return Err((held, unexpected(&message))),
            }
        }
        Ok((held, refusal))
    };
    let (probed, opened) = tokio::join!(probe.run(canary_refusal), others);
    drop(probe);
    for session in firsts {
        session.close().await;
    }
    let (others, refusal) = match opened {
        Ok(opened) => opened,
        Err((held, error)) => {
            for session in held {
                session.close().await;
            }
            return Err(error);
        }
    };
    let held = others.len() + opened_first;
    for session in others {
        session.close().await;
    }
    let compute = match &refusal {
        Some(message) => {
            let elsewhere = limit.saturating_sub(held);
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
                    "held {held} connections as {app} (limit {limit}{note}); connection {} → refused: {message}",
                    held + 1
                ),
            )
        }
        None => check(
            "compute",
            "role_connection_limit",
            false,
            format!("held {held} connections as {app}, beyond its limit of {limit}"),
        ),
    };
    checks.extend(probed?);
    checks.push(compute);
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
