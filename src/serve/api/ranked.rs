//! The ranked items as `POST /recommend` answers them: the wire copies of
//! the ranker's [`RankedItem`](ranker::RankedItem), its explanation and
//! reasons, and of the model's [`ReasonKind`](explain::ReasonKind). The
//! ranker and the model know nothing of JSON or OpenAPI; these types carry
//! the serde names and the schema (their doc comments are the document's
//! descriptions), and are converted from the ranker's answer at the edge.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::model::explain;
use crate::serve::ranker;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub(crate) struct RankedItem {
    pub id: String,
    /// The predicted purchase probability (calibrated when the bundle has a
    /// calibration: see `/ready`'s `calibration`).
    pub score: f32,
    pub rank: usize,
    /// Only under `"objective": "revenue"`: `score` × the price the item
    /// was ranked by (the request's, else the catalog's, else the bundle
    /// statistics' median).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_revenue: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explanation: Option<Explanation>,
}

/// Why an item scored what it did (see `model::explain`):
/// `score = baseline + Σ reasons' contributions + unlisted`, exactly;
/// `reasons` lists the groups that raised the score, largest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub(crate) struct Explanation {
    /// The score of this pair with every item feature at its training mean.
    pub baseline: f32,
    pub reasons: Vec<Reason>,
    /// What the groups not listed add up to: those that lowered the score,
    /// raised it by under 5% of the upward total, or raised it with no true
    /// sentence to say (no co-purchase link, no history, no known price).
    pub unlisted: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub(crate) struct Reason {
    pub kind: ReasonKind,
    pub text: String,
    /// Change in purchase probability this reason accounts for.
    pub contribution: f32,
    /// The history items behind it (bought together with, similar to).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history_ids: Vec<String>,
}

/// What a group of features means to a shopper.
// One variant per `model::explain::ReasonKind` (documented there), in its
// order: the order of the document's `enum` list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ReasonKind {
    MatchesQuery,
    BoughtTogether,
    SimilarToHistory,
    Popular,
    NewProduct,
    MatchesProfile,
    Price,
}

impl From<ranker::RankedItem> for RankedItem {
    fn from(item: ranker::RankedItem) -> Self {
        let ranker::RankedItem { id, score, rank, expected_revenue, explanation } = item;
        Self { id, score, rank, expected_revenue, explanation: explanation.map(Explanation::from) }
    }
}

impl From<ranker::Explanation> for Explanation {
    fn from(explanation: ranker::Explanation) -> Self {
        let ranker::Explanation { baseline, reasons, unlisted } = explanation;
        Self { baseline, reasons: reasons.into_iter().map(Reason::from).collect(), unlisted }
    }
}

impl From<ranker::Reason> for Reason {
    fn from(reason: ranker::Reason) -> Self {
        let ranker::Reason { kind, text, contribution, history_ids } = reason;
        Self { kind: kind.into(), text, contribution, history_ids }
    }
}

impl From<explain::ReasonKind> for ReasonKind {
    fn from(kind: explain::ReasonKind) -> Self {
        match kind {
            explain::ReasonKind::MatchesQuery => Self::MatchesQuery,
            explain::ReasonKind::BoughtTogether => Self::BoughtTogether,
            explain::ReasonKind::SimilarToHistory => Self::SimilarToHistory,
            explain::ReasonKind::Popular => Self::Popular,
            explain::ReasonKind::NewProduct => Self::NewProduct,
            explain::ReasonKind::MatchesProfile => Self::MatchesProfile,
            explain::ReasonKind::Price => Self::Price,
        }
    }
}
