//! The stretches an environment stood stopped: opened by the stop that made it `stopped`,
//! closed by whatever gave its login back (a start, an apply) or removed it (a destroy).
//! Metering reads them so that a stopped environment is not charged environment-hours.

use super::StoreError;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, Bool, Nullable, Timestamptz, Uuid as SqlUuid};
use std::collections::HashMap;
use uuid::Uuid;

/// Opens the environment's stop at the database's clock, unless one is open already (a
/// retried stop); returns whether it opened one.
pub fn begin(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    environment_id: Uuid,
    job_id: Uuid,
    scheduled: bool,
) -> Result<bool, StoreError> {
    let opened = diesel::sql_query(
        "INSERT INTO environment_stops (id, environment_id, tenant_id, stopped_at, stop_job_id, scheduled) \
         VALUES ($1, $2, $3, now(), $4, $5) \
         ON CONFLICT (environment_id) WHERE started_at IS NULL DO NOTHING",
    )
    .bind::<SqlUuid, _>(Uuid::now_v7())
    .bind::<SqlUuid, _>(environment_id)
    .bind::<SqlUuid, _>(tenant_id)
    .bind::<SqlUuid, _>(job_id)
    .bind::<Bool, _>(scheduled)
    .execute(conn)?;
    Ok(opened == 1)
}

#[derive(QueryableByName)]
struct Ended {
    #[diesel(sql_type = Timestamptz)]
    stopped_at: DateTime<Utc>,
}

/// Closes the environment's open stop (if any) now; returns when it had begun.
pub fn end(
    conn: &mut PgConnection,
    environment_id: Uuid,
    job_id: Uuid,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    let ended: Option<Ended> = diesel::sql_query(
        "UPDATE environment_stops SET started_at = greatest(now(), stopped_at), start_job_id = $2 \
         WHERE environment_id = $1 AND started_at IS NULL RETURNING stopped_at",
    )
    .bind::<SqlUuid, _>(environment_id)
    .bind::<SqlUuid, _>(job_id)
    .get_result(conn)
    .optional()?;
    Ok(ended.map(|e| e.stopped_at))
}

/// A stretch stopped: `[stopped_at, started_at)`, open-ended while it lasts.
pub type Stretch = (DateTime<Utc>, Option<DateTime<Utc>>);

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = SqlUuid)]
    environment_id: Uuid,
    #[diesel(sql_type = Timestamptz)]
    stopped_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    started_at: Option<DateTime<Utc>>,
}

/// The stops of `environments` that were still on at `since` or began after it, by environment.
pub fn since(
    conn: &mut PgConnection,
    environments: &[Uuid],
    since: DateTime<Utc>,
) -> Result<HashMap<Uuid, Vec<Stretch>>, StoreError> {
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT environment_id, stopped_at, started_at FROM environment_stops \
         WHERE environment_id = ANY($1) AND (started_at IS NULL OR started_at > $2) \
         ORDER BY environment_id, stopped_at",
    )
    .bind::<Array<SqlUuid>, _>(environments)
    .bind::<Timestamptz, _>(since)
    .load(conn)?;
    let mut out: HashMap<Uuid, Vec<Stretch>> = HashMap::new();
    for row in rows {
        out.entry(row.environment_id)
            .or_default()
            .push((row.stopped_at, row.started_at));
    }
    Ok(out)
}

/// Since when the environment has been stopped, if it is.
pub fn open_since(
    conn: &mut PgConnection,
    environment_id: Uuid,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    let row: Option<Ended> = diesel::sql_query(
        "SELECT stopped_at FROM environment_stops WHERE environment_id = $1 AND started_at IS NULL",
    )
    .bind::<SqlUuid, _>(environment_id)
    .get_result(conn)
    .optional()?;
    Ok(row.map(|r| r.stopped_at))
}

#[derive(QueryableByName)]
struct StoppedRow {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    tenant_id: Uuid,
    #[diesel(sql_type = diesel::sql_types::Text)]
    isolation: String,
}

/// Stopped environments with no job in their line (a start in progress logs in to probe):
/// (id, tenant, tier). Served by the partial index `environments_stopped`.
pub fn stopped_idle(
    conn: &mut PgConnection,
) -> Result<Vec<(Uuid, Uuid, crate::domain::Isolation)>, StoreError> {
    let rows: Vec<StoppedRow> = diesel::sql_query(concat!(
        "SELECT e.id, e.tenant_id, e.isolation FROM environments e WHERE e.state = 'stopped' \
         AND NOT EXISTS (SELECT FROM jobs j WHERE j.environment_id = e.id AND j.state IN ",
        crate::active_job_states_sql!(),
        ")"
    ))
    .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let isolation = crate::domain::Isolation::parse("isolation", &r.isolation)
                .unwrap_or(crate::domain::Isolation::Shared);
            (r.id, r.tenant_id, isolation)
        })
        .collect())
}
