//! The one scoring path: a user's candidates → the feature builder → the
//! head → purchase probabilities. Serving, evaluation and training's model
//! selection all score through here, so a number measured offline is the
//! number a request gets.
//!
//! It has two steps because training's model selection scores the same users
//! after every epoch: [`ScoringInputs::build`] computes what does not depend
//! on the head's weights once, and [`ScoringInputs::score`] runs a head over it.
//! A request, scored once, takes both at once ([`ScoringInputs::build_and_score`]),
//! so that the two overlap.

use std::borrow::Cow;

use candle_core::{Device, Tensor};

use crate::model::features::{self, CandidateInput, Numeric, UserContext};
use crate::model::head::ScoringHead;
use crate::model::stats::HistoryStats;

/// What a head scores for one user: the user embedding, the candidates'
/// embeddings as one `[n, dim]` tensor, and their numeric features. Built
/// here they are owned; model selection lends the ones it keeps, so scoring
/// them after each epoch copies nothing.
pub(crate) struct ScoringInputs<'a> {
    // Read by `score`, which only offline code calls (a request is scored
    // once, by `build_and_score`).
    #[cfg_attr(not(feature = "offline"), allow(dead_code))]
    user: Cow<'a, [f32]>,
    #[cfg_attr(not(feature = "offline"), allow(dead_code))]
    items: Tensor,
    numeric: Cow<'a, [Numeric]>,
}

impl<'a> ScoringInputs<'a> {
    /// Builds the features of every candidate for this user.
    pub(crate) fn build(
        stats: &HistoryStats,
        user: &UserContext,
        candidates: &[CandidateInput<'_>],
    ) -> candle_core::Result<ScoringInputs<'static>> {
        let numeric = numeric(stats, user, candidates);
        let items = Self::embeddings(user, candidates)?;
        Ok(ScoringInputs { user: Cow::Owned(user.embedding.clone()), items, numeric: Cow::Owned(numeric) })
    }

    /// [`ScoringInputs::build`] and [`ScoringInputs::score`] at once, for a
    /// request: a loaded head starts on the candidates' embeddings (over
    /// the pool) while this thread computes their numeric features.
    pub(crate) fn build_and_score(
        head: &ScoringHead,
        stats: &HistoryStats,
        user: &UserContext,
        candidates: &[CandidateInput<'_>],
    ) -> candle_core::Result<(ScoringInputs<'static>, Vec<f32>)> {
        let items = Self::embeddings(user, candidates)?;
        let (numeric, scores) = head.score_user_with(&user.embedding, &items, || numeric(stats, user, candidates))?;
        Ok((ScoringInputs { user: Cow::Owned(user.embedding.clone()), items, numeric: Cow::Owned(numeric) }, scores))
    }

    /// The candidates' embeddings as one `[n, dim]` tensor.
    fn embeddings(user: &UserContext, candidates: &[CandidateInput<'_>]) -> candle_core::Result<Tensor> {
        let flat: Vec<f32> = candidates.iter().flat_map(|c| c.embedding.iter().copied()).collect();
        Tensor::from_vec(flat, (candidates.len(), user.embedding.len()), &Device::Cpu)
    }

    /// Inputs already built: the user embedding, the candidates' embeddings
    /// `[n, dim]` and their numeric features.
    #[cfg_attr(not(feature = "offline"), allow(dead_code))]
    pub(crate) fn new(user: &'a [f32], items: Tensor, numeric: &'a [Numeric]) -> Self {
        Self { user: Cow::Borrowed(user), items, numeric: Cow::Borrowed(numeric) }
    }

    /// The numeric feature vectors, in candidate order.
    pub(crate) fn numeric(&self) -> &[Numeric] {
        &self.numeric
    }

    /// Purchase probabilities, in candidate order.
    #[cfg_attr(not(feature = "offline"), allow(dead_code))]
    pub(crate) fn score(&self, head: &ScoringHead) -> candle_core::Result<Vec<f32>> {
        head.score_user(&self.user, &self.items, &self.numeric)
    }
}

/// Each candidate's numeric features.
fn numeric(stats: &HistoryStats, user: &UserContext, candidates: &[CandidateInput<'_>]) -> Vec<Numeric> {
    candidates.iter().map(|c| features::numeric(stats, user, c)).collect()
}

/// Purchase probabilities of candidates for one user.
#[cfg_attr(not(feature = "offline"), allow(dead_code))]
pub(crate) fn score(
    head: &ScoringHead,
    stats: &HistoryStats,
    user: &UserContext,
    candidates: &[CandidateInput<'_>],
) -> candle_core::Result<Vec<f32>> {
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    ScoringInputs::build(stats, user, candidates)?.score(head)
}
