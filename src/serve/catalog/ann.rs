//! Approximate nearest neighbours for large catalogs: an inverted file
//! (IVF) over the catalog's int8 item vectors ([`super::vectors`]), used by
//! retrieval above `catalog.exact_scan_max` embedded items.
//!
//! Spherical k-means splits the embedding space into `lists` cells (about
//! √items: 1,024 at a million); every embedded slot sits in the list of its
//! nearest centroid. A search scores the centroids, then scans the slots of
//! the `catalog.ann_probe` nearest cells (more while fewer than `k` passed
//! the filter), with the same int8 score as the exact scan. At a million
//! items and 64 of 1,024 cells that is about 6% of the catalog per request.
//!
//! Why not a graph: `hnsw_rs` (used before) keeps each edge as an
//! `Arc`-counted struct (about 1.3 KB per node at 16 links) and a copy of
//! every `f32` vector, 2.5 GiB at a million items, and builds in minutes.
//! The lists cost 4 bytes per item, follow every write at once (an item
//! moves from one list to another, a deleted one leaves its list: nothing
//! goes stale, so nothing waits for a restart to be cleaned up), and are
//! persisted beside the store ([`AnnIndex::save`]): a restart reads the
//! centroids and each item's cell instead of clustering again.
//!
//! The file is keyed per item: each entry is a hash of the item's id and
//! int8 codes, and its cell. An item whose id or vector changed since the
//! file was written finds no entry and is assigned afresh (one pass over
//! the centroids, tens of microseconds), so a file that is behind the store
//! costs only the items that differ; a file of another encoder or
//! dimension is ignored and the index is trained again.

use std::collections::{BinaryHeap, HashMap};
use std::io::Write;
use std::path::Path;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rayon::prelude::*;
use xxhash_rust::xxh3::Xxh3;

use super::vectors::ItemVector;
use crate::model::encoder::cosine;

/// k-means rounds when training.
const ROUNDS: usize = 10;
/// Training points per list (a sample of the catalog).
const SAMPLE_PER_LIST: usize = 32;
/// A slot in no list.
const NONE: u32 = u32::MAX;
const MAGIC: &[u8; 8] = b"SRIVF\x01\0\0";

pub(crate) struct AnnIndex {
    dim: usize,
    /// `lists × dim`, unit vectors.
    centroids: Vec<f32>,
    lists: Vec<Vec<u32>>,
    /// Each slot's list (`NONE`: none).
    slot_list: Vec<u32>,
    /// Lists scanned per search, at least.
    probe: usize,
}

/// What a saved file gave: the centroids, and each saved item's cell by
/// the hash of its id and codes.
pub(crate) struct Saved {
    pub index: AnnIndex,
    pub cells: HashMap<u64, u32>,
}

/// The key an item's cell is saved under: its id and int8 codes.
pub(crate) fn entry_key(id: &str, vector: ItemVector<'_>) -> u64 {
    let mut hasher = Xxh3::new();
    hasher.update(id.as_bytes());
    hasher.update(&[0xff]);
    let codes = vector.codes();
    // SAFETY: i8 and u8 have the same size and alignment.
    hasher.update(unsafe { std::slice::from_raw_parts(codes.as_ptr().cast::<u8>(), codes.len()) });
    hasher.digest()
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum AnnFileError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("not an index file of this version")]
    Format,
}

/// Lists for a catalog of `items` embedded items: about √items, at least 1.
pub(crate) fn lists_for(items: usize) -> usize {
    ((items as f64).sqrt().round() as usize).clamp(1, 65_536)
}

