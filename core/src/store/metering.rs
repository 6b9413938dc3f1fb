//! Metering's tables: passes (status), cursors, connection tallies, append-only usage samples,
//! hourly charges and their daily rollups, written by one pass in one transaction.

use super::StoreError;
use crate::domain::Isolation;
use crate::metering::{Charge, Cursor, Metered, Sample};
use chrono::{DateTime, Utc};
use diesel::sql_types::{
    Array, BigInt, Bool, Integer, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid,
};
use diesel::{PgConnection, QueryableByName, RunQueryDsl};
use rust_decimal::Decimal;
use std::collections::HashMap;
use std::str::FromStr;
use uuid::Uuid;

/// The transaction advisory lock one pass holds while it measures and writes: a second pass
/// that starts meanwhile is `skipped`, and cannot meter the same stretch twice (the samples'
/// `UNIQUE (environment_id, period_start)` would refuse it anyway).
pub const METERING_LOCK: i64 = 0x6275_6c6b_6d65_7465; // "bulkmete"

/// How a pass was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Schedule,
    Manual,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Schedule => "schedule",
            Self::Manual => "manual",
        }
    }
}

/// Where a pass is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PassState {
    Running,
    Succeeded,
    Failed,
    /// Another pass held the metering lock.
    Skipped,
}

impl PassState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
        }
    }

    fn parse(raw: &str) -> Self {
        match raw {
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            "skipped" => Self::Skipped,
            _ => Self::Running,
        }
    }
}

/// One pass as the status list shows it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Pass {
    pub id: Uuid,
    pub trigger: String,
    pub state: PassState,
    pub started_at: DateTime<Utc>,
    pub measured_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub environments: i32,
    pub samples: i32,
    pub charges: i32,
    pub error: Option<String>,
}

/// Records a pass as `running`, in its own transaction (so a failure later stays visible).
pub fn start_pass(conn: &mut PgConnection, trigger: Trigger) -> Result<Uuid, StoreError> {
    let id = Uuid::now_v7();
    diesel::sql_query("INSERT INTO meter_passes (id, trigger, state) VALUES ($1, $2, 'running')")
        .bind::<SqlUuid, _>(id)
        .bind::<Text, _>(trigger.as_str())
        .execute(conn)?;
    Ok(id)
}

/// What a pass did, for its row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassCounts {
    pub measured_at: Option<DateTime<Utc>>,
    pub environments: usize,
    pub samples: usize,
    pub charges: usize,
}

pub fn finish_pass(
    conn: &mut PgConnection,
    id: Uuid,
    state: PassState,
    counts: &PassCounts,
    error: Option<&str>,
) -> Result<(), StoreError> {
    let n = |v: usize| i32::try_from(v).unwrap_or(i32::MAX);
    diesel::sql_query(
        "UPDATE meter_passes SET state = $2, finished_at = now(), measured_at = $3, \
         environments = $4, samples = $5, charges = $6, error = $7 WHERE id = $1",
    )
    .bind::<SqlUuid, _>(id)
    .bind::<Text, _>(state.as_str())
    .bind::<Nullable<Timestamptz>, _>(counts.measured_at)
    .bind::<Integer, _>(n(counts.environments))
    .bind::<Integer, _>(n(counts.samples))
    .bind::<Integer, _>(n(counts.charges))
    .bind::<Nullable<Text>, _>(error)
    .execute(conn)?;
    Ok(())
}

