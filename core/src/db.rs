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
