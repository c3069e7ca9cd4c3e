//! A bounded least-recently-used cache of text embeddings.
//!
//! Keys are the exact text: a lookup can only ever return the vector of that
//! very text (no hash collisions). One cache belongs to one loaded encoder, so
//! the encoder's identity is implied; entries of another encoder can never be
//! served. Hits, misses, evictions, entries and bytes go to the metrics.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use lru::LruCache;

use crate::serve::metrics::Metrics;

/// An embedding shared between the cache and the requests using it.
pub type Embedding = Arc<[f32]>;

pub struct EmbeddingCache {
    entries: Mutex<LruCache<Arc<str>, Embedding>>,
    metrics: Metrics,
}

impl EmbeddingCache {
    pub fn new(max_entries: NonZeroUsize, metrics: Metrics) -> Self {
        Self { entries: Mutex::new(LruCache::new(max_entries)), metrics }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<Arc<str>, Embedding>> {
        // A panic while holding the lock cannot leave the LRU half-updated in a
        // way that breaks later lookups, so a poisoned lock is still usable.
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn get(&self, text: &str) -> Option<Embedding> {
        let found = self.lock().get(text).cloned();
        match found {
            Some(_) => self.metrics.cache_hits.inc(),
            None => self.metrics.cache_misses.inc(),
        }
        found
    }

    pub fn insert(&self, text: &str, embedding: Embedding) {
        let added = entry_bytes(text, &embedding);
        let mut entries = self.lock();
        if let Some((old_text, old)) = entries.push(Arc::from(text), embedding) {
            if &*old_text != text {
                self.metrics.cache_evictions.inc();
            }
            self.metrics.cache_bytes.sub(entry_bytes(&old_text, &old));
        }
        self.metrics.cache_bytes.add(added);
        self.metrics.cache_entries.set(entries.len() as i64);
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Approximate heap bytes of one entry (text, vector, LRU bookkeeping).
fn entry_bytes(text: &str, embedding: &[f32]) -> i64 {
    (text.len() + std::mem::size_of_val(embedding) + 64) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(n: usize) -> EmbeddingCache {
        EmbeddingCache::new(NonZeroUsize::new(n).unwrap(), Metrics::new())
    }

    #[test]
    fn returns_only_the_vector_of_the_exact_text() {
        let c = cache(10);
        c.insert("red mug", Arc::from(vec![1.0, 0.0]));
        c.insert("red mug ", Arc::from(vec![0.0, 1.0]));
        assert_eq!(&*c.get("red mug").unwrap(), &[1.0, 0.0]);
        assert_eq!(&*c.get("red mug ").unwrap(), &[0.0, 1.0]);
        assert!(c.get("Red mug").is_none());
    }

    #[test]
    fn evicts_the_least_recently_used_and_counts_it() {
        let c = cache(2);
        c.insert("a", Arc::from(vec![1.0]));
        c.insert("b", Arc::from(vec![2.0]));
        assert!(c.get("a").is_some()); // b is now the oldest
        c.insert("c", Arc::from(vec![3.0]));
        assert!(c.get("b").is_none());
        assert_eq!(c.len(), 2);
        assert_eq!(c.metrics.cache_evictions.get(), 1);
        assert_eq!(c.metrics.cache_entries.get(), 2);
        assert_eq!(c.metrics.cache_bytes.get(), 2 * (1 + 4 + 64));
    }
}
