//! What a ranking request and its answer are, inside the library: the
//! validated [`RankQuery`] (with its [`HistoryItem`]s and [`Candidate`]s)
//! the API builds from the wire request, and the [`RankedItem`]s, with their
//! optional [`Explanation`], the ranker returns. No wire format here: the
//! API converts these into its own response types (`serve::api::ranked`).

use crate::model::explain::ReasonKind;
use crate::serve::catalog::attributes::FacetCount;
use crate::serve::catalog::index::ItemFilter;

/// An item the user bought or viewed. `id` (when it matches the history
/// statistics) enables the co-purchase features; else the title is matched.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryItem {
    pub id: Option<String>,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub id: String,
    pub text: String,
    pub price: Option<f32>,
    pub available: bool,
    /// The candidate's attributes (a JSON object, or `null` for none), for
    /// attribute filters and facets.
    pub attributes: serde_json::Value,
}

/// A request after validation: every field is within the documented limits.
#[derive(Debug, Clone, PartialEq)]
pub struct RankQuery {
    /// The search query (the wire request's `user.query`), if any.
    pub search: Option<String>,
    pub profile: Option<String>,
    /// Most recent first.
    pub history: Vec<HistoryItem>,
    /// The caller's candidates; `None`: retrieve from the catalog.
    pub candidates: Option<Vec<Candidate>>,
    pub top_k: usize,
    pub filter: ItemFilter,
    /// Maximal-marginal-relevance weight λ in [0, 1]; 0 ranks by score alone.
    pub diversity: f32,
    pub explain: bool,
    /// Attribute names to count values of over the relevant candidates
    /// (see [`Ranking::facets`]); empty: none.
    pub facets: Vec<String>,
    /// What the order maximises (see [`Objective`]).
    pub objective: Objective,
}

/// What a ranking maximises. Either way each item's `score` is its
/// purchase probability; only the order differs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Objective {
    /// The chance of a purchase: order by probability.
    #[default]
    Conversion,
    /// Expected revenue: order by probability × price × the item's typical
    /// quantity per purchase (its median in the bundle's statistics; 1 for
    /// items they do not know). The price is the request's, else the
    /// catalog's, else the item's median in the statistics, else (an item
    /// priced nowhere) the statistics' median over priced items.
    Revenue,
}

impl RankQuery {
    /// A query over given candidates with the default options.
    pub fn new(search: Option<String>, history: Vec<HistoryItem>, candidates: Vec<Candidate>, top_k: usize) -> Self {
        Self {
            search,
            profile: None,
            history,
            candidates: Some(candidates),
            top_k,
            filter: ItemFilter { available_only: true, ..ItemFilter::default() },
            diversity: 0.0,
            explain: false,
            facets: Vec::new(),
            objective: Objective::Conversion,
        }
    }
}

/// A ranking's answer: the items, and the facets asked for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Ranking {
    pub(crate) items: Vec<RankedItem>,
    /// Per facet asked for, in the request's order: its values over the
    /// relevant candidates (with a search query, those above
    /// `search.relevance_floor`, i.e. not in the last, unrelated band; else
    /// every scored candidate), after every filter and before `top_k`, most
    /// frequent first. `None` when no facet was asked for.
    pub(crate) facets: Option<Vec<(String, Vec<FacetCount>)>>,
    /// The search query as ranked when typo correction changed it (see
    /// `model::lexical::LexicalIndex::correct`), for a storefront's
    /// "showing results for"; `None` when it was searched as sent.
    pub(crate) corrected_query: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RankedItem {
    pub id: String,
    pub score: f32,
    pub rank: usize,
    /// Under the revenue objective: `score` × the purchase value it ranked
    /// by (price × typical quantity).
    pub expected_revenue: Option<f32>,
    pub explanation: Option<Explanation>,
}

/// Why an item scored what it did (see `model::explain`):
/// `score = baseline + Σ reasons' contributions + unlisted`, exactly;
/// `reasons` lists the groups that raised the score, largest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Explanation {
    /// The score of this pair with every item feature at its training mean.
    pub baseline: f32,
    pub reasons: Vec<Reason>,
    /// What the groups not listed add up to: those that lowered the score,
    /// raised it by under 5% of the upward total, or raised it with no true
    /// sentence to say (no co-purchase link, no history, no known price).
    pub unlisted: f32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Reason {
    pub kind: ReasonKind,
    pub text: String,
    /// Change in purchase probability this reason accounts for.
    pub contribution: f32,
    /// The history items behind it (bought together with, similar to).
    pub history_ids: Vec<String>,
}
