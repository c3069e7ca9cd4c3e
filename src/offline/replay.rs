//! `shoprank replay`: what live statistics are worth, day by day.
//!
//! For each day of the test period, the shoppers who buy catalog items that
//! day that they never bought before are ranked for, every catalog item
//! they have not bought before that day a candidate, as EVAL_PROTOCOL ranks
//! (its §6: the same rules on another cut of the log). Their history is
//! every purchase before that day, as a storefront would send it. Each
//! shopper is ranked twice by the same head: once with the bundle's
//! statistics, frozen at the end of its history, and once with those
//! statistics brought forward (`model::live_stats::merge`, the function the
//! server's refresh runs) with every purchase from the end of the history
//! to the start of that day. The candidates are the bundle's catalog in
//! both, so only the statistics differ.
//!
//! The purchases reach `merge` from the log here, and from the store in
//! the server (`serve::live_stats`): the same function over the same
//! events, without the HTTP round trip.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use crate::config::UserTextBudget;
use crate::model::features::{CandidateInput, UserContext, HISTORY_FEATURE_ITEMS};
use crate::model::head::ScoringHead;
use crate::model::lexical::LexicalMatch;
use crate::model::live_stats::{self, Purchase};
use crate::model::scoring;
use crate::model::stats::{HistoryStats, ItemPos};
use crate::model::user_text::UserSignals;
use crate::offline::data::split::Split;
use crate::offline::data::Dataset;
use crate::offline::embed_store::{EmbedStore, EmbedStoreError};
use crate::offline::ranking_metrics::{rank_by_score, score_ranking};
use crate::offline::text_embedder::TextEmbedder;

const DAY: i64 = 86_400;

/// NDCG@10 of one stretch of days, frozen against live statistics.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct ReplayRow {
    /// First and last day (`YYYY-MM-DD`).
    pub from: String,
    pub to: String,
    /// Shopper-days ranked.
    pub rankings: usize,
    pub frozen_ndcg10: f64,
    pub live_ndcg10: f64,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct ReplayReport {
    /// Per 7 days from the start, then the whole period.
    pub weeks: Vec<ReplayRow>,
    pub total: ReplayRow,
}

/// One day's shoppers: how many were ranked, and the sums of their NDCG@10
/// under frozen and under live statistics.
#[derive(Debug, Clone, Copy, Default)]
struct DayTotals {
    rankings: usize,
    frozen: f64,
    live: f64,
}

/// What the replay needs besides the log: the bundle's parts and the encoder.
pub(crate) struct ReplayModel<'a> {
    pub head: &'a ScoringHead,
    /// The bundle's statistics; their history ends where the replay starts.
    pub base: &'a HistoryStats,
    pub encoder: &'a dyn TextEmbedder,
    pub budget: UserTextBudget,
}

/// Replays `[start, end)` day by day (see the module's doc).
pub(crate) fn replay(
    data: &Dataset,
    model: &ReplayModel<'_>,
    store: &mut EmbedStore,
    start: i64,
    end: i64,
) -> Result<ReplayReport, ReplayError> {
    let base = model.base;
    let texts: Vec<&str> = base.items.iter().map(|s| s.text.as_str()).collect();
    store.embed_all(model.encoder, &texts, "item texts")?;
    let purchases: Vec<Purchase> = data
        .events
        .iter()
        .filter(|e| e.time >= start && e.time < end)
        .map(|e| Purchase {
            user: data.users.name(e.user).to_string(),
            item: data.items.name(e.item).to_string(),
            time: e.time,
            price: e.price,
            quantity: Some(e.quantity),
        })
        .collect();
    let mut days: BTreeMap<i64, DayTotals> = BTreeMap::new();
    let mut day = start;
    while day < end {
        let split = Split::new(data, day, Some(day + DAY));
        if !split.test_users.is_empty() {
            let live = live_stats::merge(base, &purchases, day, |id| {
                data.items.get(id).and_then(|i| split.item_text.get(&i)).cloned()
            });
            let totals = rank_day(&split, model, &live, store)?;
            if totals.rankings > 0 {
                days.insert(day, totals);
            }
        }
        day += DAY;
    }
    Ok(summarise(&days, start))
}

