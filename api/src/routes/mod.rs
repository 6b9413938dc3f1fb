//! All routes of the v1 contract, one module per resource.

/// A named schema for one kind of page, for the OpenAPI document only: the JSON is
/// [`PageOf`]'s, but utoipa copies a generic parameter's schema inline, and generated clients
/// would get an anonymous item type per list instead of the item's own type.
macro_rules! page_schema {
    ($name:ident, $item:ty, $example:ident) => {
        #[doc = concat!("One page of `", stringify!($item), "`s.")]
        #[derive(utoipa::ToSchema)]
        #[schema(example = crate::examples::$example)]
        #[allow(dead_code)]
        pub struct $name {
            pub items: Vec<$item>,
            /// Pass as `cursor` to get the next page; absent on the last page.
            pub next_cursor: Option<String>,
        }
    };
}

pub mod api_keys;
pub mod approvals;
pub mod audit;
pub mod auth;
pub mod blueprints;
pub mod budgets;
pub mod costs;
pub mod environments;
pub mod health;
pub mod jobs;
pub mod me;
pub mod members;
pub mod partners;
pub mod policy;
pub mod quotas;
pub mod tenants;
pub mod webhooks;

use crate::error::{ApiError, ApiResult};
use actix_web::web;
use bulkhead_core::store::{MAX_PAGE, Page};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .route("/metrics", web::get().to(health::metrics))
        .service(
            web::scope("/v1")
                .route("/auth/login", web::post().to(auth::login))
                .route("/auth/logout", web::post().to(auth::logout))
                .route(
                    "/auth/accept-invitation",
                    web::post().to(auth::accept_invitation),
                )
                .route("/me", web::get().to(me::me))
                .route("/me/invitations", web::get().to(me::invitations))
                .route(
                    "/me/invitations/{tenant}/accept",
                    web::post().to(me::accept_invitation),
                )
                .route(
                    "/me/invitations/{tenant}/decline",
                    web::post().to(me::decline_invitation),
                )
                .route("/partners", web::post().to(partners::create))
                .route("/tenants", web::post().to(tenants::create))
                .route("/tenants", web::get().to(tenants::list))
                .route("/tenants/{tenant}", web::get().to(tenants::get))
                .route("/tenants/{tenant}", web::patch().to(tenants::update))
                .route("/tenants/{tenant}", web::delete().to(tenants::delete))
                .route("/tenants/{tenant}/costs", web::get().to(costs::tenant))
                .route(
                    "/tenants/{tenant}/costs/export",
                    web::get().to(costs::tenant_export),
                )
                .route(
                    "/tenants/{tenant}/webhooks",
                    web::post().to(webhooks::create),
                )
                .route("/tenants/{tenant}/webhooks", web::get().to(webhooks::list))
                .route(
                    "/tenants/{tenant}/webhooks/{webhook}",
                    web::delete().to(webhooks::delete),
                )
                .route(
                    "/tenants/{tenant}/webhooks/{webhook}/deliveries",
                    web::get().to(webhooks::deliveries),
                )
                .route("/tenants/{tenant}/budget", web::get().to(budgets::get))
                .route("/tenants/{tenant}/budget", web::put().to(budgets::put))
                .route(
                    "/tenants/{tenant}/budget",
                    web::delete().to(budgets::delete),
                )
                .route("/blueprints", web::get().to(blueprints::list))
                .route("/blueprints/{name}", web::get().to(blueprints::get))
                .route("/tenants/{tenant}/policy", web::get().to(policy::get))
                .route("/tenants/{tenant}/policy", web::put().to(policy::put))
                .route("/costs", web::get().to(costs::platform))
                .route("/costs/export", web::get().to(costs::platform_export))
                .route("/metering/passes", web::get().to(budgets::passes))
                .route("/tenants/{tenant}/quotas", web::get().to(quotas::get))
                .route("/tenants/{tenant}/quotas", web::put().to(quotas::set))
                .route("/tenants/{tenant}/members", web::post().to(members::add))
                .route("/tenants/{tenant}/members", web::get().to(members::list))
                .route(
                    "/tenants/{tenant}/members/{principal}",
                    web::delete().to(members::remove),
                )
                .route(
                    "/tenants/{tenant}/api-keys",
                    web::post().to(api_keys::create),
                )
                .route("/tenants/{tenant}/api-keys", web::get().to(api_keys::list))
                .route(
                    "/tenants/{tenant}/api-keys/{key}",
                    web::delete().to(api_keys::revoke),
                )
                .route(
                    "/tenants/{tenant}/environments",
                    web::post().to(environments::create),
                )
                .route(
                    "/tenants/{tenant}/environments",
                    web::get().to(environments::list),
                )
                .route(
                    "/tenants/{tenant}/environments/{env}",
                    web::get().to(environments::get),
                )
                .route(
                    "/tenants/{tenant}/environments/{env}",
                    web::patch().to(environments::update),
                )
                .route(
                    "/tenants/{tenant}/environments/{env}",
                    web::delete().to(environments::destroy),
                )
                .route(
                    "/tenants/{tenant}/environments/{env}/plan",
                    web::post().to(environments::plan),
                )
                .route(
                    "/tenants/{tenant}/environments/{env}/apply",
                    web::post().to(environments::apply),
                )
                .route(
                    "/tenants/{tenant}/environments/{env}/drift-check",
                    web::post().to(environments::drift_check),
                )
                .route(
                    "/tenants/{tenant}/environments/{env}/stop",
                    web::post().to(environments::stop),
                )
                .route(
                    "/tenants/{tenant}/environments/{env}/start",
                    web::post().to(environments::start),
                )
                .route(
                    "/tenants/{tenant}/environments/{env}/upgrade",
                    web::post().to(environments::upgrade),
                )
                .route(
                    "/tenants/{tenant}/environments/{env}/drift",
                    web::get().to(environments::drift),
                )
                .route(
                    "/tenants/{tenant}/environments/{env}/credentials",
                    web::get().to(environments::credentials),
                )
                .route(
                    "/tenants/{tenant}/environments/{env}/isolation",
                    web::get().to(environments::isolation),
                )
                .route("/tenants/{tenant}/jobs", web::get().to(jobs::list))
                .route("/tenants/{tenant}/jobs/{job}", web::get().to(jobs::get))
                .route(
                    "/tenants/{tenant}/jobs/{job}/events",
                    web::get().to(jobs::events),
                )
                .route(
                    "/tenants/{tenant}/jobs/{job}/cancel",
                    web::post().to(jobs::cancel),
                )
                .route(
                    "/tenants/{tenant}/jobs/{job}/approve",
                    web::post().to(approvals::approve),
                )
                .route(
                    "/tenants/{tenant}/jobs/{job}/reject",
                    web::post().to(approvals::reject),
                )
                .route(
                    "/tenants/{tenant}/approvals",
                    web::get().to(approvals::pending),
                )
                .route(
                    "/tenants/{tenant}/audit-events",
                    web::get().to(audit::list_for_tenant),
                )
                .route("/audit-events", web::get().to(audit::list_all))
                .route("/audit-events/verify", web::get().to(audit::verify)),
        );
}

