//! The catalog in memory: every item's metadata and, once computed, its
//! embedding as int8 codes and a scale ([`super::vectors`]) in one
//! contiguous `[slots × dim]` array, so nearest-neighbour retrieval is an
//! exact scan (the query, in `f32`, against each row's codes, a bounded
//! heap for the best `k`). At 100k items of 384 dimensions that is 39 MB
//! and a few milliseconds a scan; at a million, 370 MiB. Above
//! `catalog.exact_scan_max` embedded items at start-up, an inverted file
//! ([`super::ann`]) answers instead: the same scores over the lists nearest
//! the query. Its lists are read from the file beside the store when it
//! matches (`catalog.ann_file`), so a restart does not cluster again. Beside the vectors, a
//! lexical index ([`crate::model::lexical`], BM25 over each item's text and
//! attribute values) answers search queries word by word; writers change it
//! right after the slots (its commit may wait for the disk), so a request
//! may see an item's old words for a moment, never another item's. It is
//! kept on disk beside the store when there is a directory for it, and
//! reconciled with the store at start-up (the store is what makes writes
//! durable); otherwise it is built in memory at start-up. Requests read the
//! index under a read lock; writes (upserts, deletes, new embeddings) take
//! the write lock.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{RwLock, RwLockReadGuard};

use rayon::prelude::*;

use super::ann::{entry_key, lists_for, AnnFileError, AnnIndex, Saved};
use super::attributes::AttributeFilter;
use super::vectors::{ItemVector, Quantized};
use crate::model::lexical::{id_handle, IndexStats, LexicalError, LexicalIndex, LexicalQuery, Reconciled};
use crate::store::catalog::{CatalogItem, PendingItem, StoredItem};

/// How the index is built (from `catalog` settings and the encoder).
#[derive(Debug, Clone)]
pub struct IndexOptions {
    /// The embeddings' dimension.
    pub dim: usize,
    /// Above this many embedded items at start-up, retrieval uses the inverted file.
    pub exact_scan_max: usize,
    /// Whether a lexical index is kept beside the vectors.
    pub lexical: bool,
    /// Lists an inverted-file search scans at least (`catalog.ann_probe`).
    pub ann_probe: usize,
    /// Where the inverted file's centroids and cells are kept between
    /// restarts (`None`: trained at every start-up, never written).
    pub ann_file: Option<PathBuf>,
    /// Where the lexical index is kept between restarts (`None`: in memory,
    /// built at every start-up).
    pub lexical_dir: Option<PathBuf>,
    /// The encoder that made the vectors: a file of another is ignored.
    pub encoder_key: String,
}

impl IndexOptions {
    /// Defaults for a `dim`-dimensional index with no file.
    pub fn new(dim: usize, exact_scan_max: usize, lexical: bool) -> Self {
        Self {
            dim,
            exact_scan_max,
            lexical,
            ann_probe: 64,
            ann_file: None,
            lexical_dir: None,
            encoder_key: String::new(),
        }
    }
}

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
    /// Whether it rejects more than unavailable items: a price range,
    /// excluded ids or attribute matches.
    pub(crate) fn narrows(&self) -> bool {
        self.min_price.is_some() || self.max_price.is_some() || !self.exclude.is_empty() || !self.attributes.is_empty()
    }

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

struct Inner {
    slots: Vec<Option<Slot>>,
    by_id: HashMap<String, usize>,
    /// Each item's lexical handle ([`id_handle`], a hash of its id) to its
    /// slot: how a lexical hit finds its item without reading its id back.
    by_handle: HashMap<u64, usize>,
    /// A row per slot; rows of empty or not yet embedded slots are unused.
    vectors: Quantized,
    /// Slots freed by deletes, reused by inserts.
    free: Vec<usize>,
    embedded: usize,
    /// The inverted file, when the catalog was above `exact_scan_max` at
    /// start-up; every embedded slot is in one of its lists.
    ann: Option<AnnIndex>,
    /// How the inverted file was made at start-up.
    ann_start: Option<AnnStart>,
}

