//! Model selection's yardstick: full-catalog ranking of the inner-validation
//! users, scored through the one scoring path. What does not depend on the
//! head's weights (features, embeddings) is built once, not every epoch.

use std::collections::HashSet;

use crate::model::head::ScoringHead;
use crate::model::scoring::ScoringInputs;
use crate::model::stats::ItemPos;
use crate::offline::embed_store::EmbedStore;
use crate::offline::prepared::PreparedSplit;
use crate::offline::ranking_metrics::{mean, rank_by_score, score_ranking, RankingMetrics};

pub(super) struct Validator {
    users: Vec<ValidationUser>,
    /// Item id of each catalog position (ties are broken by id).
    ids: Vec<String>,
}

struct ValidationUser {
    candidates: Vec<ItemPos>,
    inputs: ScoringInputs,
    truth: HashSet<ItemPos>,
}

impl Validator {
    pub(super) fn new(prepared: &PreparedSplit<'_>, store: &EmbedStore) -> candle_core::Result<Self> {
        let users = prepared
            .split
            .test_users
            .iter()
            .enumerate()
            .map(|(index, test_user)| {
                let context = prepared.user_context(index, store);
                let candidates = prepared.candidates(test_user.user);
                let inputs: Vec<_> = candidates.iter().map(|&p| prepared.candidate(p, store)).collect();
                Ok(ValidationUser {
                    inputs: ScoringInputs::build(&prepared.stats, &context, &inputs)?,
                    truth: prepared.truth_positions(test_user),
                    candidates,
                })
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let ids = prepared.stats.items.iter().map(|s| s.id.clone()).collect();
        Ok(Self { users, ids })
    }

    pub(super) fn evaluate(&self, head: &ScoringHead) -> candle_core::Result<RankingMetrics> {
        let mut all = Vec::with_capacity(self.users.len());
        for user in &self.users {
            let scores = user.inputs.score(head)?;
            let ranked = rank_by_score(&user.candidates, &scores, |p| self.ids[p.index()].as_str());
            all.push(score_ranking(&ranked, &user.truth));
        }
        Ok(mean(&all))
    }
}
