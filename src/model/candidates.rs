//! Candidate sources that need only a bundle's statistics: the items the
//! history's links point to, and the recently popular ones. Serving's
//! retrieval (`serve::retrieve`) and `eval --retrieve` both draw on them.

use std::collections::{HashMap, HashSet};

use crate::model::features::HISTORY_COPURCHASE_ITEMS;
use crate::model::stats::{HistoryStats, ItemPos};

/// Positions the history's co-purchase and EASE links point to, strongest
/// summed link first; history items themselves excluded.
pub(crate) fn related(stats: &HistoryStats, history_positions: &[Option<ItemPos>]) -> Vec<ItemPos> {
    let history: HashSet<ItemPos> = history_positions.iter().flatten().copied().collect();
    let mut weight: HashMap<ItemPos, f32> = HashMap::new();
    for &position in history_positions.iter().take(HISTORY_COPURCHASE_ITEMS).flatten() {
        let item = stats.item(position);
        for &(neighbour, w) in item.neighbours.iter().chain(&item.recent_ease) {
            if !history.contains(&neighbour) && w > 0.0 {
                *weight.entry(neighbour).or_default() += w;
            }
        }
    }
    let mut ranked: Vec<(ItemPos, f32)> = weight.into_iter().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    ranked.into_iter().map(|(p, _)| p).collect()
}

/// The `k` items with the most buyers in the last week, then the last 30
/// days, then ever (at most `stats::POPULAR_KEPT`).
pub(crate) fn popular(stats: &HistoryStats, k: usize) -> Vec<ItemPos> {
    stats.most_popular().iter().take(k).copied().collect()
}
