//! The control database: connection pool, embedded migrations, and the store error type.

use diesel::PgConnection;
use diesel::r2d2::{ConnectionManager, CustomizeConnection, Pool, PooledConnection};
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use std::time::Duration;

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations");

pub type PgPool = Pool<ConnectionManager<PgConnection>>;
pub type PgConn = PooledConnection<ConnectionManager<PgConnection>>;

/// Why a control-database operation did not complete.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// A unique or exclusion constraint refused the write; the constraint's name says which.
    #[error("conflict on {0}")]
    Conflict(String),
    /// A state change the state machine does not allow from the record's current state.
    #[error("{0}")]
    Transition(String),
    #[error("control database unavailable: {0}")]
    Unavailable(String),
    #[error("control database error: {0}")]
    Database(DieselError),
}

impl From<DieselError> for StoreError {
    fn from(error: DieselError) -> Self {
        match error {
            DieselError::NotFound => Self::NotFound,
            DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info) => {
                Self::Conflict(info.constraint_name().unwrap_or("unique").to_owned())
            }
            DieselError::DatabaseError(DatabaseErrorKind::ClosedConnection, info) => {
                Self::Unavailable(info.message().to_owned())
            }
            other => Self::Database(other),
        }
    }
}

impl From<diesel_async::pooled_connection::deadpool::PoolError> for StoreError {
    fn from(error: diesel_async::pooled_connection::deadpool::PoolError) -> Self {
        Self::Unavailable(error.to_string())
    }
}

impl From<diesel::r2d2::PoolError> for StoreError {
    fn from(error: diesel::r2d2::PoolError) -> Self {
        Self::Unavailable(error.to_string())
    }
}

/// Every pooled connection gets a statement timeout, so one slow query cannot hold a worker, and
/// an idle-in-transaction timeout, so a process paused inside a transaction (a frozen VM, a
/// `SIGSTOP`) cannot hold a job row's lock against the sweeper and the next claim for long.
#[derive(Debug, Clone, Copy)]
struct SessionSettings;

impl CustomizeConnection<PgConnection, diesel::r2d2::Error> for SessionSettings {
    fn on_acquire(&self, conn: &mut PgConnection) -> Result<(), diesel::r2d2::Error> {
        use diesel::connection::SimpleConnection;
        conn.batch_execute(
            "SET statement_timeout = '10s'; SET idle_in_transaction_session_timeout = '5s'",
        )
        .map_err(diesel::r2d2::Error::QueryError)
    }
}

/// Opens the pool after one direct connection, so an unreachable database fails start-up with
/// PostgreSQL's own reason instead of a pool timeout.
pub fn connect(database_url: &str, size: u32) -> Result<PgPool, StoreError> {
    use diesel::Connection;
    PgConnection::establish(database_url).map_err(|e| StoreError::Unavailable(e.to_string()))?;
    let manager = ConnectionManager::<PgConnection>::new(database_url);
    Pool::builder()
        .max_size(size)
        .min_idle(Some(size.min(4)))
        .connection_timeout(Duration::from_secs(5))
        // r2d2 would otherwise run `SELECT 1` on every checkout: a second round trip per query.
        // A broken connection fails its query instead, and r2d2 drops it on release.
        .test_on_check_out(false)
        .connection_customizer(Box::new(SessionSettings))
        .build(manager)
        .map_err(|e| StoreError::Unavailable(e.to_string()))
}

