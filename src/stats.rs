//! History statistics: what the purchase log says about each item beyond its
//! text — how many customers bought it (ever, and lately), its usual price,
//! and which items share its buyers (item-to-item co-purchase cosine).
//!
//! `shoprank train` builds them from history only and writes them next to the
//! head (`models/stats.json.gz`); the server loads them at start-up, so serving
//! builds exactly the features training used. Evaluation rebuilds them from
//! the split's history with the same code.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::data::split::Split;
use crate::recent_ease::{self, RecentEase};

/// Co-purchase neighbours kept per item in the artifact.
pub const NEIGHBOURS_PER_ITEM: usize = 50;
/// "Recent" popularity counts buyers in this many days before the cutoff.
pub const RECENT_DAYS: i64 = 30;
/// "This week" popularity counts buyers in this many days before the cutoff.
pub const WEEK_DAYS: i64 = 7;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ItemStats {
    pub id: String,
    pub text: String,
    /// Distinct customers who bought it in history.
    pub buyers: u32,
    /// Distinct customers who bought it in the last `RECENT_DAYS` of history.
    pub recent_buyers: u32,
    /// Distinct customers who bought it in the last `WEEK_DAYS` of history.
    pub week_buyers: u32,
    /// Days from its first purchase to the cutoff (new products sell differently).
    pub age_days: f32,
    /// Median unit price in history.
    pub price: f32,
    /// Up to `NEIGHBOURS_PER_ITEM` (item index, cosine of buyer sets), best first.
    pub neighbours: Vec<(u32, f32)>,
    /// Up to `NEIGHBOURS_PER_ITEM` (item index, recent-purchase EASE weight
    /// from this item to that one), positive weights only, best first.
    #[serde(default)]
    pub recent_ease: Vec<(u32, f32)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryStats {
    /// The history's end (exclusive), `YYYY-MM-DD HH:MM:SS`.
    pub cutoff: String,
    pub customers: u32,
    pub items: Vec<ItemStats>,
    #[serde(skip)]
    by_id: HashMap<String, u32>,
    #[serde(skip)]
    by_text: HashMap<String, u32>,
    /// Median of the item prices: the price of a new product sent without one.
    #[serde(skip)]
    typical_price: f32,
}

#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error("cannot read history statistics: {0}")]
    Read(#[from] crate::data::DataError),
    #[error("history statistics {path} are not valid: {source}")]
    Parse { path: String, source: serde_json::Error },
    #[error("cannot write history statistics {path}: {source}")]
    Write { path: String, source: std::io::Error },
}

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
        let position: HashMap<u32, usize> = split.catalog.iter().enumerate().map(|(p, &i)| (i, p)).collect();
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
                if c == 0 || a == b { 0.0 } else { c as f32 / (buyers[a] * buyers[b]).sqrt() }
            })
            .collect();
        Self { n, counts, cosine }
    }

    pub fn row(&self, p: usize) -> &[f32] {
        &self.cosine[p * self.n..(p + 1) * self.n]
    }
}

impl HistoryStats {
    /// Builds the statistics of a split's history (catalog order).
    pub fn build(split: &Split<'_>, co_purchase: &CoPurchase) -> Self {
        let data = split.data;
        let recent_from = split.cutoff - RECENT_DAYS * 86_400;
        let position: HashMap<u32, usize> = split.catalog.iter().enumerate().map(|(p, &i)| (i, p)).collect();
        let n = split.catalog.len();
        let mut buyers: Vec<std::collections::HashSet<u32>> = vec![Default::default(); n];
        let mut recent: Vec<std::collections::HashSet<u32>> = vec![Default::default(); n];
        let mut week: Vec<std::collections::HashSet<u32>> = vec![Default::default(); n];
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
        let recent_ease = RecentEase::fit(n, &co_purchase.counts, &history_to_recent(split, &position), recent_ease::LAMBDA);
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
        Self::from_parts(cutoff, split.user_history.len() as u32, items)
    }

    pub(crate) fn from_parts(cutoff: String, customers: u32, items: Vec<ItemStats>) -> Self {
        let mut stats =
            Self { cutoff, customers, items, by_id: HashMap::new(), by_text: HashMap::new(), typical_price: 1.0 };
        stats.index();
        stats
    }

    /// Derives the lookups (and the typical price) from `items`, once, when
    /// the statistics are built or loaded.
    fn index(&mut self) {
        let mut prices: Vec<f32> = self.items.iter().map(|s| s.price).filter(|p| p.is_finite()).collect();
        let typical = median(&mut prices);
        self.typical_price = if typical.is_finite() { typical } else { 1.0 };
        self.by_id = self.items.iter().enumerate().map(|(p, s)| (s.id.clone(), p as u32)).collect();
        self.by_text.clear();
        for (p, s) in self.items.iter().enumerate() {
            // Several items can share a title: the most bought one stands for it.
            let entry = self.by_text.entry(s.text.clone()).or_insert(p as u32);
            if self.items[*entry as usize].buyers < s.buyers {
                *entry = p as u32;
            }
        }
    }

    /// Statistics with no items: every candidate is scored as a new product.
    pub fn empty() -> Self {
        Self::from_parts(String::new(), 0, Vec::new())
    }

