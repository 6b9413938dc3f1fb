//! The outbox: messages written with the job change that caused them, published by the relay.

use crate::queue::{JobMessage, MESSAGE_VERSION};
use crate::schema::outbox;
use chrono::Utc;
use diesel::prelude::*;
use uuid::Uuid;

use super::StoreError;

#[derive(Debug, Clone, Queryable)]
pub struct OutboxRow {
    pub id: i64,
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

pub fn unsent(conn: &mut PgConnection, limit: i64) -> Result<Vec<OutboxRow>, StoreError> {
    Ok(outbox::table
        .filter(outbox::sent_at.is_null())
        .order(outbox::id.asc())
        .limit(limit)
        .select((outbox::id, outbox::payload))
        .load(conn)?)
}

pub fn mark_sent(conn: &mut PgConnection, ids: &[i64]) -> Result<(), StoreError> {
    diesel::update(outbox::table.filter(outbox::id.eq_any(ids)))
        .set(outbox::sent_at.eq(Utc::now()))
        .execute(conn)?;
    Ok(())
}

pub fn record_failure(
    conn: &mut PgConnection,
    ids: &[i64],
    reason: &str,
) -> Result<(), StoreError> {
    diesel::update(outbox::table.filter(outbox::id.eq_any(ids)))
        .set((
            outbox::attempts.eq(outbox::attempts + 1),
            outbox::last_error.eq(reason),
        ))
        .execute(conn)?;
    Ok(())
}
