//! Layered configuration: `config/default.toml` (or another file), then
//! environment variables `SHOPRANK__SECTION__KEY`. Parsed and validated once at
//! start-up; every module receives its own typed section and never reads the
//! environment itself.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::Deserialize;

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("invalid configuration: {key}: {problem}")]
    Invalid { key: &'static str, problem: String },
}

/// The whole configuration, one section per module.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub encoder: EncoderSettings,
    pub batching: BatchingSettings,
    pub cache: CacheSettings,
    pub bundle: BundleSettings,
    pub limits: Limits,
    pub user_text: UserTextBudget,
    pub catalog: CatalogSettings,
    pub store: StoreSettings,
    pub events: EventSettings,
    pub admin: AdminSettings,
    pub ab: AbSettings,
    pub search: SearchSettings,
    pub offline: OfflineSettings,
}

/// Where the catalog and the feedback events are kept (see `store`).
/// `Debug` hides the URL's password.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    /// A directory for the embedded SQLite file, or a `postgres://` URL.
    pub url: String,
    /// Most PostgreSQL connections this process holds.
    pub max_connections: u32,
    /// Seconds to wait for a PostgreSQL connection before failing.
    pub connect_timeout_secs: u64,
}

impl std::fmt::Debug for StoreSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreSettings")
            .field("url", &crate::store::redacted(&self.url))
            .field("max_connections", &self.max_connections)
            .field("connect_timeout_secs", &self.connect_timeout_secs)
            .finish()
    }
}

impl StoreSettings {
    pub fn location(&self) -> crate::store::StoreLocation {
        crate::store::StoreLocation::parse(&self.url)
    }

    pub fn pool(&self) -> crate::store::PoolLimits {
        crate::store::PoolLimits {
            max_connections: self.max_connections,
            connect_timeout: std::time::Duration::from_secs(self.connect_timeout_secs),
        }
    }
}

/// `POST /v1/events` (see `serve::events`).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSettings {
    /// Most events in one request.
    pub max_batch_events: usize,
    /// Events accepted but not yet committed, at most; beyond it 503.
    pub max_queued_events: usize,
    /// Most events committed in one transaction (several requests' worth).
    pub max_commit_events: usize,
    /// Hours an event's timestamp may be ahead of the server's clock.
    pub max_future_hours: u64,
}

/// The admin routes (`/admin/*`). `Debug` never shows the token.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    /// Bearer token the admin routes require; empty turns them off.
    pub token: String,
}

impl std::fmt::Debug for AdminSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let token = if self.token.is_empty() { "(none: admin routes off)" } else { "(set)" };
        f.debug_struct("AdminSettings").field("token", &token).finish()
    }
}

/// A/B variants (see `serve::variants`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AbSettings {
    pub variants: Vec<VariantSettings>,
}

/// One variant: a name, a bundle, a share of users.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariantSettings {
    pub name: String,
    /// A bundle version in `bundle.path`, or "current": whatever that
    /// directory serves now (follows reloads and rollbacks).
    pub bundle: String,
    /// Share of users, in (0, 1]; the shares add up to 1.
    pub share: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub addr: SocketAddr,
    pub shutdown_grace_secs: u64,
    pub max_concurrent_requests: usize,
    pub request_timeout_secs: u64,
    /// Seconds a connection may take to send a request's headers, counted
    /// from when it opens or its last response was sent: the idle timeout
    /// of kept-alive connections too.
    pub header_read_timeout_secs: u64,
    /// Seconds a request may take to send its body once its headers are in.
    pub body_read_timeout_secs: u64,
    /// Open connections at most; further ones are closed as they are accepted.
    pub max_connections: usize,
    /// Threads that run requests' blocking work (tokenizing, waiting for the
    /// encoder, scoring); admitted requests beyond them wait their turn.
    pub blocking_threads: usize,
}

/// Numeric precision of the model's matrix products: the encoder's linear
/// layers and, in serving, the head's first layer (`model::head::serving`).
/// Configured as `"f32"`, `"int8"` or `"auto"` (the default), which is
/// resolved when the settings are read: see [`Precision::auto`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Exact: the weights as shipped.
    F32,
    /// 8-bit integers (`model::encoder::int8`).
    Int8,
}

