//! Environments: create (→ an apply job), list, read, destroy (→ a destroy job), plan / apply /
//! drift-check jobs, credentials (audited reads) and isolation guarantees.

use crate::auth::Caller;
use crate::body::JsonBody;
use crate::error::{ApiError, ApiResult};
use crate::idempotency;
use crate::routes::jobs::JobView;
use crate::routes::tenants::ensure_quota;
use crate::routes::{PageOf, PageQuery};
use crate::state::AppState;
use actix_web::{HttpRequest, HttpResponse, web};
use bulkhead_core::audit::AuditResult;
use bulkhead_core::authz::{Action, Object};
use bulkhead_core::domain::{
    CostTags, FieldError, Isolation, Stage, TenantState, Validator, parse_environment_name,
};
use bulkhead_core::guarantees::{Enforcement, GuaranteeStatus};
use bulkhead_core::jobs::{JobState, Operation};
use bulkhead_core::limits::Quota;
use bulkhead_core::store::environments::{Environment, NewEnvironment};
use bulkhead_core::store::jobs::NewJob;
use bulkhead_core::store::tenants::Tenant;
use bulkhead_core::store::{self, StoreError};
use chrono::{DateTime, Utc};
use diesel::PgConnection;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use uuid::Uuid;

/// Cost tags every environment must carry, from `policies/cost_tags.txt`.
pub fn required_cost_tags() -> Vec<&'static str> {
    include_str!("../../../policies/cost_tags.txt")
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
            state: e.state,
            drift: e.drift,
            created_at: e.created_at,
            updated_at: e.updated_at,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = crate::examples::create_environment_request)]
