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
//! other way round) and fails naming the
//! file and line; and it builds the library with the `offline` feature off,
//! which leaves the offline layer out, so no use of `offline` from the other
//! layers compiles, however spelt. The other arrows rest on the search alone,
//! which reads paths as written (not what a macro expands to).
//!
//! - [`config`]: layered configuration, parsed and validated once: the
//!   settings as the user wrote them, one typed section per module.
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
