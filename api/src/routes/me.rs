//! `GET /v1/me`: who the caller is and what it holds.

use crate::auth::Caller;
use crate::error::ApiResult;
use crate::state::AppState;
use actix_web::{HttpResponse, web};
use bulkhead_core::domain::PlatformRole;
use bulkhead_core::store;
use serde::Serialize;
use uuid::Uuid;

#[derive(Debug, Serialize, utoipa::ToSchema)]
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
