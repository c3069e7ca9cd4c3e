//! History statistics: what the purchase log says about each item beyond its
//! text — how many customers bought it (ever, and lately), its usual price,
//! and which items share its buyers (item-to-item co-purchase cosine and
//! recent-purchase EASE weights).
//!
//! This is the served side: the type, its lookups and its file
//! (`stats.json.gz` in a bundle). `offline::stats_builder` builds it from a
//! split's history, for the bundle `train` writes and for every split `eval`
//! scores, so serving builds exactly the features training used.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Co-purchase neighbours kept per item in the artifact.
#[cfg_attr(not(feature = "offline"), allow(dead_code))] // the statistics builder's
pub(crate) const NEIGHBOURS_PER_ITEM: usize = 50;
/// "Recent" popularity counts buyers in this many days before the cutoff.
#[cfg_attr(not(feature = "offline"), allow(dead_code))] // the statistics builder's
pub(crate) const RECENT_DAYS: i64 = 30;
/// "This week" popularity counts buyers in this many days before the cutoff.
#[cfg_attr(not(feature = "offline"), allow(dead_code))] // the statistics builder's
pub(crate) const WEEK_DAYS: i64 = 7;

/// An item's position in one [`HistoryStats`]: the index the features, the
/// neighbour lists and the head's inputs use. It is not the index a purchase
/// log interns the item under (`offline::data::ItemIdx`); the two meet only
/// through the item's id string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ItemPos(u32);

impl ItemPos {
    pub fn new(index: usize) -> Self {
        Self(u32::try_from(index).expect("catalogs hold fewer than 2^32 items"))
    }

    pub(crate) fn index(self) -> usize {
        self.0 as usize
    }
}

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
    /// Median unit price in history; `None` when no purchase of it carried a
    /// price (a log without prices). Written as JSON `null`, which is also
    /// how bundles written before this field was optional stored a missing
    /// price (a NaN), so those load as "no price" too.
    pub price: Option<f32>,
    /// Median quantity of one purchase of it in history; `None` when no
    /// purchase carried a quantity (and in bundles written before this
    /// field). The revenue objective's units per purchase (1 when `None`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity: Option<f32>,
    /// Up to `NEIGHBOURS_PER_ITEM` (item index, cosine of buyer sets), best first.
    pub neighbours: Vec<(ItemPos, f32)>,
    /// Up to `NEIGHBOURS_PER_ITEM` (item index, recent-purchase EASE weight
    /// from this item to that one), positive weights only, best first.
    #[serde(default)]
    pub recent_ease: Vec<(ItemPos, f32)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryStats {
    /// The history's end (exclusive), `YYYY-MM-DD HH:MM:SS`.
    pub cutoff: String,
    pub customers: u32,
    pub items: Vec<ItemStats>,
    #[serde(skip)]
    by_id: HashMap<String, ItemPos>,
    #[serde(skip)]
    by_text: HashMap<String, ItemPos>,
    /// Median of the item prices: the price of a new product sent without one.
    #[serde(skip)]
    typical_price: f32,
    /// The `POPULAR_KEPT` most popular items, best first (see `most_popular`).
    #[serde(skip)]
    popular: Vec<ItemPos>,
}

/// How many of the most popular items the statistics keep ranked.
pub(crate) const POPULAR_KEPT: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error("cannot read history statistics {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error(
        "history statistics {path} cannot be read as this build's statistics ({source}; the position is in the \
         decompressed JSON): the bundle is damaged or was written by an incompatible build; retrain it"
    )]
    Parse { path: String, source: serde_json::Error },
    #[error("history statistics {path} are inconsistent: {problem}; the bundle is damaged: retrain it")]
    Invalid { path: String, problem: String },
    #[error("cannot write history statistics {path}: {source}")]
    Write { path: String, source: std::io::Error },
}

impl HistoryStats {
    /// Statistics of `items` as of `cutoff` (`YYYY-MM-DD HH:MM:SS`, the
    /// history's end), from `customers` shoppers, with their lookups built.
    pub fn from_parts(cutoff: String, customers: u32, items: Vec<ItemStats>) -> Self {
        let mut stats = Self {
            cutoff,
            customers,
            items,
            by_id: HashMap::new(),
            by_text: HashMap::new(),
            typical_price: 1.0,
            popular: Vec::new(),
        };
        stats.index();
        stats
    }