/// How the inverted file was made at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnnStart {
    /// Clustered afresh (no usable file).
    pub trained: bool,
    /// Items whose cell came from the file.
    pub from_file: usize,
    /// Items assigned to their nearest cell at start-up.
    pub assigned: usize,
    pub lists: usize,
}

pub struct CatalogIndex {
    dim: usize,
    options: IndexOptions,
    inner: RwLock<Inner>,
    /// BM25 over the items' texts, keyed by item id; changed by writers
    /// right after `inner` (see [`Self::upsert`]). `None` if it could not
    /// be created (search then runs on embeddings alone, and the start-up
    /// log says so).
    lexical: Option<LexicalIndex>,
    /// How the lexical index caught up with the store at start-up.
    lexical_start: Option<LexicalStart>,
}

/// How the lexical index was made ready at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LexicalStart {
    /// Whether it was opened from (and is kept in) `lexical_dir`.
    pub on_disk: bool,
    pub reconciled: Reconciled,
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
pub(super) struct Scored(pub(super) f32, pub(super) usize);
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

/// Keeps `slot` with `score` in a heap of the best `k` (worst on top).
pub(super) fn keep_best(heap: &mut BinaryHeap<Scored>, k: usize, score: f32, slot: usize) {
    if heap.len() < k {
        heap.push(Scored(score, slot));
    } else if heap.peek().is_some_and(|worst| score > worst.0) {
        heap.pop();
        heap.push(Scored(score, slot));
    }
}

/// The lexical index: in `dir` if given (kept between restarts), else in
/// memory; in memory too if the directory cannot be used (say, another
/// process holds it), and `None` if not even that can be made (search then
/// runs on embeddings alone). Either way the start-up log says which.
fn open_lexical(dir: Option<&std::path::Path>) -> Option<LexicalIndex> {
    if let Some(dir) = dir {
        match LexicalIndex::in_dir(dir) {
            Ok(index) => return Some(index),
            Err(error) => {
                tracing::warn!(%error, path = %dir.display(), "the lexical index cannot be kept on disk: building it in memory")
            }
        }
    }
    LexicalIndex::in_memory()
        .inspect_err(|error| tracing::error!(%error, "no lexical index: search runs on embeddings alone"))
        .ok()
}

impl CatalogIndex {
    /// An empty index; with `lexical`, a lexical index beside the vectors.
    #[cfg(test)]
    pub(crate) fn new(dim: usize, exact_scan_max: usize, lexical: bool) -> Self {
        Self::with_options(IndexOptions::new(dim, exact_scan_max, lexical))
    }

    fn with_options(options: IndexOptions) -> Self {
        let lexical = options.lexical.then(|| open_lexical(options.lexical_dir.as_deref())).flatten();
        let inner = Inner {
            slots: Vec::new(),
            by_id: HashMap::new(),
            by_handle: HashMap::new(),
            vectors: Quantized::new(options.dim),
            free: Vec::new(),
            embedded: 0,
            ann: None,
            ann_start: None,
        };
        Self { dim: options.dim, options, inner: RwLock::new(inner), lexical, lexical_start: None }
    }

    /// Applies lexical changes (item id, its handle and new text, or `None`
    /// for gone). A failure is rolled back and leaves the lexical side
    /// without those changes until a restart's reconciliation catches up;
    /// the store holds the truth.
    fn apply_lexical<'a>(&self, changes: impl IntoIterator<Item = (&'a str, Option<(u64, &'a str)>)>) {
        if let Some(lexical) = &self.lexical {
            if let Err(error) = lexical.apply(changes) {
                tracing::error!(%error, "the lexical index missed a catalog change");
            }
        }
    }

    /// The index over a store's contents (start-up); with more than
    /// `exact_scan_max` embedded items, an inverted file over them too.
    pub fn from_stored(options: &IndexOptions, stored: Vec<StoredItem>) -> Self {
        let loaded = Self::load(options, |push| {
            stored.into_iter().for_each(push);
            Ok::<_, std::convert::Infallible>(())
        });
        match loaded {
            Ok(index) => index,
            Err(never) => match never {},
        }
    }

