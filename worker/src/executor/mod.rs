//! Executors: act on target servers. `postgres` provisions environments on PostgreSQL from a
//! plan (see `bulkhead_core::plan`), reads their actual state from the catalogs, destroys them
//! and probes their isolation. Everything here is blocking; call it from `spawn_blocking`.

mod actions;
mod baseline;
mod catalog;
mod fence;
mod grants;
mod lockdown;
mod logins;
mod meta;
mod pool;
mod postgres;
mod probes;
mod session;
mod spares;
mod sql;

pub use fence::{Fence, Report};
pub use logins::StrayEnded;
pub use postgres::PostgresExecutor;

use bulkhead_core::guarantees::{self, Enforcement, Guarantee, GuaranteeStatus};
use serde::{Deserialize, Serialize};

/// Where tenants' applications connect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    /// libpq `sslmode` clients use here (from the admin URL's `sslmode`, if it has one): the
    /// isolation probes connect with it, as the tenant's applications would.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssl_mode: Option<String>,
}

impl Endpoint {
    /// Host, port (default 5432) and `sslmode` of a libpq URL
    /// (`postgres://user[:pw]@host[:port]/db?…`); an IPv6 host comes without its brackets.
    pub fn from_url(url: &str) -> Result<Self, bulkhead_core::dburl::UrlError> {
        let parsed = bulkhead_core::dburl::ConnUrl::parse(url)?;
        Ok(Self {
            host: parsed.host().unwrap_or_else(|| "127.0.0.1".to_owned()),
            port: parsed.port().unwrap_or(5432),
            ssl_mode: parsed.param("sslmode"),
        })
    }
}

/// The servers an executor acts on. URLs are libpq URLs (`postgres://user[:password]@host:port/db`).
#[derive(Clone, PartialEq, Eq)]
pub struct Targets {
    /// Admin URL of the pooled server, on its maintenance database.
    pub shared_admin_url: String,
    /// The pooled database on that server; `prepare` creates it when missing.
    pub pooled_database: String,
    /// Admin URL (maintenance database) of the server dedicated databases are made on.
    pub dedicated_admin_url: String,
    pub shared_endpoint: Endpoint,
    pub dedicated_endpoint: Endpoint,
}

impl std::fmt::Debug for Targets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Targets")
            .field(
                "shared_admin_url",
                &bulkhead_core::dburl::redact(&self.shared_admin_url),
            )
            .field("pooled_database", &self.pooled_database)
            .field(
                "dedicated_admin_url",
                &bulkhead_core::dburl::redact(&self.dedicated_admin_url),
            )
            .field("shared_endpoint", &self.shared_endpoint)
            .field("dedicated_endpoint", &self.dedicated_endpoint)
            .finish()
    }
}

/// How the tenant's application connects (the password is handed out separately, once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionInfo {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub schema: String,
    pub username: String,
}

/// The outcome of one isolation probe, or a gap the tier has (see `bulkhead_core::guarantees`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuaranteeCheck {
    /// `data`, `identity`, `metadata` or `compute`.
    pub layer: String,
    /// What enforces it, unique within the layer, such as `role_connection_limit`.
    pub mechanism: String,
    pub status: GuaranteeStatus,
    /// A wall (the tenant cannot lift it), a default (`SET` lifts it) or none (a gap).
    pub enforcement: Enforcement,
    /// One line: what was tried and what the server answered.
    pub evidence: String,
    /// For a gap: which tier or placement provides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provided_by: Option<String>,
}

impl GuaranteeCheck {
    /// A probe's finding for the catalog entry `layer`/`mechanism`: verified or violated.
    pub(crate) fn probed(layer: &str, mechanism: &str, holds: bool, evidence: String) -> Self {
        let enforcement =
            guarantees::find(layer, mechanism).map_or(Enforcement::Wall, |g| g.enforcement);
        Self {
            layer: layer.to_owned(),
            mechanism: mechanism.to_owned(),
            status: if holds {
                GuaranteeStatus::Verified
            } else {
                GuaranteeStatus::Violated
            },
            enforcement,
            evidence,
            provided_by: None,
        }
    }

    /// A gap of the tier, with what shows it.
    pub(crate) fn gap(guarantee: &Guarantee, evidence: String) -> Self {
        Self {
            layer: guarantee.layer.to_owned(),
            mechanism: guarantee.mechanism.to_owned(),
            status: GuaranteeStatus::NotProvided,
            enforcement: Enforcement::None,
            evidence,
            provided_by: guarantee.provided_by.map(str::to_owned),
        }
    }

    /// Whether this is a wall or default found missing (gaps are not violations).
    pub fn is_violation(&self) -> bool {
        self.status == GuaranteeStatus::Violated
    }
}

/// Why an executor call did not complete.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The target changed since the plan was made; make a new plan.
    #[error("stale plan: {0}")]
    StalePlan(String),
    /// The target refused a step; a person must act (the reason says what failed and where).
    #[error("{step} failed on {target}: {reason}")]
    Target {
        step: String,
        target: String,
        reason: String,
    },
    /// The target could not be reached or was busy (connection refused or lost, too many
    /// connections, lock timeout, deadlock); trying again later may work.
    #[error("target unavailable: {0}")]
    Unreachable(String),
    /// The `on_step` callback asked to stop between two steps.
    #[error("stopped between steps on request")]
    Aborted,
    /// The target's fence refused this run's token: another worker holds the job's lease now
    /// (or a later job of the environment ran). Nothing more may be written for this attempt.
    #[error("fenced off: {0}")]
    Fenced(String),
}

impl ExecError {
    /// Whether the same job may succeed if tried again: unreachable or busy targets and aborted
    /// runs are; a stale plan (needs a new plan) and a refused step (needs a person) are not.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unreachable(_) | Self::Aborted)
    }
}

/// Returned by the `on_step` callback of [`PostgresExecutor::apply`] to stop between steps
/// (lease lost, shutdown requested). The steps done so far stay done; a new plan continues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StepAbort;