    pub fn position_of_id(&self, id: &str) -> Option<u32> {
        self.by_id.get(id).copied()
    }

    /// An item whose text is exactly `text` (used when a request's history
    /// carries titles but no ids).
    pub fn position_of_text(&self, text: &str) -> Option<u32> {
        self.by_text.get(text.trim()).copied()
    }

    /// Reads JSON, gzipped when the name ends in `.gz` (the committed
    /// artifact is: the neighbour lists make it 5.6 MB plain, 1.5 MB gzipped).
    pub fn load(path: &Path) -> Result<Self, StatsError> {
        let reader = crate::data::open_maybe_gz(path)?;
        let mut stats: Self = serde_json::from_reader(reader)
            .map_err(|source| StatsError::Parse { path: path.display().to_string(), source })?;
        stats.index();
        Ok(stats)
    }

    /// Writes JSON, gzipped when the name ends in `.gz`.
    pub fn save(&self, path: &Path) -> Result<(), StatsError> {
        let write_error = |source| StatsError::Write { path: path.display().to_string(), source };
        let text = serde_json::to_vec(self).expect("stats serialise");
        let bytes = if path.extension().is_some_and(|e| e == "gz") {
            let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            std::io::Write::write_all(&mut encoder, &text).map_err(write_error)?;
            encoder.finish().map_err(write_error)?
        } else {
            text
        };
        std::fs::write(path, bytes).map_err(write_error)
    }

    /// Median price over all items (fallback for unknown prices).
    pub fn typical_price(&self) -> f32 {
        self.typical_price
    }
}

/// The `NEIGHBOURS_PER_ITEM` largest positive weights of a row, best first
/// (ties by position), rounded to `1/scale` to keep the artifact small.
fn best_neighbours(row: &[f32], scale: f32) -> Vec<(u32, f32)> {
    let mut neighbours: Vec<(u32, f32)> =
        row.iter().enumerate().filter(|&(_, &w)| w > 0.0).map(|(q, &w)| (q as u32, w)).collect();
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
fn history_to_recent(split: &Split<'_>, position: &HashMap<u32, usize>) -> Vec<u32> {
    let n = split.catalog.len();
    let recent_from = split.cutoff - RECENT_DAYS * 86_400;
    let mut recent: HashMap<u32, std::collections::BTreeSet<usize>> = HashMap::new();
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

fn median(values: &mut [f32]) -> f32 {
    if values.is_empty() {
        return f32::NAN;
    }
    values.sort_by(f32::total_cmp);
    values[values.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::parse_time;
    use crate::data::split::tests::synthetic;

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
        let stats = HistoryStats::build(&split, &co);
        let a = stats.position_of_id("A").unwrap() as usize;
        let b = stats.position_of_id("B").unwrap() as usize;
        assert_eq!(stats.items[a].buyers, 3);
        assert_eq!(stats.items[a].recent_buyers, 2);
        assert_eq!(stats.items[a].week_buyers, 1);
        assert_eq!(stats.items[a].age_days, 61.0);
        // A's buyers {u1,u2,u3}, B's {u1,u2}: 2 / sqrt(3·2).
        let expected = 2.0 / 6f32.sqrt();
        assert!((co.row(a)[b] - expected).abs() < 1e-6);
        assert_eq!(stats.items[a].neighbours[0].0 as usize, b);
        assert_eq!(stats.position_of_text("CUP"), stats.position_of_id("C"));
        assert_eq!(co.row(a)[a], 0.0, "an item is not its own neighbour");
        for (p, item) in stats.items.iter().enumerate() {
            assert!(item.recent_ease.iter().all(|&(q, w)| q as usize != p && w > 0.0), "{:?}", item.recent_ease);
            assert!(item.recent_ease.windows(2).all(|w| w[0].1 >= w[1].1), "best first: {:?}", item.recent_ease);
        }
        // u2 bought A and B recently: B reaches A's recent buyers.
        assert!(stats.items[b].recent_ease.iter().any(|&(q, _)| q as usize == a), "{:?}", stats.items[b].recent_ease);
    }

    #[test]
    fn saves_and_loads_plain_and_gzipped_json_alike() {
        let data = synthetic(&[("u1", "A", "2011-09-01", "MUG"), ("u1", "B", "2011-09-02", "BAG"), ("u2", "A", "2011-10-20", "MUG")]);
        let split = Split::new(&data, parse_time("2011-11-01").unwrap(), None);
        let stats = HistoryStats::build(&split, &CoPurchase::build(&split));
        let dir = std::env::temp_dir().join(format!("shoprank-stats-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for name in ["stats.json", "stats.json.gz"] {
            let path = dir.join(name);
            stats.save(&path).unwrap();
            let loaded = HistoryStats::load(&path).unwrap();
            assert_eq!(loaded.items, stats.items, "{name}");
            assert_eq!(loaded.position_of_text("BAG"), stats.position_of_id("B"), "{name}: lookups rebuilt");
        }
        let gz = std::fs::read(dir.join("stats.json.gz")).unwrap();
        assert_eq!(&gz[..2], &[0x1f, 0x8b], "a .gz name writes gzip");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
