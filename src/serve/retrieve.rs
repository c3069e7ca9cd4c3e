//! Candidate retrieval for a request without candidates: the union of
//!
//! 1. the `retrieve_k` catalog items nearest to the search query (or,
//!    without one, to the user text) in embedding space — an exact scan of
//!    the in-memory index;
//! 2. with a search query, the `lexical_k` items with the highest BM25 for
//!    its words (typo-tolerant, `model::lexical`): exact brand names, sizes
//!    and model numbers that embeddings blur;
//! 3. up to `related_k` items the history's co-purchase and recent-purchase
//!    (EASE) links point to most strongly (summed over the history);
//! 4. the `popular_k` items with the most buyers in the bundle's last week
//!    (then last 30 days) of history.
//!
//! Every source sees only catalog items that have an embedding and pass the
//! request's filter; the union (first source first, no repeats) is what the
//! head then scores, each with its lexical match for the query (BM25 and
//! the head's word features; 0 without one), so relevance can fuse both. Items the bundle's statistics know but the catalog
//! does not hold are never returned: the catalog says what is for sale.

use std::collections::HashSet;
use std::sync::Arc;

use crate::config::CatalogSettings;
use crate::model::candidates::{popular, related};
use crate::model::lexical::{self, CorpusStats, LexicalMatch, LexicalQuery};
use crate::model::stats::{HistoryStats, ItemPos};
use crate::serve::catalog::index::{lexical_text, IndexView, ItemFilter};

/// How many items each source contributes at most.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RetrievalLimits {
    pub retrieve_k: usize,
    pub lexical_k: usize,
    pub related_k: usize,
    pub popular_k: usize,
}

impl RetrievalLimits {
    pub(crate) fn from_settings(settings: &CatalogSettings) -> Self {
        Self {
            retrieve_k: settings.retrieve_k,
            lexical_k: settings.lexical_k,
            related_k: settings.related_k,
            popular_k: settings.popular_k,
        }
    }
}

/// A search query's words, with the statistics of the catalog they are
/// scored against.
pub(crate) struct LexicalSearch<'a> {
    pub query: &'a LexicalQuery,
    pub corpus: &'a dyn CorpusStats,
}

/// A retrieved item, with what scoring needs.
#[derive(Debug, Clone)]
pub(crate) struct Retrieved {
    pub id: String,
    pub price: Option<f32>,
    pub embedding: Arc<[f32]>,
    /// How the item's text and attributes match the search query's words
    /// against the catalog's statistics (all 0 without a query or without
    /// a lexical index: the ranker then weighs the words among the items).
    pub lexical: LexicalMatch,
}

/// The union of the three sources, without repeats.
pub(crate) fn retrieve(
    view: &IndexView<'_>,
    stats: &HistoryStats,
    search_vector: &[f32],
    lexical: Option<LexicalSearch<'_>>,
    history_positions: &[Option<ItemPos>],
    filter: &ItemFilter,
    limits: RetrievalLimits,
) -> Vec<Retrieved> {
    let mut seen: HashSet<String> = HashSet::new();
    let mut out = Vec::new();
    // Adds an item if the catalog holds it embedded and the filter allows it.
    let mut add = |id: &str| -> bool {
        if seen.contains(id) {
            return false;
        }
        let Some((item, Some(vector))) = view.get(id) else { return false };
        if !filter.allows_item(item) {
            return false;
        }
        seen.insert(id.to_string());
        let matched = lexical
            .as_ref()
            .map_or_else(LexicalMatch::default, |l| lexical::score(l.query, &lexical_text(item), l.corpus));
        let embedding = Arc::from(vector.to_vec());
        out.push(Retrieved { id: item.id.clone(), price: item.price, embedding, lexical: matched });
        true
    };
    for (id, _) in view.nearest(search_vector, limits.retrieve_k, filter) {
        add(id);
    }
    if let Some(search) = &lexical {
        for (item, _) in view.lexical_nearest(search.query, limits.lexical_k, filter) {
            add(&item.id);
        }
    }
    let mut left = limits.related_k;
    for position in related(stats, history_positions) {
        if left == 0 {
            break;
        }
        left -= usize::from(add(&stats.item(position).id));
    }
    // Some popular items may be missing from the catalog or filtered out:
    // look a few times deeper than the share.
    let mut left = limits.popular_k;
    for position in popular(stats, limits.popular_k.saturating_mul(4)) {
        if left == 0 {
            break;
        }
        left -= usize::from(add(&stats.item(position).id));
    }
    out
}
