//! The catalog in memory: every item's metadata and, once computed, its
//! embedding in one contiguous `[slots × dim]` array, so nearest-neighbour
//! retrieval is an exact scan (the SIMD `cosine` over each row, a bounded
//! heap for the best `k`). At 100k items of 384 dimensions that is 150 MB
//! and a few milliseconds a scan. Above `catalog.exact_scan_max` embedded
//! items at start-up, an HNSW graph ([`super::ann`]) answers instead, its
//! candidates re-scored with the exact cosine. Beside the vectors, a
//! lexical index ([`crate::model::lexical`], BM25 over each item's text and
//! attribute values) answers search queries word by word; it is changed
//! under the same write lock as the slots, so a request sees both in step.
//! It lives in memory like the vectors and is rebuilt from the store at
//! start-up (the store is what makes writes durable). Requests read the
//! index under a read lock; writes (upserts, deletes, new embeddings) take
//! the write lock.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::{RwLock, RwLockReadGuard};

use super::ann::AnnIndex;
use super::attributes::AttributeFilter;
use crate::model::encoder::cosine;
use crate::model::lexical::{IndexStats, LexicalIndex, LexicalQuery};
use crate::store::catalog::{CatalogItem, PendingItem, StoredItem};

/// Which items a retrieval or a ranking may return.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ItemFilter {
    /// Only items marked available (the default for requests).
    pub available_only: bool,
    pub min_price: Option<f32>,
    pub max_price: Option<f32>,
    /// Ids never to return (e.g. the cart).
    pub exclude: HashSet<String>,
    /// Exact matches on the items' attributes (see `attributes`).
    pub attributes: AttributeFilter,
}

impl ItemFilter {
    /// Whether a catalog item passes (see [`ItemFilter::allows`]).
    pub(crate) fn allows_item(&self, item: &CatalogItem) -> bool {
        self.allows(&item.id, item.price, item.available, &item.attributes)
    }

    /// Whether an item with this id, price, availability and attributes
    /// passes. An item without a price passes a price range only when none
    /// is set; one without attributes, only a filter naming none.
    pub(crate) fn allows(&self, id: &str, price: Option<f32>, available: bool, attributes: &serde_json::Value) -> bool {
        if self.available_only && !available {
            return false;
        }
        if self.min_price.is_some() || self.max_price.is_some() {
            let Some(price) = price else { return false };
            if self.min_price.is_some_and(|min| price < min) || self.max_price.is_some_and(|max| price > max) {
                return false;
            }
        }
        !self.exclude.contains(id) && self.attributes.allows(attributes)
    }
}

struct Slot {
    item: CatalogItem,
    embedded: bool,
}

#[derive(Default)]
struct Inner {
    slots: Vec<Option<Slot>>,
    by_id: HashMap<String, usize>,
    /// `slots.len() × dim`; rows of empty or not yet embedded slots are unused.
    vectors: Vec<f32>,
    /// Slots freed by deletes, reused by inserts.
    free: Vec<usize>,
    embedded: usize,
    /// The HNSW graph, when the catalog was above `exact_scan_max` at start-up.
    ann: Option<AnnIndex>,
    /// Each slot's current node in `ann` (`NO_NODE`: none).
    slot_node: Vec<usize>,
}

const NO_NODE: usize = usize::MAX;

pub struct CatalogIndex {
    dim: usize,
    /// Above this many embedded items at start-up, retrieval uses HNSW.
    exact_scan_max: usize,
    inner: RwLock<Inner>,
    /// BM25 over the items' texts, keyed by slot; changed only while
    /// `inner` is write-locked. `None` if it could not be created (search
    /// then runs on embeddings alone, and the start-up log says so).
    lexical: Option<LexicalIndex>,
}

/// A read view of the index for one request.
pub struct IndexView<'a> {
    dim: usize,
    inner: RwLockReadGuard<'a, Inner>,
    lexical: Option<&'a LexicalIndex>,
}

