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
//! every feature: buyers 0, the `known_item` flag 0, age 0, co-purchase and
//! recent-purchase EASE 0 (ranked after the whole catalog), its
//! price from the request (else the catalog's median price), and the text
//! features (`text_cosine`, `history_cosine_*`) from its embedding as for any
//! item. Training shows the head such candidates on purpose: a share of the
//! examples (`--cold-fraction`) have their item's statistics hidden, so the
//! head learns to rank new products by text instead of writing them off.
//!
//! A search query gets features of its own: `has_query` and `query_cosine`,
//! the cosine between the query *alone* and the item. The query is also the
//! first part of the user text, but there it is one signal blended with the
//! whole history, which the head learned to read as "what this user buys";
//! on its own it says "what this user is looking for now", for known and new
//! products alike. Training shows the head pseudo-queries drawn from the
//! purchased item's title (`--query-fraction`), so it learns how much a
//! query match matters against the purchase statistics.
//!
//! The query's words get features too (`model::lexical`'s [`LexicalMatch`]):
//! the item's BM25 as a share of what the query could reach, the shares of
//! its words the item holds exactly and within typo distance, and whether it
//! holds them as a phrase. A sentence encoder blurs brand names, sizes and
//! model numbers that these keep exact; with them the head learns how much
//! the words matter beside the query cosine and the purchase statistics,
//! instead of leaving every lexical signal to the relevance bands. Each is
//! on its own query's scale, not relative to the best among the candidates
//! (as the bands' BM25 is). Some pseudo-queries carry a typo
//! (`--typo-fraction`), so the head sees the two shares differ, as they do
//! where serving cannot correct a word first (no catalog, or a word the
//! catalog has no close term for). A degraded answer without the query's
//! vector leaves them 0 with the query features (see `serve::ranker`): the
//! head never saw words matched without a query.

use std::collections::HashMap;

use crate::model::encoder::cosine;
use crate::model::lexical::LexicalMatch;
use crate::model::stats::{HistoryStats, ItemPos};

/// Names of the numeric features, in vector order (recorded in the head spec).
pub const NUMERIC_FEATURES: [&str; 22] = [
    "log_buyers",
    "log_recent_buyers",
    "log_week_buyers",
    "known_item",
    "log_item_age_days",
    "log_price",
    "copurchase_sum",
    "copurchase_max",
    "copurchase_recent_sum",
    "recent_ease_sum",
    "recent_ease_recent_sum",
    "log_recent_ease_rank",
    "text_cosine",
    "history_cosine_max",
    "history_cosine_mean",
    "log_history_len",
    "has_query",
    "query_cosine",
    "query_bm25_share",
    "query_terms_exact",
    "query_terms_matched",
    "query_phrase",
];
pub(crate) const NUMERIC_LEN: usize = NUMERIC_FEATURES.len();
/// Where `query_cosine` sits in the numeric vector.
pub(crate) const QUERY_COSINE: usize = BEFORE_LEXICAL_LEN - 1;
/// How many of the features heads trained before the lexical ones know:
/// the first, in the same order. Such a head loads with zero weights for
/// the rest (`model::head`), so it scores as it always did.
pub(crate) const BEFORE_LEXICAL_LEN: usize = 18;
pub type Numeric = [f32; NUMERIC_LEN];

/// History items (most recent first) whose texts the cosine features compare
/// with the candidate (each one is an embedding to compute and compare).
pub(crate) const HISTORY_FEATURE_ITEMS: usize = 50;
/// History items (most recent first) whose co-purchase links count: lookups
/// are cheap, and long histories (wholesalers) carry real signal.
pub(crate) const HISTORY_COPURCHASE_ITEMS: usize = 200;
/// The most recent history items, whose co-purchase links get a feature of
/// their own (the last basket says most about the next one).
pub(crate) const RECENT_HISTORY_ITEMS: usize = 5;

