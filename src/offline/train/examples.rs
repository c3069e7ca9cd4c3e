//! Training examples: for every test user of a window, the items they went
//! on to buy (positives) and sampled negatives, each as rows into shared
//! user/item vector tables plus the numeric features of the pair.

use std::collections::{HashMap, HashSet};

use candle_core::{Device, Tensor};
use rand::distributions::{Distribution, WeightedIndex};
use rand::rngs::StdRng;
use rand::Rng;

use super::TrainOptions;
use crate::model::features;
use crate::model::stats::ItemPos;
use crate::offline::data::split::Split;
use crate::offline::embed_store::EmbedStore;
use crate::offline::prepared::PreparedSplit;

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

/// Positives (truth) and sampled negatives of every test user of a window.
pub(super) fn add_examples(
    prepared: &PreparedSplit<'_>,
    store: &EmbedStore,
    options: &TrainOptions,
    rng: &mut StdRng,
    users: &mut VectorTable,
    items: &mut VectorTable,
    out: &mut Examples,
) {
    let stats = &prepared.stats;
    let popular = WeightedIndex::new(stats.items.iter().map(|s| s.buyers as f64 + 1.0)).expect("non-empty catalog");
    for (index, test_user) in prepared.split.test_users.iter().enumerate() {
        let context = prepared.user_context(index, store);
        let user_row = users.row(&prepared.user_texts[index], store);
        let truth = prepared.truth_positions(test_user);
        let bought: HashSet<ItemPos> = prepared.history_positions(test_user.user).into_iter().collect();
        let mut push = |position: ItemPos, label: f32, cold: bool| {
            let mut candidate = prepared.candidate(position, store);
            if cold {
                // As a request would carry it: text and price, no history.
                candidate.position = None;
                candidate.price = Some(stats.item(position).price);
            }
            out.user_rows.push(user_row);
            out.item_rows.push(items.row(&stats.item(position).text, store));
            out.numeric.extend_from_slice(&features::numeric(stats, &context, &candidate));
            out.labels.push(label);
        };
        let mut positives: Vec<ItemPos> = truth.iter().copied().collect();
        positives.sort_unstable();
        for &p in &positives {
            push(p, 1.0, rng.gen_bool(options.cold_fraction));
        }
        let hard_pool = if options.hard_negatives { context.strongest_links(HARD_NEGATIVE_POOL) } else { Vec::new() };
        let wanted = positives.len() * options.negatives;
        let mut drawn = 0;
        let mut tries = 0;
        while drawn < wanted && tries < wanted * 20 {
            tries += 1;
            // Uniform and by popularity, and (with --hard-negatives) a third
            // among the items most strongly linked to the user's history.
            let p = if !hard_pool.is_empty() && rng.gen_bool(1.0 / 3.0) {
                hard_pool[rng.gen_range(0..hard_pool.len())]
            } else if rng.gen_bool(options.popular_share) {
                ItemPos::new(popular.sample(rng))
            } else {
                ItemPos::new(rng.gen_range(0..stats.items.len()))
            };
            if truth.contains(&p) || bought.contains(&p) {
                continue;
            }
            push(p, 0.0, rng.gen_bool(options.cold_fraction));
            drawn += 1;
        }
    }
}
