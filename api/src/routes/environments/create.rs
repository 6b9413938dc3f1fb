//! Creating an environment: the request, its validation (field errors), and the create that
//! records it and queues its first apply.

use super::changes::{Change, Review, ensure_still_active, queue_job};
use super::{EnvironmentAccepted, required_cost_tags};
use crate::auth::Caller;
use crate::body::JsonBody;
use crate::error::{ApiError, ApiResult};
use crate::idempotency;
use crate::routes::tenants::ensure_quota;
use crate::routes::tenants::still_holds;
use crate::state::AppState;
use actix_web::{HttpRequest, HttpResponse, web};
use bulkhead_core::authz::{Action, Object};
use bulkhead_core::domain::{
    CostTags, FieldError, Isolation, Stage, Validator, parse_environment_name,
};
use bulkhead_core::governance::decisions::next_drift_check;
use bulkhead_core::jobs::Operation;
use bulkhead_core::limits::Quota;
use bulkhead_core::store::environments::NewEnvironment;
use bulkhead_core::store::tenants::Tenant;
use bulkhead_core::store::{self, StoreError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use uuid::Uuid;

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
    /// Hours until a worker destroys it (1 to 2160; not for production). Default: the stage's
    /// `default_ttl_hours` in the tenant's policy, else never.
    #[serde(default, deserialize_with = "crate::body::whole_number")]
    #[schema(minimum = 1, maximum = 2160)]
    pub ttl_hours: Option<u32>,
}

/// Validated request: everything the insert needs.
struct ValidEnvironment {
    name: String,
    stage: Stage,
    isolation: Isolation,
    blueprint: String,
    blueprint_version: u32,
    cost_tags: BTreeMap<String, String>,
    ttl_hours: Option<u32>,
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
    // the isolation's default blueprint is taken, at this version when one is given).
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
            None => state
                .catalog
                .default_for(isolation)
                .and_then(|latest| state.catalog.get(&latest.name, body.blueprint_version)),
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
    if let Some(hours) = body.ttl_hours {
        if stage == Some(Stage::Production) {
            v.push(FieldError::new(
                "ttl_hours",
                "production environments do not expire; remove ttl_hours",
            ));
        } else if !bulkhead_core::governance::TTL_HOURS.contains(&hours) {
            v.push(FieldError::new(
                "ttl_hours",
                "must be 1 to 2160 hours (90 days)",
            ));
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
                ttl_hours: body.ttl_hours,
            })
        }
        _ => Err(ApiError::internal(anyhow::anyhow!(
            "validated fields missing"
        ))),
    }
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
    // Asking for a TTL schedules a destroy: it takes the permission to destroy, as the PATCH
    // does (an operator creates environments, but not ones that destroy themselves).
    if body.ttl_hours.is_some() {
        state
            .authorize_tenant(&caller, &path, Object::Environment, Action::Delete)
            .await?;
    }
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
                    still_holds(conn, &tenant, &caller, Object::Environment, Action::Create)?;
                    if valid.ttl_hours.is_some() {
                        still_holds(conn, &tenant, &caller, Object::Environment, Action::Delete)?;
                    }
                    ensure_quota(conn, tenant.id, &tenant.slug, Quota::Environments, 1, &quotas)?;
                    ensure_quota(conn, tenant.id, &tenant.slug, Quota::QueuedJobs, 1, &quotas)?;
                    let policy = store::policies::get(conn, tenant.id)?.policy;
                    let rules = policy.stage(valid.stage);
                    // A TTL asked for, else the stage's default from the tenant's policy.
                    let ttl_hours = match valid.ttl_hours {
                        Some(hours) => Some(hours),
                        // Re-checked: a stored policy is not trusted to be in range.
                        None => rules
                            .default_ttl_hours
                            .filter(|h| bulkhead_core::governance::TTL_HOURS.contains(h)),
                    };
                    // The first scheduled drift check, somewhere in the stage's first interval
                    // (spread by id, so environments made together are not checked together).
                    let id = Uuid::now_v7();
                    let drift_check_due_at = Some(next_drift_check(
                        id,
                        rules.drift_check_interval_hours,
                        chrono::Utc::now(),
                        None,
                    ));
                    let expires_at = ttl_hours.map(|h| chrono::Utc::now() + chrono::Duration::hours(i64::from(h)));
                    let environment = store::environments::insert(
                        conn,
                        &NewEnvironment {
                            id,
                            tenant_id: tenant.id,
                            name: &valid.name,
                            stage: valid.stage.as_str(),
                            isolation: valid.isolation.as_str(),
                            blueprint: &valid.blueprint,
                            blueprint_version: i32::try_from(valid.blueprint_version).unwrap_or(1),
                            cost_tags: serde_json::to_value(&valid.cost_tags).map_err(ApiError::internal)?,
                            created_by: Some(caller.id),
                            expires_at,
                            drift_check_due_at,
                            // The creator chose the TTL (or the stage whose default gave it).
                            expires_set_by: expires_at.map(|_| caller.id),
                            schedule_due_at: rules.schedule.as_ref().map(|_| chrono::Utc::now()),
                        },
                    )
                    .map_err(|e| match e {
                        StoreError::Conflict(_) => ApiError::Conflict(format!(
                            "tenant '{}' already has a live environment named '{}'; pick another name or destroy it first",
                            tenant.slug, valid.name
                        )),
                        other => other.into(),
                    })?;
                    let job = queue_job(conn, &caller, &environment, Change {
                        operation: Operation::Apply,
                        max_attempts,
                        expected_plan_hash: None,
                        reason: Some("create the environment"),
                        review: Review::Policy,
                        blueprint_version: None,
                    })?;
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
