//! Shared fixtures: the real encoder, loaded once per test binary.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use shoprank::config::{EncoderSettings, Precision, Settings};
use shoprank::model::encoder::Encoder;
use shoprank::model::files::EncoderFiles;

pub fn repo_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(relative)
}

pub fn settings() -> Settings {
    Settings::load(None).expect("default settings").rooted_at(&repo_path(""))
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
    let state = AppState::new(metrics.clone(), settings.limits.clone(), &settings.server);
    state.install(service(settings, metrics));
    state
}
