//! Login sessions (access tokens) and bearer authentication of both tokens and API keys.

use crate::schema::{api_keys, principals, sessions};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::AsyncPgConnection;
use uuid::Uuid;

use super::StoreError;
use super::principals::Principal;

pub fn create(
    conn: &mut PgConnection,
    principal_id: Uuid,
    token_hash: &[u8],
    expires_at: DateTime<Utc>,
) -> Result<(), StoreError> {
    diesel::insert_into(sessions::table)
        .values((
            sessions::id.eq(Uuid::now_v7()),
            sessions::principal_id.eq(principal_id),
            sessions::token_hash.eq(token_hash),
            sessions::expires_at.eq(expires_at),
        ))
        .execute(conn)?;
    Ok(())
}

/// Deletes up to `limit` sessions that expired more than `age` ago (revoked ones included),
/// oldest first (retention).
pub const DELETE_EXPIRED_SQL: &str = "DELETE FROM sessions WHERE id = ANY(ARRAY(\
     SELECT id FROM sessions WHERE expires_at < now() - make_interval(secs => $1::double precision) \
     ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED))";

pub fn delete_expired_before(
    conn: &mut PgConnection,
    age: std::time::Duration,
    limit: i64,
) -> Result<usize, StoreError> {
    Ok(diesel::sql_query(DELETE_EXPIRED_SQL)
        .bind::<diesel::sql_types::BigInt, _>(super::seconds(age))
        .bind::<diesel::sql_types::BigInt, _>(limit)
        .execute(conn)?)
}

/// Revokes the live session with this token hash; `false` if there was none.
pub fn revoke(conn: &mut PgConnection, token_hash: &[u8]) -> Result<bool, StoreError> {
    let changed = diesel::update(
        sessions::table
            .filter(sessions::token_hash.eq(token_hash))
            .filter(sessions::revoked_at.is_null()),
    )
    .set(sessions::revoked_at.eq(Utc::now()))
    .execute(conn)?;
    Ok(changed == 1)
}

/// The API key a service account authenticated with.
#[derive(Debug, Clone)]
pub struct KeyScope {
    pub key_id: Uuid,
    pub tenant_id: Uuid,
}

/// A verified bearer: who it is, through which key (if any), and the generation of its latest
/// role-assignment change, read in the same round trip.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub principal: Principal,
    pub key: Option<KeyScope>,
    /// An enforcer at this generation or later reflects every role this principal holds (only
    /// its own assignments decide for it).
    pub authz_generation: i64,
    /// For API keys: when the key was last marked used.
    pub key_last_used_at: Option<DateTime<Utc>>,
}

/// Looks up a live access token (not expired, not revoked) with its principal's generation, in
/// one prepared, cached statement. Takes a shared reference so it can be pipelined with the
/// request's other lookups on the same connection.
pub async fn authenticate_token(
    mut conn: &AsyncPgConnection,
    token_hash: &[u8],
) -> Result<Option<Authenticated>, StoreError> {
    let query = sessions::table
        .inner_join(principals::table)
        .filter(sessions::token_hash.eq(token_hash))
        .filter(sessions::revoked_at.is_null())
        .filter(sessions::expires_at.gt(diesel::dsl::now))
        .select((Principal::as_select(), principals::assignments_generation));
    let row = diesel_async::RunQueryDsl::first::<(Principal, i64)>(query, &mut conn)
        .await
        .optional()?;
    Ok(row.map(|(principal, authz_generation)| Authenticated {
        principal,
        key: None,
        authz_generation,
        key_last_used_at: None,
    }))
}

/// Looks up a live API key (not expired, not revoked), likewise in one cached statement.
pub async fn authenticate_api_key(
    mut conn: &AsyncPgConnection,
    secret_hash: &[u8],
) -> Result<Option<Authenticated>, StoreError> {
    let query = api_keys::table
        .inner_join(principals::table)
        .filter(api_keys::secret_hash.eq(secret_hash))
        .filter(api_keys::revoked_at.is_null())
        .filter(
            api_keys::expires_at
                .is_null()
                .or(api_keys::expires_at.gt(diesel::dsl::now)),
        )
        .select((
            Principal::as_select(),
            principals::assignments_generation,
            api_keys::id,
            api_keys::tenant_id,
            api_keys::last_used_at,
        ));
    let row =
        diesel_async::RunQueryDsl::first::<(Principal, i64, Uuid, Uuid, Option<DateTime<Utc>>)>(
            query, &mut conn,
        )
        .await
        .optional()?;
    Ok(row.map(
        |(principal, authz_generation, key_id, tenant_id, key_last_used_at)| Authenticated {
            principal,
            key: Some(KeyScope { key_id, tenant_id }),
            authz_generation,
            key_last_used_at,
        },
    ))
}

/// Marks a key used. Written at most once a minute per key, so a busy key does not turn
/// every read into a write.
pub async fn touch_api_key(mut conn: &AsyncPgConnection, key_id: Uuid) -> Result<(), StoreError> {
    let a_minute_ago = Utc::now() - chrono::Duration::minutes(1);
    let update = diesel::update(
        api_keys::table.find(key_id).filter(
            api_keys::last_used_at
                .is_null()
                .or(api_keys::last_used_at.lt(a_minute_ago)),
        ),
    )
    .set(api_keys::last_used_at.eq(Utc::now()));
    diesel_async::RunQueryDsl::execute(update, &mut conn).await?;
    Ok(())
}
