//! The metering pass: measures every environment on its target (one query per database for all
//! tenants), turns the stretch since the last pass into samples and priced charges, checks
//! budgets, and records it all in one control-database transaction under the metering lock.
//! Also the connection tick that counts the environments' sessions between passes.

use bulkhead_core::config::metering::MeteringConfig;
use bulkhead_core::db::PgPool;
use bulkhead_core::dburl::ConnUrl;
use bulkhead_core::domain::Isolation;
use bulkhead_core::metering::{self, Measurement, Metered, Pricer};
use bulkhead_core::plan;
use bulkhead_core::pricing::Catalog;
use bulkhead_core::store::{
    self,
    metering::{PassCounts, PassState, Trigger},
};
use chrono::{DateTime, Utc};
use diesel::connection::SimpleConnection;
use diesel::sql_types::{Array, BigInt, Text};
use diesel::{Connection, PgConnection, QueryableByName, RunQueryDsl};
use rust_decimal::Decimal;
use std::collections::HashMap;
use uuid::Uuid;

/// Where the pass measures: the pooled database (its schemas) and the dedicated server.
#[derive(Clone)]
pub struct MeterTargets {
    pub shared_admin_url: String,
    pub pooled_database: String,
    pub dedicated_admin_url: String,
}

impl MeterTargets {
    pub fn from_config(worker: &bulkhead_core::config::WorkerConfig) -> Self {
        Self {
            shared_admin_url: worker.shared_admin_url.clone(),
            pooled_database: worker.pooled_database.clone(),
            dedicated_admin_url: worker.dedicated_admin_url.clone(),
        }
    }

    fn pooled_url(&self) -> Result<String, MeterError> {
        Ok(ConnUrl::parse(&self.shared_admin_url)
            .map_err(|e| MeterError::Target(format!("BULKHEAD_TARGET_SHARED_URL: {e}")))?
            .with_database(&self.pooled_database)
            .as_str()
            .to_owned())
    }

