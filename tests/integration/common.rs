//! Shared fixtures: the real encoder, loaded once per test binary.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use shoprank::config::{EncoderSettings, Precision, Settings};
use shoprank::encoder::Encoder;
use shoprank::model_files::EncoderFiles;

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
        .get_or_init(|| Arc::new(Encoder::load(&encoder_files(), &encoder_settings(Precision::F32)).expect("load encoder")))
        .clone()
}

/// candle-transformers' BertModel, the reference implementation.
pub fn reference_encoder() -> Arc<Encoder> {
    static ENCODER: OnceLock<Arc<Encoder>> = OnceLock::new();
    ENCODER
        .get_or_init(|| {
            Arc::new(Encoder::load_reference(&encoder_files(), &encoder_settings(Precision::F32)).expect("load encoder"))
        })
        .clone()
}

pub fn int8_encoder() -> Arc<Encoder> {
    static ENCODER: OnceLock<Arc<Encoder>> = OnceLock::new();
    ENCODER
        .get_or_init(|| Arc::new(Encoder::load(&encoder_files(), &encoder_settings(Precision::Int8)).expect("load encoder")))
        .clone()
}

use shoprank::api::AppState;
use shoprank::batcher::Embedder;
use shoprank::head::{EncoderIdentity, ScoringHead};
use shoprank::metrics::Metrics;
use shoprank::ranker::Ranker;
use shoprank::stats::HistoryStats;

/// A ranker over the committed head and statistics (models/), as served.
pub fn ranker(settings: &Settings, metrics: Metrics) -> Arc<Ranker> {
    let encoder = encoder();
    let identity = EncoderIdentity { name: encoder.name().to_string(), dim: encoder.dim() };
    let head = ScoringHead::load(&settings.head.weights, &settings.head.spec, &identity).expect("committed head");
    let stats = HistoryStats::load(&settings.head.stats).expect("committed stats");
    let entries = std::num::NonZeroUsize::new(settings.cache.max_entries).unwrap();
    let embedder = Embedder::new(encoder, settings.batching.clone(), entries, metrics.clone());
    let ranker = Arc::new(Ranker::new(embedder, head, stats, settings.user_text, metrics));
    ranker.warm_up().expect("warm-up");
    ranker
}

/// A ready app state on `settings`.
pub fn ready_state(settings: &Settings) -> AppState {
    let metrics = Metrics::new();
    let state = AppState::new(metrics.clone(), settings.limits.clone(), &settings.server);
    state.install(ranker(settings, metrics));
    state
}
