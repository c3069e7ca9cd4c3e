//! EVAL_PROTOCOL v1 §2: split a log at a time into history and a test
//! window, derive the catalog, the item texts and the test users.
//!
//! The same code builds the protocol's test split (`T_test`), the inner
//! validation split (`T_val`, test window `[T_val, T_test)`), and the earlier
//! training windows, so every model sees data built the same way.

use std::collections::{BTreeMap, HashMap, HashSet};

use rand::SeedableRng;

use super::{Dataset, DenseId, Event, ItemIdx, TextIdx, UserIdx};

/// `T_test` of EVAL_PROTOCOL v1: 2011-11-01 00:00:00.
pub const PROTOCOL_T_TEST: &str = "2011-11-01 00:00:00";
/// The inner validation split of EVAL_PROTOCOL v1: 2011-10-01 00:00:00.
pub const PROTOCOL_T_VAL: &str = "2011-10-01 00:00:00";

/// A user to rank for, with the new catalog items they went on to buy.
#[derive(Debug, Clone, PartialEq)]
pub struct TestUser {
    pub user: UserIdx,
    /// Catalog items bought in the test window and never in history, sorted.
    pub truth: Vec<ItemIdx>,
}

/// History up to a cutoff and the ranking task that follows it.
#[derive(Debug, Clone)]
pub struct Split<'a> {
    pub data: &'a Dataset,
    pub cutoff: i64,
    /// Events strictly before `cutoff`, in time order.
    pub history: &'a [Event],
    /// Events of the test window `[cutoff, end)`, in time order.
    pub test: &'a [Event],
    /// Items with at least one history event, sorted by item id.
    pub catalog: Vec<ItemIdx>,
    /// Item index → its text (catalog items only).
    pub item_text: HashMap<ItemIdx, String>,
    /// User → distinct items bought in history, most recent first.
    pub user_history: HashMap<UserIdx, Vec<ItemIdx>>,
    /// Users sorted by id, each with a non-empty truth.
    pub test_users: Vec<TestUser>,
}

impl<'a> Split<'a> {
    /// Splits at `cutoff`; the test window is `[cutoff, end)` (`end = None`:
    /// to the end of the log).
    pub fn new(data: &'a Dataset, cutoff: i64, end: Option<i64>) -> Self {
        let split_at = data.events.partition_point(|e| e.time < cutoff);
        let history = &data.events[..split_at];
        let window_end = end.map_or(data.events.len(), |end| data.events.partition_point(|e| e.time < end));
        let test = &data.events[split_at..window_end.max(split_at)];

        let item_text = item_texts(data, history);
        let mut catalog: Vec<ItemIdx> = item_text.keys().copied().collect();
        catalog.sort_by(|&a, &b| data.items.name(a).cmp(data.items.name(b)));

        let mut user_history: HashMap<UserIdx, Vec<ItemIdx>> = HashMap::new();
        let mut seen: HashSet<(UserIdx, ItemIdx)> = HashSet::new();
        for event in history.iter().rev() {
            if seen.insert((event.user, event.item)) {
                user_history.entry(event.user).or_default().push(event.item);
            }
        }

        let mut truth: BTreeMap<&str, (UserIdx, HashSet<ItemIdx>)> = BTreeMap::new();
        for event in test {
            let known_user = user_history.contains_key(&event.user);
            let new_catalog_item = item_text.contains_key(&event.item) && !seen.contains(&(event.user, event.item));
            if known_user && new_catalog_item {
                truth.entry(data.users.name(event.user)).or_insert((event.user, HashSet::new())).1.insert(event.item);
            }
        }
        let test_users = truth
            .into_values()
            .map(|(user, items)| {
                let mut truth: Vec<ItemIdx> = items.into_iter().collect();
                truth.sort_unstable();
                TestUser { user, truth }
            })
            .collect();
        Self { data, cutoff, history, test, catalog, item_text, user_history, test_users }
    }