    /// Whether shared and dedicated environments live on one server (count sessions once).
    fn one_server(&self) -> bool {
        let at = |url: &str| ConnUrl::parse(url).ok().map(|u| (u.host(), u.port()));
        at(&self.shared_admin_url) == at(&self.dedicated_admin_url)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MeterError {
    #[error("control database: {0}")]
    Store(#[from] store::StoreError),
    #[error("target: {0}")]
    Target(String),
    #[error("{0}")]
    Price(#[from] metering::NoPrice),
}

impl From<diesel::result::Error> for MeterError {
    fn from(error: diesel::result::Error) -> Self {
        Self::Store(error.into())
    }
}

/// What one pass did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassReport {
    pub id: Uuid,
    pub state: PassState,
    pub counts: PassCounts,
    pub error: Option<String>,
}

fn connect(url: &str, what: &str) -> Result<PgConnection, MeterError> {
    let mut conn = PgConnection::establish(url).map_err(|e| {
        MeterError::Target(format!(
            "{what} ({}): {e}",
            bulkhead_core::dburl::location(url)
        ))
    })?;
    // Bounded waits: a tenant holding a lock on its own table must not stall the pass.
    conn.batch_execute(
        "SET statement_timeout = '60s'; SET lock_timeout = '1s'; \
         SET search_path = pg_catalog, pg_temp; SET application_name = 'bulkhead-metering'",
    )
    .map_err(|e| MeterError::Target(format!("{what}: {e}")))?;
    Ok(conn)
}

#[derive(QueryableByName)]
struct SizeRow {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = BigInt)]
    bytes: i64,
    #[diesel(sql_type = BigInt)]
    rows_read: i64,
    #[diesel(sql_type = BigInt)]
    rows_written: i64,
}

#[derive(QueryableByName)]
struct SessionRow {
    #[diesel(sql_type = Text)]
    role: String,
    #[diesel(sql_type = BigInt)]
    sessions: i64,
}

/// Every shared environment's schema in one query: total size of its tables (with their
/// indexes and TOAST), materialized views and sequences; rows read (sequential + index
/// fetches) and written (inserted, updated, deleted) from `pg_stat_all_tables`.
const SCHEMA_SIZES: &str = "SELECT n.nspname::text AS name, \
       coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint AS bytes, \
       coalesce(sum(coalesce(s.seq_tup_read, 0) + coalesce(s.idx_tup_fetch, 0)), 0)::bigint AS rows_read, \
       coalesce(sum(coalesce(s.n_tup_ins, 0) + coalesce(s.n_tup_upd, 0) + coalesce(s.n_tup_del, 0)), 0)::bigint AS rows_written \
     FROM pg_namespace n \
     LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relkind IN ('r', 'm', 'S') \
     LEFT JOIN pg_stat_all_tables s ON s.relid = c.oid \
     WHERE n.nspname = ANY($1) GROUP BY n.nspname";

/// Every dedicated environment's database in one query: its size, and rows returned and
/// written from `pg_stat_database`.
const DATABASE_SIZES: &str = "SELECT d.datname::text AS name, pg_database_size(d.oid)::bigint AS bytes, \
       coalesce(s.tup_returned, 0)::bigint AS rows_read, \
       coalesce(s.tup_inserted + s.tup_updated + s.tup_deleted, 0)::bigint AS rows_written \
     FROM pg_database d LEFT JOIN pg_stat_database s ON s.datid = d.oid \
     WHERE d.datname = ANY($1)";

/// Sessions of the given roles, in one query per server.
const SESSIONS: &str = "SELECT usename::text AS role, count(*)::bigint AS sessions \
     FROM pg_stat_activity WHERE usename = ANY($1) GROUP BY usename";

fn sessions_by_environment(
    conn: &mut PgConnection,
    roles: &HashMap<String, Uuid>,
) -> Result<HashMap<Uuid, i32>, MeterError> {
    let names: Vec<&String> = roles.keys().collect();
    let rows: Vec<SessionRow> = diesel::sql_query(SESSIONS)
        .bind::<Array<Text>, _>(names)
        .load(conn)
        .map_err(|e| MeterError::Target(format!("counting sessions: {e}")))?;
    let mut out = HashMap::new();
    for row in rows {
        if let Some(id) = roles.get(&row.role) {
            *out.entry(*id).or_insert(0) += i32::try_from(row.sessions).unwrap_or(i32::MAX);
        }
    }
    Ok(out)
}

/// The roles of environments: owner and app role name → environment.
fn roles_of(envs: impl Iterator<Item = (Uuid, Isolation)>, pooled: &str) -> HashMap<String, Uuid> {
    let mut roles = HashMap::new();
    for (id, isolation) in envs {
        let names = plan::names(id, isolation, pooled);
        roles.insert(names.owner_role, id);
        roles.insert(names.app_role, id);
    }
    roles
}

/// Counts every standing environment's sessions now (one query per server) and adds the
/// counts to the tallies the next pass averages.
pub fn tick(pool: &PgPool, targets: &MeterTargets) -> Result<usize, MeterError> {
    let mut control = pool.get().map_err(|e| MeterError::Store(e.into()))?;
    let envs = store::metering::environments_to_meter(&mut control)?;
    if envs.is_empty() {
        return Ok(0);
    }
    let counts = count_sessions(targets, &envs)?;
    let counts: Vec<(Uuid, i32)> = envs
        .iter()
        .map(|e| (e.id, counts.get(&e.id).copied().unwrap_or(0)))
        .collect();
    store::metering::tally_connections(&mut control, &counts)?;
    Ok(counts.len())
}

fn count_sessions(
    targets: &MeterTargets,
    envs: &[Metered],
) -> Result<HashMap<Uuid, i32>, MeterError> {
    let all = roles_of(
        envs.iter().map(|e| (e.id, e.isolation)),
        &targets.pooled_database,
    );
    if targets.one_server() {
        let mut conn = connect(&targets.shared_admin_url, "pooled server")?;
        return sessions_by_environment(&mut conn, &all);
    }
    let (shared, dedicated): (Vec<&Metered>, Vec<&Metered>) =
        envs.iter().partition(|e| e.isolation == Isolation::Shared);
    let mut out = HashMap::new();
    for (url, group, what) in [
        (&targets.shared_admin_url, shared, "pooled server"),
        (&targets.dedicated_admin_url, dedicated, "dedicated server"),
    ] {
        if group.is_empty() {
            continue;
        }
        let roles = roles_of(
            group.iter().map(|e| (e.id, e.isolation)),
            &targets.pooled_database,
        );
        let mut conn = connect(url, what)?;
        out.extend(sessions_by_environment(&mut conn, &roles)?);
    }
    Ok(out)
}

/// Storage and activity of every environment: one query on the pooled database, one on the
/// dedicated server.
fn measure(
    targets: &MeterTargets,
    envs: &[Metered],
) -> Result<HashMap<Uuid, Measurement>, MeterError> {
    let mut out: HashMap<Uuid, Measurement> = HashMap::new();
    for isolation in [Isolation::Shared, Isolation::Dedicated] {
        let names: HashMap<String, Uuid> = envs
            .iter()
            .filter(|e| e.isolation == isolation && e.destroyed_at.is_none())
            .map(|e| {
                let n = plan::names(e.id, isolation, &targets.pooled_database);
                let object = if isolation == Isolation::Shared {
                    n.schema
                } else {
                    n.database
                };
                (object, e.id)
            })
            .collect();
        if names.is_empty() {
            continue;
        }
        let (url, query, what) = match isolation {
            Isolation::Shared => (targets.pooled_url()?, SCHEMA_SIZES, "pooled database"),
            Isolation::Dedicated => (
                targets.dedicated_admin_url.clone(),
                DATABASE_SIZES,
                "dedicated server",
            ),
        };
        let mut conn = connect(&url, what)?;
        let all: Vec<&String> = names.keys().collect();
        let rows: Vec<SizeRow> = match diesel::sql_query(query)
            .bind::<Array<Text>, _>(&all)
            .load(&mut conn)
        {
            Ok(rows) => rows,
            Err(error) => {
                // One environment can hold a lock the size functions wait for (its own table,
                // locked ACCESS EXCLUSIVE) past `lock_timeout`: measure one by one, so only
                // that one goes unmeasured (its last size stands in) and the pass goes on.
                tracing::warn!(%error, "metering: measuring the {what} at once failed; one by one");
                let mut rows = Vec::new();
                for name in all {
                    match diesel::sql_query(query)
                        .bind::<Array<Text>, _>(vec![name])
                        .load::<SizeRow>(&mut conn)
                    {
                        Ok(found) => rows.extend(found),
                        Err(error) => {
                            tracing::warn!(%error, object = %name, "metering: not measured this pass");
                        }
                    }
                }
                rows
            }
        };
        for row in rows {
            if let Some(id) = names.get(&row.name) {
                out.insert(
                    *id,
                    Measurement {
                        storage_bytes: Some(row.bytes),
                        rows_read_total: Some(row.rows_read),
                        rows_written_total: Some(row.rows_written),
                        ..Measurement::default()
                    },
                );
            }
        }
    }
    Ok(out)
}

/// Runs one pass now. A pass that finds another one running is `skipped`; one that fails is
/// recorded `failed` with its error and changes nothing (the next pass meters the stretch).
pub fn run_pass(
    pool: &PgPool,
    targets: &MeterTargets,
    config: &MeteringConfig,
    catalog: &Catalog,
    trigger: Trigger,
) -> Result<PassReport, MeterError> {
    let mut conn = pool.get().map_err(|e| MeterError::Store(e.into()))?;
    let id = store::metering::start_pass(&mut conn, trigger)?;
    // The targets are measured before the control transaction opens: a slow target (or a
    // tenant holding locks) holds no control-database transaction open.
    let outcome = measure_all(&mut conn, targets).and_then(|(measured, sessions)| {
        conn.build_transaction()
            .run(|conn| pass_in(conn, id, targets, config, catalog, measured, &sessions))
    });
    let (state, counts, error) = match outcome {
        Ok(Some(counts)) => (PassState::Succeeded, counts, None),
        Ok(None) => (
            PassState::Skipped,
            PassCounts::default(),
            Some("another metering pass was running".to_owned()),
        ),
        Err(error) => (
            PassState::Failed,
            PassCounts::default(),
            Some(error.to_string()),
        ),
    };
    store::metering::finish_pass(&mut conn, id, state, &counts, error.as_deref())?;
    Ok(PassReport {
        id,
        state,
        counts,
        error,
    })
}

type Measured = (HashMap<Uuid, Measurement>, HashMap<Uuid, i32>);

/// Storage and activity of every environment with a stretch to meter, and its sessions now.
fn measure_all(conn: &mut PgConnection, targets: &MeterTargets) -> Result<Measured, MeterError> {
    let envs = store::metering::environments_to_meter(conn)?;
    let measured = measure(targets, &envs)?;
    let standing: Vec<Metered> = envs
        .iter()
        .filter(|e| e.destroyed_at.is_none())
        .cloned()
        .collect();
    let sessions = if standing.is_empty() {
        HashMap::new()
    } else {
        count_sessions(targets, &standing)?
    };
    Ok((measured, sessions))
}

fn pass_in(
    conn: &mut PgConnection,
    pass_id: Uuid,
    targets: &MeterTargets,
    config: &MeteringConfig,
    catalog: &Catalog,
    mut measured: HashMap<Uuid, Measurement>,
    sessions: &HashMap<Uuid, i32>,
) -> Result<Option<PassCounts>, MeterError> {
    if !store::metering::try_lock(conn)? {
        return Ok(None);
    }
    // Read again under the lock: what another pass metered meanwhile is not metered twice; an
    // environment ready since the measurement has no measurement yet (zero storage until the
    // next pass).
    let envs = store::metering::environments_to_meter(conn)?;
    let store::metering::Tallies {
        ticks,
        pooled_metered_until: pooled_until,
        by_environment: tallies,
    } = store::metering::take_tallies(conn)?;
    let now: DateTime<Utc> = store::metering::now(conn)?;
    // The pass's own count is one more tick: peak and average over the ticks since the last pass.
    let ticks = Decimal::from(ticks + 1);
    let mut samples = Vec::new();
    for env in &envs {
        let m = measured.entry(env.id).or_default();
        let now_count = sessions.get(&env.id).copied().unwrap_or(0);
        let (peak, total) = tallies.get(&env.id).copied().unwrap_or((0, 0));
        m.connections_peak = peak.max(now_count);
        m.connections_avg = bulkhead_core::money::quantity(
            (Decimal::from(total) + Decimal::from(now_count)) / ticks,
        );
        if let Some(sample) = metering::sample(env, m, now) {
            let read_total = m.rows_read_total.unwrap_or(sample.rows_read_total);
            let written_total = m.rows_written_total.unwrap_or(sample.rows_written_total);
            samples.push((sample, read_total, written_total));
        }
    }
    let pricer = Pricer {
        catalog,
        currency: &config.currency,
    };
    let mut charges = Vec::new();
    for (sample, _, _) in &samples {
        charges.extend(pricer.sample_charges(sample)?);
    }
    let only_samples: Vec<metering::Sample> = samples.iter().map(|s| s.0.clone()).collect();
    let shared_start = only_samples
        .iter()
        .filter(|s| s.isolation == Isolation::Shared)
        .map(|s| s.period_start)
        .min();
    let pooled_start = pooled_until.or(shared_start);
    let pooled_end = pooled_start.map(|start| metering::stretch_end(start, now));
    if let (Some(start), Some(end)) = (pooled_start, pooled_end) {
        let from = metering::pooled_resource(&targets.pooled_database);
        charges.extend(pricer.pooled_charges(&only_samples, start, end, &from)?);
    }
    store::metering::record(conn, pass_id, &samples, &charges, pooled_end)?;
    store::budgets::audit_crossings(conn, now, pass_id)?;
    Ok(Some(PassCounts {
        measured_at: Some(now),
        environments: envs.len(),
        samples: samples.len(),
        charges: charges.len(),
    }))
}
