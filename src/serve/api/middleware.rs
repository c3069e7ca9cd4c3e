//! What runs around every handler, outermost first:
//!
//! 1. [`record_metrics`]: counts each request by route and status, times it,
//!    counts error kinds, and tracks the requests in flight (shutdown waits
//!    for them). A request whose client went away before the answer (its
//!    future dropped) is counted with status `499` and kind `client_closed`.
//! 2. [`check_head`]: refuses, before any of the body is read, a declared
//!    `Content-Length` over `limits.max_body_bytes` (413), a target over
//!    [`MAX_URI_BYTES`] (414), and more than [`MAX_HEADERS`] headers or
//!    [`MAX_HEADER_BYTES`] of them (431), each with the usual JSON error.
//! 3. [`admit`] (on the routes that do work): a concurrency permit or an
//!    immediate 503, still before the body is read; then the body-read
//!    deadline, and the token that cancels the request's work when its
//!    future is dropped (timeout or client gone), releasing the permit at
//!    the same moment.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::{CONTENT_LENGTH, X_CONTENT_TYPE_OPTIONS};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::error::{ApiError, ErrorKind};
use super::AppState;

/// Longest request target (path and query) accepted, in bytes.
pub(crate) const MAX_URI_BYTES: usize = 8 * 1024;
/// Most request headers accepted.
pub(crate) const MAX_HEADERS: usize = 100;
/// Most bytes of header names and values accepted in all.
pub(crate) const MAX_HEADER_BYTES: usize = 16 * 1024;

/// The requests being handled now.
#[derive(Default)]
pub(crate) struct InFlight {
    count: AtomicUsize,
    drained: Notify,
}

impl InFlight {
    pub(crate) fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Resolves once no request is in flight.
    pub(crate) async fn all_answered(&self) {
        loop {
            let drained = self.drained.notified();
            if self.count() == 0 {
                return;
            }
            drained.await;
        }
    }

    fn enter(&self) -> Entered<'_> {
        self.count.fetch_add(1, Ordering::AcqRel);
        Entered(self)
    }
}

struct Entered<'a>(&'a InFlight);

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.drained.notify_waiters();
        }
    }
}

/// One request's accounting; if it is dropped unanswered, the client went
/// away first.
struct Outcome<'a> {
    state: &'a AppState,
    route: String,
    started: Instant,
    answered: bool,
}

impl Outcome<'_> {
    fn record(&mut self, status: StatusCode, kind: Option<ErrorKind>) {
        self.answered = true;
        let metrics = self.state.metrics();
        metrics.http_duration.with_label_values(&[&self.route]).observe(self.started.elapsed().as_secs_f64());
        metrics.http_requests.with_label_values(&[&self.route, status.as_str()]).inc();
        if let Some(kind) = kind {
            metrics.request_errors.with_label_values(&[kind.name()]).inc();
        }
    }
}

impl Drop for Outcome<'_> {
    fn drop(&mut self) {
        if !self.answered {
            // Status 499: nginx's convention for "client closed request".
            self.record(ErrorKind::ClientClosed.status(), Some(ErrorKind::ClientClosed));
        }
    }
}

/// Counts and times every request, and tracks those in flight.
pub(crate) async fn record_metrics(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let _in_flight = state.shared.in_flight.enter();
    let mut outcome = Outcome { state: &state, route, started: Instant::now(), answered: false };
    let mut response = next.run(request).await;
    outcome.record(response.status(), response.extensions().get::<ErrorKind>().copied());
    // Every answer says what it is: a browser must not guess a JSON error
    // quoting the request into something it would run.
    response.headers_mut().insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

/// Refuses oversized requests from their head alone.
pub(crate) async fn check_head(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let max_body = state.shared.limits.max_body_bytes;
    let declared = request.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    if declared.is_some_and(|length| length > max_body as u64) {
        return ApiError::body_too_large().into_response();
    }
    let uri_bytes = request.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if uri_bytes > MAX_URI_BYTES {
        return ApiError::uri_too_long(uri_bytes, MAX_URI_BYTES).into_response();
    }
    let headers = request.headers();
    let header_bytes: usize = headers.iter().map(|(name, value)| name.as_str().len() + value.len()).sum();
    if headers.len() > MAX_HEADERS || header_bytes > MAX_HEADER_BYTES {
        return ApiError::headers_too_large(headers.len(), header_bytes).into_response();
    }
    next.run(request).await
}

/// When a request's body must be in by, and the timeout that set it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyDeadline {
    pub at: Instant,
    pub timeout: std::time::Duration,
}

/// Cancelled when nobody waits for the request's answer any more.
#[derive(Debug, Clone)]
pub(crate) struct Abandon(pub CancellationToken);

/// Admission: a permit or 503, before anything else is spent on the request.
pub(crate) async fn admit(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let permit = match state.admit() {
        Ok(permit) => permit,
        Err(error) => return error.into_response(),
    };
    let cancel = CancellationToken::new();
    // Dropped when this future is: answered, timed out, or its client gone.
    let _cancel_on_drop = cancel.clone().drop_guard();
    let timeout = state.shared.body_read_timeout;
    request.extensions_mut().insert(BodyDeadline { at: Instant::now() + timeout, timeout });
    request.extensions_mut().insert(Abandon(cancel));
    let response = next.run(request).await;
    drop(permit);
    response
}
