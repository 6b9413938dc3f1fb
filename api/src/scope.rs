//! Tenant scope: resolves `{tenant}` from a path and authorizes the caller on it. A tenant the
//! caller may not see answers exactly like a missing one (404); a visible tenant with a
//! forbidden action answers 403. Every denial is audited and counted.

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use bulkhead_core::audit::AuditResult;
use bulkhead_core::authz::{Action, Domain, Object};
use bulkhead_core::store::{self, tenants::Tenant};
use serde_json::json;

pub fn tenant_not_found(reference: &str) -> ApiError {
    ApiError::NotFound(format!(
        "no tenant '{reference}' exists that you can see; check the id or slug"
    ))
}

impl AppState {
    /// Why `caller` may not grant `role` in `tenant`, if it would give more than the caller
    /// holds there: the first permission of the role the caller lacks.
    pub async fn exceeds_own(
        &self,
        caller: &Caller,
        tenant: &Tenant,
        role: bulkhead_core::domain::TenantRole,
    ) -> Option<String> {
        self.authz
            .read()
            .await
            .lacks_any_of(caller.id, Domain::Tenant(tenant.id), role.role())
            .map(|permission| {
                format!(
                    "role {} includes {permission}, which you do not hold in this tenant; grant \
                     a role within your own permissions",
                    role.as_str()
                )
            })
    }

    /// Refuses `action` on `object` in `tenant` with `reason` (403): recorded like every denial.
    pub async fn deny(
        &self,
        caller: &Caller,
        tenant: &Tenant,
        object: Object,
        action: Action,
        reason: String,
    ) -> ApiError {
        let target = format!("tenant/{}", tenant.slug);
        match self
            .record_denial(caller, Some(tenant.id), object, action, target)
            .await
        {
            Ok(()) => ApiError::Forbidden(reason),
            Err(error) => error,
        }
    }

    /// Records a denied attempt in the audit trail and the metrics. A principal's first
    /// denials each minute are chained one event each (their own transaction); beyond that
    /// allowance they are counted (one upsert, no chain lock) and folded into the chain as one
    /// event per principal, tenant, action and window: a flood cannot queue every other audited
    /// write behind the chain's lock, and no denial goes unrecorded.
    pub async fn record_denial(
        &self,
        caller: &Caller,
        tenant_id: Option<uuid::Uuid>,
        object: Object,
        action: Action,
        target: String,
    ) -> ApiResult<()> {
        self.metrics
            .authz_denials
            .with_label_values(&[object.as_str(), action.as_str()])
            .inc();
        let action = format!("{}.{}", object.as_str(), action.as_str());
        if self.chain_this_denial(caller.id) {
            let event = caller.audit(tenant_id, &action, target, AuditResult::Denied, json!({}));
            return self
                .db(move |conn| Ok(store::audit::append(conn, &event)?))
                .await;
        }
        let denial = store::denials::Denial {
            principal_id: caller.id,
            actor: caller.label.clone(),
            tenant_id,
            action,
            target,
            request_id: caller.request_id.clone(),
        };
        let window = self.config.limits.denials.window_seconds;
        self.db(move |conn| Ok(store::denials::count(conn, &denial, window)?))
            .await
    }

    /// Whether this denial of `principal` is within its per-minute allowance of chained events.
    fn chain_this_denial(&self, principal: uuid::Uuid) -> bool {
        let minute = chrono::Utc::now().timestamp().div_euclid(60);
        let mut seen = self
            .denials_seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.len() > 10_000 {
            seen.retain(|_, (m, _)| *m == minute);
        }
        let entry = seen.entry(principal).or_insert((minute, 0));
        if entry.0 != minute {
            *entry = (minute, 0);
        }
        entry.1 = entry.1.saturating_add(1);
        entry.1 <= self.config.limits.denials.chained_per_minute
    }

    /// The tenant named by `reference`, if the caller may do `action` on `object` in it.
    pub async fn authorize_tenant(
        &self,
        caller: &Caller,
        reference: &str,
        object: Object,
        action: Action,
    ) -> ApiResult<Tenant> {
        let tenant = match &caller.prefetched_tenant {
            Some((prefetched, found)) if prefetched == reference => found.clone(),
            _ => store::tenants::find_by_ref(&*self.request_conn().await?, reference).await?,
        }
        .ok_or_else(|| tenant_not_found(reference))?;
        let domain = Domain::Tenant(tenant.id);
        let (visible, allowed, member) = {
            let authz = self.authz.read().await;
            (
                authz.allows(caller.id, domain, Object::Tenant, Action::Read),
                authz.allows(caller.id, domain, object, action),
                authz.holds_role_in(caller.id, domain),
            )
        };
        if !visible {
            self.record_denial(
                caller,
                Some(tenant.id),
                object,
                action,
                format!("tenant/{reference}"),
            )
            .await?;
            return Err(tenant_not_found(reference));
        }
        if !allowed {
            self.record_denial(
                caller,
                Some(tenant.id),
                object,
                action,
                format!("tenant/{}", tenant.slug),
            )
            .await?;
            return Err(ApiError::Forbidden(format!(
                "your role in tenant '{}' does not allow {} on {}; ask a tenant admin",
                tenant.slug,
                action.as_str(),
                object.as_str()
            )));
        }
        // An allowed change by one of the tenant's own members or keys spends the tenant's
        // shared budget of writes. Denied writes spend only their author's own budget (so one
        // member's flood of refused writes cannot hold back the tenant's admins); outsiders and
        // platform staff never spend it (nobody can exhaust it for the tenant, and the tenant's
        // own flood cannot lock staff out).
        if caller.write && action != Action::Read && member {
            let limits = &self.rate_limits;
            caller
                .standings
                .charge_tenant_once(|| limits.tenant_write(tenant.id))?;
        }
        Ok(tenant)
    }

    /// Authorizes a platform-wide action (creating tenants, the whole audit trail).
    pub async fn authorize_platform(
        &self,
        caller: &Caller,
        object: Object,
        action: Action,
    ) -> ApiResult<()> {
        let allowed = self
            .authz
            .read()
            .await
            .allows(caller.id, Domain::Platform, object, action);
        if allowed {
            return Ok(());
        }
        self.record_denial(caller, None, object, action, "platform".to_owned())
            .await?;
        Err(ApiError::Forbidden(format!(
            "{} on {} is for platform admins{}",
            action.as_str(),
            object.as_str(),
            if object == Object::Tenant {
                " and partners"
            } else {
                ""
            }
        )))
    }
}
