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

/// Every pooled connection gets a statement timeout, so one slow query cannot hold a worker.
#[derive(Debug, Clone, Copy)]
struct SessionSettings;

impl CustomizeConnection<PgConnection, diesel::r2d2::Error> for SessionSettings {
    fn on_acquire(&self, conn: &mut PgConnection) -> Result<(), diesel::r2d2::Error> {
        use diesel::RunQueryDsl;
        diesel::sql_query("SET statement_timeout = '10s'")
            .execute(conn)
            .map(|_| ())
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
    let (server, rest) = database_url
        .rsplit_once('/')
        .ok_or_else(|| StoreError::Unavailable("DATABASE_URL has no database name".into()))?;
    let name = rest.split('?').next().unwrap_or_default();
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
    let mut maintenance = PgConnection::establish(&format!("{server}/postgres"))
        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
    diesel::sql_query(format!("CREATE DATABASE {name}")).execute(&mut maintenance)?;
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
    diesel::sql_query(format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})")).execute(conn)?;
    applied
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
/// not try TLS here, unlike libpq), `require` connects over rustls and verifies the server's
/// certificate against the system's roots (stricter than libpq's `require`).
pub fn connect_async(database_url: &str, size: usize) -> Result<AsyncPgPool, StoreError> {
    use diesel_async::pooled_connection::{
        AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
    };
    let mut settings: tokio_postgres::Config = database_url
        .parse()
        .map_err(|e| StoreError::Unavailable(format!("DATABASE_URL is not usable here: {e}")))?;
    if settings.get_connect_timeout().is_none() {
        settings.connect_timeout(Duration::from_secs(5));
    }
    let mut manager_config = ManagerConfig::<AsyncPgConnection>::default();
    // A broken connection fails its query and is dropped; no extra round trip per checkout.
    manager_config.recycling_method = RecyclingMethod::Fast;
    manager_config.custom_setup = Box::new(move |_| Box::pin(establish_async(settings.clone())));
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

async fn establish_async(
    settings: tokio_postgres::Config,
) -> diesel::ConnectionResult<AsyncPgConnection> {
    use diesel::ConnectionError;
    use diesel_async::SimpleAsyncConnection;
    let bad = |e: tokio_postgres::Error| ConnectionError::BadConnection(e.to_string());
    let mut conn = match settings.get_ssl_mode() {
        tokio_postgres::config::SslMode::Disable | tokio_postgres::config::SslMode::Prefer => {
            let (client, connection) =
                settings.connect(tokio_postgres::NoTls).await.map_err(bad)?;
            AsyncPgConnection::try_from_client_and_connection(client, connection).await?
        }
        _ => {
            let tls = tokio_postgres_rustls::MakeRustlsConnect::new(verified_tls_config()?);
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
            let tls = verified_tls_config().map_err(|e| SessionError::Tls(e.to_string()))?;
            let (client, connection) = settings
                .connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls))
                .await?;
            (client, tokio::spawn(async move { drop(connection.await) }))
        }
    })
}

fn verified_tls_config() -> diesel::ConnectionResult<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        // A certificate the store cannot parse is skipped, as libpq and browsers do.
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(diesel::ConnectionError::BadConnection(
            "sslmode=require: no trusted root certificates found on this machine".into(),
        ));
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|builder| builder.with_root_certificates(roots).with_no_client_auth())
        .map_err(|e| diesel::ConnectionError::BadConnection(e.to_string()))
}
