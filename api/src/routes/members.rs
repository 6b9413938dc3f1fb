//! Tenant members: add (inviting unknown emails), list, remove.

use crate::auth::Caller;
use crate::body::JsonBody;
use crate::error::{ApiError, ApiResult};
use crate::routes::tenants::{ensure_not_leaving, ensure_quota, lock_active_as};
use crate::routes::{PageOf, PageQuery, parse_id};
use crate::state::AppState;
use actix_web::{HttpResponse, web};
use bulkhead_core::audit::AuditResult;
use bulkhead_core::authz::{Action, Object};
use bulkhead_core::domain::{Email, PlatformRole, TenantRole, Validator, parse_display_text};
use bulkhead_core::limits::Quota;
use bulkhead_core::secrets;
use bulkhead_core::store::{
    self, memberships::Member, principals::NewPrincipal, principals::Principal,
};
use chrono::{DateTime, SubsecRound, Utc};
use diesel::PgConnection;
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

/// How long an invitation token stays valid.
pub const INVITATION_HOURS: i64 = 72;

page_schema!(MemberPage, MemberView, member_page);

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = crate::examples::invitation)]
pub struct Invitation {
    /// Where the one-time token was mailed: only that mailbox can accept the invitation
    /// (`POST /v1/auth/accept-invitation {token, password}`). The token is never in a response.
    pub mailed_to: String,
    pub expires_at: DateTime<Utc>,
}

/// A fresh invitation token: its secret (for the mail only) and the invitation as shown.
pub struct IssuedInvitation {
    pub secret: String,
    pub shown: Invitation,
}

/// Creates a user without a password, holding a fresh invitation (mail it with
/// [`mail_invitation`]).
pub fn invite_user(
    conn: &mut PgConnection,
    email: &Email,
    display_name: &str,
    platform_role: Option<PlatformRole>,
) -> ApiResult<(Principal, IssuedInvitation)> {
    let token = secrets::generate_invitation_token();
    let expires_at = Utc::now() + chrono::Duration::hours(INVITATION_HOURS);
    let principal = store::principals::insert(
        conn,
        &NewPrincipal {
            id: Uuid::now_v7(),
            kind: "user",
            email: Some(email.as_str()),
            display_name,
            password_hash: None,
            platform_role: platform_role.map(PlatformRole::as_str),
            invitation_token_hash: Some(&token.hash),
            invitation_expires_at: Some(expires_at),
        },
    )?;
    Ok((
        principal,
        IssuedInvitation {
            secret: token.secret,
            shown: Invitation {
                mailed_to: email.as_str().to_owned(),
                expires_at,
            },
        },
    ))
}

/// Queues the invitation's mail (in the caller's transaction) and returns what the response
/// shows: the address it went to, never the token.
pub fn mail_invitation(
    conn: &mut PgConnection,
    kind: store::mail::MailKind,
    inviter: &str,
    what: &str,
    issued: IssuedInvitation,
) -> ApiResult<Invitation> {
    crate::mail::enqueue_invitation(
        conn,
        kind,
        &issued.shown.mailed_to,
        inviter,
        what,
        &issued.secret,
        issued.shown.expires_at,
    )?;
    Ok(issued.shown)
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = crate::examples::member_view)]
pub struct MemberView {
    pub principal_id: Uuid,
    pub email: Option<String>,
    /// The account's own display name once the membership is accepted; while `invited`, the
    /// email (what an account calls itself is not shown to a tenant it has not joined).
    pub display_name: String,
    pub role: String,
    /// The membership is not accepted yet (`state` is `invited`).
    pub invitation_pending: bool,
    pub created_at: DateTime<Utc>,
    /// `invited` (every membership starts so; it grants nothing until the person accepts: a new
    /// account by accepting its mailed invitation token, an existing one signed in with
    /// `POST /v1/me/invitations/{tenant}/accept`), then `active`.
    pub state: String,
    /// For `invited`: when the offer lapses (adding the member again offers it anew).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invitation_expires_at: Option<DateTime<Utc>>,
}

impl From<Member> for MemberView {
    fn from(m: Member) -> Self {
        let invited = m.state == "invited";
        Self {
            principal_id: m.principal_id,
            display_name: match (&m.email, invited) {
                (Some(email), true) => email.clone(),
                _ => m.display_name,
            },
            email: m.email,
            role: m.role,
            invitation_pending: m.invitation_pending || invited,
            created_at: m.created_at,
            invitation_expires_at: m.invitation_expires_at,
            state: m.state,
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = crate::examples::add_member_request)]
pub struct AddMemberRequest {
    #[schema(schema_with = crate::schemas::email)]
    pub email: String,
    /// `tenant_admin`, `operator`, `approver`, `viewer`, `billing`, or (platform admins only)
    /// `partner`.
    #[schema(schema_with = crate::schemas::member_role)]
    pub role: String,
    /// Used when the email has no account yet; defaults to the email.
    #[schema(schema_with = crate::schemas::display_name)]
    pub display_name: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = crate::examples::member_added)]
