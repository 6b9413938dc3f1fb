//! Login, logout and invitation acceptance.

use crate::auth::{Caller, request_id};
use crate::body::JsonBody;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use actix_web::{HttpRequest, HttpResponse, web};
use bulkhead_core::audit::AuditResult;
use bulkhead_core::domain::check_password_policy;
use bulkhead_core::password;
use bulkhead_core::secrets;
use bulkhead_core::store::{self, audit::NewAuditEvent};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::time::Duration;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = crate::examples::login_request)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = crate::examples::login_response)]
pub struct LoginResponse {
    /// Send as `Authorization: Bearer <access_token>`.
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_at: DateTime<Utc>,
}

/// The longest a login waits for its account's next slot before it is refused (429).
const MAX_SLOT_WAIT: Duration = Duration::from_secs(10);

const INVALID_LOGIN: &str = "the email or password is wrong";

fn client_address(req: &HttpRequest) -> String {
    crate::ratelimit::client_address(req.peer_addr())
}

fn no_live_invitation() -> ApiError {
    ApiError::NotFound(
        "no live invitation has this token: it was used already, has expired (72 hours), or \
         was mistyped; ask for a new invitation"
            .into(),
    )
}

fn locked(wait: std::time::Duration) -> ApiError {
    ApiError::TooManyRequests {
        retry_after_secs: wait.as_secs().max(1),
        detail: format!(
            "too many failed logins; try again in {} seconds",
            wait.as_secs().max(1)
        ),
    }
}

#[utoipa::path(post, operation_id = "login", path = "/v1/auth/login", tag = "auth", request_body = LoginRequest, responses(
    (status = 200, body = LoginResponse),
    (status = 401, description = "Wrong email or password (the same answer for both)", body = crate::error::Problem),
    (status = 429, description = "Too many failures for this account or client; see Retry-After", body = crate::error::Problem)))]
