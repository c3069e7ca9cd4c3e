//! The server loop and the socket side. [`serve`] is what `shoprank serve`
//! runs: it binds `server.addr`, builds the service in the background (so
//! `/health` answers and `/ready` says 503 meanwhile), polls the bundle
//! directory's `CURRENT` if `bundle.watch_secs` asks, and serves until
//! [`shutdown_signal`] (or the future it is given) resolves.
//!
//! [`run`] accepts connections and serves HTTP/1.1 on them with hyper, under
//! the limits axum's own `serve` has no settings for.
//!
//! - At most `server.max_connections` are open. One more evicts the
//!   connection idle the longest, one with no request in flight
//!   (`connections`; counted in `shoprank_http_evicted_connections_total`),
//!   so idle or slow-header connections cannot lock out new clients and
//!   probes; when every open one is busy, the new one is closed as it is
//!   accepted (`shoprank_http_refused_connections_total`).
//! - A connection must send a request's headers within
//!   `server.header_read_timeout_secs` of opening or of its previous
//!   response, else it is closed: this bounds slow-header clients and idle
//!   kept-alive connections alike.
//! - Headers are read into a buffer of at most [`MAX_HEAD_BYTES`]; the
//!   request middleware answers larger-than-allowed heads with JSON errors,
//!   and hyper itself answers (and closes) a connection whose head
//!   overflows the buffer or does not parse, with JSON bodies too
//!   (`parse_errors`).
//! - Only HTTP/1.1 (and 1.0) is served. Cleartext HTTP/2 is not: a
//!   load balancer or proxy in front can speak HTTP/2 to clients.
//!
//! On shutdown the listener closes, every connection is told to close once
//! its current response is out (idle ones close at once), and the server
//! waits for the requests being handled, up to `server.shutdown_grace_secs`;
//! connections with no request in flight (idle, or still sending headers)
//! never hold it up.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::connections::Registry;
use super::parse_errors::JsonParseErrors;
use super::{app, AppState};
use crate::config::{ServerSettings, Settings};
use crate::serve::metrics::Metrics;
use crate::serve::service::{Service, ServiceError};

/// The read buffer of a connection, which bounds a request's head (request
/// line and headers). hyper's own default is about 400 KB per connection.
pub(crate) const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Headers hyper parses before giving up (bare 431). The middleware refuses
/// requests with more than [`super::middleware::MAX_HEADERS`] with a JSON body.
const HYPER_MAX_HEADERS: usize = 256;

/// How long a connection that evicted an idle one waits for its slot (the
/// evicted one closes at once; this bounds a race with other arrivals).
const EVICTION_WAIT: Duration = Duration::from_millis(500);

/// How long shutdown waits, once no request is in flight, for the last
/// responses to be written and their connections closed.
const FLUSH_WAIT: Duration = Duration::from_millis(500);

/// The connection limits and timeouts, from `[server]`.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub shutdown_grace: Duration,
}

impl ConnectionLimits {
    pub fn from_settings(server: &ServerSettings) -> Self {
        Self {
            max_connections: server.max_connections,
            header_read_timeout: Duration::from_secs(server.header_read_timeout_secs),
            shutdown_grace: Duration::from_secs(server.shutdown_grace_secs),
        }
    }
}

/// Binds `settings.server.addr`, loads the service in the background, and
/// serves until `shutdown` resolves (then drains for `shutdown_grace_secs`).
pub async fn serve(
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServiceError> {
    let metrics = Metrics::new();
    let watch_secs = settings.bundle.watch_secs;
    let live_stats_secs = settings.bundle.live_stats_secs;
    let state = AppState::new(metrics.clone(), &settings);
    let addr = settings.server.addr;
    let limits = ConnectionLimits::from_settings(&settings.server);
    let listener = TcpListener::bind(addr).await.map_err(|source| ServiceError::Bind { addr, source })?;
    let bound = listener.local_addr()?;
    tracing::info!(addr = %bound, "listening; loading models");
    // The one line on standard output (logs go to standard error): with
    // port 0 the kernel picks the port, and a supervisor, a script or a test
    // harness reads it here. A closed standard output is no reason to stop.
    if let Err(error) = announce_address(bound) {
        tracing::warn!(%error, "cannot print the bound address on standard output");
    }

    // Load and warm up off the runtime; /ready turns 200 when done.
    let loading_state = state.clone();
    let loading = tokio::task::spawn_blocking(move || -> Result<(), ServiceError> {
        let started = Instant::now();
        loading_state.install(Arc::new(Service::build(&settings, metrics)?));
        tracing::info!(secs = started.elapsed().as_secs_f64(), "ready");
        Ok(())
    });
    let watched_state = state.clone();
    let server = run(listener, state, shutdown, limits);
    tokio::pin!(server);
    tokio::select! {
        loaded = loading => {
            loaded??;
            if watch_secs > 0 {
                tokio::spawn(watch_current(watched_state.clone(), Duration::from_secs(watch_secs)));
            }
            if live_stats_secs > 0 {
                tokio::spawn(refresh_live_stats(watched_state, Duration::from_secs(live_stats_secs)));
            }
            server.await?;
        }
        result = &mut server => result?,
    }
    Ok(())
}

/// Prints `listening on ADDR` on standard output and flushes it.
fn announce_address(addr: std::net::SocketAddr) -> std::io::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on {addr}")?;
    stdout.flush()
}

