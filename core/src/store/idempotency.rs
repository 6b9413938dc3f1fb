//! Saved responses of POSTs sent with an `Idempotency-Key`, per principal.

use crate::schema::idempotency_keys;
use diesel::prelude::*;
use uuid::Uuid;

use super::StoreError;

#[derive(Debug, Clone, Queryable)]
pub struct SavedResponse {
    pub request_hash: Vec<u8>,
    pub status: i16,
    pub body: serde_json::Value,
}

/// Holds the key until the transaction ends, so a concurrent retry with the same key waits
/// for the first attempt instead of racing it; then returns the saved response, if any.
pub fn lock_and_get(
    conn: &mut PgConnection,
    principal_id: Uuid,
    key: &str,
) -> Result<Option<SavedResponse>, StoreError> {
    diesel::sql_query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind::<diesel::sql_types::Text, _>(format!("idempotency:{principal_id}:{key}"))
        .execute(conn)?;
    Ok(idempotency_keys::table
        .filter(idempotency_keys::principal_id.eq(principal_id))
        .filter(idempotency_keys::key.eq(key))
        .select((
            idempotency_keys::request_hash,
            idempotency_keys::response_status,
            idempotency_keys::response_body,
        ))
        .first(conn)
        .optional()?)
}

pub fn save(
    conn: &mut PgConnection,
    principal_id: Uuid,
    key: &str,
    request_hash: &[u8],
    status: i16,
    body: &serde_json::Value,
) -> Result<(), StoreError> {
    diesel::insert_into(idempotency_keys::table)
        .values((
            idempotency_keys::principal_id.eq(principal_id),
            idempotency_keys::key.eq(key),
            idempotency_keys::request_hash.eq(request_hash),
            idempotency_keys::response_status.eq(status),
            idempotency_keys::response_body.eq(body),
        ))
        .execute(conn)?;
    Ok(())
}

/// Deletes up to `limit` saved responses older than `age`, oldest first (retention): a retry
/// after that is a new request. The rows are named by `ctid` (the key is two columns): they
/// are locked from the moment they are chosen, so no other session moves them meanwhile.
pub const DELETE_OLD_SQL: &str = "DELETE FROM idempotency_keys WHERE ctid = ANY(ARRAY(\
     SELECT ctid FROM idempotency_keys \
     WHERE created_at < now() - make_interval(secs => $1::double precision) \
     ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED))";

pub fn delete_older_than(
    conn: &mut PgConnection,
    age: std::time::Duration,
    limit: i64,
) -> Result<usize, StoreError> {
    Ok(diesel::sql_query(DELETE_OLD_SQL)
        .bind::<diesel::sql_types::BigInt, _>(super::seconds(age))
        .bind::<diesel::sql_types::BigInt, _>(limit)
        .execute(conn)?)
}