/// Creates the database `database_url` names when it does not exist yet (for `bulkhead dev`
/// on a fresh machine). Returns whether it created it.
pub fn create_database_if_missing(database_url: &str) -> Result<bool, StoreError> {
    use diesel::{Connection, RunQueryDsl};
    if PgConnection::establish(database_url).is_ok() {
        return Ok(false);
    }
    let url = crate::dburl::ConnUrl::parse(database_url)
        .map_err(|e| StoreError::Unavailable(format!("DATABASE_URL: {e}")))?;
    let name = url.database();
    let valid_name = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !valid_name {
        return Err(StoreError::Unavailable(format!(
            "cannot create database {name:?}: use lowercase letters, digits and '_'"
        )));
    }
    let mut maintenance = PgConnection::establish(url.with_database("postgres").as_str())
        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
    // Closed to connections until PUBLIC's default CONNECT is revoked (see
    // `lock_down_control_database`): on a server that hosts tenants, no tenant gets in first.
    diesel::sql_query(format!("CREATE DATABASE {name} ALLOW_CONNECTIONS false"))
        .execute(&mut maintenance)?;
    diesel::sql_query(format!(
        "REVOKE CONNECT, TEMPORARY ON DATABASE {name} FROM PUBLIC"
    ))
    .execute(&mut maintenance)?;
    diesel::sql_query(format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"))
        .execute(&mut maintenance)?;
    Ok(true)
}

/// Applies pending migrations; returns the versions it applied.
/// Processes starting together (an API and its workers) take turns: under a session advisory
/// lock, the second finds nothing pending instead of racing the first's DDL.
pub fn run_migrations(conn: &mut PgConnection) -> Result<Vec<String>, StoreError> {
    use diesel::RunQueryDsl;
    const MIGRATION_LOCK: i64 = 0x6275_6c6b_6d69_6772; // "bulkmigr"
    diesel::sql_query(format!("SELECT pg_advisory_lock({MIGRATION_LOCK})")).execute(conn)?;
    let applied = conn
        .run_pending_migrations(MIGRATIONS)
        .map(|versions| versions.iter().map(ToString::to_string).collect())
        .map_err(|e| StoreError::Unavailable(format!("migrations failed: {e}")));
    // Under the same lock: concurrent changes to one database's ACL fail otherwise.
    let locked = lock_down_control_database(conn);
    diesel::sql_query(format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})")).execute(conn)?;
    let applied = applied?;
    locked?;
    Ok(applied)
}

/// PostgreSQL lets every role connect to a new database (CONNECT and TEMPORARY for PUBLIC):
/// on a server that also hosts tenants' environments, their credentials would reach the control
/// database. Revokes both from PUBLIC; the roles Bulkhead connects with keep theirs (owner,
/// superuser, or an explicit grant).
pub fn lock_down_control_database(conn: &mut PgConnection) -> Result<(), StoreError> {
    use diesel::RunQueryDsl;
    diesel::sql_query(
        "DO $bk$BEGIN \
         PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('bulkhead.database_acl'), \
           pg_catalog.hashtext(pg_catalog.current_database())); \
         EXECUTE pg_catalog.format('REVOKE CONNECT, TEMPORARY ON DATABASE %I FROM PUBLIC', \
           pg_catalog.current_database()); END$bk$",
    )
    .execute(conn)?;
    Ok(())
}

/// Connections for the API's per-request path (the bearer and the route's tenant): queries run
/// on the request's own task over tokio-postgres, without a handoff to the blocking pool, and
/// independent ones are pipelined on one connection.
pub type AsyncPgPool = diesel_async::pooled_connection::deadpool::Pool<AsyncPgConnection>;
pub use diesel_async::AsyncPgConnection;
pub type AsyncPgConn = diesel_async::pooled_connection::deadpool::Object<AsyncPgConnection>;

