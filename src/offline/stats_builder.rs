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

/// Item-to-item co-purchase over a split's catalog, sparse: for each item,
/// the other items its buyers bought and how many of them did, so memory
/// grows with the pairs that occur (Σ over customers of their distinct items
/// squared, at most), never with items². The cosine of two items is
/// `cos(i, j) = |B_i ∩ B_j| / sqrt(|B_i| · |B_j|)` for buyer sets `B`; the
/// item-knn baseline sums it in full, the features keep each row's best.
pub struct CoPurchase {
    /// Distinct customers who bought each item (the diagonal of `XᵀX`).
    buyers: Vec<u32>,
    /// Row `a` is `columns[offsets[a]..offsets[a + 1]]` (ascending positions,
    /// `a` itself left out) with the same range of `counts`.
    offsets: Vec<usize>,
    columns: Vec<u32>,
    counts: Vec<u32>,
}

impl CoPurchase {
    pub(crate) fn build(split: &Split<'_>) -> Self {
        let position: HashMap<ItemIdx, usize> = split.catalog.iter().enumerate().map(|(p, &i)| (i, p)).collect();
        let n = split.catalog.len();
        let mut users: Vec<(&UserIdx, &Vec<ItemIdx>)> = split.user_history.iter().collect();
        users.sort_unstable_by_key(|(user, _)| **user);
        let baskets: Vec<Vec<u32>> = users
            .iter()
            .map(|(_, items)| items.iter().filter_map(|i| position.get(i).map(|&p| p as u32)).collect())
            .collect();
        let mut buyers_of: Vec<Vec<u32>> = vec![Vec::new(); n];
        for (customer, basket) in baskets.iter().enumerate() {
            for &a in basket {
                buyers_of[a as usize].push(customer as u32);
            }
        }
        let progress = progress_bar(n as u64, "co-purchase", "items");
        let (mut offsets, mut columns, mut counts) = (vec![0], Vec::new(), Vec::new());
        // One dense scratch row, reused: touched entries are reset after each item.
        let mut scratch = vec![0u32; n];
        let mut touched: Vec<u32> = Vec::new();
        for (a, buyers) in buyers_of.iter().enumerate() {
            for &customer in buyers {
                for &b in &baskets[customer as usize] {
                    if scratch[b as usize] == 0 {
                        touched.push(b);
                    }
                    scratch[b as usize] += 1;
                }
            }
            touched.sort_unstable();
            for &b in &touched {
                if b as usize != a {
                    columns.push(b);
                    counts.push(scratch[b as usize]);
                }
                scratch[b as usize] = 0;
            }
            touched.clear();
            offsets.push(columns.len());
            progress.inc(1);
        }
        progress.finish_and_clear();
        let buyers = buyers_of.iter().map(|b| b.len() as u32).collect();
        Self { buyers, offsets, columns, counts }
    }

    /// Items in the catalog.
    pub(crate) fn len(&self) -> usize {
        self.buyers.len()
    }

    /// Customers who bought both `a` and each other item, ascending positions.
    fn counts(&self, a: usize) -> impl Iterator<Item = (usize, u32)> + '_ {
        let range = self.offsets[a]..self.offsets[a + 1];
        self.columns[range.clone()].iter().zip(&self.counts[range]).map(|(&b, &c)| (b as usize, c))
    }

    /// The cosine of `a` with each item it shares a buyer with.
    pub(crate) fn cosines(&self, a: usize) -> impl Iterator<Item = (usize, f32)> + '_ {
        let buyers_a = self.buyers[a] as f32;
        self.counts(a).map(move |(b, c)| (b, c as f32 / (buyers_a * self.buyers[b] as f32).sqrt()))
    }
}

/// A progress bar on standard error with a rate and an ETA (hidden when
/// standard error is not a terminal, as indicatif does).
pub(crate) fn progress_bar(len: u64, what: &str, unit: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len).with_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{{msg:>16}} {{bar:40}} {{pos}}/{{len}} {unit} (eta {{eta}})"
        ))
        .expect("template"),
    );
    bar.set_message(what.to_string());
    bar
}

/// How many items the recent-purchase EASE was fitted over: the whole
/// catalog, or (above `ease_max_items`) the items with the most buyers in the
/// last `RECENT_DAYS`, since its dense solve grows with items³.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EaseCoverage {
    pub fitted_items: usize,
    pub catalog_items: usize,
}