/// The text an item is matched on word by word: its text, then the string
/// and number values of its attributes (top level, and inside lists), so
/// a search for a brand or a colour finds items that name it only there.
pub(crate) fn lexical_text(item: &CatalogItem) -> Cow<'_, str> {
    let Some(attributes) = item.attributes.as_object() else { return Cow::Borrowed(&item.text) };
    let mut text = item.text.clone();
    let mut push = |value: &serde_json::Value| match value {
        serde_json::Value::String(s) => {
            text.push_str(" | ");
            text.push_str(s);
        }
        serde_json::Value::Number(n) => {
            text.push_str(" | ");
            text.push_str(&n.to_string());
        }
        _ => {}
    };
    for value in attributes.values() {
        match value {
            serde_json::Value::Array(values) => values.iter().for_each(&mut push),
            value => push(value),
        }
    }
    Cow::Owned(text)
}

/// A scored slot, ordered so that a `BinaryHeap` of them keeps the worst on top.
#[derive(PartialEq)]
struct Scored(f32, usize);
impl Eq for Scored {}
impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: the smallest score (then the largest slot) is the heap's top.
        other.0.total_cmp(&self.0).then(self.1.cmp(&other.1))
    }
}

impl CatalogIndex {
    /// An empty index; with `lexical`, a lexical index beside the vectors.
    pub(crate) fn new(dim: usize, exact_scan_max: usize, lexical: bool) -> Self {
        let lexical = lexical
            .then(|| {
                LexicalIndex::new()
                    .inspect_err(|error| tracing::error!(%error, "no lexical index: search runs on embeddings alone"))
                    .ok()
            })
            .flatten();
        Self { dim, exact_scan_max, inner: RwLock::default(), lexical }
    }

    /// Applies lexical changes (slot, new text or `None` for gone) while the
    /// caller holds the write lock. A failure leaves the lexical side behind
    /// until the next change or restart; the store holds the truth.
    fn apply_lexical<'a>(&self, changes: impl IntoIterator<Item = (u64, Option<&'a str>)>) {
        if let Some(lexical) = &self.lexical {
            if let Err(error) = lexical.apply(changes) {
                tracing::error!(%error, "the lexical index missed a catalog change");
            }
        }
    }

    /// The index over a store's contents (start-up); with more than
    /// `exact_scan_max` embedded items, an HNSW graph over them too.
    pub fn from_stored(dim: usize, exact_scan_max: usize, lexical: bool, stored: Vec<StoredItem>) -> Self {
        let index = Self::new(dim, exact_scan_max, lexical);
        {
            let mut inner = index.write();
            for StoredItem { item, embedding } in stored {
                let slot = inner.put(dim, item);
                if let Some(vector) = embedding.filter(|v| v.len() == dim) {
                    inner.set_vector(dim, slot, &vector);
                }
            }
            let started = std::time::Instant::now();
            let texts: Vec<(u64, Cow<'_, str>)> = inner
                .slots
                .iter()
                .enumerate()
                .filter_map(|(slot, s)| s.as_ref().map(|s| (slot as u64, lexical_text(&s.item))))
                .collect();
            index.apply_lexical(texts.iter().map(|(slot, text)| (*slot, Some(text.as_ref()))));
            tracing::info!(items = texts.len(), secs = started.elapsed().as_secs_f64(), "lexical index built");
            if inner.embedded > exact_scan_max {
                let started = std::time::Instant::now();
                let inner = &mut *inner;
                let vectors: Vec<(usize, &[f32])> = inner
                    .slots
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.as_ref().is_some_and(|s| s.embedded))
                    .map(|(slot, _)| (slot, &inner.vectors[slot * dim..(slot + 1) * dim]))
                    .collect();
                let ann = AnnIndex::build(inner.slots.len(), &vectors);
                for (node, &(slot, _)) in vectors.iter().enumerate() {
                    inner.slot_node[slot] = node;
                }
                inner.ann = Some(ann);
                tracing::info!(items = vectors.len(), secs = started.elapsed().as_secs_f64(), "HNSW index built");
            }
        }
        index
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn read(&self) -> IndexView<'_> {
        IndexView {
            dim: self.dim,
            inner: self.inner.read().unwrap_or_else(|p| p.into_inner()),
            lexical: self.lexical.as_ref(),
        }
    }

    /// Applies upserts already made durable: a changed text waits for its
    /// new embedding (the item is not retrievable by vector until then);
    /// the lexical index follows at once.
    pub(crate) fn upsert(&self, items: &[CatalogItem]) {
        let mut inner = self.write();
        let mut changed: Vec<(u64, String)> = Vec::new();
        for item in items {
            let before = inner.by_id.get(&item.id).and_then(|&slot| inner.slots[slot].as_ref());
            let text = lexical_text(item);
            if before.is_none_or(|s| lexical_text(&s.item) != text) {
                let text = text.into_owned();
                let slot = inner.put(self.dim, item.clone());
                changed.push((slot as u64, text));
            } else {
                inner.put(self.dim, item.clone());
            }
        }
        if !changed.is_empty() {
            self.apply_lexical(changed.iter().map(|(slot, text)| (*slot, Some(text.as_str()))));
        }
    }

    pub(crate) fn delete(&self, id: &str) {
        let mut inner = self.write();
        if let Some(slot) = inner.by_id.remove(id) {
            if inner.slots[slot].take().is_some_and(|s| s.embedded) {
                inner.embedded -= 1;
            }
            inner.slot_node[slot] = NO_NODE;
            inner.free.push(slot);
            self.apply_lexical([(slot as u64, None)]);
        }
    }

    /// Sets an item's embedding if its text is still `text`.
    pub(crate) fn set_vector(&self, id: &str, text: &str, vector: &[f32]) {
        let mut inner = self.write();
        let Some(&slot) = inner.by_id.get(id) else { return };
        if vector.len() == self.dim && inner.slots[slot].as_ref().is_some_and(|s| s.item.text == text) {
            inner.set_vector(self.dim, slot, vector);
        }
        inner.warn_if_scan_too_large(self.exact_scan_max);
    }

    /// Sets many items' embeddings under one write lock (each only if the
    /// item's text is still the one embedded).
    pub(crate) fn set_vectors(&self, embedded: &[(PendingItem, Vec<f32>)]) {
        let mut inner = self.write();
        for (item, vector) in embedded {
            let Some(&slot) = inner.by_id.get(&item.id) else { continue };
            if vector.len() == self.dim && inner.slots[slot].as_ref().is_some_and(|s| s.item.text == item.text) {
                inner.set_vector(self.dim, slot, vector);
            }
        }
        inner.warn_if_scan_too_large(self.exact_scan_max);
    }

    /// The search query with its misspelt words corrected against the
    /// catalog's terms, or `None` if none was (see `LexicalIndex::correct`).
    pub fn correct(&self, query: &str) -> Option<String> {
        self.lexical.as_ref()?.correct(query)
    }

    /// (items, items with an embedding).
    pub fn counts(&self) -> (usize, usize) {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        (inner.by_id.len(), inner.embedded)
    }
}

