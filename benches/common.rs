//! Shared by the benches: the fixture corpus and model loading.

use std::path::PathBuf;

use shoprank::config::{Precision, Settings};
use shoprank::encoder::Encoder;
use shoprank::model_files::EncoderFiles;

pub fn repo_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// The `text` field of each line of a fixture JSONL file.
pub fn corpus(name: &str) -> Vec<String> {
    let path = repo_path(&format!("benches/fixtures/{name}"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).expect("fixture line is JSON");
            value["text"].as_str().expect("text field").to_string()
        })
        .collect()
}

pub fn settings() -> Settings {
    Settings::load(None).expect("default settings").rooted_at(&repo_path(""))
}

pub fn encoder(precision: Precision, reference: bool) -> Encoder {
    let mut settings = settings().encoder;
    settings.precision = precision;
    let files = EncoderFiles::from_dir(&repo_path("models/all-MiniLM-L6-v2")).expect("run scripts/fetch-model");
    if reference {
        Encoder::load_reference(&files, &settings).expect("encoder")
    } else {
        Encoder::load(&files, &settings).expect("encoder")
    }
}
