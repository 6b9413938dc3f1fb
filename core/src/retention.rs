//! Retention: how long rows that have served their purpose are kept (sent mail, published job
//! wake-ups, expired sessions, idempotency keys, job events, login throttle windows) and the
//! pass that deletes older ones. Audit events are never deleted: the chain is append-only and
//! must stay complete.
//!
//! The pass runs from the workers (`worker/src/runtime.rs`): a worker first claims the
//! installation's `retention` row in `housekeeping` (one winner per interval, however many
//! workers run), then deletes each kind in batches of `BULKHEAD_RETENTION_BATCH` rows, one
//! short statement (its own transaction) per batch, taking rows `FOR UPDATE SKIP LOCKED` so it
//! never waits for a row someone else holds.

use crate::config::{ConfigError, number};
use crate::store::{self, StoreError};
use diesel::PgConnection;
use std::time::Duration;

const HOUR: u64 = 3600;
const DAY: u64 = 24 * HOUR;

/// How long each kind of finished row is kept, and how the pass runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionConfig {
    /// `BULKHEAD_RETENTION_INTERVAL_SECONDS`: how often the installation runs the pass.
    pub every: Duration,
    /// `BULKHEAD_RETENTION_BATCH`: rows deleted per statement.
    pub batch: i64,
    /// `BULKHEAD_RETAIN_SENT_MAIL_DAYS`: mail sent (or given up) is kept this long.
    pub sent_mail: Duration,
    /// `BULKHEAD_RETAIN_JOB_OUTBOX_HOURS`: published job wake-ups are kept this long.
    pub job_outbox: Duration,
    /// `BULKHEAD_RETAIN_EXPIRED_SESSIONS_HOURS`: sessions are kept this long after they expire.
    pub expired_sessions: Duration,
    /// `BULKHEAD_RETAIN_IDEMPOTENCY_HOURS`: how long a saved response answers a retry.
    pub idempotency_keys: Duration,
    /// `BULKHEAD_RETAIN_JOB_EVENTS_DAYS`: events of finished jobs are kept this long.
    pub job_events: Duration,
}

impl RetentionConfig {
    /// Reads the settings (a missing one takes its default).
    pub fn from_lookup(get: &impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let hours = |var: &'static str, default: u64, min: u64| -> Result<Duration, ConfigError> {
            Ok(Duration::from_secs(
                number(get, var, default, min, 10 * 365 * 24)? * HOUR,
            ))
        };
        let days = |var: &'static str, default: u64| -> Result<Duration, ConfigError> {
            Ok(Duration::from_secs(
                number(get, var, default, 1, 3650)? * DAY,
            ))
        };
        Ok(Self {
            every: Duration::from_secs(number(
                get,
                "BULKHEAD_RETENTION_INTERVAL_SECONDS",
                600,
                1,
                DAY,
            )?),
            batch: number(get, "BULKHEAD_RETENTION_BATCH", 500, 1, 10_000)?,
            sent_mail: days("BULKHEAD_RETAIN_SENT_MAIL_DAYS", 30)?,
            // At least an hour: longer than the sweeper's wait before it re-sends a wake-up
            // that seems lost (twice the lease, at most 20 minutes), which reads these rows.
            job_outbox: hours("BULKHEAD_RETAIN_JOB_OUTBOX_HOURS", 24, 1)?,
            expired_sessions: hours("BULKHEAD_RETAIN_EXPIRED_SESSIONS_HOURS", 24, 0)?,
            idempotency_keys: hours("BULKHEAD_RETAIN_IDEMPOTENCY_HOURS", 24, 1)?,
            job_events: days("BULKHEAD_RETAIN_JOB_EVENTS_DAYS", 90)?,
        })
    }

    /// Each kind with its age. Login throttle windows go after twice the lockout: by then they
    /// count nothing.
    pub fn ages(&self, login_lockout: Duration) -> [(Kind, Duration); 6] {
        [
            (Kind::SentMail, self.sent_mail),
            (Kind::JobOutbox, self.job_outbox),
            (Kind::ExpiredSessions, self.expired_sessions),
            (Kind::IdempotencyKeys, self.idempotency_keys),
            (Kind::JobEvents, self.job_events),
            (Kind::LoginThrottle, login_lockout * 2),
        ]
    }
}

/// A kind of row the pass deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    SentMail,
    JobOutbox,
    ExpiredSessions,
    IdempotencyKeys,
    JobEvents,
    LoginThrottle,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SentMail => "sent_mail",
            Self::JobOutbox => "job_outbox",
            Self::ExpiredSessions => "expired_sessions",
            Self::IdempotencyKeys => "idempotency_keys",
            Self::JobEvents => "job_events",
            Self::LoginThrottle => "login_throttle",
        }
    }

    /// Deletes one batch of rows older than `age`; returns how many.
    fn delete_batch(
        self,
        conn: &mut PgConnection,
        age: Duration,
        limit: i64,
    ) -> Result<usize, StoreError> {
        match self {
            Self::SentMail => store::mail::delete_done_before(conn, age, limit),
            Self::JobOutbox => store::outbox::delete_sent_before(conn, age, limit),
            Self::ExpiredSessions => store::sessions::delete_expired_before(conn, age, limit),
            Self::IdempotencyKeys => store::idempotency::delete_older_than(conn, age, limit),
            Self::JobEvents => store::jobs::delete_events_before(conn, age, limit),
            Self::LoginThrottle => store::throttle::forget_older_than(conn, age, limit),
        }
    }
}

