//! What the embed job does with the embedding cache: looks a request's
//! texts up, names each text the cache misses once (the same text twice in
//! one request is encoded once), and when the encoder's vectors come back,
//! caches them and puts every text's vector in its place. Only the embed
//! job sees this; its callers get the vectors in the order of their texts.

use std::collections::HashMap;
use std::sync::Arc;

use crate::serve::cache::{Embedding, EmbeddingCache};

/// A request's texts after the cache lookup.
pub(super) struct Lookup {
    /// Every text's vector found in the cache, `None` where missing.
    found: Vec<Option<Embedding>>,
    /// Each missing text once, in the order its vector comes back.
    missing: Vec<Missing>,
}

/// A text the cache does not hold.
struct Missing {
    key: u128,
    /// Its first position among the request's texts (the one tokenized).
    first: usize,
    /// Every position it holds.
    positions: Vec<usize>,
}

impl Lookup {
    pub(super) fn new(cache: &EmbeddingCache, texts: &[&str]) -> Self {
        let keys: Vec<u128> = texts.iter().map(|t| EmbeddingCache::key(t)).collect();
        let found: Vec<Option<Embedding>> = keys.iter().map(|&key| cache.get(key)).collect();
        let mut missing: HashMap<u128, (usize, Vec<usize>)> = HashMap::new();
        for (i, &key) in keys.iter().enumerate() {
            if found[i].is_none() {
                missing.entry(key).or_insert_with(|| (i, Vec::new())).1.push(i);
            }
        }
        let missing = missing.into_iter().map(|(key, (first, positions))| Missing { key, first, positions }).collect();
        Self { found, missing }
    }

    /// True when the cache held every text: nothing goes to the encoder.
    pub(super) fn is_complete(&self) -> bool {
        self.missing.is_empty()
    }

    /// The position of each missing text's first occurrence, in the order
    /// their vectors must be given to [`Lookup::place`].
    pub(super) fn missing_firsts(&self) -> impl ExactSizeIterator<Item = usize> + '_ {
        self.missing.iter().map(|m| m.first)
    }

    /// Caches the new vectors (one per missing text, in order) and returns
    /// every text's vector in order.
    pub(super) fn place(self, cache: &EmbeddingCache, vectors: Vec<Vec<f32>>) -> Vec<Embedding> {
        let Self { mut found, missing } = self;
        for (Missing { key, positions, .. }, vector) in missing.into_iter().zip(vectors) {
            let vector: Embedding = Arc::from(vector);
            cache.insert(key, vector.clone());
            for i in positions {
                found[i] = Some(vector.clone());
            }
        }
        found.into_iter().map(|v| v.expect("every text embedded")).collect()
    }
}
