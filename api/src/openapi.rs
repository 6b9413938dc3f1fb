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
        routes::members::add,
        routes::members::list,
        routes::members::remove,
        routes::api_keys::create,
        routes::api_keys::list,
        routes::api_keys::revoke,
        routes::environments::create,
        routes::environments::list,
        routes::environments::get,
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
        (name = "operations", description = "Health, readiness, metrics"),
    ),
    modifiers(&BearerAuth, &ProblemJson)
)]
pub struct ApiDoc;
