//! Live statistics: a bundle's history statistics brought forward with the
//! purchases that happened after its history ended, without retraining.
//!
//! The head keeps its weights; only its inputs move. [`merge`] takes the
//! bundle's statistics (the **base**, frozen at its history's end `H`) and
//! the purchases at or after `H` up to `now`, and returns statistics as of
//! `now`, the base's positions kept and the items first bought after `H`
//! appended:
//!
//! - **Buyers ever**: the base's count plus the item's distinct buyers
//!   since `H`. A shopper who bought the item both before and after `H` is
//!   counted twice (the base ships counts, not buyer sets).
//! - **Buyers in the last 30 and 7 days** (windows ending at `now`): the
//!   distinct buyers since `H` inside the window, plus the base's count
//!   scaled by the share of the base's window that still lies inside the
//!   new one (purchases assumed spread evenly over the base's window), so
//!   "popular this week" stops counting a week that ended long ago.
//! - **Age** moves with `now`; a new item's age runs from its first purchase.
//! - **Price** and **quantity**: the base's medians, else the medians of
//!   the new purchases'.
//! - **Co-purchase cosine**: `|B_i ∩ B_j| / √(|B_i|·|B_j|)` over buyer
//!   sets. The base's common buyers are recovered from its cosine and its
//!   buyer counts (for the pairs it kept, its top 50 per item); shoppers
//!   who bought both items since `H` are added; the denominators use the
//!   new counts. A shopper who bought one item before `H` and the other
//!   after is not seen as a co-purchase (the base ships no user histories).
//! - **Recent-purchase EASE** weights stay the base's: they come from a
//!   matrix solve, which is a retrain's job.
//!
//! `serve::live_stats` runs this from the store on a timer (the same on
//! every replica of one PostgreSQL store: each reads the same purchases and
//! uses the newest as `now`); `shoprank replay` runs it day by day over a
//! log to measure what it is worth.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::model::stats::{median, HistoryStats, ItemPos, ItemStats, NEIGHBOURS_PER_ITEM, RECENT_DAYS, WEEK_DAYS};

const DAY: i64 = 86_400;

/// A purchase after the base's history: who bought what, when (Unix
/// seconds), at what unit price.
#[derive(Debug, Clone, PartialEq)]
pub struct Purchase {
    pub user: String,
    pub item: String,
    pub time: i64,
    pub price: Option<f32>,
    pub quantity: Option<f32>,
}

/// The base's history end, in Unix seconds (`None` when the statistics
/// carry no readable cutoff: such a base is served as it is).
pub(crate) fn base_end(base: &HistoryStats) -> Option<i64> {
    chrono::NaiveDateTime::parse_from_str(&base.cutoff, "%Y-%m-%d %H:%M:%S").ok().map(|t| t.and_utc().timestamp())
}

