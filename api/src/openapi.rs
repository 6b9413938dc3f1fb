//! The OpenAPI document, generated from the handlers' annotations.

use crate::routes;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        // `/metrics` only, and only when the deployment sets one.
        components.add_security_scheme(
            "metrics_token",
            SecurityScheme::Http(
                utoipa::openapi::security::HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The deployment's BULKHEAD_METRICS_TOKEN, when it sets one",
                    ))
                    .build(),
            ),
        );
    }
}

/// Error responses are declared as `application/problem+json`, the content type the server
/// really sends (handlers name the body `Problem`; utoipa would call it `application/json`).
struct ProblemJson;

impl Modify for ProblemJson {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let problem = utoipa::openapi::Ref::from_schema_name("Problem");
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                for response in operation.responses.responses.values_mut() {
                    let utoipa::openapi::RefOr::T(response) = response else {
                        continue;
                    };
                    let is_problem =
                        response
                            .content
                            .get("application/json")
                            .is_some_and(|content| {
                                matches!(&content.schema,
                                Some(utoipa::openapi::RefOr::Ref(r)) if *r == problem)
                            });
                    if is_problem
                        && let Some(content) = response.content.shift_remove("application/json")
                    {
                        response
                            .content
                            .insert("application/problem+json".to_owned(), content);
                    }
                }
            }
        }
    }
}

/// The answers every route can give besides its own: 429 from the rate limits (with
/// `Retry-After` and the `RateLimit` headers, which successful answers carry too), 401 where a
/// credential is needed, 400 for an unreadable path, query or body, 422 for a list's `limit` or
/// `cursor` and for an `Idempotency-Key`, and 413/415 where a JSON body is read. Declared once
/// here instead of on every handler.
struct CommonResponses;

fn problem_response(description: &str) -> utoipa::openapi::Response {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/problem+json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
        .build()
}