/// One day's shoppers ranked with frozen and live statistics.
fn rank_day(
    split: &Split<'_>,
    model: &ReplayModel<'_>,
    live: &HistoryStats,
    store: &mut EmbedStore,
) -> Result<DayTotals, ReplayError> {
    let base = model.base;
    let ids = |items: &[crate::offline::data::ItemIdx]| -> Vec<String> {
        items.iter().map(|&i| split.data.items.name(i).to_string()).collect()
    };
    let mut users = Vec::new();
    for test_user in &split.test_users {
        let truth: HashSet<ItemPos> = ids(&test_user.truth).iter().filter_map(|id| base.position_of_id(id)).collect();
        if truth.is_empty() {
            continue;
        }
        let history = ids(split.user_history.get(&test_user.user).map_or(&[], Vec::as_slice));
        let titles = split.history_titles(test_user.user);
        let text = model
            .encoder
            .user_text(model.budget, UserSignals { query: None, profile: None, history: &titles })
            .map_err(|e| ReplayError::Encoder(e.to_string()))?;
        let recent: Vec<String> = history
            .iter()
            .take(HISTORY_FEATURE_ITEMS)
            .filter_map(|id| split.data.items.get(id).and_then(|i| split.item_text.get(&i)).cloned())
            .collect();
        users.push((truth, history, text, recent));
    }
    let mut texts: Vec<&str> = Vec::new();
    for (_, _, text, recent) in &users {
        texts.push(text);
        texts.extend(recent.iter().map(String::as_str));
    }
    store.embed_all(model.encoder, &texts, "shopper texts")?;

    let (mut frozen, mut live_sum) = (0f64, 0f64);
    for (truth, history, text, recent) in &users {
        let bought: HashSet<ItemPos> = history.iter().filter_map(|id| base.position_of_id(id)).collect();
        let candidates: Vec<ItemPos> = base.positions().filter(|p| !bought.contains(p)).collect();
        let embeddings: Vec<&[f32]> = recent.iter().map(|t| store.get(t)).collect();
        for (stats, sum) in [(base, &mut frozen), (live, &mut live_sum)] {
            let positions: Vec<Option<ItemPos>> = history.iter().map(|id| stats.position_of_id(id)).collect();
            let context = UserContext::new(stats, store.get(text).to_vec(), &positions, &embeddings);
            let inputs: Vec<CandidateInput<'_>> = candidates
                .iter()
                .map(|&p| CandidateInput {
                    position: Some(p),
                    embedding: store.get(&base.item(p).text),
                    price: None,
                    lexical: LexicalMatch::default(),
                })
                .collect();
            let scores = scoring::score(model.head, stats, &context, &inputs)?;
            let ranked = rank_by_score(&candidates, &scores, |p| base.item(p).id.as_str());
            *sum += score_ranking(&ranked, truth).ndcg10;
        }
    }
    Ok(DayTotals { rankings: users.len(), frozen, live: live_sum })
}

/// Rows of seven days from `start`, and the total; each a mean over shopper-days.
fn summarise(days: &BTreeMap<i64, DayTotals>, start: i64) -> ReplayReport {
    let mut weeks: BTreeMap<i64, Vec<(i64, DayTotals)>> = BTreeMap::new();
    for (&day, &totals) in days {
        weeks.entry((day - start) / (7 * DAY)).or_default().push((day, totals));
    }
    let row = |entries: &[(i64, DayTotals)]| {
        let rankings: usize = entries.iter().map(|(_, e)| e.rankings).sum();
        let n = rankings.max(1) as f64;
        ReplayRow {
            from: entries.first().map(|e| day_name(e.0)).unwrap_or_default(),
            to: entries.last().map(|e| day_name(e.0)).unwrap_or_default(),
            rankings,
            frozen_ndcg10: entries.iter().map(|(_, e)| e.frozen).sum::<f64>() / n,
            live_ndcg10: entries.iter().map(|(_, e)| e.live).sum::<f64>() / n,
        }
    };
    let all: Vec<(i64, DayTotals)> = days.iter().map(|(&d, &e)| (d, e)).collect();
    ReplayReport { weeks: weeks.values().map(|w| row(w)).collect(), total: row(&all) }
}

fn day_name(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0).map(|t| t.format("%Y-%m-%d").to_string()).unwrap_or_default()
}

/// The report as a table.
pub(crate) fn format_replay(report: &ReplayReport) -> String {
    let mut out =
        format!("{:<24} {:>9} {:>14} {:>12} {:>8}\n", "days", "rankings", "frozen NDCG@10", "live NDCG@10", "change");
    for row in report.weeks.iter().chain(std::iter::once(&report.total)) {
        let change = (row.live_ndcg10 - row.frozen_ndcg10) / row.frozen_ndcg10.max(1e-12) * 100.0;
        out.push_str(&format!(
            "{:<24} {:>9} {:>14.4} {:>12.4} {:>7.1}%\n",
            format!("{}..{}", row.from, row.to),
            row.rankings,
            row.frozen_ndcg10,
            row.live_ndcg10,
            change
        ));
    }
    out
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ReplayError {
    #[error(transparent)]
    Embeddings(#[from] EmbedStoreError),
    #[error("scoring: {0}")]
    Model(#[from] candle_core::Error),
    #[error("composing a user text: {0}")]
    Encoder(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_grouped_by_seven_from_the_start_and_weighted_by_shoppers() {
        let start = 1_320_105_600; // 2011-11-01
        let day = |rankings, frozen, live| DayTotals { rankings, frozen, live };
        let days: BTreeMap<i64, DayTotals> =
            [(start, day(2, 0.2, 0.4)), (start + 6 * DAY, day(2, 0.2, 0.2)), (start + 7 * DAY, day(1, 0.5, 0.0))]
                .into_iter()
                .collect();
        let report = summarise(&days, start);
        assert_eq!(report.weeks.len(), 2);
        assert_eq!((report.weeks[0].from.as_str(), report.weeks[0].to.as_str()), ("2011-11-01", "2011-11-07"));
        assert_eq!(report.weeks[0].rankings, 4);
        assert!((report.weeks[0].frozen_ndcg10 - 0.1).abs() < 1e-12);
        assert!((report.weeks[0].live_ndcg10 - 0.15).abs() < 1e-12);
        assert_eq!(report.total.rankings, 5);
        assert!((report.total.frozen_ndcg10 - 0.18).abs() < 1e-12);
        assert!(format_replay(&report).contains("2011-11-08..2011-11-08"));
    }
}
