//! The explanations' wording: an item's attribution (`model::explain`)
//! turned into the reasons a shopper reads, each stating only what the
//! request and the bundle's statistics hold.

use crate::model::bundle::Bundle;
use crate::model::encoder::cosine;
use crate::model::explain::{self, ReasonKind};
use crate::model::features::{self, HISTORY_COPURCHASE_ITEMS};
use crate::model::stats::HistoryStats;

use super::pipeline::{Pooled, UserSide};
use super::{Explanation, RankError, RankQuery, Reason};

/// Contributions below this share of the score's upward deviation are not
/// listed as reasons.
const MIN_REASON_SHARE: f32 = 0.05;

/// The item's reasons: the attribution's positive contributions, worded
/// with the inputs behind them.
pub(super) fn explain_item(
    bundle: &Bundle,
    query: &RankQuery,
    user: &UserSide,
    item: &Pooled,
    numeric: &features::Numeric,
) -> Result<Explanation, RankError> {
    let held: &[ReasonKind] = if user.query.is_some() { &[] } else { &[ReasonKind::MatchesQuery] };
    let attribution = explain::attribute(bundle.head(), &user.vector, &item.embedding, numeric, held)?;
    let mut contributions = attribution.contributions.clone();
    if query.profile.is_none() && query.history.is_empty() {
        // The user text is the query alone: its match is the query's.
        let profile = contributions.iter().position(|c| c.kind == ReasonKind::MatchesProfile);
        let search = contributions.iter().position(|c| c.kind == ReasonKind::MatchesQuery);
        if let (Some(profile), Some(search), Some(_)) = (profile, search, &query.search) {
            contributions[search].value += std::mem::take(&mut contributions[profile].value);
        }
    }
    let upward: f32 = contributions.iter().map(|c| c.value.max(0.0)).sum();
    contributions.retain(|c| c.value > 0.0 && c.value >= MIN_REASON_SHARE * upward);
    contributions.sort_by(|a, b| b.value.total_cmp(&a.value));
    // A group whose inputs support no true sentence stays in `unlisted`.
    let reasons: Vec<Reason> = contributions
        .into_iter()
        .filter_map(|c| {
            let (kind, text, history_ids) = describe(c.kind, bundle.stats(), query, user, item)?;
            Some(Reason { kind, text, contribution: c.value, history_ids })
        })
        .collect();
    let listed: f32 = reasons.iter().map(|r| r.contribution).sum();
    let total: f32 = attribution.contributions.iter().map(|c| c.value).sum();
    Ok(Explanation { baseline: attribution.baseline, reasons, unlisted: total - listed })
}

/// How many history items a reason names at most.
const REASON_HISTORY_ITEMS: usize = 2;

/// A feature group's contribution as a reason a shopper can read: its kind
/// (a new product's purchase-history group is `NewProduct`, not `Popular`),
/// its words and the history items it rests on. `None` when nothing true of
/// this item and request can be said for the group (no co-purchase link, no
/// history, no known price): its share then stays in `unlisted`. Each text
/// states only what the request and the statistics hold; the README's
/// explanation section lists the conditions.
fn describe(
    kind: ReasonKind,
    stats: &HistoryStats,
    query: &RankQuery,
    user: &UserSide,
    item: &Pooled,
) -> Option<(ReasonKind, String, Vec<String>)> {
    let history_id = |i: usize| {
        let h = &query.history[i];
        h.id.clone().or_else(|| user.positions[i].map(|p| stats.item(p).id.clone())).unwrap_or_default()
    };
    let titles = |items: &[usize]| items.iter().map(|&i| format!("\"{}\"", query.history[i].text)).collect::<Vec<_>>();
    let (text, ids) = match kind {
        ReasonKind::MatchesQuery => (format!("matches your search \"{}\"", query.search.as_deref()?), vec![]),
        ReasonKind::BoughtTogether => {
            let links = bought_together_with(stats, user, item);
            if links.is_empty() {
                return None;
            }
            let text = format!("bought together with {}", titles(&links).join(" and "));
            (text, links.into_iter().map(history_id).filter(|id| !id.is_empty()).collect())
        }
        ReasonKind::SimilarToHistory => {
            let closest = user
                .history
                .iter()
                .enumerate()
                .map(|(i, v)| (i, cosine(v, &item.embedding)))
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .map(|(i, _)| user.history_items[i])?;
            let ids = Some(history_id(closest)).filter(|id| !id.is_empty()).into_iter().collect();
            (format!("similar to {}", titles(&[closest])[0]), ids)
        }
        ReasonKind::Popular | ReasonKind::NewProduct => {
            // The counts end where the statistics end, not today: the text
            // names that day.
            let end = stats_end(stats);
            let Some(s) = stats.position_of_id(&item.id).map(|p| stats.item(p)).filter(|s| s.buyers > 0) else {
                return Some((ReasonKind::NewProduct, format!("new product: no purchases {end}"), vec![]));
            };
            let text = match (s.week_buyers, s.recent_buyers, s.buyers) {
                (week, _, _) if week > 0 => format!("popular in the week {end} ({week} {})", buyers(week)),
                (_, month, _) if month > 0 => format!("popular in the 30 days {end} ({month} {})", buyers(month)),
                (_, _, ever) => format!("bought by {ever} {} {end}", if ever == 1 { "customer" } else { "customers" }),
            };
            (text, vec![])
        }
        ReasonKind::MatchesProfile => {
            if query.profile.is_none() && query.history.is_empty() {
                return None;
            }
            ("matches your interests".to_string(), vec![])
        }
        ReasonKind::Price => {
            let known = stats.position_of_id(&item.id).and_then(|p| stats.item(p).price);
            let price = item.price.filter(|p| p.is_finite() && *p > 0.0).or(known)?;
            (format!("its price ({price:.2})"), vec![])
        }
    };
    Some((kind, text, ids))
}

/// `before YYYY-MM-DD`, the day the statistics' history ends (exclusive).
fn stats_end(stats: &HistoryStats) -> String {
    match stats.cutoff.get(..10) {
        Some(day) => format!("before {day}"),
        None => "before the statistics' end".to_string(),
    }
}

fn buyers(n: u32) -> &'static str {
    if n == 1 {
        "buyer"
    } else {
        "buyers"
    }
}

/// History items (indices into the request's history) whose co-purchase or
/// EASE links reach `item`, strongest first.
fn bought_together_with(stats: &HistoryStats, user: &UserSide, item: &Pooled) -> Vec<usize> {
    let Some(target) = stats.position_of_id(&item.id) else { return Vec::new() };
    let mut links: Vec<(usize, f32)> = user
        .positions
        .iter()
        .take(HISTORY_COPURCHASE_ITEMS)
        .enumerate()
        .filter_map(|(i, p)| {
            let s = stats.item((*p)?);
            let w: f32 = s.neighbours.iter().chain(&s.recent_ease).filter(|(n, _)| *n == target).map(|(_, w)| w).sum();
            (w > 0.0).then_some((i, w))
        })
        .collect();
    links.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    links.into_iter().take(REASON_HISTORY_ITEMS).map(|(i, _)| i).collect()
}
