//! Memberships: which user holds which role in which tenant.

use crate::schema::{memberships, principals};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use super::tenants::page;
use super::{Page, StoreError};

/// A user's membership of a tenant, as listed to the tenant's admins.
#[derive(Debug, Clone, Queryable)]
pub struct Member {
    pub principal_id: Uuid,
    pub email: Option<String>,
    pub display_name: String,
    pub role: String,
    pub invitation_pending: bool,
    pub created_at: DateTime<Utc>,
}

pub fn add(
    conn: &mut PgConnection,
    principal_id: Uuid,
    tenant_id: Uuid,
    role: &str,
    created_by: Option<Uuid>,
) -> Result<(), StoreError> {
    diesel::insert_into(memberships::table)
        .values((
            memberships::principal_id.eq(principal_id),
            memberships::tenant_id.eq(tenant_id),
            memberships::role.eq(role),
            memberships::created_by.eq(created_by),
        ))
        .execute(conn)?;
    Ok(())
}

type MemberColumns = (
    memberships::principal_id,
    principals::email,
    principals::display_name,
    memberships::role,
    diesel::dsl::IsNotNull<principals::invitation_token_hash>,
    memberships::created_at,
);

fn member_columns() -> MemberColumns {
    (
        memberships::principal_id,
        principals::email,
        principals::display_name,
        memberships::role,
        principals::invitation_token_hash.is_not_null(),
        memberships::created_at,
    )
}

/// Users of a tenant (API keys' service accounts are listed under api-keys), by principal id.
pub fn list(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Page<Member>, StoreError> {
    let mut query = memberships::table
        .inner_join(principals::table)
        .filter(memberships::tenant_id.eq(tenant_id))
        .filter(principals::kind.eq("user"))
        .select(member_columns())
        .order(memberships::principal_id.asc())
        .limit(limit + 1)
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(memberships::principal_id.gt(after));
    }
    let rows: Vec<Member> = query.load(conn)?;
    Ok(page(rows, limit, |m| m.principal_id.to_string()))
}

pub fn find(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    principal_id: Uuid,
) -> Result<Option<Member>, StoreError> {
    Ok(memberships::table
        .inner_join(principals::table)
        .filter(memberships::tenant_id.eq(tenant_id))
        .filter(memberships::principal_id.eq(principal_id))
        .filter(principals::kind.eq("user"))
        .select(member_columns())
        .first(conn)
        .optional()?)
}

pub fn remove(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    principal_id: Uuid,
) -> Result<bool, StoreError> {
    let removed = diesel::delete(
        memberships::table
            .filter(memberships::tenant_id.eq(tenant_id))
            .filter(memberships::principal_id.eq(principal_id)),
    )
    .execute(conn)?;
    Ok(removed == 1)
}

/// The role `principal_id` holds in each tenant it is a member of.
pub fn roles_of(
    conn: &mut PgConnection,
    principal_id: Uuid,
) -> Result<Vec<(Uuid, String)>, StoreError> {
    Ok(memberships::table
        .filter(memberships::principal_id.eq(principal_id))
        .select((memberships::tenant_id, memberships::role))
        .order(memberships::tenant_id.asc())
        .limit(1000)
        .load(conn)?)
}
