//! Request rate limits (GCRA buckets in this process's memory, via `governor`): per principal on
//! every authenticated route, per principal and per tenant for writes, per client address for
//! requests without a valid credential; and the `RateLimit` / `RateLimit-Policy` headers
//! (draft-ietf-httpapi-ratelimit-headers-10) that tell a client where it stands on every
//! answer, 429s included.

use crate::error::ApiError;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage};
use bulkhead_core::limits::{Rate, RateLimits};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use uuid::Uuid;

pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

type Keyed<K> = DefaultKeyedRateLimiter<K, StateInformationMiddleware>;

/// The kinds of bucket, named as the `RateLimit` headers name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Principal,
    Anonymous,
    Writes,
    TenantWrites,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Principal => "principal",
            Self::Anonymous => "anonymous",
            Self::Writes => "writes",
            Self::TenantWrites => "tenant-writes",
        }
    }

    /// What the bucket counts and whose they are, for a refusal's message.
    fn counts(self) -> (&'static str, &'static str) {
        match self {
            Self::Principal => ("requests", "from this principal"),
            Self::Anonymous => ("requests", "from this address"),
            Self::Writes => ("changes", "from this principal"),
            Self::TenantWrites => ("changes", "by this tenant's members and keys together"),
        }
    }
}

/// One kind of bucket and its limiter.
struct Bucket<K: std::hash::Hash + Eq + Clone> {
    kind: Kind,
    rate: Rate,
    limiter: Keyed<K>,
}

impl<K: std::hash::Hash + Eq + Clone> Bucket<K> {
    fn new(kind: Kind, rate: Rate) -> Self {
        let burst = NonZeroU32::new(rate.burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(rate.interval())
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
            .allow_burst(burst);
        Self {
            kind,
            rate,
            limiter: RateLimiter::keyed(quota).with_middleware::<StateInformationMiddleware>(),
        }
    }

    fn check(&self, key: &K) -> Result<Standing, ApiError> {
        match self.limiter.check_key(key) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                let used = self.rate.burst.saturating_sub(remaining);
                Ok(self.standing(remaining, ceil_secs(self.rate.interval() * used)))
            }
            Err(not_until) => {
                let (what, whose) = self.kind.counts();
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                let retry_after = ceil_secs(wait).max(1);
                Err(ApiError::RateLimited {
                    retry_after_secs: retry_after,
                    detail: format!(
                        "more than {} {what} in {} s ({} per minute) {whose}; retry in \
                         {retry_after} s, and spread requests out (see the RateLimit header)",
                        self.rate.burst,
                        ceil_secs(self.rate.window()),
                        self.rate.per_minute,
                    ),
                    standing: self.standing(0, retry_after),
                })
            }
        }
    }

    fn standing(&self, remaining: u32, reset_secs: u64) -> Standing {
        Standing {
            policy: self.kind.as_str(),
            quota: self.rate.burst,
            window_secs: ceil_secs(self.rate.window()).max(1),
            remaining,
            reset_secs,
        }
    }

    fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

fn ceil_secs(d: std::time::Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// Where a request stands against its bucket; kept in the request's extensions so the headers
/// go on whatever the handler answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    pub policy: &'static str,
    pub quota: u32,
    pub window_secs: u64,
    pub remaining: u32,
    pub reset_secs: u64,
}

impl Standing {
    pub fn headers(&self) -> [(HeaderName, String); 2] {
        Standings::new(vec![*self]).headers()
    }
}

/// Every bucket a request was counted in (a member's authorized write counts in three); the
/// headers list each, as the draft's lists of policies. Shared between the request's extensions
/// (where the middleware reads it for the headers) and its `Caller` (whose tenant authorization
/// adds the tenant's bucket once it knows the write is allowed).
#[derive(Debug, Clone, Default)]
pub struct Standings(Arc<Mutex<Counted>>);

#[derive(Debug, Default)]
struct Counted {
    list: Vec<Standing>,
    tenant_charged: bool,
}

