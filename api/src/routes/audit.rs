//! The audit trail over HTTP: a tenant's events, all events, and chain verification.

use crate::auth::Caller;
use crate::error::ApiResult;
use crate::routes::{PageOf, SeqPageQuery};
use crate::state::AppState;
use actix_web::{HttpResponse, web};
use bulkhead_core::audit::BreakKind;
use bulkhead_core::authz::{Action, Object};
use bulkhead_core::store::{self, audit::AuditEvent};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

page_schema!(AuditEventPage, AuditEventView, audit_event_page);

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditEventView {
    pub seq: i64,
    pub id: Uuid,
    pub occurred_at: DateTime<Utc>,
    pub actor_id: Option<Uuid>,
    pub actor: String,
    pub tenant_id: Option<Uuid>,
    /// `object.action`, such as `tenant.create` or `member.delete`.
    pub action: String,
    pub target: String,
    /// `success`, `denied` or `failure`.
    pub result: String,
    pub request_id: String,
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
    /// Hex SHA-256 of the previous event's hash and this event's content.
    pub hash: String,
}

impl From<AuditEvent> for AuditEventView {
    fn from(e: AuditEvent) -> Self {
        Self {
            seq: e.seq,
            id: e.id,
            occurred_at: e.occurred_at,
            actor_id: e.actor_id,
            actor: e.actor,
            tenant_id: e.tenant_id,
            action: e.action,
            target: e.target,
            result: e.result,
            request_id: e.request_id,
            details: e.details,
            hash: hex::encode(&e.hash),
        }
    }
}

#[utoipa::path(get, operation_id = "listTenantAuditEvents", path = "/v1/tenants/{tenant}/audit-events", tag = "audit", security(("bearer" = [])),
    params(("tenant" = String, Path, description = "Tenant id or slug"), SeqPageQuery),
    responses((status = 200, body = AuditEventPage), (status = 403, body = crate::error::Problem),
        (status = 404, body = crate::error::Problem)))]
pub async fn list_for_tenant(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    query: web::Query<SeqPageQuery>,
) -> ApiResult<HttpResponse> {
    let tenant = state
        .authorize_tenant(&caller, &path, Object::Audit, Action::Read)
        .await?;
    let (limit, after) = (query.limit()?, query.seq_cursor()?);
    let page = state
        .db(move |conn| Ok(store::audit::list(conn, Some(tenant.id), after, limit)?))
        .await?;
    Ok(HttpResponse::Ok().json(PageOf::from_page(page, AuditEventView::from)))
}

#[utoipa::path(get, operation_id = "listAuditEvents", path = "/v1/audit-events", tag = "audit", security(("bearer" = [])),
    params(SeqPageQuery),
    responses((status = 200, body = AuditEventPage), (status = 403, body = crate::error::Problem)))]
pub async fn list_all(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<SeqPageQuery>,
) -> ApiResult<HttpResponse> {
    state
        .authorize_platform(&caller, Object::AuditTrail, Action::Read)
        .await?;
    let (limit, after) = (query.limit()?, query.seq_cursor()?);
    let page = state
        .db(move |conn| Ok(store::audit::list(conn, None, after, limit)?))
        .await?;
    Ok(HttpResponse::Ok().json(PageOf::from_page(page, AuditEventView::from)))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BrokenLink {
    pub seq: i64,
    pub id: Uuid,
    pub kind: BreakKind,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = crate::examples::verify_report)]
pub struct VerifyReport {
    /// `true` when every row chains onto the one before it.
    pub valid: bool,
    /// Rows checked, up to and including the first broken one.
    pub checked: u64,
    /// The first row that does not fit the chain.
    pub first_broken: Option<BrokenLink>,
}

#[utoipa::path(get, operation_id = "verifyAuditChain", path = "/v1/audit-events/verify", tag = "audit", security(("bearer" = [])),
    responses((status = 200, body = VerifyReport), (status = 403, body = crate::error::Problem)))]
pub async fn verify(state: web::Data<AppState>, caller: Caller) -> ApiResult<HttpResponse> {
    state
        .authorize_platform(&caller, Object::AuditTrail, Action::Read)
        .await?;
    let report = state.db(|conn| Ok(store::audit::verify(conn)?)).await?;
    Ok(HttpResponse::Ok().json(VerifyReport {
        valid: report.first_break.is_none(),
        checked: report.checked,
        first_broken: report.first_break.map(|b| BrokenLink {
            seq: b.seq,
            id: b.id,
            kind: b.kind,
        }),
    }))
}