/// `?limit=&cursor=` of list endpoints whose cursor is an id.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// 1 to 200; default 50.
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(
        pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    )]
    pub cursor: Option<String>,
}

/// `?limit=&cursor=` of the lists in sequence order (audit events, job events).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SeqPageQuery {
    /// 1 to 200; default 50.
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(pattern = r"^[0-9]{1,18}$")]
    pub cursor: Option<String>,
}

fn page_limit(limit: Option<i64>) -> ApiResult<i64> {
    match limit {
        None => Ok(50),
        Some(limit) if (1..=MAX_PAGE).contains(&limit) => Ok(limit),
        Some(_) => Err(ApiError::validation(
            "limit",
            format!("must be from 1 to {MAX_PAGE}"),
        )),
    }
}

fn bad_cursor() -> ApiError {
    ApiError::validation(
        "cursor",
        "is not a cursor this list returned; start without one",
    )
}

impl PageQuery {
    pub fn limit(&self) -> ApiResult<i64> {
        page_limit(self.limit)
    }

    pub fn uuid_cursor(&self) -> ApiResult<Option<Uuid>> {
        self.cursor
            .as_deref()
            .map(|c| parse_uuid(c).ok_or_else(bad_cursor))
            .transpose()
    }
}

impl SeqPageQuery {
    pub fn limit(&self) -> ApiResult<i64> {
        page_limit(self.limit)
    }

    pub fn seq_cursor(&self) -> ApiResult<Option<i64>> {
        self.cursor
            .as_deref()
            .map(|c| {
                // Digits only, as the document's pattern says (`parse` would also take a sign).
                (!c.is_empty() && c.len() <= 18 && c.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| c.parse::<i64>().ok())
                    .flatten()
                    .ok_or_else(bad_cursor)
            })
            .transpose()
    }
}

/// A UUID in its hyphenated form, the one the document states (`format: uuid` for ids, a
/// pattern for cursors); `Uuid::try_parse` also takes the simple, braced and URN forms.
pub fn parse_uuid(raw: &str) -> Option<Uuid> {
    (raw.len() == 36)
        .then(|| Uuid::try_parse(raw).ok())
        .flatten()
}

/// One page of a list (its schema in the OpenAPI document: `page_schema!`).
#[derive(Debug, Serialize)]
pub struct PageOf<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

impl<T> PageOf<T> {
    pub fn from_page<R>(page: Page<R>, map: impl Fn(R) -> T) -> Self {
        Self {
            items: page.items.into_iter().map(map).collect(),
            next_cursor: page.next_cursor,
        }
    }
}

/// A UUID path segment; anything else is simply not found.
pub fn parse_id(raw: &str, what: &str) -> ApiResult<Uuid> {
    parse_uuid(raw).ok_or_else(|| ApiError::NotFound(format!("no {what} '{raw}' exists here")))
}