    /// Derives the lookups (and the typical price) from `items`, once, when
    /// the statistics are built or loaded.
    fn index(&mut self) {
        let mut prices: Vec<f32> = self.items.iter().filter_map(|s| s.price).collect();
        self.typical_price = median(&mut prices).unwrap_or(1.0);
        self.by_id = self.items.iter().enumerate().map(|(p, s)| (s.id.clone(), ItemPos::new(p))).collect();
        self.popular = self.rank_by_popularity(POPULAR_KEPT);
        self.by_text.clear();
        for (p, s) in self.items.iter().enumerate() {
            // Several items can share a title: the most bought one stands for it.
            let entry = self.by_text.entry(s.text.clone()).or_insert(ItemPos::new(p));
            if self.items[entry.index()].buyers < s.buyers {
                *entry = ItemPos::new(p);
            }
        }
    }

    /// Statistics with no items: every candidate is scored as a new product.
    #[cfg(test)]
    pub(crate) fn empty() -> Self {
        Self::from_parts(String::new(), 0, Vec::new())
    }

    /// The most popular items, best first: most buyers in the last week,
    /// then the last 30 days, then ever (ties: lower position). At most
    /// `POPULAR_KEPT`; ranked once, when the statistics are built or loaded,
    /// so retrieval does not sort the catalog per request.
    pub(crate) fn most_popular(&self) -> &[ItemPos] {
        &self.popular
    }

    fn rank_by_popularity(&self, k: usize) -> Vec<ItemPos> {
        let key = |p: &ItemPos| {
            let s = &self.items[p.index()];
            (s.week_buyers, s.recent_buyers, s.buyers)
        };
        let mut positions: Vec<ItemPos> = (0..self.items.len()).map(ItemPos::new).collect();
        let order = |a: &ItemPos, b: &ItemPos| key(b).cmp(&key(a)).then(a.cmp(b));
        if k == 0 {
            return Vec::new();
        }
        if positions.len() > k {
            positions.select_nth_unstable_by(k - 1, order);
            positions.truncate(k);
        }
        positions.sort_by(order);
        positions
    }

    pub fn position_of_id(&self, id: &str) -> Option<ItemPos> {
        self.by_id.get(id).copied()
    }

    /// An item whose text is exactly `text` (used when a request's history
    /// carries titles but no ids).
    pub(crate) fn position_of_text(&self, text: &str) -> Option<ItemPos> {
        self.by_text.get(text.trim()).copied()
    }

    /// Reads JSON, gzipped when the name ends in `.gz` (the committed
    /// artifact is: the neighbour lists make it 5.6 MB plain, 1.5 MB gzipped).
    pub(crate) fn load(path: &Path) -> Result<Self, StatsError> {
        let reader = super::open_maybe_gz(path)
            .map_err(|source| StatsError::Read { path: path.display().to_string(), source })?;
        let mut stats: Self = serde_json::from_reader(reader)
            .map_err(|source| StatsError::Parse { path: path.display().to_string(), source })?;
        stats.check().map_err(|problem| StatsError::Invalid { path: path.display().to_string(), problem })?;
        stats.index();
        Ok(stats)
    }

    /// Checks what the lookups and features index or count with, so that a
    /// damaged file is refused at load rather than panicking a request: every
    /// neighbour position in range, counts that nest (a week's buyers are
    /// among the month's, the month's among all), finite numbers, unique ids.
    fn check(&self) -> Result<(), String> {
        if self.items.is_empty() {
            return Err("the item list is empty (a trained bundle has at least one item)".into());
        }
        let n = self.items.len();
        let mut ids = std::collections::HashSet::with_capacity(n);
        for (p, item) in self.items.iter().enumerate() {
            let at = |problem: String| format!("item {p} (id {:?}): {problem}", item.id);
            if item.id.is_empty() || !ids.insert(item.id.as_str()) {
                return Err(at("empty or repeated id".into()));
            }
            if !(item.week_buyers <= item.recent_buyers
                && item.recent_buyers <= item.buyers
                && item.buyers <= self.customers)
            {
                return Err(at(format!(
                    "buyer counts do not nest (week {} <= month {} <= ever {} <= customers {})",
                    item.week_buyers, item.recent_buyers, item.buyers, self.customers
                )));
            }
            if !(item.age_days.is_finite() && item.age_days >= 0.0) {
                return Err(at(format!("age_days {} is not a finite number >= 0", item.age_days)));
            }
            if let Some(price) = item.price.filter(|p| !(p.is_finite() && *p >= 0.0)) {
                return Err(at(format!("price {price} is not a finite number >= 0")));
            }
            if let Some(quantity) = item.quantity.filter(|q| !(q.is_finite() && *q > 0.0)) {
                return Err(at(format!("quantity {quantity} is not a finite number > 0")));
            }
            for (list, links) in [("neighbours", &item.neighbours), ("recent_ease", &item.recent_ease)] {
                if let Some((to, weight)) = links.iter().find(|(to, w)| to.index() >= n || !w.is_finite()) {
                    return Err(at(format!(
                        "{list} links to position {} with weight {weight} (positions run 0..{n}, weights are finite)",
                        to.index()
                    )));
                }
            }
        }
        Ok(())
    }

