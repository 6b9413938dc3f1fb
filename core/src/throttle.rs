//! Login failure throttling: after too many failures for one key (an account or a client
//! address) within a window, further attempts for that key are refused until the window passes.
//!
//! A token bucket (governor) consumes on every check; here an attempt must be refused *before*
//! the password is verified while only failures count, so the state is a small failure window.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct ThrottlePolicy {
    /// Failures allowed within `window` before the key is locked.
    pub max_failures: u32,
    /// How long failures are remembered, and how long a lock lasts after the last failure.
    pub window: Duration,
    /// Bound on remembered keys, so a flood of distinct keys cannot grow memory without limit.
    pub max_keys: usize,
}

#[derive(Debug, Clone, Copy)]
struct FailureWindow {
    failures: u32,
    last_failure: Instant,
}

#[derive(Debug)]
pub struct LoginThrottle {
    policy: ThrottlePolicy,
    windows: Mutex<HashMap<String, FailureWindow>>,
}

impl LoginThrottle {
    pub fn new(policy: ThrottlePolicy) -> Self {
        Self {
            policy,
            windows: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, FailureWindow>> {
        // A poisoned lock only means another thread panicked mid-update of plain counters.
        self.windows
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `Some(wait)` when `key` is locked now: the caller answers 429 with `Retry-After: wait`.
    pub fn locked_for(&self, key: &str, now: Instant) -> Option<Duration> {
        let windows = self.lock();
        let window = windows.get(key)?;
        let elapsed = now.saturating_duration_since(window.last_failure);
        (window.failures >= self.policy.max_failures && elapsed < self.policy.window)
            .then(|| self.policy.window - elapsed)
    }

    /// Records one failure for `key`.
    pub fn record_failure(&self, key: &str, now: Instant) {
        let mut windows = self.lock();
        if windows.len() >= self.policy.max_keys && !windows.contains_key(key) {
            let window = self.policy.window;
            windows.retain(|_, w| now.saturating_duration_since(w.last_failure) < window);
            if windows.len() >= self.policy.max_keys {
                // Still full of live entries: forget the oldest rather than grow.
                if let Some(oldest) = windows
                    .iter()
                    .min_by_key(|(_, w)| w.last_failure)
                    .map(|(k, _)| k.clone())
                {
                    windows.remove(&oldest);
                }
            }
        }
        let entry = windows.entry(key.to_owned()).or_insert(FailureWindow {
            failures: 0,
            last_failure: now,
        });
        if now.saturating_duration_since(entry.last_failure) >= self.policy.window {
            entry.failures = 0;
        }
        entry.failures += 1;
        entry.last_failure = now;
    }

    /// Forgets failures for `key` (after a successful login).
    pub fn clear(&self, key: &str) {
        self.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle() -> LoginThrottle {
        LoginThrottle::new(ThrottlePolicy {
            max_failures: 3,
            window: Duration::from_secs(60),
            max_keys: 4,
        })
    }

    #[test]
    fn locks_after_max_failures_and_unlocks_after_the_window() {
        let t = throttle();
        let start = Instant::now();
        for _ in 0..2 {
            t.record_failure("acct:a", start);
        }
        assert_eq!(t.locked_for("acct:a", start), None);
        t.record_failure("acct:a", start);
        assert_eq!(t.locked_for("acct:a", start), Some(Duration::from_secs(60)));
        let later = start + Duration::from_secs(45);
        assert_eq!(t.locked_for("acct:a", later), Some(Duration::from_secs(15)));
        assert_eq!(
            t.locked_for("acct:a", start + Duration::from_secs(60)),
            None
        );
        assert_eq!(t.locked_for("acct:b", start), None);
    }

    #[test]
    fn success_clears_and_old_failures_expire() {
        let t = throttle();
        let start = Instant::now();
        t.record_failure("k", start);
        t.record_failure("k", start);
        t.clear("k");
        t.record_failure("k", start);
        assert_eq!(t.locked_for("k", start), None);
        t.record_failure("k", start);
        t.record_failure("k", start + Duration::from_secs(61));
        assert_eq!(t.locked_for("k", start + Duration::from_secs(61)), None);
    }

    #[test]
    fn memory_stays_bounded() {
        let t = throttle();
        let now = Instant::now();
        for i in 0..100 {
            t.record_failure(&format!("ip:{i}"), now);
        }
        assert!(t.lock().len() <= 4);
    }
}
