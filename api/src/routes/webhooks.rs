//! A tenant's webhooks: registered with a URL and the events they want (the signing secret is
//! shown once), listed, deleted, and their deliveries listed with each try's status.

use crate::auth::Caller;
use crate::body::JsonBody;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use actix_web::{HttpResponse, web};
use bulkhead_core::audit::AuditResult;
use bulkhead_core::authz::{Action, Object};
use bulkhead_core::store::{
    self,
    webhooks::{Delivery, NewWebhook, Webhook},
};
use bulkhead_core::webhooks::{MAX_PER_TENANT, new_secret, validate};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = crate::examples::create_webhook_request)]
pub struct CreateWebhookRequest {
    #[schema(schema_with = crate::schemas::webhook_url)]
    pub url: String,
    #[schema(schema_with = crate::schemas::webhook_events)]
    pub events: Vec<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = crate::examples::webhook_view)]
pub struct WebhookView {
    pub id: Uuid,
    pub url: String,
    pub events: Vec<String>,
    pub created_at: DateTime<Utc>,
}

impl From<Webhook> for WebhookView {
    fn from(w: Webhook) -> Self {
        Self {
            id: w.id,
            url: w.url,
            events: w.events,
            created_at: w.created_at,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = crate::examples::webhook_created)]
pub struct WebhookCreated {
    pub webhook: WebhookView,
    /// The signing secret (`whsec_…`, Standard Webhooks): shown this once, never again.
    pub secret: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = crate::examples::webhook_list)]
pub struct WebhookList {
    pub items: Vec<WebhookView>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = crate::examples::delivery_list)]
pub struct DeliveryList {
    /// The latest 100, newest first.
    pub items: Vec<Delivery>,
}

#[utoipa::path(post, operation_id = "createWebhook", path = "/v1/tenants/{tenant}/webhooks", tag = "webhooks", security(("bearer" = [])),
    params(("tenant" = String, Path, description = "Tenant id or slug")),
    request_body = CreateWebhookRequest,
    responses((status = 201, description = "Registered; the secret is shown this once", body = WebhookCreated),
        (status = 403, body = crate::error::Problem), (status = 404, body = crate::error::Problem),
        (status = 409, description = "The tenant has as many webhooks as it may, or is offboarding", body = crate::error::Problem),
        (status = 422, body = crate::error::Problem)))]
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    body: JsonBody<CreateWebhookRequest>,
) -> ApiResult<HttpResponse> {
    let tenant = state
        .authorize_tenant(&caller, &path, Object::Tenant, Action::Update)
        .await?;
    let body = body.into_inner()?;
    let valid = validate(&body.url, &body.events, state.config.webhooks.allow_private)
        .map_err(ApiError::Validation)?;
    let secret = new_secret();
    let id = Uuid::now_v7();
    let sealed = state
        .config
        .credentials_keys
        .seal(&secret, id.as_bytes())
        .map_err(ApiError::internal)?;
    let created = state
        .db(move |conn| {
            conn.build_transaction().run(|conn| {
                crate::routes::tenants::lock_active_as(conn, &tenant, &caller, Object::Tenant, Action::Update)?;
                if store::webhooks::list(conn, tenant.id)?.len() as i64 >= MAX_PER_TENANT {
                    return Err(ApiError::Conflict(format!(
                        "tenant '{}' has {MAX_PER_TENANT} webhooks, as many as it may; delete one first",
                        tenant.slug
                    )));
                }
                let webhook = store::webhooks::insert(
                    conn,
                    &NewWebhook {
                        id,
                        tenant_id: tenant.id,
                        url: valid.url.as_str(),
                        events: &valid.events,
                        secret_nonce: sealed.nonce,
                        secret_ciphertext: sealed.ciphertext,
                        secret_key_id: sealed.key_id.unwrap_or_default(),
                        created_by: Some(caller.id),
                    },
                )?;
                store::audit::append(
                    conn,
                    &caller.audit(
                        Some(tenant.id),
                        "webhook.create",
                        format!("tenant/{}/webhooks/{id}", tenant.slug),
                        AuditResult::Success,
                        json!({"url": webhook.url, "events": webhook.events}),
                    ),
                )?;
                Ok::<_, ApiError>(webhook)
            })
        })
        .await?;
    Ok(HttpResponse::Created().json(WebhookCreated {
        webhook: created.into(),
        secret,
    }))
}