impl<'de> Deserialize<'de> for Precision {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "lowercase")]
        enum Named {
            Auto,
            F32,
            Int8,
        }
        Ok(match Named::deserialize(deserializer)? {
            Named::Auto => Precision::auto(),
            Named::F32 => Precision::F32,
            Named::Int8 => Precision::Int8,
        })
    }
}

impl Precision {
    /// What `"auto"` runs on this CPU: int8 where it has an int8 kernel
    /// faster than f32 (AMX or AVX-512 VNNI), else f32. The AVX2 kernel
    /// multiplies weights widened to 16 bits and is slower than f32, the
    /// portable one (other CPUs) much slower.
    pub fn auto() -> Self {
        if crate::model::encoder::int8::Kernel::detect().beats_f32() {
            Precision::Int8
        } else {
            Precision::F32
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Int8 => "int8",
        }
    }
}

/// The four linear layers of each transformer block, any of which
/// `encoder.int8_layers` may keep in f32 under `precision = "int8"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LinearLayer {
    /// The fused query/key/value projection (hidden → 3·hidden).
    Qkv,
    /// The attention's output projection (hidden → hidden, plus residual).
    AttentionOutput,
    /// The feed-forward expansion (hidden → intermediate, then GELU).
    Intermediate,
    /// The feed-forward contraction (intermediate → hidden, plus residual).
    Output,
}

impl LinearLayer {
    pub const ALL: [LinearLayer; 4] =
        [LinearLayer::Qkv, LinearLayer::AttentionOutput, LinearLayer::Intermediate, LinearLayer::Output];

