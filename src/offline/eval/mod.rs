//! `shoprank eval`: EVAL_PROTOCOL v1 — the trained head against the four
//! baselines (random, popularity, text-cosine, item-knn), every method
//! ranking the full catalog of items each test user has not bought.
//!
//! With `--retrieve K` it also measures two-stage ranking as a request
//! without candidates gets it (`serve::retrieve`): the `K` items nearest to
//! the user text, the `catalog.related_k` items most linked to the history
//! and the `catalog.popular_k` most popular ones are retrieved; the head
//! ranks those, and every other item comes after them (`model-retrieve`).
//! The retrieval's recall (the share of a user's truth it keeps) is
//! reported beside it.

pub(crate) mod calibration;
pub(crate) mod chart;
pub(crate) mod revenue;

use std::collections::{BTreeMap, HashSet};

use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::model::candidates::{popular, related};
use crate::model::encoder::cosine;
use crate::model::features;
use crate::model::head::ScoringHead;
use crate::model::scoring;
use crate::model::stats::ItemPos;
use crate::offline::embed_store::EmbedStore;
use crate::offline::prepared::PreparedSplit;
use crate::offline::ranking_metrics::{mean, rank_by_score, score_ranking, RankingMetrics, CUTOFF};

use self::calibration::{CalibrationPairs, CalibrationReport};
use self::revenue::{expected_revenue, revenue_at_10, TestRevenue};

/// The protocol's baselines, in table order.
pub(crate) const BASELINES: [&str; 4] = ["random", "popularity", "text-cosine", "item-knn"];
/// Scores beyond the protocol's baselines, reported beside them: the
/// recent-purchase EASE score (`crate::offline::recent_ease`) is the strongest single
/// signal among the head's features, so the head has to beat it too.
pub(crate) const REFERENCES: [&str; 1] = ["recent-ease"];

/// Every method of a report, in table (and chart) order.
pub(crate) fn method_order() -> impl Iterator<Item = &'static str> {
    BASELINES.iter().chain(REFERENCES.iter()).copied().chain(["model", DEGRADED, COLD, REVENUE_OBJECTIVE, TWO_STAGE])
}

/// The head's calibrated probabilities times price (see `revenue`): the
/// `"objective": "revenue"` ranking, reported beside `model` whenever the
/// model is evaluated.
pub(crate) const REVENUE_OBJECTIVE: &str = "model-revenue";

/// The head scoring as a degraded answer does (`serve::ranker::degraded`),
/// when the user text cannot be embedded in time: the user vector is the
/// L2-normalised mean of the history items' embeddings
/// (`features::mean_of_history`); the history, candidates and statistics
/// are as for `model`. Reported beside `model` whenever the model is
/// evaluated: what a degraded answer costs.
pub(crate) const DEGRADED: &str = "model-degraded";

/// The degraded answer's worst case: no embedding of the user's at hand at
/// all (no user text, no history item cached or in the catalog). The user
/// vector is zero and the history has no embeddings, so the head ranks by
/// what it reads from the statistics (co-purchase and EASE links,
/// popularity, price) and the candidates' own embeddings.
pub(crate) const COLD: &str = "model-cold";

/// The head ranking only what retrieval found (`--retrieve`).
pub(crate) const TWO_STAGE: &str = "model-retrieve";

/// How many items each retrieval source gives (see `serve::retrieve`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct RetrievalSizes {
    pub retrieve_k: usize,
    pub related_k: usize,
    pub popular_k: usize,
}

