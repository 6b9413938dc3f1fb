//! Prometheus metrics: request counts and latency by route, login failures, authz denials and refreshes.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub login_failures: IntCounterVec,
    pub authz_denials: IntCounterVec,
    pub authz_refreshes: IntCounterVec,
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
        })
    }

    /// The text exposition format.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer)?;
        Ok(String::from_utf8_lossy(&buffer).into_owned())
    }
}