    /// Writes JSON, gzipped when the name ends in `.gz`.
    #[cfg_attr(not(feature = "offline"), allow(dead_code))] // training's
    pub(crate) fn save(&self, path: &Path) -> Result<(), StatsError> {
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

    /// The statistics of the item at `position`.
    pub fn item(&self, position: ItemPos) -> &ItemStats {
        &self.items[position.index()]
    }

    /// Every position, in catalog order.
    #[cfg_attr(not(feature = "offline"), allow(dead_code))] // training's
    pub(crate) fn positions(&self) -> impl Iterator<Item = ItemPos> {
        (0..self.items.len()).map(ItemPos::new)
    }

    /// Units one purchase of the item at `position` usually takes: its
    /// median quantity, 1 when the log had none.
    pub(crate) fn typical_quantity(&self, position: ItemPos) -> f32 {
        self.item(position).quantity.unwrap_or(1.0)
    }

    /// Median price over all items (fallback for unknown prices).
    pub(crate) fn typical_price(&self) -> f32 {
        self.typical_price
    }
}

/// The upper median; `None` for no values.
pub(crate) fn median(values: &mut [f32]) -> Option<f32> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f32::total_cmp);
    Some(values[values.len() / 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_and_loads_plain_and_gzipped_json_alike() {
        let item = |id: &str, text: &str, buyers: u32| ItemStats {
            id: id.into(),
            text: text.into(),
            buyers,
            recent_buyers: 1,
            week_buyers: 0,
            age_days: 3.0,
            price: Some(2.5),
            neighbours: vec![(ItemPos::new(1), 0.5)],
            recent_ease: vec![(ItemPos::new(0), 0.25)],
            quantity: None,
        };
        let stats =
            HistoryStats::from_parts("2011-11-01 00:00:00".into(), 2, vec![item("A", "MUG", 2), item("B", "BAG", 1)]);
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

    #[test]
    fn damaged_statistics_are_refused_naming_the_item_and_the_problem() {
        let good = r#"{"cutoff":"2011-11-01 00:00:00","customers":3,"items":[
            {"id":"A","text":"MUG","buyers":2,"recent_buyers":1,"week_buyers":1,"age_days":3.0,"price":null,
             "neighbours":[[1,0.5]],"recent_ease":[]},
            {"id":"B","text":"BAG","buyers":1,"recent_buyers":0,"week_buyers":0,"age_days":9.0,"price":2.5,
             "neighbours":[[0,0.5]]}]}"#;
        let dir = std::env::temp_dir().join(format!("shoprank-stats-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("stats.json");
        std::fs::write(&path, good).unwrap();
        let loaded = HistoryStats::load(&path).unwrap();
        assert_eq!(loaded.items[0].price, None, "null is no price (bundles written before prices were optional)");
        assert_eq!(loaded.typical_price(), 2.5);
        for (from, to, needle) in [
            ("[[1,0.5]]", "[[2,0.5]]", "item 0 (id \"A\"): neighbours links to position 2"),
            ("\"recent_ease\":[]", "\"recent_ease\":[[9,0.1]]", "recent_ease links to position 9"),
            ("\"week_buyers\":1", "\"week_buyers\":2", "do not nest"),
            ("\"customers\":3", "\"customers\":1", "customers 1"),
            ("\"age_days\":3.0", "\"age_days\":-3.0", "age_days -3"),
            ("\"price\":2.5", "\"price\":-2.5", "price -2.5"),
            ("\"id\":\"B\"", "\"id\":\"A\"", "repeated id"),
        ] {
            assert!(good.contains(from), "{from}");
            std::fs::write(&path, good.replacen(from, to, 1)).unwrap();
            let err = HistoryStats::load(&path).unwrap_err().to_string();
            assert!(err.contains(needle) && err.contains("stats.json"), "{to}: {err}");
        }
        std::fs::write(&path, r#"{"cutoff":"","customers":0,"items":[]}"#).unwrap();
        let err = HistoryStats::load(&path).unwrap_err().to_string();
        assert!(err.contains("empty"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
