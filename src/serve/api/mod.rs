//! The HTTP API (axum): `POST /recommend`, `GET /health`, `GET /ready`,
//! `GET /metrics`. A request's path is short and one-way: JSON extractor →
//! validation into a `RankQuery` → admission (a concurrency permit, or 503)
//! → the blocking pool → `Ranker::rank` with the bundle serving now → JSON
//! response naming that bundle.

pub mod error;
pub mod json;
pub mod types;

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::sync::Semaphore;

use self::error::{ApiError, ErrorKind};
use self::json::ApiJson;
use self::types::{ModelInfo, RecommendRequest, RecommendResponse};
use crate::config::{Limits, ServerSettings};
use crate::model::bundle::Bundle;
use crate::serve::metrics::Metrics;
use crate::serve::service::Service;

/// Shared application state. Cloning is shallow: every clone points at the
/// same [`Shared`].
#[derive(Clone)]
pub struct AppState {
    shared: Arc<Shared>,
}

struct Shared {
    /// Set once the models are loaded and warmed up; `/ready` reports it.
    service: OnceLock<Arc<Service>>,
    metrics: Metrics,
    limits: Limits,
    admission: Arc<Semaphore>,
    request_timeout: Duration,
}

impl AppState {
    pub fn new(metrics: Metrics, limits: Limits, server: &ServerSettings) -> Self {
        Self {
            shared: Arc::new(Shared {
                service: OnceLock::new(),
                metrics,
                limits,
                admission: Arc::new(Semaphore::new(server.max_concurrent_requests)),
                request_timeout: Duration::from_secs(server.request_timeout_secs),
            }),
        }
    }

    /// Makes the service ready (a built `Service` has warmed up).
    pub fn install(&self, service: Arc<Service>) {
        let _ = self.shared.service.set(service);
    }

    /// The service, if it is loaded and its encoder thread is alive.
    fn service(&self) -> Result<Arc<Service>, ApiError> {
        match self.shared.service.get() {
            None => Err(ApiError::not_ready()),
            Some(service) if !service.is_ready() => Err(ApiError::encoder_stopped()),
            Some(service) => Ok(service.clone()),
        }
    }
}

/// The router, without a socket: tests call `app(state).oneshot(request)`.
pub fn app(state: AppState) -> Router {
    let body_limit = state.shared.limits.max_body_bytes;
    Router::new()
        .route("/recommend", post(recommend))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .fallback(|request: Request| async move { ApiError::not_found(request.uri().path()) })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(state.clone(), record_metrics))
        .with_state(state)
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets in-flight
/// requests finish for at most `grace`.
pub async fn run(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let signal = async move {
        shutdown.await;
        tracing::info!(grace_secs = grace.as_secs(), "shutting down: finishing in-flight requests");
        let _ = stopping_tx.send(());
    };
    let server = axum::serve(listener, app(state)).with_graceful_shutdown(signal);
    let deadline = async move {
        if stopping_rx.await.is_ok() {
            tokio::time::sleep(grace).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        result = server => result,
        _ = deadline => {
            tracing::warn!("grace period over; dropping the requests still in flight");
            Ok(())
        }
    }
}

async fn recommend(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<RecommendRequest>,
) -> Result<Json<RecommendResponse>, ApiError> {
    let started = Instant::now();
    let user_id = request.user.id.clone();
    let query = request.validate(&state.shared.limits)?;
    let service = state.service()?;
    let permit = state
        .shared
        .admission
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::overloaded("too many requests in flight (server.max_concurrent_requests)"))?;
    // The bundle is taken once: this request is scored by it and names it,
    // whatever is installed while it runs.
    let bundle = service.bundle();
    let model = model_info(&service, &bundle);
    // The forward pass is CPU-bound: it runs on the blocking pool, never on
    // a runtime worker. The permit lives as long as the work does, even if
    // the client is answered with a timeout first.
    let work = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        service.ranker().rank(&bundle, &query)
    });
    let timeout = state.shared.request_timeout;
    let items = match tokio::time::timeout(timeout, work).await {
        Err(_) => return Err(ApiError::timeout(timeout.as_secs())),
        Ok(Err(join_error)) => return Err(ApiError::internal(&join_error)),
        Ok(Ok(result)) => result?,
    };
    let took_ms = started.elapsed().as_secs_f64() * 1e3;
    tracing::debug!(user = user_id.as_deref().unwrap_or("-"), took_ms, "ranked");
    Ok(Json(RecommendResponse { items, model, took_ms }))
}

/// Liveness: the process answers, and its encoder thread has not died (a
/// dead encoder cannot recover, so an orchestrator should restart the
/// process). Still 200 while the models load.
async fn health(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    match state.shared.service.get() {
        Some(service) if !service.is_ready() => Err(ApiError::encoder_stopped()),
        _ => Ok(Json(serde_json::json!({"status": "ok"}))),
    }
}

/// Readiness: 200 once the models are loaded and one warm-up pass has run,
/// and for as long as the encoder thread lives.
async fn ready(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let service = state.service()?;
    let ModelInfo { encoder, precision, head } = model_info(&service, &service.bundle());
    Ok(Json(serde_json::json!({"status": "ready", "encoder": encoder, "precision": precision, "head": head})))
}

/// What a response says served it: the encoder and the bundle's version.
fn model_info(service: &Service, bundle: &Bundle) -> ModelInfo {
    let encoder = service.ranker().embedder().encoder();
    ModelInfo {
        encoder: encoder.name().to_string(),
        precision: encoder.precision().as_str().to_string(),
        head: bundle.version().to_string(),
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], state.shared.metrics.render())
}

/// Counts every request by matched route and status, times it, and counts
/// error answers by kind.
async fn record_metrics(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let started = Instant::now();
    let response = next.run(request).await;
    let metrics = &state.shared.metrics;
    metrics.http_duration.with_label_values(&[&route]).observe(started.elapsed().as_secs_f64());
    metrics.http_requests.with_label_values(&[&route, response.status().as_str()]).inc();
    if let Some(ErrorKind(kind)) = response.extensions().get::<ErrorKind>() {
        metrics.request_errors.with_label_values(&[kind]).inc();
    } else if response.status() == StatusCode::PAYLOAD_TOO_LARGE {
        metrics.request_errors.with_label_values(&["body_too_large"]).inc();
    }
    response
}