fn text_header(description: &str) -> utoipa::openapi::header::Header {
    utoipa::openapi::header::HeaderBuilder::new()
        .schema(utoipa::openapi::ObjectBuilder::new().schema_type(utoipa::openapi::Type::String))
        .description(Some(description))
        .build()
}

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::RefOr;
        for (path, item) in openapi.paths.paths.iter_mut() {
            if !path.starts_with("/v1/") {
                continue;
            }
            let operations = [
                (&mut item.get, false),
                (&mut item.put, true),
                (&mut item.post, true),
                (&mut item.delete, false),
                (&mut item.patch, true),
            ];
            for (operation, may_have_body) in operations {
                let Some(operation) = operation else { continue };
                for parameter in operation.parameters.iter_mut().flatten() {
                    if parameter.name == "Idempotency-Key" {
                        // Nullable as before (generated clients keep their signatures).
                        parameter.schema = Some(
                            utoipa::openapi::ObjectBuilder::new()
                                .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
                                    utoipa::openapi::Type::String,
                                    utoipa::openapi::Type::Null,
                                ]))
                                .pattern(Some(crate::idempotency::KEY_PATTERN))
                                .into(),
                        );
                    }
                }
                let secured = operation.security.as_ref().is_some_and(|s| !s.is_empty());
                let has_body = may_have_body && operation.request_body.is_some();
                let paged = operation
                    .parameters
                    .iter()
                    .flatten()
                    .any(|p| p.name == "limit");
                let idempotent = operation
                    .parameters
                    .iter()
                    .flatten()
                    .any(|p| p.name == "Idempotency-Key");
                let responses = &mut operation.responses.responses;
                let mut add = |status: &str, description: &str| {
                    responses
                        .entry(status.to_owned())
                        .or_insert_with(|| RefOr::T(problem_response(description)));
                };
                add(
                    "400",
                    "The path, query string or body could not be read (`malformed-request`)",
                );
                if secured {
                    add(
                        "401",
                        "No valid access token or API key (`unauthenticated`)",
                    );
                }
                if paged {
                    add(
                        "422",
                        "`limit` is out of range, or `cursor` is not one this list returned \
                         (`validation-failed`)",
                    );
                }
                if idempotent {
                    add(
                        "422",
                        "The `Idempotency-Key` is malformed (`validation-failed`) or was used with \
                         another request (`idempotency-key-reused`)",
                    );
                }
                if has_body {
                    add("413", "The body is too large (`payload-too-large`)");
                    add("415", "The body is not JSON (`unsupported-media-type`)");
                }
                add(
                    "429",
                    "Over the request rate of this principal or client address (`rate-limited`); \
                     retry after `Retry-After` seconds",
                );
                if let Some(RefOr::T(too_many)) = responses.get_mut("429") {
                    too_many.headers.insert(
                        "Retry-After".to_owned(),
                        text_header("Seconds to wait before the next request"),
                    );
                }
                for response in responses.values_mut() {
                    let RefOr::T(response) = response else {
                        continue;
                    };
                    response.headers.insert(
                        "RateLimit".to_owned(),
                        text_header(
                            "Where the caller stands in each bucket the request was counted in, \
                             comma-separated: `\"<principal|anonymous|writes|tenant-writes>\";\
                             r=<remaining>;t=<seconds until full>` \
                             (draft-ietf-httpapi-ratelimit-headers-10); a 429 names only the \
                             bucket that refused it",
                        ),
                    );
                    response.headers.insert(
                        "RateLimit-Policy".to_owned(),
                        text_header(
                            "The buckets, comma-separated: \
                             `\"<principal|anonymous|writes|tenant-writes>\";q=<burst>;\
                             w=<seconds to refill it>`",
                        ),
                    );
                }
            }
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Bulkhead",
        description = "Multi-tenant control plane: tenants, members, API keys, environments as code, jobs, audit trail. \
            Errors are application/problem+json (RFC 9457) with a stable `type`."
    ),
    paths(
        routes::health::healthz,
        routes::health::readyz,
        routes::health::metrics,
        routes::auth::login,
        routes::auth::logout,
        routes::auth::accept_invitation,
        routes::me::me,
        routes::me::invitations,
        routes::me::accept_invitation,
        routes::me::decline_invitation,
        routes::partners::create,
        routes::tenants::create,
        routes::tenants::list,
        routes::tenants::get,
        routes::tenants::update,
        routes::tenants::delete,
        routes::quotas::get,
        routes::quotas::set,
        routes::members::add,
        routes::members::list,
        routes::members::remove,
        routes::api_keys::create,
        routes::api_keys::list,
        routes::api_keys::revoke,
        routes::environments::create,
        routes::environments::list,
        routes::environments::get,
        routes::environments::update,
        routes::environments::destroy,
        routes::environments::plan,
        routes::environments::apply,
        routes::environments::drift_check,
        routes::environments::credentials,
        routes::environments::isolation,
        routes::jobs::list,
        routes::jobs::get,
        routes::jobs::events,
        routes::jobs::cancel,
        routes::audit::list_for_tenant,
        routes::audit::list_all,
        routes::audit::verify,
        routes::costs::tenant,
        routes::costs::tenant_export,
        routes::costs::platform,
        routes::costs::platform_export,
        routes::webhooks::create,
        routes::webhooks::list,
        routes::webhooks::delete,
        routes::webhooks::deliveries,
        routes::budgets::get,
        routes::budgets::put,
        routes::budgets::delete,
        routes::budgets::passes,
        routes::policy::get,
        routes::blueprints::list,
        routes::blueprints::get,
        routes::policy::put,
        routes::approvals::approve,
        routes::approvals::reject,
        routes::approvals::pending,
        routes::environments::upgrade,
        routes::environments::stop,
        routes::environments::start,
        routes::environments::drift,
    ),
    components(schemas(crate::error::Problem, bulkhead_core::domain::FieldError)),
    tags(
        (name = "auth", description = "Log in and out, accept an invitation"),
        (name = "tenants", description = "Tenants and their offboarding"),
        (name = "members", description = "People and their roles in a tenant"),
        (name = "api-keys", description = "Tenant-scoped keys for partners' systems and automation"),
        (name = "environments", description = "Environments as code: plan, apply, drift check, destroy, credentials and the isolation each one really has"),
        (name = "jobs", description = "What the workers do for an environment, step by step"),
        (name = "audit", description = "The hash-chained audit trail"),
        (name = "governance", description = "Governed change: a tenant's policy per stage (approvals, drift checks, schedules, TTLs, promotion order) and the approvals of planned changes"),
        (name = "webhooks", description = "Signed webhooks: CloudEvents 1.0 JSON, signed per Standard Webhooks, sent in order per endpoint with retries"),
        (name = "costs", description = "Metered usage priced from the catalog: costs by any tag, budgets, the FOCUS 1.0 export, metering passes"),
        (name = "operations", description = "Health, readiness, metrics"),
    ),
    modifiers(&BearerAuth, &ProblemJson, &CommonResponses)
)]
pub struct ApiDoc;

