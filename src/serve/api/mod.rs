//! The HTTP API (axum): `POST /recommend`, `PUT /v1/catalog/items`,
//! `GET`/`DELETE /v1/catalog/items/{id}`, `POST /v1/events`,
//! `POST /admin/reload` and `/admin/rollback` (`admin`), `GET /health`, `GET /ready`,
//! `GET /metrics`, and their OpenAPI document at `GET /openapi.json`
//! (`openapi`). A request's path is short and one-way: the head checks
//! and admission (a concurrency permit, or 503, before the body is read;
//! see `middleware`) → JSON extractor → validation → `Ranker::begin` on the
//! blocking pool (user text, the embed job queued) → the job awaited without
//! holding a thread → `Ranker::end` on the blocking pool with the bundle
//! serving now (retrieval, scoring, explanations) → JSON response. `server`
//! owns the server loop (`serve`) and the sockets.

pub mod admin;
pub mod error;
mod error_kind;
pub mod events;
pub mod json;
pub mod middleware;
pub mod openapi;
pub mod server;
pub mod types;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use tokio::sync::Semaphore;

use self::admin::{AdminToken, ReloadRequest, ReloadResponse};
use self::error::{ApiError, ErrorKind};
use self::events::{EventRules, EventsRequest, EventsResponse};
use self::json::ApiJson;
use self::middleware::{Abandon, InFlight};
use self::openapi::{
    AdminErrors, EventsErrors, HeadErrors, HealthErrors, ItemErrors, ReadyErrors, RecommendErrors, UpsertErrors,
};
use self::types::{
    CatalogItemOut, DeleteResponse, HealthResponse, ModelInfo, ReadyResponse, RecommendRequest, RecommendResponse,
    UpsertRequest, UpsertResponse,
};
use crate::config::{Limits, Settings};
use crate::model::bundle::Bundle;
use crate::serve::catalog::CatalogWriteError;
use crate::serve::embed::Ticket;
use crate::serve::events::SubmitError;
use crate::serve::metrics::Metrics;
use crate::serve::ranker::RankError;
use crate::serve::service::Service;

pub use self::server::{run, serve, shutdown_signal, ConnectionLimits};

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
    body_read_timeout: Duration,
    in_flight: InFlight,
    event_rules: EventRules,
    admin: AdminToken,
}

/// The catalog write limits the API enforces.
#[derive(Debug, Clone, Copy)]
struct CatalogLimits {
    max_upsert_items: usize,
    max_items: usize,
}

impl AppState {
    pub fn new(metrics: Metrics, settings: &Settings) -> Self {
        let (server, catalog, limits) = (&settings.server, &settings.catalog, settings.limits.clone());
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
                body_read_timeout: Duration::from_secs(server.body_read_timeout_secs),
                in_flight: InFlight::default(),
                event_rules: EventRules {
                    max_batch_events: settings.events.max_batch_events,
                    max_future_ms: settings.events.max_future_hours.saturating_mul(3_600_000).min(i64::MAX as u64)
                        as i64,
                },
                admin: AdminToken::new(&settings.admin.token),
            }),
        }
    }

    /// Makes the service ready (a built `Service` has warmed up).
    pub fn install(&self, service: Arc<Service>) {
        let _ = self.shared.service.set(service);
    }

    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Requests being handled now.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.count()
    }

    /// Resolves once no request is being handled.
    pub async fn all_answered(&self) {
        self.shared.in_flight.all_answered().await
    }

    /// The service once loaded, whatever its state.
    pub fn service_if_loaded(&self) -> Option<Arc<Service>> {
        self.shared.service.get().cloned()
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
        self.shared.admission.clone().try_acquire_owned().map_err(|_| {
            ApiError::new(ErrorKind::Overloaded, "too many requests in flight (server.max_concurrent_requests)")
        })
    }

    /// Runs blocking work on the blocking pool within the request timeout.
    /// The work gets a [`Ticket`] that turns abandoned when the timeout
    /// passes or the client goes away (`abandon`), so it stops then too.
    async fn blocking<T: Send + 'static>(
        &self,
        abandon: &Abandon,
        work: impl FnOnce(&Ticket) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let ticket = self.ticket(abandon);
        self.in_time(&ticket, self.on_blocking_pool(&ticket, work)).await
    }

    /// The ticket of a request whose time starts now.
    fn ticket(&self, abandon: &Abandon) -> Ticket {
        Ticket::new(abandon.0.clone(), Instant::now() + self.shared.request_timeout)
    }

    /// `work` on the blocking pool, skipped if the request was abandoned
    /// while it waited for a thread.
    async fn on_blocking_pool<T: Send + 'static>(
        &self,
        ticket: &Ticket,
        work: impl FnOnce(&Ticket) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let ticket = ticket.clone();
        let task = tokio::task::spawn_blocking(move || {
            if ticket.is_abandoned() {
                return Err(ApiError::abandoned());
            }
            work(&ticket)
        });
        task.await.map_err(|join_error| ApiError::internal(&join_error))?
    }

    /// `work` until the ticket's deadline; past it, the request is
    /// abandoned (its work withdrawn) and answered `timeout`.
    async fn in_time<T>(
        &self,
        ticket: &Ticket,
        work: impl std::future::Future<Output = Result<T, ApiError>>,
    ) -> Result<T, ApiError> {
        let deadline = ticket.deadline().expect("request tickets have a deadline");
        match tokio::time::timeout_at(deadline.into(), work).await {
            Ok(result) => result,
            Err(_) => {
                ticket.abandon();
                Err(ApiError::timeout(self.shared.request_timeout.as_secs()))
            }
        }
    }
}

