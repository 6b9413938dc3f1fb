//! Login sessions (access tokens) and bearer authentication of both tokens and API keys.

use crate::schema::{api_keys, sessions};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Bytea, Int8, Nullable, Timestamptz, Uuid as SqlUuid};
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

/// A verified bearer: who it is, through which key (if any), and the assignment generation
/// read in the same round trip.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub principal: Principal,
    pub key: Option<KeyScope>,
    pub authz_generation: i64,
    /// For API keys: when the key was last marked used.
    pub key_last_used_at: Option<DateTime<Utc>>,
}

#[derive(QueryableByName)]
struct AuthRow {
    #[diesel(embed)]
    principal: Principal,
    #[diesel(sql_type = Int8)]
    generation: i64,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    key_id: Option<Uuid>,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    key_tenant_id: Option<Uuid>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    key_last_used_at: Option<DateTime<Utc>>,
}

/// Looks up a live access token: not expired, not revoked.
pub fn authenticate_token(
    conn: &mut PgConnection,
    token_hash: &[u8],
) -> Result<Option<Authenticated>, StoreError> {
    let row = diesel::sql_query(
        "SELECT p.*, g.generation, NULL::uuid AS key_id, NULL::uuid AS key_tenant_id, \
                NULL::timestamptz AS key_last_used_at \
         FROM sessions s JOIN principals p ON p.id = s.principal_id \
         CROSS JOIN authz_generation g \
         WHERE s.token_hash = $1 AND s.revoked_at IS NULL AND s.expires_at > now()",
    )
    .bind::<Bytea, _>(token_hash)
    .get_result::<AuthRow>(conn)
    .optional()?;
    Ok(row.map(into_authenticated))
}

/// Looks up a live API key: not expired, not revoked.
pub fn authenticate_api_key(
    conn: &mut PgConnection,
    secret_hash: &[u8],
) -> Result<Option<Authenticated>, StoreError> {
    let row = diesel::sql_query(
        "SELECT p.*, g.generation, k.id AS key_id, k.tenant_id AS key_tenant_id, \
                k.last_used_at AS key_last_used_at \
         FROM api_keys k JOIN principals p ON p.id = k.principal_id \
         CROSS JOIN authz_generation g \
         WHERE k.secret_hash = $1 AND k.revoked_at IS NULL \
           AND (k.expires_at IS NULL OR k.expires_at > now())",
    )
    .bind::<Bytea, _>(secret_hash)
    .get_result::<AuthRow>(conn)
    .optional()?;
    Ok(row.map(into_authenticated))
}

fn into_authenticated(row: AuthRow) -> Authenticated {
    Authenticated {
        principal: row.principal,
        key: row
            .key_id
            .zip(row.key_tenant_id)
            .map(|(key_id, tenant_id)| KeyScope { key_id, tenant_id }),
        authz_generation: row.generation,
        key_last_used_at: row.key_last_used_at,
    }
}

/// Marks a key used. Written at most once a minute per key, so a busy key does not turn
/// every read into a write.
pub fn touch_api_key(conn: &mut PgConnection, key_id: Uuid) -> Result<(), StoreError> {
    let a_minute_ago = Utc::now() - chrono::Duration::minutes(1);
    diesel::update(
        api_keys::table.find(key_id).filter(
            api_keys::last_used_at
                .is_null()
                .or(api_keys::last_used_at.lt(a_minute_ago)),
        ),
    )
    .set(api_keys::last_used_at.eq(Utc::now()))
    .execute(conn)?;
    Ok(())
}
