//! Authentication: the `Caller` extractor turns a bearer access token or API key into a
//! principal, and keeps the enforcer in step with the assignments it saw.

use crate::error::{ApiError, ApiResult};
use crate::observe::RequestId;
use crate::state::AppState;
use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpMessage, HttpRequest, web};
use bulkhead_core::audit::AuditResult;
use bulkhead_core::db::AsyncPgConnection;
use bulkhead_core::domain::PlatformRole;
use bulkhead_core::secrets::{self, ACCESS_TOKEN_PREFIX, API_KEY_PREFIX};
use bulkhead_core::store::audit::NewAuditEvent;
use bulkhead_core::store::sessions::{self, Authenticated, KeyScope};
use bulkhead_core::store::tenants::{self, Tenant};
use std::future::Future;
use std::pin::Pin;
use uuid::Uuid;

/// An authenticated principal making this request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub id: Uuid,
    pub label: String,
    pub kind: String,
    pub email: Option<String>,
    pub display_name: String,
    pub platform_role: Option<PlatformRole>,
    /// Set when the caller authenticated with an API key.
    pub key: Option<KeyScope>,
    /// SHA-256 of the presented bearer secret (used by logout).
    pub secret_hash: [u8; 32],
    pub request_id: String,
    /// The route's `{tenant}`, looked up in the same round trip as the credential (the two
    /// queries are pipelined): the reference and what it found.
    pub prefetched_tenant: Option<(String, Option<Tenant>)>,
    /// Whether the request changes something (any method but GET, HEAD and OPTIONS).
    pub write: bool,
    /// The buckets the request was counted in (shared with the rate-limit headers).
    pub standings: crate::ratelimit::Standings,
}

impl Caller {
    pub fn is_platform_admin(&self) -> bool {
        self.platform_role == Some(PlatformRole::PlatformAdmin)
    }

    /// An audit event attributed to this caller.
    pub fn audit(
        &self,
        tenant_id: Option<Uuid>,
        action: &str,
        target: impl Into<String>,
        result: AuditResult,
        details: serde_json::Value,
    ) -> NewAuditEvent {
        NewAuditEvent {
            actor_id: Some(self.id),
            actor: self.label.clone(),
            tenant_id,
            action: action.to_owned(),
            target: target.into(),
            result,
            request_id: self.request_id.clone(),
            details,
        }
    }
}

pub fn request_id(req: &HttpRequest) -> String {
    req.extensions()
        .get::<RequestId>()
        .map(|id| id.0.clone())
        .unwrap_or_else(|| Uuid::now_v7().to_string())
}

fn bearer(req: &HttpRequest) -> ApiResult<String> {
    let value = req
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or(ApiError::Unauthenticated(
            "send Authorization: Bearer <access token or API key>",
        ))?
        .to_str()
        .map_err(|_| ApiError::Unauthenticated("the Authorization header is not readable text"))?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or(ApiError::Unauthenticated(
            "the Authorization header must be: Bearer <access token or API key>",
        ))?;
    Ok(token.trim().to_owned())
}

const INVALID_CREDENTIAL: &str =
    "the access token or API key is invalid, expired or revoked; log in again or use a live key";

async fn authenticate(req: HttpRequest) -> ApiResult<Caller> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("application state missing")))?
        .clone();
    let token = bearer(&req)?;
    let secret_hash = secrets::sha256(token.as_bytes());
    let tenant_ref = req.match_info().get("tenant").map(str::to_owned);
    // An access token is its prefix and 64 hex digits: anything else costs no database work.
    let is_token = token
        .strip_prefix(ACCESS_TOKEN_PREFIX)
        .is_some_and(|rest| rest.len() == 64 && rest.bytes().all(|b| b.is_ascii_hexdigit()));
    let is_key = token.starts_with(API_KEY_PREFIX) && secrets::api_key_is_well_formed(&token);
    let (authenticated, prefetched_tenant) = if is_token || is_key {
        let pooled = state.request_conn().await?;
        let conn: &AsyncPgConnection = &pooled;
        // Both lookups go out on the connection together (pipelined): one round trip.
        let bearer = async {
            if is_token {
                sessions::authenticate_token(conn, &secret_hash).await
            } else {
                sessions::authenticate_api_key(conn, &secret_hash).await
            }
        };
        let tenant = async {
            match &tenant_ref {
                Some(reference) => tenants::find_by_ref(conn, reference).await.map(Some),
                None => Ok(None),
            }
        };
        let (found, tenant) = tokio::try_join!(bearer, tenant)?;
        if let Some(Authenticated {
            key: Some(key),
            key_last_used_at,
            ..
        }) = &found
        {
            let fresh = key_last_used_at
                .is_some_and(|t| chrono::Utc::now() - t < chrono::Duration::minutes(1));
            if !fresh {
                sessions::touch_api_key(conn, key.key_id).await?;
            }
        }
        let prefetched = match (&found, tenant_ref) {
            (Some(_), Some(reference)) => tenant.map(|tenant| (reference, tenant)),
            _ => None,
        };
        (found, prefetched)
    } else {
        (None, None)
    };
    let Some(authenticated) = authenticated else {
        // Guessing credentials counts against the address like any anonymous request.
        state
            .rate_limits
            .anonymous(&crate::ratelimit::client_address(req.peer_addr()))?;
        return Err(ApiError::Unauthenticated(INVALID_CREDENTIAL));
    };
    let principal_id = authenticated.principal.id;
    let mut standings = vec![state.rate_limits.principal(principal_id)?];
    let write = crate::ratelimit::is_write(req.method());
    if write {
        standings.push(state.rate_limits.write(principal_id)?);
    }
    state.refresh_authz(authenticated.authz_generation).await?;
    // The tenant's shared bucket of writes is charged by `authorize_tenant`, once the write is
    // known to be allowed (see `Caller::charges_tenant_writes`).
    let standings = crate::ratelimit::Standings::new(standings);
    req.extensions_mut().insert(standings.clone());
    let principal = authenticated.principal;
    Ok(Caller {
        id: principal.id,
        label: principal.label(),
        platform_role: principal.platform_role(),
        kind: principal.kind,
        email: principal.email,
        display_name: principal.display_name,
        key: authenticated.key,
        secret_hash,
        request_id: request_id(&req),
        prefetched_tenant,
        write,
        standings,
    })
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        Box::pin(authenticate(req.clone()))
    }
}