/// The router, without a socket: tests call `app(state).oneshot(request)`.
pub fn app(state: AppState) -> Router {
    let body_limit = state.shared.limits.max_body_bytes;
    let work = Router::new()
        .route("/recommend", post(recommend))
        .route("/v1/catalog/items", put(upsert_items))
        .route("/v1/catalog/items/{id}", get(get_item).delete(delete_item))
        .route("/v1/events", post(post_events))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), middleware::admit));
    // The token is checked before a byte of the body is read.
    let admin = Router::new()
        .route("/admin/reload", post(reload))
        .route("/admin/rollback", post(rollback))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), admin_only));
    Router::new()
        .merge(work)
        .merge(admin)
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi_json))
        .fallback(|request: Request| async move { ApiError::not_found(request.uri().path()) })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(state.clone(), middleware::check_head))
        .layer(axum::middleware::from_fn_with_state(state.clone(), middleware::record_metrics))
        .with_state(state)
}

/// `POST /recommend`: ranks the request's candidates, or retrieves from the
/// catalog when it sends none.
#[utoipa::path(
    post,
    path = "/recommend",
    tag = "recommend",
    request_body = RecommendRequest,
    responses((status = 200, description = "The items, best first.", body = RecommendResponse), RecommendErrors)
)]
async fn recommend(
    State(state): State<AppState>,
    Extension(abandon): Extension<Abandon>,
    ApiJson(request): ApiJson<RecommendRequest>,
) -> Result<Json<RecommendResponse>, ApiError> {
    let started = Instant::now();
    let user_id = request.user.id.clone();
    let query = request.validate(&state.shared.limits)?;
    let service = state.service()?;
    // The variant and its bundle are taken once: this request is scored by
    // that bundle and names it, whatever is installed while it runs.
    let (variant, bundle) = service.choose(user_id.as_deref());
    let variant = variant.name.clone();
    state.shared.metrics.variant_requests.with_label_values(&[&variant]).inc();
    let model = model_info(&service, &bundle);
    // The CPU work runs on the blocking pool, never on a runtime worker; the
    // wait for the encoder between its two halves holds no thread at all.
    let ticket = state.ticket(&abandon);
    let ranking = async {
        let ranker = service.clone();
        let (begun, job) =
            state.on_blocking_pool(&ticket, move |ticket| Ok(ranker.ranker().begin(query, ticket)?)).await?;
        let embedded = job.wait(&ticket).await.map_err(RankError::from)?;
        state
            .on_blocking_pool(&ticket, move |ticket| {
                Ok(service.ranker().end(&bundle, begun, embedded, service.catalog(), ticket)?)
            })
            .await
    };
    let items = state.in_time(&ticket, ranking).await?;
    let took_ms = started.elapsed().as_secs_f64() * 1e3;
    let request_id = crate::serve::variants::request_id(&variant);
    tracing::debug!(user = user_id.as_deref().unwrap_or("-"), request_id, took_ms, "ranked");
    Ok(Json(RecommendResponse { items, model, variant, request_id, took_ms }))
}

