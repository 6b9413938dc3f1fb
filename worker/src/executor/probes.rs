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
//! concurrently and the identity and schema probes reuse one of them.

use super::postgres::{CANARY_SCHEMA, PostgresExecutor};
use super::sql::{self, one_line};
use super::{ExecError, GuaranteeCheck, STATUS_VERIFIED, STATUS_VIOLATED};
use bulkhead_core::domain::Isolation;
use bulkhead_core::plan::{EnvNames, EnvironmentSpec};
use diesel::sql_types::Text;
use diesel::{Connection, PgConnection, QueryableByName, RunQueryDsl};

/// Connections opened at once by the compute probe.
const CONCURRENCY: usize = 16;

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

/// The server's message from a failed connection attempt, from `FATAL:` on, on one line.
fn server_message(error: &diesel::ConnectionError) -> String {
    let text = error.to_string();
    let from = text.find("FATAL:").unwrap_or(0);
    one_line(&text[from..])
}

fn connect(url: &str) -> Result<PgConnection, String> {
    PgConnection::establish(url).map_err(|e| server_message(&e))
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

fn open_concurrently(url: &str, count: usize) -> Vec<Result<PgConnection, String>> {
    let mut results = Vec::with_capacity(count);
    let mut left = count;
    while left > 0 {
        let batch = left.min(CONCURRENCY);
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..batch).map(|_| scope.spawn(|| connect(url))).collect();
            for handle in handles {
                results.push(
                    handle
                        .join()
                        .unwrap_or_else(|_| Err("probe thread panicked".to_owned())),
                );
            }
        });
        left -= batch;
    }
    results
}

#[derive(QueryableByName)]
struct Setting {
    #[diesel(sql_type = Text)]
    shown: String,
    #[diesel(sql_type = Text)]
    ms: String,
}

pub(crate) fn verify(
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
    let outcomes: Vec<Result<PgConnection, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = attempts
            .iter()
            .map(|(_, ep, db, _)| {
                let url = sql::login_url(ep, db, app, password);
                scope.spawn(move || connect(&url))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("probe thread panicked".to_owned()))
            })
            .collect()
    });
    for ((mechanism, ep, db, role_is_there), outcome) in attempts.iter().zip(outcomes) {
        let tried = format!(
            "connect to database {db} at {}:{} as {app}",
            ep.host, ep.port
        );
        match outcome {
            Ok(conn) => {
                drop(conn);
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
    let url = sql::login_url(endpoint, &names.database, app, password);
    let mut held: Vec<PgConnection> = Vec::new();
    let mut refusal: Option<String> = None;
    for outcome in open_concurrently(&url, limit) {
        match outcome {
            Ok(conn) => held.push(conn),
            Err(message) if too_many_for_role(&message) => refusal = Some(message),
            Err(message) => {
                return Err(inconclusive(
                    &format!("connect to {} as {app}", names.database),
                    &message,
                ));
            }
        }
    }
    while refusal.is_none() && held.len() <= limit {
        match connect(&url) {
            Ok(conn) => held.push(conn),
            Err(message) if too_many_for_role(&message) => refusal = Some(message),
            Err(message) => {
                return Err(inconclusive(
                    &format!("connect to {} as {app}", names.database),
                    &message,
                ));
            }
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

    let Some(conn) = held.first_mut() else {
        return Err(inconclusive(
            &format!("connect to {} as {app}", names.database),
            "every connection the role may open is in use",
        ));
    };

    // identity: nothing may be created in schema public.
    let table = format!("public.bk_probe_{}", hex::encode(rand::random::<[u8; 6]>()));
    let tried = format!("CREATE TABLE {table} as {app} in {}", names.database);
    match diesel::sql_query(format!("CREATE TABLE {table} (x integer)")).execute(conn) {
        Ok(_) => {
            let _ = diesel::sql_query(format!("DROP TABLE IF EXISTS {table}")).execute(conn);
            checks.push(check(
                "identity",
                "no_create_on_public",
                false,
                format!("{tried} → succeeded"),
            ));
        }
        Err(e) => {
            let message = one_line(&e.to_string());
            if refused_access(&message) {
                checks.push(check(
                    "identity",
                    "no_create_on_public",
                    true,
                    format!("{tried} → refused: ERROR: {message}"),
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
        match diesel::sql_query(format!("SELECT count(*) FROM {CANARY_SCHEMA}.secret"))
            .execute(conn)
        {
            Ok(_) => checks.push(check(
                "data",
                "schema_privileges",
                false,
                format!("{tried} → rows returned"),
            )),
            Err(e) => {
                let message = one_line(&e.to_string());
                if refused_access(&message) {
                    checks.push(check(
                        "data",
                        "schema_privileges",
                        true,
                        format!("{tried} → refused: ERROR: {message}"),
                    ));
                } else {
                    return Err(inconclusive(&tried, &message));
                }
            }
        }
    }

    // compute: the role's statement timeout is the blueprint's.
    let want = spec.blueprint.limits.statement_timeout_ms;
    let setting = diesel::sql_query(
        "SELECT current_setting('statement_timeout') AS shown, \
         (SELECT setting FROM pg_settings WHERE name = 'statement_timeout') AS ms",
    )
    .get_result::<Setting>(conn)
    .map_err(|e| inconclusive("read statement_timeout", &one_line(&e.to_string())))?;
    checks.push(check(
        "compute",
        "statement_timeout",
        setting.ms == want.to_string(),
        format!(
            "SHOW statement_timeout as {app} → {} (blueprint {} ms)",
            setting.shown, want
        ),
    ));
    checks.push(compute);
    drop(held);

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