/// The user vector when the user text cannot be embedded (a degraded
/// answer, and `shoprank eval`'s `model-degraded` row that measures it):
/// the L2-normalised mean of the history items' embeddings. `None` without
/// any, or when they cancel out.
pub(crate) fn mean_of_history<'a>(embeddings: impl IntoIterator<Item = &'a [f32]>) -> Option<Vec<f32>> {
    let mut sum: Vec<f32> = Vec::new();
    for embedding in embeddings {
        if sum.is_empty() {
            sum = vec![0.0; embedding.len()];
        }
        for (s, x) in sum.iter_mut().zip(embedding) {
            *s += x;
        }
    }
    let norm = sum.iter().map(|x| x * x).sum::<f32>().sqrt();
    (norm > 0.0 && norm.is_finite()).then(|| sum.iter().map(|x| x / norm).collect())
}

/// How one candidate relates to the user's history through the item-to-item
/// statistics: co-purchase cosines and recent-purchase EASE weights.
#[derive(Debug, Clone, Copy, Default)]
struct CoPurchaseScore {
    sum: f32,
    max: f32,
    recent_sum: f32,
    ease_sum: f32,
    ease_recent_sum: f32,
    /// 1-based rank of `ease_sum` among the items the user has not bought.
    ease_rank: u32,
}

/// What the features need to know about the user, computed once per request.
pub struct UserContext {
    pub embedding: Vec<f32>,
    /// The search query's own embedding, when the request has a query.
    query_embedding: Option<Vec<f32>>,
    history_embeddings: Vec<Vec<f32>>,
    /// Known item position → its co-purchase cosines and EASE weights from the history.
    co_purchase: HashMap<ItemPos, CoPurchaseScore>,
    history_len: usize,
}

impl UserContext {
    /// `history_positions` holds the positions in `stats` of the user's
    /// history items, most recent first (`None` where unknown);
    /// `history_embeddings` the text embeddings of the first of them (at most
    /// `HISTORY_FEATURE_ITEMS` are used).
    pub(crate) fn new(
        stats: &HistoryStats,
        embedding: Vec<f32>,
        history_positions: &[Option<ItemPos>],
        history_embeddings: &[&[f32]],
    ) -> Self {
        let mut co_purchase: HashMap<ItemPos, CoPurchaseScore> = HashMap::new();
        for (rank, position) in history_positions.iter().take(HISTORY_COPURCHASE_ITEMS).enumerate() {
            let Some(position) = *position else { continue };
            let recent = rank < RECENT_HISTORY_ITEMS;
            let item = stats.item(position);
            for &(neighbour, cos) in &item.neighbours {
                let entry = co_purchase.entry(neighbour).or_default();
                entry.sum += cos;
                entry.max = entry.max.max(cos);
                if recent {
                    entry.recent_sum += cos;
                }
            }
            for &(neighbour, weight) in &item.recent_ease {
                let entry = co_purchase.entry(neighbour).or_default();
                entry.ease_sum += weight;
                if recent {
                    entry.ease_recent_sum += weight;
                }
            }
        }
        // Ranks say how a candidate compares with the user's other options,
        // on a scale shared by all users (sums grow with history length).
        let bought: std::collections::HashSet<ItemPos> = history_positions.iter().flatten().copied().collect();
        let mut by_ease: Vec<(ItemPos, f32)> = co_purchase
            .iter()
            .filter(|(p, s)| s.ease_sum > 0.0 && !bought.contains(p))
            .map(|(&p, s)| (p, s.ease_sum))
            .collect();
        by_ease.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        for (rank, (p, _)) in by_ease.iter().enumerate() {
            co_purchase.get_mut(p).expect("ranked from the map").ease_rank = rank as u32 + 1;
        }
        Self {
            embedding,
            query_embedding: None,
            history_embeddings: history_embeddings.iter().take(HISTORY_FEATURE_ITEMS).map(|e| e.to_vec()).collect(),
            co_purchase,
            history_len: history_positions.len(),
        }
    }

    /// Adds the search query's own embedding (the query text alone, not
    /// the composed user text), which the query features compare with.
    pub(crate) fn with_query(mut self, query_embedding: Vec<f32>) -> Self {
        self.query_embedding = Some(query_embedding);
        self
    }