#[utoipa::path(get, operation_id = "listWebhooks", path = "/v1/tenants/{tenant}/webhooks", tag = "webhooks", security(("bearer" = [])),
    params(("tenant" = String, Path, description = "Tenant id or slug")),
    responses((status = 200, body = WebhookList), (status = 403, body = crate::error::Problem),
        (status = 404, body = crate::error::Problem)))]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let tenant = state
        .authorize_tenant(&caller, &path, Object::Audit, Action::Read)
        .await?;
    let items = state
        .db(move |conn| Ok::<_, ApiError>(store::webhooks::list(conn, tenant.id)?))
        .await?;
    Ok(HttpResponse::Ok().json(WebhookList {
        items: items.into_iter().map(WebhookView::from).collect(),
    }))
}

fn webhook_id(raw: &str) -> ApiResult<Uuid> {
    Uuid::try_parse(raw)
        .map_err(|_| ApiError::NotFound(format!("no webhook '{raw}' in this tenant")))
}

#[utoipa::path(delete, operation_id = "deleteWebhook", path = "/v1/tenants/{tenant}/webhooks/{webhook}", tag = "webhooks", security(("bearer" = [])),
    params(("tenant" = String, Path, description = "Tenant id or slug"), ("webhook" = String, Path, description = "Webhook id")),
    responses((status = 204, description = "Deleted: nothing more is sent to it; its undelivered events end `failed`"),
        (status = 403, body = crate::error::Problem), (status = 404, body = crate::error::Problem)))]
pub async fn delete(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let (tenant_ref, raw) = path.into_inner();
    let tenant = state
        .authorize_tenant(&caller, &tenant_ref, Object::Tenant, Action::Update)
        .await?;
    let id = webhook_id(&raw)?;
    state
        .db(move |conn| {
            conn.build_transaction().run(|conn| {
                crate::routes::tenants::lock_active_as(
                    conn,
                    &tenant,
                    &caller,
                    Object::Tenant,
                    Action::Update,
                )?;
                if !store::webhooks::delete(conn, tenant.id, id)? {
                    return Err(ApiError::NotFound(format!(
                        "no webhook '{id}' in this tenant"
                    )));
                }
                store::audit::append(
                    conn,
                    &caller.audit(
                        Some(tenant.id),
                        "webhook.delete",
                        format!("tenant/{}/webhooks/{id}", tenant.slug),
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

#[utoipa::path(get, operation_id = "listWebhookDeliveries", path = "/v1/tenants/{tenant}/webhooks/{webhook}/deliveries", tag = "webhooks", security(("bearer" = [])),
    params(("tenant" = String, Path, description = "Tenant id or slug"), ("webhook" = String, Path, description = "Webhook id")),
    responses((status = 200, body = DeliveryList), (status = 403, body = crate::error::Problem),
        (status = 404, body = crate::error::Problem)))]
pub async fn deliveries(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let (tenant_ref, raw) = path.into_inner();
    let tenant = state
        .authorize_tenant(&caller, &tenant_ref, Object::Audit, Action::Read)
        .await?;
    let id = webhook_id(&raw)?;
    let items = state
        .db(move |conn| {
            if store::webhooks::find(conn, tenant.id, id)?.is_none() {
                return Err(ApiError::NotFound(format!(
                    "no webhook '{id}' in this tenant"
                )));
            }
            Ok(store::webhooks::deliveries(conn, id, 100)?)
        })
        .await?;
    Ok(HttpResponse::Ok().json(DeliveryList { items }))
}