/// Builds the statistics of a split's history (catalog order). The
/// recent-purchase EASE is fitted over at most `ease_max_items` items.
pub(crate) fn build(
    split: &Split<'_>,
    co_purchase: &CoPurchase,
    ease_max_items: usize,
) -> (HistoryStats, EaseCoverage) {
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
    let mut quantities: Vec<Vec<f32>> = vec![Vec::new(); n];
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
        // Every importer checks prices, but events stored before those
        // checks may not have been: statistics keep only what loads back.
        if let Some(price) = event.price.filter(|p| p.is_finite() && *p >= 0.0) {
            prices[p].push(price);
        }
        if event.quantity.is_finite() && event.quantity > 0.0 {
            quantities[p].push(event.quantity);
        }
    }
    let recent_counts: Vec<usize> = recent.iter().map(|r| r.len()).collect();
    let buyer_counts: Vec<usize> = buyers.iter().map(|b| b.len()).collect();
    let fitted = ease_items(&recent_counts, &buyer_counts, ease_max_items);
    let mut ease_rows = recent_ease_rows(split, &position, co_purchase, &fitted);
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
                quantity: median(&mut quantities[p]),
                neighbours: best_neighbours(co_purchase.cosines(p), 1e4),
                recent_ease: std::mem::take(&mut ease_rows[p]),
            }
        })
        .collect();
    let cutoff = chrono::DateTime::from_timestamp(split.cutoff, 0)
        .map(|t| t.naive_utc().format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default();
    let coverage = EaseCoverage { fitted_items: fitted.len(), catalog_items: n };
    (HistoryStats::from_parts(cutoff, split.user_history.len() as u32, items), coverage)
}

/// The positions the EASE is fitted over, ascending: all of them, or the
/// `max` with the most recent buyers (then most buyers, then position).
fn ease_items(recent_buyers: &[usize], buyers: &[usize], max: usize) -> Vec<usize> {
    let mut items: Vec<usize> = (0..recent_buyers.len()).collect();
    if items.len() > max {
        items.sort_by(|&a, &b| recent_buyers[b].cmp(&recent_buyers[a]).then(buyers[b].cmp(&buyers[a])).then(a.cmp(&b)));
        items.truncate(max);
        items.sort_unstable();
    }
    items
}

/// Each catalog item's largest recent-purchase EASE weights (empty for items
/// outside `fitted`), fitted on `XᵀX` and `XᵀR` restricted to `fitted`.
fn recent_ease_rows(
    split: &Split<'_>,
    position: &HashMap<ItemIdx, usize>,
    co_purchase: &CoPurchase,
    fitted: &[usize],
) -> Vec<Vec<(ItemPos, f32)>> {
    let n = co_purchase.len();
    let m = fitted.len();
    let mut index: Vec<Option<usize>> = vec![None; n];
    for (i, &p) in fitted.iter().enumerate() {
        index[p] = Some(i);
    }
    let mut gram = vec![0u32; m * m];
    for (i, &a) in fitted.iter().enumerate() {
        gram[i * m + i] = co_purchase.buyers[a];
        for (b, count) in co_purchase.counts(a) {
            if let Some(j) = index[b] {
                gram[i * m + j] = count;
            }
        }
    }
    let ease = RecentEase::fit(m, &gram, &history_to_recent(split, position, &index, m), recent_ease::LAMBDA);
    let mut rows = vec![Vec::new(); n];
    for (i, &a) in fitted.iter().enumerate() {
        rows[a] = best_neighbours(ease.row(i).iter().enumerate().map(|(j, &w)| (fitted[j], w)), 1e5);
    }
    rows
}

/// The `NEIGHBOURS_PER_ITEM` largest positive weights of a row of
/// (position, weight), best first (ties by position), rounded to `1/scale`
/// to keep the artifact small.
fn best_neighbours(row: impl Iterator<Item = (usize, f32)>, scale: f32) -> Vec<(ItemPos, f32)> {
    let mut neighbours: Vec<(ItemPos, f32)> =
        row.filter(|&(_, w)| w > 0.0).map(|(q, w)| (ItemPos::new(q), w)).collect();
    neighbours.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    neighbours.truncate(NEIGHBOURS_PER_ITEM);
    for neighbour in &mut neighbours {
        neighbour.1 = (neighbour.1 * scale).round() / scale;
    }
    neighbours.retain(|n| n.1 > 0.0);
    neighbours
}