impl Inner {
    fn put(&mut self, dim: usize, item: CatalogItem) -> usize {
        if let Some(&slot) = self.by_id.get(&item.id) {
            let existing = self.slots[slot].as_mut().expect("indexed slots are live");
            if existing.item.text != item.text && existing.embedded {
                existing.embedded = false;
                self.embedded -= 1;
            }
            existing.item = item;
            return slot;
        }
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.slots.push(None);
                self.slot_node.push(NO_NODE);
                self.vectors.resize(self.slots.len() * dim, 0.0);
                self.slots.len() - 1
            }
        };
        self.by_id.insert(item.id.clone(), slot);
        self.slots[slot] = Some(Slot { item, embedded: false });
        slot
    }

    fn set_vector(&mut self, dim: usize, slot: usize, vector: &[f32]) {
        self.vectors[slot * dim..(slot + 1) * dim].copy_from_slice(vector);
        if let Some(ann) = &mut self.ann {
            self.slot_node[slot] = ann.insert(slot, vector);
        }
        let entry = self.slots[slot].as_mut().expect("live slot");
        if !entry.embedded {
            entry.embedded = true;
            self.embedded += 1;
        }
    }
}

impl Inner {
    /// The graph is built at start-up only: a catalog that grows past the
    /// bound while running keeps the exact scan (correct, slower) until a
    /// restart, and says so once per thousand items.
    fn warn_if_scan_too_large(&self, exact_scan_max: usize) {
        if self.ann.is_none() && self.embedded > exact_scan_max && self.embedded.is_multiple_of(1000) {
            tracing::warn!(
                embedded = self.embedded,
                exact_scan_max,
                "the catalog outgrew catalog.exact_scan_max: retrieval scans it exactly until a restart builds HNSW"
            );
        }
    }
}

