//! shoprank: an online product-recommendation service. A storefront sends a
//! user (query, profile text, recently bought or viewed titles) and candidate
//! products; shoprank embeds both with a BERT encoder run in process by
//! Candle, scores every pair with an MLP head trained on real purchase logs,
//! and returns the candidates ranked by predicted purchase probability.
//!
//! # Layout
//!
//! Dependencies point down this list; HTTP never touches tensors.
//!
//! - [`config`]: layered configuration, parsed and validated once.
//! - [`model_files`]: where the encoder's files come from (local dir or hf-hub).
//! - [`kernels`]: fused CPU kernels (gemm products on strided views, GELU, softmax, layer norm).
//! - [`bert_fast`]: shoprank's packed (padding-free) BERT forward pass, f32 or int8.
//! - [`encoder`]: tokenize → forward → mean-pool → L2-normalise.
//! - [`embed_store`]: embeddings of many texts for offline jobs, kept on disk between runs.
//! - [`user_text`]: user signals → one budgeted user text.
//! - [`stats`]: history statistics (popularity, prices, co-purchase) shipped with the head.
//! - [`features`]: the one feature builder used by training and serving.
//! - [`head`]: the MLP scoring head, its spec, load/save.
//! - [`cache`]: bounded LRU of text embeddings.
//! - [`batcher`]: the encoder's own thread, packing texts of concurrent requests into batches.
//! - [`ranker`]: a validated query in, ranked candidates out (no HTTP).
//! - [`metrics`]: the Prometheus registry and every metric shoprank exports.
//! - [`api`]: axum routes, request/response types, the error → status map.
//! - [`data`], [`eval`], [`train`]: purchase logs, EVAL_PROTOCOL v1, and training.

pub mod api;
pub mod batcher;
pub mod bert_fast;
pub mod cache;
pub mod config;
pub mod data;
pub mod embed_store;
pub mod encoder;
pub mod eval;
pub mod features;
pub mod head;
pub mod kernels;
pub mod metrics;
pub mod model_files;
pub mod ranker;
pub mod recent_ease;
pub mod stats;
pub mod train;
pub mod user_text;
