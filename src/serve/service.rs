//! Building and running the service. [`Service::build`] is the one
//! constructor `main`, the integration tests and the benches use: it loads
//! the encoder and the bundle named by the settings, starts the encoder
//! thread, and warms up. [`serve`] binds the socket, loads in the background
//! (so `/health` answers and `/ready` says 503 meanwhile), and serves until a
//! shutdown signal.
//!
//! The long-lived machinery (encoder, its thread, the embedding cache) lives
//! in the [`Ranker`]; the bundle sits beside it behind one atomic pointer, so
//! installing another bundle is a swap, not a restart. The [`Catalog`] (its
//! store, in-memory index and ingestion thread) is opened with them.

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;

use crate::config::Settings;
use crate::model::bundle::{Bundle, BundleError};
use crate::model::encoder::{Encoder, EncoderError};
use crate::serve::api::{self, AppState};
use crate::serve::batcher::Embedder;
use crate::serve::catalog::store::CatalogStoreError;
use crate::serve::catalog::Catalog;
use crate::serve::metrics::Metrics;
use crate::serve::ranker::{RankError, Ranker};
use crate::serve::retrieve::RetrievalLimits;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("loading the encoder: {0}")]
    Encoder(#[from] EncoderError),
    #[error("loading the model bundle: {0}")]
    Bundle(#[from] BundleError),
    #[error("the warm-up request with the bundle in {path} failed: {source}")]
    WarmUp { path: PathBuf, source: Box<RankError> },
    #[error(
        "the bundle in {path} was trained on encoder `{bundle_encoder}` but the service runs `{encoder}`: \
         retrain it for this encoder"
    )]
    EncoderMismatch { path: PathBuf, bundle_encoder: String, encoder: String },
    #[error("opening the catalog: {0}")]
    Catalog(#[from] CatalogStoreError),
    #[error("binding {addr}: {source}")]
    Bind { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("serving: {0}")]
    Io(#[from] std::io::Error),
    #[error("the loading task failed: {0}")]
    Loading(#[from] tokio::task::JoinError),
}

/// A loaded, warmed-up service: the ranker, the bundle it serves, and the catalog.
pub struct Service {
    ranker: Ranker,
    catalog: Option<Catalog>,
    bundle: ArcSwap<Bundle>,
    /// One install at a time, so the bundle and `shoprank_model_info` change together.
    installing: Mutex<()>,
    metrics: Metrics,
}

impl Service {
    /// Loads everything `settings` names and warms up.
    pub fn build(settings: &Settings, metrics: Metrics) -> Result<Self, ServiceError> {
        Self::with_encoder(settings, Arc::new(Encoder::open(&settings.encoder)?), metrics)
    }

    /// As [`Service::build`], with an encoder already loaded (tests share one).
    pub fn with_encoder(settings: &Settings, encoder: Arc<Encoder>, metrics: Metrics) -> Result<Self, ServiceError> {
        let started = Instant::now();
        let bundle = Bundle::load(&settings.bundle.path, &encoder.identity())?;
        tracing::info!(
            bundle = bundle.version(),
            path = %settings.bundle.path.display(),
            secs = started.elapsed().as_secs_f64(),
            "bundle loaded"
        );
        let embedder =
            Arc::new(Embedder::new(encoder, settings.batching.clone(), settings.cache.max_bytes, metrics.clone()));
        let catalog = Catalog::open(&settings.catalog, embedder.clone(), metrics.clone())?;
        let retrieval = RetrievalLimits::from_settings(&settings.catalog);
        let banding = settings.search.banding();
        let ranker = Ranker::new(embedder, settings.user_text, retrieval, banding, metrics.clone());
        let service = Self::new(ranker, bundle, metrics)?;
        Ok(service.with_catalog(catalog))
    }

    /// A service over an already built ranker (tests inject failing parts
    /// this way). Warms up with `bundle` before serving it.
    pub fn new(ranker: Ranker, bundle: Bundle, metrics: Metrics) -> Result<Self, ServiceError> {
        check(&ranker, &bundle)?;
        let service =
            Self { ranker, catalog: None, bundle: ArcSwap::from_pointee(bundle), installing: Mutex::new(()), metrics };
        service.publish_model_info();
        Ok(service)
    }

    /// This service with a catalog to retrieve from.
    pub fn with_catalog(mut self, catalog: Catalog) -> Self {
        self.catalog = Some(catalog);
        self
    }

    pub fn ranker(&self) -> &Ranker {
        &self.ranker
    }

    pub fn catalog(&self) -> Option<&Catalog> {
        self.catalog.as_ref()
    }

    /// The bundle serving now. A request takes it once and keeps it to the
    /// end, whatever is installed meanwhile.
    pub fn bundle(&self) -> Arc<Bundle> {
        self.bundle.load_full()
    }

    /// Warms `bundle` up and, if its scores are sound, makes it the one that
    /// serves; requests already running finish on the old one. A bundle that
    /// fails its warm-up is refused and the old one keeps serving.
    pub fn install(&self, bundle: Bundle) -> Result<Arc<Bundle>, ServiceError> {
        check(&self.ranker, &bundle)?;
        let _one_at_a_time = self.installing.lock().unwrap_or_else(|p| p.into_inner());
        let previous = self.bundle.swap(Arc::new(bundle));
        self.publish_model_info();
        tracing::info!(from = previous.version(), to = self.bundle.load().version(), "bundle installed");
        Ok(previous)
    }

    /// Ready while the encoder thread lives.
    pub fn is_ready(&self) -> bool {
        self.ranker.embedder().is_alive()
    }

    /// `shoprank_model_info` names exactly the bundle now serving.
    fn publish_model_info(&self) {
        let encoder = self.ranker.embedder().encoder();
        let info = &self.metrics.model_info;
        info.reset();
        info.with_label_values(&[encoder.name(), encoder.precision().as_str(), self.bundle.load().version()]).set(1);
    }
}

/// What every bundle passes before it serves: it was trained on this
/// service's encoder, and a warm-up request through it scores a probability.
fn check(ranker: &Ranker, bundle: &Bundle) -> Result<(), ServiceError> {
    let encoder = ranker.embedder().encoder().identity();
    let trained_on = &bundle.manifest().head.encoder;
    if *trained_on != encoder {
        return Err(ServiceError::EncoderMismatch {
            path: bundle.dir().to_path_buf(),
            bundle_encoder: format!("{} ({}-d)", trained_on.name, trained_on.dim),
            encoder: format!("{} ({}-d)", encoder.name, encoder.dim),
        });
    }
    ranker
        .warm_up(bundle)
        .map_err(|source| ServiceError::WarmUp { path: bundle.dir().to_path_buf(), source: Box::new(source) })
}

/// Binds `settings.server.addr`, loads the service in the background, and
/// serves until `shutdown` resolves (then drains for `shutdown_grace_secs`).
pub async fn serve(
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServiceError> {
    let metrics = Metrics::new();
    let state = AppState::new(metrics.clone(), settings.limits.clone(), &settings.server, &settings.catalog);
    let addr = settings.server.addr;
    let limits = api::ConnectionLimits::from_settings(&settings.server);
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| ServiceError::Bind { addr, source })?;
    tracing::info!(addr = %listener.local_addr()?, "listening; loading models");

    // Load and warm up off the runtime; /ready turns 200 when done.
    let loading_state = state.clone();
    let loading = tokio::task::spawn_blocking(move || -> Result<(), ServiceError> {
        let started = Instant::now();
        loading_state.install(Arc::new(Service::build(&settings, metrics)?));
        tracing::info!(secs = started.elapsed().as_secs_f64(), "ready");
        Ok(())
    });
    let server = api::run(listener, state, shutdown, limits);
    tokio::pin!(server);
    tokio::select! {
        loaded = loading => {
            loaded??;
            server.await?;
        }
        result = &mut server => result?,
    }
    Ok(())
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
