//! Liveness, readiness (the control database answers) and Prometheus metrics.

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use actix_web::{HttpResponse, web};
use diesel::RunQueryDsl;

#[utoipa::path(get, operation_id = "getHealthz", path = "/healthz", tag = "operations", responses((status = 200, description = "The process is up")))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

#[utoipa::path(get, operation_id = "getReadyz", path = "/readyz", tag = "operations", responses(
    (status = 200, description = "The control database answers"),
    (status = 503, description = "The control database does not answer", body = crate::error::Problem)))]
pub async fn readyz(state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    state
        .db(|conn| {
            diesel::sql_query("SELECT 1")
                .execute(conn)
                .map_err(|e| ApiError::Unavailable {
                    retry_after_secs: 2,
                    detail: format!("the control database does not answer: {e}"),
                })
        })
        .await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"status": "ready", "database": "ok"})))
}

#[utoipa::path(get, operation_id = "getMetrics", path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text format")))]
pub async fn metrics(state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    let body = state.metrics.render().map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(body))
}
