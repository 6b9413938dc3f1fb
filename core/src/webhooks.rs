//! Webhooks (pure): the events a tenant may subscribe to, what a webhook request must hold,
//! which addresses a delivery may reach, the CloudEvents 1.0 envelope of an event, the signing
//! secret, and the retry schedule.

use crate::domain::FieldError;
use crate::jobs::JobState;
use base64::Engine;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use std::net::IpAddr;
use std::time::Duration;
use uuid::Uuid;

/// The event types besides `job.<state>` (one per job state).
pub const OTHER_EVENTS: [&str; 8] = [
    "environment.ready",
    "environment.failed",
    "environment.drifted",
    "environment.stopped",
    "environment.started",
    "environment.destroyed",
    "approval.requested",
    "approval.decided",
];

/// Every event type a webhook may name (`*` names them all).
pub fn event_types() -> Vec<String> {
    JobState::ALL
        .iter()
        .map(|s| format!("job.{}", s.as_str()))
        .chain(OTHER_EVENTS.iter().map(|e| (*e).to_owned()))
        .collect()
}

/// Webhooks a tenant may have at once.
pub const MAX_PER_TENANT: i64 = 10;

/// A valid webhook request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidWebhook {
    pub url: url::Url,
    pub events: Vec<String>,
}

/// Checks a webhook's URL and events; every wrong field is named. An IP-literal host (or
/// `localhost`) that is not public is refused here unless `allow_private`; a name is checked
/// after DNS resolution at every delivery.
pub fn validate(
    raw_url: &str,
    events: &[String],
    allow_private: bool,
) -> Result<ValidWebhook, Vec<FieldError>> {
    let mut errors = Vec::new();
    let url = match check_url(raw_url, allow_private) {
        Ok(url) => Some(url),
        Err(reason) => {
            errors.push(FieldError::new("url", reason));
            None
        }
    };
    let known = event_types();
    if events.is_empty() || events.len() > 32 {
        errors.push(FieldError::new(
            "events",
            format!(
                "must name 1 to 32 event types ({}), or [\"*\"] for all of them",
                known.join(", ")
            ),
        ));
    } else {
        for (i, event) in events.iter().enumerate() {
            if event != "*" && !known.contains(event) {
                errors.push(FieldError::new(
                    format!("events[{i}]"),
                    "is not an event type (the `events` field's description lists them)",
                ));
            } else if events[..i].contains(event) {
                errors.push(FieldError::new(format!("events[{i}]"), "is named twice"));
            }
        }
    }
    match (url, errors.is_empty()) {
        (Some(url), true) => Ok(ValidWebhook {
            url,
            events: events.to_vec(),
        }),
        _ => Err(errors),
    }
}

fn check_url(raw: &str, allow_private: bool) -> Result<url::Url, String> {
    if raw.len() > 2000 {
        return Err("must be at most 2000 characters".to_owned());
    }
    let url = url::Url::parse(raw).map_err(|e| {
        format!("must be an absolute http(s) URL such as https://hooks.example.com/bulkhead ({e})")
    })?;
    // The stored form (percent-encoded) can be longer than what was sent.
    if url.as_str().len() > 2000 {
        return Err("must be at most 2000 characters once percent-encoded".to_owned());
    }
    if !matches!(url.scheme(), "https" | "http") {
        return Err("must use https (or http)".to_owned());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "must not carry a user or password; deliveries are signed (webhook-signature)"
                .to_owned(),
        );
    }
    if url.fragment().is_some() {
        return Err("must not have a #fragment".to_owned());
    }
    let literal = match url.host() {
        None => return Err("must name a host".to_owned()),
        Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
        Some(url::Host::Domain(name)) if name.eq_ignore_ascii_case("localhost") => {
            Some(IpAddr::from([127, 0, 0, 1]))
        }
        Some(url::Host::Domain(_)) => None,
    };
    if let Some(ip) = literal.filter(|ip| !allow_private && !is_public(*ip)) {
        return Err(format!(
            "points at {ip}, a loopback, private or link-local address; webhooks go to public \
             addresses only"
        ));
    }
    Ok(url)
}

