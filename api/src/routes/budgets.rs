//! A tenant's monthly budget (spent so far, forecast, thresholds crossed) and the
//! installation's metering passes (platform admins: is metering running, what failed).

use crate::auth::Caller;
use crate::body::JsonBody;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use actix_web::{HttpResponse, web};
use bulkhead_core::audit::AuditResult;
use bulkhead_core::authz::{Action, Object};
use bulkhead_core::domain::{FieldError, Validator};
use bulkhead_core::metering::{forecast, month_of};
use bulkhead_core::money;
use bulkhead_core::store::{self, budgets::Budget, metering::Pass};
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BudgetPeriod {
    Month,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = crate::examples::set_budget_request)]
pub struct SetBudgetRequest {
    #[schema(schema_with = crate::schemas::budget_amount)]
    pub amount: String,
    #[schema(schema_with = crate::schemas::currency)]
    pub currency: String,
    /// Only `month` (calendar months, UTC).
    pub period: BudgetPeriod,
    /// Percentages of the amount; crossing one is audited once per period
    /// (`budget.threshold_crossed`). Default `[50, 80, 100]`.
    #[schema(schema_with = crate::schemas::thresholds)]
    pub thresholds: Option<Vec<serde_json::Value>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = crate::examples::budget_view)]
pub struct BudgetView {
    pub amount: String,
    pub currency: String,
    pub period: BudgetPeriod,
    pub thresholds: Vec<i32>,
    /// The current period: first day inclusive, last exclusive (UTC).
    pub period_start: NaiveDate,
    pub period_end: NaiveDate,
    /// Exact spend so far this period (charges up to the last metering pass).
    pub spent: String,
    pub spent_display: String,
    /// Spend at the period's end at the pace so far.
    pub forecast: String,
    pub forecast_display: String,
    /// Thresholds crossed this period.
    pub crossed: Vec<i32>,
    pub updated_at: DateTime<Utc>,
}

fn view(conn: &mut diesel::PgConnection, budget: Budget) -> ApiResult<BudgetView> {
    let now = Utc::now();
    let (start, end) = month_of(now);
    let spent = store::budgets::spent(conn, budget.tenant_id, start, end)?;
    let at = |d: NaiveDate| Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0).unwrap_or_default());
    let forecast = forecast(spent, at(start), at(end), now);
    let c = budget.currency.as_str();
    Ok(BudgetView {
        amount: budget.amount.to_string(),
        currency: budget.currency.clone(),
        period: BudgetPeriod::Month,
        thresholds: budget.thresholds.clone(),
        period_start: start,
        period_end: end,
        spent: spent.normalize().to_string(),
        spent_display: money::for_display(spent, c).to_string(),
        forecast: forecast.normalize().to_string(),
        forecast_display: money::for_display(forecast, c).to_string(),
        crossed: store::budgets::crossed(conn, budget.tenant_id, start)?,
        updated_at: budget.updated_at,
    })
}

#[utoipa::path(get, operation_id = "getTenantBudget", path = "/v1/tenants/{tenant}/budget", tag = "costs", security(("bearer" = [])),
    params(("tenant" = String, Path, description = "Tenant id or slug")),
    responses((status = 200, body = BudgetView), (status = 403, body = crate::error::Problem),
        (status = 404, description = "No such tenant, or it has no budget", body = crate::error::Problem)))]
pub async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let tenant = state
        .authorize_tenant(&caller, &path, Object::Cost, Action::Read)
        .await?;
    let budget = state
        .db(move |conn| match store::budgets::get(conn, tenant.id)? {
            Some(budget) => view(conn, budget),
            None => Err(ApiError::NotFound(
                "this tenant has no budget; PUT one".into(),
            )),
        })
        .await?;
    Ok(HttpResponse::Ok().json(budget))
}

fn validate(body: &SetBudgetRequest, billing_currency: &str) -> ApiResult<(Decimal, Vec<i32>)> {
    let mut v = Validator::new();
    let places = money::minor_units(&body.currency);
    match places {
        None => v.push(FieldError::new(
            "currency",
            format!("{:?} is not an ISO 4217 currency code", body.currency),
        )),
        Some(_) if body.currency != billing_currency => v.push(FieldError::new(
            "currency",
            format!("costs are priced in {billing_currency}; set the budget in {billing_currency}"),
        )),
        Some(_) => {}
    }
    let amount = body.amount.parse::<Decimal>().ok().filter(|a| {
        *a > Decimal::ZERO
            && *a < Decimal::from(1_000_000_000_000_i64)
            && a.scale() <= places.unwrap_or(2)
            && body.amount.chars().all(|c| c.is_ascii_digit() || c == '.')
    });
    if amount.is_none() {
        v.push(FieldError::new(
            "amount",
            format!(
                "must be a decimal string greater than 0 and below 10^12 with at most {} decimal places, such as \"500.00\"",
                places.unwrap_or(2)
            ),
        ));
    }
    let mut thresholds = Vec::new();
    match &body.thresholds {
        None => thresholds = vec![50, 80, 100],
        Some(raw) if raw.is_empty() || raw.len() > 10 => v.push(FieldError::new(
            "thresholds",
            "give 1 to 10 percentages, such as [50, 80, 100]",
        )),
        Some(raw) => {
            for (i, t) in raw.iter().enumerate() {
                match t.as_i64().filter(|n| (1..=1000).contains(n)) {
                    Some(n) if !thresholds.contains(&(n as i32)) => thresholds.push(n as i32),
                    Some(_) => v.push(FieldError::new(
                        format!("thresholds[{i}]"),
                        "is given twice",
                    )),
                    None => v.push(FieldError::new(
                        format!("thresholds[{i}]"),
                        "must be a whole percentage from 1 to 1000",
                    )),
                }
            }
            thresholds.sort_unstable();
        }
    }
    v.finish().map_err(ApiError::Validation)?;
    Ok((amount.unwrap_or_default(), thresholds))
}