/// The most recent passes, newest first.
pub fn recent_passes(conn: &mut PgConnection, limit: i64) -> Result<Vec<Pass>, StoreError> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = SqlUuid)]
        id: Uuid,
        #[diesel(sql_type = Text)]
        trigger: String,
        #[diesel(sql_type = Text)]
        state: String,
        #[diesel(sql_type = Timestamptz)]
        started_at: DateTime<Utc>,
        #[diesel(sql_type = Nullable<Timestamptz>)]
        measured_at: Option<DateTime<Utc>>,
        #[diesel(sql_type = Nullable<Timestamptz>)]
        finished_at: Option<DateTime<Utc>>,
        #[diesel(sql_type = Integer)]
        environments: i32,
        #[diesel(sql_type = Integer)]
        samples: i32,
        #[diesel(sql_type = Integer)]
        charges: i32,
        #[diesel(sql_type = Nullable<Text>)]
        error: Option<String>,
    }
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT id, trigger, state, started_at, measured_at, finished_at, environments, samples, \
         charges, error FROM meter_passes ORDER BY started_at DESC LIMIT $1",
    )
    .bind::<BigInt, _>(limit)
    .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|r| Pass {
            id: r.id,
            trigger: r.trigger,
            state: PassState::parse(&r.state),
            started_at: r.started_at,
            measured_at: r.measured_at,
            finished_at: r.finished_at,
            environments: r.environments,
            samples: r.samples,
            charges: r.charges,
            error: r.error,
        })
        .collect())
}

/// When the last pass that succeeded finished, if any.
pub fn last_success(conn: &mut PgConnection) -> Result<Option<DateTime<Utc>>, StoreError> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Nullable<Timestamptz>)]
        at: Option<DateTime<Utc>>,
    }
    let row: Row = diesel::sql_query(
        "SELECT max(finished_at) AS at FROM meter_passes WHERE state = 'succeeded'",
    )
    .get_result(conn)?;
    Ok(row.at)
}

/// Passes that failed in the last 24 hours.
pub fn failed_last_day(conn: &mut PgConnection) -> Result<i64, StoreError> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let row: Row = diesel::sql_query(
        "SELECT count(*) AS n FROM meter_passes WHERE state = 'failed' \
         AND started_at > now() - interval '24 hours'",
    )
    .get_result(conn)?;
    Ok(row.n)
}

/// Takes the metering lock for the caller's transaction; `false` if another pass holds it.
pub fn try_lock(conn: &mut PgConnection) -> Result<bool, StoreError> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Bool)]
        locked: bool,
    }
    let row: Row = diesel::sql_query("SELECT pg_try_advisory_xact_lock($1) AS locked")
        .bind::<BigInt, _>(METERING_LOCK)
        .get_result(conn)?;
    Ok(row.locked)
}

/// The database's clock: the instant a pass measures "now" at.
pub fn now(conn: &mut PgConnection) -> Result<DateTime<Utc>, StoreError> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Timestamptz)]
        at: DateTime<Utc>,
    }
    let row: Row = diesel::sql_query("SELECT clock_timestamp() AS at").get_result(conn)?;
    Ok(row.at)
}

