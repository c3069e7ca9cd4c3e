//! Why an item scored what it did, from the head's actual inputs.
//!
//! **Attribution.** The numeric features are split into groups that each
//! mean one thing to a shopper ([`ReasonKind`]). A group's contribution is
//! its exact Shapley value in the head's output probability: the average,
//! over every order of switching groups on, of the change in the score when
//! the group goes from its baseline to its actual values. The baseline of a
//! feature is its mean over the training examples (the average pair); the
//! user and item embeddings stay as they are. By the Shapley efficiency
//! property the contributions add up exactly to
//! `score − score(all groups at baseline)`, the score's deviation from the
//! baseline, so listing the largest positive ones accounts for the reasons
//! an item was ranked up, and every number is the head's own arithmetic:
//! change an input and its contribution changes with it.
//!
//! Six groups give 2⁶ = 64 feature vectors per explained item, scored in one
//! batch by the head: explanations cost a fraction of a millisecond per item.
//! `log_history_len` describes the user, not the item, and stays at its
//! actual value in every coalition (it is part of the baseline); so do the
//! groups the caller holds (a request without a query holds the query
//! group: "no query" is not a reason for anything).

use candle_core::{Device, Tensor};

use crate::model::features::{Numeric, NUMERIC_FEATURES};
use crate::model::head::ScoringHead;

/// What a group of features means to a shopper.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReasonKind {
    /// The search query matches the item (`has_query`, `query_cosine` and
    /// the words' match: `query_bm25_share`, `query_terms_*`, `query_phrase`).
    MatchesQuery,
    /// Bought together with history items (co-purchase and recent-purchase EASE).
    BoughtTogether,
    /// Similar in text to history items.
    SimilarToHistory,
    /// Bought by many, recently (buyer counts, age, known item).
    Popular,
    /// The same group as `Popular` for an item nobody bought before the
    /// statistics end (new, or never bought): being unbought raised its
    /// score. Never a group of its own; the wording picks it.
    NewProduct,
    /// The item text matches the user text as a whole (profile and history).
    MatchesProfile,
    /// The price.
    Price,
}

/// The feature groups, by name; every numeric feature but `log_history_len`
/// belongs to exactly one.
pub(crate) const GROUPS: [(ReasonKind, &[&str]); 6] = [
    (
        ReasonKind::MatchesQuery,
        &["has_query", "query_cosine", "query_bm25_share", "query_terms_exact", "query_terms_matched", "query_phrase"],
    ),
    (
        ReasonKind::BoughtTogether,
        &[
            "copurchase_sum",
            "copurchase_max",
            "copurchase_recent_sum",
            "recent_ease_sum",
            "recent_ease_recent_sum",
            "log_recent_ease_rank",
        ],
    ),
    (ReasonKind::SimilarToHistory, &["history_cosine_max", "history_cosine_mean"]),
    (ReasonKind::Popular, &["log_buyers", "log_recent_buyers", "log_week_buyers", "known_item", "log_item_age_days"]),
    (ReasonKind::MatchesProfile, &["text_cosine"]),
    (ReasonKind::Price, &["log_price"]),
];

/// One group's share of a score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Contribution {
    pub kind: ReasonKind,
    /// Change in purchase probability this group accounts for (Shapley value).
    pub value: f32,
}

/// A score taken apart: `score = baseline + Σ contributions`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Attribution {
    pub score: f32,
    pub baseline: f32,
    /// One per group, in [`GROUPS`] order.
    pub contributions: Vec<Contribution>,
}

fn feature_index(name: &str) -> usize {
    NUMERIC_FEATURES.iter().position(|n| *n == name).expect("every group feature is a numeric feature")
}

/// Exact group Shapley values of one (user, item) pair's score. Groups in
/// `held` keep their actual values throughout and get no contribution.
pub(crate) fn attribute(
    head: &ScoringHead,
    user: &[f32],
    item: &[f32],
    numeric: &Numeric,
    held: &[ReasonKind],
) -> candle_core::Result<Attribution> {
    let mut baseline = head.numeric_means()?;
    baseline[feature_index("log_history_len")] = numeric[feature_index("log_history_len")];
    for (kind, names) in GROUPS {
        if held.contains(&kind) {
            for name in names {
                baseline[feature_index(name)] = numeric[feature_index(name)];
            }
        }
    }
    let groups: Vec<Vec<usize>> =
        GROUPS.iter().map(|(_, names)| names.iter().map(|n| feature_index(n)).collect()).collect();
    let g = groups.len();
    // Row `mask`: the groups whose bits are set take their actual values.
    let rows: Vec<Numeric> = (0..1usize << g)
        .map(|mask| {
            let mut row = baseline;
            for (bit, features) in groups.iter().enumerate() {
                if mask & (1 << bit) != 0 {
                    for &f in features {
                        row[f] = numeric[f];
                    }
                }
            }
            row
        })
        .collect();
    let items = Tensor::from_slice(item, (1, item.len()), &Device::Cpu)?.repeat((rows.len(), 1))?;
    let scores = head.score_user(user, &items, &rows)?;
    // Shapley weight of a coalition of size s (without the group): s!(g-s-1)!/g!.
    let factorial = |n: usize| (1..=n).product::<usize>() as f64;
    let contributions = GROUPS
        .iter()
        .enumerate()
        .map(|(bit, (kind, _))| {
            let mut value = 0f64;
            for mask in (0..1usize << g).filter(|m| m & (1 << bit) == 0) {
                let s = mask.count_ones() as usize;
                let weight = factorial(s) * factorial(g - s - 1) / factorial(g);
                value += weight * (scores[mask | (1 << bit)] - scores[mask]) as f64;
            }
            Contribution { kind: *kind, value: value as f32 }
        })
        .collect();
    Ok(Attribution { score: scores[(1 << g) - 1], baseline: scores[0], contributions })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_feature_but_the_history_length_is_in_exactly_one_group() {
        let mut seen: Vec<&str> = GROUPS.iter().flat_map(|(_, names)| names.iter().copied()).collect();
        seen.push("log_history_len");
        seen.sort_unstable();
        let mut all = NUMERIC_FEATURES.to_vec();
        all.sort_unstable();
        assert_eq!(seen, all);
    }
}
