//! Fair-use limits: request rates per principal, per client address and per tenant for writes,
//! and the per-tenant quotas (defaults here, from configuration; overrides per tenant in the
//! control database).

use crate::config::{ConfigError, number};
use std::time::Duration;

/// One GCRA bucket: `burst` requests at once, refilled at `per_minute`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_minute: u32,
    pub burst: u32,
}

impl Rate {
    /// Time for one request's worth of the bucket to come back.
    pub fn interval(&self) -> Duration {
        Duration::from_secs(60) / self.per_minute.max(1)
    }

    /// Time for an empty bucket to fill again (the window the `RateLimit-Policy` header names).
    pub fn window(&self) -> Duration {
        self.interval() * self.burst
    }
}

/// Request rates, per API process (each replica counts on its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    /// `BULKHEAD_RATE_LIMIT_PER_MINUTE` / `BULKHEAD_RATE_LIMIT_BURST`: per authenticated
    /// principal (a person or an API key), on every route.
    pub principal: Rate,
    /// `BULKHEAD_ANONYMOUS_RATE_LIMIT_PER_MINUTE` / `..._BURST`: per client address, for
    /// requests without a valid credential (login, accept-invitation, bad tokens).
    pub anonymous: Rate,
    /// `BULKHEAD_WRITE_RATE_LIMIT_PER_MINUTE` / `..._BURST`: per principal, for requests that
    /// change something (every method but GET, HEAD and OPTIONS), denied ones included: a
    /// write costs several times a read (audit chain, assignment changes, mail).
    pub principal_writes: Rate,
    /// `BULKHEAD_TENANT_WRITE_RATE_LIMIT_PER_MINUTE` / `..._BURST`: all the allowed writes a
    /// tenant's own members and keys make in it together, so that adding principals does not
    /// add budget. Refused writes, platform staff and non-members are not counted against it
    /// (one member's denials, or outsiders, could otherwise spend a tenant's budget for it).
    pub tenant_writes: Rate,
}

/// What a tenant may hold at once.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Quota {
    /// Environments not yet destroyed.
    Environments,
    /// Jobs queued or running.
    QueuedJobs,
    /// API keys not revoked and not expired.
    ApiKeys,
    /// Memberships, active or invited.
    Members,
}

impl Quota {
    pub const ALL: [Quota; 4] = [
        Quota::Environments,
        Quota::QueuedJobs,
        Quota::ApiKeys,
        Quota::Members,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Quota::Environments => "environments",
            Quota::QueuedJobs => "queued_jobs",
            Quota::ApiKeys => "api_keys",
            Quota::Members => "members",
        }
    }

    /// What is counted, for messages.
    pub fn noun(self) -> &'static str {
        match self {
            Quota::Environments => "environments not yet destroyed",
            Quota::QueuedJobs => "jobs queued or running",
            Quota::ApiKeys => "live API keys",
            Quota::Members => "members (active or invited)",
        }
    }

    /// What a caller at the quota can do.
    pub fn remedy(self) -> &'static str {
        match self {
            Quota::Environments => {
                "destroy an environment it no longer needs, or ask a platform admin to raise the quota"
            }
            Quota::QueuedJobs => {
                "wait for queued jobs to finish (or cancel some), or ask a platform admin to raise the quota"
            }
            Quota::ApiKeys => {
                "revoke a key it no longer uses, or ask a platform admin to raise the quota"
            }
            Quota::Members => {
                "remove a member or withdraw an invitation, or ask a platform admin to raise the quota"
            }
        }
    }

    fn var(self) -> &'static str {
        match self {
            Quota::Environments => "BULKHEAD_QUOTA_ENVIRONMENTS",
            Quota::QueuedJobs => "BULKHEAD_QUOTA_QUEUED_JOBS",
            Quota::ApiKeys => "BULKHEAD_QUOTA_API_KEYS",
            Quota::Members => "BULKHEAD_QUOTA_MEMBERS",
        }
    }

    fn default_value(self) -> i64 {
        match self {
            Quota::Environments => 50,
            Quota::QueuedJobs => 25,
            Quota::ApiKeys => 25,
            Quota::Members => 200,
        }
    }
}

/// Upper bound of any quota, default or override.
pub const MAX_QUOTA: i64 = 100_000;

