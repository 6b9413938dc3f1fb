//! Environments: the views every environment route answers with, list and read; creating one,
//! the jobs that change one, and what it hands out live in the submodules.

mod access;
mod changes;
mod create;
mod drift;
mod lifetime;
mod upgrade;

pub use access::*;
pub use changes::*;
pub use create::*;
pub use drift::*;
pub use lifetime::*;
pub use upgrade::*;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::routes::jobs::JobView;
use crate::routes::{PageOf, PageQuery};
use crate::state::AppState;
use actix_web::{HttpResponse, web};
use bulkhead_core::authz::{Action, Object};
use bulkhead_core::store;
use bulkhead_core::store::environments::Environment;
use bulkhead_core::store::tenants::Tenant;
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

/// Cost tags every environment must carry, from `policies/cost_tags.txt`.
pub fn required_cost_tags() -> Vec<&'static str> {
    include_str!("../../../../policies/cost_tags.txt")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

page_schema!(EnvironmentPage, EnvironmentView, environment_page);

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = crate::examples::environment_view)]
pub struct EnvironmentView {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub name: String,
    /// `development`, `staging` or `production`.
    pub stage: String,
    /// `shared` (a schema in a pooled database) or `dedicated` (its own database).
    pub isolation: String,
    pub blueprint: String,
    pub blueprint_version: i32,
    #[schema(value_type = Object)]
    pub cost_tags: serde_json::Value,
    /// `pending`, `provisioning`, `ready`, `drifted`, `failed`, `stopped`, `destroying` or
    /// `destroyed`.
    pub state: String,
    /// What differs from the blueprint, when `drifted`.
    #[schema(value_type = Option<Object>)]
    pub drift: Option<serde_json::Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When a worker destroys it (its TTL); absent: never.
    pub expires_at: Option<DateTime<Utc>>,
    /// When the scheduler next looks at it to stop or start it (the next edge of its stage's
    /// schedule); absent: its stage has no schedule.
    pub schedule_next_check_at: Option<DateTime<Utc>>,
}

impl From<Environment> for EnvironmentView {
    fn from(e: Environment) -> Self {
        Self {
            id: e.id,
            tenant_id: e.tenant_id,
            name: e.name,
            stage: e.stage,
            isolation: e.isolation,
            blueprint: e.blueprint,
            blueprint_version: e.blueprint_version,
            cost_tags: e.cost_tags,
            state: e.state.as_str().to_owned(),
            drift: e.drift,
            created_at: e.created_at,
            updated_at: e.updated_at,
            expires_at: e.expires_at,
            schedule_next_check_at: e.schedule_due_at,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = crate::examples::environment_accepted)]
pub struct EnvironmentAccepted {
    pub environment: EnvironmentView,
    pub job: JobView,
}

/// The answer to a destroy, plan, apply or drift-check request: the queued job.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = crate::examples::job_accepted)]
pub struct JobAccepted {
    pub job: JobView,
}

#[utoipa::path(get, operation_id = "listEnvironments", path = "/v1/tenants/{tenant}/environments", tag = "environments", security(("bearer" = [])),
    params(("tenant" = String, Path, description = "Tenant id or slug"), PageQuery),
    responses((status = 200, body = EnvironmentPage),
        (status = 403, description = "Your role in this tenant does not allow this", body = crate::error::Problem),
        (status = 404, body = crate::error::Problem)))]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    query: web::Query<PageQuery>,
) -> ApiResult<HttpResponse> {
    let tenant = state
        .authorize_tenant(&caller, &path, Object::Environment, Action::Read)
        .await?;
    let (limit, after) = (query.limit()?, query.uuid_cursor()?);
    let page = state
        .db(move |conn| Ok(store::environments::list(conn, tenant.id, after, limit)?))
        .await?;
    Ok(HttpResponse::Ok().json(PageOf::from_page(page, EnvironmentView::from)))
}

/// The tenant (authorized for `object`/`action`) and its environment `{env}`.
pub(super) async fn environment(
    state: &AppState,
    caller: &Caller,
    tenant_ref: &str,
    env_ref: &str,
    object: Object,
    action: Action,
) -> ApiResult<(Tenant, Environment)> {
    let tenant = state
        .authorize_tenant(caller, tenant_ref, object, action)
        .await?;
    let (tenant_id, reference) = (tenant.id, env_ref.to_owned());
    let environment = state
        .db(move |conn| Ok(store::environments::find_in_tenant(conn, tenant_id, &reference)?))
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "tenant '{}' has no environment '{env_ref}'; list them with GET /v1/tenants/{}/environments",
                tenant.slug, tenant.slug
            ))
        })?;
    Ok((tenant, environment))
}

#[utoipa::path(get, operation_id = "getEnvironment", path = "/v1/tenants/{tenant}/environments/{env}", tag = "environments", security(("bearer" = [])),
    params(("tenant" = String, Path), ("env" = String, Path, description = "Environment id or name")),
    responses((status = 200, body = EnvironmentView),
        (status = 403, description = "Your role in this tenant does not allow this", body = crate::error::Problem),
        (status = 404, body = crate::error::Problem)))]
pub async fn get(
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
    Ok(HttpResponse::Ok().json(EnvironmentView::from(environment)))
}
