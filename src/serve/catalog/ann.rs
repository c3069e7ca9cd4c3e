//! Approximate nearest neighbours for large catalogs: an HNSW graph
//! (Malkov & Yashunin, 2016; the `hnsw_rs` crate) over the catalog's item
//! embeddings, used by retrieval above `catalog.exact_scan_max` embedded
//! items, where an exact scan would cost a request tens of milliseconds.
//!
//! The graph cannot delete or move a point, so every vector gets a fresh
//! node id when it is set, and the index keeps which node is each slot's
//! current one: a search skips nodes that are no longer current (a deleted
//! item, an old text), and returns slots with the exact cosine recomputed
//! by the caller. Stale nodes stay in the graph until the next restart
//! rebuilds it from the store.

use hnsw_rs::anndists::dist::Distance;
use hnsw_rs::prelude::{FilterT, Hnsw};

use crate::model::encoder::cosine;

/// Links per node per layer (the paper's M).
const LINKS: usize = 16;
/// Candidates explored when inserting (efConstruction).
const EF_CONSTRUCTION: usize = 100;
/// Layers at most.
const MAX_LAYERS: usize = 16;
/// Candidates explored per search, at least (efSearch; raised to 2·k).
const EF_SEARCH: usize = 128;

/// `1 − cosine`, never negative: the embeddings are unit vectors, and
/// rounding must not make an exact match's distance below zero.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CosineDistance;

impl Distance<f32> for CosineDistance {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        (1.0 - cosine(a, b)).max(0.0)
    }
}

pub(crate) struct AnnIndex {
    graph: Hnsw<'static, f32, CosineDistance>,
    /// Node id → the slot it was inserted for.
    node_slot: Vec<u32>,
}

impl AnnIndex {
    /// A graph over `vectors` (slot, vector), inserted in parallel.
    pub(crate) fn build(expected: usize, vectors: &[(usize, &[f32])]) -> Self {
        let mut graph = Hnsw::new(LINKS, expected.max(1), MAX_LAYERS, EF_CONSTRUCTION, CosineDistance);
        let data: Vec<(&[f32], usize)> = vectors.iter().enumerate().map(|(node, &(_, v))| (v, node)).collect();
        graph.parallel_insert_slice(&data);
        graph.set_searching_mode(true);
        Self { graph, node_slot: vectors.iter().map(|&(slot, _)| slot as u32).collect() }
    }

    /// Inserts `vector` for `slot`; returns its node id.
    pub(crate) fn insert(&mut self, slot: usize, vector: &[f32]) -> usize {
        let node = self.node_slot.len();
        self.graph.set_searching_mode(false);
        self.graph.insert_slice((vector, node));
        self.graph.set_searching_mode(true);
        self.node_slot.push(slot as u32);
        node
    }

    /// Nodes in the graph, current or stale (the tests count them).
    #[cfg(test)]
    pub(crate) fn nodes(&self) -> usize {
        self.node_slot.len()
    }

    /// Up to `k` slots near `query` whose node `current` accepts, nearest first.
    pub(crate) fn search(&self, query: &[f32], k: usize, current: &dyn Fn(usize, usize) -> bool) -> Vec<usize> {
        struct Current<'a> {
            node_slot: &'a [u32],
            current: &'a dyn Fn(usize, usize) -> bool,
        }
        impl FilterT for Current<'_> {
            fn hnsw_filter(&self, node: &usize) -> bool {
                self.node_slot.get(*node).is_some_and(|&slot| (self.current)(slot as usize, *node))
            }
        }
        let filter = Current { node_slot: &self.node_slot, current };
        self.graph
            .search_filter(query, k, EF_SEARCH.max(2 * k), Some(&filter))
            .into_iter()
            .map(|neighbour| self.node_slot[neighbour.d_id] as usize)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(slots: &[usize]) -> Vec<usize> {
        let mut slots = slots.to_vec();
        slots.sort_unstable();
        slots
    }

    fn unit(angle: f32) -> Vec<f32> {
        vec![angle.cos(), angle.sin()]
    }

    #[test]
    fn finds_the_nearest_current_nodes_and_skips_stale_ones() {
        let vectors: Vec<Vec<f32>> = (0..200).map(|i| unit(i as f32 * 0.01)).collect();
        let refs: Vec<(usize, &[f32])> = vectors.iter().enumerate().map(|(slot, v)| (slot, &v[..])).collect();
        let mut ann = AnnIndex::build(200, &refs);
        let all = |_: usize, _: usize| true;
        let found = ann.search(&unit(0.5), 3, &all);
        assert_eq!(found[0], 50);
        assert_eq!(sorted(&found[1..]), [49, 51]);
        // Slot 50 moves far away: its old node is stale, its new one current.
        let moved = ann.insert(50, &unit(3.0));
        let current = move |slot: usize, node: usize| slot != 50 || node == moved;
        assert_eq!(sorted(&ann.search(&unit(0.5), 2, &current)), [49, 51]);
        assert_eq!(ann.search(&unit(3.0), 1, &current), [50]);
        assert_eq!(ann.nodes(), 201);
        assert_eq!(CosineDistance.eval(&unit(0.2), &unit(0.2)), 0.0, "an exact match is at distance 0, never below");
    }
}