    /// Keeps a sample of `max` test users drawn from `seed` (in their
    /// order), if there are more; returns how many there were.
    pub(crate) fn sample_test_users(&mut self, max: usize, seed: u64) -> Option<usize> {
        let all = self.test_users.len();
        if all <= max {
            return None;
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut keep = rand::seq::index::sample(&mut rng, all, max).into_vec();
        keep.sort_unstable();
        self.test_users = keep.into_iter().map(|i| self.test_users[i].clone()).collect();
        Some(all)
    }

    /// Positives this split's test users give a training window.
    pub(crate) fn positives(&self) -> usize {
        self.test_users.iter().map(|u| u.truth.len()).sum()
    }

    /// Titles of the user's distinct history items, most recent first.
    pub(crate) fn history_titles(&self, user: UserIdx) -> Vec<&str> {
        let mut seen = HashSet::new();
        self.user_history
            .get(&user)
            .into_iter()
            .flatten()
            .filter_map(|item| self.item_text.get(item).map(String::as_str))
            .filter(|title| seen.insert(*title))
            .collect()
    }
}

/// Each history item's text: the fixed item table where the source has one,
/// else its most frequent description among history events (ties: the
/// lexicographically smallest).
fn item_texts(data: &Dataset, history: &[Event]) -> HashMap<ItemIdx, String> {
    let mut counts: HashMap<ItemIdx, HashMap<Option<TextIdx>, usize>> = HashMap::new();
    for event in history {
        *counts.entry(event.item).or_default().entry(event.text).or_default() += 1;
    }
    counts
        .into_iter()
        .filter_map(|(item, texts)| {
            let fixed = data.item_texts.get(item.index()).cloned().flatten();
            let text = fixed.or_else(|| {
                texts
                    .into_iter()
                    .filter_map(|(text, count)| Some((count, data.descriptions.name(text?))))
                    .max_by(|(ca, ta), (cb, tb)| ca.cmp(cb).then_with(|| tb.cmp(ta)))
                    .map(|(_, text)| text.to_string())
            })?;
            Some((item, text))
        })
        .collect()
}

/// Parses a split time given on the command line.
/// A time as the command line gives it: what [`super::parse_time`] reads,
/// or `now`, or `now-<N>d` (N days ago), for retraining on a live store.
pub(crate) fn parse_cutoff(text: &str) -> Result<i64, String> {
    let bad = || format!("`{text}` is not a time (use YYYY-MM-DD[ HH:MM:SS], now, or now-<N>d)");
    if let Some(relative) = text.trim().strip_prefix("now") {
        let now = chrono::Utc::now().timestamp();
        if relative.is_empty() {
            return Ok(now);
        }
        let days: i64 = relative
            .strip_prefix('-')
            .and_then(|d| d.strip_suffix('d'))
            .and_then(|d| d.parse().ok())
            .ok_or_else(bad)?;
        return Ok(now - days * 86_400);
    }
    super::parse_time(text).ok_or_else(bad)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::offline::data::parse_time;

    /// A tiny log: (user, item, time, description).
    pub(crate) fn synthetic(rows: &[(&str, &str, &str, &str)]) -> Dataset {
        let mut data = Dataset::default();
        for &(user, item, time, text) in rows {
            let event = Event {
                user: data.users.intern(user),
                item: data.items.intern(item),
                time: parse_time(time).unwrap(),
                quantity: 1.0,
                price: Some(1.0),
                text: Some(data.descriptions.intern(text)),
            };
            data.events.push(event);
        }
        data.finish()
    }

    #[test]
    fn split_builds_catalog_texts_and_truth_as_the_protocol_says() {
        let data = synthetic(&[
            ("u1", "A", "2011-10-01", "MUG RED"),
            ("u1", "B", "2011-10-02", "BAG"),
            ("u2", "A", "2011-10-03", "MUG, RED"),
            ("u3", "A", "2011-10-04", "MUG, RED"),
            ("u2", "C", "2011-10-05", "CUP"),
            // test period
            ("u1", "A", "2011-11-02", "MUG RED"),  // repeat: not truth
            ("u1", "C", "2011-11-02", "CUP"),      // new catalog item: truth
            ("u1", "D", "2011-11-03", "NEW ONLY"), // not in catalog
            ("u2", "C", "2011-11-03", "CUP"),      // repeat only: u2 is no test user
            ("u9", "A", "2011-11-03", "MUG RED"),  // no history: not a test user
        ]);
        let split = Split::new(&data, parse_time(PROTOCOL_T_TEST).unwrap(), None);
        let names = |items: &[ItemIdx]| items.iter().map(|&i| data.items.name(i).to_string()).collect::<Vec<_>>();
        assert_eq!(names(&split.catalog), ["A", "B", "C"]);
        assert_eq!(split.item_text[&data.items.get("A").unwrap()], "MUG, RED");
        assert_eq!(split.test_users.len(), 1);
        assert_eq!(data.users.name(split.test_users[0].user), "u1");
        assert_eq!(names(&split.test_users[0].truth), ["C"]);
        assert_eq!(split.history_titles(data.users.get("u1").unwrap()), ["BAG", "MUG, RED"]);
    }

    #[test]
    fn description_ties_go_to_the_smallest_text_and_windows_end() {
        let data = synthetic(&[
            ("u1", "A", "2011-09-01", "ZEBRA"),
            ("u2", "A", "2011-09-02", "APPLE"),
            ("u2", "B", "2011-09-03", "BAG"),
            ("u1", "B", "2011-10-05", "BAG"),
            ("u1", "B", "2011-11-05", "BAG"),
        ]);
        let t_val = parse_time(PROTOCOL_T_VAL).unwrap();
        let t_test = parse_time(PROTOCOL_T_TEST).unwrap();
        let inner = Split::new(&data, t_val, Some(t_test));
        assert_eq!(inner.item_text[&data.items.get("A").unwrap()], "APPLE");
        assert_eq!(inner.test_users.len(), 1);
        let empty = Split::new(&data, t_val, Some(t_val));
        assert!(empty.test_users.is_empty());
    }
}