impl AnnIndex {
    /// Trains `lists` centroids by spherical k-means on a sample of `vectors`
    /// (deterministic for a seed), with every list empty.
    pub(crate) fn train(dim: usize, lists: usize, probe: usize, vectors: &[ItemVector<'_>], seed: u64) -> Self {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut sample: Vec<ItemVector<'_>> = vectors.to_vec();
        sample.shuffle(&mut rng);
        sample.truncate(lists.max(1) * SAMPLE_PER_LIST);
        let sample: Vec<Vec<f32>> = sample.into_par_iter().map(ItemVector::to_vec).collect();
        if sample.is_empty() {
            return Self::with_centroids(dim, vec![0.0; dim], probe);
        }
        let lists = lists.clamp(1, sample.len());
        let mut centroids: Vec<f32> = sample.iter().take(lists).flatten().copied().collect();
        let mut index = Self::with_centroids(dim, Vec::new(), probe);
        for _ in 0..ROUNDS {
            index.centroids = centroids.clone();
            let nearest: Vec<u32> = sample.par_iter().map(|v| index.nearest_list(v)).collect();
            let mut sums = vec![0f32; lists * dim];
            let mut counts = vec![0usize; lists];
            for (v, &list) in sample.iter().zip(&nearest) {
                counts[list as usize] += 1;
                sums[list as usize * dim..(list as usize + 1) * dim].iter_mut().zip(v).for_each(|(s, x)| *s += x);
            }
            for (list, sum) in sums.chunks_exact_mut(dim).enumerate() {
                if counts[list] == 0 {
                    // An empty cell restarts at a random sample point.
                    let v = &sample[rand::Rng::gen_range(&mut rng, 0..sample.len())];
                    sum.copy_from_slice(v);
                }
                normalise(sum);
            }
            centroids = sums;
        }
        Self::with_centroids(dim, centroids, probe)
    }

    fn with_centroids(dim: usize, centroids: Vec<f32>, probe: usize) -> Self {
        let lists = centroids.len() / dim.max(1);
        Self { dim, centroids, lists: vec![Vec::new(); lists], slot_list: Vec::new(), probe: probe.max(1) }
    }

    /// The list whose centroid is nearest `vector`.
    pub(crate) fn nearest_list(&self, vector: &[f32]) -> u32 {
        let mut best = (f32::NEG_INFINITY, 0u32);
        for (list, centroid) in self.centroids.chunks_exact(self.dim).enumerate() {
            let score = cosine(vector, centroid);
            if score > best.0 {
                best = (score, list as u32);
            }
        }
        best.1
    }

    /// Lists held.
    pub(crate) fn lists(&self) -> usize {
        self.lists.len()
    }

    /// Puts `slot` in `list` (out of any other first).
    pub(crate) fn insert(&mut self, slot: usize, list: u32) {
        self.remove(slot);
        if self.slot_list.len() <= slot {
            self.slot_list.resize(slot + 1, NONE);
        }
        self.slot_list[slot] = list;
        self.lists[list as usize].push(slot as u32);
    }

    /// Takes `slot` out of its list, if it is in one.
    pub(crate) fn remove(&mut self, slot: usize) {
        let Some(list) = self.slot_list.get(slot).copied().filter(|&l| l != NONE) else { return };
        let members = &mut self.lists[list as usize];
        if let Some(at) = members.iter().position(|&s| s as usize == slot) {
            members.swap_remove(at);
        }
        self.slot_list[slot] = NONE;
    }

    /// Slots in a list (the tests count them).
    #[cfg(test)]
    pub(crate) fn members(&self) -> usize {
        self.lists.iter().map(Vec::len).sum()
    }

    /// Bytes held (centroids, lists, the slot → list map).
    pub(crate) fn bytes(&self) -> usize {
        4 * (self.centroids.capacity()
            + self.slot_list.capacity()
            + self.lists.iter().map(Vec::capacity).sum::<usize>())
            + 24 * self.lists.capacity()
    }

    /// Up to `k` slots that `allowed` accepts with the highest `score`,
    /// best first (ties: lower slot first), from the lists nearest `query`:
    /// at least `probe` of them, and more until `k` slots were found or
    /// every list was scanned. A slot is scored first and asked about only
    /// if it would be kept: the scan reads the slots' vectors in list
    /// order, and the items themselves only for the few that score well.
    pub(crate) fn search(
        &self,
        query: &[f32],
        k: usize,
        score: &dyn Fn(usize) -> f32,
        allowed: &dyn Fn(usize) -> bool,
    ) -> Vec<(usize, f32)> {
        let mut order: Vec<(f32, u32)> = self
            .centroids
            .chunks_exact(self.dim)
            .enumerate()
            .map(|(list, centroid)| (cosine(query, centroid), list as u32))
            .collect();
        let first = self.probe.min(order.len());
        if first > 0 && first < order.len() {
            order.select_nth_unstable_by(first - 1, |a, b| b.0.total_cmp(&a.0));
        }
        let (probed, rest) = order.split_at_mut(first);
        let mut heap: BinaryHeap<super::index::Scored> = BinaryHeap::with_capacity(k + 1);
        let scan = |list: u32, heap: &mut BinaryHeap<super::index::Scored>| {
            for &slot in &self.lists[list as usize] {
                let slot = slot as usize;
                let s = score(slot);
                let kept = heap.len() < k || heap.peek().is_some_and(|worst| s > worst.0);
                if kept && allowed(slot) {
                    super::index::keep_best(heap, k, s, slot);
                }
            }
        };
        for &(_, list) in probed.iter() {
            scan(list, &mut heap);
        }
        if heap.len() < k {
            // Too few passed the filter: the other lists, nearest first.
            rest.sort_by(|a, b| b.0.total_cmp(&a.0));
            for &(_, list) in rest.iter() {
                if heap.len() >= k {
                    break;
                }
                scan(list, &mut heap);
            }
        }
        let mut best = heap.into_vec();
        best.sort();
        best.into_iter().map(|s| (s.1, s.0)).collect()
    }

    /// Writes the centroids and each item's cell (`items`: id and vector per
    /// slot) to `path`, through a temporary file renamed into place.
    pub(crate) fn save<'a>(
        &self,
        path: &Path,
        encoder: &str,
        items: impl Iterator<Item = (usize, &'a str, ItemVector<'a>)>,
    ) -> Result<usize, AnnFileError> {
        let mut entries: Vec<u8> = Vec::new();
        let mut count = 0u64;
        for (slot, id, vector) in items {
            let Some(list) = self.slot_list.get(slot).copied().filter(|&l| l != NONE) else { continue };
            entries.extend_from_slice(&entry_key(id, vector).to_le_bytes());
            entries.extend_from_slice(&list.to_le_bytes());
            count += 1;
        }
        let tmp = path.with_extension("tmp");
        {
            let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
            out.write_all(MAGIC)?;
            for n in [self.dim as u32, self.lists.len() as u32, encoder.len() as u32] {
                out.write_all(&n.to_le_bytes())?;
            }
            out.write_all(encoder.as_bytes())?;
            out.write_all(&count.to_le_bytes())?;
            for x in &self.centroids {
                out.write_all(&x.to_le_bytes())?;
            }
            out.write_all(&entries)?;
            out.into_inner().map_err(std::io::IntoInnerError::into_error)?.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        Ok(count as usize)
    }

    /// Reads a file [`save`](Self::save) wrote; `Ok(None)` if there is none,
    /// or it is for another encoder or dimension.
    pub(crate) fn load(path: &Path, encoder: &str, dim: usize, probe: usize) -> Result<Option<Saved>, AnnFileError> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut at = 0;
        let mut take = |n: usize| -> Result<&[u8], AnnFileError> {
            let part = bytes.get(at..at + n).ok_or(AnnFileError::Format)?;
            at += n;
            Ok(part)
        };
        if take(8)? != MAGIC {
            return Err(AnnFileError::Format);
        }
        let mut u32_at = || -> Result<u32, AnnFileError> { Ok(u32::from_le_bytes(take(4)?.try_into().expect("4"))) };
        let (file_dim, lists, key_len) = (u32_at()? as usize, u32_at()? as usize, u32_at()? as usize);
        let key = take(key_len)?;
        if file_dim != dim || key != encoder.as_bytes() || lists == 0 {
            return Ok(None);
        }
        let count = u64::from_le_bytes(take(8)?.try_into().expect("8")) as usize;
        let centroids: Vec<f32> =
            take(lists * dim * 4)?.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4"))).collect();
        let entries = take(count.checked_mul(12).ok_or(AnnFileError::Format)?)?;
        let mut cells = HashMap::with_capacity(count);
        for entry in entries.chunks_exact(12) {
            let list = u32::from_le_bytes(entry[8..].try_into().expect("4"));
            if (list as usize) < lists {
                cells.insert(u64::from_le_bytes(entry[..8].try_into().expect("8")), list);
            }
        }
        Ok(Some(Saved { index: Self::with_centroids(dim, centroids, probe), cells }))
    }
}