/// Quota defaults for tenants without an override.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaDefaults {
    pub environments: i64,
    pub queued_jobs: i64,
    pub api_keys: i64,
    pub members: i64,
}

impl QuotaDefaults {
    pub fn get(&self, quota: Quota) -> i64 {
        match quota {
            Quota::Environments => self.environments,
            Quota::QueuedJobs => self.queued_jobs,
            Quota::ApiKeys => self.api_keys,
            Quota::Members => self.members,
        }
    }
}

/// How denials reach the audit trail under a flood.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DenialAudit {
    /// `BULKHEAD_AUDIT_DENIALS_PER_MINUTE`: denials of one principal chained one event each per
    /// minute (per API process); beyond, they are counted and folded in per window.
    pub chained_per_minute: u32,
    /// `BULKHEAD_AUDIT_DENIAL_WINDOW_SECONDS`: the window counted denials are folded by.
    pub window_seconds: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub rate: RateLimits,
    pub quotas: QuotaDefaults,
    pub denials: DenialAudit,
}

impl Limits {
    pub fn from_lookup(get: &impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let rate = |per_minute_var, burst_var, per_minute, burst| -> Result<Rate, ConfigError> {
            Ok(Rate {
                per_minute: number(get, per_minute_var, per_minute, 1, 6_000_000)?,
                burst: number(get, burst_var, burst, 1, 1_000_000)?,
            })
        };
        let quota = |q: Quota| number(get, q.var(), q.default_value(), 0, MAX_QUOTA);
        Ok(Self {
            rate: RateLimits {
                principal: rate(
                    "BULKHEAD_RATE_LIMIT_PER_MINUTE",
                    "BULKHEAD_RATE_LIMIT_BURST",
                    3000,
                    500,
                )?,
                anonymous: rate(
                    "BULKHEAD_ANONYMOUS_RATE_LIMIT_PER_MINUTE",
                    "BULKHEAD_ANONYMOUS_RATE_LIMIT_BURST",
                    120,
                    30,
                )?,
                principal_writes: rate(
                    "BULKHEAD_WRITE_RATE_LIMIT_PER_MINUTE",
                    "BULKHEAD_WRITE_RATE_LIMIT_BURST",
                    600,
                    100,
                )?,
                tenant_writes: rate(
                    "BULKHEAD_TENANT_WRITE_RATE_LIMIT_PER_MINUTE",
                    "BULKHEAD_TENANT_WRITE_RATE_LIMIT_BURST",
                    1200,
                    200,
                )?,
            },
            quotas: QuotaDefaults {
                environments: quota(Quota::Environments)?,
                queued_jobs: quota(Quota::QueuedJobs)?,
                api_keys: quota(Quota::ApiKeys)?,
                members: quota(Quota::Members)?,
            },
            denials: DenialAudit {
                chained_per_minute: number(
                    get,
                    "BULKHEAD_AUDIT_DENIALS_PER_MINUTE",
                    20,
                    0,
                    1_000_000,
                )?,
                window_seconds: number(get, "BULKHEAD_AUDIT_DENIAL_WINDOW_SECONDS", 60, 1, 3600)?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bad_values_name_the_variable() {
        let limits = Limits::from_lookup(&|_| None).expect("defaults");
        assert_eq!(limits.rate.principal.per_minute, 3000);
        assert_eq!(limits.quotas.get(Quota::Environments), 50);
        assert_eq!(limits.rate.anonymous.window(), Duration::from_secs(15));
        assert_eq!(
            limits.rate.principal_writes.interval(),
            Duration::from_millis(100)
        );
        assert_eq!(
            limits.rate.tenant_writes.interval(),
            Duration::from_millis(50)
        );
        let err = Limits::from_lookup(&|name| {
            (name == "BULKHEAD_QUOTA_MEMBERS").then(|| "-1".to_owned())
        })
        .expect_err("negative quota");
        assert_eq!(err.var, "BULKHEAD_QUOTA_MEMBERS");
        let err = Limits::from_lookup(&|name| {
            (name == "BULKHEAD_RATE_LIMIT_BURST").then(|| "0".to_owned())
        })
        .expect_err("zero burst");
        assert_eq!(err.var, "BULKHEAD_RATE_LIMIT_BURST");
    }
}