/// The statistics as of `now` (see the module's doc). Purchases before the
/// base's end or at or after `now` are ignored; `text` names an item the
/// base does not know (the catalog's text; else its id is used).
pub fn merge(
    base: &HistoryStats,
    purchases: &[Purchase],
    now: i64,
    text: impl Fn(&str) -> Option<String>,
) -> HistoryStats {
    let Some(end) = base_end(base) else { return base.clone() };
    let now = now.max(end);
    let fresh: Vec<&Purchase> = purchases.iter().filter(|p| p.time >= end && p.time < now).collect();

    // Positions: the base's, then new items in order of first purchase.
    let mut items: Vec<ItemStats> = base.items.clone();
    let mut position: HashMap<&str, usize> = base.items.iter().enumerate().map(|(p, s)| (s.id.as_str(), p)).collect();
    let mut first_purchase: BTreeMap<usize, i64> = BTreeMap::new();
    let mut ordered: Vec<&Purchase> = fresh.clone();
    ordered.sort_by(|a, b| a.time.cmp(&b.time).then_with(|| a.item.cmp(&b.item)));
    for purchase in &ordered {
        let p = *position.entry(purchase.item.as_str()).or_insert_with(|| {
            items.push(ItemStats {
                id: purchase.item.clone(),
                text: text(&purchase.item).unwrap_or_else(|| purchase.item.clone()),
                buyers: 0,
                recent_buyers: 0,
                week_buyers: 0,
                age_days: 0.0,
                price: None,
                quantity: None,
                neighbours: Vec::new(),
                recent_ease: Vec::new(),
            });
            items.len() - 1
        });
        first_purchase.entry(p).or_insert(purchase.time);
    }

    // Distinct buyers since the end: ever, in each window, and each
    // shopper's items (for the co-purchases).
    let n = items.len();
    let (recent_from, week_from) = (now - RECENT_DAYS * DAY, now - WEEK_DAYS * DAY);
    let mut buyers: Vec<HashSet<&str>> = vec![HashSet::new(); n];
    let mut recent: Vec<HashSet<&str>> = vec![HashSet::new(); n];
    let mut week: Vec<HashSet<&str>> = vec![HashSet::new(); n];
    let mut prices: Vec<Vec<f32>> = vec![Vec::new(); n];
    let mut quantities: Vec<Vec<f32>> = vec![Vec::new(); n];
    let mut baskets: HashMap<&str, HashSet<usize>> = HashMap::new();
    for purchase in &fresh {
        let p = position[purchase.item.as_str()];
        buyers[p].insert(&purchase.user);
        if purchase.time >= recent_from {
            recent[p].insert(&purchase.user);
        }
        if purchase.time >= week_from {
            week[p].insert(&purchase.user);
        }
        if let Some(price) = purchase.price.filter(|p| p.is_finite() && *p >= 0.0) {
            prices[p].push(price);
        }
        if let Some(quantity) = purchase.quantity.filter(|q| q.is_finite() && *q > 0.0) {
            quantities[p].push(quantity);
        }
        baskets.entry(&purchase.user).or_default().insert(p);
    }
    let new_customers = baskets.len() as u32;

    // Each base window's share still inside the window ending at `now`.
    let overlap = |days: i64| ((end - (now - days * DAY)) as f64 / (days * DAY) as f64).clamp(0.0, 1.0);
    let (recent_share, week_share) = (overlap(RECENT_DAYS), overlap(WEEK_DAYS));
    let elapsed_days = (now - end) as f32 / DAY as f32;
    let base_len = base.items.len();
    let mut base_buyers = vec![0u32; n];
    for (p, item) in items.iter_mut().enumerate() {
        let is_base = p < base_len;
        if is_base {
            base_buyers[p] = item.buyers;
        }
        item.buyers += buyers[p].len() as u32;
        let carried = |count: u32, share: f64| if is_base { (f64::from(count) * share).round() as u32 } else { 0 };
        item.recent_buyers = (recent[p].len() as u32 + carried(item.recent_buyers, recent_share)).min(item.buyers);
        item.week_buyers = (week[p].len() as u32 + carried(item.week_buyers, week_share)).min(item.recent_buyers);
        item.age_days = match first_purchase.get(&p) {
            Some(&first) if !is_base => ((now - first) as f32 / DAY as f32).max(0.0).round(),
            _ => (item.age_days + elapsed_days).round(),
        };
        if item.price.is_none() {
            item.price = median(&mut prices[p]);
        }
        if item.quantity.is_none() {
            item.quantity = median(&mut quantities[p]);
        }
    }

    // Co-purchase: common buyers of each pair the base kept, plus those since the end.
    let mut common: Vec<HashMap<usize, f64>> = vec![HashMap::new(); n];
    for (p, item) in base.items.iter().enumerate() {
        for &(q, cosine) in &item.neighbours {
            let shared = f64::from(cosine) * (f64::from(base_buyers[p]) * f64::from(base_buyers[q.index()])).sqrt();
            common[p].insert(q.index(), shared.round());
        }
    }
    for basket in baskets.values() {
        // A basket of hundreds of items (a reseller) would add its square;
        // its first hundred items by position stand for it.
        let mut basket: Vec<usize> = basket.iter().copied().collect();
        basket.sort_unstable();
        basket.truncate(100);
        for &a in &basket {
            for &b in &basket {
                if a != b {
                    *common[a].entry(b).or_default() += 1.0;
                }
            }
        }
    }
    for (p, links) in common.into_iter().enumerate() {
        let mine = f64::from(items[p].buyers.max(1));
        let mut neighbours: Vec<(ItemPos, f32)> = links
            .into_iter()
            .filter(|&(_, shared)| shared > 0.0)
            .map(|(q, shared)| (ItemPos::new(q), (shared / (mine * f64::from(items[q].buyers.max(1))).sqrt()) as f32))
            .map(|(q, cosine)| (q, cosine.min(1.0)))
            .collect();
        neighbours.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        neighbours.truncate(NEIGHBOURS_PER_ITEM);
        items[p].neighbours = neighbours;
    }

    let cutoff = chrono::DateTime::from_timestamp(now, 0)
        .map(|t| t.naive_utc().format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| base.cutoff.clone());
    HistoryStats::from_parts(cutoff, base.customers + new_customers, items)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, buyers: u32, recent: u32, week: u32) -> ItemStats {
        ItemStats {
            id: id.into(),
            text: format!("{id} text"),
            buyers,
            recent_buyers: recent,
            week_buyers: week,
            age_days: 100.0,
            price: Some(2.0),
            quantity: None,
            neighbours: Vec::new(),
            recent_ease: Vec::new(),
        }
    }

    /// History to 2011-11-01: A bought by 10 (4 in the last 30 days, 2 in
    /// the last week), B by 10, and A and B share 5 buyers.
    fn base() -> HistoryStats {
        let mut a = item("A", 10, 4, 2);
        let mut b = item("B", 10, 0, 0);
        a.neighbours = vec![(ItemPos::new(1), 0.5)];
        b.neighbours = vec![(ItemPos::new(0), 0.5)];
        HistoryStats::from_parts("2011-11-01 00:00:00".into(), 20, vec![a, b])
    }

    fn at(day: &str) -> i64 {
        chrono::NaiveDateTime::parse_from_str(&format!("{day} 00:00:00"), "%Y-%m-%d %H:%M:%S")
            .unwrap()
            .and_utc()
            .timestamp()
    }

    fn bought(user: &str, item: &str, day: &str) -> Purchase {
        Purchase { user: user.into(), item: item.into(), time: at(day) + 3600, price: Some(3.0), quantity: Some(2.0) }
    }

    #[test]
    fn without_new_purchases_the_base_is_served_unchanged() {
        let base = base();
        let merged = merge(&base, &[], base_end(&base).unwrap(), |_| None);
        assert_eq!(merged.items, base.items);
        assert_eq!(merged.cutoff, base.cutoff);
    }

    #[test]
    fn new_buyers_count_and_old_windows_fade() {
        let base = base();
        let purchases =
            [bought("u1", "A", "2011-11-10"), bought("u2", "A", "2011-11-10"), bought("u1", "B", "2011-11-25")];
        let merged = merge(&base, &purchases, at("2011-11-26"), |_| None);
        let a = merged.item(ItemPos::new(0));
        assert_eq!(a.buyers, 12);
        // The base's 30-day window [10-02, 11-01) overlaps [10-27, 11-26) by 5 of 30 days: 4 × 5/30 ≈ 1.
        assert_eq!(a.recent_buyers, 2 + 1);
        assert_eq!(a.week_buyers, 0, "the base's week and the new purchases are both more than 7 days back");
        assert_eq!(merged.item(ItemPos::new(1)).week_buyers, 1, "u1 bought B yesterday");
        assert_eq!(a.age_days, 125.0);
        // A and B: 5 shared buyers before, u1 since; 11 and 12 buyers now.
        let cosine = a.neighbours.iter().find(|(q, _)| q.index() == 1).unwrap().1;
        assert!((cosine - 6.0 / (12.0f32 * 11.0).sqrt()).abs() < 1e-4, "{cosine}");
        assert_eq!(merged.customers, 22);
        assert_eq!(merged.cutoff, "2011-11-26 00:00:00");
    }

    #[test]
    fn an_item_first_bought_after_training_becomes_known() {
        let base = base();
        let purchases = [bought("u1", "NEW", "2011-11-03"), bought("u1", "A", "2011-11-03")];
        let merged = merge(&base, &purchases, at("2011-11-05"), |id| (id == "NEW").then(|| "a new mug".into()));
        let p = merged.position_of_id("NEW").expect("known now");
        assert_eq!(p.index(), 2, "appended after the base's positions");
        let new = merged.item(p);
        assert_eq!((new.buyers, new.recent_buyers, new.week_buyers), (1, 1, 1));
        assert_eq!(new.text, "a new mug");
        assert_eq!((new.price, new.quantity), (Some(3.0), Some(2.0)));
        assert_eq!(new.age_days, 2.0);
        assert_eq!(new.neighbours, vec![(ItemPos::new(0), (1.0 / 11.0f32.sqrt()))]);
        assert!(merge(&base, &purchases, at("2011-11-02"), |_| None).position_of_id("NEW").is_none(), "not yet");
    }

    #[test]
    fn purchases_outside_the_window_are_ignored() {
        let base = base();
        let purchases = [bought("u1", "A", "2011-10-20"), bought("u2", "A", "2011-12-01")];
        let merged = merge(&base, &purchases, at("2011-11-15"), |_| None);
        assert_eq!(merged.item(ItemPos::new(0)).buyers, 10);
    }
}
