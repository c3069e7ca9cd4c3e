//! Training examples: for every test user of a window, the items they went
//! on to buy (positives) and sampled negatives, each as rows into shared
//! user/item vector tables plus the numeric features of the pair.
//!
//! A share of the users (`--query-fraction`) also get a **search session**:
//! a pseudo-query drawn from the title of one item they bought (see
//! `search_terms`), that item as the positive, and negatives half among the
//! other items the query matches (so the head learns to order relevant items
//! by purchase signals), a quarter by popularity (so it learns that an item
//! the query does not match is rarely bought, however popular: with uniform
//! negatives alone, popular non-matching items outranked matching ones) and
//! a quarter uniformly. Each session example carries the query words'
//! match with the item (`model::lexical`, against the window's catalog), and
//! a share of the queries (`--typo-fraction`) has one word mistyped, so the
//! head learns what a match within typo distance is worth beside an exact one.

use std::collections::{HashMap, HashSet};

use candle_core::{Device, Tensor};
use rand::distributions::{Distribution, WeightedIndex};
use rand::rngs::StdRng;
use rand::Rng;

use super::TrainOptions;
use crate::config::UserTextBudget;
use crate::model::features::{self, UserContext};
use crate::model::lexical::{self, LexicalMatch, LexicalQuery, TextsStats};
use crate::model::stats::ItemPos;
use crate::model::user_text::UserSignals;
use crate::offline::data::split::Split;
use crate::offline::embed_store::{EmbedStore, EmbedStoreError};
use crate::offline::prepared::PreparedSplit;
use crate::offline::search_terms::{self, WordIndex};
use crate::offline::text_embedder::TextEmbedder;

/// Hard negatives come from this many items most strongly linked to the
/// user's history.
const HARD_NEGATIVE_POOL: usize = 100;

/// Examples as row indices into shared user/item vector tables.
#[derive(Default)]
pub(super) struct Examples {
    pub(super) user_rows: Vec<u32>,
    pub(super) item_rows: Vec<u32>,
    pub(super) numeric: Vec<f32>,
    pub(super) labels: Vec<f32>,
}

impl Examples {
    pub(super) fn extend_from(&mut self, other: &Examples) {
        self.user_rows.extend_from_slice(&other.user_rows);
        self.item_rows.extend_from_slice(&other.item_rows);
        self.numeric.extend_from_slice(&other.numeric);
        self.labels.extend_from_slice(&other.labels);
    }
}

/// Unique vectors, each stored once, addressed by row.
#[derive(Default)]
pub(super) struct VectorTable {
    rows: HashMap<String, u32>,
    data: Vec<f32>,
}

impl VectorTable {
    pub(super) fn row(&mut self, text: &str, store: &EmbedStore) -> u32 {
        if let Some(&row) = self.rows.get(text) {
            return row;
        }
        let row = self.rows.len() as u32;
        self.data.extend_from_slice(store.get(text));
        self.rows.insert(text.to_string(), row);
        row
    }
    pub(super) fn tensor(&self, dim: usize) -> candle_core::Result<Tensor> {
        Tensor::from_slice(&self.data, (self.rows.len(), dim), &Device::Cpu)
    }
}

