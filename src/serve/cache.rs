//! A least-recently-used cache of text embeddings, bounded in bytes.
//!
//! Keys are a 128-bit XXH3 hash of the text, not the text itself: a 2 MB
//! candidate text costs the cache 16 bytes, so an entry's size is fixed by
//! the encoder's width (about 1.6 KB at 384-d, 2.1 KB at 512-d) and `cache.max_bytes` bounds
//! the memory whatever the texts. Two different texts share a key only by a
//! hash collision, with odds of about n²/2¹²⁹ for n cached texts (below
//! 10⁻²⁸ for a million). One cache belongs to one loaded encoder, so the
//! encoder's identity is implied. Hits, misses, evictions, entries and bytes
//! go to the metrics.

use std::sync::{Arc, Mutex};

use lru::LruCache;
use xxhash_rust::xxh3::xxh3_128;

use crate::serve::metrics::Metrics;

/// An embedding shared between the cache and the requests using it.
pub(crate) type Embedding = Arc<[f32]>;

/// Bytes one entry costs besides its value: the key, the value's `Arc`
/// header, and the LRU's node and map slot.
pub(crate) const ENTRY_OVERHEAD: usize = 96;

/// A least-recently-used map from 128-bit text hashes to shared values,
/// bounded by the bytes `cost` counts per entry (value and bookkeeping).
/// The embedding cache below and the title-token cache
/// (`serve::title_tokens`) are two.
pub(crate) struct ByteLru<V: ?Sized> {
    entries: Mutex<Entries<V>>,
    max_bytes: usize,
    cost: fn(&V) -> usize,
}

struct Entries<V: ?Sized> {
    lru: LruCache<u128, Arc<V>>,
    bytes: usize,
}

/// What a cache holds after an insertion, and what the insertion evicted.
pub(crate) struct Usage {
    pub entries: usize,
    pub bytes: usize,
    pub evicted: usize,
}

