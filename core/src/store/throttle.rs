//! Attempt windows for logins and invitation acceptance, in the control database: an attempt
//! is counted (reserved) before any password is hashed, so concurrent guesses cannot all slip
//! under the limit, and every API replica sees the same counts.

use super::StoreError;
use diesel::prelude::*;
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
    let windows = diesel::sql_query(FORGET_OLD_SQL)
        .bind::<BigInt, _>(super::seconds(age))
        .bind::<BigInt, _>(limit)
        .execute(conn)?;
    let known = diesel::sql_query(FORGET_KNOWN_SQL)
        .bind::<BigInt, _>(limit)
        .execute(conn)?;
    Ok(windows + known)
}

/// How long an address stays known after the account's last successful login from it.
pub const KNOWN_ADDRESS_DAYS: i64 = 90;

/// Deletes up to `limit` known addresses whose last success is older than 90 days.
pub const FORGET_KNOWN_SQL: &str = "DELETE FROM login_known_addresses      WHERE (account_digest, address) IN (SELECT account_digest, address      FROM login_known_addresses WHERE last_success_at < now() - make_interval(days => 90)      ORDER BY last_success_at LIMIT $1 FOR UPDATE SKIP LOCKED)";

/// Takes the next slot of `key`'s window for one check, slots `spacing` apart whatever the
/// number of callers at once: how long this caller waits for its slot, or `None` when the
/// next free slot is more than `max_wait` away (nothing is taken then, so a flood cannot push
/// the queue further out than `max_wait`).
pub fn take_slot(
    conn: &mut PgConnection,
    key: &str,
    spacing: Duration,
    max_wait: Duration,
) -> Result<Option<Duration>, StoreError> {
    #[derive(QueryableByName)]
    struct Wait {
        #[diesel(sql_type = diesel::sql_types::Double)]
        seconds: f64,
    }
    let wait: Option<Wait> = diesel::sql_query(
        "UPDATE login_throttle SET next_slot_at = \
           greatest(coalesce(next_slot_at, now()), now()) + make_interval(secs => $2) \
         WHERE key = $1 AND coalesce(next_slot_at, now()) <= now() + make_interval(secs => $3) \
         RETURNING greatest(0, extract(epoch FROM \
           (next_slot_at - make_interval(secs => $2) - now())))::double precision AS seconds",
    )
    .bind::<Text, _>(key)
    .bind::<diesel::sql_types::Double, _>(spacing.as_secs_f64())
    .bind::<diesel::sql_types::Double, _>(max_wait.as_secs_f64())
    .get_result(conn)
    .optional()?;
    Ok(wait.map(|w| Duration::from_secs_f64(w.seconds.clamp(0.0, 86_400.0))))
}

/// Records that the account (its email digest) logged in successfully from `address`.
pub fn remember_address(
    conn: &mut PgConnection,
    account_digest: &str,
    address: &str,
) -> Result<(), StoreError> {
    diesel::sql_query(
        "INSERT INTO login_known_addresses (account_digest, address) VALUES ($1, $2)          ON CONFLICT (account_digest, address) DO UPDATE SET last_success_at = now()",
    )
    .bind::<Text, _>(account_digest)
    .bind::<Text, _>(address)
    .execute(conn)?;
    Ok(())
}

/// Whether the account logged in successfully from `address` in the last 90 days.
pub fn is_known_address(
    conn: &mut PgConnection,
    account_digest: &str,
    address: &str,
) -> Result<bool, StoreError> {
    use crate::schema::login_known_addresses as known;
    Ok(diesel::select(diesel::dsl::exists(
        known::table
            .filter(known::account_digest.eq(account_digest))
            .filter(known::address.eq(address))
            .filter(
                known::last_success_at
                    .gt(chrono::Utc::now() - chrono::Duration::days(KNOWN_ADDRESS_DAYS)),
            ),
    ))
    .get_result(conn)?)
}
