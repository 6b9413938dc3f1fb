//! Costs: a tenant's (or the platform's) charges grouped by environment, SKU, day, month, tenant
//! or a cost tag, and the FOCUS 1.0 CSV export, streamed.

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use actix_web::{HttpRequest, HttpResponse, web};
use bulkhead_core::authz::{Action, Domain, Object};
use bulkhead_core::domain::{FieldError, Validator};
use bulkhead_core::money;
use bulkhead_core::store::costs::{self, Dimension, Scope};
use chrono::{Datelike, Duration, NaiveDate, TimeZone, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Longest range one request may ask for.
pub const MAX_RANGE_DAYS: i64 = 400;
/// Exports one API process streams at once; one more is a 503 with `Retry-After`.
pub const MAX_CONCURRENT_EXPORTS: usize = 4;

/// Whose export it is, for the one-at-a-time rule: a tenant's, or a principal's platform-wide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExportOwner {
    Tenant(uuid::Uuid),
    Principal(uuid::Uuid),
}

/// One export per owner at a time (so one tenant, however many keys it mints, holds at most
/// one of the process's slots); released when the export ends.
struct OwnerGuard {
    owners: Arc<std::sync::Mutex<std::collections::HashSet<ExportOwner>>>,
    owner: ExportOwner,
}

impl Drop for OwnerGuard {
    fn drop(&mut self) {
        self.owners
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.owner);
    }
}
/// An export whose client reads nothing for this long is ended (its connection goes back).
const EXPORT_STALL: std::time::Duration = std::time::Duration::from_secs(30);
/// An export that has not finished after this long is ended, so no snapshot is held for hours.
const EXPORT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(600);

/// `?from=&to=&group_by=&currency=` of a tenant's costs, for the OpenAPI document (the query
/// string is read by [`parse_query`], which also takes a repeated `group_by`).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct TenantCostParams {
    /// First day, inclusive (UTC); default: the 1st of this month.
    #[param(schema_with = crate::schemas::cost_day)]
    from: Option<String>,
    /// Last day, exclusive (UTC); default: tomorrow. After `from`, at most 400 days later.
    #[param(schema_with = crate::schemas::cost_day)]
    to: Option<String>,
    /// Repeat for a second level.
    #[param(schema_with = crate::schemas::tenant_group_by, explode)]
    group_by: Option<Vec<String>>,
    /// ISO 4217; must be the installation's billing currency.
    #[param(schema_with = crate::schemas::currency)]
    currency: Option<String>,
}

/// `?from=&to=&group_by=&currency=` of the platform's costs (OpenAPI only, as above).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct PlatformCostParams {
    /// First day, inclusive (UTC); default: the 1st of this month.
    #[param(schema_with = crate::schemas::cost_day)]
    from: Option<String>,
    /// Last day, exclusive (UTC); default: tomorrow. After `from`, at most 400 days later.
    #[param(schema_with = crate::schemas::cost_day)]
    to: Option<String>,
    /// Repeat for a second level.
    #[param(schema_with = crate::schemas::platform_group_by, explode)]
    group_by: Option<Vec<String>>,
    /// ISO 4217; must be the installation's billing currency.
    #[param(schema_with = crate::schemas::currency)]
    currency: Option<String>,
}

#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum ExportFormat {
    /// FOCUS 1.0 CSV.
    Focus,
}

#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum Granularity {
    /// One row per environment, SKU and day.
    Day,
    /// One row per environment, SKU and hour.
    Hour,
}

/// `?from=&to=&currency=&format=&granularity=` of an export (OpenAPI only, as above).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ExportParams {
    /// First day, inclusive (UTC); default: the 1st of this month.
    #[param(schema_with = crate::schemas::cost_day)]
    from: Option<String>,
    /// Last day, exclusive (UTC); default: tomorrow. After `from`, at most 400 days later.
    #[param(schema_with = crate::schemas::cost_day)]
    to: Option<String>,
    /// ISO 4217; must be the installation's billing currency.
    #[param(schema_with = crate::schemas::currency)]
    currency: Option<String>,
    /// `focus`, the default.
    #[param(inline)]
    format: Option<ExportFormat>,
    /// `day` (the default) or `hour`.
    #[param(inline)]
    granularity: Option<Granularity>,
}