    /// The index over what `each` hands its callback, one stored item at a
    /// time (`CatalogStore::load_each`: no item's `f32` vector is held
    /// longer than it takes to round it); then the lexical index and, above
    /// `exact_scan_max` embedded items, the inverted file.
    pub fn load<E>(
        options: &IndexOptions,
        each: impl FnOnce(&mut dyn FnMut(StoredItem)) -> Result<(), E>,
    ) -> Result<Self, E> {
        let mut index = Self::with_options(options.clone());
        let dim = options.dim;
        let mut lexical_start = None;
        let mut replacement = None;
        {
            let mut inner = index.write();
            let started = std::time::Instant::now();
            each(&mut |StoredItem { item, embedding }| {
                let slot = inner.put(item);
                if let Some(vector) = embedding.filter(|v| v.len() == dim) {
                    inner.set_vector(slot, &vector);
                }
            })?;
            tracing::info!(items = inner.by_id.len(), secs = started.elapsed().as_secs_f64(), "catalog items read");
            if let Some(lexical) = &index.lexical {
                let started = std::time::Instant::now();
                let ready = |lexical: &LexicalIndex| {
                    let reconciled = lexical.reconcile(inner.lexical_items())?;
                    let on_disk = lexical.on_disk();
                    let Reconciled { kept, added, removed } = reconciled;
                    let secs = started.elapsed().as_secs_f64();
                    tracing::info!(on_disk, kept, added, removed, secs, "lexical index ready");
                    Ok::<_, LexicalError>(LexicalStart { on_disk, reconciled })
                };
                match ready(lexical) {
                    Ok(start) => lexical_start = Some(start),
                    // An index that could not catch up would serve stale
                    // words all run: one in memory instead, or none.
                    Err(error) => {
                        tracing::error!(%error, "the lexical index could not catch up with the catalog: building it in memory");
                        let fresh = LexicalIndex::in_memory().and_then(|fresh| {
                            lexical_start = Some(ready(&fresh)?);
                            Ok(fresh)
                        });
                        replacement = Some(fresh.inspect_err(|error| tracing::error!(%error, "no lexical index: search runs on embeddings alone")).ok());
                    }
                }
            }
            if inner.embedded > options.exact_scan_max {
                inner.build_ann(options);
            }
        }
        if let Some(replacement) = replacement {
            index.lexical = replacement;
        }
        index.lexical_start = lexical_start;
        Ok(index)
    }

    /// Writes the inverted file's lists to `catalog.ann_file` (at shutdown,
    /// so the next start-up reads them); how many items, or `None` without
    /// a file.
    pub(crate) fn save_ann(&self) -> Result<Option<usize>, AnnFileError> {
        let Some(path) = &self.options.ann_file else { return Ok(None) };
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        inner.save_ann(path, &self.options.encoder_key).map(Some)
    }

