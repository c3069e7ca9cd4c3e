//! Builds the history statistics a bundle ships ([`HistoryStats`]) from a
//! split's history: buyers (ever, last 30 days, last 7 days), item age,
//! median price, the best co-purchase neighbours and the largest
//! recent-purchase EASE weights of every catalog item. Training builds the
//! shipped artifact and evaluation rebuilds each split's statistics with this
//! one function, so served features are built from the same numbers.

use std::collections::HashMap;

use crate::model::stats::{median, HistoryStats, ItemPos, ItemStats, NEIGHBOURS_PER_ITEM, RECENT_DAYS, WEEK_DAYS};
use crate::offline::data::split::Split;
use crate::offline::data::{ItemIdx, UserIdx};
use crate::offline::recent_ease::{self, RecentEase};

/// Full item-by-item co-purchase cosine over a split's catalog:
/// `cos(i, j) = |B_i ∩ B_j| / sqrt(|B_i| · |B_j|)` for buyer sets `B`.
/// Row-major `[n, n]` in catalog order; used by the item-knn baseline in full
/// and, truncated to each row's best neighbours, as a model feature.
pub struct CoPurchase {
    pub n: usize,
    /// `XᵀX`: customers who bought both items (buyers on the diagonal).
    pub counts: Vec<u32>,
    pub cosine: Vec<f32>,
}

impl CoPurchase {
    pub fn build(split: &Split<'_>) -> Self {
        let position: HashMap<ItemIdx, usize> = split.catalog.iter().enumerate().map(|(p, &i)| (i, p)).collect();
        let n = split.catalog.len();
        let mut counts = vec![0u32; n * n];
        for items in split.user_history.values() {
            let rows: Vec<usize> = items.iter().filter_map(|i| position.get(i).copied()).collect();
            for &a in &rows {
                for &b in &rows {
                    counts[a * n + b] += 1;
                }
            }
        }
        let buyers: Vec<f32> = (0..n).map(|p| counts[p * n + p] as f32).collect();
        let cosine = counts
            .iter()
            .enumerate()
            .map(|(k, &c)| {
                let (a, b) = (k / n, k % n);
                if c == 0 || a == b {
                    0.0
                } else {
                    c as f32 / (buyers[a] * buyers[b]).sqrt()
                }
            })
            .collect();
        Self { n, counts, cosine }
    }

    pub fn row(&self, p: usize) -> &[f32] {
        &self.cosine[p * self.n..(p + 1) * self.n]
    }
}