/// Builds the request-path pool; connections open on first use, each with the same statement
/// timeout as the blocking pool's and generic plans for its prepared statements.
///
/// TLS follows the URL's `sslmode`: `disable` and `prefer` connect in plain text (`prefer` does
/// not try TLS here, unlike libpq); `require`, `verify-ca` and `verify-full` connect over rustls
/// and verify the server's certificate against `sslrootcert` when the URL names one, else the
/// system's roots (stricter than libpq's `require`).
pub fn connect_async(database_url: &str, size: usize) -> Result<AsyncPgPool, StoreError> {
    use diesel_async::pooled_connection::{
        AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
    };
    let unusable =
        |e: String| StoreError::Unavailable(format!("DATABASE_URL is not usable here: {e}"));
    let (url, root_cert) = tokio_postgres_url(database_url).map_err(unusable)?;
    let mut settings: tokio_postgres::Config = url
        .parse()
        .map_err(|e: tokio_postgres::Error| unusable(e.to_string()))?;
    if settings.get_connect_timeout().is_none() {
        settings.connect_timeout(Duration::from_secs(5));
    }
    let tls = match settings.get_ssl_mode() {
        tokio_postgres::config::SslMode::Disable | tokio_postgres::config::SslMode::Prefer => None,
        _ => Some(tls_config(root_cert.as_deref()).map_err(unusable)?),
    };
    let mut manager_config = ManagerConfig::<AsyncPgConnection>::default();
    // A broken connection fails its query and is dropped; no extra round trip per checkout.
    manager_config.recycling_method = RecyclingMethod::Fast;
    manager_config.custom_setup =
        Box::new(move |_| Box::pin(establish_async(settings.clone(), tls.clone())));
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(
        database_url,
        manager_config,
    );
    diesel_async::pooled_connection::deadpool::Pool::builder(manager)
        .max_size(size)
        .wait_timeout(Some(Duration::from_secs(5)))
        .create_timeout(Some(Duration::from_secs(5)))
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .map_err(|e| StoreError::Unavailable(e.to_string()))
}

/// A libpq URL as tokio-postgres reads it, and the `sslrootcert` it named. tokio-postgres
/// knows `sslmode` only as disable/prefer/require and no certificate files: `verify-ca` and
/// `verify-full` become `require` (which verifies here), `allow` becomes `prefer`, and client
/// certificates are refused rather than silently ignored.
pub fn tokio_postgres_url(url: &str) -> Result<(String, Option<String>), String> {
    let parsed = crate::dburl::ConnUrl::parse(url).map_err(|e| e.to_string())?;
    let params = parsed.params();
    if params.is_empty() {
        return Ok((url.to_owned(), None));
    }
    let mut root_cert = None;
    let mut kept = Vec::new();
    for (key, value) in params {
        match (key.as_str(), value.as_str()) {
            ("sslmode", "verify-ca" | "verify-full") => kept.push((key, "require".to_owned())),
            ("sslmode", "allow") => kept.push((key, "prefer".to_owned())),
            ("sslrootcert", _) => root_cert = Some(value),
            ("sslcert" | "sslkey", _) => {
                return Err(format!(
                    "{key}: client certificates are not supported; authenticate with a password"
                ));
            }
            _ => kept.push((key, value)),
        }
    }
    Ok((parsed.with_params(&kept).as_str().to_owned(), root_cert))
}

async fn establish_async(
    settings: tokio_postgres::Config,
    tls: Option<rustls::ClientConfig>,
) -> diesel::ConnectionResult<AsyncPgConnection> {
    use diesel::ConnectionError;
    use diesel_async::SimpleAsyncConnection;
    let bad = |e: tokio_postgres::Error| ConnectionError::BadConnection(e.to_string());
    let mut conn = match tls {
        None => {
            let (client, connection) =
                settings.connect(tokio_postgres::NoTls).await.map_err(bad)?;
            AsyncPgConnection::try_from_client_and_connection(client, connection).await?
        }
        Some(tls) => {
            let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls);
            let (client, connection) = settings.connect(tls).await.map_err(bad)?;
            AsyncPgConnection::try_from_client_and_connection(client, connection).await?
        }
    };
    // This pool runs only lookups by primary or unique key. PostgreSQL otherwise keeps
    // choosing a custom plan for them, i.e. plans every execution again: under load that
    // planning was ~45 % of the server's CPU (perf, BENCHMARKS.md).
    conn.batch_execute("SET statement_timeout = '10s'; SET plan_cache_mode = force_generic_plan")
        .await
        .map_err(|e| ConnectionError::BadConnection(e.to_string()))?;
    Ok(conn)
}

/// Why [`open_session`] got no session.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The server (or the network) refused; `as_db_error()` holds the server's reason.
    #[error("{0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("{0}")]
    Tls(String),
}