#[utoipa::path(put, operation_id = "setTenantBudget", path = "/v1/tenants/{tenant}/budget", tag = "costs", security(("bearer" = [])),
    params(("tenant" = String, Path, description = "Tenant id or slug")),
    request_body = SetBudgetRequest,
    responses((status = 200, body = BudgetView), (status = 403, body = crate::error::Problem),
        (status = 404, body = crate::error::Problem),
        (status = 409, description = "The tenant is offboarding", body = crate::error::Problem),
        (status = 422, body = crate::error::Problem)))]
pub async fn put(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    body: JsonBody<SetBudgetRequest>,
) -> ApiResult<HttpResponse> {
    let tenant = state
        .authorize_tenant(&caller, &path, Object::Cost, Action::Update)
        .await?;
    let body = body.into_inner()?;
    let (amount, thresholds) = validate(&body, &state.config.metering.currency)?;
    let budget = state
        .db(move |conn| {
            conn.build_transaction().run(|conn| {
                // The same rule, under the same lock, as every other change to a tenant.
                crate::routes::tenants::lock_active_as(conn, &tenant, &caller, Object::Cost, Action::Update)?;
                let budget = store::budgets::put(conn, tenant.id, amount, &body.currency, &thresholds, caller.id)?;
                store::audit::append(
                    conn,
                    &caller.audit(
                        Some(tenant.id),
                        "budget.set",
                        format!("tenant/{}/budget", tenant.slug),
                        AuditResult::Success,
                        json!({"amount": amount.to_string(), "currency": body.currency, "period": "month", "thresholds": thresholds}),
                    ),
                )?;
                view(conn, budget)
            })
        })
        .await?;
    Ok(HttpResponse::Ok().json(budget))
}

#[utoipa::path(delete, operation_id = "deleteTenantBudget", path = "/v1/tenants/{tenant}/budget", tag = "costs", security(("bearer" = [])),
    params(("tenant" = String, Path, description = "Tenant id or slug")),
    responses((status = 204, description = "Removed (or there was none)"), (status = 403, body = crate::error::Problem),
        (status = 404, description = "No such tenant", body = crate::error::Problem),
        (status = 409, description = "The tenant is offboarding", body = crate::error::Problem)))]
pub async fn delete(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let tenant = state
        .authorize_tenant(&caller, &path, Object::Cost, Action::Update)
        .await?;
    state
        .db(move |conn| {
            conn.build_transaction().run(|conn| {
                // Under the tenant's lock with its author re-checked, like every member's change.
                crate::routes::tenants::lock_active_as(
                    conn,
                    &tenant,
                    &caller,
                    Object::Cost,
                    Action::Update,
                )?;
                // Idempotent: no budget afterwards either way; only a removal is audited.
                if !store::budgets::delete(conn, tenant.id)? {
                    return Ok(());
                }
                store::audit::append(
                    conn,
                    &caller.audit(
                        Some(tenant.id),
                        "budget.delete",
                        format!("tenant/{}/budget", tenant.slug),
                        AuditResult::Success,
                        json!({}),
                    ),
                )?;
                Ok(())
            })
        })
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = crate::examples::passes_view)]
pub struct PassesView {
    pub interval_seconds: u64,
    /// When the last successful pass finished.
    pub last_success_at: Option<DateTime<Utc>>,
    /// No pass succeeded for two intervals: metering is failing or not running (no worker?).
    pub overdue: bool,
    /// Newest first (at most 50).
    pub passes: Vec<Pass>,
}

#[utoipa::path(get, operation_id = "listMeteringPasses", path = "/v1/metering/passes", tag = "costs", security(("bearer" = [])),
    responses((status = 200, body = PassesView), (status = 403, description = "Platform admins only", body = crate::error::Problem)))]
pub async fn passes(state: web::Data<AppState>, caller: Caller) -> ApiResult<HttpResponse> {
    state
        .authorize_platform(&caller, Object::Metering, Action::Read)
        .await?;
    let every = state.config.metering.every;
    let view = state
        .db(move |conn| {
            let passes = store::metering::recent_passes(conn, 50)?;
            let last = store::metering::last_success(conn)?;
            let overdue = last.is_none_or(|at| {
                Utc::now() - at
                    > chrono::Duration::from_std(every * 2).unwrap_or(chrono::Duration::MAX)
            }) && passes.iter().any(|p| p.finished_at.is_some());
            Ok(PassesView {
                interval_seconds: every.as_secs(),
                last_success_at: last,
                overdue,
                passes,
            })
        })
        .await?;
    Ok(HttpResponse::Ok().json(view))
}