    /// The `k` unbought items the recent-purchase EASE weights of the user's
    /// history point to most strongly, best first (training draws hard
    /// negatives from them: the items a full-catalog ranking must tell apart).
    #[cfg_attr(not(feature = "offline"), allow(dead_code))] // training's
    pub(crate) fn strongest_links(&self, k: usize) -> Vec<ItemPos> {
        let mut ranked: Vec<(u32, ItemPos)> = self
            .co_purchase
            .iter()
            .filter(|(_, s)| s.ease_rank > 0 && s.ease_rank as usize <= k)
            .map(|(&p, s)| (s.ease_rank, p))
            .collect();
        ranked.sort_unstable();
        ranked.into_iter().map(|(_, p)| p).collect()
    }
}

/// What the features need to know about one candidate.
#[derive(Debug, Clone, Copy)]
pub struct CandidateInput<'a> {
    /// Position in the history statistics, if the item is known there.
    pub position: Option<ItemPos>,
    pub embedding: &'a [f32],
    /// Unit price from the request, if it carried one.
    pub price: Option<f32>,
    /// How the item's text matches the search query's words (all 0
    /// without a query).
    pub lexical: LexicalMatch,
}

/// Builds the numeric feature vector of one (user, candidate) pair.
pub fn numeric(stats: &HistoryStats, user: &UserContext, candidate: &CandidateInput<'_>) -> Numeric {
    let known = candidate.position.map(|p| stats.item(p));
    let price = candidate
        .price
        .filter(|p| p.is_finite() && *p > 0.0)
        .or(known.and_then(|s| s.price))
        .unwrap_or_else(|| stats.typical_price());
    let co = candidate.position.and_then(|p| user.co_purchase.get(&p).copied()).unwrap_or_default();
    let (mut cos_max, mut cos_sum) = (0f32, 0f32);
    for history in &user.history_embeddings {
        let c = cosine(history, candidate.embedding);
        cos_max = cos_max.max(c);
        cos_sum += c;
    }
    let cos_mean =
        if user.history_embeddings.is_empty() { 0.0 } else { cos_sum / user.history_embeddings.len() as f32 };
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
        co.ease_sum,
        co.ease_recent_sum,
        // Items the weights do not reach rank after every item of the catalog.
        (if co.ease_rank == 0 { stats.items.len() as f32 + 1.0 } else { co.ease_rank as f32 }).ln(),
        cosine(&user.embedding, candidate.embedding),
        cos_max,
        cos_mean,
        (user.history_len as f32).ln_1p(),
        if user.query_embedding.is_some() { 1.0 } else { 0.0 },
        user.query_embedding.as_deref().map_or(0.0, |q| cosine(q, candidate.embedding)),
        candidate.lexical.bm25_share,
        candidate.lexical.exact,
        candidate.lexical.matched,
        candidate.lexical.phrase,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_degraded_user_vector_is_the_unit_mean_of_the_history() {
        let (a, b) = ([1.0f32, 0.0], [0.0f32, 1.0]);
        let mean = mean_of_history([&a[..], &b[..]]).unwrap();
        assert!((mean[0] - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6 && (mean[0] - mean[1]).abs() < 1e-6);
        assert_eq!(mean_of_history(std::iter::empty()), None, "no history, no vector");
        assert_eq!(mean_of_history([&a[..], &[-1.0, 0.0][..]]), None, "opposites cancel out");
    }

    #[test]
    fn unknown_candidate_gets_text_features_and_zero_history_statistics() {
        let stats = HistoryStats::empty();
        let e1 = [1.0, 0.0];
        let e2 = [0.6, 0.8];
        let user = UserContext::new(&stats, vec![0.0, 1.0], &[None, None], &[&e1[..], &e2[..]]);
        let f = numeric(
            &stats,
            &user,
            &CandidateInput {
                position: None,
                embedding: &[0.0, 1.0],
                price: Some(4.0),
                lexical: LexicalMatch::default(),
            },
        );
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
        assert_eq!((named("has_query"), named("query_cosine")), (0.0, 0.0), "no query, no query features");
        assert_eq!(f[BEFORE_LEXICAL_LEN..], [0.0; 4], "nor lexical ones");
    }

    #[test]
    fn query_cosine_is_where_its_index_says() {
        assert_eq!(NUMERIC_FEATURES[QUERY_COSINE], "query_cosine");
        assert_eq!(NUMERIC_FEATURES[BEFORE_LEXICAL_LEN - 1], "query_cosine", "the lexical features come after");
    }

    #[test]
    fn query_features_compare_the_query_alone_with_the_item() {
        let stats = HistoryStats::empty();
        // The user text (history-heavy) points one way, the query another.
        let user = UserContext::new(&stats, vec![1.0, 0.0], &[], &[]).with_query(vec![0.0, 1.0]);
        let lexical = LexicalMatch { bm25: 3.0, bm25_share: 0.4, exact: 0.5, matched: 1.0, phrase: 0.0 };
        let f =
            numeric(&stats, &user, &CandidateInput { position: None, embedding: &[0.6, 0.8], price: None, lexical });
        let named = |name: &str| f[NUMERIC_FEATURES.iter().position(|n| *n == name).unwrap()];
        assert_eq!(named("has_query"), 1.0);
        assert!((named("query_cosine") - 0.8).abs() < 1e-6);
        assert!((named("text_cosine") - 0.6).abs() < 1e-6);
        let words = ["query_bm25_share", "query_terms_exact", "query_terms_matched", "query_phrase"].map(named);
        assert_eq!(words, [0.4, 0.5, 1.0, 0.0], "the words' match, as the lexical scorer found it");
    }

    fn item(id: &str, recent_ease: &[(usize, f32)]) -> crate::model::stats::ItemStats {
        crate::model::stats::ItemStats {
            id: id.into(),
            text: id.into(),
            buyers: 1,
            recent_buyers: 1,
            week_buyers: 0,
            age_days: 10.0,
            price: Some(1.0),
            neighbours: Vec::new(),
            recent_ease: recent_ease.iter().map(|&(p, w)| (ItemPos::new(p), w)).collect(),
            quantity: None,
        }
    }

    #[test]
    fn recent_ease_features_sum_the_history_weights_and_rank_unbought_items() {
        // History: A (most recent) and D. A points to B (0.3) and C (0.1), D to
        // C (0.25) and to A, which the user already bought.
        let stats = HistoryStats::from_parts(
            String::new(),
            1,
            vec![
                item("A", &[(1, 0.3), (2, 0.1)]),
                item("B", &[]),
                item("C", &[]),
                item("D", &[(2, 0.25), (0, 0.9)]),
                item("E", &[]),
            ],
        );
        let pos = ItemPos::new;
        let user = UserContext::new(&stats, vec![1.0, 0.0], &[Some(pos(0)), Some(pos(3))], &[]);
        let features = |position: Option<ItemPos>| {
            let f = numeric(
                &stats,
                &user,
                &CandidateInput { position, embedding: &[1.0, 0.0], price: None, lexical: LexicalMatch::default() },
            );
            let named = move |name: &str| f[NUMERIC_FEATURES.iter().position(|n| *n == name).unwrap()];
            (named("recent_ease_sum"), named("recent_ease_recent_sum"), named("log_recent_ease_rank"))
        };
        let (b_sum, b_recent, b_rank) = features(Some(pos(1)));
        let (c_sum, c_recent, c_rank) = features(Some(pos(2)));
        assert!((b_sum - 0.3).abs() < 1e-6 && (b_recent - 0.3).abs() < 1e-6);
        // C: 0.1 from A and 0.25 from D; both are among the 5 most recent items.
        assert!((c_sum - 0.35).abs() < 1e-6 && (c_recent - 0.35).abs() < 1e-6);
        // A (bought) does not take a rank: C is first, B second.
        assert_eq!((c_rank, b_rank), (1f32.ln(), 2f32.ln()));
        // E is reached by no weight, and a new product is unknown: both rank
        // after the whole catalog.
        assert_eq!(features(Some(pos(4))), (0.0, 0.0, 6f32.ln()));
        assert_eq!(features(None), (0.0, 0.0, 6f32.ln()));
        assert_eq!(user.strongest_links(1), vec![pos(2)]);
        assert_eq!(user.strongest_links(10), vec![pos(2), pos(1)], "ranked, without the bought A");
    }
}