/// A plain tokio-postgres session (no statements run after the handshake), with TLS chosen
/// by `settings`' `sslmode` as in [`connect_async`]. Its connection is driven by a task on the
/// current runtime; the handle finishes once the client is dropped and the server was told
/// goodbye. Used where a session itself is the point, such as the isolation probes.
pub async fn open_session(
    settings: &tokio_postgres::Config,
) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), SessionError> {
    use tokio_postgres::config::SslMode;
    Ok(match settings.get_ssl_mode() {
        SslMode::Disable | SslMode::Prefer => {
            let (client, connection) = settings.connect(tokio_postgres::NoTls).await?;
            (client, tokio::spawn(async move { drop(connection.await) }))
        }
        _ => {
            static SYSTEM_ROOTS: std::sync::OnceLock<Result<rustls::ClientConfig, String>> =
                std::sync::OnceLock::new();
            let tls = SYSTEM_ROOTS
                .get_or_init(|| tls_config(None))
                .clone()
                .map_err(SessionError::Tls)?;
            let (client, connection) = settings
                .connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls))
                .await?;
            (client, tokio::spawn(async move { drop(connection.await) }))
        }
    })
}

/// rustls settings that trust `root_cert` (a PEM file) when given, else the system's roots.
fn tls_config(root_cert: Option<&str>) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    match root_cert {
        Some(path) => {
            for cert in CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("sslrootcert {path}: {e}"))?
            {
                let cert = cert.map_err(|e| format!("sslrootcert {path}: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("sslrootcert {path}: {e}"))?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                // A certificate the store cannot parse is skipped, as libpq and browsers do.
                let _ = roots.add(cert);
            }
        }
    }
    if roots.is_empty() {
        return Err(match root_cert {
            Some(path) => format!("sslrootcert {path}: no certificate in the file"),
            None => "TLS to PostgreSQL: no trusted root certificates on this machine; name one \
                     with sslrootcert=<file>"
                .to_owned(),
        });
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|builder| builder.with_root_certificates(roots).with_no_client_auth())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_urls_become_tokio_postgres_urls() {
        let plain = "postgres://u@h:5432/db";
        assert_eq!(tokio_postgres_url(plain), Ok((plain.to_owned(), None)));
        assert_eq!(
            tokio_postgres_url(
                "postgres://u@h/db?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=x"
            ),
            Ok((
                "postgres://u@h/db?sslmode=require&application_name=x".to_owned(),
                Some("/etc/ca.pem".to_owned())
            ))
        );
        assert_eq!(
            tokio_postgres_url("postgres://u@h/db?sslmode=allow"),
            Ok(("postgres://u@h/db?sslmode=prefer".to_owned(), None))
        );
        let refused = tokio_postgres_url("postgres://u@h/db?sslcert=/c.pem").expect_err("sslcert");
        assert!(
            refused.starts_with("sslcert: client certificates"),
            "{refused}"
        );
        for url in [
            "postgres://u@h/db?sslmode=verify-ca",
            "postgres://u@h/db?sslmode=disable",
        ] {
            let (rewritten, _) = tokio_postgres_url(url).expect("rewritten");
            assert!(
                rewritten.parse::<tokio_postgres::Config>().is_ok(),
                "{rewritten}"
            );
        }
    }

    #[test]
    fn root_certificate_files_are_checked() {
        let missing = tls_config(Some("/nonexistent/ca.pem")).expect_err("missing file");
        assert!(
            missing.starts_with("sslrootcert /nonexistent/ca.pem"),
            "{missing}"
        );
        let dir = std::env::temp_dir().join(format!("bh-ca-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).expect("dir");
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "no certificates here\n").expect("write");
        let path = empty.to_string_lossy().into_owned();
        let none = tls_config(Some(&path)).expect_err("no certificate");
        assert!(none.contains("no certificate in the file"), "{none}");
        let ca = rcgen::generate_simple_self_signed(vec!["db.internal".to_owned()])
            .expect("certificate");
        let good = dir.join("ca.pem");
        std::fs::write(&good, ca.cert.pem()).expect("write");
        assert!(tls_config(Some(&good.to_string_lossy())).is_ok());
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