pub async fn login(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: JsonBody<LoginRequest>,
) -> ApiResult<HttpResponse> {
    let LoginRequest { email, password } = body.into_inner()?;
    let email = email.trim().to_lowercase();
    let ip = client_address(&req);
    // Counted before any hash, in the control database (shared by every replica): this address
    // first (ten times the limit: many people may share it; a locked address adds nothing
    // more), then the account from this address (locks after the limit, so nobody elsewhere
    // can lock the account out) and the account from anywhere (no lock: a growing delay
    // against guessing from many addresses). Keys hold a digest of the email, never the text.
    let (window, max) = (
        state.config.login_lockout,
        i32::try_from(state.config.login_max_failures).unwrap_or(i32::MAX),
    );
    let account_digest = hex::encode(secrets::sha256(email.as_bytes()));
    let keys = [
        format!("login-pair:{ip} {account_digest}"),
        format!("login-ip:{ip}"),
        format!("login-account:{account_digest}"),
    ];
    let client_key = vec![keys[1].clone()];
    let client = state
        .db(move |conn| Ok(store::throttle::reserve(conn, &client_key, window)?))
        .await?
        .first()
        .copied()
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("throttle window missing")))?;
    // An email that cannot be an account's (too long, control characters) fails like a wrong
    // password, counted against the address only.
    let valid_email = bulkhead_core::domain::Email::parse("email", &email).is_ok();
    let (pair, account) = if client.attempts > max.saturating_mul(10) || !valid_email {
        (None, None)
    } else {
        let reserved = vec![keys[0].clone(), keys[2].clone()];
        let windows = state
            .db(move |conn| Ok(store::throttle::reserve(conn, &reserved, window)?))
            .await?;
        (windows.first().copied(), windows.get(1).copied())
    };
    let lock = if client.attempts > max.saturating_mul(10) {
        Some(client.retry_after)
    } else {
        pair.filter(|p| p.attempts > max).map(|p| p.retry_after)
    };
    if let Some(wait) = lock {
        state
            .metrics
            .login_failures
            .with_label_values(&["locked_out"])
            .inc();
        return Err(locked(Duration::from_secs(
            u64::try_from(wait).unwrap_or(1),
        )));
    }
    if !valid_email {
        return Err(ApiError::Unauthenticated(INVALID_LOGIN));
    }
    if let Some(account) = account.filter(|a| a.attempts > max) {
        // 250 ms, doubling per attempt beyond the limit, at most 8 s. From an address the
        // account logged in from before, that is a delay; from anywhere else it is the spacing
        // of the account's slots, taken in turn by every address and replica: guessing from many
        // addresses at once gets no more checks than from one, and when every slot of the next
        // `MAX_SLOT_WAIT` is taken the login is refused (429) instead of held.
        let beyond = u32::try_from(account.attempts - max - 1)
            .unwrap_or(0)
            .min(5);
        let spacing = Duration::from_millis(250u64 << beyond);
        let (digest, address, account_key) = (account_digest.clone(), ip.clone(), keys[2].clone());
        let wait = state
            .db(move |conn| {
                if store::throttle::is_known_address(conn, &digest, &address)? {
                    return Ok(Some(spacing));
                }
                Ok(store::throttle::take_slot(
                    conn,
                    &account_key,
                    spacing,
                    MAX_SLOT_WAIT,
                )?)
            })
            .await?;
        let Some(wait) = wait else {
            state
                .metrics
                .login_failures
                .with_label_values(&["slot_full"])
                .inc();
            return Err(locked(MAX_SLOT_WAIT));
        };
        tokio::time::sleep(wait).await;
    }

    let lookup = email.clone();
    let principal = state
        .db(move |conn| Ok(store::principals::find_by_email(conn, &lookup)?))
        .await?;
    // Unknown users and users without a password are verified against a dummy hash, so every
    // failure costs one argon2 verification and looks alike.
    let stored_hash = principal
        .as_ref()
        .and_then(|p| p.password_hash.clone())
        .unwrap_or_else(|| state.dummy_password_hash.clone());
    let has_password = principal
        .as_ref()
        .is_some_and(|p| p.password_hash.is_some());
    let permit = state.hashing_slot(&ip).await?;
    let span = tracing::Span::current();
    let matches = web::block(move || {
        let _permit = permit;
        span.in_scope(|| password::verify_password(&password, &stored_hash))
    })
    .await?;

    let (Some(principal), true) = (principal, matches && has_password) else {
        // The attempt was counted when it was reserved.
        state
            .metrics
            .login_failures
            .with_label_values(&["invalid_credentials"])
            .inc();
        let event = NewAuditEvent {
            actor_id: None,
            actor: email,
            tenant_id: None,
            action: "auth.login".into(),
            target: "session".into(),
            result: AuditResult::Denied,
            request_id: request_id(&req),
            details: json!({}),
        };
        state
            .db(move |conn| Ok(store::audit::append(conn, &event)?))
            .await?;
        return Err(ApiError::Unauthenticated(INVALID_LOGIN));
    };

    // A success is not a failure: the account's windows go, the address gets its attempt back.
    let forget = vec![keys[0].clone(), keys[2].clone()];
    let client_key = keys[1].clone();
    let (digest, address) = (account_digest.clone(), ip.clone());
    state
        .db(move |conn| {
            store::throttle::clear(conn, &forget)?;
            store::throttle::remember_address(conn, &digest, &address)?;
            Ok(store::throttle::release(conn, &client_key)?)
        })
        .await?;
    let token = secrets::generate_access_token();
    let expires_at = Utc::now()
        + chrono::Duration::from_std(state.config.token_ttl).map_err(ApiError::internal)?;
    let event = NewAuditEvent {
        actor_id: Some(principal.id),
        actor: principal.label(),
        tenant_id: None,
        action: "auth.login".into(),
        target: "session".into(),
        result: AuditResult::Success,
        request_id: request_id(&req),
        details: json!({}),
    };
    let hash = token.hash;
    state
        .db(move |conn| {
            conn.build_transaction().run(|conn| {
                store::sessions::create(conn, principal.id, &hash, expires_at)?;
                store::audit::append(conn, &event)?;
                Ok::<_, ApiError>(())
            })
        })
        .await?;
    Ok(HttpResponse::Ok().json(LoginResponse {
        access_token: token.secret,
        token_type: "Bearer",
        expires_at,
    }))
}

#[utoipa::path(post, operation_id = "logout", path = "/v1/auth/logout", tag = "auth", security(("bearer" = [])), responses(
    (status = 204, description = "The access token is revoked"),
    (status = 401, body = crate::error::Problem),
    (status = 422, description = "API keys are revoked through the api-keys endpoint", body = crate::error::Problem)))]