impl<V: ?Sized> ByteLru<V> {
    pub(crate) fn new(max_bytes: usize, cost: fn(&V) -> usize) -> Self {
        Self { entries: Mutex::new(Entries { lru: LruCache::unbounded(), bytes: 0 }), max_bytes, cost }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries<V>> {
        // A panic while holding the lock cannot leave the LRU half-updated in a
        // way that breaks later lookups, so a poisoned lock is still usable.
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn get(&self, key: u128) -> Option<Arc<V>> {
        self.lock().lru.get(&key).cloned()
    }

    /// Keeps `value`, evicting the least recently used entries until the
    /// cache is within its byte budget again. A value costing more than the
    /// whole budget is not kept (`None`).
    pub(crate) fn insert(&self, key: u128, value: Arc<V>) -> Option<Usage> {
        let added = (self.cost)(&value);
        if added > self.max_bytes {
            return None;
        }
        let mut entries = self.lock();
        if let Some(old) = entries.lru.put(key, value) {
            entries.bytes -= (self.cost)(&old);
        }
        entries.bytes += added;
        let mut evicted = 0;
        while entries.bytes > self.max_bytes {
            let Some((_, gone)) = entries.lru.pop_lru() else { break };
            entries.bytes -= (self.cost)(&gone);
            evicted += 1;
        }
        Some(Usage { entries: entries.lru.len(), bytes: entries.bytes, evicted })
    }

    /// Entries and bytes held now (the bytes by the count the budget is
    /// checked with).
    pub(crate) fn usage(&self) -> (usize, usize) {
        let entries = self.lock();
        (entries.lru.len(), entries.bytes)
    }
}

pub struct EmbeddingCache {
    lru: ByteLru<[f32]>,
    metrics: Metrics,
}

impl EmbeddingCache {
    pub fn new(max_bytes: usize, metrics: Metrics) -> Self {
        Self { lru: ByteLru::new(max_bytes, entry_bytes), metrics }
    }

    /// The key a text is cached under (hashed outside the lock: a 2 MB
    /// text takes a fraction of a millisecond).
    pub fn key(text: &str) -> u128 {
        xxh3_128(text.as_bytes())
    }

    pub(crate) fn get(&self, key: u128) -> Option<Embedding> {
        let found = self.lru.get(key);
        match found {
            Some(_) => self.metrics.cache_hits.inc(),
            None => self.metrics.cache_misses.inc(),
        }
        found
    }

    /// The vector cached under `key`, without counting a hit or a miss:
    /// for a degraded answer (see `serve::ranker::degraded`), which looks
    /// up texts it will not send to the encoder either way.
    pub(crate) fn peek(&self, key: u128) -> Option<Embedding> {
        self.lru.get(key)
    }

    /// Keeps `embedding` for `text`, evicting the least recently used
    /// entries until the cache is within its byte budget again. A vector
    /// larger than the whole budget is not kept.
    pub fn insert(&self, key: u128, embedding: Embedding) {
        if let Some(usage) = self.lru.insert(key, embedding) {
            self.metrics.cache_evictions.inc_by(usage.evicted as u64);
            self.metrics.cache_bytes.set(usage.bytes as i64);
            self.metrics.cache_entries.set(usage.entries as i64);
        }
    }

    pub fn len(&self) -> usize {
        self.lru.usage().0
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the entries take, by the same count the budget is checked with.
    pub fn bytes(&self) -> usize {
        self.lru.usage().1
    }
}

/// Heap bytes of one entry: its vector and the fixed bookkeeping.
fn entry_bytes(embedding: &[f32]) -> usize {
    std::mem::size_of_val(embedding) + ENTRY_OVERHEAD
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Room for `n` two-float entries.
    fn cache(n: usize) -> EmbeddingCache {
        EmbeddingCache::new(n * (8 + ENTRY_OVERHEAD), Metrics::new())
    }

    #[test]
    fn returns_only_the_vector_of_the_exact_text() {
        let c = cache(10);
        let key = EmbeddingCache::key;
        c.insert(key("red mug"), Arc::from(vec![1.0, 0.0]));
        c.insert(key("red mug "), Arc::from(vec![0.0, 1.0]));
        assert_eq!(&*c.get(key("red mug")).unwrap(), &[1.0, 0.0]);
        assert_eq!(&*c.get(key("red mug ")).unwrap(), &[0.0, 1.0]);
        assert!(c.get(key("Red mug")).is_none());
    }

    #[test]
    fn evicts_the_least_recently_used_and_counts_it() {
        let c = cache(2);
        let key = EmbeddingCache::key;
        c.insert(key("a"), Arc::from(vec![1.0, 1.0]));
        c.insert(key("b"), Arc::from(vec![2.0, 2.0]));
        assert!(c.get(key("a")).is_some()); // b is now the oldest
        c.insert(key("c"), Arc::from(vec![3.0, 3.0]));
        assert!(c.get(key("b")).is_none());
        assert_eq!(c.len(), 2);
        assert_eq!(c.metrics.cache_evictions.get(), 1);
        assert_eq!(c.metrics.cache_entries.get(), 2);
        assert_eq!(c.metrics.cache_bytes.get(), 2 * (8 + ENTRY_OVERHEAD) as i64);
    }

    #[test]
    fn huge_texts_cost_no_more_than_short_ones() {
        let c = cache(3);
        let budget = 3 * (8 + ENTRY_OVERHEAD);
        let huge = "x".repeat(2 << 20);
        for i in 0..10 {
            c.insert(EmbeddingCache::key(&format!("{huge}{i}")), Arc::from(vec![i as f32, 0.0]));
            assert!(c.bytes() <= budget, "{} bytes over a budget of {budget}", c.bytes());
        }
        assert_eq!(c.len(), 3);
        assert_eq!(&*c.get(EmbeddingCache::key(&format!("{huge}9"))).unwrap(), &[9.0, 0.0]);
    }
}