/// Every `every`, reloads the bundle if the versions directory's CURRENT
/// changed (`bundle.watch_secs`). Polling, not inotify: it works the same
/// on a network volume shared by replicas.
async fn watch_current(state: AppState, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(service) = state.service_if_loaded() else { continue };
        let _ = tokio::task::spawn_blocking(move || service.reload_if_current_changed()).await;
    }
}

/// Every `every`, serves the bundle with its statistics brought forward
/// from the stored purchases (`bundle.live_stats_secs`; `serve::live_stats`).
/// The first refresh runs at once. A failed refresh keeps the statistics
/// served and is logged; the next tick tries again.
async fn refresh_live_stats(state: AppState, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(service) = state.service_if_loaded() else { continue };
        match tokio::task::spawn_blocking(move || service.refresh_live_stats()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "refreshing the live statistics failed; the last ones serve"),
            Err(error) => tracing::error!(%error, "the live statistics refresh panicked; the last ones serve"),
        }
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// Serves `app(state)` on `listener` until `shutdown` resolves, then drains
/// (see the module docs).
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: ConnectionLimits,
) -> std::io::Result<()> {
    let router = app(state.clone());
    let metrics = state.metrics().clone();
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let registry = Arc::new(Registry::default());
    let stopping = tokio_util::sync::CancellationToken::new();
    let connections = TaskTracker::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors, most likely: back off a little
                    // rather than spin; the connections open now still work.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Full: the connection idle the longest gives way (see
        // `connections`); only when every one is busy is the new one refused.
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => Some(slot),
            Err(_) if registry.evict_idlest() => {
                metrics.evicted_connections.inc();
                None
            }
            Err(_) => {
                metrics.refused_connections.inc();
                drop(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (slots, registry, router) = (slots.clone(), registry.clone(), router.clone());
        let stopping = stopping.clone();
        let metrics = metrics.clone();
        connections.spawn(async move {
            let slot = match slot {
                Some(slot) => slot,
                // The evicted connection closes at once (it has nothing in
                // flight); its slot is this one's.
                None => match tokio::time::timeout(EVICTION_WAIT, slots.acquire_owned()).await {
                    Ok(Ok(slot)) => slot,
                    _ => {
                        metrics.refused_connections.inc();
                        return;
                    }
                },
            };
            let _slot = slot;
            let registered = registry.open();
            let connection = registered.connection().clone();
            let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
                let in_flight = connection.request();
                let answer = router.clone().oneshot(request.map(Body::new));
                async move {
                    let answer = answer.await;
                    drop(in_flight);
                    answer
                }
            });
            metrics.open_connections.inc();
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .max_buf_size(MAX_HEAD_BYTES)
                .max_headers(HYPER_MAX_HEADERS);
            let connection = http.serve_connection(TokioIo::new(JsonParseErrors::new(stream)), service);
            tokio::pin!(connection);
            let evicted = registered.connection().evicted().clone();
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = stopping.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
                () = evicted.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = result {
                tracing::debug!(%error, "connection closed with an error");
            }
            metrics.open_connections.dec();
        });
    }
    drop(listener);
    let in_flight = state.in_flight();
    tracing::info!(
        grace_secs = limits.shutdown_grace.as_secs(),
        in_flight,
        "shutting down: no new connections; finishing the requests in flight"
    );
    stopping.cancel();
    connections.close();
    if tokio::time::timeout(limits.shutdown_grace, state.all_answered()).await.is_err() {
        tracing::warn!(in_flight = state.in_flight(), "grace period over; dropping the requests still in flight");
        return Ok(());
    }
    // Every request is answered; give the last responses a moment to be
    // written before the connections are dropped.
    let _ = tokio::time::timeout(FLUSH_WAIT, connections.wait()).await;
    tracing::info!("every request in flight was answered");
    Ok(())
}