/// Every environment with a stretch left to meter: it became ready, and is either not
/// destroyed or destroyed after its cursor. One query, whatever the number of environments.
/// An environment already `destroyed` whose destroy job has not concluded yet (the state and
/// the job's `finished_at` commit in two transactions) waits for the next pass: metered now,
/// its last stretch would end at this pass's clock, past the destruction the job then records.
pub fn environments_to_meter(conn: &mut PgConnection) -> Result<Vec<Metered>, StoreError> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = SqlUuid)]
        id: Uuid,
        #[diesel(sql_type = SqlUuid)]
        tenant_id: Uuid,
        #[diesel(sql_type = Text)]
        isolation: String,
        #[diesel(sql_type = Text)]
        region: String,
        #[diesel(sql_type = Jsonb)]
        cost_tags: serde_json::Value,
        #[diesel(sql_type = Nullable<Timestamptz>)]
        ready_at: Option<DateTime<Utc>>,
        #[diesel(sql_type = Nullable<Timestamptz>)]
        destroyed_at: Option<DateTime<Utc>>,
        #[diesel(sql_type = Nullable<Timestamptz>)]
        metered_until: Option<DateTime<Utc>>,
        #[diesel(sql_type = Nullable<BigInt>)]
        storage_bytes: Option<i64>,
        #[diesel(sql_type = Nullable<BigInt>)]
        rows_read_total: Option<i64>,
        #[diesel(sql_type = Nullable<BigInt>)]
        rows_written_total: Option<i64>,
        #[diesel(sql_type = Nullable<Array<Timestamptz>>)]
        stops_from: Option<Vec<DateTime<Utc>>>,
        #[diesel(sql_type = Nullable<Array<Nullable<Timestamptz>>>)]
        stops_to: Option<Vec<Option<DateTime<Utc>>>>,
    }
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT e.id, e.tenant_id, e.isolation, t.region, e.cost_tags, r.ready_at, d.destroyed_at, \
                c.metered_until, c.storage_bytes, c.rows_read_total, c.rows_written_total, \
                st.stops_from, st.stops_to \
         FROM environments e \
         JOIN tenants t ON t.id = e.tenant_id \
         LEFT JOIN meter_cursors c ON c.environment_id = e.id \
         CROSS JOIN LATERAL (SELECT min(j.finished_at) AS ready_at FROM jobs j \
             WHERE j.environment_id = e.id AND j.operation = 'apply' AND j.state = 'succeeded') r \
         CROSS JOIN LATERAL (SELECT max(j.finished_at) AS destroyed_at FROM jobs j \
             WHERE j.environment_id = e.id AND j.operation = 'destroy' AND j.state = 'succeeded') d \
         CROSS JOIN LATERAL (SELECT array_agg(s.stopped_at ORDER BY s.stopped_at) AS stops_from, \
                 array_agg(s.started_at ORDER BY s.stopped_at) AS stops_to \
             FROM environment_stops s WHERE s.environment_id = e.id \
               AND (s.started_at IS NULL OR c.metered_until IS NULL OR s.started_at > c.metered_until)) st \
         WHERE (e.state <> 'destroyed' OR c.environment_id IS NULL OR c.metered_until < e.updated_at) \
           AND r.ready_at IS NOT NULL \
           AND NOT (e.state = 'destroyed' AND d.destroyed_at IS NULL) \
           AND (d.destroyed_at IS NULL OR c.metered_until IS NULL OR d.destroyed_at > c.metered_until) \
         ORDER BY e.id",
    )
    .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|r| Metered {
            id: r.id,
            tenant_id: r.tenant_id,
            isolation: if r.isolation == "dedicated" {
                Isolation::Dedicated
            } else {
                Isolation::Shared
            },
            region: r.region,
            cost_tags: r.cost_tags,
            ready_at: r.ready_at,
            destroyed_at: r.destroyed_at,
            cursor: r.metered_until.map(|metered_until| Cursor {
                metered_until,
                storage_bytes: r.storage_bytes.unwrap_or(0),
                rows_read_total: r.rows_read_total.unwrap_or(0),
                rows_written_total: r.rows_written_total.unwrap_or(0),
            }),
            stops: r
                .stops_from
                .unwrap_or_default()
                .into_iter()
                .zip(r.stops_to.unwrap_or_default())
                .collect(),
        })
        .collect())
}

/// Adds one tick of connection counts (environment → connections now) to the tallies; counts
/// of roles that are not this installation's environments are ignored.
pub fn tally_connections(
    conn: &mut PgConnection,
    counts: &[(Uuid, i32)],
) -> Result<(), StoreError> {
    let (ids, ns): (Vec<Uuid>, Vec<i32>) = counts.iter().copied().unzip();
    conn.build_transaction().run(|conn| {
        diesel::sql_query(
            "INSERT INTO meter_connection_tallies AS t (environment_id, peak, total) \
             SELECT u.id, u.n, u.n FROM unnest($1::uuid[], $2::int[]) AS u(id, n) \
             JOIN environments e ON e.id = u.id \
             ON CONFLICT (environment_id) DO UPDATE \
             SET peak = greatest(t.peak, excluded.peak), total = t.total + excluded.total",
        )
        .bind::<Array<SqlUuid>, _>(&ids)
        .bind::<Array<Integer>, _>(&ns)
        .execute(conn)?;
        diesel::sql_query("UPDATE meter_state SET ticks = ticks + 1").execute(conn)?;
        Ok(())
    })
}