/// The `housekeeping` task the pass claims.
pub const TASK: &str = "retention";

/// Batches of one kind in one pass at most; a larger backlog waits for the next interval, so
/// a pass after a long outage still ends (500 × 200 = 100,000 rows of each kind).
pub const MAX_BATCHES: usize = 200;

/// What a pass deleted.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Rows deleted, per kind, in pass order.
    pub deleted: Vec<(Kind, usize)>,
    /// Kinds that failed (the rest still ran), with the error.
    pub failed: Vec<(Kind, String)>,
    /// Whether rows past their age may remain (batch cap reached, or asked to stop).
    pub unfinished: bool,
}

impl Report {
    pub fn deleted(&self, kind: Kind) -> usize {
        self.deleted
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, n)| n)
            .sum()
    }

    pub fn total(&self) -> usize {
        self.deleted.iter().map(|(_, n)| n).sum()
    }
}

/// Runs the pass if it is due for the installation (see [`store::housekeeping::claim`]);
/// `None` when another worker ran it within the interval. `keep_going` is asked between
/// batches (a worker that is stopping ends the pass early).
pub fn run_if_due(
    conn: &mut PgConnection,
    config: &RetentionConfig,
    login_lockout: Duration,
    keep_going: &dyn Fn() -> bool,
) -> Result<Option<Report>, StoreError> {
    if !store::housekeeping::claim(conn, TASK, config.every)? {
        return Ok(None);
    }
    Ok(Some(run(conn, config, login_lockout, keep_going)))
}

/// One pass over every kind, unconditionally.
pub fn run(
    conn: &mut PgConnection,
    config: &RetentionConfig,
    login_lockout: Duration,
    keep_going: &dyn Fn() -> bool,
) -> Report {
    let mut report = Report::default();
    for (kind, age) in config.ages(login_lockout) {
        let mut deleted = 0;
        let mut batches = 0;
        let outcome = loop {
            if !keep_going() {
                report.unfinished = true;
                break Ok(());
            }
            let n = match kind.delete_batch(conn, age, config.batch) {
                Ok(n) => n,
                Err(error) => break Err(error),
            };
            deleted += n;
            batches += 1;
            if i64::try_from(n).unwrap_or(i64::MAX) < config.batch {
                break Ok(());
            }
            if batches >= MAX_BATCHES {
                report.unfinished = true;
                break Ok(());
            }
        };
        report.deleted.push((kind, deleted));
        if let Err(error) = outcome {
            report.failed.push((kind, error.to_string()));
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::collections::HashMap;

    fn retention(vars: &[(&str, &str)]) -> Result<RetentionConfig, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| vars.get(name).cloned()).map(|c| c.retention)
    }

    #[test]
    fn defaults_keep_job_events_long_and_the_rest_a_day_or_a_month() {
        let config = retention(&[]).expect("defaults");
        assert_eq!(config.every, Duration::from_secs(600));
        assert_eq!(config.batch, 500);
        assert_eq!(config.sent_mail, Duration::from_secs(30 * DAY));
        assert_eq!(config.job_outbox, Duration::from_secs(24 * HOUR));
        assert_eq!(config.expired_sessions, Duration::from_secs(24 * HOUR));
        assert_eq!(config.idempotency_keys, Duration::from_secs(24 * HOUR));
        assert_eq!(config.job_events, Duration::from_secs(90 * DAY));
        let ages = config.ages(Duration::from_secs(900));
        assert_eq!(ages[5], (Kind::LoginThrottle, Duration::from_secs(1800)));
    }

    #[test]
    fn settings_are_read_and_bad_ones_name_the_variable() {
        let config = retention(&[
            ("BULKHEAD_RETAIN_JOB_EVENTS_DAYS", "365"),
            ("BULKHEAD_RETAIN_EXPIRED_SESSIONS_HOURS", "0"),
            ("BULKHEAD_RETENTION_BATCH", "50"),
        ])
        .expect("valid");
        assert_eq!(config.job_events, Duration::from_secs(365 * DAY));
        assert_eq!(config.expired_sessions, Duration::ZERO);
        assert_eq!(config.batch, 50);
        for (var, value) in [
            ("BULKHEAD_RETAIN_SENT_MAIL_DAYS", "0"),
            ("BULKHEAD_RETAIN_JOB_OUTBOX_HOURS", "0"),
            ("BULKHEAD_RETAIN_IDEMPOTENCY_HOURS", "a day"),
            ("BULKHEAD_RETAIN_JOB_EVENTS_DAYS", "-1"),
            ("BULKHEAD_RETENTION_INTERVAL_SECONDS", "0"),
            ("BULKHEAD_RETENTION_BATCH", "100000"),
        ] {
            let err = retention(&[(var, value)]).expect_err(var);
            assert_eq!(err.var, var, "{err}");
        }
    }
}
