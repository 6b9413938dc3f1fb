//! Tenant quotas: the overrides a platform admin set, what a tenant holds against each quota,
//! and the check a creating transaction makes (with the tenant row locked) before it adds one.

use crate::db::StoreError;
use crate::jobs::JobState;
use crate::limits::{Quota, QuotaDefaults};
use crate::schema::{api_keys, environments, jobs, memberships, tenant_quotas};
use chrono::Utc;
use diesel::prelude::*;
use uuid::Uuid;

/// A tenant's overrides (`None`: the installation's default applies).
#[derive(Debug, Clone, Default, PartialEq, Eq, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = tenant_quotas)]
#[diesel(treat_none_as_null = true)]
pub struct Overrides {
    pub environments: Option<i64>,
    pub queued_jobs: Option<i64>,
    pub api_keys: Option<i64>,
    pub members: Option<i64>,
}

impl Overrides {
    pub fn get(&self, quota: Quota) -> Option<i64> {
        match quota {
            Quota::Environments => self.environments,
            Quota::QueuedJobs => self.queued_jobs,
            Quota::ApiKeys => self.api_keys,
            Quota::Members => self.members,
        }
    }
}

/// One quota of a tenant: its value, where the value comes from, and what is held against it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    pub quota: Quota,
    pub limit: i64,
    pub overridden: bool,
    pub used: i64,
}

/// A quota that one more would exceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exceeded {
    pub quota: Quota,
    pub limit: i64,
    pub used: i64,
}

pub fn overrides(conn: &mut PgConnection, tenant_id: Uuid) -> Result<Overrides, StoreError> {
    Ok(tenant_quotas::table
        .find(tenant_id)
        .select(Overrides::as_select())
        .first(conn)
        .optional()?
        .unwrap_or_default())
}

/// Replaces the tenant's overrides (all `None` removes the row).
pub fn set(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    overrides: &Overrides,
    by: Uuid,
) -> Result<(), StoreError> {
    if *overrides == Overrides::default() {
        diesel::delete(tenant_quotas::table.find(tenant_id)).execute(conn)?;
        return Ok(());
    }
    diesel::insert_into(tenant_quotas::table)
        .values((
            tenant_quotas::tenant_id.eq(tenant_id),
            overrides,
            tenant_quotas::updated_by.eq(by),
        ))
        .on_conflict(tenant_quotas::tenant_id)
        .do_update()
        .set((
            overrides,
            tenant_quotas::updated_at.eq(Utc::now()),
            tenant_quotas::updated_by.eq(by),
        ))
        .execute(conn)?;
    Ok(())
}

/// What the tenant holds against `quota` now.
pub fn used(conn: &mut PgConnection, tenant_id: Uuid, quota: Quota) -> Result<i64, StoreError> {
    let count = match quota {
        Quota::Environments => environments::table
            .filter(environments::tenant_id.eq(tenant_id))
            .filter(environments::state.ne(crate::lifecycle::EnvironmentState::Destroyed))
            .count()
            .get_result(conn)?,
        Quota::QueuedJobs => {
            let active: Vec<&str> = JobState::ALL
                .into_iter()
                .filter(|s| !s.is_terminal())
                .map(JobState::as_str)
                .collect();
            jobs::table
                .filter(jobs::tenant_id.eq(tenant_id))
                .filter(jobs::state.eq_any(active))
                .count()
                .get_result(conn)?
        }
        Quota::ApiKeys => api_keys::table
            .filter(api_keys::tenant_id.eq(tenant_id))
            .filter(api_keys::revoked_at.is_null())
            .filter(
                api_keys::expires_at
                    .is_null()
                    .or(api_keys::expires_at.gt(Utc::now())),
            )
            .count()
            .get_result(conn)?,
        // Service accounts (API keys) are counted by `ApiKeys`; an invitation that expired
        // holds nothing.
        Quota::Members => memberships::table
            .filter(memberships::tenant_id.eq(tenant_id))
            .filter(
                memberships::state.eq("active").or(memberships::state
                    .eq("invited")
                    .and(memberships::invitation_expires_at.gt(Utc::now()))),
            )
            .filter(diesel::dsl::not(diesel::dsl::exists(
                api_keys::table.filter(api_keys::principal_id.eq(memberships::principal_id)),
            )))
            .count()
            .get_result(conn)?,
    };
    Ok(count)
}

/// Every quota of the tenant with its value and use.
pub fn standings(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    defaults: &QuotaDefaults,
) -> Result<Vec<Standing>, StoreError> {
    let overrides = overrides(conn, tenant_id)?;
    Quota::ALL
        .into_iter()
        .map(|quota| {
            Ok(Standing {
                quota,
                limit: overrides.get(quota).unwrap_or(defaults.get(quota)),
                overridden: overrides.get(quota).is_some(),
                used: used(conn, tenant_id, quota)?,
            })
        })
        .collect()
}

/// Whether `adding` more would exceed `quota`. Call in the transaction that adds them, with the
/// tenant row locked (`tenants::lock_for_change`), so two requests cannot both take the last one.
pub fn check(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    quota: Quota,
    adding: i64,
    defaults: &QuotaDefaults,
) -> Result<Result<(), Exceeded>, StoreError> {
    let limit = overrides(conn, tenant_id)?
        .get(quota)
        .unwrap_or(defaults.get(quota));
    let used = used(conn, tenant_id, quota)?;
    Ok(if used + adding > limit {
        Err(Exceeded { quota, limit, used })
    } else {
        Ok(())
    })
}
