//! bulkhead-api: the HTTP service. Builds the actix-web server over the control database.

pub mod auth;
pub mod body;
pub mod bootstrap;
pub mod error;
pub mod examples;
pub mod hashing;
pub mod idempotency;
pub mod mail;
pub mod metrics;
pub mod observe;
pub mod openapi;
pub mod ratelimit;
pub mod routes;
pub mod schemas;
pub mod scope;
pub mod state;
pub mod tls;

use actix_web::dev::Server;
use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::middleware::from_fn;
use actix_web::{App, HttpRequest, HttpServer, web};
use anyhow::Context;
use bulkhead_core::config::Config;
use bulkhead_core::db::PgPool;
use error::ApiError;
use state::AppState;
use std::net::{SocketAddr, TcpListener};
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

fn json_error(error: JsonPayloadError, _: &HttpRequest) -> actix_web::Error {
    body::json_payload_error(&error).into()
}

fn query_error(error: QueryPayloadError, _: &HttpRequest) -> actix_web::Error {
    ApiError::Malformed(format!(
        "the query string does not fit this endpoint: {error}"
    ))
    .into()
}

fn path_error(error: PathError, _: &HttpRequest) -> actix_web::Error {
    ApiError::Malformed(format!("the path does not fit this endpoint: {error}")).into()
}

/// The answer for a path no route takes with this method: 405 with `Allow` when the contract
/// has the path, else 404.
pub(crate) async fn no_route(req: HttpRequest) -> Result<actix_web::HttpResponse, ApiError> {
    if let Some(allow) = openapi::allowed_methods(req.path()) {
        return Err(ApiError::MethodNotAllowed {
            detail: format!(
                "{} is not a method of {}; it takes {allow} (see /openapi.json)",
                req.method(),
                req.path()
            ),
            allow,
        });
    }
    Err(ApiError::NotFound(format!(
        "no endpoint {} {}; see /openapi.json",
        req.method(),
        req.path()
    )))
}

/// A bound, not yet running server, and the address it listens on.
pub struct Service {
    pub server: Server,
    pub addr: SocketAddr,
    pub https: bool,
    /// Notify this to make the outbox relay publish now (handlers do after committing a job).
    pub relay_wake: std::sync::Arc<tokio::sync::Notify>,
}

/// Builds the application state (loading the enforcer) and binds the listener.
pub async fn build(config: Config, pool: PgPool) -> anyhow::Result<Service> {
    let listener = TcpListener::bind(config.listen)
        .with_context(|| format!("BULKHEAD_LISTEN: cannot bind {}", config.listen))?;
    build_on(config, pool, listener).await
}

pub async fn build_on(
    config: Config,
    pool: PgPool,
    listener: TcpListener,
) -> anyhow::Result<Service> {
    let addr = listener.local_addr()?;
    let tls = config.tls.as_ref().map(tls::server_config).transpose()?;
    let workers = config.http_workers;
    let max_body = config.max_body_bytes;
    let state = web::Data::new(AppState::new(config, pool).await?);
    let relay_wake = state.relay_wake.clone();
    // Role-assignment changes an hour old are forgotten every ten minutes (every process has
    // applied them, or reloads everything when it finds the hole).
    {
        let pool = state.pool.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(600)).await;
                let pool = pool.clone();
                let swept = tokio::task::spawn_blocking(move || {
                    let mut conn = pool.get()?;
                    bulkhead_core::store::principals::forget_changes_older_than(
                        &mut conn,
                        std::time::Duration::from_secs(3600),
                    )
                })
                .await;
                if !matches!(swept, Ok(Ok(_))) {
                    tracing::warn!("could not forget old role-assignment changes; next time");
                }
            }
        });
    }
    // Buckets that filled up again are forgotten every minute (memory stays bounded by the
    // principals and addresses active in the last window).
    {
        let state = state.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(60)).await;
                state.rate_limits.forget_idle();
            }
        });
    }
    // Denials counted beyond the chained allowance are folded into the audit chain once their
    // window closes (every half window; several replicas skip each other's rows).
    {
        let pool = state.pool.clone();
        let window = state.config.limits.denials.window_seconds;
        tokio::spawn(async move {
            let every = std::time::Duration::from_millis((window as u64 * 500).max(500));
            loop {
                tokio::time::sleep(every).await;
                let pool = pool.clone();
                let folded = tokio::task::spawn_blocking(move || {
                    let mut conn = pool.get()?;
                    let mut total = 0;
                    // Small transactions: each holds the chain's lock only for a few appends.
                    loop {
                        let folded = bulkhead_core::store::denials::fold_closed(&mut conn, 20)?;
                        total += folded;
                        if folded < 20 {
                            return Ok::<_, bulkhead_core::store::StoreError>(total);
                        }
                    }
                })
                .await;
                if !matches!(folded, Ok(Ok(_))) {
                    tracing::warn!(
                        "could not fold counted denials into the audit trail; next time"
                    );
                }
            }
        });
    }
    // The mail relay runs with the API (invitations are mailed from here).
    if let Some(delivery) = state.config.mail.clone() {
        tokio::spawn(mail::run_relay(
            state.pool.clone(),
            delivery,
            state.config.mail_from.clone(),
            state.mail_wake.clone(),
        ));
    }
    let openapi = openapi::ApiDoc::openapi();
    let factory = move || {
        App::new()
            .app_data(state.clone())
            .app_data(
                web::JsonConfig::default()
                    .limit(max_body)
                    .error_handler(json_error),
            )
            .app_data(web::QueryConfig::default().error_handler(query_error))
            .app_data(web::PathConfig::default().error_handler(path_error))
            .wrap(from_fn(ratelimit::limit))
            .wrap(from_fn(observe::observe))
            .configure(routes::configure)
            .service(SwaggerUi::new("/swagger-ui/{_:.*}").url("/openapi.json", openapi.clone()))
            .default_service(web::to(no_route))
    };
    let server = HttpServer::new(factory).workers(workers);
    let https = tls.is_some();
    let server = match tls {
        Some(tls) => server.listen_rustls_0_23(listener, tls)?,
        None => server.listen(listener)?,
    };
    Ok(Service {
        server: server.run(),
        addr,
        https,
        relay_wake,
    })
}
