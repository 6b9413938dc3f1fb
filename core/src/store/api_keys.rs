//! API keys: tenant-scoped bearer secrets for partner systems and automation.

use crate::schema::{api_keys, memberships};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use super::tenants::page;
use super::{Page, StoreError};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = api_keys)]
pub struct ApiKey {
    pub id: Uuid,
    pub principal_id: Uuid,
    pub tenant_id: Uuid,
    pub name: String,
    pub role: String,
    pub prefix: String,
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = api_keys)]
pub struct NewApiKey<'a> {
    pub id: Uuid,
    pub principal_id: Uuid,
    pub tenant_id: Uuid,
    pub name: &'a str,
    pub role: &'a str,
    pub prefix: &'a str,
    pub secret_hash: &'a [u8],
    pub created_by: Option<Uuid>,
    pub expires_at: Option<DateTime<Utc>>,
}

pub fn insert(conn: &mut PgConnection, new: &NewApiKey<'_>) -> Result<ApiKey, StoreError> {
    Ok(diesel::insert_into(api_keys::table)
        .values(new)
        .returning(ApiKey::as_returning())
        .get_result(conn)?)
}

pub fn list(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Page<ApiKey>, StoreError> {
    let mut query = api_keys::table
        .filter(api_keys::tenant_id.eq(tenant_id))
        .select(ApiKey::as_select())
        .order(api_keys::id.asc())
        .limit(limit + 1)
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(api_keys::id.gt(after));
    }
    let rows = query.load(conn)?;
    Ok(page(rows, limit, |k| k.id.to_string()))
}

pub fn find(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    key_id: Uuid,
) -> Result<Option<ApiKey>, StoreError> {
    Ok(api_keys::table
        .filter(api_keys::tenant_id.eq(tenant_id))
        .filter(api_keys::id.eq(key_id))
        .select(ApiKey::as_select())
        .first(conn)
        .optional()?)
}

/// Revokes a key, drops its role assignment and withdraws the membership offers it made (their
/// invitees are returned with it); `None` if it was not live in this tenant.
pub fn revoke(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    key_id: Uuid,
) -> Result<Option<(ApiKey, Vec<Uuid>)>, StoreError> {
    let revoked = diesel::update(
        api_keys::table
            .filter(api_keys::tenant_id.eq(tenant_id))
            .filter(api_keys::id.eq(key_id))
            .filter(api_keys::revoked_at.is_null()),
    )
    .set(api_keys::revoked_at.eq(Utc::now()))
    .returning(ApiKey::as_returning())
    .get_result(conn)
    .optional()?;
    let Some(key) = revoked else {
        return Ok(None);
    };
    diesel::delete(memberships::table.filter(memberships::principal_id.eq(key.principal_id)))
        .execute(conn)?;
    let withdrawn = super::memberships::withdraw_offers_by(conn, key.principal_id)?;
    Ok(Some((key, withdrawn)))
}
