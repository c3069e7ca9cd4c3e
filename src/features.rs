//! Feature building for one (user, candidate) pair — the single code path that
//! both `shoprank train`/`eval` and the server use, so a served score is
//! computed from exactly the features the head was trained on.
//!
//! The head sees `[u, v, u⊙v, numeric]`: `u` and `v` are the unit-length user
//! and item text embeddings (the products `u⊙v` are formed inside the head);
//! `numeric` is the vector below, standardised inside the head with the means
//! and deviations of its training data.
//!
//! A candidate the history statistics do not know (a new product) still gets
//! every feature: buyers 0, the `known_item` flag 0, age 0, co-purchase 0, its
//! price from the request (else the catalog's median price), and the text
//! features (`text_cosine`, `history_cosine_*`) from its embedding as for any
//! item. Training shows the head such candidates on purpose: a share of the
//! examples (`--cold-fraction`) have their item's statistics hidden, so the
//! head learns to rank new products by text instead of writing them off.

use std::collections::HashMap;

use crate::encoder::cosine;
use crate::stats::HistoryStats;

/// Names of the numeric features, in vector order (recorded in the head spec).
pub const NUMERIC_FEATURES: [&str; 13] = [
    "log_buyers",
    "log_recent_buyers",
    "log_week_buyers",
    "known_item",
    "log_item_age_days",
    "log_price",
    "copurchase_sum",
    "copurchase_max",
    "copurchase_recent_sum",
    "text_cosine",
    "history_cosine_max",
    "history_cosine_mean",
    "log_history_len",
];
pub const NUMERIC_LEN: usize = NUMERIC_FEATURES.len();
pub type Numeric = [f32; NUMERIC_LEN];

/// History items (most recent first) whose texts the cosine features compare
/// with the candidate (each one is an embedding to compute and compare).
pub const HISTORY_FEATURE_ITEMS: usize = 50;
/// History items (most recent first) whose co-purchase links count: lookups
/// are cheap, and long histories (wholesalers) carry real signal.
pub const HISTORY_COPURCHASE_ITEMS: usize = 200;
/// The most recent history items, whose co-purchase links get a feature of
/// their own (the last basket says most about the next one).
pub const RECENT_HISTORY_ITEMS: usize = 5;

/// Co-purchase of one candidate with the user's history.
#[derive(Debug, Clone, Copy, Default)]
struct CoPurchaseScore {
    sum: f32,
    max: f32,
    recent_sum: f32,
}

/// What the features need to know about the user, computed once per request.
pub struct UserContext {
    pub embedding: Vec<f32>,
    history_embeddings: Vec<Vec<f32>>,
    /// Known item position → its co-purchase cosines with the history.
    co_purchase: HashMap<u32, CoPurchaseScore>,
    history_len: usize,
}

impl UserContext {
    /// `history_positions` holds the positions in `stats` of the user's
    /// history items, most recent first (`None` where unknown);
    /// `history_embeddings` the text embeddings of the first of them (at most
    /// `HISTORY_FEATURE_ITEMS` are used).
    pub fn new(
        stats: &HistoryStats,
        embedding: Vec<f32>,
        history_positions: &[Option<u32>],
        history_embeddings: &[&[f32]],
    ) -> Self {
        let mut co_purchase: HashMap<u32, CoPurchaseScore> = HashMap::new();
        for (rank, position) in history_positions.iter().take(HISTORY_COPURCHASE_ITEMS).enumerate() {
            let Some(position) = *position else { continue };
            for &(neighbour, cos) in &stats.items[position as usize].neighbours {
                let entry = co_purchase.entry(neighbour).or_default();
                entry.sum += cos;
                entry.max = entry.max.max(cos);
                if rank < RECENT_HISTORY_ITEMS {
                    entry.recent_sum += cos;
                }
            }
        }
        Self {
            embedding,
            history_embeddings: history_embeddings.iter().take(HISTORY_FEATURE_ITEMS).map(|e| e.to_vec()).collect(),
            co_purchase,
            history_len: history_positions.len(),
        }
    }

    /// Known items co-purchased with the user's history (training draws
    /// hard negatives from them).
    pub fn co_purchased(&self) -> Vec<u32> {
        let mut items: Vec<u32> = self.co_purchase.keys().copied().collect();
        items.sort_unstable();
        items
    }
}

/// What the features need to know about one candidate.
#[derive(Debug, Clone, Copy)]
pub struct CandidateInput<'a> {
    /// Position in the history statistics, if the item is known there.
    pub position: Option<u32>,
    pub embedding: &'a [f32],
    /// Unit price from the request, if it carried one.
    pub price: Option<f32>,
}

/// Builds the numeric feature vector of one (user, candidate) pair.
pub fn numeric(stats: &HistoryStats, user: &UserContext, candidate: &CandidateInput<'_>) -> Numeric {
    let known = candidate.position.map(|p| &stats.items[p as usize]);
    let price = candidate
        .price
        .filter(|p| p.is_finite() && *p > 0.0)
        .or(known.map(|s| s.price).filter(|p| p.is_finite()))
        .unwrap_or_else(|| stats.typical_price());
    let co = candidate.position.and_then(|p| user.co_purchase.get(&p).copied()).unwrap_or_default();
    let (mut cos_max, mut cos_sum) = (0f32, 0f32);
    for history in &user.history_embeddings {
        let c = cosine(history, candidate.embedding);
        cos_max = cos_max.max(c);
        cos_sum += c;
    }
    let cos_mean = if user.history_embeddings.is_empty() { 0.0 } else { cos_sum / user.history_embeddings.len() as f32 };
    if user.history_embeddings.is_empty() {
        cos_max = 0.0;
    }
    [
        (known.map_or(0, |s| s.buyers) as f32).ln_1p(),
        (known.map_or(0, |s| s.recent_buyers) as f32).ln_1p(),
        (known.map_or(0, |s| s.week_buyers) as f32).ln_1p(),
        if known.is_some() { 1.0 } else { 0.0 },
        known.map_or(0.0, |s| s.age_days).ln_1p(),
        price.ln_1p(),
        co.sum,
        co.max,
        co.recent_sum,
        cosine(&user.embedding, candidate.embedding),
        cos_max,
        cos_mean,
        (user.history_len as f32).ln_1p(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_candidate_gets_text_features_and_zero_history_statistics() {
        let stats = HistoryStats::empty();
        let e1 = [1.0, 0.0];
        let e2 = [0.6, 0.8];
        let user = UserContext::new(&stats, vec![0.0, 1.0], &[None, None], &[&e1[..], &e2[..]]);
        let f = numeric(&stats, &user, &CandidateInput { position: None, embedding: &[0.0, 1.0], price: Some(4.0) });
        let named = |name: &str| f[NUMERIC_FEATURES.iter().position(|n| *n == name).unwrap()];
        assert_eq!(named("log_buyers"), 0.0);
        assert_eq!(named("known_item"), 0.0);
        assert_eq!(named("log_item_age_days"), 0.0);
        assert!((named("log_price") - 5f32.ln()).abs() < 1e-6);
        assert_eq!(named("copurchase_sum"), 0.0);
        assert!((named("text_cosine") - 1.0).abs() < 1e-6);
        assert!((named("history_cosine_max") - 0.8).abs() < 1e-6);
        assert!((named("history_cosine_mean") - 0.4).abs() < 1e-6);
        assert!((named("log_history_len") - 3f32.ln()).abs() < 1e-6);
    }
}