    /// Whether retrieval goes through the inverted file.
    pub fn approximate(&self) -> bool {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).ann.is_some()
    }

    /// How the inverted file was made at start-up (`None`: exact scan).
    pub fn ann_start(&self) -> Option<AnnStart> {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).ann_start
    }

    /// How the lexical index was made ready at start-up (`None`: there is
    /// none, or it could not catch up).
    pub fn lexical_start(&self) -> Option<LexicalStart> {
        self.lexical_start
    }

    /// Bytes the vectors (and the inverted file's lists) hold.
    pub fn vector_bytes(&self) -> usize {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        inner.vectors.bytes() + inner.ann.as_ref().map_or(0, AnnIndex::bytes)
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
    /// the lexical index follows right after, outside the vectors' lock (a
    /// commit on disk waits for the disk), in the callers' order: they hold
    /// the catalog's writing lock. Until it has, a search finds the item's
    /// old words, or none; hits are looked up by a hash of the id, so never another item.
    pub(crate) fn upsert(&self, items: &[CatalogItem]) {
        let mut changed: Vec<(&str, u64, String)> = Vec::new();
        {
            let mut inner = self.write();
            for item in items {
                let before = inner.by_id.get(&item.id).and_then(|&slot| inner.slots[slot].as_ref());
                let text = lexical_text(item);
                let text_changed = before.is_none_or(|s| lexical_text(&s.item) != text);
                let text = text_changed.then(|| text.into_owned());
                let slot = inner.put(item.clone());
                let handle = id_handle(&item.id);
                // An item whose handle another item holds is left out (see `Inner::put`).
                if let Some(text) = text.filter(|_| inner.by_handle.get(&handle) == Some(&slot)) {
                    changed.push((item.id.as_str(), handle, text));
                }
            }
        }
        if !changed.is_empty() {
            self.apply_lexical(changed.iter().map(|(id, handle, text)| (*id, Some((*handle, text.as_str())))));
        }
    }

    /// Drops an item; the lexical index follows as for [`Self::upsert`].
    pub(crate) fn delete(&self, id: &str) {
        self.delete_all(&[id]);
    }

    /// Drops items, with one lexical commit for all of them (a replica
    /// applying other replicas' deletes).
    pub(crate) fn delete_all(&self, ids: &[&str]) {
        let mut removed: Vec<&str> = Vec::new();
        {
            let mut inner = self.write();
            for &id in ids {
                let Some(slot) = inner.by_id.remove(id) else { continue };
                let handle = id_handle(id);
                if inner.by_handle.get(&handle) == Some(&slot) {
                    inner.by_handle.remove(&handle);
                }
                if inner.slots[slot].take().is_some_and(|s| s.embedded) {
                    inner.embedded -= 1;
                }
                if let Some(ann) = &mut inner.ann {
                    ann.remove(slot);
                }
                inner.free.push(slot);
                removed.push(id);
            }
        }
        if !removed.is_empty() {
            self.apply_lexical(removed.into_iter().map(|id| (id, None)));
        }
    }

    /// Sets an item's embedding if its text is still `text`.
    pub(crate) fn set_vector(&self, id: &str, text: &str, vector: &[f32]) {
        let mut inner = self.write();
        let Some(&slot) = inner.by_id.get(id) else { return };
        if vector.len() == self.dim && inner.slots[slot].as_ref().is_some_and(|s| s.item.text == text) {
            inner.set_vector(slot, vector);
        }
        inner.warn_if_scan_too_large(self.options.exact_scan_max);
    }

    /// Sets many items' embeddings under one write lock (each only if the
    /// item's text is still the one embedded).
    pub(crate) fn set_vectors(&self, embedded: &[(PendingItem, Vec<f32>)]) {
        let mut inner = self.write();
        for (item, vector) in embedded {
            let Some(&slot) = inner.by_id.get(&item.id) else { continue };
            if vector.len() == self.dim && inner.slots[slot].as_ref().is_some_and(|s| s.item.text == item.text) {
                inner.set_vector(slot, vector);
            }
        }
        inner.warn_if_scan_too_large(self.options.exact_scan_max);
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
    fn put(&mut self, item: CatalogItem) -> usize {
        if let Some(&slot) = self.by_id.get(&item.id) {
            let existing = self.slots[slot].as_mut().expect("indexed slots are live");
            if existing.item.text != item.text && existing.embedded {
                existing.embedded = false;
                self.embedded -= 1;
                if let Some(ann) = &mut self.ann {
                    ann.remove(slot);
                }
            }
            existing.item = item;
            return slot;
        }
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.slots.push(None);
                self.vectors.resize(self.slots.len());
                self.slots.len() - 1
            }
        };
        self.by_id.insert(item.id.clone(), slot);
        match self.by_handle.entry(id_handle(&item.id)) {
            std::collections::hash_map::Entry::Vacant(entry) => {
                entry.insert(slot);
            }
            // Two ids with one 64-bit hash (about one catalog in 10^7 at a
            // million items): the second is left out of the lexical index
            // (found by embedding only), also after the first is deleted,
            // until a restart.
            std::collections::hash_map::Entry::Occupied(_) => {
                tracing::warn!(id = %item.id, "another item's id has this id's lexical handle: it is found by embedding only")
            }
        }
        self.slots[slot] = Some(Slot { item, embedded: false });
        slot
    }

    fn set_vector(&mut self, slot: usize, vector: &[f32]) {
        self.vectors.set(slot, vector);
        if let Some(ann) = &mut self.ann {
            let list = ann.nearest_list(&self.vectors.get(slot).to_vec());
            ann.insert(slot, list);
        }
        let entry = self.slots[slot].as_mut().expect("live slot");
        if !entry.embedded {
            entry.embedded = true;
            self.embedded += 1;
        }
    }
}