/// A parsed `?from=&to=&group_by=…&currency=&format=`.
#[derive(Debug, Clone)]
pub struct CostQuery {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub group_by: Vec<Dimension>,
    pub format: Option<String>,
    pub granularity: Option<String>,
}

fn dimension_name(d: &Dimension) -> String {
    match d {
        Dimension::Environment => "environment".into(),
        Dimension::Tenant => "tenant".into(),
        Dimension::Sku => "sku".into(),
        Dimension::Day => "day".into(),
        Dimension::Month => "month".into(),
        Dimension::Tag(key) => format!("tag:{key}"),
    }
}

fn tag_key_ok(key: &str) -> bool {
    (1..=63).contains(&key.len())
        && key.starts_with(|c: char| c.is_ascii_lowercase())
        && key
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Reads the query string: every problem at once, each naming its field.
/// `export`: the parameters of an export (`format`, `granularity`, no `group_by`).
pub fn parse_query(
    raw: &str,
    platform: bool,
    export: bool,
    billing_currency: &str,
) -> ApiResult<CostQuery> {
    let mut v = Validator::new();
    let mut from = None;
    let mut to = None;
    let mut group_by = Vec::new();
    let mut format = None;
    let mut granularity = None;
    let date = |v: &mut Validator, field: &str, value: &str| {
        v.check(
            NaiveDate::parse_from_str(value, "%Y-%m-%d")
                .ok()
                .filter(|d| (2000..=9999).contains(&d.year()))
                .ok_or(())
                .map_err(|_| {
                    FieldError::new(
                        field,
                        format!("{value:?} is not a date; use YYYY-MM-DD (UTC days)"),
                    )
                }),
        )
    };
    let allowed = if platform {
        "tenant, sku, day, month or tag:<key>"
    } else {
        "environment, sku, day, month or tag:<key>"
    };
    for (key, value) in url::form_urlencoded::parse(raw.as_bytes()) {
        match key.as_ref() {
            "from" => from = date(&mut v, "from", &value),
            "to" => to = date(&mut v, "to", &value),
            "format" if export => format = Some(value.into_owned()),
            "granularity" if export => granularity = Some(value.into_owned()),
            "group_by" if export => v.push(FieldError::new(
                "group_by",
                "an export has one row per charge; group with GET …/costs instead",
            )),
            "currency" => {
                if money::minor_units(&value).is_none() {
                    v.push(FieldError::new(
                        "currency",
                        format!("{value:?} is not an ISO 4217 currency code"),
                    ));
                } else if value != billing_currency {
                    v.push(FieldError::new(
                        "currency",
                        format!("costs are priced in {billing_currency}; ask for {billing_currency} or leave currency out"),
                    ));
                }
            }
            "group_by" => {
                let d = match value.as_ref() {
                    "environment" if !platform => Some(Dimension::Environment),
                    "tenant" if platform => Some(Dimension::Tenant),
                    "sku" => Some(Dimension::Sku),
                    "day" => Some(Dimension::Day),
                    "month" => Some(Dimension::Month),
                    other => other
                        .strip_prefix("tag:")
                        .filter(|k| tag_key_ok(k))
                        .map(|k| Dimension::Tag(k.to_owned())),
                };
                match d {
                    Some(d) if group_by.contains(&d) => v.push(FieldError::new("group_by", format!("{value:?} is given twice"))),
                    Some(d) => group_by.push(d),
                    None => v.push(FieldError::new(
                        "group_by",
                        format!("{value:?} is not a grouping; use {allowed} (a tag key is lowercase letters, digits and '_')"),
                    )),
                }
            }
            other => v.push(FieldError::new(
                other,
                if export {
                    "is not a parameter of an export; use from, to, currency, format, granularity"
                } else {
                    "is not a parameter here; use from, to, group_by, currency"
                },
            )),
        }
    }
    if group_by.len() > 2 {
        v.push(FieldError::new(
            "group_by",
            "at most two levels; repeat group_by once at most",
        ));
    }
    let today = Utc::now().date_naive();
    let from = from.unwrap_or_else(|| {
        NaiveDate::from_ymd_opt(today.year(), today.month(), 1).unwrap_or(today)
    });
    let to = to.unwrap_or(today + Duration::days(1));
    if from >= to {
        v.push(FieldError::new(
            "from",
            format!("must be before to ({to}); to is exclusive"),
        ));
    } else if (to - from).num_days() > MAX_RANGE_DAYS {
        v.push(FieldError::new(
            "to",
            format!(
                "the range is {} days; ask for at most {MAX_RANGE_DAYS} days at a time",
                (to - from).num_days()
            ),
        ));
    }
    v.finish().map_err(ApiError::Validation)?;
    Ok(CostQuery {
        from,
        to,
        group_by,
        format,
        granularity,
    })
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UnitQuantity {
    /// The SKU's pricing unit, e.g. `Hours`, `GB-Hours`.
    pub unit: String,
    /// Exact decimal.
    pub quantity: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CostGroup {
    /// The group's value: an environment or tenant id, a SKU, a day, a month, a tag's value;
    /// `null` for charges without that tag (they are never dropped).
    pub key: Option<String>,
    /// An environment's name or a tenant's slug, where there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Exact, all decimal places kept.
    pub cost: String,
    /// `cost` rounded to the currency's minor units, half to even: for people to read.
    pub cost_display: String,
    pub quantities: Vec<UnitQuantity>,
    /// The second level, when two `group_by` were given.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(no_recursion)]
    pub groups: Option<Vec<CostGroup>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = crate::examples::costs_view)]
pub struct CostsView {
    pub currency: String,
    /// First day, inclusive (UTC).
    pub from: NaiveDate,
    /// Last day, exclusive (UTC).
    pub to: NaiveDate,
    pub group_by: Vec<String>,
    /// Exact sum of every group.
    pub total: String,
    pub total_display: String,
    pub groups: Vec<CostGroup>,
}

#[derive(Default)]
struct Acc {
    label: Option<String>,
    cost: Decimal,
    quantities: BTreeMap<String, Decimal>,
    children: BTreeMap<Option<String>, Acc>,
}

fn to_groups(map: BTreeMap<Option<String>, Acc>, currency: &str, nested: bool) -> Vec<CostGroup> {
    let mut groups: Vec<(Option<String>, Acc)> = map.into_iter().collect();
    // Untagged (None) last; the rest in key order.
    groups.sort_by(|a, b| a.0.is_none().cmp(&b.0.is_none()).then(a.0.cmp(&b.0)));
    groups
        .into_iter()
        .map(|(key, acc)| CostGroup {
            key,
            label: acc.label,
            cost: acc.cost.normalize().to_string(),
            cost_display: money::for_display(acc.cost, currency).to_string(),
            quantities: acc
                .quantities
                .into_iter()
                .map(|(unit, q)| UnitQuantity {
                    unit,
                    quantity: q.normalize().to_string(),
                })
                .collect(),
            groups: nested.then(|| to_groups(acc.children, currency, false)),
        })
        .collect()
}

fn view(rows: Vec<costs::GroupRow>, q: &CostQuery, currency: &str) -> CostsView {
    let mut top: BTreeMap<Option<String>, Acc> = BTreeMap::new();
    let mut total = Decimal::ZERO;
    for row in rows {
        total += row.cost;
        let mut level = &mut top;
        for (depth, key) in row.keys.iter().enumerate() {
            let acc = level.entry(key.clone()).or_default();
            acc.label = row.labels.get(depth).cloned().flatten();
            acc.cost += row.cost;
            *acc.quantities.entry(row.unit.clone()).or_default() += row.quantity;
            level = &mut acc.children;
        }
    }
    CostsView {
        currency: currency.to_owned(),
        from: q.from,
        to: q.to,
        group_by: q.group_by.iter().map(dimension_name).collect(),
        total: total.normalize().to_string(),
        total_display: money::for_display(total, currency).to_string(),
        groups: to_groups(top, currency, q.group_by.len() > 1),
    }
}

/// The tenants the caller's platform-wide cost reads cover: every tenant for platform admins,
/// the tenants it manages for a partner; anyone else is refused (audited).
async fn platform_scope(state: &AppState, caller: &Caller) -> ApiResult<Scope> {
    state
        .authorize_platform(caller, Object::Cost, Action::Read)
        .await?;
    let everywhere =
        state
            .authz
            .read()
            .await
            .allows(caller.id, Domain::Everywhere, Object::Cost, Action::Read);
    Ok(if everywhere {
        Scope::All
    } else {
        Scope::MemberOf(caller.id)
    })
}

async fn grouped(state: &AppState, scope: Scope, q: CostQuery) -> ApiResult<HttpResponse> {
    let currency = state.config.metering.currency.clone();
    let (from, to, dims) = (q.from, q.to, q.group_by.clone());
    let rows = state
        .db(move |conn| Ok(costs::grouped(conn, scope, from, to, &dims)?))
        .await?;
    Ok(HttpResponse::Ok().json(view(rows, &q, &currency)))
}

#[utoipa::path(get, operation_id = "getTenantCosts", path = "/v1/tenants/{tenant}/costs", tag = "costs", security(("bearer" = [])),
    params(("tenant" = String, Path, description = "Tenant id or slug"), TenantCostParams),
    responses((status = 200, body = CostsView), (status = 403, body = crate::error::Problem),
        (status = 404, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn tenant(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let tenant = state
        .authorize_tenant(&caller, &path, Object::Cost, Action::Read)
        .await?;
    let q = parse_query(
        req.query_string(),
        false,
        false,
        &state.config.metering.currency,
    )?;
    grouped(&state, Scope::Tenant(tenant.id), q).await
}

#[utoipa::path(get, operation_id = "getPlatformCosts", path = "/v1/costs", tag = "costs", security(("bearer" = [])),
    params(PlatformCostParams),
    responses((status = 200, description = "Platform admins: every tenant; partners: the tenants they manage", body = CostsView),
        (status = 403, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn platform(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let scope = platform_scope(&state, &caller).await?;
    let q = parse_query(
        req.query_string(),
        true,
        false,
        &state.config.metering.currency,
    )?;
    grouped(&state, scope, q).await
}

/// Streams the charges as FOCUS CSV: a blocking task reads the cursor in batches and hands CSV
/// chunks over a channel of four, so at most a few batches are in memory however long the range.
fn stream_export(
    state: &AppState,
    owner: ExportOwner,
    scope: Scope,
    q: &CostQuery,
) -> ApiResult<HttpResponse> {
    match q.format.as_deref() {
        None | Some("focus") => {}
        Some(other) => {
            return Err(ApiError::Validation(vec![FieldError::new(
                "format",
                format!("{other:?} is not an export format; use focus (FOCUS 1.0 CSV)"),
            )]));
        }
    }
    let granularity = match q.granularity.as_deref() {
        None | Some("day") => costs::Granularity::Day,
        Some("hour") => costs::Granularity::Hour,
        Some(other) => {
            return Err(ApiError::Validation(vec![FieldError::new(
                "granularity",
                format!("{other:?} is not a granularity; use day (the default) or hour"),
            )]));
        }
    };
    let at = |d: NaiveDate| Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0).unwrap_or_default());
    let (from, to) = (at(q.from), at(q.to));
    let busy = |detail: String| ApiError::Unavailable {
        retry_after_secs: 10,
        detail,
    };
    let guard = {
        let mut owners = state
            .export_owners
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !owners.insert(owner) {
            return Err(busy(
                "an export of these costs is already running; wait for it to finish".into(),
            ));
        }
        OwnerGuard {
            owners: state.export_owners.clone(),
            owner,
        }
    };
    let permit = state
        .export_slots
        .clone()
        .try_acquire_owned()
        .map_err(|_| {
            busy(format!(
                "{MAX_CONCURRENT_EXPORTS} exports are running on this server; try again in a few seconds"
            ))
        })?;
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<web::Bytes, std::io::Error>>(4);
    let pool = state.pool.clone();
    let (prices, config) = (state.prices.clone(), state.config.metering.clone());
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let _guard = guard;
        let started = std::time::Instant::now();
        // A chunk waits at most `EXPORT_STALL` for the client; past that, or past the deadline,
        // the export ends (the client sees the body cut short) and frees its connection.
        let send = |item: Result<web::Bytes, std::io::Error>| -> bool {
            started.elapsed() < EXPORT_DEADLINE
                && runtime
                    .block_on(sender.send_timeout(item, EXPORT_STALL))
                    .is_ok()
        };
        let mut conn = match pool.get() {
            Ok(conn) => conn,
            Err(error) => {
                send(Err(std::io::Error::other(error.to_string())));
                return;
            }
        };
        let mut header = true;
        let mut each = |rows: Vec<costs::ExportRow>| {
            let chunk = bulkhead_core::focus::csv_chunk(&rows, header, &prices, &config)
                .map_err(|e| std::io::Error::other(e.to_string()));
            header = false;
            send(chunk.map(web::Bytes::from))
        };
        match costs::export(&mut conn, scope, granularity, from, to, &mut each) {
            Ok(0) => {
                // No charges: the header alone, so the file is still a valid (empty) export.
                let chunk = bulkhead_core::focus::csv_chunk(&[], true, &prices, &config)
                    .map_err(|e| std::io::Error::other(e.to_string()));
                send(chunk.map(web::Bytes::from));
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, "FOCUS export failed midway");
                send(Err(std::io::Error::other(error.to_string())));
            }
        }
    });
    let name = format!("bulkhead-focus-{}-{}.csv", q.from, q.to);
    Ok(HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header((
            "Content-Disposition",
            format!("attachment; filename=\"{name}\""),
        ))
        .streaming(tokio_stream(receiver)))
}

/// The receiving half of the channel as a body stream.
fn tokio_stream(
    mut receiver: tokio::sync::mpsc::Receiver<Result<web::Bytes, std::io::Error>>,
) -> impl futures_lite::Stream<Item = Result<web::Bytes, std::io::Error>> {
    futures_lite::stream::poll_fn(move |cx| receiver.poll_recv(cx))
}

#[utoipa::path(get, operation_id = "exportTenantCosts", path = "/v1/tenants/{tenant}/costs/export", tag = "costs", security(("bearer" = [])),
    params(("tenant" = String, Path, description = "Tenant id or slug"), ExportParams),
    responses((status = 200, description = "FOCUS 1.0 CSV, one row per environment, SKU and day (or hour)", content_type = "text/csv", body = String),
        (status = 403, body = crate::error::Problem), (status = 404, body = crate::error::Problem),
        (status = 422, body = crate::error::Problem),
        (status = 503, description = "An export of the same tenant (or by the same caller, platform-wide) is still streaming, or four are on this server; `Retry-After` says when to try again", body = crate::error::Problem)))]
pub async fn tenant_export(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let tenant = state
        .authorize_tenant(&caller, &path, Object::Cost, Action::Read)
        .await?;
    let q = parse_query(
        req.query_string(),
        false,
        true,
        &state.config.metering.currency,
    )?;
    stream_export(
        &state,
        ExportOwner::Tenant(tenant.id),
        Scope::Tenant(tenant.id),
        &q,
    )
}

#[utoipa::path(get, operation_id = "exportPlatformCosts", path = "/v1/costs/export", tag = "costs", security(("bearer" = [])),
    params(ExportParams),
    responses((status = 200, description = "FOCUS 1.0 CSV of every tenant (platform admins) or the managed tenants (partners)", content_type = "text/csv", body = String),
        (status = 403, body = crate::error::Problem), (status = 422, body = crate::error::Problem),
        (status = 503, description = "An export of the same tenant (or by the same caller, platform-wide) is still streaming, or four are on this server; `Retry-After` says when to try again", body = crate::error::Problem)))]
pub async fn platform_export(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let scope = platform_scope(&state, &caller).await?;
    let q = parse_query(
        req.query_string(),
        true,
        true,
        &state.config.metering.currency,
    )?;
    stream_export(&state, ExportOwner::Principal(caller.id), scope, &q)
}
