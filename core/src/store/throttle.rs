//! Attempt windows for logins and invitation acceptance, in the control database: an attempt
//! is counted (reserved) before any password is hashed, so concurrent guesses cannot all slip
//! under the limit, and every API replica sees the same counts.

use super::StoreError;
use diesel::sql_types::{BigInt, Integer, Text};
use diesel::{PgConnection, QueryableByName, RunQueryDsl};
use std::time::Duration;

/// One key's window after an attempt was counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, QueryableByName)]
pub struct Window {
    /// Attempts counted in the current window, this one included.
    #[diesel(sql_type = Integer)]
    pub attempts: i32,
    /// Seconds until the window ends (at least 1).
    #[diesel(sql_type = BigInt)]
    pub retry_after: i64,
}

/// Counts one attempt for each of `keys` (a new window for a key whose window of `window` is
/// over) in one statement, and returns their windows in the same order.
pub fn reserve(
    conn: &mut PgConnection,
    keys: &[String],
    window: Duration,
) -> Result<Vec<Window>, StoreError> {
    let secs = i64::try_from(window.as_secs()).unwrap_or(i64::MAX).max(1);
    let mut windows = Vec::with_capacity(keys.len());
    for key in keys {
        let w: Window = diesel::sql_query(
            "INSERT INTO login_throttle AS t (key, attempts, window_start) VALUES ($1, 1, now()) \
             ON CONFLICT (key) DO UPDATE SET \
               attempts = CASE WHEN t.window_start <= now() - make_interval(secs => $2) \
                          THEN 1 ELSE t.attempts + 1 END, \
               window_start = CASE WHEN t.window_start <= now() - make_interval(secs => $2) \
                              THEN now() ELSE t.window_start END \
             RETURNING attempts, greatest(1, ceil(extract(epoch FROM \
               (window_start + make_interval(secs => $2) - now()))))::bigint AS retry_after",
        )
        .bind::<Text, _>(key)
        .bind::<BigInt, _>(secs)
        .get_result(conn)?;
        windows.push(w);
    }
    Ok(windows)
}

/// Forgets the windows of `keys` (after a successful login).
pub fn clear(conn: &mut PgConnection, keys: &[String]) -> Result<(), StoreError> {
    diesel::sql_query("DELETE FROM login_throttle WHERE key = ANY($1)")
        .bind::<diesel::sql_types::Array<Text>, _>(keys)
        .execute(conn)?;
    Ok(())
}

/// Takes back one attempt of `key` (a success counted at reservation).
pub fn release(conn: &mut PgConnection, key: &str) -> Result<(), StoreError> {
    diesel::sql_query(
        "UPDATE login_throttle SET attempts = greatest(attempts - 1, 0) WHERE key = $1",
    )
    .bind::<Text, _>(key)
    .execute(conn)?;
    Ok(())
}

/// Deletes up to `limit` windows that started more than `age` ago, oldest first (retention;
/// a window older than the lockout counts nothing any more).
pub const FORGET_OLD_SQL: &str = "DELETE FROM login_throttle WHERE key = ANY(ARRAY(\
     SELECT key FROM login_throttle \
     WHERE window_start < now() - make_interval(secs => $1::double precision) \
     ORDER BY window_start LIMIT $2 FOR UPDATE SKIP LOCKED))";

pub fn forget_older_than(
    conn: &mut PgConnection,
    age: Duration,
    limit: i64,
) -> Result<usize, StoreError> {
    Ok(diesel::sql_query(FORGET_OLD_SQL)
        .bind::<BigInt, _>(super::seconds(age))
        .bind::<BigInt, _>(limit)
        .execute(conn)?)
}
