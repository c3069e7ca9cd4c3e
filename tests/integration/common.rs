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
    let mut settings = Settings::load(None).expect("default settings");
    settings.encoder.source = repo_path("models/all-MiniLM-L6-v2").display().to_string();
    settings.head.weights = repo_path("models/head.safetensors");
    settings.head.spec = repo_path("models/head.json");
    settings.head.stats = repo_path("models/stats.json");
    settings
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
