//! Environments and what they own: resources, isolation guarantees, sealed credentials.

use crate::guarantees::{Enforcement, GuaranteeStatus};
use crate::lifecycle::{self, EnvironmentState};
use crate::schema::{environment_credentials, environments, isolation_guarantees, resources};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use super::tenants::page;
use super::{Page, StoreError};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = environments)]
pub struct Environment {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub name: String,
    pub stage: String,
    pub isolation: String,
    pub blueprint: String,
    pub blueprint_version: i32,
    pub cost_tags: serde_json::Value,
    pub state: EnvironmentState,
    pub drift: Option<serde_json::Value>,
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When a worker destroys it (a TTL), if ever.
    pub expires_at: Option<DateTime<Utc>>,
    /// When its next scheduled drift check is due (its stage's interval).
    pub drift_check_due_at: Option<DateTime<Utc>>,
    /// Who set its TTL: the requester of the destroy its expiry queues.
    pub expires_set_by: Option<Uuid>,
    /// When the scheduler next looks at it (the next edge of its stage's schedule).
    pub schedule_due_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = environments)]
pub struct NewEnvironment<'a> {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub name: &'a str,
    pub stage: &'a str,
    pub isolation: &'a str,
    pub blueprint: &'a str,
    pub blueprint_version: i32,
    pub cost_tags: serde_json::Value,
    pub created_by: Option<Uuid>,
    pub expires_at: Option<DateTime<Utc>>,
    pub drift_check_due_at: Option<DateTime<Utc>>,
    pub expires_set_by: Option<Uuid>,
    /// Now, when its stage has a schedule: the scheduler stops it once it is ready if it was
    /// made outside the window.
    pub schedule_due_at: Option<DateTime<Utc>>,
}

pub fn insert(
    conn: &mut PgConnection,
    new: &NewEnvironment<'_>,
) -> Result<Environment, StoreError> {
    Ok(diesel::insert_into(environments::table)
        .values(new)
        .returning(Environment::as_returning())
        .get_result(conn)?)
}

pub fn find(conn: &mut PgConnection, id: Uuid) -> Result<Option<Environment>, StoreError> {
    Ok(environments::table
        .find(id)
        .select(Environment::as_select())
        .first(conn)
        .optional()?)
}

/// The environment, locked as an update would to the end of the transaction: state checks
/// made on it hold until the caller commits what they guard.
pub fn lock(conn: &mut PgConnection, id: Uuid) -> Result<Option<Environment>, StoreError> {
    Ok(environments::table
        .find(id)
        .select(Environment::as_select())
        .for_no_key_update()
        .first(conn)
        .optional()?)
}

/// A tenant's environment by id, or by name among its live (not destroyed) environments.
pub fn find_in_tenant(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    reference: &str,
) -> Result<Option<Environment>, StoreError> {
    if reference.contains('\0') {
        // No name holds a NUL, and PostgreSQL refuses one in text: not found, like any other.
        return Ok(None);
    }
    let query = environments::table
        .filter(environments::tenant_id.eq(tenant_id))
        .select(Environment::as_select());
    Ok(match Uuid::try_parse(reference) {
        Ok(id) => query
            .filter(environments::id.eq(id))
            .first(conn)
            .optional()?,
        Err(_) => query
            .filter(environments::name.eq(reference))
            .filter(environments::state.ne(EnvironmentState::Destroyed))
            .first(conn)
            .optional()?,
    })
}

pub fn list(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Page<Environment>, StoreError> {
    let mut query = environments::table
        .filter(environments::tenant_id.eq(tenant_id))
        .select(Environment::as_select())
        .order(environments::id.asc())
        .limit(limit + 1)
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(environments::id.gt(after));
    }
    let rows = query.load(conn)?;
    Ok(page(rows, limit, |e| e.id.to_string()))
}