pub async fn logout(state: web::Data<AppState>, caller: Caller) -> ApiResult<HttpResponse> {
    if caller.key.is_some() {
        return Err(ApiError::validation(
            "authorization",
            "is an API key; revoke keys with DELETE /v1/tenants/{tenant}/api-keys/{key}",
        ));
    }
    let event = caller.audit(
        None,
        "auth.logout",
        "session",
        AuditResult::Success,
        json!({}),
    );
    let hash = caller.secret_hash;
    state
        .db(move |conn| {
            conn.build_transaction().run(|conn| {
                store::sessions::revoke(conn, &hash)?;
                store::audit::append(conn, &event)?;
                Ok::<_, ApiError>(())
            })
        })
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = crate::examples::accept_invitation_request)]
pub struct AcceptInvitationRequest {
    /// The `bki_…` token from the invitation mail.
    pub token: String,
    /// At least 12 characters, not a common password.
    #[schema(schema_with = crate::schemas::password)]
    pub password: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = crate::examples::accept_invitation_response)]
pub struct AcceptInvitationResponse {
    pub principal_id: uuid::Uuid,
    pub email: String,
}

#[utoipa::path(post, operation_id = "acceptInvitation", path = "/v1/auth/accept-invitation", tag = "auth", request_body = AcceptInvitationRequest, responses(
    (status = 200, description = "The password is set; log in with it", body = AcceptInvitationResponse),
    (status = 404, description = "No live invitation has this token", body = crate::error::Problem),
    (status = 422, body = crate::error::Problem),
    (status = 429, description = "Too many attempts from this client; see Retry-After", body = crate::error::Problem)))]
pub async fn accept_invitation(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: JsonBody<AcceptInvitationRequest>,
) -> ApiResult<HttpResponse> {
    let AcceptInvitationRequest { token, password } = body.into_inner()?;
    // Counted per client address before anything else (tokens are 256 random bits: guessing
    // is hopeless, but each try must not cost a hash), and the token is looked up before the
    // password is checked and hashed, so only a live token costs argon2 (and an unknown token
    // is 404 whatever the password).
    let client_key = format!("invitation-ip:{}", client_address(&req));
    let (window, max) = (
        state.config.login_lockout,
        i32::try_from(state.config.login_max_failures).unwrap_or(i32::MAX),
    );
    let token_hash = secrets::sha256(token.trim().as_bytes());
    let (reserved, lookup) = (vec![client_key.clone()], token_hash);
    let (client, live) = state
        .db(move |conn| {
            let windows = store::throttle::reserve(conn, &reserved, window)?;
            let live = store::principals::find_by_live_invitation(conn, &lookup)?.is_some();
            Ok((windows.first().copied(), live))
        })
        .await?;
    if let Some(client) = client
        && client.attempts > max.saturating_mul(10)
    {
        return Err(locked(Duration::from_secs(
            u64::try_from(client.retry_after).unwrap_or(1),
        )));
    }
    if !live {
        return Err(no_live_invitation());
    }
    check_password_policy("password", &password).map_err(|e| ApiError::Validation(vec![e]))?;
    let permit = state.hashing_slot(&client_address(&req)).await?;
    let password_hash = web::block(move || {
        let _permit = permit;
        password::hash_password(&password)
    })
    .await?
    .map_err(ApiError::internal)?;
    let request_id = request_id(&req);
    let principal = state
        .db(move |conn| {
            conn.build_transaction().run(|conn| {
                let principal = store::principals::find_by_live_invitation(conn, &token_hash)?
                    .ok_or_else(no_live_invitation)?;
                store::throttle::release(conn, &client_key)?;
                if !store::principals::set_password_from_invitation(
                    conn,
                    principal.id,
                    &token_hash,
                    &password_hash,
                )? {
                    return Err(no_live_invitation());
                }
                // The mailbox is proven: the memberships offered to it take effect.
                let joined = store::memberships::accept_all_live(conn, principal.id)?;
                store::audit::append(
                    conn,
                    &NewAuditEvent {
                        actor_id: Some(principal.id),
                        actor: principal.label(),
                        tenant_id: None,
                        action: "auth.accept_invitation".into(),
                        target: format!("principal/{}", principal.id),
                        result: AuditResult::Success,
                        request_id: request_id.clone(),
                        details: json!({"joined_tenants": joined.len()}),
                    },
                )?;
                for (tenant_id, role) in joined {
                    store::audit::append(
                        conn,
                        &NewAuditEvent {
                            actor_id: Some(principal.id),
                            actor: principal.label(),
                            tenant_id: Some(tenant_id),
                            action: "membership.accept".into(),
                            target: format!("principal/{}", principal.id),
                            result: AuditResult::Success,
                            request_id: request_id.clone(),
                            details: json!({"role": role, "by": "invitation"}),
                        },
                    )?;
                }
                Ok::<_, ApiError>(principal)
            })
        })
        .await?;
    Ok(HttpResponse::Ok().json(AcceptInvitationResponse {
        principal_id: principal.id,
        email: principal.email.unwrap_or_default(),
    }))
}
