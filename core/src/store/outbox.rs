//! The outbox: messages written with the job change that caused them, published by the relay.

use crate::queue::{JobMessage, MESSAGE_VERSION};
use crate::schema::outbox;
use chrono::Utc;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Jsonb};
use uuid::Uuid;

use super::StoreError;

#[derive(Debug, Clone, QueryableByName)]
pub struct OutboxRow {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = Jsonb)]
    pub payload: serde_json::Value,
}

/// Adds a wake-up for `job_id` (call inside the transaction that made the job runnable).
pub fn enqueue(conn: &mut PgConnection, job_id: Uuid, operation: &str) -> Result<(), StoreError> {
    let message = JobMessage {
        v: MESSAGE_VERSION,
        job_id,
        operation: operation.to_owned(),
    };
    let payload = serde_json::to_value(&message)
        .map_err(|e| StoreError::Unavailable(format!("outbox message encoding: {e}")))?;
    diesel::insert_into(outbox::table)
        .values((outbox::job_id.eq(job_id), outbox::payload.eq(payload)))
        .execute(conn)?;
    Ok(())
}

/// How long a relay holds the rows it took: far longer than publishing a batch with confirms
/// takes, so no other relay publishes them meanwhile; a relay that died lets go after it.
pub const CLAIM_SECONDS: i64 = 30;

/// Takes up to `limit` unsent rows for publishing, oldest first: each is held for
/// [`CLAIM_SECONDS`], and rows another relay is taking or holds are skipped, not waited for
/// (`FOR UPDATE SKIP LOCKED`), so N relays publish each row once. The claim commits at once:
/// no transaction stays open while the broker confirms.
pub const TAKE_UNSENT_SQL: &str = "UPDATE outbox SET claimed_until = now() + make_interval(secs => $2) \
     WHERE id IN (SELECT id FROM outbox WHERE sent_at IS NULL \
                    AND (claimed_until IS NULL OR claimed_until < now()) \
                  ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED) \
     RETURNING id, payload";

pub fn take_unsent(conn: &mut PgConnection, limit: i64) -> Result<Vec<OutboxRow>, StoreError> {
    let mut rows: Vec<OutboxRow> = diesel::sql_query(TAKE_UNSENT_SQL)
        .bind::<BigInt, _>(limit)
        .bind::<BigInt, _>(CLAIM_SECONDS)
        .load(conn)?;
    rows.sort_by_key(|row| row.id);
    Ok(rows)
}

pub fn mark_sent(conn: &mut PgConnection, ids: &[i64]) -> Result<(), StoreError> {
    diesel::update(outbox::table.filter(outbox::id.eq_any(ids)))
        .set(outbox::sent_at.eq(Utc::now()))
        .execute(conn)?;
    Ok(())
}

/// Records a failed publish of `ids` and releases them.
pub fn record_failure(
    conn: &mut PgConnection,
    ids: &[i64],
    reason: &str,
) -> Result<(), StoreError> {
    diesel::update(outbox::table.filter(outbox::id.eq_any(ids)))
        .set((
            outbox::attempts.eq(outbox::attempts + 1),
            outbox::last_error.eq(reason),
            // Let go at once: the relay retries after reconnecting, not after the hold.
            outbox::claimed_until.eq(None::<chrono::DateTime<Utc>>),
        ))
        .execute(conn)?;
    Ok(())
}

/// Deletes up to `limit` wake-ups published more than `age` ago, oldest first (retention). The
/// sweeper treats a wake-up published longer ago than its redelivery wait as lost anyway, so
/// any age of an hour or more changes nothing it decides.
pub const DELETE_SENT_SQL: &str = "DELETE FROM outbox WHERE id = ANY(ARRAY(\
     SELECT id FROM outbox WHERE sent_at < now() - make_interval(secs => $1::double precision) \
     ORDER BY sent_at LIMIT $2 FOR UPDATE SKIP LOCKED))";

pub fn delete_sent_before(
    conn: &mut PgConnection,
    age: std::time::Duration,
    limit: i64,
) -> Result<usize, StoreError> {
    Ok(diesel::sql_query(DELETE_SENT_SQL)
        .bind::<BigInt, _>(super::seconds(age))
        .bind::<BigInt, _>(limit)
        .execute(conn)?)
}