/// Builds the statistics of a split's history (catalog order).
pub fn build(split: &Split<'_>, co_purchase: &CoPurchase) -> HistoryStats {
    let data = split.data;
    let recent_from = split.cutoff - RECENT_DAYS * 86_400;
    let position: HashMap<ItemIdx, usize> = split.catalog.iter().enumerate().map(|(p, &i)| (i, p)).collect();
    let n = split.catalog.len();
    let mut buyers: Vec<std::collections::HashSet<UserIdx>> = vec![Default::default(); n];
    let mut recent: Vec<std::collections::HashSet<UserIdx>> = vec![Default::default(); n];
    let mut week: Vec<std::collections::HashSet<UserIdx>> = vec![Default::default(); n];
    let mut first_seen: Vec<i64> = vec![i64::MAX; n];
    let week_from = split.cutoff - WEEK_DAYS * 86_400;
    let mut prices: Vec<Vec<f32>> = vec![Vec::new(); n];
    for event in split.history {
        let p = position[&event.item];
        buyers[p].insert(event.user);
        if event.time >= recent_from {
            recent[p].insert(event.user);
        }
        if event.time >= week_from {
            week[p].insert(event.user);
        }
        first_seen[p] = first_seen[p].min(event.time);
        if event.price.is_finite() {
            prices[p].push(event.price);
        }
    }
    let recent_ease =
        RecentEase::fit(n, &co_purchase.counts, &history_to_recent(split, &position), recent_ease::LAMBDA);
    let items = (0..n)
        .map(|p| {
            let item = split.catalog[p];
            ItemStats {
                id: data.items.name(item).to_string(),
                text: split.item_text[&item].clone(),
                buyers: buyers[p].len() as u32,
                recent_buyers: recent[p].len() as u32,
                week_buyers: week[p].len() as u32,
                age_days: ((split.cutoff - first_seen[p]) as f32 / 86_400.0).max(0.0).round(),
                price: median(&mut prices[p]),
                neighbours: best_neighbours(co_purchase.row(p), 1e4),
                recent_ease: best_neighbours(recent_ease.row(p), 1e5),
            }
        })
        .collect();
    let cutoff = chrono::DateTime::from_timestamp(split.cutoff, 0)
        .map(|t| t.naive_utc().format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default();
    HistoryStats::from_parts(cutoff, split.user_history.len() as u32, items)
}

/// The `NEIGHBOURS_PER_ITEM` largest positive weights of a row, best first
/// (ties by position), rounded to `1/scale` to keep the artifact small.
fn best_neighbours(row: &[f32], scale: f32) -> Vec<(ItemPos, f32)> {
    let mut neighbours: Vec<(ItemPos, f32)> =
        row.iter().enumerate().filter(|&(_, &w)| w > 0.0).map(|(q, &w)| (ItemPos::new(q), w)).collect();
    neighbours.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    neighbours.truncate(NEIGHBOURS_PER_ITEM);
    for neighbour in &mut neighbours {
        neighbour.1 = (neighbour.1 * scale).round() / scale;
    }
    neighbours.retain(|n| n.1 > 0.0);
    neighbours
}

/// `XᵀR` over catalog positions: customers who bought item `a` at any time in
/// history and item `b` in its last `RECENT_DAYS`.
fn history_to_recent(split: &Split<'_>, position: &HashMap<ItemIdx, usize>) -> Vec<u32> {
    let n = split.catalog.len();
    let recent_from = split.cutoff - RECENT_DAYS * 86_400;
    let mut recent: HashMap<UserIdx, std::collections::BTreeSet<usize>> = HashMap::new();
    for event in split.history.iter().filter(|e| e.time >= recent_from) {
        recent.entry(event.user).or_default().insert(position[&event.item]);
    }
    let mut counts = vec![0u32; n * n];
    for (user, recent_items) in &recent {
        for item in &split.user_history[user] {
            let a = position[item];
            for &b in recent_items {
                counts[a * n + b] += 1;
            }
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offline::data::parse_time;
    use crate::offline::data::split::tests::synthetic;

    #[test]
    fn counts_buyers_prices_and_co_purchase() {
        let data = synthetic(&[
            ("u1", "A", "2011-09-01", "MUG"),
            ("u1", "B", "2011-09-01", "BAG"),
            ("u2", "A", "2011-10-20", "MUG"),
            ("u2", "B", "2011-10-20", "BAG"),
            ("u3", "A", "2011-10-25", "MUG"),
            ("u3", "C", "2011-10-25", "CUP"),
        ]);
        let split = Split::new(&data, parse_time("2011-11-01").unwrap(), None);
        let co = CoPurchase::build(&split);
        let stats = build(&split, &co);
        let a = stats.position_of_id("A").unwrap().index();
        let b = stats.position_of_id("B").unwrap().index();
        assert_eq!(stats.items[a].buyers, 3);
        assert_eq!(stats.items[a].recent_buyers, 2);
        assert_eq!(stats.items[a].week_buyers, 1);
        assert_eq!(stats.items[a].age_days, 61.0);
        // A's buyers {u1,u2,u3}, B's {u1,u2}: 2 / sqrt(3·2).
        let expected = 2.0 / 6f32.sqrt();
        assert!((co.row(a)[b] - expected).abs() < 1e-6);
        assert_eq!(stats.items[a].neighbours[0].0.index(), b);
        assert_eq!(stats.position_of_text("CUP"), stats.position_of_id("C"));
        assert_eq!(co.row(a)[a], 0.0, "an item is not its own neighbour");
        for (p, item) in stats.items.iter().enumerate() {
            assert!(item.recent_ease.iter().all(|&(q, w)| q.index() != p && w > 0.0), "{:?}", item.recent_ease);
            assert!(item.recent_ease.windows(2).all(|w| w[0].1 >= w[1].1), "best first: {:?}", item.recent_ease);
        }
        // u2 bought A and B recently: B reaches A's recent buyers.
        assert!(stats.items[b].recent_ease.iter().any(|&(q, _)| q.index() == a), "{:?}", stats.items[b].recent_ease);
    }
}
