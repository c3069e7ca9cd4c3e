//! The sections of the configuration other than `[encoder]` and `[store]`:
//! plain typed values, one struct per section (the module that acts on a
//! section says what its values mean at run time).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// `POST /v1/events` (see `serve::event_writer`).
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
    /// Seconds between refreshes of the live statistics from the stored
    /// purchases (`serve::live_stats`; 0: the bundle's statistics as trained).
    pub live_stats_secs: u64,
}

/// Explicit request limits; each one is documented in the README.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_candidates: usize,
    pub max_history: usize,
    pub default_top_k: usize,
    /// Milliseconds a `/recommend` request waits for the encoder when it
    /// gives no `deadline_ms`; then it is answered without it (degraded).
    pub default_deadline_ms: u64,
}

/// The catalog shoprank keeps, and retrieval from it (see `serve::catalog`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogSettings {
    /// Most items in one `PUT /v1/catalog/items`.
    pub max_upsert_items: usize,
    /// Most items the catalog holds (memory: about 390 bytes of vector each
    /// with a 384-d encoder, 516 at 512-d, plus the item's text and id).
    pub max_items: usize,
    /// Items taken from the store per ingestion round.
    pub ingest_batch_items: usize,
    /// Seconds between polls for catalog changes made by other processes
    /// on the same store (0: off).
    pub sync_secs: u64,
    /// Items retrieved by embedding similarity for a request without candidates.
    pub retrieve_k: usize,
    /// Items retrieved by BM25 for a request with a search query and no
    /// candidates (0: dense retrieval only).
    pub lexical_k: usize,
    /// Whether the catalog keeps a lexical index (BM25 retrieval, typo
    /// correction, BM25 of retrieved items against the whole catalog); off
    /// saves its memory, and retrieved items are weighed among themselves.
    pub lexical_index: bool,
    /// Above this many embedded items at start-up, that retrieval uses an
    /// inverted file instead of an exact scan.
    pub exact_scan_max: usize,
    /// Cells the inverted file scans per search, at least.
    pub ann_probe: usize,
    /// With PostgreSQL, where this replica keeps its inverted file and
    /// lexical index between restarts (the embedded store keeps them beside
    /// itself); `None`: built at every start-up.
    #[serde(default)]
    pub index_dir: Option<std::path::PathBuf>,
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
    /// Candidates whose relevance is below this share the last band.
    pub relevance_floor: f32,
    /// How much a full lexical match adds to query cosine in a candidate's
    /// relevance (`model::relevance`); 0 ranks by query cosine alone.
    pub lexical_weight: f32,
}

/// Most items one retrieval may hand to the head (`retrieve_k + lexical_k +
/// related_k + popular_k`): each is scored, so this bounds a request's work.
pub(crate) const MAX_RETRIEVED: usize = 10_000;

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