pub struct MemberAdded {
    pub member: MemberView,
    /// Always present: where the mail went and when the offer lapses. The answer has the same
    /// shape whether or not the address already has an account (a new one gets a one-time
    /// token; an existing one is told to sign in and accept).
    pub invitation: Option<Invitation>,
}

/// Mails to one address per tenant and day (invitations, offers and re-sends together).
const MAILS_PER_DAY: i32 = 3;
const MAIL_WINDOW: std::time::Duration = std::time::Duration::from_secs(86_400);

/// Queues the mail of an offer to `email`, creating its account if it has none: who the
/// membership is for, and whether that account still has an open invitation token (what a
/// member view calls `invitation_pending`). `offer` is the inviter, what is offered, the
/// tenant and when the offer lapses.
fn offer_mail(
    conn: &mut PgConnection,
    existing: Option<Principal>,
    email: &Email,
    display_name: &str,
    is_platform_admin: bool,
    (inviter, what, tenant_id, expires_at): (&str, &str, Uuid, DateTime<Utc>),
) -> ApiResult<(Principal, bool)> {
    use store::mail::MailKind;
    Ok(match existing {
        // Invited before and never accepted. Only a platform admin may issue a fresh token:
        // anyone else holding it could take over the account and every grant it has in other
        // tenants (and a partner's platform role).
        Some(existing) if existing.password_hash.is_none() && is_platform_admin => {
            let token = secrets::generate_invitation_token();
            store::principals::renew_invitation(conn, existing.id, &token.hash, expires_at)?;
            let issued = IssuedInvitation {
                secret: token.secret,
                shown: Invitation {
                    mailed_to: email.as_str().to_owned(),
                    expires_at,
                },
            };
            mail_invitation(conn, MailKind::Invitation, inviter, what, issued)?;
            (existing, true)
        }
        // An account in use, or one whose earlier invitation is still open: nobody but its
        // owner may accept a grant for it; the mail says how.
        Some(existing) => {
            crate::mail::enqueue_membership_offer(
                conn,
                email.as_str(),
                inviter,
                what,
                tenant_id,
                expires_at,
                existing.password_hash.is_some(),
            )?;
            let pending = existing.invitation_token_hash.is_some();
            (existing, pending)
        }
        None => {
            let (principal, issued) = invite_user(conn, email, display_name, None)?;
            mail_invitation(conn, MailKind::Invitation, inviter, what, issued)?;
            (principal, true)
        }
    })
}

#[utoipa::path(post, operation_id = "addMember", path = "/v1/tenants/{tenant}/members", tag = "members", security(("bearer" = [])),
    params(("tenant" = String, Path, description = "Tenant id or slug")),
    request_body = AddMemberRequest, responses(
        (status = 201, body = MemberAdded), (status = 403, body = crate::error::Problem),
        (status = 404, body = crate::error::Problem),
        (status = 409, description = "Already a member, the tenant is offboarding, or it is at its `members` quota (`quota-exceeded`)", body = crate::error::Problem),
        (status = 422, body = crate::error::Problem),
        (status = 429, description = "The address was mailed 3 times in 24 h for this tenant (`too-many-requests`), or the caller is over its rate (`rate-limited`)", body = crate::error::Problem)))]
