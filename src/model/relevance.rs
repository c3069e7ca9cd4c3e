//! Query relevance first. With a search query, a product that does not match
//! it should not outrank one that does because it sells more: purchase
//! probability orders the products *within* a level of relevance. The head
//! alone learns this only in part (its query features compete with strong
//! purchase statistics; `shoprank eval-search` measures the gap), so ranking
//! with a query groups the candidates into **relevance bands** and orders
//! band by band, each band by the head's probability.
//!
//! **Relevance** fuses the two ways a product matches a query: its
//! embedding's cosine to the query's, and its BM25 for the query's words
//! (`model::lexical`), min-max normalised over the candidates:
//!
//! `relevance = query cosine + lexical_weight × BM25 / best BM25 among the candidates`
//!
//! A convex combination of normalised scores is what Bruch, Gai & Ingber
//! ("An Analysis of Fusion Functions for Hybrid Retrieval", ACM TOIS 2023)
//! found to beat reciprocal-rank fusion with one tuned weight; the weight is
//! in cosine units, so each encoder preset sets it. Cosine alone blurs
//! brand names, sizes and model numbers; BM25 alone misses synonyms.
//!
//! `band = ⌊(best relevance among the candidates − relevance) / margin⌋`
//!
//! Band 0 holds the candidates within `margin` of the best match, band 1 the
//! next `margin`, and so on. Candidates whose relevance is below `floor`
//! are unrelated to the query (all-MiniLM-L6-v2 puts unrelated product texts
//! at 0 to 0.25 from a query, and they match no word), and differences among
//! them are noise, so they share one last band, ordered by probability alone:
//! a search for "red retrospot" shows the matching cake cases first, then
//! what this shopper is likeliest to buy, not a car tyre that happens to
//! score 0.22 against a bag's 0.20. `margin` → 0 is ranking by relevance
//! alone, `margin` → ∞ by the head alone; `search.relevance_margin`,
//! `search.relevance_floor` and `search.lexical_weight` set them (margin 0
//! turns banding off). Without a query there are no bands.

use crate::config::SearchSettings;

/// Bands `margin` wide over relevances fused with `lexical_weight`;
/// candidates below `floor` in the last band.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Banding {
    pub margin: f32,
    pub floor: f32,
    pub lexical_weight: f32,
}

impl Banding {
    /// `search.relevance_margin`, `search.relevance_floor` and `search.lexical_weight`.
    pub fn from_settings(search: &SearchSettings) -> Self {
        Self { margin: search.relevance_margin, floor: search.relevance_floor, lexical_weight: search.lexical_weight }
    }

    /// Each candidate's relevance (see the module docs) from its query
    /// cosine and its BM25; `bm25` all 0 (no word matched) leaves cosines.
    pub fn relevance(&self, query_cosines: &[f32], bm25: &[f32]) -> Vec<f32> {
        let best = bm25.iter().copied().fold(0.0f32, f32::max);
        if best <= 0.0 || self.lexical_weight <= 0.0 {
            return query_cosines.to_vec();
        }
        query_cosines.iter().zip(bm25).map(|(c, b)| c + self.lexical_weight * b / best).collect()
    }

    /// Relevance from the words alone, for a query whose vector is not at
    /// hand (a degraded answer): a candidate matching none of its words is
    /// unrelated (below `floor`); one that matches sits just above `floor`
    /// by its lexical share, `floor + lexical_weight × BM25 / best`, so the
    /// bands follow BM25 in the steps a full answer's lexical side takes.
    /// Cosines in the formula above would be 0, putting every candidate
    /// under the floor and dropping the words' evidence.
    pub fn lexical_relevance(&self, bm25: &[f32]) -> Vec<f32> {
        let best = bm25.iter().copied().fold(0.0f32, f32::max);
        let below = self.floor - 1.0;
        if best <= 0.0 {
            return vec![below; bm25.len()];
        }
        let weight = self.lexical_weight.max(self.margin);
        bm25.iter().map(|&b| if b > 0.0 { self.floor + weight * b / best } else { below }).collect()
    }
}