/// `XᵀR` over the fitted items (`index`: catalog position → row, `m` rows):
/// customers who bought item `a` at any time in history and item `b` in its
/// last `RECENT_DAYS`.
fn history_to_recent(
    split: &Split<'_>,
    position: &HashMap<ItemIdx, usize>,
    index: &[Option<usize>],
    m: usize,
) -> Vec<u32> {
    let recent_from = split.cutoff - RECENT_DAYS * 86_400;
    let mut recent: HashMap<UserIdx, std::collections::BTreeSet<usize>> = HashMap::new();
    for event in split.history.iter().filter(|e| e.time >= recent_from) {
        if let Some(b) = index[position[&event.item]] {
            recent.entry(event.user).or_default().insert(b);
        }
    }
    let mut counts = vec![0u32; m * m];
    for (user, recent_items) in &recent {
        for item in &split.user_history[user] {
            let Some(a) = index[position[item]] else { continue };
            for &b in recent_items {
                counts[a * m + b] += 1;
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

    /// A and B bought together by u1 (September) and u2 (October), A and C by
    /// u3 (October).
    fn three_customers() -> crate::offline::data::Dataset {
        synthetic(&[
            ("u1", "A", "2011-09-01", "MUG"),
            ("u1", "B", "2011-09-01", "BAG"),
            ("u2", "A", "2011-10-20", "MUG"),
            ("u2", "B", "2011-10-20", "BAG"),
            ("u3", "A", "2011-10-25", "MUG"),
            ("u3", "C", "2011-10-25", "CUP"),
        ])
    }

    #[test]
    fn counts_buyers_prices_and_co_purchase() {
        let data = three_customers();
        let split = Split::new(&data, parse_time("2011-11-01").unwrap(), None);
        let co = CoPurchase::build(&split);
        let (stats, coverage) = build(&split, &co, 10);
        assert_eq!(coverage, EaseCoverage { fitted_items: 3, catalog_items: 3 });
        let a = stats.position_of_id("A").unwrap().index();
        let b = stats.position_of_id("B").unwrap().index();
        assert_eq!(stats.items[a].buyers, 3);
        assert_eq!(stats.items[a].recent_buyers, 2);
        assert_eq!(stats.items[a].week_buyers, 1);
        assert_eq!(stats.items[a].age_days, 61.0);
        // A's buyers {u1,u2,u3}, B's {u1,u2}: 2 / sqrt(3·2).
        let expected = 2.0 / 6f32.sqrt();
        let cosine = |a: usize, b: usize| co.cosines(a).find(|&(q, _)| q == b).map_or(0.0, |(_, c)| c);
        assert!((cosine(a, b) - expected).abs() < 1e-6);
        assert!((cosine(b, a) - expected).abs() < 1e-6, "symmetric");
        assert_eq!(stats.items[a].neighbours[0].0.index(), b);
        assert_eq!(stats.position_of_text("CUP"), stats.position_of_id("C"));
        assert!(co.cosines(a).all(|(q, _)| q != a), "an item is not its own neighbour");
        for (p, item) in stats.items.iter().enumerate() {
            assert!(item.recent_ease.iter().all(|&(q, w)| q.index() != p && w > 0.0), "{:?}", item.recent_ease);
            assert!(item.recent_ease.windows(2).all(|w| w[0].1 >= w[1].1), "best first: {:?}", item.recent_ease);
        }
        // u2 bought A and B recently: B reaches A's recent buyers.
        assert!(stats.items[b].recent_ease.iter().any(|&(q, _)| q.index() == a), "{:?}", stats.items[b].recent_ease);
    }

    #[test]
    fn above_its_bound_the_ease_is_fitted_over_the_most_recently_bought_items() {
        let data = three_customers();
        let split = Split::new(&data, parse_time("2011-11-01").unwrap(), None);
        let co = CoPurchase::build(&split);
        // Recent buyers: A 2, B 1, C 1; B has more buyers overall than C.
        let (stats, coverage) = build(&split, &co, 2);
        assert_eq!(coverage, EaseCoverage { fitted_items: 2, catalog_items: 3 });
        let c = stats.position_of_id("C").unwrap();
        assert!(stats.item(c).recent_ease.is_empty(), "C is outside the fitted set");
        assert!(stats.items.iter().all(|i| i.recent_ease.iter().all(|&(q, _)| q != c)), "nothing points to C");
        let (full, _) = build(&split, &co, 3);
        assert_eq!(
            stats.items.iter().map(|i| &i.neighbours).collect::<Vec<_>>(),
            full.items.iter().map(|i| &i.neighbours).collect::<Vec<_>>(),
            "co-purchase does not depend on the bound"
        );
    }
}
