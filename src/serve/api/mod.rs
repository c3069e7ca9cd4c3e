//! The HTTP API (axum), a file per resource: `POST /recommend`
//! (`recommend`), `PUT /v1/catalog/items` and `GET`/`DELETE
//! /v1/catalog/items/{id}` (`catalog`), `POST /v1/events` (`events`),
//! `POST /admin/reload` and `/admin/rollback` (`admin`), `DELETE
//! /v1/users/{id}` (`users`, a shopper's erasure), `GET /v1/model` (`model`:
//! the bundle's training record and the A/B variants), and `GET /health`,
//! `GET /ready`, `GET /metrics` and the OpenAPI document at `GET
//! /openapi.json` (`probes`; the document is built in `openapi`). The
//! browsing page, `GET /v1/catalog/items`, is in `catalog`. [`app`] also
//! mounts the console (`crate::serve::console`: `GET /console` and its
//! assets), a page for people that calls only the routes above. The wire
//! types are here too, and only here (`types`, `ranked` for the ranked
//! items, `events`' event kind): the ranker, the model and the store have no
//! serde names or OpenAPI schemas; their results are converted at this edge.
//! This module holds what the routes share: [`AppState`], the blocking-pool
//! helpers, and [`app`], which assembles the routes.
//!
//! A request's path is short and one-way: the head checks and admission (a
//! concurrency permit, or 503, before the body is read; see `middleware`) →
//! JSON extractor → validation → `Ranker::begin` on the
//! blocking pool (user text, the embed job queued) → the job awaited without
//! holding a thread → `Ranker::end` on the blocking pool with the bundle
//! serving now (retrieval, scoring, explanations) → JSON response. `server`
//! owns the server loop (`serve`) and the sockets.

pub(crate) mod admin;
mod catalog;
pub(crate) mod catalog_types;
mod connections;
pub(crate) mod error;
mod error_kind;
pub(crate) mod events;
pub(crate) mod json;
pub(crate) mod middleware;
mod model;
pub(crate) mod openapi;
mod overload_lane;
mod parse_errors;
mod probes;
mod ranked;
mod recommend;
pub(crate) mod server;
pub(crate) mod types;
mod users;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, Request};
use axum::routing::{delete, get, post, put};
use axum::Router;
use tokio::sync::Semaphore;

use self::admin::{admin_only, reload, rollback, AdminToken};
use self::catalog::{delete_item, get_item, list_items, upsert_items};
use self::error::{ApiError, ErrorKind};
use self::events::{post_events, EventRules};
use self::middleware::{Abandon, InFlight};
use self::model::get_model;
use self::overload_lane::OverloadLane;
use self::probes::{health, metrics, openapi_json, ready};
use self::recommend::recommend;
use self::users::erase_user;
use crate::config::{Limits, Settings};
use crate::serve::console;
use crate::serve::embed::Ticket;
use crate::serve::metrics::Metrics;
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
    overload_lane: OverloadLane,
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
                overload_lane: OverloadLane::start(),
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
    pub(crate) async fn all_answered(&self) {
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
        let task = tokio::task::spawn_blocking(unless_abandoned(ticket, work));
        task.await.map_err(|join_error| ApiError::internal(&join_error))?
    }

    /// As [`AppState::on_blocking_pool`], on the overload lane: for the
    /// answers to requests the encoder refused at admission (see
    /// `overload_lane`); on the blocking pool after all if the lane has not
    /// started it by `fall_back_at`.
    async fn on_overload_lane<T: Send + 'static>(
        &self,
        ticket: &Ticket,
        fall_back_at: Instant,
        work: impl FnOnce(&Ticket) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let answer = self.shared.overload_lane.run(unless_abandoned(ticket, work), fall_back_at);
        answer.await.unwrap_or_else(|| Err(ApiError::internal(&"the overload lane gave no answer")))
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

/// `work` as a job for another thread, which skips it if the request was
/// abandoned while the job waited for that thread.
fn unless_abandoned<T>(
    ticket: &Ticket,
    work: impl FnOnce(&Ticket) -> Result<T, ApiError>,
) -> impl FnOnce() -> Result<T, ApiError> {
    let ticket = ticket.clone();
    move || {
        if ticket.is_abandoned() {
            return Err(ApiError::abandoned());
        }
        work(&ticket)
    }
}

/// The router, without a socket: tests call `app(state).oneshot(request)`.
pub fn app(state: AppState) -> Router {
    let body_limit = state.shared.limits.max_body_bytes;
    let work = Router::new()
        .route("/recommend", post(recommend))
        .route("/v1/catalog/items", put(upsert_items).get(list_items))
        .route("/v1/catalog/items/{id}", get(get_item).delete(delete_item))
        .route("/v1/events", post(post_events))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), middleware::admit));
    // The token is checked before a byte of the body is read. A shopper's
    // erasure is an admin route too: whoever can erase can learn, from the
    // count, whether the store held the shopper.
    let admin = Router::new()
        .route("/admin/reload", post(reload))
        .route("/admin/rollback", post(rollback))
        .route("/v1/users/{id}", delete(erase_user))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), admin_only));
    Router::new()
        .merge(work)
        .merge(admin)
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/v1/model", get(get_model))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi_json))
        // The console: static pages, no state, no admission (a page must
        // load even when the API is saturated, to show why).
        .merge(console::routes())
        .fallback(|request: Request| async move { ApiError::not_found(request.uri().path()) })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(state.clone(), middleware::check_head))
        .layer(axum::middleware::from_fn_with_state(state.clone(), middleware::record_metrics))
        .with_state(state)
}