/// The band of each candidate by its relevance (see the module docs); all
/// 0 when the margin is not positive.
pub(crate) fn bands(relevances: &[f32], banding: Banding) -> Vec<u32> {
    let Banding { margin, floor, .. } = banding;
    if margin.is_nan() || margin <= 0.0 {
        return vec![0; relevances.len()];
    }
    let best = relevances.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    // Cosines lie in [-1, 1], the lexical share in [0, weight]: at most
    // (2 + weight) / margin bands above the last.
    let span = 2.0 + banding.lexical_weight.clamp(0.0, 1e3);
    let last = (span / margin).ceil().min(1e6) as u32 + 1;
    relevances
        .iter()
        .map(|&c| if c < floor { last } else { ((best - c) / margin).floor().clamp(0.0, 1e6) as u32 })
        .collect()
}

/// Which candidates are unrelated to the query: those in the last band,
/// below `floor` (none when the margin is not positive: no bands).
pub(crate) fn unrelated(relevances: &[f32], banding: Banding) -> Vec<bool> {
    let Banding { margin, floor, .. } = banding;
    if margin.is_nan() || margin <= 0.0 {
        return vec![false; relevances.len()];
    }
    relevances.iter().map(|&c| c < floor).collect()
}

/// Sort keys that order band by band, by probability within a band:
/// `probability − band` (probabilities lie in [0, 1], so a lower band always
/// comes first). Used for ordering only; responses report the probability.
pub(crate) fn banded_keys(probabilities: &[f32], relevances: &[f32], banding: Banding) -> Vec<f32> {
    bands(relevances, banding).into_iter().zip(probabilities).map(|(band, p)| p - band as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bands_group_by_distance_to_the_best_match_and_order_by_probability_within() {
        let cosines = [0.80, 0.75, 0.62, 0.30, 0.79, 0.25];
        let banding = Banding { margin: 0.1, floor: 0.35, lexical_weight: 0.0 };
        // 0.30 and 0.25 are below the floor: one last band (21).
        assert_eq!(bands(&cosines, banding), [0, 0, 1, 21, 0, 21]);
        let keys = banded_keys(&[0.1, 0.9, 0.99, 0.2, 0.5, 0.6], &cosines, banding);
        let mut order: Vec<usize> = (0..6).collect();
        order.sort_by(|&a, &b| keys[b].total_cmp(&keys[a]));
        // Band 0 by probability (1, 4, 0), then band 1 (2), then the
        // unrelated ones by probability alone (5 before 3).
        assert_eq!(order, [1, 4, 0, 2, 5, 3]);
        assert_eq!(bands(&cosines, Banding { margin: 0.0, ..banding }), [0; 6], "margin 0: no bands");
        assert_eq!(unrelated(&cosines, banding), [false, false, false, true, false, true], "the last band");
        assert_eq!(unrelated(&cosines, Banding { margin: 0.0, ..banding }), [false; 6]);
    }

    #[test]
    fn relevance_adds_the_weighted_share_of_the_best_bm25() {
        let banding = Banding { margin: 0.12, floor: 0.35, lexical_weight: 0.2 };
        let relevance = banding.relevance(&[0.5, 0.6, 0.3], &[4.0, 0.0, 2.0]);
        let expected = [0.7, 0.6, 0.4];
        assert!(relevance.iter().zip(expected).all(|(r, e)| (r - e).abs() < 1e-6), "{relevance:?}");
        // The exact match now leads, and the weak cosine with half the
        // words clears the floor.
        assert_eq!(bands(&relevance, banding), [0, 0, 2]);
        assert_eq!(banding.relevance(&[0.5, 0.6], &[0.0, 0.0]), [0.5, 0.6], "no word matched");
        // Without the query's vector, the words alone: above the floor by
        // the lexical share (0.55, 0.45), unrelated without a match.
        let strict = Banding { margin: 0.05, ..banding };
        let lexical = strict.lexical_relevance(&[4.0, 0.0, 2.0]);
        let lexical_bands = bands(&lexical, strict);
        assert!(lexical[0] > lexical[2] && lexical[2] >= strict.floor, "{lexical:?}");
        assert!(lexical[1] < strict.floor, "no word matched: unrelated, {lexical:?}");
        assert!(lexical_bands[0] < lexical_bands[2] && lexical_bands[2] < lexical_bands[1], "{lexical_bands:?}");
        let off = Banding { lexical_weight: 0.0, ..banding };
        assert_eq!(off.relevance(&[0.5, 0.6], &[1.0, 0.0]), [0.5, 0.6]);
    }
}