pub(super) fn limit_users(mut split: Split<'_>, max_users: Option<usize>) -> Split<'_> {
    if let Some(max) = max_users {
        split.test_users.truncate(max);
    }
    split
}

/// A pseudo-query search by one test user that ended in buying `positive`.
pub(super) struct SearchSession {
    user_index: usize,
    positive: ItemPos,
    /// The query as typed (with a typo in `--typo-fraction` of sessions).
    query: String,
    /// The query as drawn, without the typo: what decides which items match it.
    drawn: String,
    /// The user text with the query first, as a request carrying it composes it.
    user_text: String,
}

/// Draws the search sessions of a split's users and makes sure `store` holds
/// the embeddings of their queries and user texts.
pub(super) fn search_sessions(
    prepared: &PreparedSplit<'_>,
    encoder: &dyn TextEmbedder,
    budget: UserTextBudget,
    store: &mut EmbedStore,
    options: &TrainOptions,
    rng: &mut StdRng,
) -> Result<Vec<SearchSession>, EmbedStoreError> {
    let mut sessions = Vec::new();
    if options.query_fraction == 0.0 {
        return Ok(sessions);
    }
    for (user_index, test_user) in prepared.split.test_users.iter().enumerate() {
        if !rng.gen_bool(options.query_fraction) {
            continue;
        }
        let mut truth: Vec<ItemPos> = prepared.truth_positions(test_user).into_iter().collect();
        truth.sort_unstable();
        let Some(&positive) = truth.get(rng.gen_range(0..truth.len().max(1))) else { continue };
        let Some(drawn) = search_terms::pseudo_query(&prepared.stats.item(positive).text, rng) else { continue };
        // No draw at 0, so `--typo-fraction 0` repeats older runs exactly.
        let query = match options.typo_fraction > 0.0 && rng.gen_bool(options.typo_fraction) {
            true => search_terms::with_typo(&drawn, rng).unwrap_or_else(|| drawn.clone()),
            false => drawn.clone(),
        };
        let titles = prepared.split.history_titles(test_user.user);
        let signals = UserSignals { query: Some(&query), profile: None, history: &titles };
        let user_text = encoder.user_text(budget, signals)?;
        sessions.push(SearchSession { user_index, positive, query, drawn, user_text });
    }
    let texts: Vec<&str> = sessions.iter().flat_map(|s| [s.query.as_str(), s.user_text.as_str()]).collect();
    store.embed_all(encoder, &texts, "search sessions")?;
    Ok(sessions)
}

/// Draws negatives: uniformly, by popularity (`popular_share`), and with
/// `--hard-negatives` a third among the items most linked to the history.
struct NegativeSampler {
    popular: WeightedIndex<f64>,
    catalog: usize,
}

impl NegativeSampler {
    fn new(prepared: &PreparedSplit<'_>) -> Self {
        let stats = &prepared.stats;
        let popular = WeightedIndex::new(stats.items.iter().map(|s| s.buyers as f64 + 1.0)).expect("non-empty catalog");
        Self { popular, catalog: stats.items.len() }
    }

    fn draw_popular(&self, rng: &mut StdRng) -> ItemPos {
        ItemPos::new(self.popular.sample(rng))
    }

    fn draw(&self, hard_pool: &[ItemPos], options: &TrainOptions, rng: &mut StdRng) -> ItemPos {
        if !hard_pool.is_empty() && rng.gen_bool(1.0 / 3.0) {
            hard_pool[rng.gen_range(0..hard_pool.len())]
        } else if rng.gen_bool(options.popular_share) {
            ItemPos::new(self.popular.sample(rng))
        } else {
            ItemPos::new(rng.gen_range(0..self.catalog))
        }
    }
}

/// A search session's query words, with the window catalog's statistics
/// they are weighed in (as a served search weighs them in the catalog's).
struct SessionWords<'a> {
    query: LexicalQuery,
    corpus: &'a TextsStats,
}

/// Appends one (user, item) example; `cold` shows the item as a new
/// product; `words`, a search session's, give it its lexical match.
#[allow(clippy::too_many_arguments)]
fn push_example(
    prepared: &PreparedSplit<'_>,
    store: &EmbedStore,
    context: &UserContext,
    words: Option<&SessionWords<'_>>,
    user_row: u32,
    items: &mut VectorTable,
    out: &mut Examples,
    (position, label, cold): (ItemPos, f32, bool),
) {
    let stats = &prepared.stats;
    let mut candidate = prepared.candidate(position, store);
    candidate.lexical =
        words.map_or_else(LexicalMatch::default, |w| lexical::score(&w.query, &stats.item(position).text, w.corpus));
    if cold {
        // As a request would carry it: text and price, no history.
        candidate.position = None;
        candidate.price = stats.item(position).price;
    }
    out.user_rows.push(user_row);
    out.item_rows.push(items.row(&stats.item(position).text, store));
    out.numeric.extend_from_slice(&features::numeric(stats, context, &candidate));
    out.labels.push(label);
}

