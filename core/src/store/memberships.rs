//! Memberships: which user holds which role in which tenant, and memberships offered to an
//! existing account that it has not accepted yet (`invited`; they grant nothing).

use crate::schema::{memberships, principals, tenants};
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
    /// `active` or `invited` (offered to an existing account, not accepted yet).
    pub state: String,
    pub invitation_expires_at: Option<DateTime<Utc>>,
}

/// A membership offered to the caller, as `GET /v1/me/invitations` lists it.
#[derive(Debug, Clone, Queryable)]
pub struct PendingInvitation {
    pub tenant_id: Uuid,
    pub tenant_slug: String,
    pub tenant_name: String,
    pub role: String,
    pub invited_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// Offers `role` in the tenant to an existing account: it grants nothing until the account
/// accepts it (before `expires_at`). Returns when the membership was created.
pub fn add_invited(
    conn: &mut PgConnection,
    principal_id: Uuid,
    tenant_id: Uuid,
    role: &str,
    created_by: Option<Uuid>,
    expires_at: DateTime<Utc>,
) -> Result<DateTime<Utc>, StoreError> {
    Ok(diesel::insert_into(memberships::table)
        .values((
            memberships::principal_id.eq(principal_id),
            memberships::tenant_id.eq(tenant_id),
            memberships::role.eq(role),
            memberships::created_by.eq(created_by),
            memberships::state.eq("invited"),
            memberships::invitation_expires_at.eq(Some(expires_at)),
        ))
        .returning(memberships::created_at)
        .get_result(conn)?)
}

/// Offers a pending (or expired) invitation again, with `role` and a new expiry; returns when
/// the membership was created, or `None` when there is no invited membership to renew (none,
/// or already accepted).
pub fn renew_invited(
    conn: &mut PgConnection,
    principal_id: Uuid,
    tenant_id: Uuid,
    role: &str,
    expires_at: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    Ok(diesel::update(
        memberships::table
            .filter(memberships::principal_id.eq(principal_id))
            .filter(memberships::tenant_id.eq(tenant_id))
            .filter(memberships::state.eq("invited")),
    )
    .set((
        memberships::role.eq(role),
        memberships::invitation_expires_at.eq(Some(expires_at)),
    ))
    .returning(memberships::created_at)
    .get_result(conn)
    .optional()?)
}

/// The live invitations offered to `principal_id`.
pub fn pending_for(
    conn: &mut PgConnection,
    principal_id: Uuid,
) -> Result<Vec<PendingInvitation>, StoreError> {
    Ok(memberships::table
        .inner_join(tenants::table)
        .filter(memberships::principal_id.eq(principal_id))
        .filter(memberships::state.eq("invited"))
        .filter(memberships::invitation_expires_at.gt(diesel::dsl::now))
        .select((
            memberships::tenant_id,
            tenants::slug,
            tenants::name,
            memberships::role,
            memberships::created_at,
            memberships::invitation_expires_at,
        ))
        .order(memberships::created_at.asc())
        .limit(1000)
        .load(conn)?)
}

/// Accepts a live invitation: the membership becomes active. `None` when there is none.
pub fn accept(
    conn: &mut PgConnection,
    principal_id: Uuid,
    tenant_id: Uuid,
) -> Result<Option<String>, StoreError> {
    Ok(diesel::update(
        memberships::table
            .filter(memberships::principal_id.eq(principal_id))
            .filter(memberships::tenant_id.eq(tenant_id))
            .filter(memberships::state.eq("invited"))
            .filter(memberships::invitation_expires_at.gt(diesel::dsl::now))
            // A tenant that is leaving (or suspended) takes on nobody.
            .filter(
                memberships::tenant_id.eq_any(
                    tenants::table
                        .filter(tenants::state.eq("active"))
                        .select(tenants::id),
                ),
            ),
    )
    .set((
        memberships::state.eq("active"),
        memberships::invitation_expires_at.eq(None::<DateTime<Utc>>),
    ))
    .returning(memberships::role)
    .get_result(conn)
    .optional()?)
}

/// Activates every live invitation of an account that has just proven its mailbox (accepted
/// its invitation token): the offers were mailed to that mailbox. Returns (tenant, role).
pub fn accept_all_live(
    conn: &mut PgConnection,
    principal_id: Uuid,
) -> Result<Vec<(Uuid, String)>, StoreError> {
    Ok(diesel::update(
        memberships::table
            .filter(memberships::principal_id.eq(principal_id))
            .filter(memberships::state.eq("invited"))
            .filter(memberships::invitation_expires_at.gt(diesel::dsl::now))
            .filter(
                memberships::tenant_id.eq_any(
                    tenants::table
                        .filter(tenants::state.eq("active"))
                        .select(tenants::id),
                ),
            ),
    )
    .set((
        memberships::state.eq("active"),
        memberships::invitation_expires_at.eq(None::<DateTime<Utc>>),
    ))
    .returning((memberships::tenant_id, memberships::role))
    .get_results(conn)?)
}

/// Declines an invitation (live or expired): the offered membership is removed.
pub fn decline(
    conn: &mut PgConnection,
    principal_id: Uuid,
    tenant_id: Uuid,
) -> Result<bool, StoreError> {
    let removed = diesel::delete(
        memberships::table
            .filter(memberships::principal_id.eq(principal_id))
            .filter(memberships::tenant_id.eq(tenant_id))
            .filter(memberships::state.eq("invited")),
    )
    .execute(conn)?;
    Ok(removed == 1)
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
    memberships::state,
    memberships::invitation_expires_at,
);

fn member_columns() -> MemberColumns {
    (
        memberships::principal_id,
        principals::email,
        principals::display_name,
        memberships::role,
        principals::invitation_token_hash.is_not_null(),
        memberships::created_at,
        memberships::state,
        memberships::invitation_expires_at,
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
) -> Result<Option<Vec<Uuid>>, StoreError> {
    let removed = diesel::delete(
        memberships::table
            .filter(memberships::tenant_id.eq(tenant_id))
            .filter(memberships::principal_id.eq(principal_id)),
    )
    .execute(conn)?;
    if removed != 1 {
        return Ok(None);
    }
    // Offers it made in this tenant go with it: nobody accepts a grant from someone who no
    // longer holds anything there. Returns their invitees, for the audit trail.
    Ok(Some(
        diesel::delete(
            memberships::table
                .filter(memberships::tenant_id.eq(tenant_id))
                .filter(memberships::created_by.eq(principal_id))
                .filter(memberships::state.eq("invited")),
        )
        .returning(memberships::principal_id)
        .get_results(conn)?,
    ))
}

/// The role `principal_id` (a person or an API key) holds in `tenant_id` by an accepted
/// membership, read in the caller's transaction.
pub fn active_role(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    principal_id: Uuid,
) -> Result<Option<String>, StoreError> {
    Ok(memberships::table
        .filter(memberships::tenant_id.eq(tenant_id))
        .filter(memberships::principal_id.eq(principal_id))
        .filter(memberships::state.eq("active"))
        .select(memberships::role)
        .first(conn)
        .optional()?)
}

/// `active_role`, with the membership row share-locked until the transaction ends: a removal
/// (or a key's revocation) of that membership waits for this transaction, or this one waits for
/// it and then finds no active membership.
pub fn active_role_locked(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    principal_id: Uuid,
) -> Result<Option<String>, StoreError> {
    Ok(memberships::table
        .filter(memberships::tenant_id.eq(tenant_id))
        .filter(memberships::principal_id.eq(principal_id))
        .filter(memberships::state.eq("active"))
        .select(memberships::role)
        .for_share()
        .first(conn)
        .optional()?)
}

/// Withdraws every open offer `principal_id` made (its key was revoked); returns the invitees.
pub fn withdraw_offers_by(
    conn: &mut PgConnection,
    principal_id: Uuid,
) -> Result<Vec<Uuid>, StoreError> {
    Ok(diesel::delete(
        memberships::table
            .filter(memberships::created_by.eq(principal_id))
            .filter(memberships::state.eq("invited")),
    )
    .returning(memberships::principal_id)
    .get_results(conn)?)
}

/// The role `principal_id` holds in each tenant it is an active member of.
pub fn roles_of(
    conn: &mut PgConnection,
    principal_id: Uuid,
) -> Result<Vec<(Uuid, String)>, StoreError> {
    Ok(memberships::table
        .filter(memberships::principal_id.eq(principal_id))
        .filter(memberships::state.eq("active"))
        .select((memberships::tenant_id, memberships::role))
        .order(memberships::tenant_id.asc())
        .limit(1000)
        .load(conn)?)
}