impl Inner {
    /// What the lexical index holds of each item: id, handle and text (an
    /// item whose handle another holds is left out, see [`Inner::put`]).
    fn lexical_items(&self) -> impl Iterator<Item = (&str, u64, Cow<'_, str>)> + Clone {
        self.slots.iter().enumerate().filter_map(|(slot, s)| {
            let item = &s.as_ref()?.item;
            let handle = id_handle(&item.id);
            (self.by_handle.get(&handle) == Some(&slot)).then(|| (item.id.as_str(), handle, lexical_text(item)))
        })
    }

    /// Embedded slots and their ids and vectors.
    fn embedded(&self) -> impl Iterator<Item = (usize, &str, ItemVector<'_>)> {
        self.slots.iter().enumerate().filter_map(|(slot, s)| {
            s.as_ref().filter(|s| s.embedded).map(|s| (slot, s.item.id.as_str(), self.vectors.get(slot)))
        })
    }

    /// The inverted file over every embedded slot (start-up): the lists
    /// saved in `options.ann_file` where an item's id and vector match its
    /// entry there, the nearest centroid's list for the others; trained
    /// afresh without a usable file. Writes the file back when any item
    /// had to be assigned.
    fn build_ann(&mut self, options: &IndexOptions) {
        let started = std::time::Instant::now();
        let saved = options.ann_file.as_deref().and_then(|path| {
            AnnIndex::load(path, &options.encoder_key, options.dim, options.ann_probe)
                .inspect_err(|error| tracing::warn!(%error, path = %path.display(), "the saved inverted file is unusable: training again"))
                .ok()
                .flatten()
        });
        let (mut ann, cells, trained) = match saved {
            Some(Saved { index, cells }) => (index, cells, false),
            None => {
                let vectors: Vec<ItemVector<'_>> = self.embedded().map(|(_, _, v)| v).collect();
                let index = AnnIndex::train(options.dim, lists_for(vectors.len()), options.ann_probe, &vectors, 1);
                (index, HashMap::new(), true)
            }
        };
        let assigned: Vec<(usize, u32, bool)> = self
            .embedded()
            .collect::<Vec<_>>()
            .into_par_iter()
            .map(|(slot, id, vector)| match cells.get(&entry_key(id, vector)) {
                Some(&list) => (slot, list, true),
                None => (slot, ann.nearest_list(&vector.to_vec()), false),
            })
            .collect();
        let reused = assigned.iter().filter(|(_, _, reused)| *reused).count();
        for &(slot, list, _) in &assigned {
            ann.insert(slot, list);
        }
        tracing::info!(
            items = assigned.len(),
            lists = ann.lists(),
            trained,
            from_file = reused,
            assigned = assigned.len() - reused,
            secs = started.elapsed().as_secs_f64(),
            "inverted file ready"
        );
        self.ann_start =
            Some(AnnStart { trained, from_file: reused, assigned: assigned.len() - reused, lists: ann.lists() });
        self.ann = Some(ann);
        if let Some(path) = options.ann_file.as_deref().filter(|_| reused < assigned.len()) {
            match self.save_ann(path, &options.encoder_key) {
                Ok(items) => tracing::info!(items, path = %path.display(), "inverted file saved"),
                Err(error) => tracing::warn!(%error, path = %path.display(), "saving the inverted file failed"),
            }
        }
    }

