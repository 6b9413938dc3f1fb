//! Liveness, readiness (the control database answers) and Prometheus metrics (behind a bearer
//! token when `BULKHEAD_METRICS_TOKEN` is set).

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use actix_web::{HttpRequest, HttpResponse, web};
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

#[utoipa::path(get, operation_id = "getMetrics", path = "/metrics", tag = "operations",
    security((), ("metrics_token" = [])),
    responses((status = 200, description = "Prometheus text format"),
        (status = 401, description = "`BULKHEAD_METRICS_TOKEN` is set and the request did not send `Authorization: Bearer <that token>`", body = crate::error::Problem)))]
pub async fn metrics(req: HttpRequest, state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    let authorization = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .map(actix_web::http::header::HeaderValue::as_bytes);
    if !crate::metrics::may_scrape(state.config.metrics_token.as_deref(), authorization) {
        return Err(ApiError::Unauthenticated(
            "send Authorization: Bearer <the metrics token> (BULKHEAD_METRICS_TOKEN)",
        ));
    }
    // Metering runs in the workers: its standing comes from the control database.
    let metering = state
        .db(|conn| {
            let last = bulkhead_core::store::metering::last_success(conn)?;
            let failed = bulkhead_core::store::metering::failed_last_day(conn)?;
            Ok((last, failed))
        })
        .await;
    if let Ok((last, failed)) = metering {
        state
            .metrics
            .metering_last_success
            .set(last.map_or(0.0, |at| at.timestamp() as f64));
        state.metrics.metering_failed_last_day.set(failed);
    }
    let body = state.metrics.render().map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(body))
}
