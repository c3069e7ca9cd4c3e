//! The offline layer: how bundles are made and judged. Built on
//! [`crate::model`]; the server never imports it (see `scripts/check-layers`).
//!
//! - [`data`]: purchase logs (UCI Online Retail, the generic events/items
//!   format) → one [`data::Dataset`], and EVAL_PROTOCOL v1's time split.
//! - [`text_embedder`]: the narrow text-embedding trait the pipeline needs
//!   (BERT in production, a hashing embedder in tests).
//! - [`embed_store`]: embeddings of many texts, kept on disk between runs.
//! - [`stats_builder`], [`recent_ease`]: the history statistics a bundle ships.
//! - [`prepared`]: a split made ready for scoring (statistics, user texts, embeddings).
//! - [`scale_data`]: larger logs derived from a real one, to measure scaling.
//! - [`search_eval`]: `shoprank eval-search` — does a query matter? A labelled query set.
//! - [`search_terms`]: title words, the query relevance rule, pseudo-queries.
//! - [`search_judged`]: `shoprank eval-search --judged` — search on a shop's
//!   own judged queries (real queries, graded judgements) over its whole catalog.
//! - [`judged_typos`]: the same queries with one typo each (`--typos`).
//! - [`resources`]: wall time and peak memory of each stage of a run.
//! - [`ranking_metrics`]: NDCG@10, Recall@10, HR@10, MRR, AUC of one ranking.
//! - [`replay`]: `shoprank replay` — frozen against live statistics, day by day.
//! - [`train`]: `shoprank train` — examples, epochs, model selection, refit, ensemble.
//! - [`eval`]: `shoprank eval` — EVAL_PROTOCOL v1 tables and chart.
//! - [`cli`]: the `train`, `eval` and `embed` commands' arguments and runs.

pub(crate) mod cli;
pub(crate) mod data;
pub(crate) mod embed_store;
pub(crate) mod eval;
pub(crate) mod judged_typos;
pub(crate) mod prepared;
pub(crate) mod ranking_metrics;
pub(crate) mod recent_ease;
pub(crate) mod replay;
pub(crate) mod resources;
pub(crate) mod scale_data;
pub(crate) mod search_eval;
pub(crate) mod search_judged;
pub(crate) mod search_terms;
pub(crate) mod stats_builder;
pub(crate) mod text_embedder;
pub(crate) mod train;