/// Positives (truth) and sampled negatives of every test user of a window,
/// then the examples of its search sessions.
#[allow(clippy::too_many_arguments)]
pub(super) fn add_examples(
    prepared: &PreparedSplit<'_>,
    store: &EmbedStore,
    sessions: &[SearchSession],
    options: &TrainOptions,
    rng: &mut StdRng,
    users: &mut VectorTable,
    items: &mut VectorTable,
    out: &mut Examples,
) {
    let sampler = NegativeSampler::new(prepared);
    for (index, test_user) in prepared.split.test_users.iter().enumerate() {
        let context = prepared.user_context(index, store);
        let user_row = users.row(&prepared.user_texts[index], store);
        let truth = prepared.truth_positions(test_user);
        let bought: HashSet<ItemPos> = prepared.history_positions(test_user.user).into_iter().collect();
        let mut positives: Vec<ItemPos> = truth.iter().copied().collect();
        positives.sort_unstable();
        for &p in &positives {
            let cold = rng.gen_bool(options.cold_fraction);
            push_example(prepared, store, &context, None, user_row, items, out, (p, 1.0, cold));
        }
        let hard_pool = if options.hard_negatives { context.strongest_links(HARD_NEGATIVE_POOL) } else { Vec::new() };
        let wanted = positives.len() * options.negatives;
        let mut drawn = 0;
        let mut tries = 0;
        while drawn < wanted && tries < wanted * 20 {
            tries += 1;
            let p = sampler.draw(&hard_pool, options, rng);
            if truth.contains(&p) || bought.contains(&p) {
                continue;
            }
            let cold = rng.gen_bool(options.cold_fraction);
            push_example(prepared, store, &context, None, user_row, items, out, (p, 0.0, cold));
            drawn += 1;
        }
    }
    if sessions.is_empty() {
        return;
    }
    let index = WordIndex::new(prepared.stats.items.iter().map(|s| s.text.as_str()));
    let corpus = TextsStats::of(prepared.stats.items.iter().map(|s| s.text.as_str()));
    for session in sessions {
        let test_user = &prepared.split.test_users[session.user_index];
        let context = prepared
            .user_context_with_text(session.user_index, &session.user_text, store)
            .with_query(store.get(&session.query).to_vec());
        let user_row = users.row(&session.user_text, store);
        let truth = prepared.truth_positions(test_user);
        let bought: HashSet<ItemPos> = prepared.history_positions(test_user.user).into_iter().collect();
        let usable = |p: &ItemPos| !truth.contains(p) && !bought.contains(p);
        let matching: Vec<ItemPos> =
            index.matching(&session.drawn).into_iter().map(|n| ItemPos::new(n as usize)).filter(usable).collect();
        let words = SessionWords { query: LexicalQuery::new(&session.query, &corpus), corpus: &corpus };
        let cold = rng.gen_bool(options.cold_fraction);
        let positive = (session.positive, 1.0, cold);
        push_example(prepared, store, &context, Some(&words), user_row, items, out, positive);
        let (mut drawn, mut tries) = (0, 0);
        while drawn < options.negatives && tries < options.negatives * 20 {
            tries += 1;
            let p = match rng.gen_range(0..4) {
                0 | 1 if !matching.is_empty() => matching[rng.gen_range(0..matching.len())],
                0 | 2 => sampler.draw_popular(rng),
                _ => sampler.draw(&[], options, rng),
            };
            if !usable(&p) {
                continue;
            }
            let cold = rng.gen_bool(options.cold_fraction);
            push_example(prepared, store, &context, Some(&words), user_row, items, out, (p, 0.0, cold));
            drawn += 1;
        }
    }
}
