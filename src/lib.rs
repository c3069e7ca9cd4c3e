//! shoprank: an online product-recommendation service. A storefront sends a
//! user (query, profile text, recently bought or viewed titles) and candidate
//! products; shoprank embeds both with a BERT encoder run in process by
//! Candle, scores every pair with an MLP head trained on real purchase logs,
//! and returns the candidates ranked by predicted purchase probability.
//!
//! # Layout
//!
//! Four layers, visible in the folders, on a leaf of configuration. `serve`
//! and `offline` both build on `model` and `store`; neither imports the
//! other, and `model` and `store` import neither. `config` imports no other
//! module of the crate: a setting says what was written (`precision =
//! "auto"`), and the layer that acts on it resolves it (the encoder, when it
//! opens).
//!
//! `scripts/check-layers` (run by CI) checks exactly this: it searches each
//! folder's source for imports and paths into the modules it must not use
//! (`config/` into any other; `model/` and `store/` into `serve`/`offline`;
//! `serve/` into `offline`; `offline/` into `serve`; `serve/` outside its
//! `api/` into `serve::api`, so the HTTP edge sits on the service and not the
//! other way round; any file outside `serve/api/` naming utoipa) and fails
//! naming the file and line; and it builds the library with the `offline` feature off,
//! which leaves the offline layer out, so no use of `offline` from the other
//! layers compiles, however spelt. The other arrows rest on the search alone,
//! which reads paths as written (not what a macro expands to).
//!
//! - `config`: layered configuration, parsed and validated once: the
//!   settings as the user wrote them, one typed section per module.
//! - `model`: what a trained bundle *is* and how it scores — the encoder
//!   (with its private kernels), the head, the features, the user text, the
//!   served history statistics, the one scoring function, the lexical
//!   index and query relevance (BM25, typos, fusion with cosine), the
//!   bundle (load/save/version).
//! - `store`: where the catalog and the feedback events are kept — the
//!   embedded SQLite file or PostgreSQL, behind one trait, with versioned
//!   migrations.
//! - `serve`: what a running process *does* — `Service::build`, the HTTP
//!   API (with the wire types and their OpenAPI schemas: `serve::api` is
//!   the one module that names utoipa), the ranker (`serve::ranker`: request
//!   types, pipeline, the explanations' wording), the embed job
//!   (`serve::embed`: the embedding cache's bookkeeping, the encoder's
//!   queue, admission and batching thread, the catalog's background lane),
//!   the catalog in memory (`serve::catalog`: int8 vectors, the inverted
//!   file saved beside the store, lexical index, attribute filters and
//!   facets, replica sync), retrieval and the
//!   metrics. HTTP never touches tensors.
//! - `offline` (feature `offline`, on by default): how bundles are *made
//!   and judged* — log importers, time splits, the statistics builder, EASE,
//!   training, EVAL_PROTOCOL v1 evaluation and the `train`/`eval`/`embed`
//!   commands.

//!
//! # Public surface
//!
//! Every module is private to the crate, and everything in them is
//! `pub(crate)` (the `unreachable_pub` lint, under clippy's `-D warnings`,
//! keeps a stray `pub` from widening it). What the binary, the integration
//! tests, the benches and the fuzz targets use is re-exported here, at the
//! root, and nothing else. Of those types, only the methods those users call
//! are `pub`; the types that their signatures and public fields mention are
//! reachable through them but cannot be named from outside.
//!
//! - Configuration: [`Settings`] (`Settings::load`, `load_with_preset`) and
//!   the sections tests build or edit: [`EncoderSettings`], [`Precision`],
//!   [`LinearLayer`], [`BatchingSettings`], [`UserTextBudget`],
//!   [`StoreLocation`], [`VariantSettings`].
//! - Serving: [`Service`] (`Service::build`, the one way to make a running
//!   service), [`Metrics`]; the HTTP edge: [`app`] (the router, for
//!   `oneshot` tests), [`AppState`], [`serve`] (what `shoprank serve`
//!   runs), [`serve_on`] (the server loop on a given listener),
//!   [`ConnectionLimits`], [`shutdown_signal`], and for the fuzz target
//!   [`parse_body`] with [`RecommendRequest`] and [`UpsertRequest`]. The
//!   parts that tests and benches drive directly: [`Ranker`] with
//!   [`RankQuery`], [`Candidate`], [`HistoryItem`], [`Objective`] and [`ItemFilter`]; the
//!   embed job's [`Embedder`], [`Batcher`], [`BatchForward`], [`Ticket`] and
//!   [`EmbedError`]; [`EmbeddingCache`], [`CatalogIndex`] (with [`IndexOptions`]
//!   and [`AnnStart`], [`LexicalStart`]),
//!   [`TitleTokenCache`].
//! - The model: [`Bundle`], [`publish_version`] (a bundle version made
//!   current), [`Encoder`], [`EncoderFiles`], [`EncoderError`],
//!   [`TokenizedText`], [`cosine`], [`configure_threads`]; the user text:
//!   [`compose`], [`compose_with_ids`], [`compose_with_ids_from`],
//!   [`UserSignals`], [`IdJoin`], [`PartTokens`]; the served statistics and
//!   features: [`HistoryStats`], [`ItemStats`], [`ItemPos`], [`Numeric`],
//!   [`numeric_features`], [`Banding`]; for the live-statistics bench,
//!   [`merge_live_stats`] and [`Purchase`].
//! - The store: [`Store`] and [`open_store`], [`PoolLimits`],
//!   [`SqliteStore`], [`CatalogStore`], [`CatalogItem`], [`PendingItem`],
//!   [`EventKind`], [`FeedbackEvent`], [`VariantCount`].
//! - Offline (feature `offline`): [`OfflineCommand`] (the binary's
//!   `train`, `eval`, `eval-search`, `embed`, `scale-data`, `store` and
//!   `report`), and for the real-data and search tests [`Dataset`],
//!   [`DataSource`], [`parse_time`], [`Split`], [`PROTOCOL_T_TEST`],
//!   [`PROTOCOL_T_VAL`], [`PreparedSplit`], [`SplitSettings`],
//!   [`EmbedStore`], [`train`], [`TrainOptions`], [`build_query_set`],
//!   [`evaluate_search`], [`QuerySetRule`].

