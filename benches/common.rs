//! Shared by the benches: the fixture corpus and the settings.

use std::path::PathBuf;

use shoprank::config::Settings;

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

/// The default settings, with the catalog in a fresh temporary directory.
pub fn settings() -> Settings {
    let mut settings = Settings::load(None).expect("default settings").rooted_at(&repo_path(""));
    let dir = std::env::temp_dir().join(format!("shoprank-bench-catalog-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    settings.store.url = dir.display().to_string();
    settings
}