/// The candidates retrieval keeps for test user `index`, as serving's
/// retrieval picks them: nearest to the user text, linked to the history,
/// popular.
pub(crate) fn retrieved(
    prepared: &PreparedSplit<'_>,
    store: &EmbedStore,
    index: usize,
    candidates: &[ItemPos],
    sizes: RetrievalSizes,
) -> HashSet<ItemPos> {
    let stats = &prepared.stats;
    let open: HashSet<ItemPos> = candidates.iter().copied().collect();
    let user = store.get(&prepared.user_texts[index]);
    let mut nearest: Vec<(f32, ItemPos)> =
        candidates.iter().map(|&p| (cosine(user, store.get(&stats.item(p).text)), p)).collect();
    let k = sizes.retrieve_k.min(nearest.len());
    if k > 0 && k < nearest.len() {
        nearest.select_nth_unstable_by(k - 1, |a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    }
    let mut kept: HashSet<ItemPos> = nearest[..k].iter().map(|&(_, p)| p).collect();
    let history: Vec<Option<ItemPos>> =
        prepared.history_positions(prepared.split.test_users[index].user).into_iter().map(Some).collect();
    for (source, share) in
        [(related(stats, &history), sizes.related_k), (popular(stats, sizes.popular_k * 4), sizes.popular_k)]
    {
        let mut left = share;
        for p in source {
            if left == 0 {
                break;
            }
            if open.contains(&p) && kept.insert(p) {
                left -= 1;
            }
        }
    }
    kept
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Counts {
    pub test_users: usize,
    pub catalog_items: usize,
    pub history_events: usize,
    /// With `--max-users`: how many test users the split had before the
    /// seeded sample (absent when every test user was ranked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampled_from: Option<usize>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct EvalReport {
    pub protocol: String,
    pub counts: Counts,
    pub methods: BTreeMap<String, RankingMetrics>,
    /// With `--retrieve`: the retrieval's sizes and mean recall (share of
    /// each user's truth among the retrieved items).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retrieval: Option<RetrievalReport>,
    /// Revenue@10 of each method (see `revenue`), in the log's currency.
    #[serde(default)]
    pub revenue: BTreeMap<String, f64>,
    /// How well the model's scores match the test period as probabilities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<CalibrationReport>,
}

/// What [`evaluate`] measured: each method's mean metrics and revenue@10,
/// the model's calibration, and (with retrieval) the retrieval's report.
pub(crate) struct Evaluation {
    pub methods: BTreeMap<String, RankingMetrics>,
    pub revenue: BTreeMap<String, f64>,
    pub calibration: Option<CalibrationReport>,
    pub retrieval: Option<RetrievalReport>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RetrievalReport {
    pub sizes: RetrievalSizes,
    pub mean_retrieved: f64,
    pub recall: f64,
}

/// Scores every candidate of test user `index` with one method.
// One flat call per (method, user): the arguments are what a method may need.
#[allow(clippy::too_many_arguments)]
fn method_scores(
    method: &str,
    prepared: &PreparedSplit<'_>,
    store: &EmbedStore,
    head: Option<&ScoringHead>,
    index: usize,
    candidates: &[ItemPos],
    seed: u64,
    kept: Option<&HashSet<ItemPos>>,
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
        DEGRADED => {
            let head = head.expect("model scores need a head");
            let positions = prepared.history_positions(user);
            let history = positions.iter().map(|&p| store.get(&stats.item(p).text));
            let dim = store.get(&prepared.user_texts[index]).len();
            let vector = features::mean_of_history(history).unwrap_or_else(|| vec![0.0; dim]);
            let context = prepared.user_context_with_vector(index, vector, store);
            let inputs: Vec<_> = candidates.iter().map(|&p| prepared.candidate(p, store)).collect();
            scoring::score(head, stats, &context, &inputs)?
        }
        COLD => {
            let head = head.expect("model scores need a head");
            let dim = store.get(&prepared.user_texts[index]).len();
            let positions: Vec<Option<ItemPos>> = prepared.history_positions(user).into_iter().map(Some).collect();
            let context = features::UserContext::new(stats, vec![0.0; dim], &positions, &[]);
            let inputs: Vec<_> = candidates.iter().map(|&p| prepared.candidate(p, store)).collect();
            scoring::score(head, stats, &context, &inputs)?
        }
        TWO_STAGE => {
            // The head scores what retrieval kept; everything else follows.
            let kept = kept.expect("two-stage scores need the retrieved set");
            let head = head.expect("model scores need a head");
            let context = prepared.user_context(index, store);
            let pool: Vec<ItemPos> = candidates.iter().copied().filter(|p| kept.contains(p)).collect();
            let inputs: Vec<_> = pool.iter().map(|&p| prepared.candidate(p, store)).collect();
            let scored = scoring::score(head, stats, &context, &inputs)?;
            let mut scores = vec![f32::NEG_INFINITY; candidates.len()];
            let mut scored = pool.iter().zip(scored);
            for (slot, p) in scores.iter_mut().zip(candidates) {
                if kept.contains(p) {
                    *slot = scored.next().expect("one score per kept item").1;
                }
            }
            scores
        }
        other => unreachable!("unknown method {other}"),
    })
}

/// Mean metrics and revenue@10 of each method over the split's test
/// users, the model's calibration (when `methods` holds `model`, whose
/// scores also give the `model-revenue` ranking), and (with `retrieval`)
/// the retrieval's report.
pub(crate) fn evaluate(
    prepared: &PreparedSplit<'_>,
    store: &EmbedStore,
    head: Option<&ScoringHead>,
    methods: &[&str],
    seed: u64,
    show_progress: bool,
    retrieval: Option<RetrievalSizes>,
) -> candle_core::Result<Evaluation> {
    let users = &prepared.split.test_users;
    let progress = if show_progress { ProgressBar::new(users.len() as u64) } else { ProgressBar::hidden() };
    progress
        .set_style(ProgressStyle::with_template("{msg:>16} {bar:40} {pos}/{len} users (eta {eta})").expect("template"));
    progress.set_message("ranking");
    let test_revenue = TestRevenue::of(&prepared.split);
    let mut per_method: BTreeMap<String, Vec<RankingMetrics>> = BTreeMap::new();
    let mut revenue: BTreeMap<String, f64> = BTreeMap::new();
    let mut calibration = CalibrationPairs::default();
    let (mut recall, mut retrieved_items) = (0f64, 0usize);
    for (index, test_user) in users.iter().enumerate() {
        let candidates = prepared.candidates(test_user.user);
        let truth = prepared.truth_positions(test_user);
        let user_revenue = test_revenue.for_user(&prepared.split, &prepared.stats, test_user.user, &test_user.truth);
        let kept = retrieval.map(|sizes| retrieved(prepared, store, index, &candidates, sizes));
        if let Some(kept) = &kept {
            retrieved_items += kept.len();
            recall += truth.iter().filter(|p| kept.contains(p)).count() as f64 / truth.len().max(1) as f64;
        }
        let mut record = |method: &str, scores: &[f32]| {
            let ranked = rank_by_score(&candidates, scores, |p| prepared.item_id(p));
            per_method.entry(method.to_string()).or_default().push(score_ranking(&ranked, &truth));
            *revenue.entry(method.to_string()).or_default() += revenue_at_10(&ranked, &user_revenue);
            ranked
        };
        let all_methods = methods.iter().copied().chain(kept.as_ref().map(|_| TWO_STAGE));
        for method in all_methods {
            let scores = method_scores(method, prepared, store, head, index, &candidates, seed, kept.as_ref())?;
            let ranked = record(method, &scores);
            if method == "model" {
                let by_position: std::collections::HashMap<ItemPos, f32> =
                    candidates.iter().copied().zip(scores.iter().copied()).collect();
                calibration.add_user(
                    candidates.iter().zip(&scores).map(|(p, &s)| (s, truth.contains(p))),
                    ranked.iter().take(CUTOFF).map(|p| (by_position[p], truth.contains(p))),
                );
                record(REVENUE_OBJECTIVE, &expected_revenue(&prepared.stats, &candidates, &scores));
            }
        }
        progress.inc(1);
    }
    progress.finish_and_clear();
    let count = users.len().max(1) as f64;
    let report = retrieval.map(|sizes| RetrievalReport {
        sizes,
        mean_retrieved: retrieved_items as f64 / count,
        recall: recall / count,
    });
    Ok(Evaluation {
        methods: per_method.into_iter().map(|(method, all)| (method, mean(&all))).collect(),
        revenue: revenue.into_iter().map(|(method, total)| (method, total / count)).collect(),
        calibration: calibration.report(),
        retrieval: report,
    })
}

/// The report as a fixed-width table, methods in a stable order.
pub(crate) fn format_table(report: &EvalReport) -> String {
    let counts = &report.counts;
    let sampled = counts.sampled_from.map(|all| format!(" (a seeded sample of {all})")).unwrap_or_default();
    let mut out = format!(
        "{} — {} test users{sampled}, {} catalog items, {} history events\n",
        report.protocol, counts.test_users, counts.catalog_items, counts.history_events
    );
    out.push_str(&format!(
        "{:<14} {:>8} {:>10} {:>7} {:>7} {:>7} {:>11}\n",
        "method", "NDCG@10", "Recall@10", "HR@10", "MRR", "AUC", "revenue@10"
    ));
    for method in method_order() {
        if let Some(m) = report.methods.get(method) {
            let revenue = report.revenue.get(method).map_or("-".to_string(), |r| format!("{r:.2}"));
            out.push_str(&format!(
                "{:<14} {:>8.4} {:>10.4} {:>7.3} {:>7.3} {:>7.3} {:>11}\n",
                method, m.ndcg10, m.recall10, m.hit10, m.mrr, m.auc, revenue
            ));
        }
    }
    if let Some(r) = &report.retrieval {
        out.push_str(&format!(
            "retrieval (retrieve_k {}, related_k {}, popular_k {}): {:.0} items a user, recall {:.4}\n",
            r.sizes.retrieve_k, r.sizes.related_k, r.sizes.popular_k, r.mean_retrieved, r.recall
        ));
    }
    if let Some(calibration) = &report.calibration {
        out.push_str(&calibration::format_calibration(calibration));
    }
    out
}
