//! Shared fixtures: the real encoder, loaded once per test binary.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use shoprank::{Encoder, EncoderFiles, EncoderSettings, Precision, Settings};

pub fn repo_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// The default settings (the English preset whatever the environment says),
/// models from the repository, and the catalog in a fresh directory of its
/// own (each call gets a new one).
pub fn settings() -> Settings {
    preset_settings(MINILM)
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

/// The models the tests run: the default English encoder and the Chinese one
/// (`scripts/fetch-model all`, which scripts/test runs).
pub const MINILM: &str = "all-MiniLM-L6-v2";
pub const M3E: &str = "m3e-small";

/// The default settings under the preset named after `model`, models from
/// the repository, the catalog in a fresh directory.
pub fn preset_settings(model: &str) -> Settings {
    let mut settings =
        Settings::load_with_preset(None, Some(model)).expect("preset settings").rooted_at(&repo_path(""));
    settings.store.url = temp_dir("catalog").display().to_string();
    settings
}

pub fn model_files(model: &str) -> EncoderFiles {
    EncoderFiles::from_dir(&repo_path(&format!("models/{model}")))
        .unwrap_or_else(|e| panic!("encoder weights missing ({e}): run scripts/fetch-model all (scripts/test does)"))
}

/// Which forward pass a test encoder runs.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Backbone {
    /// shoprank's own, in the given precision (what the server runs).
    Fast(Precision),
    /// candle-transformers' BertModel, the reference implementation.
    Reference,
}

/// `model`'s encoder on `backbone`, loaded once per test binary.
pub fn model_encoder(model: &str, backbone: Backbone) -> Arc<Encoder> {
    type Loaded = std::collections::HashMap<(String, Backbone), Arc<Encoder>>;
    static LOADED: OnceLock<std::sync::Mutex<Loaded>> = OnceLock::new();
    let mut loaded = LOADED.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    loaded
        .entry((model.to_string(), backbone))
        .or_insert_with(|| {
            let files = model_files(model);
            let settings = preset_settings(model).encoder;
            let encoder = match backbone {
                Backbone::Fast(precision) => Encoder::load(&files, &EncoderSettings { precision, ..settings }),
                Backbone::Reference => Encoder::load_reference(&files, &settings),
            };
            Arc::new(encoder.expect("load encoder"))
        })
        .clone()
}

/// The fast f32 encoder (what the server runs by default on CPUs without
/// AMX or AVX-512 VNNI; the tests compare with exact f32 everywhere).
pub fn encoder() -> Arc<Encoder> {
    model_encoder(MINILM, Backbone::Fast(Precision::F32))
}

use shoprank::{AppState, Metrics, Service};

/// The service on `settings` (the committed bundle), built and warmed up the
/// way `shoprank serve` builds it.
pub fn service(settings: &Settings, metrics: Metrics) -> Arc<Service> {
    Arc::new(Service::with_encoder(settings, encoder(), metrics).expect("service builds on the committed bundle"))
}

/// A ready app state on `settings`.
pub fn ready_state(settings: &Settings) -> AppState {
    let metrics = Metrics::new();
    let state = AppState::new(metrics.clone(), settings);
    state.install(service(settings, metrics));
    state
}

use std::time::Duration;

use serde_json::Value;

#[path = "../support/server.rs"]
mod server;
pub use server::ServerProcess;

/// One HTTP/1.1 request over a fresh connection; returns status and body.
pub fn http(port: u16, method: &str, path: &str, body: Option<&Value>) -> std::io::Result<(u16, String)> {
    server::http(port, method, path, body.map(Value::to_string).as_deref())
}

/// `shoprank serve` on an ephemeral port with its store at `store_url` (a
/// directory or a postgres:// URL), `settings`' encoder and bundle, and
/// `env` besides, once ready (see `tests/support/server.rs`).
pub fn start_server(settings: &Settings, store_url: &str, env: &[(&str, &str)]) -> ServerProcess {
    let source = settings.encoder.source.clone();
    let bundle = settings.bundle.path.display().to_string();
    let mut vars = vec![
        ("SHOPRANK__ENCODER__SOURCE", source.as_str()),
        ("SHOPRANK__BUNDLE__PATH", bundle.as_str()),
        ("SHOPRANK__STORE__URL", store_url),
    ];
    vars.extend_from_slice(env);
    ServerProcess::start(env!("CARGO_BIN_EXE_shoprank"), &vars, false)
}

/// A fresh PostgreSQL schema for one test, as a store URL (`search_path`
/// set through the URL's `options`). PostgreSQL is found at
/// $SHOPRANK_TEST_POSTGRES (default postgres://postgres@127.0.0.1:5432/test).
/// When it cannot be reached the test says SKIPPED and gets `None`, unless
/// SHOPRANK_REQUIRE_POSTGRES=1 (CI), which makes that a failure.
pub fn postgres_url(test: &str) -> Option<String> {
    let base =
        std::env::var("SHOPRANK_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let mut config: postgres::Config = base.parse().expect("SHOPRANK_TEST_POSTGRES is a PostgreSQL URL");
    config.connect_timeout(Duration::from_secs(3));
    let mut client = match config.connect(postgres::NoTls) {
        Ok(client) => client,
        Err(error) if std::env::var("SHOPRANK_REQUIRE_POSTGRES").as_deref() == Ok("1") => {
            panic!("{test}: PostgreSQL at {base} is required (SHOPRANK_REQUIRE_POSTGRES=1) but unreachable: {error}")
        }
        Err(error) => {
            eprintln!("SKIPPED {test} on PostgreSQL: {base} is unreachable ({error}); set SHOPRANK_TEST_POSTGRES");
            return None;
        }
    };
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let schema = format!("shoprank_test_{}_{n}", std::process::id());
    client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"))
        .expect("create a test schema");
    let separator = if base.contains('?') { '&' } else { '?' };
    Some(format!("{base}{separator}options=-c%20search_path%3D{schema}"))
}

/// The store URLs a test runs against: an embedded store in a fresh
/// directory, and a fresh PostgreSQL schema when PostgreSQL is reachable.
pub fn store_urls(test: &str) -> Vec<String> {
    let mut urls = vec![temp_dir(test).display().to_string()];
    urls.extend(postgres_url(test));
    urls
}
