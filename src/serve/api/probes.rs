//! What orchestrators and tools ask of the process: `GET /health`
//! (liveness), `GET /ready` (readiness), `GET /metrics` (Prometheus) and
//! `GET /openapi.json` (the API's own document).

use axum::extract::State;
use axum::response::IntoResponse;
use axum::Json;

use super::error::ApiError;
use super::openapi::{self, HealthErrors, ReadyErrors, RequestHeadErrors};
use super::recommend::model_info;
use super::types::{CalibrationInfo, HealthResponse, ReadyResponse};
use super::AppState;

/// Liveness: the process answers, and its encoder thread has not died (a
/// dead encoder cannot recover, so an orchestrator should restart the
/// process). Still 200 while the models load.
#[utoipa::path(
    get,
    path = "/health",
    tag = "operations",
    responses((status = 200, description = "The process is alive.", body = HealthResponse), HealthErrors)
)]
pub(super) async fn health(State(state): State<AppState>) -> Result<Json<HealthResponse>, ApiError> {
    match state.shared.service.get() {
        Some(service) if !service.is_ready() => Err(ApiError::encoder_stopped()),
        _ => Ok(Json(HealthResponse { status: "ok".into() })),
    }
}

/// Readiness: 200 once the models are loaded and one warm-up pass has run,
/// and for as long as the encoder thread lives.
#[utoipa::path(
    get,
    path = "/ready",
    tag = "operations",
    responses((status = 200, description = "Requests can be served.", body = ReadyResponse), ReadyErrors)
)]
pub(super) async fn ready(State(state): State<AppState>) -> Result<Json<ReadyResponse>, ApiError> {
    let service = state.service()?;
    let bundle = service.bundle();
    let calibration = match bundle.calibration() {
        Some(c) => CalibrationInfo {
            calibrated: true,
            event: c.event.clone(),
            window: Some(c.fitted_on.window.clone()),
            base_rate: Some(c.fitted_on.base_rate()),
        },
        None => CalibrationInfo {
            calibrated: false,
            event: format!(
                "uncalibrated: bundle {} has no calibration, so its scores rank items but are odds under its \
                 training mix, not purchase probabilities; a bundle trained by this version is calibrated",
                bundle.version()
            ),
            window: None,
            base_rate: None,
        },
    };
    Ok(Json(ReadyResponse { status: "ready".into(), model: model_info(&service, &bundle), calibration }))
}

/// `GET /metrics`: every metric, in Prometheus' text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "The metrics.", body = String, content_type = "text/plain; version=0.0.4"),
        RequestHeadErrors
    )
)]
pub(super) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], state.shared.metrics.render())
}

/// `GET /openapi.json`: this document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document.", body = Object), RequestHeadErrors)
)]
pub(super) async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(openapi::document())
}