/// `PUT /v1/catalog/items`: upserts a batch, durably, before answering.
#[utoipa::path(
    put,
    path = "/v1/catalog/items",
    tag = "catalog",
    request_body = UpsertRequest,
    responses((status = 200, description = "The items are stored.", body = UpsertResponse), UpsertErrors)
)]
async fn upsert_items(
    State(state): State<AppState>,
    Extension(abandon): Extension<Abandon>,
    ApiJson(request): ApiJson<UpsertRequest>,
) -> Result<Json<UpsertResponse>, ApiError> {
    let limits = state.shared.catalog_limits;
    let items = request.validate(limits.max_upsert_items)?;
    let service = state.service()?;
    state
        .blocking(&abandon, move |_| {
            let catalog = service.catalog().ok_or_else(ApiError::no_catalog)?;
            catalog.upsert(&items, limits.max_items).map_err(|e| match e {
                full @ CatalogWriteError::Full { .. } => ApiError::new(ErrorKind::CatalogFull, full.to_string()),
                CatalogWriteError::Store(e) => ApiError::store_unavailable(&e),
            })?;
            let (items_now, embedded) = catalog.index().counts();
            Ok(Json(UpsertResponse {
                upserted: items.len(),
                catalog_items: items_now,
                pending_embeddings: items_now - embedded,
            }))
        })
        .await
}

/// `GET /v1/catalog/items/{id}`.
#[utoipa::path(
    get,
    path = "/v1/catalog/items/{id}",
    tag = "catalog",
    params(("id" = String, Path, description = "The item's id.")),
    responses((status = 200, description = "The item as stored.", body = CatalogItemOut), ItemErrors)
)]
async fn get_item(
    State(state): State<AppState>,
    Extension(abandon): Extension<Abandon>,
    Path(id): Path<String>,
) -> Result<Json<CatalogItemOut>, ApiError> {
    let service = state.service()?;
    // The index's lock may wait for a scan: off the runtime's workers.
    state
        .blocking(&abandon, move |_| {
            let catalog = service.catalog().ok_or_else(ApiError::no_catalog)?;
            let view = catalog.index().read();
            let (item, vector) = view.get(&id).ok_or_else(|| ApiError::item_not_found(&id))?;
            Ok(Json(CatalogItemOut { item: item.clone(), embedded: vector.is_some() }))
        })
        .await
}

/// `DELETE /v1/catalog/items/{id}`: durable before answering.
#[utoipa::path(
    delete,
    path = "/v1/catalog/items/{id}",
    tag = "catalog",
    params(("id" = String, Path, description = "The item's id.")),
    responses((status = 200, description = "The item is deleted.", body = DeleteResponse), ItemErrors)
)]
async fn delete_item(
    State(state): State<AppState>,
    Extension(abandon): Extension<Abandon>,
    Path(id): Path<String>,
) -> Result<Json<DeleteResponse>, ApiError> {
    let service = state.service()?;
    state
        .blocking(&abandon, move |_| {
            let catalog = service.catalog().ok_or_else(ApiError::no_catalog)?;
            match catalog.delete(&id) {
                Ok(true) => Ok(Json(DeleteResponse { deleted: id })),
                Ok(false) => Err(ApiError::item_not_found(&id)),
                Err(e) => Err(ApiError::store_unavailable(&e)),
            }
        })
        .await
}

