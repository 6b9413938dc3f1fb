//! `WebhookConfig`: where webhooks may point, and how their deliveries are retried.

use super::{ConfigError, number};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// `BULKHEAD_WEBHOOK_ALLOW_PRIVATE` (`true` | `false`, default false): whether a webhook may
    /// point at loopback, private or link-local addresses (development and tests only).
    pub allow_private: bool,
    /// `BULKHEAD_WEBHOOK_RETRY_BASE_MS` (default 5000): the wait after a first failed try;
    /// doubles per try, at most an hour.
    pub retry_base: Duration,
    /// `BULKHEAD_WEBHOOK_GIVE_UP_HOURS` (default 24): how long an event is retried.
    pub give_up_after: Duration,
    /// `BULKHEAD_WEBHOOK_TIMEOUT_MS` (default 10000): how long one try may take.
    pub timeout: Duration,
}

impl WebhookConfig {
    pub fn from_lookup(get: &impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let allow_private = match get("BULKHEAD_WEBHOOK_ALLOW_PRIVATE").as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(ConfigError {
                    var: "BULKHEAD_WEBHOOK_ALLOW_PRIVATE",
                    problem: format!("expected true or false, got {other:?}"),
                });
            }
        };
        Ok(Self {
            allow_private,
            retry_base: Duration::from_millis(number(
                get,
                "BULKHEAD_WEBHOOK_RETRY_BASE_MS",
                5000,
                10,
                3_600_000,
            )?),
            give_up_after: Duration::from_secs(
                3600 * number::<u64>(get, "BULKHEAD_WEBHOOK_GIVE_UP_HOURS", 24, 1, 168)?,
            ),
            timeout: Duration::from_millis(number(
                get,
                "BULKHEAD_WEBHOOK_TIMEOUT_MS",
                10_000,
                100,
                60_000,
            )?),
        })
    }
}
