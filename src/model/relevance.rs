//! Query relevance first. With a search query, a product that does not match
//! it should not outrank one that does because it sells more: purchase
//! probability orders the products *within* a level of relevance. The head
//! alone learns this only in part (its query features compete with strong
//! purchase statistics; `shoprank eval-search` measures the gap), so ranking
//! with a query groups the candidates into **relevance bands** by their
//! query cosine (the `query_cosine` feature) and orders band by band, each
//! band by the head's probability:
//!
//! `band = ⌊(best query cosine among the candidates − query cosine) / margin⌋`
//!
//! Band 0 holds the candidates within `margin` of the best match, band 1 the
//! next `margin`, and so on. Candidates whose query cosine is below `floor`
//! are unrelated to the query (all-MiniLM-L6-v2 puts unrelated product texts
//! at 0 to 0.25 from a query), and differences among them are noise, so they
//! share one last band, ordered by probability alone: a search for "red
//! retrospot" shows the matching cake cases first, then what this shopper
//! is likeliest to buy, not a car tyre that happens to score 0.22 against a
//! bag's 0.20. `margin` → 0 is ranking by query cosine alone, `margin` → ∞ by
//! the head alone; `search.relevance_margin` and `search.relevance_floor` set
//! them (margin 0 turns banding off). Without a query there are no bands.

use crate::config::SearchSettings;

/// Bands `margin` wide; candidates below `floor` in the last one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Banding {
    pub margin: f32,
    pub floor: f32,
}

impl Banding {
    /// `search.relevance_margin` and `search.relevance_floor`.
    pub fn from_settings(search: &SearchSettings) -> Self {
        Self { margin: search.relevance_margin, floor: search.relevance_floor }
    }
}

/// The band of each candidate (see the module docs); all 0 when the margin
/// is not positive.
pub(crate) fn bands(query_cosines: &[f32], banding: Banding) -> Vec<u32> {
    let Banding { margin, floor } = banding;
    if margin.is_nan() || margin <= 0.0 {
        return vec![0; query_cosines.len()];
    }
    let best = query_cosines.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    // Cosines lie in [-1, 1]: at most 2 / margin bands above the last.
    let last = (2.0 / margin).ceil().min(1e6) as u32 + 1;
    query_cosines
        .iter()
        .map(|&c| if c < floor { last } else { ((best - c) / margin).floor().clamp(0.0, 1e6) as u32 })
        .collect()
}

/// Sort keys that order band by band, by probability within a band:
/// `probability − band` (probabilities lie in [0, 1], so a lower band always
/// comes first). Used for ordering only; responses report the probability.
pub(crate) fn banded_keys(probabilities: &[f32], query_cosines: &[f32], banding: Banding) -> Vec<f32> {
    bands(query_cosines, banding).into_iter().zip(probabilities).map(|(band, p)| p - band as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bands_group_by_distance_to_the_best_match_and_order_by_probability_within() {
        let cosines = [0.80, 0.75, 0.62, 0.30, 0.79, 0.25];
        let banding = Banding { margin: 0.1, floor: 0.35 };
        // 0.30 and 0.25 are below the floor: one last band (21).
        assert_eq!(bands(&cosines, banding), [0, 0, 1, 21, 0, 21]);
        let keys = banded_keys(&[0.1, 0.9, 0.99, 0.2, 0.5, 0.6], &cosines, banding);
        let mut order: Vec<usize> = (0..6).collect();
        order.sort_by(|&a, &b| keys[b].total_cmp(&keys[a]));
        // Band 0 by probability (1, 4, 0), then band 1 (2), then the
        // unrelated ones by probability alone (5 before 3).
        assert_eq!(order, [1, 4, 0, 2, 5, 3]);
        assert_eq!(bands(&cosines, Banding { margin: 0.0, floor: 0.35 }), [0; 6], "margin 0: no bands");
    }
}