pub async fn add(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    body: JsonBody<AddMemberRequest>,
) -> ApiResult<HttpResponse> {
    let tenant = state
        .authorize_tenant(&caller, &path, Object::Member, Action::Create)
        .await?;
    let body = body.into_inner()?;
    let mut v = Validator::new();
    let email = v.check(Email::parse("email", &body.email));
    let role = v.check(TenantRole::parse("role", &body.role));
    let display_name = match &body.display_name {
        Some(name) => v.check(parse_display_text("display_name", name)),
        None => email.as_ref().map(|e| e.as_str().to_owned()),
    };
    v.finish().map_err(ApiError::Validation)?;
    let (Some(email), Some(role), Some(display_name)) = (email, role, display_name) else {
        return Err(ApiError::internal(anyhow::anyhow!(
            "validated fields missing"
        )));
    };
    if role == TenantRole::Partner && !caller.is_platform_admin() {
        let reason = "only platform admins grant the partner role".to_owned();
        return Err(state
            .deny(&caller, &tenant, Object::Member, Action::Create, reason)
            .await);
    }
    ensure_not_leaving(&tenant)?;
    // No one grants more than they hold. API keys add no people (a person would outlive the
    // key's expiry and revocation). Platform admins and partners onboard tenants: they offer
    // roles beyond their own (a tenant's first admin) to accounts that must prove their
    // mailbox and accept; everyone else grants only within their own permissions.
    let refusal = if caller.key.is_some() {
        Some(
            "API keys cannot add members (a person added by a key would outlive the key's \
             expiry and revocation); sign in as a person who holds member:create"
                .to_owned(),
        )
    } else if caller.is_platform_admin() || caller.platform_role == Some(PlatformRole::Partner) {
        None
    } else {
        state.exceeds_own(&caller, &tenant, role).await
    };
    if let Some(reason) = refusal {
        return Err(state
            .deny(&caller, &tenant, Object::Member, Action::Create, reason)
            .await);
    }
    // Each address is mailed at most `MAILS_PER_DAY` times a day per tenant (invitations,
    // offers and their re-sends together): adding a member cannot be used to flood a mailbox.
    let mail_key = vec![format!(
        "member-mail:{} {}",
        tenant.id,
        hex::encode(bulkhead_core::secrets::sha256(email.as_str().as_bytes()))
    )];
    let is_platform_admin = caller.is_platform_admin();
    let what = format!("tenant '{}' as {}", tenant.name, role.as_str());
    let inviter = caller.display_name.clone();
    let quotas = state.config.limits.quotas;
    let adder = caller.clone();
    let added = state
        .db(move |conn| {
            conn.build_transaction().run(|conn| {
                lock_active_as(conn, &tenant, &adder, Object::Member, Action::Create)?;
                // The mail is counted in the transaction that queues it: an add refused below
                // (already a member, over quota) mails nothing and counts nothing; adds of one
                // address take turns on the tenant's lock (and the window's row).
                let mailed = store::throttle::reserve(conn, &mail_key, MAIL_WINDOW)?;
                if let Some(window) = mailed.first().filter(|w| w.attempts > MAILS_PER_DAY) {
                    return Err(ApiError::TooManyRequests {
                        retry_after_secs: u64::try_from(window.retry_after).unwrap_or(3600),
                        detail: format!(
                            "{email} was already mailed {MAILS_PER_DAY} times in the last 24 \
                             hours for this tenant; ask them to look for the earlier mail (and \
                             in spam), or try again later"
                        ),
                    });
                }
                let existing = store::principals::find_by_email(conn, email.as_str())?;
                let membership = match &existing {
                    Some(principal) => store::memberships::find(conn, tenant.id, principal.id)?,
                    None => None,
                };
                let already = || {
                    ApiError::Conflict(format!(
                        "{email} is already a member of '{}'; remove the membership first to \
                         change the role",
                        tenant.slug
                    ))
                };
                // A re-sent offer holds no new place; anything else does (an expired offer
                // holds none any more: reviving it takes one again).
                let holds_a_place = match &membership {
                    Some(m) if m.state != "invited" => return Err(already()),
                    Some(m) => m.invitation_expires_at.is_none_or(|at| at <= Utc::now()),
                    None => true,
                };
                if role == TenantRole::Partner
                    && existing.as_ref().and_then(Principal::platform_role)
                        != Some(PlatformRole::Partner)
                {
                    return Err(ApiError::validation(
                        "role",
                        "partner can be granted only to partner accounts (POST /v1/partners)",
                    ));
                }
                if holds_a_place {
                    ensure_quota(conn, tenant.id, &tenant.slug, Quota::Members, 1, &quotas)?;
                }
                // Every membership starts `invited`, whoever the address belongs to, and the
                // answer has one shape: whether the address already has an account (in use, or
                // invited and never accepted) is not the caller's to learn.
                // To the microsecond, as PostgreSQL keeps it: the answer shows what is stored.
                let expires_at =
                    (Utc::now() + chrono::Duration::hours(INVITATION_HOURS)).trunc_subsecs(6);
                let (principal, token_pending) = offer_mail(
                    conn,
                    existing,
                    &email,
                    &display_name,
                    is_platform_admin,
                    (&inviter, &what, tenant.id, expires_at),
                )?;
                // Offered again (re-sent) when an earlier offer is still open or lapsed.
                let created_at = match membership {
                    Some(_) => store::memberships::renew_invited(
                        conn,
                        principal.id,
                        tenant.id,
                        role.as_str(),
                        expires_at,
                    )?
                    // Accepted since it was read (an accept does not take the tenant's lock).
                    .ok_or_else(already)?,
                    None => store::memberships::add_invited(
                        conn,
                        principal.id,
                        tenant.id,
                        role.as_str(),
                        Some(caller.id),
                        expires_at,
                    )
                    .map_err(|e| match e {
                        store::StoreError::Conflict(_) => already(),
                        other => other.into(),
                    })?,
                };
                store::audit::append(
                    conn,
                    &caller.audit(
                        Some(tenant.id),
                        "member.create",
                        format!("principal/{}", principal.id),
                        AuditResult::Success,
                        json!({"email": email.as_str(), "role": role.as_str()}),
                    ),
                )?;
                let member = MemberView::from(Member {
                    principal_id: principal.id,
                    email: principal.email,
                    display_name: principal.display_name,
                    role: role.as_str().to_owned(),
                    invitation_pending: token_pending,
                    created_at,
                    state: "invited".to_owned(),
                    invitation_expires_at: Some(expires_at),
                });
                let invitation = Some(Invitation {
                    mailed_to: email.as_str().to_owned(),
                    expires_at,
                });
                Ok::<_, ApiError>(MemberAdded { member, invitation })
            })
        })
        .await?;
    state.mail_wake.notify_one();
    Ok(HttpResponse::Created().json(added))
}