/// `POST /v1/events`: stores a batch of feedback events durably before
/// answering; a retried event (same `event_id`) is stored once.
#[utoipa::path(
    post,
    path = "/v1/events",
    tag = "events",
    request_body = EventsRequest,
    responses((status = 200, description = "Every event is durably stored.", body = EventsResponse), EventsErrors)
)]
async fn post_events(
    State(state): State<AppState>,
    Extension(abandon): Extension<Abandon>,
    ApiJson(request): ApiJson<EventsRequest>,
) -> Result<Json<EventsResponse>, ApiError> {
    let service = state.service()?;
    let events = request.validate(state.shared.event_rules, crate::store::now_ms(), service.variants())?;
    let writer = service.events().ok_or_else(|| ApiError::internal(&"this service keeps no store"))?;
    let received = events.len();
    let committed = writer.submit(events).map_err(|e| match e {
        full @ SubmitError::Full { .. } => ApiError::new(ErrorKind::Overloaded, full.to_string()),
        stopped @ SubmitError::Stopped => ApiError::store_unavailable(&stopped),
    })?;
    let ticket = state.ticket(&abandon);
    let committed = state
        .in_time(&ticket, async {
            committed.await.map_err(|_| ApiError::store_unavailable(&"the event writer stopped"))
        })
        .await?;
    let new = committed.map_err(|e| ApiError::store_unavailable(&e))?;
    // Counted in the metrics by the writer, request gone or not.
    let stored = new.iter().filter(|new| **new).count();
    Ok(Json(EventsResponse { received, stored, duplicates: received - stored }))
}

/// The admin routes' guard: the bearer token, or 401/403 before the body.
async fn admin_only(
    State(state): State<AppState>,
    headers: HeaderMap,
    request: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    match state.shared.admin.check(&headers) {
        Ok(()) => next.run(request).await,
        Err(error) => error.into_response(),
    }
}

/// `POST /admin/reload`: loads, warms up and installs a bundle; the old
/// one serves until the swap, and keeps serving if the new one is refused.
#[utoipa::path(
    post,
    path = "/admin/reload",
    tag = "admin",
    request_body(content = Option<ReloadRequest>, description = "Optional: `{\"version\": ...}`."),
    responses((status = 200, description = "The bundle serving now.", body = ReloadResponse), AdminErrors),
    security(("bearer" = []))
)]
async fn reload(State(state): State<AppState>, body: axum::body::Bytes) -> Result<Json<ReloadResponse>, ApiError> {
    let request: ReloadRequest =
        if body.iter().all(u8::is_ascii_whitespace) { ReloadRequest::default() } else { json::parse(&body)? };
    let service = state.service()?;
    let reloaded = tokio::task::spawn_blocking(move || service.reload(request.version.as_deref()))
        .await
        .map_err(|e| ApiError::internal(&e))?;
    Ok(Json(reloaded.map_err(admin::refused)?.into()))
}

/// `POST /admin/rollback`: back to the bundle served before this one.
#[utoipa::path(
    post,
    path = "/admin/rollback",
    tag = "admin",
    responses((status = 200, description = "The bundle serving now.", body = ReloadResponse), AdminErrors),
    security(("bearer" = []))
)]
async fn rollback(State(state): State<AppState>) -> Result<Json<ReloadResponse>, ApiError> {
    let service = state.service()?;
    // It may wait for a reload in progress: off the runtime's workers.
    let rolled_back =
        tokio::task::spawn_blocking(move || service.rollback()).await.map_err(|e| ApiError::internal(&e))?;
    Ok(Json(rolled_back.map_err(admin::refused)?.into()))
}

/// Liveness: the process answers, and its encoder thread has not died (a
/// dead encoder cannot recover, so an orchestrator should restart the
/// process). Still 200 while the models load.
#[utoipa::path(
    get,
    path = "/health",
    tag = "operations",
    responses((status = 200, description = "The process is alive.", body = HealthResponse), HealthErrors)
)]
async fn health(State(state): State<AppState>) -> Result<Json<HealthResponse>, ApiError> {
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
async fn ready(State(state): State<AppState>) -> Result<Json<ReadyResponse>, ApiError> {
    let service = state.service()?;
    Ok(Json(ReadyResponse { status: "ready".into(), model: model_info(&service, &service.bundle()) }))
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

/// `GET /metrics`: every metric, in Prometheus' text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "The metrics.", body = String, content_type = "text/plain; version=0.0.4"),
        HeadErrors
    )
)]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], state.shared.metrics.render())
}

/// `GET /openapi.json`: this document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document.", body = Object), HeadErrors)
)]
async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(openapi::document())
}