impl IndexView<'_> {
    /// Items held (the tests count them).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.inner.by_id.len()
    }

    /// Every held item's id.
    pub(crate) fn ids(&self) -> impl Iterator<Item = &str> {
        self.inner.by_id.keys().map(String::as_str)
    }

    /// The item and its embedding (if computed).
    pub(crate) fn get(&self, id: &str) -> Option<(&CatalogItem, Option<&[f32]>)> {
        let slot = *self.inner.by_id.get(id)?;
        let entry = self.inner.slots[slot].as_ref()?;
        let vector = entry.embedded.then(|| &self.inner.vectors[slot * self.dim..(slot + 1) * self.dim]);
        Some((&entry.item, vector))
    }

    /// The lexical index's statistics at this moment (`None` without one).
    pub fn lexical_stats(&self) -> Option<IndexStats> {
        self.lexical.map(LexicalIndex::stats)
    }

    /// Up to `k` embedded items the filter allows with the highest BM25 for
    /// `query`, best first. The index is searched for a few times `k`, so a
    /// strict filter may return fewer.
    pub fn lexical_nearest(&self, query: &LexicalQuery, k: usize, filter: &ItemFilter) -> Vec<(&CatalogItem, f32)> {
        let Some(lexical) = self.lexical else { return Vec::new() };
        let hits = match lexical.search(query, k.saturating_mul(4).max(k)) {
            Ok(hits) => hits,
            Err(error) => {
                tracing::warn!(%error, "lexical search failed: this request retrieves by embedding alone");
                return Vec::new();
            }
        };
        hits.into_iter()
            .filter_map(|(slot, score)| {
                let entry = self.inner.slots.get(slot as usize)?.as_ref()?;
                let allowed = entry.embedded && filter.allows_item(&entry.item);
                allowed.then_some((&entry.item, score))
            })
            .take(k)
            .collect()
    }

    /// The `k` embedded items the filter allows with the highest cosine to
    /// `query`, best first (ties: lower slot first). An exact scan.
    pub fn nearest(&self, query: &[f32], k: usize, filter: &ItemFilter) -> Vec<(&str, f32)> {
        if k == 0 || query.len() != self.dim {
            return Vec::new();
        }
        if let Some(ann) = &self.inner.ann {
            return self.nearest_approximate(ann, query, k, filter);
        }
        let mut heap: BinaryHeap<Scored> = BinaryHeap::with_capacity(k + 1);
        for (slot, entry) in self.inner.slots.iter().enumerate() {
            let Some(entry) = entry else { continue };
            if !entry.embedded || !filter.allows_item(&entry.item) {
                continue;
            }
            let score = cosine(query, &self.inner.vectors[slot * self.dim..(slot + 1) * self.dim]);
            if heap.len() < k {
                heap.push(Scored(score, slot));
            } else if heap.peek().is_some_and(|worst| score > worst.0) {
                heap.pop();
                heap.push(Scored(score, slot));
            }
        }
        let mut best = heap.into_vec();
        best.sort();
        best.into_iter()
            .map(|Scored(score, slot)| (self.inner.slots[slot].as_ref().expect("live").item.id.as_str(), score))
            .collect()
    }
}

impl IndexView<'_> {
    /// `nearest` through the HNSW graph: its current, allowed nodes,
    /// re-scored with the exact cosine.
    fn nearest_approximate(&self, ann: &AnnIndex, query: &[f32], k: usize, filter: &ItemFilter) -> Vec<(&str, f32)> {
        let inner = &self.inner;
        let current = |slot: usize, node: usize| {
            inner.slot_node.get(slot) == Some(&node)
                && inner.slots[slot].as_ref().is_some_and(|s| s.embedded && filter.allows_item(&s.item))
        };
        let mut found: Vec<(usize, f32)> = ann
            .search(query, k, &current)
            .into_iter()
            .map(|slot| (slot, cosine(query, &inner.vectors[slot * self.dim..(slot + 1) * self.dim])))
            .collect();
        found.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        found
            .into_iter()
            .map(|(slot, score)| (inner.slots[slot].as_ref().expect("live").item.id.as_str(), score))
            .collect()
    }
}

#[cfg(test)]
#[path = "index_tests.rs"]
mod tests;
