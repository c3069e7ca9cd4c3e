//! The serving layer: what a running `shoprank serve` process does.
//!
//! - [`service`]: `Service::build` (encoder, embedder, bundle, warm-up) — the
//!   one constructor `main`, the integration tests and the benches use — and
//!   `serve`, which binds, loads and runs until a shutdown signal.
//! - [`api`]: axum routes, request/response types, the error → status map.
//! - [`ranker`]: a validated query and a bundle in, ranked candidates out (no HTTP).
//! - [`retrieve`]: candidates from the catalog for a request without any.
//! - [`catalog`]: the items shoprank keeps: durable store, in-memory index,
//!   background embedding.
//! - [`batcher`]: the encoder's own thread, packing texts of concurrent
//!   requests into batches, and the cached [`batcher::Embedder`] in front of it.
//! - [`cache`]: bounded LRU of text embeddings.
//! - [`title_tokens`]: bounded LRU of history titles' tokens, for composing user texts.
//! - [`metrics`]: the Prometheus registry and every metric shoprank exports.

pub mod api;
pub mod batcher;
pub mod cache;
pub mod catalog;
pub mod events;
pub mod metrics;
pub mod ranker;
pub mod retrieve;
pub mod service;
pub mod title_tokens;
pub mod variants;
