//! Queries of the control database, one module per table; handlers never write SQL.

pub mod api_keys;
pub mod audit;
pub mod budgets;
pub mod costs;
pub mod denials;
pub mod environments;
pub mod expiry;
pub mod housekeeping;
pub mod idempotency;
pub mod jobs;
pub mod mail;
pub mod memberships;
pub mod metering;
pub mod outbox;
pub mod policies;
pub mod principals;
pub mod promotion;
pub mod quotas;
pub mod scheduler;
pub mod sessions;
pub mod stops;
pub mod tenants;
pub mod throttle;
pub mod webhooks;

pub use crate::db::StoreError;

/// A page of rows and the cursor of the next page, if any.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// Largest page a list endpoint returns.
pub const MAX_PAGE: i64 = 200;

/// An age as whole seconds for `make_interval(secs => …)` (saturating).
pub(crate) fn seconds(age: std::time::Duration) -> i64 {
    i64::try_from(age.as_secs()).unwrap_or(i64::MAX)
}
