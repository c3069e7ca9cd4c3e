//! Model selection's yardstick: full-catalog ranking of the inner-validation
//! users, scored through the one scoring path. What does not depend on the
//! head's weights (each pair's numeric features) is built once, not every
//! epoch; the candidates' embeddings are gathered from one shared catalog
//! tensor per user as it is scored, so memory is 92 bytes per (user, item)
//! pair, and the pairs are bounded: above `max_pairs`, a seeded sample of the
//! users is ranked.

use std::collections::HashSet;

use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::seq::index::sample;
use rand::SeedableRng;

use crate::model::features::{self, Numeric};
use crate::model::head::ScoringHead;
use crate::model::scoring::ScoringInputs;
use crate::model::stats::ItemPos;
use crate::offline::embed_store::EmbedStore;
use crate::offline::prepared::PreparedSplit;
use crate::offline::ranking_metrics::{mean, rank_by_score, score_ranking, RankingMetrics};
use crate::offline::stats_builder::progress_bar;

pub(super) struct Validator {
    users: Vec<ValidationUser>,
    /// Every catalog item's embedding, `[n, dim]`, shared by all users.
    catalog: Tensor,
    /// Item id of each catalog position (ties are broken by id).
    ids: Vec<String>,
}

struct ValidationUser {
    embedding: Vec<f32>,
    candidates: Vec<ItemPos>,
    numeric: Vec<Numeric>,
    truth: HashSet<ItemPos>,
}

impl Validator {
    /// Builds the features of at most `max_pairs` (user, candidate) pairs:
    /// every validation user, or a sample drawn from `seed`.
    pub(super) fn new(
        prepared: &PreparedSplit<'_>,
        store: &EmbedStore,
        max_pairs: usize,
        seed: u64,
    ) -> candle_core::Result<Self> {
        let chosen = sample_users(prepared.split.test_users.len(), prepared.stats.items.len(), max_pairs, seed);
        Self::over(prepared, store, chosen)
    }

    /// Builds the features of the test users at `chosen` (indices into
    /// `prepared.split.test_users`) against every catalog item.
    pub(super) fn over(
        prepared: &PreparedSplit<'_>,
        store: &EmbedStore,
        chosen: Vec<usize>,
    ) -> candle_core::Result<Self> {
        let stats = &prepared.stats;
        let flat: Vec<f32> = stats.items.iter().flat_map(|s| store.get(&s.text).iter().copied()).collect();
        let dim = flat.len().checked_div(stats.items.len()).unwrap_or(0);
        let catalog = Tensor::from_vec(flat, (stats.items.len(), dim), &Device::Cpu)?;
        let progress = progress_bar(chosen.len() as u64, "validation", "users");
        let users = chosen
            .into_iter()
            .map(|index| {
                let test_user = &prepared.split.test_users[index];
                let context = prepared.user_context(index, store);
                let candidates = prepared.candidates(test_user.user);
                let inputs: Vec<_> = candidates.iter().map(|&p| prepared.candidate(p, store)).collect();
                progress.inc(1);
                ValidationUser {
                    numeric: inputs.iter().map(|c| features::numeric(stats, &context, c)).collect(),
                    embedding: context.embedding,
                    truth: prepared.truth_positions(test_user),
                    candidates,
                }
            })
            .collect();
        progress.finish_and_clear();
        let ids = stats.items.iter().map(|s| s.id.clone()).collect();
        Ok(Self { users, catalog, ids })
    }

    /// Validation users ranked after each epoch.
    pub(super) fn users(&self) -> usize {
        self.users.len()
    }

    pub(super) fn evaluate(&self, head: &ScoringHead) -> candle_core::Result<RankingMetrics> {
        let mut all = Vec::with_capacity(self.users.len());
        for user in &self.users {
            let rows = Tensor::from_iter(user.candidates.iter().map(|p| p.index() as u32), &Device::Cpu)?;
            let inputs = ScoringInputs::new(&user.embedding, self.catalog.index_select(&rows, 0)?, &user.numeric);
            let scores = inputs.score(head)?;
            let ranked = rank_by_score(&user.candidates, &scores, |p| self.ids[p.index()].as_str());
            all.push(score_ranking(&ranked, &user.truth));
        }
        Ok(mean(&all))
    }

    /// Every (user, candidate) pair's mean logit under `head` and whether
    /// the user bought the item in the window: the held-out pairs at the
    /// real base rate that a calibration map is fitted to.
    pub(super) fn logits_and_labels(&self, head: &ScoringHead) -> candle_core::Result<Vec<(f32, bool)>> {
        let mut pairs = Vec::with_capacity(self.users.iter().map(|u| u.candidates.len()).sum());
        for user in &self.users {
            let rows = Tensor::from_iter(user.candidates.iter().map(|p| p.index() as u32), &Device::Cpu)?;
            let logits = head.mean_logits(&user.embedding, &self.catalog.index_select(&rows, 0)?, &user.numeric)?;
            pairs.extend(logits.into_iter().zip(&user.candidates).map(|(z, p)| (z, user.truth.contains(p))));
        }
        Ok(pairs)
    }
}

/// Indices of the users to rank: all `users` if `users × items` pairs fit
/// in `max_pairs`, else a sample of `max_pairs / items` (at least one) drawn
/// from `seed`, in ascending order.
fn sample_users(users: usize, items: usize, max_pairs: usize, seed: u64) -> Vec<usize> {
    let fit = (max_pairs / items.max(1)).max(1);
    if users <= fit {
        return (0..users).collect();
    }
    // Its own generator: sampling must not move the training draws.
    let mut chosen = sample(&mut StdRng::seed_from_u64(seed ^ 0x5EED_0F7A_11E5), users, fit).into_vec();
    chosen.sort_unstable();
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_sampled_only_above_the_pair_budget_and_reproducibly() {
        assert_eq!(sample_users(5, 100, 500, 1), vec![0, 1, 2, 3, 4]);
        let sampled = sample_users(50, 100, 1_000, 1);
        assert_eq!(sampled.len(), 10);
        assert!(sampled.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(sampled, sample_users(50, 100, 1_000, 1), "same seed, same users");
        assert_ne!(sampled, sample_users(50, 100, 1_000, 2));
        assert_eq!(sample_users(3, 10_000, 10, 1).len(), 1, "at least one user");
    }
}