/// Connection counts since the last pass, and the pooled server's cursor.
#[derive(Debug, Clone, Default)]
pub struct Tallies {
    /// Ticks counted since the last pass.
    pub ticks: i32,
    pub pooled_metered_until: Option<DateTime<Utc>>,
    /// Environment → (peak, sum over the ticks).
    pub by_environment: HashMap<Uuid, (i32, i64)>,
}

/// The tallies since the last pass, reset to zero. Runs in the pass's transaction.
pub fn take_tallies(conn: &mut PgConnection) -> Result<Tallies, StoreError> {
    #[derive(QueryableByName)]
    struct State {
        #[diesel(sql_type = Integer)]
        ticks: i32,
        #[diesel(sql_type = Nullable<Timestamptz>)]
        pooled_metered_until: Option<DateTime<Utc>>,
    }
    #[derive(QueryableByName)]
    struct Tally {
        #[diesel(sql_type = SqlUuid)]
        environment_id: Uuid,
        #[diesel(sql_type = Integer)]
        peak: i32,
        #[diesel(sql_type = BigInt)]
        total: i64,
    }
    let state: State =
        diesel::sql_query("SELECT ticks, pooled_metered_until FROM meter_state FOR UPDATE")
            .get_result(conn)?;
    diesel::sql_query("UPDATE meter_state SET ticks = 0").execute(conn)?;
    let tallies: Vec<Tally> = diesel::sql_query(
        "DELETE FROM meter_connection_tallies RETURNING environment_id, peak, total",
    )
    .load(conn)?;
    Ok(Tallies {
        ticks: state.ticks,
        pooled_metered_until: state.pooled_metered_until,
        by_environment: tallies
            .into_iter()
            .map(|t| (t.environment_id, (t.peak, t.total)))
            .collect(),
    })
}

fn texts(values: impl Iterator<Item = Decimal>) -> Vec<String> {
    values.map(|d| d.to_string()).collect()
}

