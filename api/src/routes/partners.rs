//! `POST /v1/partners`: platform admins create partner users (an extension of the contract:
//! partners must exist before they can onboard tenants).

use crate::auth::Caller;
use crate::body::JsonBody;
use crate::error::{ApiError, ApiResult};
use crate::routes::members::{Invitation, invite_user, mail_invitation};
use crate::state::AppState;
use actix_web::{HttpResponse, web};
use bulkhead_core::audit::AuditResult;
use bulkhead_core::authz::{Action, Domain, Object};
use bulkhead_core::domain::{Email, PlatformRole, Validator, parse_display_text};
use bulkhead_core::store;
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = crate::examples::create_partner_request)]
pub struct CreatePartnerRequest {
    #[schema(schema_with = crate::schemas::email)]
    pub email: String,
    #[schema(schema_with = crate::schemas::display_name)]
    pub display_name: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = crate::examples::partner_created)]
pub struct PartnerCreated {
    pub principal_id: Uuid,
    pub email: String,
    /// Mailed to the partner, who sets a password with `POST /v1/auth/accept-invitation`.
    pub invitation: Invitation,
}

#[utoipa::path(post, operation_id = "createPartner", path = "/v1/partners", tag = "tenants", security(("bearer" = [])),
    request_body = CreatePartnerRequest, responses(
    (status = 201, body = PartnerCreated),
    (status = 403, body = crate::error::Problem),
    (status = 409, description = "A principal with this email exists", body = crate::error::Problem),
    (status = 422, body = crate::error::Problem)))]
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    body: JsonBody<CreatePartnerRequest>,
) -> ApiResult<HttpResponse> {
    // Granting a platform role is itself a platform-admin action.
    let allowed = state.authz.read().await.allows(
        caller.id,
        Domain::Everywhere,
        Object::Tenant,
        Action::Create,
    );
    if !allowed {
        state
            .record_denial(
                &caller,
                None,
                Object::Tenant,
                Action::Create,
                "partner".into(),
            )
            .await?;
        return Err(ApiError::Forbidden(
            "only platform admins create partners".into(),
        ));
    }
    let body = body.into_inner()?;
    let mut v = Validator::new();
    let email = v.check(Email::parse("email", &body.email));
    let display_name = match &body.display_name {
        Some(name) => v.check(parse_display_text("display_name", name)),
        None => email.as_ref().map(|e| e.as_str().to_owned()),
    };
    v.finish().map_err(ApiError::Validation)?;
    let (Some(email), Some(display_name)) = (email, display_name) else {
        return Err(ApiError::internal(anyhow::anyhow!(
            "validated fields missing"
        )));
    };
    let inviter = caller.display_name.clone();
    let created = state
        .db(move |conn| {
            conn.build_transaction().run(|conn| {
                if store::principals::find_by_email(conn, email.as_str())?.is_some() {
                    return Err(ApiError::Conflict(format!(
                        "a user with email {email} exists already; partners are new accounts"
                    )));
                }
                let (principal, issued) =
                    invite_user(conn, &email, &display_name, Some(PlatformRole::Partner))?;
                let invitation = mail_invitation(
                    conn,
                    store::mail::MailKind::PartnerInvitation,
                    &inviter,
                    "Bulkhead as a partner (onboarding tenants)",
                    issued,
                )?;
                store::audit::append(
                    conn,
                    &caller.audit(
                        None,
                        "partner.create",
                        format!("principal/{}", principal.id),
                        AuditResult::Success,
                        json!({"email": email.as_str()}),
                    ),
                )?;
                Ok(PartnerCreated {
                    principal_id: principal.id,
                    email: email.as_str().to_owned(),
                    invitation,
                })
            })
        })
        .await?;
    state.mail_wake.notify_one();
    Ok(HttpResponse::Created().json(created))
}