/// A documented path: its template (`/v1/tenants/{tenant}`), its segments (`None` for a
/// `{parameter}`) and its methods.
struct Route {
    template: String,
    segments: Vec<Option<String>>,
    methods: Vec<&'static str>,
}

impl Route {
    /// Whether `path`'s segments fit the template (a parameter takes any non-empty segment,
    /// as the router's `{name}` does).
    fn fits(&self, segments: &[&str]) -> bool {
        self.segments.len() == segments.len()
            && self.segments.iter().zip(segments).all(|(t, s)| match t {
                Some(literal) => literal == s,
                None => !s.is_empty(),
            })
    }
}

static ROUTES: std::sync::LazyLock<Vec<Route>> = std::sync::LazyLock::new(|| {
    let document = ApiDoc::openapi();
    let mut routes: Vec<_> = document
        .paths
        .paths
        .iter()
        .map(|(path, item)| {
            let segments = path
                .split('/')
                .map(|s| (!s.starts_with('{')).then(|| s.to_owned()))
                .collect();
            let methods = [
                ("GET", item.get.is_some()),
                ("PUT", item.put.is_some()),
                ("POST", item.post.is_some()),
                ("DELETE", item.delete.is_some()),
                ("PATCH", item.patch.is_some()),
            ]
            .into_iter()
            .filter_map(|(method, present)| present.then_some(method))
            .collect();
            Route {
                template: path.clone(),
                segments,
                methods,
            }
        })
        .collect();
    routes.push(Route {
        template: "/openapi.json".into(),
        segments: vec![Some(String::new()), Some("openapi.json".into())],
        methods: vec!["GET"],
    });
    routes
});

/// The documented template `path` belongs to (`/v1/tenants/{tenant}` for
/// `/v1/tenants/acme`), whatever the method: the route label of metrics and log lines. One
/// pass over the segments, without the router's patterns (walking actix's route table a
/// second time for the label cost as much as routing the request). Documented templates do
/// not overlap (a test says so), so the first that fits is the one.
pub fn route_label(path: &str) -> Option<&'static str> {
    let segments: Vec<&str> = path.split('/').collect();
    ROUTES
        .iter()
        .find(|route| route.fits(&segments))
        .map(|route| route.template.as_str())
}

/// The methods the contract has for `path` (one a router did not match with the request's
/// method), or `None` if no documented path matches it: 405 with `Allow` rather than 404.
pub fn allowed_methods(path: &str) -> Option<String> {
    let segments: Vec<&str> = path.split('/').collect();
    let mut allowed: Vec<&str> = ROUTES
        .iter()
        .filter(|route| route.fits(&segments))
        .flat_map(|route| route.methods.iter().copied())
        .collect();
    allowed.sort_unstable();
    allowed.dedup();
    (!allowed.is_empty()).then(|| allowed.join(", "))
}

#[cfg(test)]
mod tests {
    use super::{ROUTES, route_label};

    #[test]
    fn no_two_documented_paths_fit_one_request_path() {
        for (i, a) in ROUTES.iter().enumerate() {
            for b in &ROUTES[i + 1..] {
                let overlap = a.segments.len() == b.segments.len()
                    && a.segments.iter().zip(&b.segments).all(|pair| match pair {
                        (Some(x), Some(y)) => x == y,
                        (Some(x), None) | (None, Some(x)) => !x.is_empty(),
                        (None, None) => true,
                    });
                assert!(
                    !overlap,
                    "{} and {} fit the same paths",
                    a.template, b.template
                );
            }
        }
    }

    #[test]
    fn a_request_path_is_labelled_with_its_template() {
        assert_eq!(
            route_label("/v1/tenants/acme"),
            Some("/v1/tenants/{tenant}")
        );
        assert_eq!(
            route_label("/v1/tenants/acme/members/0190a0e4-0000-7000-8000-000000000000"),
            Some("/v1/tenants/{tenant}/members/{principal}")
        );
        assert_eq!(
            route_label("/v1/audit-events/verify"),
            Some("/v1/audit-events/verify")
        );
        assert_eq!(route_label("/healthz"), Some("/healthz"));
        assert_eq!(route_label("/openapi.json"), Some("/openapi.json"));
        // An empty segment is no parameter, and an undocumented path has no label here.
        assert_eq!(route_label("/v1/tenants/"), None);
        assert_eq!(route_label("/v1/tenants/acme/nothing-here"), None);
    }
}