/// A tenant's environments that still stand (not destroyed), oldest first, locked as an update
/// would lock them, so a teardown and a worker's state write do not interleave.
pub fn standing_for_update(
    conn: &mut PgConnection,
    tenant_id: Uuid,
) -> Result<Vec<Environment>, StoreError> {
    Ok(environments::table
        .filter(environments::tenant_id.eq(tenant_id))
        .filter(environments::state.ne(EnvironmentState::Destroyed))
        .order(environments::id.asc())
        .select(Environment::as_select())
        .for_no_key_update()
        .load(conn)?)
}

/// Sets when the environment expires (`None`: never) and who set it, unless it is destroyed or
/// being destroyed; the environment as it now is, or `None` if it was not changed.
pub fn set_expiry(
    conn: &mut PgConnection,
    id: Uuid,
    expires_at: Option<DateTime<Utc>>,
    by: Uuid,
) -> Result<Option<Environment>, StoreError> {
    Ok(diesel::update(environments::table.find(id).filter(
        environments::state.ne_all([EnvironmentState::Destroyed, EnvironmentState::Destroying]),
    ))
    .set((
        environments::expires_at.eq(expires_at),
        environments::expires_set_by.eq(Some(by)),
        environments::updated_at.eq(Utc::now()),
    ))
    .returning(Environment::as_returning())
    .get_result(conn)
    .optional()?)
}

/// Sets the state and, when given, the drift report (`Some(None)` clears it). Only from a
/// state the transition table allows (`lifecycle::TRANSITIONS`): any other is a conflict and
/// nothing is written.
pub fn set_state(
    conn: &mut PgConnection,
    id: Uuid,
    state: EnvironmentState,
    drift: Option<Option<serde_json::Value>>,
) -> Result<(), StoreError> {
    let target = diesel::update(
        environments::table
            .find(id)
            .filter(environments::state.eq_any(lifecycle::sources_of(state))),
    );
    let changed = match drift {
        Some(drift) => target
            .set((
                environments::state.eq(state),
                environments::drift.eq(drift),
                environments::updated_at.eq(Utc::now()),
            ))
            .execute(conn)?,
        None => target
            .set((
                environments::state.eq(state),
                environments::updated_at.eq(Utc::now()),
            ))
            .execute(conn)?,
    };
    if changed == 0 {
        return Err(StoreError::Transition(format!(
            "environment {id} cannot move to {state} from its current state"
        )));
    }
    Ok(())
}

/// Marks the environment `failed` if it is in one of `states`
/// (`EnvironmentState::CHANGING` or `MIDWAY`).
pub fn mark_failed_if_in(
    conn: &mut PgConnection,
    id: Uuid,
    states: &[EnvironmentState],
) -> Result<(), StoreError> {
    diesel::update(
        environments::table
            .find(id)
            .filter(environments::state.eq_any(states)),
    )
    .set((
        environments::state.eq(EnvironmentState::Failed),
        environments::updated_at.eq(Utc::now()),
    ))
    .execute(conn)?;
    Ok(())
}

/// One thing an environment owns on its target, as last applied.
#[derive(Debug, Clone, Queryable)]
pub struct ResourceRow {
    pub kind: String,
    pub name: String,
    pub attributes: serde_json::Value,
    pub cost_tags: serde_json::Value,
    pub state: String,
}

