//! Tenants: the companies, brands or regions a platform serves.

use crate::domain::TenantState;
use crate::schema::{memberships, tenants};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use super::{Page, StoreError};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = tenants)]
pub struct Tenant {
    pub id: Uuid,
    pub slug: String,
    pub name: String,
    pub tier: String,
    pub region: String,
    pub state: String,
    pub cost_tags: serde_json::Value,
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Tenant {
    pub fn state(&self) -> Option<TenantState> {
        TenantState::from_db(&self.state)
    }
}

#[derive(Debug, Insertable)]
#[diesel(table_name = tenants)]
pub struct NewTenant<'a> {
    pub id: Uuid,
    pub slug: &'a str,
    pub name: &'a str,
    pub tier: &'a str,
    pub region: &'a str,
    pub cost_tags: serde_json::Value,
    pub created_by: Option<Uuid>,
}

pub fn insert(conn: &mut PgConnection, new: &NewTenant<'_>) -> Result<Tenant, StoreError> {
    Ok(diesel::insert_into(tenants::table)
        .values(new)
        .returning(Tenant::as_returning())
        .get_result(conn)?)
}

pub fn find(conn: &mut PgConnection, id: Uuid) -> Result<Option<Tenant>, StoreError> {
    Ok(tenants::table
        .find(id)
        .select(Tenant::as_select())
        .first(conn)
        .optional()?)
}

/// A tenant by id or slug, as `{tenant}` in a path may be either. Async, on the request path,
/// so it can be pipelined with the bearer's lookup.
pub async fn find_by_ref(
    mut conn: &diesel_async::AsyncPgConnection,
    reference: &str,
) -> Result<Option<Tenant>, StoreError> {
    use diesel_async::RunQueryDsl as AsyncRunQueryDsl;
    if reference.contains('\0') {
        // No slug holds a NUL, and PostgreSQL refuses one in text: not found, like any other.
        return Ok(None);
    }
    let query = tenants::table.select(Tenant::as_select());
    let found = match Uuid::try_parse(reference) {
        Ok(id) => AsyncRunQueryDsl::first(query.filter(tenants::id.eq(id)), &mut conn).await,
        Err(_) => {
            AsyncRunQueryDsl::first(query.filter(tenants::slug.eq(reference)), &mut conn).await
        }
    }
    .optional()?;
    Ok(found)
}

/// Tenants in id order after `after`; all of them, or only those `member` holds a role in.
pub fn list(
    conn: &mut PgConnection,
    member: Option<Uuid>,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Page<Tenant>, StoreError> {
    let mut query = tenants::table
        .select(Tenant::as_select())
        .order(tenants::id.asc())
        .limit(limit + 1)
        .into_boxed();
    if let Some(principal) = member {
        query = query.filter(
            tenants::id.eq_any(
                memberships::table
                    .filter(memberships::principal_id.eq(principal))
                    .filter(memberships::state.eq("active"))
                    .select(memberships::tenant_id),
            ),
        );
    }
    if let Some(after) = after {
        query = query.filter(tenants::id.gt(after));
    }
    let rows = query.load(conn)?;
    Ok(page(rows, limit, |t| t.id.to_string()))
}

/// Splits `limit + 1` rows into a page and the cursor of the next one.
pub(crate) fn page<T>(mut rows: Vec<T>, limit: i64, cursor: impl Fn(&T) -> String) -> Page<T> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let next_cursor = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(cursor)
    } else {
        None
    };
    Page {
        items: rows,
        next_cursor,
    }
}

#[derive(Debug, Default, AsChangeset)]
#[diesel(table_name = tenants)]
pub struct TenantChanges {
    pub name: Option<String>,
    pub cost_tags: Option<serde_json::Value>,
    pub state: Option<String>,
}

pub fn update(
    conn: &mut PgConnection,
    id: Uuid,
    changes: &TenantChanges,
) -> Result<Tenant, StoreError> {
    Ok(diesel::update(tenants::table.find(id))
        .set((changes, tenants::updated_at.eq(Utc::now())))
        .returning(Tenant::as_returning())
        .get_result(conn)?)
}

/// The tenant's state, read with a share lock held to the end of the transaction: a tenant
/// cannot start offboarding between this check and the caller's insert (an environment created
/// then would escape the teardown).
pub fn lock_state(conn: &mut PgConnection, id: Uuid) -> Result<Option<String>, StoreError> {
    Ok(tenants::table
        .find(id)
        .select(tenants::state)
        .for_share()
        .first(conn)
        .optional()?)
}

/// Locks the tenant row as an update would (compatible with foreign-key checks), to the end of
/// the transaction. The API's teardown and a worker finishing a destroy both take it before they
/// touch the tenant's environments: one lock order, and `complete_offboarding` relies on it.
/// Returns the state it locked (`None`: no such tenant).
pub fn lock_for_change(conn: &mut PgConnection, id: Uuid) -> Result<Option<String>, StoreError> {
    Ok(tenants::table
        .find(id)
        .select(tenants::state)
        .for_no_key_update()
        .first(conn)
        .optional()?)
}

/// Marks an offboarding tenant `offboarded` once none of its environments is left to destroy.
/// Call with the tenant row locked by `lock_for_change` in this transaction: this statement then
/// sees every destroy committed before the lock was granted, so of two destroys finishing at once
/// the second sees the first. Returns the tenant when this call completed the offboarding.
pub fn complete_offboarding(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<Tenant>, StoreError> {
    use crate::schema::environments;
    let standing = environments::table
        .filter(environments::tenant_id.eq(id))
        .filter(environments::state.ne(crate::lifecycle::EnvironmentState::Destroyed));
    Ok(diesel::update(
        tenants::table
            .find(id)
            .filter(tenants::state.eq(TenantState::Offboarding.as_str()))
            .filter(diesel::dsl::not(diesel::dsl::exists(standing))),
    )
    .set((
        tenants::state.eq(TenantState::Offboarded.as_str()),
        tenants::updated_at.eq(Utc::now()),
    ))
    .returning(Tenant::as_returning())
    .get_result(conn)
    .optional()?)
}