    pub fn as_str(self) -> &'static str {
        match self {
            LinearLayer::Qkv => "qkv",
            LinearLayer::AttentionOutput => "attention_output",
            LinearLayer::Intermediate => "intermediate",
            LinearLayer::Output => "output",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncoderSettings {
    /// The preset the encoder keys came from (see [`PRESETS`]).
    pub preset: String,
    /// A local directory or a Hugging Face repo id.
    pub source: String,
    pub revision: String,
    pub max_seq_len: usize,
    /// Lower-case text before the model's tokenizer (see
    /// `model::encoder::lowercase_first`); false keeps the model's own rule.
    pub lowercase: bool,
    pub precision: Precision,
    /// Under `precision = "int8"`, the linear layers that run in int8 (the
    /// others stay f32); all four by default.
    pub int8_layers: Vec<LinearLayer>,
    pub threads: usize,
}

impl EncoderSettings {
    /// The precision layer `layer` runs in.
    pub fn precision_of(&self, layer: LinearLayer) -> Precision {
        match self.precision {
            Precision::Int8 if self.int8_layers.contains(&layer) => Precision::Int8,
            _ => Precision::F32,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchingSettings {
    pub max_batch_tokens: usize,
    pub max_batch_texts: usize,
    pub max_queued_texts: usize,
    /// Tokens of new (uncached) text one request may have embedded.
    pub max_request_tokens: usize,
    /// Milliseconds of encoder work that may wait ahead of a request.
    pub max_queue_wait_ms: u64,
    /// Most texts in one batch of catalog ingestion (a request waits for
    /// at most one such batch).
    pub background_batch_texts: usize,
    /// While requests keep the encoder busy, one ingestion batch runs after
    /// this many request batches.
    pub background_every_batches: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSettings {
    /// Bytes the embedding cache may hold (entries cost their vector plus
    /// a fixed overhead; texts are hashed, not kept).
    pub max_bytes: usize,
    /// Bytes of history titles' tokens kept for composing user texts
    /// (`serve::title_tokens`); 0 keeps none.
    pub title_tokens_max_bytes: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleSettings {
    /// The model bundle directory (`bundle.json`, `head.safetensors`,
    /// `stats.json.gz`; see `model::bundle`).
    pub path: PathBuf,
    /// Seconds between checks of a versions directory's `CURRENT` (0: off).
    pub watch_secs: u64,
}

/// Explicit request limits; each one is documented in the README.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_candidates: usize,
    pub max_history: usize,
    pub default_top_k: usize,
}

/// The catalog shoprank keeps, and retrieval from it (see `serve::catalog`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogSettings {
    /// Most items in one `PUT /v1/catalog/items`.
    pub max_upsert_items: usize,
    /// Most items the catalog holds (memory: about 1.6 KB each with a 384-d
    /// encoder, 2.1 KB at 512-d).
    pub max_items: usize,
    /// Items taken from the store per ingestion round.
    pub ingest_batch_items: usize,
    /// Seconds between polls for catalog changes made by other processes
    /// on the same store (0: off).
    pub sync_secs: u64,
    /// Items retrieved by embedding similarity for a request without candidates.
    pub retrieve_k: usize,
    /// Above this many embedded items at start-up, that retrieval uses an
    /// HNSW graph instead of an exact scan.
    pub exact_scan_max: usize,
    /// Items retrieved through co-purchase and recent-purchase links of the history.
    pub related_k: usize,
    /// Recently popular items added to every retrieval.
    pub popular_k: usize,
}

/// Ranking with a search query (see `model::relevance`).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchSettings {
    /// Width of a relevance band in query cosine; 0 ranks by the head alone.
    pub relevance_margin: f32,
    /// Candidates whose query cosine is below this share the last band.
    pub relevance_floor: f32,
}

impl SearchSettings {
    pub fn banding(&self) -> crate::model::relevance::Banding {
        crate::model::relevance::Banding { margin: self.relevance_margin, floor: self.relevance_floor }
    }
}

/// Most items one retrieval may hand to the head (`retrieve_k + related_k +
/// popular_k`): each is scored, so this bounds a request's work.
pub const MAX_RETRIEVED: usize = 10_000;

/// Settings of `train` and `eval` that must agree between them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfflineSettings {
    /// Most items the recent-purchase EASE is fitted over (its dense solve
    /// costs items³ time and items² memory).
    pub ease_max_items: usize,
}

/// Token budgets of the user-text fields (see `user_text`).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserTextBudget {
    pub query_tokens: usize,
    pub profile_tokens: usize,
}

/// The configuration file compiled into the binary, so `shoprank` runs with
/// its defaults even when started outside the repository.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// The encoder presets, by name: each sets the keys that belong to one
/// encoder (where it is, its window, the bundle trained on it, the search
/// thresholds calibrated on its cosines). Layered over the defaults and
/// under everything the user sets.
pub const PRESETS: [(&str, &str); 2] = [
    ("all-MiniLM-L6-v2", include_str!("../config/presets/all-MiniLM-L6-v2.toml")),
    ("m3e-small", include_str!("../config/presets/m3e-small.toml")),
];

/// A user who picks a preset and also sets one of its keys (a file copied
/// from before presets, say) gets that key, not the preset's: say so, since
/// the server then runs, without complaint, with something else than asked.
fn warn_of_overridden_preset_keys(user_layers: &Figment, preset: &str, preset_toml: &str) {
    if user_layers.find_value("encoder.preset").is_err() {
        return; // the default preset: overriding its keys is the usual way
    }
    let Ok(preset_keys) = Figment::from(Toml::string(preset_toml)).extract::<figment::value::Dict>() else { return };
    for (section, keys) in &preset_keys {
        for key in keys.as_dict().into_iter().flat_map(|dict| dict.keys()) {
            let path = format!("{section}.{key}");
            if let Ok(value) = user_layers.find_value(&path) {
                tracing::warn!(key = %path, value = ?value, preset, "a configuration layer overrides the preset's value");
            }
        }
    }
}

impl Settings {
    /// Loads the defaults, then `file` (if given), then `SHOPRANK__*`
    /// environment variables, and validates the result.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with_preset(file, None)
    }

    /// As [`Settings::load`], with `preset` (the `--preset` flag), if given,
    /// taking precedence over `encoder.preset` from any layer. The preset is
    /// read from all layers first, then its keys go in between the defaults
    /// and the user's layers, so a file that sets `encoder.source` still wins.
    pub fn load_with_preset(file: Option<&Path>, preset: Option<&str>) -> Result<Self, ConfigError> {
        let user_layers = |mut figment: Figment| {
            if let Some(file) = file {
                figment = figment.merge(Toml::file_exact(file));
            }
            figment = figment.merge(Env::prefixed("SHOPRANK__").split("__"));
            if let Some(preset) = preset {
                figment = figment.merge(Serialized::default("encoder.preset", preset));
            }
            figment
        };
        let chosen: String =
            user_layers(Figment::from(Toml::string(DEFAULT_TOML))).extract_inner("encoder.preset").map_err(Box::new)?;
        let preset_toml = PRESETS.iter().find(|(name, _)| *name == chosen).map(|(_, toml)| *toml).ok_or_else(|| {
            let known: Vec<&str> = PRESETS.iter().map(|(name, _)| *name).collect();
            ConfigError::Invalid {
                key: "encoder.preset",
                problem: format!("unknown preset {chosen:?}; known: {}", known.join(", ")),
            }
        })?;
        warn_of_overridden_preset_keys(&user_layers(Figment::new()), &chosen, preset_toml);
        let figment = user_layers(Figment::from(Toml::string(DEFAULT_TOML)).merge(Toml::string(preset_toml)));
        let settings: Settings = figment.extract().map_err(Box::new)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Resolves the relative model paths against `root` instead of the
    /// working directory (tests and benches run from anywhere).
    pub fn rooted_at(mut self, root: &Path) -> Self {
        let source = Path::new(&self.encoder.source);
        if source.is_relative() && root.join(source).is_dir() {
            self.encoder.source = root.join(source).display().to_string();
        }
        if self.bundle.path.is_relative() {
            self.bundle.path = root.join(&self.bundle.path);
        }
        if let crate::store::StoreLocation::Embedded(dir) = self.store.location() {
            if dir.is_relative() {
                self.store.url = root.join(dir).display().to_string();
            }
        }
        self
    }

    /// Checks the relations between keys that types alone cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn positive(key: &'static str, value: usize) -> Result<(), ConfigError> {
            if value == 0 {
                return Err(ConfigError::Invalid { key, problem: "must be at least 1".into() });
            }
            Ok(())
        }
        positive("server.max_concurrent_requests", self.server.max_concurrent_requests)?;
        positive("server.request_timeout_secs", self.server.request_timeout_secs as usize)?;
        positive("server.header_read_timeout_secs", self.server.header_read_timeout_secs as usize)?;
        positive("server.body_read_timeout_secs", self.server.body_read_timeout_secs as usize)?;
        positive("server.max_connections", self.server.max_connections)?;
        positive("server.blocking_threads", self.server.blocking_threads)?;
        positive("batching.max_queue_wait_ms", self.batching.max_queue_wait_ms as usize)?;
        positive("cache.max_bytes", self.cache.max_bytes)?;
        positive("batching.max_batch_texts", self.batching.max_batch_texts)?;
        positive("batching.max_queued_texts", self.batching.max_queued_texts)?;
        positive("batching.background_batch_texts", self.batching.background_batch_texts)?;
        positive("batching.background_every_batches", self.batching.background_every_batches)?;
        positive("limits.max_body_bytes", self.limits.max_body_bytes)?;
        positive("limits.max_candidates", self.limits.max_candidates)?;
        positive("limits.default_top_k", self.limits.default_top_k)?;
        positive("offline.ease_max_items", self.offline.ease_max_items)?;
        positive("catalog.max_upsert_items", self.catalog.max_upsert_items)?;
        positive("catalog.max_items", self.catalog.max_items)?;
        positive("catalog.ingest_batch_items", self.catalog.ingest_batch_items)?;
        positive("catalog.retrieve_k", self.catalog.retrieve_k)?;
        positive("store.max_connections", self.store.max_connections as usize)?;
        crate::store::StoreLocation::check(&self.store.url)
            .map_err(|problem| ConfigError::Invalid { key: "store.url", problem })?;
        positive("events.max_batch_events", self.events.max_batch_events)?;
        positive("events.max_commit_events", self.events.max_commit_events)?;
        if self.events.max_queued_events < self.events.max_batch_events {
            return Err(ConfigError::Invalid {
                key: "events.max_queued_events",
                problem: format!(
                    "{} is below events.max_batch_events ({}): a full batch would never be accepted",
                    self.events.max_queued_events, self.events.max_batch_events
                ),
            });
        }
        check_variants(&self.ab.variants).map_err(|problem| ConfigError::Invalid { key: "ab.variants", problem })?;
        for (key, value) in [
            ("search.relevance_margin", self.search.relevance_margin),
            ("search.relevance_floor", self.search.relevance_floor),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(ConfigError::Invalid { key, problem: format!("{value} is not a number >= 0") });
            }
        }
        let retrieved = self.catalog.retrieve_k + self.catalog.related_k + self.catalog.popular_k;
        if retrieved > MAX_RETRIEVED {
            return Err(ConfigError::Invalid {
                key: "catalog.retrieve_k",
                problem: format!(
                    "retrieve_k + related_k + popular_k = {retrieved} is above {MAX_RETRIEVED}: every retrieved \
                     item is scored on each request"
                ),
            });
        }
        if self.catalog.ingest_batch_items > self.batching.max_queued_texts {
            return Err(ConfigError::Invalid {
                key: "catalog.ingest_batch_items",
                problem: format!(
                    "{} is above batching.max_queued_texts ({}): no ingestion round would fit the queue",
                    self.catalog.ingest_batch_items, self.batching.max_queued_texts
                ),
            });
        }
        if !(8..=8192).contains(&self.encoder.max_seq_len) {
            return Err(ConfigError::Invalid {
                key: "encoder.max_seq_len",
                problem: format!("{} is outside 8..=8192", self.encoder.max_seq_len),
            });
        }
        if self.batching.max_batch_tokens < self.encoder.max_seq_len {
            return Err(ConfigError::Invalid {
                key: "batching.max_batch_tokens",
                problem: format!(
                    "{} is below encoder.max_seq_len ({}): a single long text would never fit",
                    self.batching.max_batch_tokens, self.encoder.max_seq_len
                ),
            });
        }
        if self.batching.max_request_tokens < self.encoder.max_seq_len {
            return Err(ConfigError::Invalid {
                key: "batching.max_request_tokens",
                problem: format!(
                    "{} is below encoder.max_seq_len ({}): a request with one long text would always be refused",
                    self.batching.max_request_tokens, self.encoder.max_seq_len
                ),
            });
        }
        let fixed = self.user_text.query_tokens + self.user_text.profile_tokens;
        if fixed + 16 > self.encoder.max_seq_len {
            return Err(ConfigError::Invalid {
                key: "user_text",
                problem: format!(
                    "query_tokens + profile_tokens = {fixed} leaves under 16 tokens of \
                     encoder.max_seq_len ({}) for history",
                    self.encoder.max_seq_len
                ),
            });
        }
        Ok(())
    }
}