/// Replaces the environment's resource rows with what the target now holds.
/// Marks every resource row of the environment deleted, then upserts `present` (kind, name,
/// attributes) with the final cost tags, in two statements whatever the number of resources.
pub fn record_resources(
    conn: &mut PgConnection,
    environment_id: Uuid,
    present: &[(String, String, serde_json::Value)],
    cost_tags: &serde_json::Value,
) -> Result<(), StoreError> {
    use diesel::upsert::excluded;
    let now = Utc::now();
    diesel::update(resources::table.filter(resources::environment_id.eq(environment_id)))
        .set((
            resources::state.eq("deleted"),
            resources::updated_at.eq(now),
        ))
        .execute(conn)?;
    // One row per (kind, name): a statement cannot upsert the same row twice.
    let mut seen = std::collections::HashSet::new();
    let rows: Vec<_> = present
        .iter()
        .rev()
        .filter(|(kind, name, _)| seen.insert((kind, name)))
        .map(|(kind, name, attributes)| {
            (
                resources::id.eq(Uuid::now_v7()),
                resources::environment_id.eq(environment_id),
                resources::kind.eq(kind),
                resources::name.eq(name),
                resources::attributes.eq(attributes),
                resources::cost_tags.eq(cost_tags),
                resources::state.eq("present"),
            )
        })
        .collect();
    if rows.is_empty() {
        return Ok(());
    }
    diesel::insert_into(resources::table)
        .values(&rows)
        .on_conflict((resources::environment_id, resources::kind, resources::name))
        .do_update()
        .set((
            resources::attributes.eq(excluded(resources::attributes)),
            resources::cost_tags.eq(excluded(resources::cost_tags)),
            resources::state.eq("present"),
            resources::updated_at.eq(now),
        ))
        .execute(conn)?;
    Ok(())
}

pub fn list_resources(
    conn: &mut PgConnection,
    environment_id: Uuid,
) -> Result<Vec<ResourceRow>, StoreError> {
    Ok(resources::table
        .filter(resources::environment_id.eq(environment_id))
        .order((resources::kind.asc(), resources::name.asc()))
        .select((
            resources::kind,
            resources::name,
            resources::attributes,
            resources::cost_tags,
            resources::state,
        ))
        .load(conn)?)
}

#[derive(Debug, Clone, Queryable)]
pub struct GuaranteeRow {
    pub layer: String,
    pub mechanism: String,
    pub status: String,
    pub evidence: String,
    pub checked_at: DateTime<Utc>,
    pub enforcement: String,
    pub provided_by: Option<String>,
}

/// One guarantee as a verification run found it.
pub struct GuaranteeRecord<'a> {
    pub layer: &'a str,
    pub mechanism: &'a str,
    pub status: GuaranteeStatus,
    pub enforcement: Enforcement,
    pub evidence: &'a str,
    pub provided_by: Option<&'a str>,
}

