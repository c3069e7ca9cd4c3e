//! Shared fixtures: the real encoder, loaded once per test binary.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use shoprank::config::{EncoderSettings, Precision, Settings};
use shoprank::model::encoder::Encoder;
use shoprank::model::files::EncoderFiles;

pub fn repo_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// The default settings, models from the repository, and the catalog in a
/// fresh directory of its own (each call gets a new one).
pub fn settings() -> Settings {
    let mut settings = Settings::load(None).expect("default settings").rooted_at(&repo_path(""));
    settings.catalog.data_dir = temp_dir("catalog");
    settings
}

/// A new empty directory under the system's temporary directory.
pub fn temp_dir(what: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("shoprank-test-{what}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a temporary directory");
    dir
}

pub fn encoder_files() -> EncoderFiles {
    EncoderFiles::from_dir(&repo_path("models/all-MiniLM-L6-v2"))
        .expect("encoder weights missing: run scripts/fetch-model (make test does)")
}

fn encoder_settings(precision: Precision) -> EncoderSettings {
    EncoderSettings { precision, ..settings().encoder }
}

/// The fast f32 encoder (what the server runs by default).
pub fn encoder() -> Arc<Encoder> {
    static ENCODER: OnceLock<Arc<Encoder>> = OnceLock::new();
    ENCODER
        .get_or_init(|| {
            Arc::new(Encoder::load(&encoder_files(), &encoder_settings(Precision::F32)).expect("load encoder"))
        })
        .clone()
}

/// candle-transformers' BertModel, the reference implementation.
pub fn reference_encoder() -> Arc<Encoder> {
    static ENCODER: OnceLock<Arc<Encoder>> = OnceLock::new();
    ENCODER
        .get_or_init(|| {
            Arc::new(
                Encoder::load_reference(&encoder_files(), &encoder_settings(Precision::F32)).expect("load encoder"),
            )
        })
        .clone()
}

pub fn int8_encoder() -> Arc<Encoder> {
    static ENCODER: OnceLock<Arc<Encoder>> = OnceLock::new();
    ENCODER
        .get_or_init(|| {
            Arc::new(Encoder::load(&encoder_files(), &encoder_settings(Precision::Int8)).expect("load encoder"))
        })
        .clone()
}

use shoprank::serve::api::AppState;
use shoprank::serve::metrics::Metrics;
use shoprank::serve::service::Service;

/// The service on `settings` (the committed bundle), built and warmed up the
/// way `shoprank serve` builds it.
pub fn service(settings: &Settings, metrics: Metrics) -> Arc<Service> {
    Arc::new(Service::with_encoder(settings, encoder(), metrics).expect("service builds on the committed bundle"))
}

/// A ready app state on `settings`.
pub fn ready_state(settings: &Settings) -> AppState {
    let metrics = Metrics::new();
    let state = AppState::new(metrics.clone(), settings.limits.clone(), &settings.server, &settings.catalog);
    state.install(service(settings, metrics));
    state
}
