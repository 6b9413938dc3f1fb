//! `GET /v1/me`: who the caller is and what it holds; `/v1/me/invitations`: memberships
//! offered to the caller's account, which it accepts or declines signed in.

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::routes::{PageOf, parse_id};
use crate::state::AppState;
use actix_web::{HttpResponse, web};
use bulkhead_core::audit::AuditResult;
use bulkhead_core::domain::PlatformRole;
use bulkhead_core::store;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

page_schema!(
    PendingInvitationPage,
    PendingInvitationView,
    pending_invitation_page
);

/// A membership offered to the caller: it grants nothing until accepted.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = crate::examples::pending_invitation_view)]
pub struct PendingInvitationView {
    pub tenant_id: Uuid,
    pub tenant_slug: String,
    pub tenant_name: String,
    pub role: String,
    pub invited_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = crate::examples::membership_view)]
pub struct MembershipView {
    pub tenant_id: Uuid,
    pub role: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = crate::examples::me_response)]
pub struct MeResponse {
    pub id: Uuid,
    /// `user` or `service_account`.
    pub kind: String,
    pub email: Option<String>,
    pub display_name: String,
    pub platform_role: Option<PlatformRole>,
    /// The API key used for this request, if any.
    pub api_key_id: Option<Uuid>,
    pub memberships: Vec<MembershipView>,
}

#[utoipa::path(get, operation_id = "getMe", path = "/v1/me", tag = "auth", security(("bearer" = [])), responses(
    (status = 200, body = MeResponse), (status = 401, body = crate::error::Problem)))]
pub async fn me(state: web::Data<AppState>, caller: Caller) -> ApiResult<HttpResponse> {
    let id = caller.id;
    let roles = state
        .db(move |conn| Ok(store::memberships::roles_of(conn, id)?))
        .await?;
    Ok(HttpResponse::Ok().json(MeResponse {
        id: caller.id,
        kind: caller.kind,
        email: caller.email,
        display_name: caller.display_name,
        platform_role: caller.platform_role,
        api_key_id: caller.key.map(|k| k.key_id),
        memberships: roles
            .into_iter()
            .map(|(tenant_id, role)| MembershipView { tenant_id, role })
            .collect(),
    }))
}

#[utoipa::path(get, operation_id = "listMyInvitations", path = "/v1/me/invitations", tag = "auth", security(("bearer" = [])), responses(
    (status = 200, body = PendingInvitationPage), (status = 401, body = crate::error::Problem)))]
pub async fn invitations(state: web::Data<AppState>, caller: Caller) -> ApiResult<HttpResponse> {
    let id = caller.id;
    let pending = state
        .db(move |conn| Ok(store::memberships::pending_for(conn, id)?))
        .await?;
    Ok(HttpResponse::Ok().json(PageOf {
        items: pending
            .into_iter()
            .map(|p| PendingInvitationView {
                tenant_id: p.tenant_id,
                tenant_slug: p.tenant_slug,
                tenant_name: p.tenant_name,
                role: p.role,
                invited_at: p.invited_at,
                expires_at: p.expires_at,
            })
            .collect(),
        next_cursor: None,
    }))
}

fn no_open_invitation(tenant: Uuid) -> ApiError {
    ApiError::NotFound(format!(
        "no open invitation from tenant {tenant}: it was accepted, declined or withdrawn, or it \
         expired (72 hours); ask the tenant to add you again"
    ))
}

#[utoipa::path(post, operation_id = "acceptMyInvitation", path = "/v1/me/invitations/{tenant}/accept", tag = "auth", security(("bearer" = [])),
    params(("tenant" = Uuid, Path, description = "The inviting tenant's id")),
    responses((status = 200, description = "Accepted: the membership holds from the next request", body = MembershipView),
        (status = 401, body = crate::error::Problem), (status = 404, body = crate::error::Problem)))]
pub async fn accept_invitation(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let tenant_id = parse_id(&path, "invitation")?;
    let accepted = state
        .db(move |conn| {
            conn.build_transaction().run(|conn| {
                let role = store::memberships::accept(conn, caller.id, tenant_id)?
                    .ok_or_else(|| no_open_invitation(tenant_id))?;
                store::audit::append(
                    conn,
                    &caller.audit(
                        Some(tenant_id),
                        "membership.accept",
                        format!("principal/{}", caller.id),
                        AuditResult::Success,
                        json!({"role": role}),
                    ),
                )?;
                Ok::<_, ApiError>(MembershipView { tenant_id, role })
            })
        })
        .await?;
    Ok(HttpResponse::Ok().json(accepted))
}

#[utoipa::path(post, operation_id = "declineMyInvitation", path = "/v1/me/invitations/{tenant}/decline", tag = "auth", security(("bearer" = [])),
    params(("tenant" = Uuid, Path, description = "The inviting tenant's id")),
    responses((status = 204, description = "Declined: the offered membership is gone"),
        (status = 401, body = crate::error::Problem), (status = 404, body = crate::error::Problem)))]
pub async fn decline_invitation(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let tenant_id = parse_id(&path, "invitation")?;
    state
        .db(move |conn| {
            conn.build_transaction().run(|conn| {
                if !store::memberships::decline(conn, caller.id, tenant_id)? {
                    return Err(no_open_invitation(tenant_id));
                }
                store::audit::append(
                    conn,
                    &caller.audit(
                        Some(tenant_id),
                        "membership.decline",
                        format!("principal/{}", caller.id),
                        AuditResult::Success,
                        json!({}),
                    ),
                )?;
                Ok::<_, ApiError>(())
            })
        })
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