/// Replaces the environment's guarantees with those of one verification run (a guarantee no
/// longer checked does not linger), in two statements.
pub fn record_guarantees(
    conn: &mut PgConnection,
    environment_id: Uuid,
    checks: &[GuaranteeRecord<'_>],
) -> Result<(), StoreError> {
    let now = Utc::now();
    let mut seen = std::collections::HashSet::new();
    let rows: Vec<_> = checks
        .iter()
        .rev()
        .filter(|c| seen.insert((c.layer, c.mechanism)))
        .map(|c| {
            (
                isolation_guarantees::environment_id.eq(environment_id),
                isolation_guarantees::layer.eq(c.layer),
                isolation_guarantees::mechanism.eq(c.mechanism),
                isolation_guarantees::status.eq(c.status.as_str()),
                isolation_guarantees::evidence.eq(c.evidence),
                isolation_guarantees::checked_at.eq(now),
                isolation_guarantees::enforcement.eq(c.enforcement.as_str()),
                isolation_guarantees::provided_by.eq(c.provided_by),
            )
        })
        .collect();
    clear_guarantees(conn, environment_id)?;
    if rows.is_empty() {
        return Ok(());
    }
    diesel::insert_into(isolation_guarantees::table)
        .values(&rows)
        .execute(conn)?;
    Ok(())
}

pub fn guarantees(
    conn: &mut PgConnection,
    environment_id: Uuid,
) -> Result<Vec<GuaranteeRow>, StoreError> {
    Ok(isolation_guarantees::table
        .filter(isolation_guarantees::environment_id.eq(environment_id))
        .order((
            isolation_guarantees::layer.asc(),
            isolation_guarantees::mechanism.asc(),
        ))
        .select((
            isolation_guarantees::layer,
            isolation_guarantees::mechanism,
            isolation_guarantees::status,
            isolation_guarantees::evidence,
            isolation_guarantees::checked_at,
            isolation_guarantees::enforcement,
            isolation_guarantees::provided_by,
        ))
        .load(conn)?)
}

pub fn clear_guarantees(conn: &mut PgConnection, environment_id: Uuid) -> Result<(), StoreError> {
    diesel::delete(
        isolation_guarantees::table.filter(isolation_guarantees::environment_id.eq(environment_id)),
    )
    .execute(conn)?;
    Ok(())
}

#[derive(Debug, Clone, Queryable, Insertable)]
#[diesel(table_name = environment_credentials)]
pub struct StoredCredentials {
    pub environment_id: Uuid,
    pub host: String,
    pub port: i32,
    pub database: String,
    pub schema: String,
    pub username: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
    pub created_at: DateTime<Utc>,
    /// The id of the key that sealed the password; `None` for rows sealed before key ids.
    pub key_id: Option<String>,
}

impl StoredCredentials {
    /// The sealed password, as [`crate::crypto::Keyring::open`] takes it.
    pub fn sealed(&self) -> crate::crypto::Sealed {
        crate::crypto::Sealed {
            key_id: self.key_id.clone(),
            nonce: self.nonce.clone(),
            ciphertext: self.ciphertext.clone(),
        }
    }
}

pub fn credentials(
    conn: &mut PgConnection,
    environment_id: Uuid,
) -> Result<Option<StoredCredentials>, StoreError> {
    Ok(environment_credentials::table
        .find(environment_id)
        .first(conn)
        .optional()?)
}

/// Stores credentials unless some are stored already (a retried apply keeps the first password).
pub fn store_credentials_once(
    conn: &mut PgConnection,
    row: &StoredCredentials,
) -> Result<(), StoreError> {
    diesel::insert_into(environment_credentials::table)
        .values(row)
        .on_conflict_do_nothing()
        .execute(conn)?;
    Ok(())
}

pub fn delete_credentials(conn: &mut PgConnection, environment_id: Uuid) -> Result<(), StoreError> {
    diesel::delete(environment_credentials::table.find(environment_id)).execute(conn)?;
    Ok(())
}

/// Up to `limit` stored credentials not sealed with key `current_key` (sealed with an older
/// key, or before key ids), with environment ids above `after`, in id order, locked for the
/// caller's transaction; rows another transaction holds are skipped.
pub fn credentials_to_reseal(
    conn: &mut PgConnection,
    current_key: &str,
    after: Uuid,
    limit: i64,
) -> Result<Vec<StoredCredentials>, StoreError> {
    use diesel::PgExpressionMethods;
    Ok(environment_credentials::table
        .filter(environment_credentials::key_id.is_distinct_from(current_key))
        .filter(environment_credentials::environment_id.gt(after))
        .order(environment_credentials::environment_id)
        .limit(limit)
        .for_update()
        .skip_locked()
        .load(conn)?)
}

/// How many stored credentials are (`true`) or are not (`false`) sealed with `key`.
pub fn count_credentials_sealed_with(
    conn: &mut PgConnection,
    key: &str,
    with: bool,
) -> Result<i64, StoreError> {
    use diesel::PgExpressionMethods;
    let column = environment_credentials::key_id;
    Ok(if with {
        environment_credentials::table
            .filter(column.eq(key))
            .count()
            .get_result(conn)?
    } else {
        environment_credentials::table
            .filter(column.is_distinct_from(key))
            .count()
            .get_result(conn)?
    })
}

/// Replaces a row's sealed password (the same password, sealed with another key).
pub fn replace_sealed(
    conn: &mut PgConnection,
    environment_id: Uuid,
    sealed: &crate::crypto::Sealed,
) -> Result<(), StoreError> {
    diesel::update(environment_credentials::table.find(environment_id))
        .set((
            environment_credentials::nonce.eq(&sealed.nonce),
            environment_credentials::ciphertext.eq(&sealed.ciphertext),
            environment_credentials::key_id.eq(&sealed.key_id),
        ))
        .execute(conn)?;
    Ok(())
}