impl Standings {
    pub fn new(list: Vec<Standing>) -> Self {
        Self(Arc::new(Mutex::new(Counted {
            list,
            tenant_charged: false,
        })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counted> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts the request in its tenant's bucket of writes, once however often the tenant is
    /// authorized during the request.
    pub fn charge_tenant_once(
        &self,
        charge: impl FnOnce() -> Result<Standing, ApiError>,
    ) -> Result<(), ApiError> {
        let mut counted = self.lock();
        if counted.tenant_charged {
            return Ok(());
        }
        counted.tenant_charged = true;
        let standing = charge()?;
        counted.list.push(standing);
        Ok(())
    }

    pub fn headers(&self) -> [(HeaderName, String); 2] {
        let counted = self.lock();
        let list = |item: &dyn Fn(&Standing) -> String| {
            counted.list.iter().map(item).collect::<Vec<_>>().join(", ")
        };
        [
            (
                RATELIMIT_POLICY,
                list(&|s| format!("\"{}\";q={};w={}", s.policy, s.quota, s.window_secs)),
            ),
            (
                RATELIMIT,
                list(&|s| format!("\"{}\";r={};t={}", s.policy, s.remaining, s.reset_secs)),
            ),
        ]
    }
}

/// Whether a request with this method changes something (and so counts as a write).
pub fn is_write(method: &actix_web::http::Method) -> bool {
    !matches!(
        *method,
        actix_web::http::Method::GET
            | actix_web::http::Method::HEAD
            | actix_web::http::Method::OPTIONS
    )
}

/// The process's buckets.
pub struct RateLimiters {
    principals: Bucket<Uuid>,
    anonymous: Bucket<String>,
    writes: Bucket<Uuid>,
    tenant_writes: Bucket<Uuid>,
}

impl RateLimiters {
    pub fn new(limits: &RateLimits) -> Self {
        Self {
            principals: Bucket::new(Kind::Principal, limits.principal),
            anonymous: Bucket::new(Kind::Anonymous, limits.anonymous),
            writes: Bucket::new(Kind::Writes, limits.principal_writes),
            tenant_writes: Bucket::new(Kind::TenantWrites, limits.tenant_writes),
        }
    }

    /// Counts one request of an authenticated principal (a person or an API key).
    pub fn principal(&self, id: Uuid) -> Result<Standing, ApiError> {
        self.principals.check(&id)
    }

    /// Counts one write of an authenticated principal (on top of `principal`).
    pub fn write(&self, principal: Uuid) -> Result<Standing, ApiError> {
        self.writes.check(&principal)
    }

    /// Counts one authorized write in `tenant` by one of its own members or keys.
    pub fn tenant_write(&self, tenant: Uuid) -> Result<Standing, ApiError> {
        self.tenant_writes.check(&tenant)
    }

    /// Counts one request without a valid credential from this client address.
    pub fn anonymous(&self, address: &str) -> Result<Standing, ApiError> {
        self.anonymous.check(&address.to_owned())
    }

    /// Drops buckets that are full again (an idle key costs nothing to forget).
    pub fn forget_idle(&self) {
        self.principals.forget_idle();
        self.anonymous.forget_idle();
        self.writes.forget_idle();
        self.tenant_writes.forget_idle();
    }
}

/// The client's address as limits and throttles key it: IPv4-mapped IPv6 as IPv4, other IPv6
/// by its /64 (one subscriber usually holds a whole /64 and could rotate through it).
pub fn client_address(peer: Option<SocketAddr>) -> String {
    match peer.map(|a| a.ip()) {
        Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
        Some(ip) => ip.to_string(),
        None => String::new(),
    }
}

/// Routes outside fair use: probes and scrapes (a monitoring system polls them) and the
/// contract document.
fn exempt(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics" | "/openapi.json")
        || path.starts_with("/swagger-ui")
}

/// Routes that take a password or an invitation token instead of a bearer.
fn is_credential_route(path: &str) -> bool {
    matches!(path, "/v1/auth/login" | "/v1/auth/accept-invitation")
}

/// Middleware: requests without a credential are counted against their address up front;
/// authenticated ones are counted by the `Caller` extractor once the principal is known. The
/// standing goes out as headers on the answer, whatever it is.
pub async fn limit(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<actix_web::body::BoxBody>, Error> {
    // Logging in and accepting an invitation are anonymous whatever headers come with them (an
    // `Authorization` header must not take them out of the address's bucket).
    let anonymous = !exempt(req.path())
        && (is_credential_route(req.path())
            || !req
                .headers()
                .contains_key(actix_web::http::header::AUTHORIZATION));
    if anonymous && let Some(state) = req.app_data::<actix_web::web::Data<crate::state::AppState>>()
    {
        match state
            .rate_limits
            .anonymous(&client_address(req.peer_addr()))
        {
            Ok(standing) => {
                req.extensions_mut().insert(Standings::new(vec![standing]));
            }
            Err(error) => {
                let (req, _) = req.into_parts();
                let response = actix_web::ResponseError::error_response(&error);
                return Ok(ServiceResponse::new(req, response));
            }
        }
    }
    let mut response = next.call(req).await?.map_into_boxed_body();
    let standings = response.request().extensions().get::<Standings>().cloned();
    add_headers(response.response_mut(), standings);
    Ok(response)
}

/// Puts where the request stands on the answer, unless the answer is a refusal that already
/// names the bucket that refused it.
fn add_headers(response: &mut actix_web::HttpResponse, standings: Option<Standings>) {
    let Some(standings) = standings else { return };
    if response.headers().contains_key(RATELIMIT) {
        return;
    }
    for (name, value) in standings.headers() {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_lets_its_burst_through_then_says_when_to_come_back() {
        let limiters = RateLimiters::new(&RateLimits {
            principal: Rate {
                per_minute: 60,
                burst: 3,
            },
            anonymous: Rate {
                per_minute: 60,
                burst: 1,
            },
            principal_writes: Rate {
                per_minute: 60,
                burst: 1,
            },
            tenant_writes: Rate {
                per_minute: 60,
                burst: 1,
            },
        });
        let id = Uuid::now_v7();
        let first = limiters.principal(id).expect("first");
        assert_eq!((first.quota, first.remaining, first.window_secs), (3, 2, 3));
        assert_eq!(first.headers()[0].1, "\"principal\";q=3;w=3");
        limiters.principal(id).expect("second");
        let third = limiters.principal(id).expect("third");
        assert_eq!(third.remaining, 0);
        let Err(ApiError::RateLimited {
            retry_after_secs, ..
        }) = limiters.principal(id)
        else {
            panic!("the fourth request within a second must be refused");
        };
        assert_eq!(retry_after_secs, 1);
        // Another principal has its own bucket.
        limiters.principal(Uuid::now_v7()).expect("other principal");
        limiters.anonymous("192.0.2.1").expect("first anonymous");
        assert!(limiters.anonymous("192.0.2.1").is_err());
        limiters.anonymous("192.0.2.2").expect("other address");
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        let a: SocketAddr = "[2001:db8:1:2:aaaa::1]:1".parse().expect("addr");
        let b: SocketAddr = "[2001:db8:1:2:bbbb::9]:2".parse().expect("addr");
        assert_eq!(client_address(Some(a)), client_address(Some(b)));
        let mapped: SocketAddr = "[::ffff:192.0.2.7]:1".parse().expect("addr");
        assert_eq!(client_address(Some(mapped)), "192.0.2.7");
    }
}
