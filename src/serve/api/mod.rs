//! The HTTP API (axum): `POST /recommend`, `PUT /v1/catalog/items`,
//! `GET`/`DELETE /v1/catalog/items/{id}`, `GET /health`, `GET /ready`,
//! `GET /metrics`. A request's path is short and one-way: JSON extractor →
//! validation → admission (a concurrency permit, or 503) → the blocking pool
//! → `Ranker::rank` with the bundle serving now (or the catalog's store) →
//! JSON response.

pub mod error;
pub mod json;
pub mod types;

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use tokio::sync::Semaphore;

use self::error::{ApiError, ErrorKind};
use self::json::ApiJson;
use self::types::{CatalogItemOut, ModelInfo, RecommendRequest, RecommendResponse, UpsertRequest};
use crate::config::{CatalogSettings, Limits, ServerSettings};
use crate::model::bundle::Bundle;
use crate::serve::catalog::CatalogWriteError;
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
    catalog_limits: CatalogLimits,
    admission: Arc<Semaphore>,
    request_timeout: Duration,
}

/// The catalog write limits the API enforces.
#[derive(Debug, Clone, Copy)]
struct CatalogLimits {
    max_upsert_items: usize,
    max_items: usize,
}

impl AppState {
    pub fn new(metrics: Metrics, limits: Limits, server: &ServerSettings, catalog: &CatalogSettings) -> Self {
        Self {
            shared: Arc::new(Shared {
                service: OnceLock::new(),
                metrics,
                limits,
                catalog_limits: CatalogLimits {
                    max_upsert_items: catalog.max_upsert_items,
                    max_items: catalog.max_items,
                },
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

    /// A concurrency permit, or 503.
    fn admit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
        self.shared
            .admission
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::overloaded("too many requests in flight (server.max_concurrent_requests)"))
    }

    /// Runs blocking work on the blocking pool under a permit and the
    /// request timeout. The permit lives as long as the work does, even if
    /// the client is answered with a timeout first.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let permit = self.admit()?;
        let task = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        });
        let timeout = self.shared.request_timeout;
        match tokio::time::timeout(timeout, task).await {
            Err(_) => Err(ApiError::timeout(timeout.as_secs())),
            Ok(Err(join_error)) => Err(ApiError::internal(&join_error)),
            Ok(Ok(result)) => result,
        }
    }
}

/// The router, without a socket: tests call `app(state).oneshot(request)`.
pub fn app(state: AppState) -> Router {
    let body_limit = state.shared.limits.max_body_bytes;
    Router::new()
        .route("/recommend", post(recommend))
        .route("/v1/catalog/items", put(upsert_items))
        .route("/v1/catalog/items/{id}", get(get_item).delete(delete_item))
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
    // The bundle is taken once: this request is scored by it and names it,
    // whatever is installed while it runs.
    let bundle = service.bundle();
    let model = model_info(&service, &bundle);
    // The forward pass is CPU-bound: it runs on the blocking pool, never on
    // a runtime worker.
    let items = state.blocking(move || Ok(service.ranker().rank(&bundle, &query, service.catalog())?)).await?;
    let took_ms = started.elapsed().as_secs_f64() * 1e3;
    tracing::debug!(user = user_id.as_deref().unwrap_or("-"), took_ms, "ranked");
    Ok(Json(RecommendResponse { items, model, took_ms }))
}

/// `PUT /v1/catalog/items`: upserts a batch, durably, before answering.
async fn upsert_items(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<UpsertRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let limits = state.shared.catalog_limits;
    let items = request.validate(limits.max_upsert_items)?;
    let service = state.service()?;
    state
        .blocking(move || {
            let catalog = service.catalog().ok_or_else(ApiError::no_catalog)?;
            catalog.upsert(&items, limits.max_items).map_err(|e| match e {
                full @ CatalogWriteError::Full { .. } => ApiError::invalid("catalog_full", full.to_string()),
                CatalogWriteError::Store(e) => ApiError::internal(&e),
            })?;
            let (items_now, embedded) = catalog.index().counts();
            Ok(Json(serde_json::json!({
                "upserted": items.len(),
                "catalog_items": items_now,
                "pending_embeddings": items_now - embedded,
            })))
        })
        .await
}

/// `GET /v1/catalog/items/{id}`.
async fn get_item(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<CatalogItemOut>, ApiError> {
    let service = state.service()?;
    // The index's lock may wait for a scan: off the runtime's workers.
    state
        .blocking(move || {
            let catalog = service.catalog().ok_or_else(ApiError::no_catalog)?;
            let view = catalog.index().read();
            let (item, vector) = view.get(&id).ok_or_else(|| ApiError::item_not_found(&id))?;
            Ok(Json(CatalogItemOut { item: item.clone(), embedded: vector.is_some() }))
        })
        .await
}

/// `DELETE /v1/catalog/items/{id}`: durable before answering.
async fn delete_item(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let service = state.service()?;
    state
        .blocking(move || {
            let catalog = service.catalog().ok_or_else(ApiError::no_catalog)?;
            match catalog.delete(&id) {
                Ok(true) => Ok(Json(serde_json::json!({"deleted": id}))),
                Ok(false) => Err(ApiError::item_not_found(&id)),
                Err(e) => Err(ApiError::internal(&e)),
            }
        })
        .await
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
