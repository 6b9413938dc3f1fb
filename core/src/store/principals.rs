//! Principals: users (email + password) and service accounts (behind API keys).

use crate::authz::{Assignment, Domain};
use crate::domain::{PlatformRole, TenantRole};
use crate::schema::{authz_generation, memberships, principals};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use super::StoreError;

#[derive(Debug, Clone, Queryable, Selectable, QueryableByName)]
#[diesel(table_name = principals)]
pub struct Principal {
    pub id: Uuid,
    pub kind: String,
    pub email: Option<String>,
    pub display_name: String,
    pub password_hash: Option<String>,
    pub platform_role: Option<String>,
    pub invitation_token_hash: Option<Vec<u8>>,
    pub invitation_expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Principal {
    pub fn platform_role(&self) -> Option<PlatformRole> {
        self.platform_role
            .as_deref()
            .and_then(PlatformRole::from_db)
    }

    /// How audit events and listings name this principal.
    pub fn label(&self) -> String {
        match &self.email {
            Some(email) => email.clone(),
            None => format!("service-account:{}", self.id),
        }
    }
}

#[derive(Debug, Insertable)]
#[diesel(table_name = principals)]
pub struct NewPrincipal<'a> {
    pub id: Uuid,
    pub kind: &'a str,
    pub email: Option<&'a str>,
    pub display_name: &'a str,
    pub password_hash: Option<&'a str>,
    pub platform_role: Option<&'a str>,
    pub invitation_token_hash: Option<&'a [u8]>,
    pub invitation_expires_at: Option<DateTime<Utc>>,
}

pub fn insert(conn: &mut PgConnection, new: &NewPrincipal<'_>) -> Result<Principal, StoreError> {
    Ok(diesel::insert_into(principals::table)
        .values(new)
        .returning(Principal::as_returning())
        .get_result(conn)?)
}

pub fn find_by_email(
    conn: &mut PgConnection,
    email: &str,
) -> Result<Option<Principal>, StoreError> {
    Ok(principals::table
        .filter(principals::email.eq(email))
        .select(Principal::as_select())
        .first(conn)
        .optional()?)
}

pub fn find(conn: &mut PgConnection, id: Uuid) -> Result<Option<Principal>, StoreError> {
    Ok(principals::table
        .find(id)
        .select(Principal::as_select())
        .first(conn)
        .optional()?)
}

pub fn any_platform_admin(conn: &mut PgConnection) -> Result<bool, StoreError> {
    Ok(diesel::select(diesel::dsl::exists(
        principals::table.filter(principals::platform_role.eq("platform_admin")),
    ))
    .get_result(conn)?)
}

/// The user holding a live invitation with this token hash, locked for the exchange.
pub fn find_by_live_invitation(
    conn: &mut PgConnection,
    token_hash: &[u8],
) -> Result<Option<Principal>, StoreError> {
    Ok(principals::table
        .filter(principals::invitation_token_hash.eq(token_hash))
        .filter(principals::invitation_expires_at.gt(Utc::now()))
        .select(Principal::as_select())
        .for_update()
        .first(conn)
        .optional()?)
}

/// Sets a password and consumes the invitation.
/// Sets the password of the account whose live invitation is `token_hash`; `false` when the
/// token was used meanwhile (two concurrent acceptances: only one wins).
pub fn set_password_from_invitation(
    conn: &mut PgConnection,
    id: Uuid,
    token_hash: &[u8],
    password_hash: &str,
) -> Result<bool, StoreError> {
    let changed = diesel::update(
        principals::table
            .find(id)
            .filter(principals::invitation_token_hash.eq(token_hash)),
    )
    .set((
        principals::password_hash.eq(password_hash),
        principals::invitation_token_hash.eq(None::<Vec<u8>>),
        principals::invitation_expires_at.eq(None::<DateTime<Utc>>),
        principals::updated_at.eq(Utc::now()),
    ))
    .execute(conn)?;
    Ok(changed == 1)
}

/// Gives an existing user without a password a fresh invitation.
pub fn renew_invitation(
    conn: &mut PgConnection,
    id: Uuid,
    token_hash: &[u8],
    expires_at: DateTime<Utc>,
) -> Result<(), StoreError> {
    diesel::update(principals::table.find(id))
        .set((
            principals::invitation_token_hash.eq(token_hash),
            principals::invitation_expires_at.eq(expires_at),
            principals::updated_at.eq(Utc::now()),
        ))
        .execute(conn)?;
    Ok(())
}