pub struct CreateEnvironmentRequest {
    /// `^[a-z][a-z0-9-]{1,39}$`, unique among the tenant's live environments.
    #[schema(schema_with = crate::schemas::environment_name)]
    pub name: String,
    /// `development`, `staging` or `production`.
    #[schema(schema_with = crate::schemas::stage)]
    pub stage: String,
    /// `shared` or `dedicated`; default: the tenant's tier.
    #[schema(schema_with = crate::schemas::isolation)]
    pub isolation: Option<String>,
    /// Blueprint name; default: the default blueprint for the isolation.
    pub blueprint: Option<String>,
    /// Blueprint version; default: the latest.
    #[serde(default, deserialize_with = "crate::body::whole_number")]
    #[schema(minimum = 1, maximum = 2147483647)]
    pub blueprint_version: Option<u32>,
    /// `business_unit` and `cost_center` unless the tenant's tags carry them.
    #[serde(default, deserialize_with = "crate::body::present")]
    #[schema(schema_with = crate::schemas::environment_cost_tags)]
    pub cost_tags: Option<serde_json::Value>,
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

/// Validated request: everything the insert needs.
struct ValidEnvironment {
    name: String,
    stage: Stage,
    isolation: Isolation,
    blueprint: String,
    blueprint_version: u32,
    cost_tags: BTreeMap<String, String>,
}

fn validate(
    state: &AppState,
    tenant: &Tenant,
    body: &CreateEnvironmentRequest,
) -> ApiResult<ValidEnvironment> {
    let mut v = Validator::new();
    let name = v.check(parse_environment_name("name", &body.name));
    let stage = v.check(Stage::parse("stage", &body.stage));
    let isolation = match &body.isolation {
        Some(raw) => v.check(Isolation::parse("isolation", raw)),
        None => Some(if tenant.tier == "dedicated" {
            Isolation::Dedicated
        } else {
            Isolation::Shared
        }),
    };
    // Stored as an integer (i32): checked whether or not a blueprint is named (without one,
    // the isolation's default blueprint is taken and the version is not used).
    if body
        .blueprint_version
        .is_some_and(|v| v == 0 || i32::try_from(v).is_err())
    {
        v.push(FieldError::new(
            "blueprint_version",
            "must be from 1 to 2147483647, or absent for the latest",
        ));
    }
    let blueprint = isolation.and_then(|isolation| {
        let found = match &body.blueprint {
            Some(name) => state.catalog.get(name, body.blueprint_version),
            None => state.catalog.default_for(isolation),
        };
        let names: Vec<String> = state
            .catalog
            .all()
            .iter()
            .map(|b| format!("{} v{} ({})", b.name, b.version, b.isolation.as_str()))
            .collect();
        match found {
            None => {
                v.push(FieldError::new(
                    "blueprint",
                    format!("no such blueprint; available: {}", names.join(", ")),
                ));
                None
            }
            Some(b) if b.isolation != isolation => {
                v.push(FieldError::new(
                    "blueprint",
                    format!(
                        "{} is a {} blueprint but the environment is {}; pick a {} blueprint: {}",
                        b.name,
                        b.isolation.as_str(),
                        isolation.as_str(),
                        isolation.as_str(),
                        names.join(", ")
                    ),
                ));
                None
            }
            Some(b) => Some((b.name.clone(), b.version)),
        }
    });
    let requested = match &body.cost_tags {
        None => Some(CostTags::default()),
        Some(raw) => match CostTags::parse("cost_tags", raw) {
            Ok(tags) => Some(tags),
            Err(errors) => {
                errors.into_iter().for_each(|e| v.push(e));
                None
            }
        },
    };
    // Final tags: the tenant's, overridden by the request's, with the four Bulkhead knows.
    let mut tags: BTreeMap<String, String> = tenant
        .cost_tags
        .as_object()
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    if let Some(requested) = &requested
        && let Some(object) = requested.to_json().as_object()
    {
        for (k, value) in object {
            if let Some(value) = value.as_str() {
                tags.insert(k.clone(), value.to_owned());
            }
        }
    }
    tags.insert("tenant".into(), tenant.slug.clone());
    if let Some(name) = &name {
        tags.insert("environment".into(), name.clone());
    }
    if let Some(stage) = stage {
        tags.insert("stage".into(), stage.as_str().into());
    }
    tags.insert("region".into(), tenant.region.clone());
    if requested.is_some() && name.is_some() && stage.is_some() {
        for key in required_cost_tags() {
            if tags.get(key).is_none_or(|v| v.trim().is_empty()) {
                v.push(FieldError::new(
                    format!("cost_tags.{key}"),
                    "is required and missing or empty; set it in cost_tags or on the tenant's cost tags",
                ));
            }
        }
    }
    v.finish().map_err(ApiError::Validation)?;
    match (name, stage, isolation, blueprint) {
        (Some(name), Some(stage), Some(isolation), Some((blueprint, blueprint_version))) => {
            Ok(ValidEnvironment {
                name,
                stage,
                isolation,
                blueprint,
                blueprint_version,
                cost_tags: tags,
            })
        }
        _ => Err(ApiError::internal(anyhow::anyhow!(
            "validated fields missing"
        ))),
    }
}

/// Environments and jobs change only in active tenants. Checked inside the caller's
/// transaction with the tenant row locked for a change: a tenant whose offboarding committed in
/// between is seen, cannot start offboarding until the caller commits (so its teardown sees
/// what the caller wrote), and two requests cannot both take a tenant's last quota.
fn ensure_still_active(conn: &mut PgConnection, tenant_id: Uuid, slug: &str) -> ApiResult<()> {
    match store::tenants::lock_for_change(conn, tenant_id)? {
        Some(state) if state == TenantState::Active.as_str() => Ok(()),
        Some(state) => Err(ApiError::Conflict(format!(
            "tenant '{slug}' is {state}; environments change only in active tenants"
        ))),
        None => Err(ApiError::NotFound(format!(
            "tenant '{slug}' no longer exists"
        ))),
    }
}

/// What a tenant's teardown queued: a destroy job per standing environment (none where one is
/// already on its way), and the not-yet-started jobs it canceled so the destroys run next.
#[derive(Debug, Default, Serialize)]
pub struct Teardown {
    pub destroy_jobs: Vec<Uuid>,
    pub canceled_jobs: Vec<Uuid>,
    /// Nothing was left to destroy: the tenant is `offboarded` now.
    pub offboarded: bool,
}

/// Starts (or, for a tenant already offboarding, resumes) the teardown of an offboarding
/// tenant in the caller's transaction, which holds the tenant row (`lock_for_change`): the
/// tenant before its environments, the order a worker's destroy takes them in too. The last destroy to finish marks the tenant
/// `offboarded` (the worker does that); with nothing standing it happens here.
pub fn start_teardown(
    conn: &mut PgConnection,
    caller: &Caller,
    tenant_id: Uuid,
    max_attempts: i32,
) -> ApiResult<Teardown> {
    let mut teardown = Teardown::default();
    for environment in store::environments::standing_for_update(conn, tenant_id)? {
        let destroy = queue_destroy(
            conn,
            caller,
            &environment,
            max_attempts,
            "canceled: the tenant is being offboarded",
        )?;
        teardown.canceled_jobs.extend(destroy.canceled);
        if destroy.created {
            teardown.destroy_jobs.push(destroy.job.id);
        }
    }
    teardown.offboarded = store::tenants::complete_offboarding(conn, tenant_id)?.is_some();
    Ok(teardown)
}

/// A destroy for one environment: the one already on its way, or a new one behind the running
/// job (if any), with the jobs that had not started canceled (they would only be undone).
struct Destroy {
    job: JobView,
    created: bool,
    canceled: Vec<Uuid>,
}

fn queue_destroy(
    conn: &mut PgConnection,
    caller: &Caller,
    environment: &Environment,
    max_attempts: i32,
    why_canceled: &str,
) -> ApiResult<Destroy> {
    let active = store::jobs::active_for_environment(conn, environment.id)?;
    if let Some(existing) = active
        .iter()
        .find(|j| j.operation == Operation::Destroy.as_str())
    {
        let position = store::jobs::queue_position(conn, existing)?;
        return Ok(Destroy {
            job: JobView::new(existing.clone(), position),
            created: false,
            canceled: Vec::new(),
        });
    }
    let mut canceled = Vec::new();
    for job in active
        .iter()
        .filter(|j| j.state != JobState::Running.as_str())
    {
        if store::jobs::cancel(conn, job.id)? {
            store::jobs::add_event(conn, job.id, "canceled", why_canceled, json!({}))?;
            canceled.push(job.id);
        }
    }
    let job = queue_job(
        conn,
        caller,
        environment,
        Operation::Destroy,
        max_attempts,
        None,
    )?;
    Ok(Destroy {
        job,
        created: true,
        canceled,
    })
}

/// Queues a job in the caller's transaction and audits it; returns its view.
fn queue_job(
    conn: &mut PgConnection,
    caller: &Caller,
    environment: &Environment,
    operation: Operation,
    max_attempts: i32,
    expected_plan_hash: Option<&str>,
) -> ApiResult<JobView> {
    let job = store::jobs::insert(
        conn,
        &NewJob {
            id: Uuid::now_v7(),
            tenant_id: environment.tenant_id,
            environment_id: environment.id,
            operation: operation.as_str(),
            max_attempts,
            expected_plan_hash,
            requested_by: Some(caller.id),
        },
    )?;
    store::audit::append(
        conn,
        &caller.audit(
            Some(environment.tenant_id),
            &format!("job.{}", operation.as_str()),
            format!("environment/{}", environment.id),
            AuditResult::Success,
            json!({"job_id": job.id, "environment": environment.name}),
        ),
    )?;
    let position = store::jobs::queue_position(conn, &job)?;
    Ok(JobView::new(job, position))
}

#[utoipa::path(post, operation_id = "createEnvironment", path = "/v1/tenants/{tenant}/environments", tag = "environments", security(("bearer" = [])),
    params(("tenant" = String, Path, description = "Tenant id or slug"),
        ("Idempotency-Key" = Option<String>, Header, description = "Same key + same body → the same response")),
    request_body = CreateEnvironmentRequest,
    responses((status = 202, description = "Environment recorded; an apply job provisions it", body = EnvironmentAccepted),
        (status = 403, body = crate::error::Problem), (status = 404, body = crate::error::Problem),
        (status = 409, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<String>,
    body: JsonBody<CreateEnvironmentRequest>,
) -> ApiResult<HttpResponse> {
    let tenant = state
        .authorize_tenant(&caller, &path, Object::Environment, Action::Create)
        .await?;
    let body = body.into_inner()?;
    let valid = validate(&state, &tenant, &body)?;
    let key = idempotency::key(&req)?;
    let request_hash = idempotency::request_hash(
        &req,
        &serde_json::to_value(&body).map_err(ApiError::internal)?,
    );
    let max_attempts = state.config.worker.max_attempts;
    let quotas = state.config.limits.quotas;
    let (status, response) = state
        .db(move |conn| {
            conn.build_transaction().run(|conn| {
                idempotency::once(conn, caller.id, key.as_deref(), &request_hash, |conn| {
                    ensure_still_active(conn, tenant.id, &tenant.slug)?;
                    ensure_quota(conn, tenant.id, &tenant.slug, Quota::Environments, 1, &quotas)?;
                    ensure_quota(conn, tenant.id, &tenant.slug, Quota::QueuedJobs, 1, &quotas)?;
                    let environment = store::environments::insert(
                        conn,
                        &NewEnvironment {
                            id: Uuid::now_v7(),
                            tenant_id: tenant.id,
                            name: &valid.name,
                            stage: valid.stage.as_str(),
                            isolation: valid.isolation.as_str(),
                            blueprint: &valid.blueprint,
                            blueprint_version: i32::try_from(valid.blueprint_version).unwrap_or(1),
                            cost_tags: serde_json::to_value(&valid.cost_tags).map_err(ApiError::internal)?,
                            created_by: Some(caller.id),
                        },
                    )
                    .map_err(|e| match e {
                        StoreError::Conflict(_) => ApiError::Conflict(format!(
                            "tenant '{}' already has a live environment named '{}'; pick another name or destroy it first",
                            tenant.slug, valid.name
                        )),
                        other => other.into(),
                    })?;
                    let job = queue_job(conn, &caller, &environment, Operation::Apply, max_attempts, None)?;
                    let body = serde_json::to_value(EnvironmentAccepted {
                        environment: environment.into(),
                        job,
                    })
                    .map_err(ApiError::internal)?;
                    Ok((202, body))
                })
            })
        })
        .await?;
    state.relay_wake.notify_one();
    idempotency::respond(status, response)
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
async fn environment(
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

#[derive(Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = crate::examples::apply_request)]
pub struct ApplyRequest {
    /// Apply exactly what this succeeded plan job showed; refused if the target changed since.
    pub plan_job_id: Option<Uuid>,
}

async fn job_action(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    operation: Operation,
    body: Option<web::Bytes>,
) -> ApiResult<HttpResponse> {
    let (tenant_ref, env_ref) = path.into_inner();
    let (object, action) = match operation {
        Operation::Destroy => (Object::Environment, Action::Delete),
        _ => (Object::Job, Action::Create),
    };
    let (tenant, environment) =
        environment(&state, &caller, &tenant_ref, &env_ref, object, action).await?;
    if environment.state == "destroyed" {
        return Err(ApiError::Conflict(format!(
            "environment '{}' is destroyed; create a new one",
            environment.name
        )));
    }
    // The body is optional (none, or `null`, as the document says); when present it must parse
    // (a typo must not silently apply whatever the planner finds instead of the reviewed plan).
    let body = match body.filter(|raw| !raw.iter().all(u8::is_ascii_whitespace)) {
        None => ApplyRequest::default(),
        Some(raw) => {
            let object = serde_json::from_slice::<Option<serde_json::Map<_, _>>>(&raw)
                .map_err(|e| {
                    ApiError::Malformed(format!(
                        "the JSON body does not fit this endpoint: {e}; send {{\"plan_job_id\": \"<uuid>\"}} or no body"
                    ))
                })?;
            object
                .map(crate::body::from_object)
                .transpose()?
                .unwrap_or_default()
        }
    };
    let key = idempotency::key(&req)?;
    let request_hash = idempotency::request_hash(
        &req,
        &serde_json::to_value(&body).map_err(ApiError::internal)?,
    );
    let max_attempts = state.config.worker.max_attempts;
    let quotas = state.config.limits.quotas;
    let (tenant_id, slug) = (tenant.id, tenant.slug.clone());
    let (status, response) = state
        .db(move |conn| {
            conn.build_transaction().run(|conn| {
                idempotency::once(conn, caller.id, key.as_deref(), &request_hash, |conn| {
                    // Destroying is how an offboarding tenant is torn down, and always allowed
                    // (it frees what quotas count).
                    if operation != Operation::Destroy {
                        ensure_still_active(conn, tenant_id, &slug)?;
                        ensure_quota(conn, tenant_id, &slug, Quota::QueuedJobs, 1, &quotas)?;
                    }
                    // The environment as it is now, locked: a destroy committed since the
                    // lookup above is seen, and none can commit until this job is queued.
                    let environment = store::environments::lock(conn, environment.id)?
                        .ok_or_else(|| ApiError::NotFound(format!("environment '{}' no longer exists", environment.name)))?;
                    if environment.state == "destroyed" {
                        return Err(ApiError::Conflict(format!(
                            "environment '{}' is destroyed; create a new one",
                            environment.name
                        )));
                    }
                    if operation != Operation::Destroy
                        && store::jobs::active_for_environment(conn, environment.id)?
                            .iter()
                            .any(|j| j.operation == Operation::Destroy.as_str())
                    {
                        return Err(ApiError::Conflict(format!(
                            "environment '{}' is being destroyed; nothing else runs on it now",
                            environment.name
                        )));
                    }
                    let expected = match body.plan_job_id {
                        None => None,
                        Some(plan_job_id) => {
                            let plan_job = store::jobs::find(conn, environment.tenant_id, plan_job_id)?
                                .filter(|j| j.environment_id == environment.id && j.operation == "plan")
                                .ok_or_else(|| ApiError::validation("plan_job_id", "is not a plan job of this environment"))?;
                            match (plan_job.state.as_str(), plan_job.plan_hash) {
                                ("succeeded", Some(hash)) => Some(hash),
                                _ => {
                                    return Err(ApiError::validation(
                                        "plan_job_id",
                                        "names a plan job that has not succeeded; wait for it or run plan again",
                                    ));
                                }
                            }
                        }
                    };
                    let job = if operation == Operation::Destroy {
                        queue_destroy(conn, &caller, &environment, max_attempts, "canceled: the environment is being destroyed")?.job
                    } else {
                        queue_job(conn, &caller, &environment, operation, max_attempts, expected.as_deref())?
                    };
                    let body = serde_json::to_value(JobAccepted { job }).map_err(ApiError::internal)?;
                    Ok((202, body))
                })
            })
        })
        .await?;
    state.relay_wake.notify_one();
    idempotency::respond(status, response)
}

#[utoipa::path(delete, operation_id = "destroyEnvironment", path = "/v1/tenants/{tenant}/environments/{env}", tag = "environments", security(("bearer" = [])),
    params(("tenant" = String, Path), ("env" = String, Path, description = "Environment id or name"),
        ("Idempotency-Key" = Option<String>, Header, description = "Same key + same body → the same response; same key + another body → 422")),
    responses((status = 202, description = "A destroy job is queued behind the running job, if \
        any; jobs of the environment that had not started are canceled. While a destroy is on its \
        way, DELETE answers that job again.", body = JobAccepted),
        (status = 403, body = crate::error::Problem), (status = 404, body = crate::error::Problem),
        (status = 409, description = "The environment is already destroyed", body = crate::error::Problem)))]
pub async fn destroy(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    job_action(state, caller, req, path, Operation::Destroy, None).await
}

#[utoipa::path(post, operation_id = "planEnvironment", path = "/v1/tenants/{tenant}/environments/{env}/plan", tag = "environments", security(("bearer" = [])),
    params(("tenant" = String, Path), ("env" = String, Path), ("Idempotency-Key" = Option<String>, Header, description = "Same key + same body → the same response; same key + another body → 422")),
    responses((status = 202, description = "A plan job is queued; its plan appears on the job", body = JobAccepted),
        (status = 403, description = "Your role in this tenant does not allow this", body = crate::error::Problem),
        (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem),
        (status = 422, body = crate::error::Problem)))]
