//! Tenants' change policies (`tenant_policies`): the stored policy, or the default for a tenant
//! that never set one.

use super::StoreError;
use crate::governance::TenantPolicy;
use crate::schema::tenant_policies;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

/// A tenant's policy and who last set it (`None`: never set, the default applies).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredPolicy {
    pub policy: TenantPolicy,
    pub updated_by: Option<Uuid>,
    pub updated_at: Option<DateTime<Utc>>,
}

/// The tenant's policy: the stored one, or the default.
pub fn get(conn: &mut PgConnection, tenant_id: Uuid) -> Result<StoredPolicy, StoreError> {
    let row: Option<(serde_json::Value, Option<Uuid>, DateTime<Utc>)> = tenant_policies::table
        .find(tenant_id)
        .select((
            tenant_policies::policy,
            tenant_policies::updated_by,
            tenant_policies::updated_at,
        ))
        .first(conn)
        .optional()?;
    Ok(match row {
        None => StoredPolicy {
            policy: TenantPolicy::default(),
            updated_by: None,
            updated_at: None,
        },
        Some((policy, updated_by, updated_at)) => StoredPolicy {
            policy: serde_json::from_value(policy).map_err(|e| {
                StoreError::Unavailable(format!("tenant {tenant_id}'s stored policy: {e}"))
            })?,
            updated_by,
            updated_at: Some(updated_at),
        },
    })
}

/// Replaces the tenant's policy.
pub fn put(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    policy: &TenantPolicy,
    by: Uuid,
) -> Result<StoredPolicy, StoreError> {
    let stored = serde_json::to_value(policy)
        .map_err(|e| StoreError::Unavailable(format!("policy does not serialize: {e}")))?;
    let now = Utc::now();
    // The time as stored (PostgreSQL keeps microseconds), so a read gives the same answer.
    let updated_at: DateTime<Utc> = diesel::insert_into(tenant_policies::table)
        .values((
            tenant_policies::tenant_id.eq(tenant_id),
            tenant_policies::policy.eq(&stored),
            tenant_policies::updated_by.eq(Some(by)),
            tenant_policies::updated_at.eq(now),
        ))
        .on_conflict(tenant_policies::tenant_id)
        .do_update()
        .set((
            tenant_policies::policy.eq(&stored),
            tenant_policies::updated_by.eq(Some(by)),
            tenant_policies::updated_at.eq(now),
        ))
        .returning(tenant_policies::updated_at)
        .get_result(conn)?;
    Ok(StoredPolicy {
        policy: policy.clone(),
        updated_by: Some(by),
        updated_at: Some(updated_at),
    })
}
