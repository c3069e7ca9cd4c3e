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
//! every feature: buyers 0, the `known_item` flag 0, co-purchase 0, its price
//! from the request (else the catalog's median price), and the text features
//! (`text_cosine`, `history_cosine_*`) from its embedding as for any item.

use std::collections::HashMap;

use crate::encoder::cosine;
use crate::stats::HistoryStats;

/// Names of the numeric features, in vector order (recorded in the head spec).
pub const NUMERIC_FEATURES: [&str; 10] = [
    "log_buyers",
    "log_recent_buyers",
    "known_item",
    "log_price",
    "copurchase_sum",
    "copurchase_max",
    "text_cosine",
    "history_cosine_max",
    "history_cosine_mean",
    "log_history_len",
];
pub const NUMERIC_LEN: usize = NUMERIC_FEATURES.len();
pub type Numeric = [f32; NUMERIC_LEN];

/// History items (most recent first) that the features look at.
pub const HISTORY_FEATURE_ITEMS: usize = 50;

/// What the features need to know about the user, computed once per request.
pub struct UserContext {
    pub embedding: Vec<f32>,
    history_embeddings: Vec<Vec<f32>>,
    /// Known item position → (sum, max) of co-purchase cosine with history.
    co_purchase: HashMap<u32, (f32, f32)>,
    history_len: usize,
}

impl UserContext {
    /// `history` holds the user's history items, most recent first: their
    /// positions in `stats` where known, and their text embeddings.
    pub fn new(stats: &HistoryStats, embedding: Vec<f32>, history: &[(Option<u32>, &[f32])]) -> Self {
        let history = &history[..history.len().min(HISTORY_FEATURE_ITEMS)];
        let mut co_purchase: HashMap<u32, (f32, f32)> = HashMap::new();
        for &(position, _) in history {
            let Some(position) = position else { continue };
            for &(neighbour, cos) in &stats.items[position as usize].neighbours {
                let entry = co_purchase.entry(neighbour).or_insert((0.0, 0.0));
                entry.0 += cos;
                entry.1 = entry.1.max(cos);
            }
        }
        Self {
            embedding,
            history_embeddings: history.iter().map(|(_, e)| e.to_vec()).collect(),
            co_purchase,
            history_len: history.len(),
        }
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
    let (co_sum, co_max) = candidate.position.and_then(|p| user.co_purchase.get(&p).copied()).unwrap_or((0.0, 0.0));
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
        if known.is_some() { 1.0 } else { 0.0 },
        price.ln_1p(),
        co_sum,
        co_max,
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
        let user = UserContext::new(&stats, vec![0.0, 1.0], &[(None, &e1[..]), (None, &e2[..])]);
        let f = numeric(&stats, &user, &CandidateInput { position: None, embedding: &[0.0, 1.0], price: Some(4.0) });
        assert_eq!(f[0], 0.0);
        assert_eq!(f[2], 0.0);
        assert!((f[3] - 5f32.ln()).abs() < 1e-6);
        assert_eq!(f[4], 0.0);
        assert!((f[6] - 1.0).abs() < 1e-6);
        assert!((f[7] - 0.8).abs() < 1e-6);
        assert!((f[8] - 0.4).abs() < 1e-6);
        assert!((f[9] - 3f32.ln()).abs() < 1e-6);
    }
}