/// The current assignment generation (moves on every membership or platform-role change).
pub fn authz_generation(conn: &mut PgConnection) -> Result<i64, StoreError> {
    Ok(authz_generation::table
        .select(authz_generation::generation)
        .first(conn)?)
}

/// The casbin assignment a platform role grants.
fn platform_assignment(principal_id: Uuid, role: &str) -> Option<Assignment> {
    let role = PlatformRole::from_db(role)?;
    Some(Assignment {
        principal_id,
        role: role.role(),
        domain: match role {
            PlatformRole::PlatformAdmin => Domain::Everywhere,
            PlatformRole::Partner => Domain::Platform,
        },
    })
}

/// The casbin assignment an active membership grants.
fn membership_assignment(principal_id: Uuid, tenant_id: Uuid, role: &str) -> Option<Assignment> {
    Some(Assignment {
        principal_id,
        role: TenantRole::from_db(role)?.role(),
        domain: Domain::Tenant(tenant_id),
    })
}

/// One change to the assignments (written by the triggers of migration 000017).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssignmentChange {
    pub generation: i64,
    pub assignment: Assignment,
    pub granted: bool,
}

/// The changes after `generation`, in order, and the generation they reach, if the log still
/// holds all of them (`None`: some were forgotten; reload everything instead).
pub fn changes_since(
    conn: &mut PgConnection,
    generation: i64,
    limit: i64,
) -> Result<Option<(Vec<AssignmentChange>, i64)>, StoreError> {
    use crate::schema::authz_changes;
    let rows: Vec<(i64, Uuid, Option<Uuid>, String, bool)> = authz_changes::table
        .filter(authz_changes::generation.gt(generation))
        .order(authz_changes::generation.asc())
        .limit(limit)
        .select((
            authz_changes::generation,
            authz_changes::principal_id,
            authz_changes::tenant_id,
            authz_changes::role,
            authz_changes::granted,
        ))
        .load(conn)?;
    // Generations are consecutive (each comes from the counter's row lock, and a rolled-back
    // change rolls its increment back too): a hole means retention removed changes this
    // process never saw.
    let mut expected = generation + 1;
    let mut changes = Vec::with_capacity(rows.len());
    for (row_generation, principal_id, tenant_id, role, granted) in rows {
        if row_generation != expected {
            return Ok(None);
        }
        expected += 1;
        let assignment = match tenant_id {
            Some(tenant_id) => membership_assignment(principal_id, tenant_id, &role),
            None => platform_assignment(principal_id, &role),
        };
        if let Some(assignment) = assignment {
            changes.push(AssignmentChange {
                generation: row_generation,
                assignment,
                granted,
            });
        }
    }
    Ok(Some((changes, expected - 1)))
}

/// Forgets assignment changes older than `age` (every process has applied or reloaded by then).
pub fn forget_changes_older_than(
    conn: &mut PgConnection,
    age: std::time::Duration,
) -> Result<usize, StoreError> {
    use crate::schema::authz_changes;
    let cutoff = chrono::Utc::now()
        - chrono::Duration::from_std(age).unwrap_or_else(|_| chrono::Duration::hours(1));
    Ok(
        diesel::delete(authz_changes::table.filter(authz_changes::created_at.lt(cutoff)))
            .execute(conn)?,
    )
}

/// Every role assignment, for casbin's `g` lines, with the generation it was read at.
pub fn load_assignments(conn: &mut PgConnection) -> Result<(Vec<Assignment>, i64), StoreError> {
    conn.build_transaction()
        .repeatable_read()
        .read_only()
        .run(|conn| {
            let generation = authz_generation(conn)?;
            let mut assignments: Vec<Assignment> = principals::table
                .filter(principals::platform_role.is_not_null())
                .select((principals::id, principals::platform_role))
                .load::<(Uuid, Option<String>)>(conn)?
                .into_iter()
                .filter_map(|(id, role)| platform_assignment(id, role.as_deref()?))
                .collect();
            // Only accepted memberships grant: an invitation grants nothing until accepted.
            let rows: Vec<(Uuid, Uuid, String)> = memberships::table
                .filter(memberships::state.eq("active"))
                .select((
                    memberships::principal_id,
                    memberships::tenant_id,
                    memberships::role,
                ))
                .load(conn)?;
            assignments.extend(
                rows.into_iter()
                    .filter_map(|(principal_id, tenant_id, role)| {
                        membership_assignment(principal_id, tenant_id, &role)
                    }),
            );
            Ok((assignments, generation))
        })
}