// The surface is the full build's (default features): without `offline`
// its re-exports are gone, and what only they reach would read as
// unreachable. Likewise the model's bundle-making half (saving, fitting,
// claiming a version) has no caller there: those items say
// `cfg_attr(not(feature = "offline"), allow(dead_code))`, one by one.
#![cfg_attr(feature = "offline", warn(unreachable_pub))]

mod config;
mod model;
#[cfg(feature = "offline")]
mod offline;
mod serve;
mod store;

pub use crate::config::{
    BatchingSettings, EncoderSettings, LinearLayer, Precision, Settings, StoreLocation, UserTextBudget, VariantSettings,
};
pub use crate::model::bundle::Bundle;
pub use crate::model::encoder::{cosine, Encoder, EncoderError, TokenizedText};
pub use crate::model::features::{numeric as numeric_features, Numeric, NUMERIC_FEATURES};
pub use crate::model::files::EncoderFiles;
pub use crate::model::lexical::{LexicalIndex, LexicalQuery, Reconciled};
pub use crate::model::live_stats::{merge as merge_live_stats, Purchase};
pub use crate::model::relevance::Banding;
pub use crate::model::stats::{HistoryStats, ItemPos, ItemStats};
pub use crate::model::threads::configure_threads;
pub use crate::model::user_text::{compose, compose_with_ids, compose_with_ids_from, IdJoin, PartTokens, UserSignals};
pub use crate::model::versions::publish as publish_version;
#[cfg(feature = "offline")]
pub use crate::offline::{
    cli::OfflineCommand,
    data::split::{Split, PROTOCOL_T_TEST, PROTOCOL_T_VAL},
    data::{parse_time, DataSource, Dataset},
    embed_store::EmbedStore,
    prepared::{PreparedSplit, SplitSettings},
    search_eval::{build_query_set, evaluate_search, QuerySetRule},
    train::{train, TrainOptions},
};
pub use crate::serve::api::catalog_types::UpsertRequest;
pub use crate::serve::api::json::parse as parse_body;
pub use crate::serve::api::types::RecommendRequest;
pub use crate::serve::api::{app, run as serve_on, serve, shutdown_signal, AppState, ConnectionLimits};
pub use crate::serve::cache::EmbeddingCache;
pub use crate::serve::catalog::attributes::AttributeFilter;
pub use crate::serve::catalog::index::{AnnStart, CatalogIndex, IndexOptions, ItemFilter, LexicalStart};
pub use crate::serve::embed::{BatchForward, Batcher, EmbedError, Embedder, Ticket};
pub use crate::serve::metrics::Metrics;
pub use crate::serve::ranker::{Candidate, HistoryItem, Objective, RankQuery, Ranker};
pub use crate::serve::service::Service;
pub use crate::serve::title_tokens::TitleTokenCache;
pub use crate::store::catalog::{CatalogItem, CatalogStore, PendingItem};
pub use crate::store::event_log::{EventKind, FeedbackEvent, VariantCount};
pub use crate::store::sqlite::SqliteStore;
pub use crate::store::{open as open_store, PoolLimits, Store};
