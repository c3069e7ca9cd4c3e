//! The catalog's item embeddings, held compactly: each vector as `dim`
//! signed bytes and one `f32` scale (symmetric int8, one scale per vector),
//! 388 bytes for a 384-d embedding instead of 1,536 as `f32`: 370 MiB at a
//! million items rather than 1.4 GiB.
//!
//! A vector `v` is stored as `codes = round(127 · v / max|v|)` and
//! `scale = |v| / |codes|`, so `codes · scale` has exactly `v`'s norm and
//! differs from it in direction by the rounding alone: the cosine between
//! a 384-d unit embedding and its dequantised copy is above 0.9999
//! (measured in the tests, and in `cargo bench --bench catalog`). Queries
//! stay `f32`: a score is `(query · codes) · scale`, the query never
//! rounded, so only the item's rounding counts.

use crate::model::encoder::kernels::vectorised;

/// Every slot's codes (`slots × dim`) and scale; a slot without a vector
/// has zero codes and scale 0.
#[derive(Default)]
pub(crate) struct Quantized {
    dim: usize,
    codes: Vec<i8>,
    scales: Vec<f32>,
}

/// One stored vector, borrowed: its codes and scale.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ItemVector<'a> {
    codes: &'a [i8],
    scale: f32,
}

impl<'a> ItemVector<'a> {
    /// The vector as `f32` (dequantised).
    pub(crate) fn to_vec(self) -> Vec<f32> {
        self.codes.iter().map(|&c| c as f32 * self.scale).collect()
    }

    /// `query · self` (the cosine, for unit vectors).
    pub(crate) fn dot(self, query: &[f32]) -> f32 {
        dot_i8(query, self.codes) * self.scale
    }

    pub(crate) fn codes(self) -> &'a [i8] {
        self.codes
    }
}

impl Quantized {
    pub(crate) fn new(dim: usize) -> Self {
        Self { dim, codes: Vec::new(), scales: Vec::new() }
    }

    /// Makes room for `slots` slots (new ones empty).
    pub(crate) fn resize(&mut self, slots: usize) {
        self.codes.resize(slots * self.dim, 0);
        self.scales.resize(slots, 0.0);
    }

    /// Stores `vector` (of `dim` values) in `slot`.
    pub(crate) fn set(&mut self, slot: usize, vector: &[f32]) {
        let codes = &mut self.codes[slot * self.dim..(slot + 1) * self.dim];
        self.scales[slot] = quantize(vector, codes);
    }

    pub(crate) fn get(&self, slot: usize) -> ItemVector<'_> {
        ItemVector { codes: &self.codes[slot * self.dim..(slot + 1) * self.dim], scale: self.scales[slot] }
    }

    /// Bytes held (codes and scales).
    pub(crate) fn bytes(&self) -> usize {
        self.codes.capacity() + 4 * self.scales.capacity()
    }
}

/// Rounds `vector` into `codes`; returns the scale that gives the
/// dequantised vector `vector`'s norm (0 for a zero vector).
pub(crate) fn quantize(vector: &[f32], codes: &mut [i8]) -> f32 {
    let max = vector.iter().fold(0f32, |m, x| m.max(x.abs()));
    if max == 0.0 || !max.is_finite() {
        codes.fill(0);
        return 0.0;
    }
    let to_code = 127.0 / max;
    let mut code_norm = 0f32;
    let mut norm = 0f32;
    for (c, &x) in codes.iter_mut().zip(vector) {
        let q = (x * to_code).round().clamp(-127.0, 127.0);
        *c = q as i8;
        code_norm += q * q;
        norm += x * x;
    }
    norm.sqrt() / code_norm.sqrt()
}

vectorised! {
    /// `query · codes` with the codes widened to `f32`: sixteen partial sums,
    /// vectorised for the CPU found at run time (the encoder's list of
    /// targets, so the `avx512` feature gates this one too).
    pub(crate) fn dot_i8(query: &[f32], codes: &[i8]) -> f32 {
        const LANES: usize = 16;
        let n = query.len().min(codes.len());
        let (query, codes) = (&query[..n], &codes[..n]);
        let mut lanes = [0f32; LANES];
        let (mut xs, mut cs) = (query.chunks_exact(LANES), codes.chunks_exact(LANES));
        for (x, c) in (&mut xs).zip(&mut cs) {
            for k in 0..LANES {
                lanes[k] += x[k] * c[k] as f32;
            }
        }
        let tail: f32 = xs.remainder().iter().zip(cs.remainder()).map(|(x, &c)| x * c as f32).sum();
        lanes.iter().sum::<f32>() + tail
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::encoder::cosine;
    use rand::{Rng, SeedableRng};

    fn unit(mut v: Vec<f32>) -> Vec<f32> {
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= norm);
        v
    }

    #[test]
    fn a_dequantised_embedding_keeps_its_norm_and_its_direction_within_1e_4() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut store = Quantized::new(384);
        store.resize(200);
        let vectors: Vec<Vec<f32>> =
            (0..200).map(|_| unit((0..384).map(|_| rng.gen_range(-1.0f32..1.0)).collect())).collect();
        for (slot, v) in vectors.iter().enumerate() {
            store.set(slot, v);
        }
        for (slot, v) in vectors.iter().enumerate() {
            let back = store.get(slot).to_vec();
            let norm = back.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
            assert!(cosine(v, &back) >= 0.9999, "cosine {}", cosine(v, &back));
            let query = &vectors[(slot + 1) % 200];
            assert!((store.get(slot).dot(query) - cosine(query, v)).abs() < 2e-3);
        }
        assert_eq!(store.bytes(), 200 * 384 + 200 * 4);
    }

    #[test]
    fn zero_and_unset_vectors_score_zero() {
        let mut store = Quantized::new(3);
        store.resize(2);
        store.set(0, &[0.0, 0.0, 0.0]);
        assert_eq!(store.get(0).dot(&[1.0, 0.0, 0.0]), 0.0);
        assert_eq!(store.get(1).to_vec(), [0.0, 0.0, 0.0]);
    }
}