#[utoipa::path(get, operation_id = "listMembers", path = "/v1/tenants/{tenant}/members", tag = "members", security(("bearer" = [])),
    params(("tenant" = String, Path, description = "Tenant id or slug"), PageQuery),
    responses((status = 200, body = MemberPage), (status = 403, body = crate::error::Problem),
        (status = 404, body = crate::error::Problem)))]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    query: web::Query<PageQuery>,
) -> ApiResult<HttpResponse> {
    let tenant = state
        .authorize_tenant(&caller, &path, Object::Member, Action::Read)
        .await?;
    let (limit, after) = (query.limit()?, query.uuid_cursor()?);
    let page = state
        .db(move |conn| Ok(store::memberships::list(conn, tenant.id, after, limit)?))
        .await?;
    Ok(HttpResponse::Ok().json(PageOf::from_page(page, MemberView::from)))
}

#[utoipa::path(delete, operation_id = "removeMember", path = "/v1/tenants/{tenant}/members/{principal}", tag = "members", security(("bearer" = [])),
    params(("tenant" = String, Path, description = "Tenant id or slug"), ("principal" = Uuid, Path)),
    responses((status = 204, description = "Removed; takes effect on the next request"),
        (status = 403, body = crate::error::Problem), (status = 404, body = crate::error::Problem)))]
pub async fn remove(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let (tenant_ref, principal_ref) = path.into_inner();
    let tenant = state
        .authorize_tenant(&caller, &tenant_ref, Object::Member, Action::Delete)
        .await?;
    let principal_id = parse_id(&principal_ref, "member")?;
    state
        .db(move |conn| {
            conn.build_transaction().run(|conn| {
                // The same lock as every change to the tenant's members and keys: a removal and
                // a write by the one removed take turns, and the write re-checks its author.
                store::tenants::lock_for_change(conn, tenant.id)?;
                crate::routes::tenants::still_holds(
                    conn,
                    &tenant,
                    &caller,
                    Object::Member,
                    Action::Delete,
                )?;
                let Some(withdrawn) = store::memberships::remove(conn, tenant.id, principal_id)?
                else {
                    return Err(ApiError::NotFound(format!(
                        "principal {principal_id} is not a member of '{}'",
                        tenant.slug
                    )));
                };
                store::audit::append(
                    conn,
                    &caller.audit(
                        Some(tenant.id),
                        "member.delete",
                        format!("principal/{principal_id}"),
                        AuditResult::Success,
                        json!({}),
                    ),
                )?;
                audit_withdrawn(
                    conn,
                    &caller,
                    &tenant,
                    &withdrawn,
                    &format!("principal/{principal_id}"),
                )?;
                Ok(())
            })
        })
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// One `member.delete` event for each open offer withdrawn because `maker` (a removed member
/// or a revoked key) made it: the trail shows every invitation that ended, and why.
pub(crate) fn audit_withdrawn(
    conn: &mut PgConnection,
    caller: &Caller,
    tenant: &bulkhead_core::store::tenants::Tenant,
    invitees: &[Uuid],
    maker: &str,
) -> ApiResult<()> {
    for invitee in invitees {
        store::audit::append(
            conn,
            &caller.audit(
                Some(tenant.id),
                "member.delete",
                format!("principal/{invitee}"),
                AuditResult::Success,
                json!({"withdrawn_offer": true, "offered_by": maker}),
            ),
        )?;
    }
    Ok(())
}
