//! The blueprint catalog as partners and approvers read it: each blueprint, its versions with
//! description, limits and baseline migrations, and what each version changes from the one
//! before it.

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use actix_web::{HttpResponse, web};
use bulkhead_core::blueprint::{Blueprint, BlueprintCatalog};
use bulkhead_core::domain::Isolation;
use bulkhead_core::governance::versions::{self, VersionChanges};
use serde::Serialize;

/// One released version.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BlueprintVersionView {
    pub version: u32,
    pub description: String,
    /// Connection limit, timeouts and memory settings of the environment's app role.
    #[schema(value_type = Object)]
    pub limits: serde_json::Value,
    /// Baseline migration ids, in the order they apply.
    pub baseline: Vec<String>,
    /// What this version changes from the one before it (absent for the first).
    pub changes: Option<VersionChanges>,
}

/// A blueprint and its versions, oldest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = crate::examples::blueprint_view)]
pub struct BlueprintView {
    pub name: String,
    pub isolation: Isolation,
    /// Whether a new environment of this isolation gets it when it names none.
    pub default: bool,
    pub latest_version: u32,
    pub versions: Vec<BlueprintVersionView>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = crate::examples::blueprint_list)]
pub struct BlueprintList {
    pub items: Vec<BlueprintView>,
}

fn view(catalog: &BlueprintCatalog, versions: &[&Blueprint]) -> Option<BlueprintView> {
    let first = versions.first()?;
    let latest = versions.iter().map(|b| b.version).max()?;
    Some(BlueprintView {
        name: first.name.clone(),
        isolation: first.isolation,
        default: catalog.is_default(&first.name),
        latest_version: latest,
        versions: versions
            .iter()
            .enumerate()
            .map(|(i, b)| BlueprintVersionView {
                version: b.version,
                description: b.description.clone(),
                limits: serde_json::to_value(b.limits).unwrap_or_default(),
                baseline: b.baseline.iter().map(|m| m.id.clone()).collect(),
                changes: i
                    .checked_sub(1)
                    .and_then(|p| versions.get(p))
                    .map(|previous| versions::changes(previous, b)),
            })
            .collect(),
    })
}

/// Every blueprint's versions, grouped by name (the catalog is sorted by name then version).
fn grouped(catalog: &BlueprintCatalog) -> Vec<Vec<&Blueprint>> {
    let mut groups: Vec<Vec<&Blueprint>> = Vec::new();
    for blueprint in catalog.all() {
        match groups.last_mut() {
            Some(group) if group.first().is_some_and(|b| b.name == blueprint.name) => {
                group.push(blueprint)
            }
            _ => groups.push(vec![blueprint]),
        }
    }
    groups
}

#[utoipa::path(get, operation_id = "listBlueprints", path = "/v1/blueprints", tag = "governance", security(("bearer" = [])),
    responses((status = 200, body = BlueprintList), (status = 401, body = crate::error::Problem)))]
pub async fn list(state: web::Data<AppState>, _caller: Caller) -> ApiResult<HttpResponse> {
    let items = grouped(&state.catalog)
        .iter()
        .filter_map(|versions| view(&state.catalog, versions))
        .collect();
    Ok(HttpResponse::Ok().json(BlueprintList { items }))
}

#[utoipa::path(get, operation_id = "getBlueprint", path = "/v1/blueprints/{name}", tag = "governance", security(("bearer" = [])),
    params(("name" = String, Path, description = "Blueprint name, such as shared-basic")),
    responses((status = 200, body = BlueprintView), (status = 401, body = crate::error::Problem),
        (status = 404, body = crate::error::Problem)))]
pub async fn get(
    state: web::Data<AppState>,
    _caller: Caller,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let name = path.into_inner();
    let versions = grouped(&state.catalog)
        .into_iter()
        .find(|versions| versions.first().is_some_and(|b| b.name == name))
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "no blueprint named '{name}'; GET /v1/blueprints lists them"
            ))
        })?;
    let found = view(&state.catalog, &versions)
        .ok_or_else(|| ApiError::NotFound(format!("no blueprint named '{name}'")))?;
    Ok(HttpResponse::Ok().json(found))
}
