//! Building the service. [`Service::build`] is the one constructor `main`
//! (through `api::server::serve`), the integration tests and the benches use:
//! it loads the encoder and the bundle named by the settings, starts the
//! encoder thread, and warms up. The HTTP side sits above this module and
//! calls it; this module never calls the HTTP side.
//!
//! The long-lived machinery (encoder, its thread, the embedding cache) lives
//! in the [`Ranker`]; the bundle sits beside it behind one atomic pointer, so
//! installing another bundle is a swap, not a restart ([`Service::reload`],
//! [`Service::rollback`]). The store is opened with them; the [`Catalog`]
//! (in-memory index and ingestion thread) and the [`EventWriter`] work on it.
//! A/B [`Variants`] choose, per user, between the current bundle and fixed
//! versions.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;

use crate::config::Settings;
use crate::model::bundle::{Bundle, BundleError};
use crate::model::encoder::{Encoder, EncoderError};
use crate::model::versions::{BundleSource, VersionsError};
use crate::serve::catalog::Catalog;
use crate::serve::embed::Embedder;
use crate::serve::event_writer::EventWriter;
use crate::serve::metrics::Metrics;
use crate::serve::ranker::{RankError, Ranker};
use crate::serve::variants::{Served, Variant, Variants};
use crate::store::{PoolLimits, Store, StoreError};

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
    #[error("opening the store: {0}")]
    Store(#[from] StoreError),
    #[error("finding the bundle: {0}")]
    Versions(#[from] VersionsError),
    #[error("nothing to roll back to: no earlier bundle was served since start-up")]
    NoEarlierBundle,
    #[error("binding {addr}: {source}")]
    Bind { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("serving: {0}")]
    Io(#[from] std::io::Error),
    #[error("the loading task failed: {0}")]
    Loading(#[from] tokio::task::JoinError),
}

/// Bundles served before the current one, kept for rollbacks.
const ROLLBACK_DEPTH: usize = 4;

/// A loaded, warmed-up service: the ranker, the bundles it serves, the
/// store and what works on it.
pub struct Service {
    ranker: Ranker,
    catalog: Option<Catalog>,
    events: Option<EventWriter>,
    store: Option<Arc<dyn Store>>,
    bundle: ArcSwap<Bundle>,
    source: BundleSource,
    /// Earlier bundles, most recent last.
    earlier: Mutex<Vec<Arc<Bundle>>>,
    /// What the versions directory's CURRENT said when last acted on.
    seen_current: Mutex<Option<String>>,
    variants: Variants,
    /// One bundle change (install, reload, rollback) at a time, from
    /// resolving what to load to publishing `shoprank_model_info`: two
    /// reloads never cross, and a rollback is never undone by a reload that
    /// started before it.
    changing: Mutex<()>,
    metrics: Metrics,
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reloaded {
    Installed {
        from: String,
        to: String,
    },
    /// The bundle asked for is already serving.
    Unchanged {
        version: String,
    },
}

impl Service {
    /// Loads everything `settings` names and warms up.
    pub fn build(settings: &Settings, metrics: Metrics) -> Result<Self, ServiceError> {
        Self::with_encoder(settings, Arc::new(Encoder::open(&settings.encoder)?), metrics)
    }

    /// As [`Service::build`], with an encoder already loaded (tests share one).
    pub fn with_encoder(settings: &Settings, encoder: Arc<Encoder>, metrics: Metrics) -> Result<Self, ServiceError> {
        let started = Instant::now();
        let source = BundleSource::at(&settings.bundle.path);
        let (dir, current) = source.current()?;
        let bundle = Bundle::load(&dir, &encoder.identity(), encoder.precision())?;
        tracing::info!(
            bundle = bundle.version(),
            path = %dir.display(),
            secs = started.elapsed().as_secs_f64(),
            "bundle loaded"
        );
        if bundle.calibration().is_none() {
            tracing::warn!(
                bundle = bundle.version(),
                "the bundle has no calibration: scores rank items but are not purchase probabilities (see /ready)"
            );
        }
        let embedder =
            Arc::new(Embedder::new(encoder, settings.batching.clone(), settings.cache.max_bytes, metrics.clone()));
        let store = crate::store::open(&settings.store.location(), PoolLimits::from_settings(&settings.store))?;
        // The inverted file and the lexical index live beside an embedded
        // store; with PostgreSQL in `catalog.index_dir`, or nowhere (each
        // replica builds them at start-up).
        let saved_in = match settings.store.location() {
            crate::config::StoreLocation::Embedded(dir) => Some(dir),
            crate::config::StoreLocation::Postgres(_) => settings.catalog.index_dir.clone(),
        };
        if let Some(dir) = &saved_in {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Io { path: dir.clone(), source })?;
        }
        let catalog =
            Catalog::with_store(store.clone(), &settings.catalog, saved_in, embedder.clone(), metrics.clone())?;
        let events = EventWriter::start(store.clone(), settings.events, metrics.clone())
            .map_err(|source| StoreError::Io { path: "the event writer thread".into(), source })?;
        let ranker = Ranker::new(embedder, settings, metrics.clone());
        let mut service = Self::new(ranker, bundle, metrics)?;
        service.source = source.clone();
        *service.seen_current.get_mut().unwrap_or_else(|p| p.into_inner()) = current;
        service.variants = Variants::from_settings(&settings.ab.variants, |version| {
            let encoder = service.ranker.embedder().encoder();
            let bundle = Bundle::load(&source.version(version)?, &encoder.identity(), encoder.precision())?;
            check(&service.ranker, &bundle)?;
            Ok::<_, ServiceError>(Arc::new(bundle))
        })?;
        service.publish_model_info();
        service.catalog = Some(catalog);
        service.events = Some(events);
        service.store = Some(store);
        Ok(service)
    }

    /// A service over an already built ranker (tests inject failing parts
    /// this way), with no store. Warms up with `bundle` before serving it.
    pub fn new(ranker: Ranker, bundle: Bundle, metrics: Metrics) -> Result<Self, ServiceError> {
        check(&ranker, &bundle)?;
        let source = BundleSource::Single(bundle.dir().to_path_buf());
        let service = Self {
            ranker,
            catalog: None,
            events: None,
            store: None,
            bundle: ArcSwap::from_pointee(bundle),
            source,
            earlier: Mutex::new(Vec::new()),
            seen_current: Mutex::new(None),
            variants: Variants::single(),
            changing: Mutex::new(()),
            metrics,
        };
        service.publish_model_info();
        Ok(service)
    }

    pub fn ranker(&self) -> &Ranker {
        &self.ranker
    }

    pub fn catalog(&self) -> Option<&Catalog> {
        self.catalog.as_ref()
    }

    pub(crate) fn events(&self) -> Option<&EventWriter> {
        self.events.as_ref()
    }

    pub(crate) fn variants(&self) -> &Variants {
        &self.variants
    }

    /// The bundle serving now. A request takes it once and keeps it to the
    /// end, whatever is installed meanwhile.
    pub fn bundle(&self) -> Arc<Bundle> {
        self.bundle.load_full()
    }

    /// Serves the current bundle with its statistics brought forward from
    /// the purchases stored after its history (see `serve::live_stats`).
    /// Without a store there is nothing to read. A bundle installed while
    /// this ran is left alone: the next refresh starts from it.
    pub fn refresh_live_stats(&self) -> Result<(), StoreError> {
        let Some(store) = &self.store else { return Ok(()) };
        let started = Instant::now();
        let serving = self.bundle();
        let (stats, purchases) =
            crate::serve::live_stats::bring_forward(store.as_ref(), self.catalog.as_ref(), serving.base_stats())?;
        let _changing = self.lock_changes();
        let now = self.bundle();
        if !Arc::ptr_eq(now.base_stats(), serving.base_stats()) {
            return Ok(());
        }
        self.bundle.store(Arc::new(now.with_live_stats(stats)));
        self.metrics.live_stats_purchases.set(purchases as i64);
        self.metrics.live_stats_refresh_seconds.observe(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// The variant of `user_id` and the bundle it serves now.
    pub(crate) fn choose(&self, user_id: Option<&str>) -> (&Variant, Arc<Bundle>) {
        let variant = self.variants.assign(user_id);
        let bundle = match &variant.served {
            Served::Current => self.bundle(),
            Served::Fixed(bundle) => bundle.clone(),
        };
        (variant, bundle)
    }

    /// Warms `bundle` up and, if its scores are sound, makes it the one that
    /// serves; requests already running finish on the old one. A bundle that
    /// fails its warm-up is refused and the old one keeps serving.
    pub fn install(&self, bundle: Bundle) -> Result<Arc<Bundle>, ServiceError> {
        let _one_change = self.lock_changes();
        self.install_locked(bundle)
    }

    fn lock_changes(&self) -> std::sync::MutexGuard<'_, ()> {
        self.changing.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn install_locked(&self, bundle: Bundle) -> Result<Arc<Bundle>, ServiceError> {
        check(&self.ranker, &bundle)?;
        let previous = self.bundle.swap(Arc::new(bundle));
        let mut earlier = self.earlier.lock().unwrap_or_else(|p| p.into_inner());
        earlier.push(previous.clone());
        if earlier.len() > ROLLBACK_DEPTH {
            earlier.remove(0);
        }
        drop(earlier);
        self.publish_model_info();
        tracing::info!(from = previous.version(), to = self.bundle.load().version(), "bundle installed");
        Ok(previous)
    }

    /// Loads `version` from the bundle directory (or, without one, what
    /// its CURRENT names, or the single bundle again), checks it and
    /// installs it. Blocking: loading and the warm-up take a moment.
    pub fn reload(&self, version: Option<&str>) -> Result<Reloaded, ServiceError> {
        let _one_change = self.lock_changes();
        let (dir, current) = match version {
            Some(version) => (self.source.version(version)?, None),
            None => self.source.current()?,
        };
        let serving = self.bundle();
        let result = (|| {
            // The same directory holding the same manifest (training record
            // included): a bundle retrained in place, even to the same
            // version name, is read again.
            let on_disk = crate::model::bundle::read_manifest(&dir)?;
            if dir == serving.dir() && on_disk == *serving.manifest() {
                return Ok(Reloaded::Unchanged { version: serving.version().to_string() });
            }
            let encoder = self.ranker.embedder().encoder();
            let bundle = Bundle::load(&dir, &encoder.identity(), encoder.precision())?;
            let previous = self.install_locked(bundle)?;
            Ok(Reloaded::Installed { from: previous.version().to_string(), to: self.bundle().version().to_string() })
        })();
        let outcome = match &result {
            Ok(Reloaded::Installed { .. }) => "installed",
            Ok(Reloaded::Unchanged { .. }) => "unchanged",
            Err(_) => "refused",
        };
        self.metrics.bundle_changes.with_label_values(&[outcome]).inc();
        if version.is_none() {
            *self.seen_current.lock().unwrap_or_else(|p| p.into_inner()) = current;
        }
        result
    }

    /// Goes back to the bundle served before the current one.
    pub(crate) fn rollback(&self) -> Result<Reloaded, ServiceError> {
        let _one_change = self.lock_changes();
        let previous = self.earlier.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let Some(previous) = previous else {
            return Err(ServiceError::NoEarlierBundle);
        };
        let from = self.bundle.swap(previous);
        self.publish_model_info();
        self.metrics.bundle_changes.with_label_values(&["rolled_back"]).inc();
        let to = self.bundle().version().to_string();
        tracing::info!(from = from.version(), to, "bundle rolled back");
        Ok(Reloaded::Installed { from: from.version().to_string(), to })
    }

    /// Reloads if the versions directory's CURRENT changed since it was
    /// last acted on (the `bundle.watch_secs` poll). A refused bundle is
    /// logged and not retried until CURRENT changes again.
    pub(crate) fn reload_if_current_changed(&self) {
        let now = match self.source.current_name() {
            Ok(now) => now,
            Err(error) => {
                tracing::warn!(%error, "reading the bundle directory's CURRENT failed");
                return;
            }
        };
        if now.is_none() || *self.seen_current.lock().unwrap_or_else(|p| p.into_inner()) == now {
            return;
        }
        match self.reload(None) {
            Ok(outcome) => tracing::info!(?outcome, "CURRENT changed: reloaded"),
            Err(error) => tracing::error!(%error, "CURRENT changed, but its bundle was refused; the old one serves"),
        }
    }

    /// Ready while the encoder thread lives.
    pub(crate) fn is_ready(&self) -> bool {
        self.ranker.embedder().is_alive()
    }

    /// `shoprank_model_info` names exactly the bundles now serving, one
    /// series per variant.
    fn publish_model_info(&self) {
        let encoder = self.ranker.embedder().encoder();
        let info = &self.metrics.model_info;
        info.reset();
        for variant in self.variants.iter() {
            let bundle = match &variant.served {
                Served::Current => self.bundle(),
                Served::Fixed(bundle) => bundle.clone(),
            };
            info.with_label_values(&[encoder.name(), encoder.precision().as_str(), bundle.version(), &variant.name])
                .set(1);
        }
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
