//! Revenue@10 and the revenue objective, offline.
//!
//! **Revenue@10** of a ranking: the money the user's test-period purchases
//! of the items in their top 10 brought in (price × quantity, summed over
//! those purchases of truth items), averaged over test users. It weighs a
//! hit by what it was worth, where NDCG counts every hit alike.
//!
//! **The revenue objective** ranks by expected revenue, the calibrated
//! purchase probability times what a purchase of the item brings: its
//! price (its median price in the history's statistics, or, for an item
//! without any price, the median over priced items, so it is neither
//! pushed up nor buried) times its typical quantity (the median units of
//! one purchase; 1 where the log has no quantities). The quantity matters
//! wherever shoppers buy in bulk: in the Online Retail log a 0.29 pencil is
//! bought by the hundred and a 12.75 cabinet one at a time. Serving does
//! the same with the request's or the catalog's price first
//! (`serve::ranker`).

use std::collections::HashMap;

use crate::model::stats::{HistoryStats, ItemPos};
use crate::offline::data::split::Split;
use crate::offline::data::{ItemIdx, UserIdx};
use crate::offline::ranking_metrics::CUTOFF;

/// What each test user's purchases of each item brought in during the test window.
pub(crate) struct TestRevenue {
    by_pair: HashMap<(UserIdx, ItemIdx), f64>,
}

impl TestRevenue {
    /// Sums price × quantity over the test window's events of truth items;
    /// an event without a price adds nothing.
    pub(crate) fn of(split: &Split<'_>) -> Self {
        let mut by_pair: HashMap<(UserIdx, ItemIdx), f64> = HashMap::new();
        let truth: std::collections::HashSet<(UserIdx, ItemIdx)> =
            split.test_users.iter().flat_map(|u| u.truth.iter().map(move |&i| (u.user, i))).collect();
        for event in split.test {
            if truth.contains(&(event.user, event.item)) {
                let value = f64::from(event.price.unwrap_or(0.0)) * f64::from(event.quantity);
                *by_pair.entry((event.user, event.item)).or_default() += value;
            }
        }
        Self { by_pair }
    }

    /// One user's revenue per catalog position, for [`revenue_at_10`].
    pub(crate) fn for_user(
        &self,
        split: &Split<'_>,
        stats: &HistoryStats,
        user: UserIdx,
        truth: &[ItemIdx],
    ) -> HashMap<ItemPos, f64> {
        truth
            .iter()
            .filter_map(|&item| {
                let position = stats.position_of_id(split.data.items.name(item))?;
                Some((position, self.by_pair.get(&(user, item)).copied().unwrap_or(0.0)))
            })
            .collect()
    }
}

/// The revenue of the purchases found in the first ten of `ranked`.
pub(crate) fn revenue_at_10(ranked: &[ItemPos], revenue: &HashMap<ItemPos, f64>) -> f64 {
    ranked.iter().take(CUTOFF).filter_map(|p| revenue.get(p)).sum()
}

/// What one purchase of the item brings, as the revenue objective counts
/// it: price × typical quantity (see the module's doc).
pub(crate) fn purchase_value(stats: &HistoryStats, position: ItemPos) -> f32 {
    let price = stats.item(position).price.unwrap_or_else(|| stats.typical_price());
    price * stats.typical_quantity(position)
}

/// Expected revenue of each candidate: probability × purchase value.
pub(crate) fn expected_revenue(stats: &HistoryStats, candidates: &[ItemPos], probabilities: &[f32]) -> Vec<f32> {
    candidates.iter().zip(probabilities).map(|(&p, &probability)| probability * purchase_value(stats, p)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_purchases_in_the_top_ten_count() {
        let ranked: Vec<ItemPos> = (0..12).map(ItemPos::new).collect();
        let revenue: HashMap<ItemPos, f64> =
            [(ItemPos::new(0), 5.0), (ItemPos::new(9), 2.5), (ItemPos::new(10), 100.0)].into_iter().collect();
        assert_eq!(revenue_at_10(&ranked, &revenue), 7.5);
        assert_eq!(revenue_at_10(&ranked[..3], &revenue), 5.0);
    }
}