fn normalise(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::catalog::vectors::Quantized;

    fn unit(angle: f32) -> Vec<f32> {
        vec![angle.cos(), angle.sin()]
    }

    fn store(angles: &[f32]) -> Quantized {
        let mut q = Quantized::new(2);
        q.resize(angles.len());
        for (slot, &a) in angles.iter().enumerate() {
            q.set(slot, &unit(a));
        }
        q
    }

    #[test]
    fn finds_the_nearest_slots_follows_moves_and_leaves_nothing_stale() {
        let angles: Vec<f32> = (0..400).map(|i| i as f32 * 0.015).collect();
        let q = store(&angles);
        let vectors: Vec<ItemVector<'_>> = (0..400).map(|s| q.get(s)).collect();
        let mut ann = AnnIndex::train(2, 20, 2, &vectors, 1);
        assert_eq!(ann.lists(), 20);
        for (slot, v) in vectors.iter().enumerate() {
            ann.insert(slot, ann.nearest_list(&v.to_vec()));
        }
        let score = |slot: usize| q.get(slot).dot(&unit(3.0));
        let all = |_: usize| true;
        let found: Vec<usize> = ann.search(&unit(3.0), 3, &score, &all).into_iter().map(|(s, _)| s).collect();
        assert_eq!(found[0], 200);
        // Slot 200 leaves (a delete): it is in no list, and the others stay.
        ann.remove(200);
        assert_eq!(ann.members(), 399);
        let found: Vec<usize> = ann.search(&unit(3.0), 2, &score, &all).into_iter().map(|(s, _)| s).collect();
        assert!(!found.contains(&200) && found.len() == 2, "{found:?}");
        // Moving a slot is a remove and an insert: still one membership.
        ann.insert(5, ann.nearest_list(&unit(3.0)));
        ann.insert(5, ann.nearest_list(&unit(4.0)));
        assert_eq!(ann.members(), 399);
        // A filter passing only far slots: more lists are scanned until k are found.
        let far = |slot: usize| slot < 10;
        let found: Vec<usize> = ann.search(&unit(3.0), 3, &score, &far).into_iter().map(|(s, _)| s).collect();
        assert_eq!(found, [9, 8, 7]);
    }

    #[test]
    fn a_saved_index_reloads_its_cells_by_id_and_vector_and_refuses_another_encoder() {
        let angles: Vec<f32> = (0..100).map(|i| i as f32 * 0.06).collect();
        let q = store(&angles);
        let vectors: Vec<ItemVector<'_>> = (0..100).map(|s| q.get(s)).collect();
        let mut ann = AnnIndex::train(2, 10, 2, &vectors, 1);
        for (slot, v) in vectors.iter().enumerate() {
            ann.insert(slot, ann.nearest_list(&v.to_vec()));
        }
        let dir = std::env::temp_dir().join(format!("shoprank-ivf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("catalog.ivf");
        let ids: Vec<String> = (0..100).map(|i| format!("i{i}")).collect();
        let saved = ann.save(&path, "enc", ids.iter().enumerate().map(|(s, id)| (s, id.as_str(), q.get(s)))).unwrap();
        assert_eq!(saved, 100);
        let Saved { index, cells } = AnnIndex::load(&path, "enc", 2, 2).unwrap().unwrap();
        assert_eq!(index.centroids, ann.centroids);
        assert_eq!(cells.len(), 100);
        assert_eq!(cells[&entry_key("i7", q.get(7))], ann.slot_list[7]);
        assert!(!cells.contains_key(&entry_key("i7", q.get(8))), "another vector, no entry");
        assert!(AnnIndex::load(&path, "other", 2, 2).unwrap().is_none());
        assert!(AnnIndex::load(&path, "enc", 3, 2).unwrap().is_none());
        assert!(AnnIndex::load(&dir.join("missing"), "enc", 2, 2).unwrap().is_none());
        std::fs::write(&path, b"junk").unwrap();
        assert!(AnnIndex::load(&path, "enc", 2, 2).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
