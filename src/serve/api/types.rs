//! The wire format of `/recommend` and its validation into a
//! [`RankQuery`](crate::serve::ranker::RankQuery). Every rule here is listed in the
//! README's "Limits and errors".

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::error::ApiError;
use crate::config::Limits;
use crate::serve::ranker::{Candidate, HistoryItem, RankQuery, RankedItem};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecommendRequest {
    pub user: UserIn,
    pub candidates: Vec<CandidateIn>,
    pub top_k: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserIn {
    /// The storefront's id for the user; echoed in logs only.
    pub id: Option<String>,
    /// Free-text profile ("likes gardening, buys for a café").
    pub text: Option<String>,
    /// The current search query.
    pub query: Option<String>,
    /// Recently bought or viewed products, most recent first: titles, or
    /// `{"id", "text"}` objects (ids enable co-purchase features).
    #[serde(default)]
    pub history: Vec<HistoryIn>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum HistoryIn {
    Title(String),
    Item {
        id: Option<String>,
        #[serde(alias = "title")]
        text: String,
    },
}

/// A candidate product. Fields other than these are accepted and ignored, so
/// a storefront can send its product objects as they are.
#[derive(Debug, Deserialize)]
pub struct CandidateIn {
    pub id: String,
    #[serde(alias = "title")]
    pub text: String,
    pub price: Option<f64>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct RecommendResponse {
    pub items: Vec<RankedItem>,
    pub model: ModelInfo,
    pub took_ms: f64,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Clone)]
pub struct ModelInfo {
    pub encoder: String,
    pub precision: String,
    pub head: String,
}

fn non_blank(text: Option<String>) -> Option<String> {
    text.filter(|t| !t.trim().is_empty())
}

impl RecommendRequest {
    /// Checks every rule and limit; the error names the field.
    pub fn validate(self, limits: &Limits) -> Result<RankQuery, ApiError> {
        let query = non_blank(self.user.query);
        let profile = non_blank(self.user.text);
        if self.user.history.len() > limits.max_history {
            return Err(ApiError::invalid(
                "too_many_history_items",
                format!("user.history has {} items; the limit is {}", self.user.history.len(), limits.max_history),
            ));
        }
        let history: Vec<HistoryItem> = self
            .user
            .history
            .into_iter()
            .map(|h| match h {
                HistoryIn::Title(text) => HistoryItem { id: None, text },
                HistoryIn::Item { id, text } => HistoryItem { id, text },
            })
            .filter(|h| !h.text.trim().is_empty())
            .collect();
        if query.is_none() && profile.is_none() && history.is_empty() {
            return Err(ApiError::invalid(
                "missing_user_signal",
                "user needs at least one non-empty field of: text, query, history",
            ));
        }
        if self.candidates.is_empty() {
            return Err(ApiError::invalid("empty_candidates", "candidates: the list is empty"));
        }
        if self.candidates.len() > limits.max_candidates {
            return Err(ApiError::invalid(
                "too_many_candidates",
                format!("candidates: {} given; the limit is {}", self.candidates.len(), limits.max_candidates),
            ));
        }
        let top_k = match self.top_k {
            Some(0) => return Err(ApiError::invalid("invalid_top_k", "top_k must be at least 1")),
            Some(k) => usize::try_from(k).unwrap_or(usize::MAX),
            None => limits.default_top_k,
        };
        let mut seen = HashSet::new();
        let mut candidates = Vec::with_capacity(self.candidates.len());
        for (i, c) in self.candidates.into_iter().enumerate() {
            if c.id.trim().is_empty() {
                return Err(ApiError::invalid("invalid_candidate", format!("candidates[{i}].id is empty")));
            }
            if c.text.trim().is_empty() {
                return Err(ApiError::invalid("invalid_candidate", format!("candidates[{i}].text is empty")));
            }
            if !seen.insert(c.id.clone()) {
                return Err(ApiError::invalid(
                    "duplicate_candidate_id",
                    format!("candidates[{i}].id `{}` appears more than once", c.id),
                ));
            }
            let price = match c.price {
                Some(p) if !p.is_finite() || p < 0.0 || p > f32::MAX as f64 => {
                    return Err(ApiError::invalid(
                        "invalid_candidate",
                        format!("candidates[{i}].price must be a finite number >= 0"),
                    ))
                }
                p => p.map(|p| p as f32),
            };
            candidates.push(Candidate { id: c.id, text: c.text, price });
        }
        Ok(RankQuery { query, profile, history, candidates, top_k })
    }
}
