//! shoprank: an online product-recommendation service. A storefront sends a
//! user (query, profile text, recently bought or viewed titles) and candidate
//! products; shoprank embeds both with a BERT encoder run in process by
//! Candle, scores every pair with an MLP head trained on real purchase logs,
//! and returns the candidates ranked by predicted purchase probability.
//!
//! # Layout
//!
//! Four layers, visible in the folders. `serve` and `offline` both build on
//! `model` and `store`; neither imports the other, and `model` and `store`
//! import neither.
//! `scripts/check-layers` (run by CI) proves it: it builds the library with
//! the `offline` feature off, which leaves the offline layer out.
//!
//! - [`config`]: layered configuration, parsed and validated once.
//! - [`model`]: what a trained bundle *is* and how it scores — the encoder
//!   (with its private kernels), the head, the features, the user text, the
//!   served history statistics, the one scoring function, the bundle
//!   (load/save/version).
//! - [`store`]: where the catalog and the feedback events are kept — the
//!   embedded SQLite file or PostgreSQL, behind one trait, with versioned
//!   migrations.
//! - [`serve`]: what a running process *does* — `Service::build`, the HTTP
//!   API, the ranker (`serve::ranker`: request types, pipeline, the
//!   explanations' wording), the embed job (`serve::embed`: the embedding
//!   cache's bookkeeping, the encoder's queue, admission and batching
//!   thread, the catalog's background lane) and the metrics. HTTP never
//!   touches tensors.
//! - [`offline`] (feature `offline`, on by default): how bundles are *made
//!   and judged* — log importers, time splits, the statistics builder, EASE,
//!   training, EVAL_PROTOCOL v1 evaluation and the `train`/`eval`/`embed`
//!   commands.

pub mod config;
pub mod model;
#[cfg(feature = "offline")]
pub mod offline;
pub mod serve;
pub mod store;