/// Whether a delivery may reach `ip`: a globally routable unicast address. Refused: loopback,
/// private, link-local, shared (CGNAT), benchmarking, unspecified, broadcast, multicast,
/// documentation, reserved, IETF protocol and 6to4-relay ranges; IPv6 unique- and site-local;
/// Teredo and the NAT64 local-use prefix. IPv6 forms that carry an IPv4 address (mapped,
/// compatible, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`) are judged as that address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && c == 0)
                || (a == 192 && b == 88 && c == 99)
                || (a == 198 && (b == 18 || b == 19))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            let seg = v6.segments();
            let embedded = |hi: u16, lo: u16| {
                IpAddr::V4(std::net::Ipv4Addr::from(
                    (u32::from(hi) << 16) | u32::from(lo),
                ))
            };
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            // IPv4-compatible (::a.b.c.d, deprecated) and NAT64 (64:ff9b::a.b.c.d).
            if seg[..6] == [0, 0, 0, 0, 0, 0] && !v6.is_loopback() && !v6.is_unspecified() {
                return is_public(embedded(seg[6], seg[7]));
            }
            if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                return is_public(embedded(seg[6], seg[7]));
            }
            // 6to4: 2002:a.b.c.d::/48.
            if seg[0] == 0x2002 {
                return is_public(embedded(seg[1], seg[2]));
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg[0] & 0xfe00) == 0xfc00
                || (seg[0] & 0xffc0) == 0xfe80
                || (seg[0] & 0xffc0) == 0xfec0
                || (seg[0] == 0x2001 && seg[1] == 0x0db8)
                || (seg[0] == 0x2001 && seg[1] == 0)
                || (seg[0] == 0x64 && seg[1] == 0xff9b && seg[2] == 1)
                || (seg[0] == 0x100 && seg[1..4] == [0, 0, 0]))
        }
    }
}

/// A new signing secret, as Standard Webhooks writes it: `whsec_` and 32 random bytes in
/// base64.
pub fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// One event as the sender has it.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub event_type: String,
    pub subject: String,
    pub data: Value,
    pub occurred_at: DateTime<Utc>,
}

/// The CloudEvents 1.0 structured-mode JSON of an event.
pub fn cloud_event(event: &Event) -> Value {
    json!({
        "specversion": "1.0",
        "id": event.id,
        "source": format!("/v1/tenants/{}", event.tenant_id),
        "type": format!("dev.bulkhead.{}", event.event_type),
        "subject": event.subject,
        "time": event.occurred_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "datacontenttype": "application/json",
        "data": event.data,
    })
}

/// The wait before try `attempt + 1` after `attempt` failed: `base` doubled per try, at most
/// an hour.
pub fn retry_after(attempt: i32, base: Duration) -> Duration {
    let factor = 2u32.saturating_pow(
        u32::try_from(attempt.saturating_sub(1))
            .unwrap_or(0)
            .min(20),
    );
    base.saturating_mul(factor).min(Duration::from_secs(3600))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(raw: &str) -> IpAddr {
        raw.parse().expect("ip")
    }

    #[test]
    fn only_public_addresses_are_reachable() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "fe80::1",
            "fd00::7",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "198.18.0.1",
            "192.88.99.1",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::1",
            "2002:7f00:1::1",
            "2002:a00:1::1",
            "2001::1",
            "fec0::1",
        ] {
            assert!(!is_public(ip(private)), "{private}");
        }
        for public in [
            "93.184.216.34",
            "1.1.1.1",
            "2606:4700::1111",
            "64:ff9b::5db8:d822",
            "2002:5db8:d822::1",
        ] {
            assert!(is_public(ip(public)), "{public}");
        }
    }

    #[test]
    fn requests_are_checked_field_by_field() {
        let ok = validate("https://hooks.example.com/x", &["*".to_owned()], false).expect("ok");
        assert_eq!(ok.url.host_str(), Some("hooks.example.com"));
        let wrong = validate(
            "http://169.254.169.254/latest/meta-data",
            &[
                "job.succeeded".to_owned(),
                "job.exploded".to_owned(),
                "job.succeeded".to_owned(),
            ],
            false,
        )
        .expect_err("invalid");
        let fields: Vec<&str> = wrong.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["url", "events[1]", "events[2]"]);
        assert!(validate("http://127.0.0.1:9/x", &["*".to_owned()], true).is_ok());
        assert!(validate("http://localhost:9/x", &["*".to_owned()], false).is_err());
        assert!(validate("ftp://example.com/", &["*".to_owned()], false).is_err());
        assert!(validate("https://u:p@example.com/", &["*".to_owned()], false).is_err());
        assert!(validate("https://example.com/", &[], false).is_err());
        // Many wrong entries make one error, not one per entry.
        let many = vec![String::new(); 21_000];
        let errors = validate("https://example.com/", &many, false).expect_err("too many");
        assert_eq!(errors.len(), 1);
        let long = format!("https://example.com/?{}", "\"".repeat(1900));
        assert!(
            validate(&long, &["*".to_owned()], false).is_err(),
            "encoded past the limit"
        );
    }

    #[test]
    fn retries_double_and_cap() {
        let base = Duration::from_secs(5);
        assert_eq!(retry_after(1, base), Duration::from_secs(5));
        assert_eq!(retry_after(3, base), Duration::from_secs(20));
        assert_eq!(retry_after(30, base), Duration::from_secs(3600));
    }
}
