//! EVAL_PROTOCOL v1 §4's ranking metrics for one user, and their mean.

use std::collections::HashSet;
use std::hash::Hash;

pub(crate) use crate::model::bundle::RankingMetrics;

pub(crate) const CUTOFF: usize = 10;

/// Metrics of `ranked` (every candidate, best first) against `truth` (a
/// non-empty subset of the candidates).
pub(crate) fn score_ranking<T: Eq + Hash>(ranked: &[T], truth: &HashSet<T>) -> RankingMetrics {
    let relevant = truth.len().min(CUTOFF);
    let ideal: f64 = (0..relevant).map(|r| 1.0 / ((r + 2) as f64).log2()).sum();
    let mut dcg = 0.0;
    let mut hits = 0usize;
    let mut first_hit = None;
    let mut positives_seen = 0usize;
    let mut ordered_pairs = 0usize;
    let positives = ranked.iter().filter(|i| truth.contains(i)).count();
    let negatives = ranked.len() - positives;
    for (position, item) in ranked.iter().enumerate() {
        if truth.contains(item) {
            if position < CUTOFF {
                dcg += 1.0 / ((position + 2) as f64).log2();
                hits += 1;
            }
            first_hit.get_or_insert(position + 1);
            positives_seen += 1;
        } else {
            // Every positive above this negative is a correctly ordered pair.
            ordered_pairs += positives_seen;
        }
    }
    let auc =
        if positives == 0 || negatives == 0 { 0.5 } else { ordered_pairs as f64 / (positives * negatives) as f64 };
    RankingMetrics {
        ndcg10: if ideal > 0.0 { dcg / ideal } else { 0.0 },
        recall10: if relevant > 0 { hits as f64 / relevant as f64 } else { 0.0 },
        hit10: if hits > 0 { 1.0 } else { 0.0 },
        mrr: first_hit.map_or(0.0, |r| 1.0 / r as f64),
        auc,
    }
}

/// The mean of per-user metrics.
pub(crate) fn mean(all: &[RankingMetrics]) -> RankingMetrics {
    let n = all.len().max(1) as f64;
    let sum = |f: fn(&RankingMetrics) -> f64| all.iter().map(f).sum::<f64>() / n;
    RankingMetrics {
        ndcg10: sum(|m| m.ndcg10),
        recall10: sum(|m| m.recall10),
        hit10: sum(|m| m.hit10),
        mrr: sum(|m| m.mrr),
        auc: sum(|m| m.auc),
    }
}

/// Candidate order: score descending, ties by item id ascending.
pub(crate) fn rank_by_score<'a, T: Copy>(candidates: &[T], scores: &[f32], id: impl Fn(T) -> &'a str) -> Vec<T> {
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    let ids: Vec<&str> = candidates.iter().map(|&c| id(c)).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then_with(|| ids[a].cmp(ids[b])));
    order.into_iter().map(|i| candidates[i]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn truth(items: &[u32]) -> HashSet<u32> {
        items.iter().copied().collect()
    }

    #[test]
    fn perfect_ranking_scores_one() {
        let m = score_ranking(&[1, 2, 3, 4], &truth(&[1, 2]));
        assert_eq!(m, RankingMetrics { ndcg10: 1.0, recall10: 1.0, hit10: 1.0, mrr: 1.0, auc: 1.0 });
    }

    #[test]
    fn hand_computed_case() {
        // Truth {b, d} at ranks 2 and 4 of 5.
        let m = score_ranking(&[10, 11, 12, 13, 14], &truth(&[11, 13]));
        let dcg = 1.0 / 3f64.log2() + 1.0 / 5f64.log2();
        let ideal = 1.0 + 1.0 / 3f64.log2();
        assert!((m.ndcg10 - dcg / ideal).abs() < 1e-12);
        assert_eq!(m.recall10, 1.0);
        assert_eq!(m.hit10, 1.0);
        assert_eq!(m.mrr, 0.5);
        // Pairs (pos, neg) ordered right: 11 beats 12,14; 13 beats 14 → 3 of 2·3.
        assert!((m.auc - 0.5).abs() < 1e-12);
    }

    #[test]
    fn truth_beyond_the_cutoff() {
        // 12 truth items, none in the top 10 of 30: ideal DCG uses 10 items.
        let ranked: Vec<u32> = (0..30).collect();
        let t: HashSet<u32> = (18..30).collect();
        let m = score_ranking(&ranked, &t);
        assert_eq!((m.ndcg10, m.recall10, m.hit10), (0.0, 0.0, 0.0));
        assert_eq!(m.mrr, 1.0 / 19.0);
        assert_eq!(m.auc, 0.0);
    }

    #[test]
    fn recall_divides_by_min_of_truth_and_ten() {
        let ranked: Vec<u32> = (0..40).collect();
        let t: HashSet<u32> = (0..5).chain(20..35).collect(); // 20 truth, 5 in top 10
        let m = score_ranking(&ranked, &t);
        assert!((m.recall10 - 0.5).abs() < 1e-12);
    }

    #[test]
    fn ties_break_by_item_id() {
        let ids = ["id0", "id1", "id2", "id3"];
        let order = rank_by_score(&[3, 1, 2], &[0.5, 0.5, 0.9], |i| ids[i as usize]);
        assert_eq!(order, [2, 1, 3]);
    }

    #[test]
    fn mean_averages_each_metric() {
        let a = RankingMetrics { ndcg10: 1.0, recall10: 0.0, hit10: 1.0, mrr: 0.5, auc: 0.25 };
        let b = RankingMetrics::default();
        assert_eq!(mean(&[a, b]).mrr, 0.25);
    }
}
