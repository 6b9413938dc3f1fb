//! What an environment hands out: its credentials (audited, only once its walls were
//! verified) and the isolation guarantees measured on it.

use super::environment;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use actix_web::{HttpResponse, web};
use bulkhead_core::audit::AuditResult;
use bulkhead_core::authz::{Action, Object};
use bulkhead_core::guarantees::{Enforcement, GuaranteeStatus};
use bulkhead_core::lifecycle::EnvironmentState;
use bulkhead_core::store;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = crate::examples::credentials_view)]
pub struct CredentialsView {
    pub host: String,
    pub port: i32,
    pub database: String,
    pub schema: String,
    pub username: String,
    pub password: String,
    /// A libpq URL with the schema as search_path (parts percent-encoded, IPv6 in brackets).
    pub url: String,
}

#[utoipa::path(get, operation_id = "getEnvironmentCredentials", path = "/v1/tenants/{tenant}/environments/{env}/credentials", tag = "environments", security(("bearer" = [])),
    params(("tenant" = String, Path), ("env" = String, Path)),
    responses((status = 200, description = "Every read is audited. Sent with `Cache-Control: no-store`, as every answer here", body = CredentialsView,
            headers(("Cache-Control" = String, description = "no-store"))),
        (status = 403, body = crate::error::Problem), (status = 404, body = crate::error::Problem),
        (status = 409, description = "`conflict` (title \"The environment is not ready\"): credentials are available once the environment is ready", body = crate::error::Problem,
            headers(("Cache-Control" = String, description = "no-store")))))]
pub async fn credentials(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> HttpResponse {
    // A password must not sit in a cache on the way, nor an answer that would hide it later.
    let mut response = read_credentials(state, caller, path)
        .await
        .unwrap_or_else(|error| actix_web::ResponseError::error_response(&error));
    response.headers_mut().insert(
        actix_web::http::header::CACHE_CONTROL,
        actix_web::http::header::HeaderValue::from_static("no-store"),
    );
    response
}

async fn read_credentials(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let (tenant_ref, env_ref) = path.into_inner();
    let (_, environment) = environment(
        &state,
        &caller,
        &tenant_ref,
        &env_ref,
        Object::Credentials,
        Action::Read,
    )
    .await?;
    // The password is stored before the first apply runs; it is handed out only once the
    // environment's walls were verified.
    if environment.state != EnvironmentState::Ready {
        return Err(ApiError::NotReady(format!(
            "environment is {}; credentials are available once it is ready",
            environment.state
        )));
    }
    let environment_id = environment.id;
    let event = caller.audit(
        Some(environment.tenant_id),
        "credentials.read",
        format!("environment/{environment_id}"),
        AuditResult::Success,
        json!({"environment": environment.name}),
    );
    let stored = state
        .db(move |conn| {
            conn.build_transaction().run(|conn| {
                let stored = store::environments::credentials(conn, environment_id)?;
                if stored.is_some() {
                    store::audit::append(conn, &event)?;
                }
                Ok::<_, ApiError>(stored)
            })
        })
        .await?
        .ok_or_else(|| {
            ApiError::NotReady(format!(
                "environment is {} but has no credentials stored; apply it to set a new \
                 password, credentials are available once it is ready",
                environment.state
            ))
        })?;
    let password = state
        .config
        .credentials_keys
        .open(&stored.sealed(), environment_id.as_bytes())
        .map_err(ApiError::internal)?;
    let port = u16::try_from(stored.port).map_err(ApiError::internal)?;
    let search_path = format!("-csearch_path={}", stored.schema);
    let url = bulkhead_core::dburl::ConnUrl::postgres(
        &stored.username,
        &password,
        &stored.host,
        port,
        &stored.database,
        &[("options", search_path.as_str())],
    )
    .map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok().json(CredentialsView {
        url: url.as_str().to_owned(),
        host: stored.host,
        port: stored.port,
        database: stored.database,
        schema: stored.schema,
        username: stored.username,
        password,
    }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct GuaranteeView {
    /// `data`, `identity`, `metadata`, `compute`.
    pub layer: String,
    pub mechanism: String,
    /// `verified` (a probe tried it as the tenant and was refused), `violated` (the wall is
    /// missing) or `not_provided` (the tier cannot separate it; see `provided_by`).
    pub status: GuaranteeStatus,
    /// `wall` (the tenant cannot lift it), `default` (the tenant can change it for its own
    /// sessions with `SET`) or `none` (a gap).
    pub enforcement: Enforcement,
    pub evidence: String,
    /// For `not_provided`: which tier or placement provides it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provided_by: Option<String>,
    pub checked_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = crate::examples::isolation_view)]
pub struct IsolationView {
    pub environment_id: Uuid,
    pub isolation: String,
    /// In the order of the guarantee catalog: data, identity, metadata, compute; gaps included.
    pub guarantees: Vec<GuaranteeView>,
}

#[utoipa::path(get, operation_id = "getEnvironmentIsolation", path = "/v1/tenants/{tenant}/environments/{env}/isolation", tag = "environments", security(("bearer" = [])),
    params(("tenant" = String, Path), ("env" = String, Path)),
    responses((status = 200, body = IsolationView),
        (status = 403, description = "Your role in this tenant does not allow this", body = crate::error::Problem),
        (status = 404, body = crate::error::Problem)))]
pub async fn isolation(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let (tenant_ref, env_ref) = path.into_inner();
    let (_, environment) = environment(
        &state,
        &caller,
        &tenant_ref,
        &env_ref,
        Object::Environment,
        Action::Read,
    )
    .await?;
    let environment_id = environment.id;
    let rows = state
        .db(move |conn| Ok(store::environments::guarantees(conn, environment_id)?))
        .await?;
    let mut guarantees: Vec<GuaranteeView> = rows
        .into_iter()
        .filter_map(|g| {
            Some(GuaranteeView {
                status: GuaranteeStatus::from_db(&g.status)?,
                enforcement: Enforcement::from_db(&g.enforcement)?,
                layer: g.layer,
                mechanism: g.mechanism,
                evidence: g.evidence,
                provided_by: g.provided_by,
                checked_at: g.checked_at,
            })
        })
        .collect();
    let position = |g: &GuaranteeView| {
        bulkhead_core::guarantees::CATALOG
            .iter()
            .position(|c| c.layer == g.layer && c.mechanism == g.mechanism)
            .unwrap_or(usize::MAX)
    };
    guarantees.sort_by_key(position);
    Ok(HttpResponse::Ok().json(IsolationView {
        environment_id,
        isolation: environment.isolation,
        guarantees,
    }))
}
