//! Prometheus metrics: request counts and latency by route, login failures, authz denials and
//! refreshes, and who may scrape them (`BULKHEAD_METRICS_TOKEN`).

use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub login_failures: IntCounterVec,
    pub authz_denials: IntCounterVec,
    pub authz_refreshes: IntCounterVec,
    /// Read from `meter_passes` at each scrape (the workers run the passes).
    pub metering_last_success: Gauge,
    pub metering_failed_last_day: IntGauge,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let http_requests = IntCounterVec::new(
            Opts::new(
                "bulkhead_http_requests_total",
                "HTTP requests by route and status",
            ),
            &["method", "route", "status"],
        )?;
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "bulkhead_http_request_duration_seconds",
                "HTTP request latency by route",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            &["method", "route"],
        )?;
        let login_failures = IntCounterVec::new(
            Opts::new("bulkhead_login_failures_total", "Failed logins by reason"),
            &["reason"],
        )?;
        let authz_denials = IntCounterVec::new(
            Opts::new("bulkhead_authz_denials_total", "Authorization denials"),
            &["object", "action"],
        )?;
        let authz_refreshes = IntCounterVec::new(
            Opts::new(
                "bulkhead_authz_refreshes_total",
                "Enforcer refreshes after role assignments changed: incremental or full reload",
            ),
            &["kind"],
        )?;
        let metering_last_success = Gauge::new(
            "bulkhead_metering_last_success_timestamp_seconds",
            "When the last metering pass that succeeded finished (Unix time; 0: never)",
        )?;
        let metering_failed_last_day = IntGauge::new(
            "bulkhead_metering_failed_passes_last_day",
            "Metering passes that failed in the last 24 hours (their errors: GET /v1/metering/passes)",
        )?;
        registry.register(Box::new(metering_last_success.clone()))?;
        registry.register(Box::new(metering_failed_last_day.clone()))?;
        registry.register(Box::new(authz_refreshes.clone()))?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_duration.clone()))?;
        registry.register(Box::new(login_failures.clone()))?;
        registry.register(Box::new(authz_denials.clone()))?;
        Ok(Self {
            registry,
            http_requests,
            http_duration,
            login_failures,
            authz_denials,
            authz_refreshes,
            metering_last_success,
            metering_failed_last_day,
        })
    }

    /// The text exposition format.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer)?;
        Ok(String::from_utf8_lossy(&buffer).into_owned())
    }
}

/// Whether a scrape with `authorization` (the header's value) may read the metrics: always
/// when no token is configured, else only with `Bearer <token>`. The comparison takes the same
/// time whatever the guess (both sides hashed to a fixed length, compared in constant time).
pub fn may_scrape(token: Option<&str>, authorization: Option<&[u8]>) -> bool {
    use subtle::ConstantTimeEq;
    let Some(token) = token else {
        return true;
    };
    let Some(offered) = authorization.and_then(|value| {
        value
            .strip_prefix(b"Bearer ")
            .or_else(|| value.strip_prefix(b"bearer "))
    }) else {
        return false;
    };
    let expected = bulkhead_core::secrets::sha256(token.as_bytes());
    let offered = bulkhead_core::secrets::sha256(offered.trim_ascii());
    bool::from(expected.ct_eq(&offered))
}

#[cfg(test)]
mod tests {
    use super::may_scrape;

    #[test]
    fn a_token_is_needed_only_when_configured() {
        assert!(may_scrape(None, None));
        assert!(may_scrape(None, Some(b"Bearer anything")));
        let token = Some("metrics-token-0123456789");
        assert!(may_scrape(token, Some(b"Bearer metrics-token-0123456789")));
        assert!(!may_scrape(token, None));
        assert!(!may_scrape(token, Some(b"Bearer metrics-token-012345678")));
        assert!(!may_scrape(token, Some(b"metrics-token-0123456789")));
        assert!(!may_scrape(token, Some(b"Basic metrics-token-0123456789")));
        assert!(!may_scrape(token, Some(b"Bearer ")));
    }
}
