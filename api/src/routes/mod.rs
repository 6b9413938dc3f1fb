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

/// The routes, nested by their common prefixes: the router tries a request against the
/// patterns of one level at a time (a path under `/v1/tenants/{tenant}` is matched against that
/// prefix once, then against the tenant's own short list), not against every pattern of the
/// contract in turn. A method a path does not have falls through to the app's default
/// service, which answers 405 with `Allow`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    use web::{delete, get, patch, post, put, scope};
    // One path with several methods: another method gets the same 405 problem as anywhere
    // else (actix's own would list the methods in its own order, without a problem body).
    fn resource(path: &str) -> actix_web::Resource {
        web::resource(path).default_service(web::to(crate::no_route))
    }
    cfg.route("/healthz", get().to(health::healthz))
        .route("/readyz", get().to(health::readyz))
        .route("/metrics", get().to(health::metrics))
        .service(
            scope("/v1")
                .route("/auth/login", post().to(auth::login))
                .route("/auth/logout", post().to(auth::logout))
                .route(
                    "/auth/accept-invitation",
                    post().to(auth::accept_invitation),
                )
                .route("/me", get().to(me::me))
                .route("/me/invitations", get().to(me::invitations))
                .route(
                    "/me/invitations/{tenant}/accept",
                    post().to(me::accept_invitation),
                )
                .route(
                    "/me/invitations/{tenant}/decline",
                    post().to(me::decline_invitation),
                )
                .route("/partners", post().to(partners::create))
                .service(
                    resource("/tenants")
                        .route(post().to(tenants::create))
                        .route(get().to(tenants::list)),
                )
                .service(scope("/tenants/{tenant}").configure(tenant_routes))
                .route("/blueprints", get().to(blueprints::list))
                .route("/blueprints/{name}", get().to(blueprints::get))
                .route("/costs", get().to(costs::platform))
                .route("/costs/export", get().to(costs::platform_export))
                .route("/metering/passes", get().to(budgets::passes))
                .route("/audit-events", get().to(audit::list_all))
                .route("/audit-events/verify", get().to(audit::verify)),
        );

    /// Under `/v1/tenants/{tenant}`.
    fn tenant_routes(cfg: &mut web::ServiceConfig) {
        cfg.service(
            resource("")
                .route(get().to(tenants::get))
                .route(patch().to(tenants::update))
                .route(delete().to(tenants::delete)),
        )
        .route("/costs", get().to(costs::tenant))
        .route("/costs/export", get().to(costs::tenant_export))
        .service(
            resource("/webhooks")
                .route(post().to(webhooks::create))
                .route(get().to(webhooks::list)),
        )
        .route("/webhooks/{webhook}", delete().to(webhooks::delete))
        .route(
            "/webhooks/{webhook}/deliveries",
            get().to(webhooks::deliveries),
        )
        .service(
            resource("/budget")
                .route(get().to(budgets::get))
                .route(put().to(budgets::put))
                .route(delete().to(budgets::delete)),
        )
        .service(
            resource("/policy")
                .route(get().to(policy::get))
                .route(put().to(policy::put)),
        )
        .service(
            resource("/quotas")
                .route(get().to(quotas::get))
                .route(put().to(quotas::set)),
        )
        .service(
            resource("/members")
                .route(post().to(members::add))
                .route(get().to(members::list)),
        )
        .route("/members/{principal}", delete().to(members::remove))
        .service(
            resource("/api-keys")
                .route(post().to(api_keys::create))
                .route(get().to(api_keys::list)),
        )
        .route("/api-keys/{key}", delete().to(api_keys::revoke))
        .service(
            resource("/environments")
                .route(post().to(environments::create))
                .route(get().to(environments::list)),
        )
        .service(scope("/environments/{env}").configure(environment_routes))
        .route("/jobs", get().to(jobs::list))
        .service(scope("/jobs/{job}").configure(job_routes))
        .route("/approvals", get().to(approvals::pending))
        .route("/audit-events", get().to(audit::list_for_tenant));
    }

    /// Under `/v1/tenants/{tenant}/environments/{env}`.
    fn environment_routes(cfg: &mut web::ServiceConfig) {
        cfg.service(
            resource("")
                .route(get().to(environments::get))
                .route(patch().to(environments::update))
                .route(delete().to(environments::destroy)),
        )
        .route("/plan", post().to(environments::plan))
        .route("/apply", post().to(environments::apply))
        .route("/drift-check", post().to(environments::drift_check))
        .route("/stop", post().to(environments::stop))
        .route("/start", post().to(environments::start))
        .route("/upgrade", post().to(environments::upgrade))
        .route("/drift", get().to(environments::drift))
        .route("/credentials", get().to(environments::credentials))
        .route("/isolation", get().to(environments::isolation));
    }

    /// Under `/v1/tenants/{tenant}/jobs/{job}`.
    fn job_routes(cfg: &mut web::ServiceConfig) {
        cfg.route("", get().to(jobs::get))
            .route("/events", get().to(jobs::events))
            .route("/cancel", post().to(jobs::cancel))
            .route("/approve", post().to(approvals::approve))
            .route("/reject", post().to(approvals::reject));
    }
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