    fn save_ann(&self, path: &std::path::Path, encoder_key: &str) -> Result<usize, AnnFileError> {
        match &self.ann {
            Some(ann) => ann.save(path, encoder_key, self.embedded()),
            None => Ok(0),
        }
    }

    /// The inverted file is built at start-up only: a catalog that grows past the
    /// bound while running keeps the exact scan (correct, slower) until a
    /// restart, and says so once per thousand items.
    fn warn_if_scan_too_large(&self, exact_scan_max: usize) {
        if self.ann.is_none() && self.embedded > exact_scan_max && self.embedded.is_multiple_of(1000) {
            tracing::warn!(
                embedded = self.embedded,
                exact_scan_max,
                "the catalog outgrew catalog.exact_scan_max: retrieval scans it exactly until a restart builds the inverted file"
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

    /// The item and its embedding (if computed; int8, see [`ItemVector::to_vec`]).
    pub(crate) fn get(&self, id: &str) -> Option<(&CatalogItem, Option<ItemVector<'_>>)> {
        let slot = *self.inner.by_id.get(id)?;
        let entry = self.inner.slots[slot].as_ref()?;
        let vector = entry.embedded.then(|| self.inner.vectors.get(slot));
        Some((&entry.item, vector))
    }

    /// The lexical index's statistics at this moment (`None` without one).
    pub fn lexical_stats(&self) -> Option<IndexStats> {
        self.lexical.map(LexicalIndex::stats)
    }

    /// Up to `k` embedded items the filter allows with the highest BM25 for
    /// `query`, best first. The index is searched for a few times `k` when
    /// the filter narrows more than availability does (a strict filter may
    /// still return fewer), else for a quarter more than `k` (items not yet
    /// embedded or unavailable): a deeper search costs every request.
    pub fn lexical_nearest(&self, query: &LexicalQuery, k: usize, filter: &ItemFilter) -> Vec<(&CatalogItem, f32)> {
        let Some(lexical) = self.lexical else { return Vec::new() };
        let depth = if filter.narrows() { k.saturating_mul(4) } else { k.saturating_add(k / 4) };
        let hits = match lexical.search(query, depth) {
            Ok(hits) => hits,
            Err(error) => {
                tracing::warn!(%error, "lexical search failed: this request retrieves by embedding alone");
                return Vec::new();
            }
        };
        hits.into_iter()
            .filter_map(|(handle, score)| {
                let slot = *self.inner.by_handle.get(&handle)?;
                let entry = self.inner.slots[slot].as_ref()?;
                let allowed = entry.embedded && filter.allows_item(&entry.item);
                allowed.then_some((&entry.item, score))
            })
            .take(k)
            .collect()
    }

    /// The `k` embedded items the filter allows with the highest cosine to
    /// `query` (against their int8 vectors), best first (ties: lower slot
    /// first). An exact scan, or the inverted file's lists nearest `query`.
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
            keep_best(&mut heap, k, self.inner.vectors.get(slot).dot(query), slot);
        }
        let mut best = heap.into_vec();
        best.sort();
        best.into_iter()
            .map(|Scored(score, slot)| (self.inner.slots[slot].as_ref().expect("live").item.id.as_str(), score))
            .collect()
    }
}

impl IndexView<'_> {
    /// `nearest` through the inverted file: the allowed embedded slots of
    /// the lists nearest `query` (a list holds only embedded slots), scored
    /// as the exact scan scores them.
    fn nearest_approximate(&self, ann: &AnnIndex, query: &[f32], k: usize, filter: &ItemFilter) -> Vec<(&str, f32)> {
        let inner = &self.inner;
        let score = |slot: usize| inner.vectors.get(slot).dot(query);
        let allowed = |slot: usize| {
            inner.slots.get(slot).and_then(Option::as_ref).is_some_and(|s| s.embedded && filter.allows_item(&s.item))
        };
        ann.search(query, k, &score, &allowed)
            .into_iter()
            .map(|(slot, score)| (inner.slots[slot].as_ref().expect("live").item.id.as_str(), score))
            .collect()
    }
}

#[cfg(test)]
#[path = "index_tests.rs"]
mod tests;