/// Names are unique, short and safe inside a request id; shares are in
/// (0, 1] and add up to 1.
fn check_variants(variants: &[VariantSettings]) -> Result<(), String> {
    let mut names = std::collections::HashSet::new();
    for variant in variants {
        let name = &variant.name;
        if name.is_empty()
            || name.len() > 32
            || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(format!("variant name `{name}`: use 1 to 32 of a-z, A-Z, 0-9, _ and -"));
        }
        if !names.insert(name) {
            return Err(format!("variant `{name}` is listed twice"));
        }
        if !(variant.share > 0.0 && variant.share <= 1.0) {
            return Err(format!("variant `{name}`: share {} is not in (0, 1]", variant.share));
        }
        if variant.bundle.trim().is_empty() {
            return Err(format!("variant `{name}`: bundle is empty (a version, or \"current\")"));
        }
    }
    let total: f64 = variants.iter().map(|v| v.share).sum();
    if !variants.is_empty() && (total - 1.0).abs() > 1e-6 {
        return Err(format!("the shares add up to {total}, not 1"));
    }
    Ok(())
}

#[cfg(test)]
// figment's `Jail` fixes its closures' error type, a large `figment::Error`.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_and_validate() {
        // Inside a Jail: the other tests set environment variables.
        figment::Jail::expect_with(|_| {
            let settings = Settings::load(None).expect("default config");
            assert_eq!(settings.server.addr.port(), 8080);
            assert_eq!(settings.limits.max_candidates, 1000);
            assert_eq!(settings.encoder.precision, Precision::auto(), "auto unless chosen");
            Ok(())
        });
    }

    #[test]
    fn environment_overrides_a_key() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("SHOPRANK__LIMITS__MAX_CANDIDATES", "7");
            let settings = Settings::load(None).expect("config");
            assert_eq!(settings.limits.max_candidates, 7);
            Ok(())
        });
    }

    #[test]
    fn zero_limit_is_rejected_with_its_key() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("SHOPRANK__LIMITS__MAX_CANDIDATES", "0");
            let err = Settings::load(None).unwrap_err().to_string();
            assert!(err.contains("limits.max_candidates"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn a_preset_sets_its_encoder_keys_and_the_user_layers_still_win() {
        figment::Jail::expect_with(|jail| {
            let default = Settings::load(None).expect("default preset");
            assert_eq!(default.encoder.preset, "all-MiniLM-L6-v2");
            assert_eq!(default.encoder.source, "models/all-MiniLM-L6-v2");
            assert_eq!(default.bundle.path, Path::new("models/bundle"));

            jail.set_env("SHOPRANK__ENCODER__PRESET", "m3e-small");
            let chinese = Settings::load(None).expect("m3e-small preset");
            assert_eq!(chinese.encoder.source, "models/m3e-small");
            assert_eq!(chinese.bundle.path, Path::new("models/bundle-m3e-small"));

            // A file's own key beats the preset's; --preset beats the file's preset.
            jail.create_file("x.toml", "[encoder]\npreset = \"m3e-small\"\nsource = \"elsewhere\"\n")?;
            let file = Settings::load(Some(Path::new("x.toml"))).expect("file over preset");
            assert_eq!(
                (file.encoder.source.as_str(), file.bundle.path.as_path()),
                ("elsewhere", Path::new("models/bundle-m3e-small"))
            );
            let flag = Settings::load_with_preset(None, Some("all-MiniLM-L6-v2")).expect("flag");
            assert_eq!(flag.encoder.preset, "all-MiniLM-L6-v2", "--preset beats SHOPRANK__ENCODER__PRESET");
            assert_eq!(flag.bundle.path, Path::new("models/bundle"));
            jail.create_file("y.toml", "[encoder]\npreset = \"m3e-small\"\n")?;
            let flag = Settings::load_with_preset(Some(Path::new("y.toml")), Some("all-MiniLM-L6-v2")).expect("flag");
            assert_eq!(flag.encoder.source, "models/all-MiniLM-L6-v2", "--preset beats the file's preset");

            let err = Settings::load_with_preset(None, Some("bert-base")).unwrap_err().to_string();
            assert!(err.contains("encoder.preset") && err.contains("m3e-small"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn int8_layers_default_to_all_and_name_what_they_refuse() {
        figment::Jail::expect_with(|jail| {
            let settings = Settings::load(None).expect("default config");
            assert_eq!(settings.encoder.int8_layers, LinearLayer::ALL);
            assert_eq!(settings.encoder.precision_of(LinearLayer::Qkv), Precision::auto(), "auto unless chosen");
            jail.create_file("f32.toml", "[encoder]\nprecision = \"f32\"\n")?;
            let exact = Settings::load(Some(Path::new("f32.toml"))).expect("f32");
            assert_eq!(exact.encoder.precision_of(LinearLayer::Qkv), Precision::F32);
            jail.create_file("x.toml", "[encoder]\nprecision = \"int8\"\nint8_layers = [\"qkv\", \"output\"]\n")?;
            let some = Settings::load(Some(Path::new("x.toml"))).expect("some layers");
            let precisions = LinearLayer::ALL.map(|layer| some.encoder.precision_of(layer));
            assert_eq!(precisions, [Precision::Int8, Precision::F32, Precision::F32, Precision::Int8]);
            jail.create_file("y.toml", "[encoder]\nint8_layers = [\"attention\"]\n")?;
            let err = Settings::load(Some(Path::new("y.toml"))).unwrap_err().to_string();
            assert!(err.contains("attention") && err.contains("attention_output"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn unknown_key_is_rejected() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("x.toml", "[server]\nadress = \"1.2.3.4:1\"\n")?;
            let err = Settings::load(Some(Path::new("x.toml"))).unwrap_err().to_string();
            assert!(err.contains("adress"), "{err}");
            Ok(())
        });
    }
}