/// Writes a pass's samples (append-only), moves the cursors, adds the charges to their hours
/// and the daily rollups, and moves the pooled server's cursor. In the pass's transaction.
pub fn record(
    conn: &mut PgConnection,
    pass_id: Uuid,
    samples: &[(Sample, i64, i64)],
    charges: &[Charge],
    pooled_until: Option<DateTime<Utc>>,
) -> Result<(), StoreError> {
    let col = |f: &dyn Fn(&(Sample, i64, i64)) -> String| samples.iter().map(f).collect::<Vec<_>>();
    diesel::sql_query(
        "INSERT INTO usage_samples (pass_id, environment_id, tenant_id, isolation, region, \
             period_start, period_end, standing_seconds, storage_bytes, storage_measured, \
             connections_peak, connections_avg, rows_read, rows_written, cost_tags) \
         SELECT $1, * FROM unnest($2::uuid[], $3::uuid[], $4::text[], $5::text[], \
             $6::timestamptz[], $7::timestamptz[], $8::numeric[], $9::bigint[], $10::bool[], \
             $11::int[], $12::numeric[], $13::bigint[], $14::bigint[], $15::jsonb[])",
    )
    .bind::<SqlUuid, _>(pass_id)
    .bind::<Array<SqlUuid>, _>(
        samples
            .iter()
            .map(|s| s.0.environment_id)
            .collect::<Vec<_>>(),
    )
    .bind::<Array<SqlUuid>, _>(samples.iter().map(|s| s.0.tenant_id).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(col(&|s| s.0.isolation.as_str().to_owned()))
    .bind::<Array<Text>, _>(col(&|s| s.0.region.clone()))
    .bind::<Array<Timestamptz>, _>(samples.iter().map(|s| s.0.period_start).collect::<Vec<_>>())
    .bind::<Array<Timestamptz>, _>(samples.iter().map(|s| s.0.period_end).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(texts(samples.iter().map(|s| s.0.standing_seconds)))
    .bind::<Array<BigInt>, _>(
        samples
            .iter()
            .map(|s| s.0.storage_bytes)
            .collect::<Vec<_>>(),
    )
    .bind::<Array<Bool>, _>(
        samples
            .iter()
            .map(|s| s.0.storage_measured)
            .collect::<Vec<_>>(),
    )
    .bind::<Array<Integer>, _>(
        samples
            .iter()
            .map(|s| s.0.connections_peak)
            .collect::<Vec<_>>(),
    )
    .bind::<Array<Text>, _>(texts(samples.iter().map(|s| s.0.connections_avg)))
    .bind::<Array<BigInt>, _>(samples.iter().map(|s| s.0.rows_read).collect::<Vec<_>>())
    .bind::<Array<BigInt>, _>(samples.iter().map(|s| s.0.rows_written).collect::<Vec<_>>())
    .bind::<Array<Jsonb>, _>(
        samples
            .iter()
            .map(|s| s.0.cost_tags.clone())
            .collect::<Vec<_>>(),
    )
    .execute(conn)?;
    diesel::sql_query(
        "INSERT INTO meter_cursors AS c (environment_id, metered_until, storage_bytes, \
             rows_read_total, rows_written_total) \
         SELECT * FROM unnest($1::uuid[], $2::timestamptz[], $3::bigint[], $4::bigint[], $5::bigint[]) \
         ON CONFLICT (environment_id) DO UPDATE SET metered_until = excluded.metered_until, \
             storage_bytes = excluded.storage_bytes, rows_read_total = excluded.rows_read_total, \
             rows_written_total = excluded.rows_written_total",
    )
    .bind::<Array<SqlUuid>, _>(samples.iter().map(|s| s.0.environment_id).collect::<Vec<_>>())
    .bind::<Array<Timestamptz>, _>(samples.iter().map(|s| s.0.period_end).collect::<Vec<_>>())
    .bind::<Array<BigInt>, _>(samples.iter().map(|s| s.0.storage_bytes).collect::<Vec<_>>())
    .bind::<Array<BigInt>, _>(samples.iter().map(|s| s.1).collect::<Vec<_>>())
    .bind::<Array<BigInt>, _>(samples.iter().map(|s| s.2).collect::<Vec<_>>())
    .execute(conn)?;
    if !charges.is_empty() {
        add_charges(conn, charges)?;
    }
    if let Some(until) = pooled_until {
        diesel::sql_query("UPDATE meter_state SET pooled_metered_until = $1")
            .bind::<Timestamptz, _>(until)
            .execute(conn)?;
    }
    Ok(())
}

/// The charges as unnest-able arrays: (env, tenant, sku, hour, price id, region, currency,
/// unit, quantity, unit price, cost, method, from, tags).
const CHARGE_ROWS: &str = "unnest($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[], \
     $5::text[], $6::text[], $7::text[], $8::text[], $9::numeric[], $10::numeric[], \
     $11::numeric[], $12::text[], $13::text[], $14::jsonb[]) \
     AS c(environment_id, tenant_id, sku_id, hour, sku_price_id, region, currency, unit, \
          quantity, list_unit_price, cost, allocation_method, allocated_from, cost_tags)";

fn add_charges(conn: &mut PgConnection, charges: &[Charge]) -> Result<(), StoreError> {
    let statements = [
        format!(
            "INSERT INTO charges AS t (environment_id, sku_id, hour, tenant_id, sku_price_id, \
                 region, currency, quantity, list_unit_price, cost, allocation_method, \
                 allocated_from, cost_tags) \
             SELECT environment_id, sku_id, hour, tenant_id, sku_price_id, region, currency, \
                 quantity, list_unit_price, cost, allocation_method, allocated_from, cost_tags \
             FROM {CHARGE_ROWS} \
             ON CONFLICT (environment_id, sku_id, hour) DO UPDATE \
             SET quantity = t.quantity + excluded.quantity, cost = t.cost + excluded.cost"
        ),
        format!(
            "INSERT INTO charges_daily AS t (environment_id, sku_id, day, tags_digest, tenant_id, \
                 currency, unit, region, sku_price_id, list_unit_price, allocation_method, \
                 allocated_from, cost_tags, quantity, cost) \
             SELECT environment_id, sku_id, (hour AT TIME ZONE 'UTC')::date, md5(cost_tags::text), \
                 tenant_id, currency, unit, region, sku_price_id, list_unit_price, \
                 allocation_method, allocated_from, cost_tags, sum(quantity), sum(cost) \
             FROM {CHARGE_ROWS} \
             GROUP BY environment_id, sku_id, (hour AT TIME ZONE 'UTC')::date, cost_tags, tenant_id, \
                 currency, unit, region, sku_price_id, list_unit_price, allocation_method, allocated_from \
             ON CONFLICT (environment_id, sku_id, day, tags_digest) DO UPDATE \
             SET quantity = t.quantity + excluded.quantity, cost = t.cost + excluded.cost"
        ),
        format!(
            "INSERT INTO charges_daily_tags AS t (tenant_id, sku_id, day, tags_digest, currency, \
                 unit, cost_tags, quantity, cost) \
             SELECT tenant_id, sku_id, (hour AT TIME ZONE 'UTC')::date, md5(cost_tags::text), \
                 currency, unit, cost_tags, sum(quantity), sum(cost) \
             FROM {CHARGE_ROWS} \
             GROUP BY tenant_id, sku_id, (hour AT TIME ZONE 'UTC')::date, cost_tags, currency, unit \
             ON CONFLICT (tenant_id, day, sku_id, tags_digest) DO UPDATE \
             SET quantity = t.quantity + excluded.quantity, cost = t.cost + excluded.cost"
        ),
    ];
    let strings = |f: &dyn Fn(&Charge) -> String| charges.iter().map(f).collect::<Vec<_>>();
    let options = |f: &dyn Fn(&Charge) -> Option<String>| charges.iter().map(f).collect::<Vec<_>>();
    for statement in statements {
        diesel::sql_query(statement)
            .bind::<Array<SqlUuid>, _>(charges.iter().map(|c| c.environment_id).collect::<Vec<_>>())
            .bind::<Array<SqlUuid>, _>(charges.iter().map(|c| c.tenant_id).collect::<Vec<_>>())
            .bind::<Array<Text>, _>(strings(&|c| c.meter.sku().to_owned()))
            .bind::<Array<Timestamptz>, _>(charges.iter().map(|c| c.hour).collect::<Vec<_>>())
            .bind::<Array<Text>, _>(strings(&|c| c.sku_price_id.clone()))
            .bind::<Array<Text>, _>(strings(&|c| c.region.clone()))
            .bind::<Array<Text>, _>(strings(&|c| c.currency.clone()))
            .bind::<Array<Text>, _>(strings(&|c| c.unit.clone()))
            .bind::<Array<Text>, _>(texts(charges.iter().map(|c| c.quantity)))
            .bind::<Array<Text>, _>(texts(charges.iter().map(|c| c.list_unit_price)))
            .bind::<Array<Text>, _>(texts(charges.iter().map(|c| c.cost)))
            .bind::<Array<Nullable<Text>>, _>(options(&|c| c.allocation_method.map(str::to_owned)))
            .bind::<Array<Nullable<Text>>, _>(options(&|c| c.allocated_from.clone()))
            .bind::<Array<Jsonb>, _>(
                charges
                    .iter()
                    .map(|c| c.cost_tags.clone())
                    .collect::<Vec<_>>(),
            )
            .execute(conn)?;
    }
    Ok(())
}

/// A decimal read back as text (`numeric::text`); a malformed one is a store error.
pub fn decimal(text: &str) -> Result<Decimal, StoreError> {
    Decimal::from_str(text)
        .or_else(|_| Decimal::from_scientific(text))
        .map_err(|e| StoreError::Database(diesel::result::Error::DeserializationError(Box::new(e))))
}
