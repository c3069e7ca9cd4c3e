//! The serving layer: what a running `shoprank serve` process does.
//!
//! - [`service`]: `Service::build` (encoder, embedder, bundle, warm-up) — the
//!   one constructor `api::serve`, the integration tests and the benches use.
//! - [`api`]: axum routes, request/response types, the error → status map.
//! - [`ranker`]: a validated query and a bundle in, ranked candidates out (no
//!   HTTP): the request types, the pipeline, the explanations' wording.
//! - [`retrieve`]: candidates from the catalog for a request without any.
//! - [`catalog`]: the items shoprank keeps: durable store, in-memory index,
//!   background embedding.
//! - [`embed`]: the embed job: texts in, vectors out. The cached
//!   [`embed::Embedder`] in front of the encoder's own thread, which packs
//!   texts of concurrent requests into batches; its queue, admission,
//!   request tickets and the catalog's background lane.
//! - [`cache`]: bounded LRU of text embeddings.
//! - [`title_tokens`]: bounded LRU of history titles' tokens, for composing user texts.
//! - [`metrics`]: the Prometheus registry and every metric shoprank exports.
//! - [`live_stats`]: the serving bundle's statistics brought forward from
//!   the stored purchases on a timer.
//! - [`console`]: the merchandisers' page (`GET /console`), its HTML, CSS and
//!   JavaScript compiled into the binary; it calls only the documented API.

pub(crate) mod api;
pub(crate) mod cache;
pub(crate) mod catalog;
pub(crate) mod console;
pub(crate) mod embed;
pub(crate) mod event_writer;
pub(crate) mod live_stats;
pub(crate) mod metrics;
pub(crate) mod ranker;
pub(crate) mod retrieve;
pub(crate) mod service;
pub(crate) mod title_tokens;
pub(crate) mod variants;
