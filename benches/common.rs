//! Shared by the benches: the fixture corpus and the settings.

use std::path::PathBuf;

use shoprank::Settings;

pub fn repo_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// The `text` field of each line of a fixture JSONL file.
pub fn corpus(name: &str) -> Vec<String> {
    corpus_lines(name).into_iter().map(|value| value["text"].as_str().expect("text field").to_string()).collect()
}

/// As [`corpus`], only the lines whose `field` is `value` (the Chinese
/// titles: `"lang": "zh"`).
#[allow(dead_code)] // not every bench that includes this file filters
pub fn corpus_where(name: &str, field: &str, value: &str) -> Vec<String> {
    corpus_lines(name)
        .into_iter()
        .filter(|line| line[field] == value)
        .map(|line| line["text"].as_str().expect("text field").to_string())
        .collect()
}

fn corpus_lines(name: &str) -> Vec<serde_json::Value> {
    let path = repo_path(&format!("benches/fixtures/{name}"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|line| serde_json::from_str(line).expect("fixture line is JSON"))
        .collect()
}

/// The default settings, with the catalog in a fresh temporary directory.
#[allow(dead_code)] // not every bench that includes this file needs them
pub fn settings() -> Settings {
    let mut settings = Settings::load(None).expect("default settings").rooted_at(&repo_path(""));
    let dir = std::env::temp_dir().join(format!("shoprank-bench-catalog-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    settings.store.url = dir.display().to_string();
    settings
}

/// The thread pool as `shoprank serve` sizes it, from the default
/// settings. Call it first, before any other thread starts (it sets an
/// environment variable).
#[allow(dead_code)] // not every bench includes this file for it
pub fn configure_threads_once() {
    static CONFIGURED: std::sync::Once = std::sync::Once::new();
    CONFIGURED.call_once(|| {
        let threads = Settings::load(None).expect("default settings").encoder.threads;
        shoprank::configure_threads(threads).expect("thread pool");
    });
}
