//! `shoprank eval`: EVAL_PROTOCOL v1 — the trained head against the four
//! baselines (random, popularity, text-cosine, item-knn), every method
//! ranking the full catalog of items each test user has not bought.

pub mod chart;

use std::collections::BTreeMap;

use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::model::encoder::cosine;
use crate::model::head::ScoringHead;
use crate::model::scoring;
use crate::model::stats::ItemPos;
use crate::offline::embed_store::EmbedStore;
use crate::offline::prepared::PreparedSplit;
use crate::offline::ranking_metrics::{mean, rank_by_score, score_ranking, RankingMetrics};

/// The protocol's baselines, in table order.
pub const BASELINES: [&str; 4] = ["random", "popularity", "text-cosine", "item-knn"];
/// Scores beyond the protocol's baselines, reported beside them: the
/// recent-purchase EASE score (`crate::offline::recent_ease`) is the strongest single
/// signal among the head's features, so the head has to beat it too.
pub const REFERENCES: [&str; 1] = ["recent-ease"];

/// Every method of a report, in table (and chart) order.
pub fn method_order() -> impl Iterator<Item = &'static str> {
    BASELINES.iter().chain(REFERENCES.iter()).copied().chain(std::iter::once("model"))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Counts {
    pub test_users: usize,
    pub catalog_items: usize,
    pub history_events: usize,
    /// With `--max-users`: how many test users the split had before the
    /// seeded sample (absent when every test user was ranked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampled_from: Option<usize>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalReport {
    pub protocol: String,
    pub counts: Counts,
    pub methods: BTreeMap<String, RankingMetrics>,
}

/// Scores every candidate of test user `index` with one method.
fn method_scores(
    method: &str,
    prepared: &PreparedSplit<'_>,
    store: &EmbedStore,
    head: Option<&ScoringHead>,
    index: usize,
    candidates: &[ItemPos],
    seed: u64,
) -> candle_core::Result<Vec<f32>> {
    let user = prepared.split.test_users[index].user;
    let stats = &prepared.stats;
    Ok(match method {
        "random" => {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            candidates.iter().map(|_| rng.gen::<f32>()).collect()
        }
        "popularity" => candidates.iter().map(|&p| stats.item(p).buyers as f32).collect(),
        "text-cosine" => {
            let u = store.get(&prepared.user_texts[index]);
            candidates.iter().map(|&p| cosine(u, store.get(&stats.item(p).text))).collect()
        }
        "item-knn" => {
            // Summed in history order for every candidate, as a dense sum would.
            let mut scores = vec![0f32; stats.items.len()];
            for h in prepared.history_positions(user) {
                for (q, cosine) in prepared.co_purchase.cosines(h.index()) {
                    scores[q] += cosine;
                }
            }
            candidates.iter().map(|&p| scores[p.index()]).collect()
        }
        "recent-ease" => {
            let mut scores = vec![0f32; stats.items.len()];
            for h in prepared.history_positions(user) {
                for &(neighbour, weight) in &stats.item(h).recent_ease {
                    scores[neighbour.index()] += weight;
                }
            }
            candidates.iter().map(|&p| scores[p.index()]).collect()
        }
        "model" => {
            let head = head.expect("model scores need a head");
            let context = prepared.user_context(index, store);
            let inputs: Vec<_> = candidates.iter().map(|&p| prepared.candidate(p, store)).collect();
            scoring::score(head, stats, &context, &inputs)?
        }
        other => unreachable!("unknown method {other}"),
    })
}

/// Mean metrics of each method over the split's test users.
pub fn evaluate(
    prepared: &PreparedSplit<'_>,
    store: &EmbedStore,
    head: Option<&ScoringHead>,
    methods: &[&str],
    seed: u64,
    show_progress: bool,
) -> candle_core::Result<BTreeMap<String, RankingMetrics>> {
    let users = &prepared.split.test_users;
    let progress = if show_progress { ProgressBar::new(users.len() as u64) } else { ProgressBar::hidden() };
    progress
        .set_style(ProgressStyle::with_template("{msg:>16} {bar:40} {pos}/{len} users (eta {eta})").expect("template"));
    progress.set_message("ranking");
    let mut per_method: BTreeMap<String, Vec<RankingMetrics>> = BTreeMap::new();
    for (index, test_user) in users.iter().enumerate() {
        let candidates = prepared.candidates(test_user.user);
        let truth = prepared.truth_positions(test_user);
        for &method in methods {
            let scores = method_scores(method, prepared, store, head, index, &candidates, seed)?;
            let ranked = rank_by_score(&candidates, &scores, |p| prepared.item_id(p));
            per_method.entry(method.to_string()).or_default().push(score_ranking(&ranked, &truth));
        }
        progress.inc(1);
    }
    progress.finish_and_clear();
    Ok(per_method.into_iter().map(|(method, all)| (method, mean(&all))).collect())
}

/// The report as a fixed-width table, methods in a stable order.
pub fn format_table(report: &EvalReport) -> String {
    let counts = &report.counts;
    let sampled = counts.sampled_from.map(|all| format!(" (a seeded sample of {all})")).unwrap_or_default();
    let mut out = format!(
        "{} — {} test users{sampled}, {} catalog items, {} history events\n",
        report.protocol, counts.test_users, counts.catalog_items, counts.history_events
    );
    out.push_str(&format!(
        "{:<12} {:>8} {:>10} {:>7} {:>7} {:>7}\n",
        "method", "NDCG@10", "Recall@10", "HR@10", "MRR", "AUC"
    ));
    for method in method_order() {
        if let Some(m) = report.methods.get(method) {
            out.push_str(&format!(
                "{:<12} {:>8.4} {:>10.4} {:>7.3} {:>7.3} {:>7.3}\n",
                method, m.ndcg10, m.recall10, m.hit10, m.mrr, m.auc
            ));
        }
    }
    out
}