pub async fn plan(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    job_action(state, caller, req, path, Operation::Plan, None).await
}

#[utoipa::path(post, operation_id = "applyEnvironment", path = "/v1/tenants/{tenant}/environments/{env}/apply", tag = "environments", security(("bearer" = [])),
    params(("tenant" = String, Path), ("env" = String, Path), ("Idempotency-Key" = Option<String>, Header, description = "Same key + same body → the same response; same key + another body → 422")),
    request_body(content = Option<ApplyRequest>, description = "Optional: the plan job to apply exactly"),
    responses((status = 202, description = "An apply job is queued", body = JobAccepted),
        (status = 403, description = "Your role in this tenant does not allow this", body = crate::error::Problem),
        (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem),
        (status = 422, body = crate::error::Problem)))]
pub async fn apply(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    job_action(state, caller, req, path, Operation::Apply, Some(body)).await
}

#[utoipa::path(post, operation_id = "checkEnvironmentDrift", path = "/v1/tenants/{tenant}/environments/{env}/drift-check", tag = "environments", security(("bearer" = [])),
    params(("tenant" = String, Path), ("env" = String, Path), ("Idempotency-Key" = Option<String>, Header, description = "Same key + same body → the same response; same key + another body → 422")),
    responses((status = 202, description = "A drift-check job is queued", body = JobAccepted),
        (status = 403, description = "Your role in this tenant does not allow this", body = crate::error::Problem),
        (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem),
        (status = 422, body = crate::error::Problem)))]
pub async fn drift_check(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    job_action(state, caller, req, path, Operation::DriftCheck, None).await
}

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
    if environment.state != "ready" {
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
