//! The activations' side of the int8 product: rows quantised per call to
//! asymmetric `u8`, one scale and zero point per row (per token), padded
//! for the kernel, in a per-thread buffer kept between calls; and rows
//! quantised once for several products ([`QuantisedInputs`], the head's
//! path).

use std::borrow::Cow;
use std::cell::Cell;

use rayon::prelude::*;

use super::pack::MAX_IN_DIM;
use super::Kernel;
use crate::model::encoder::kernels::vectorised;

/// Quantised rows kept per thread between calls up to this size (a user
/// text's widest layer needs 200 KiB); a larger buffer (a long batch) is
/// freed after its call, so the memory kept stays small on many cores.
const KEEP_SCRATCH_BYTES: usize = 1 << 20;

thread_local! {
    static SCRATCH: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// Runs `f` with this thread's buffer for quantised rows. The buffer is
/// taken out while in use, so a nested call on the same thread (rayon may
/// run another task while it waits) gets a fresh one rather than a clash.
pub(super) fn with_scratch<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    let mut scratch = SCRATCH.take();
    let result = f(&mut scratch);
    if scratch.capacity() <= KEEP_SCRATCH_BYTES {
        SCRATCH.set(scratch);
    }
    result
}

/// What quantised rows must look like for a set of packed weights: their
/// width, padded for the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RowLayout {
    pub(super) kernel: Kernel,
    pub(super) in_dim: usize,
    pub(super) padded_in: usize,
}

/// Rows of activations quantised to `u8`, each with its scale and zero point,
/// padded with zeros to whole groups (padded weights are zero too) and, for
/// AMX, with zero rows to whole blocks.
pub(super) struct QuantisedRows<'a> {
    pub(super) data: &'a [u8],
    pub(super) padded_in: usize,
    pub(super) scales: Cow<'a, [f32]>,
    pub(super) zero_points: Cow<'a, [i32]>,
}

impl<'a> QuantisedRows<'a> {
    /// Quantises `rows` rows of `xs` for `layout` into `scratch`;
    /// `parallel` shares the rows out over rayon's pool.
    pub(super) fn new(xs: &[f32], rows: usize, layout: RowLayout, scratch: &'a mut Vec<u8>, parallel: bool) -> Self {
        let RowLayout { kernel, in_dim, padded_in } = layout;
        let padded_rows = rows.next_multiple_of(kernel.row_multiple());
        // Every byte is written below: by a row, or as padding.
        scratch.resize(padded_rows * padded_in, 0);
        let data = &mut scratch[..padded_rows * padded_in];
        let (filled, padding) = data.split_at_mut(rows * padded_in);
        padding.fill(0);
        let quantise = |(row, out): (&[f32], &mut [u8])| {
            let (values, tail) = out.split_at_mut(in_dim);
            tail.fill(0);
            quantise_row(row, values)
        };
        let (scales, zero_points): (Vec<f32>, Vec<i32>) = if parallel {
            xs.par_chunks_exact(in_dim)
                .zip(filled.par_chunks_exact_mut(padded_in))
                .with_min_len(8)
                .map(quantise)
                .unzip()
        } else {
            xs.chunks_exact(in_dim).zip(filled.chunks_exact_mut(padded_in)).map(quantise).unzip()
        };
        Self { data, padded_in, scales: Cow::Owned(scales), zero_points: Cow::Owned(zero_points) }
    }

    pub(super) fn row(&self, row: usize) -> &[u8] {
        &self.data[row * self.padded_in..(row + 1) * self.padded_in]
    }
}

/// Rows quantised once, to be multiplied by several weight matrices of the
/// same input width and kernel: the head multiplies the same candidates by
/// each block of its first layer.
pub(crate) struct QuantisedInputs {
    pub(super) layout: RowLayout,
    pub(super) rows: usize,
    data: Vec<u8>,
    scales: Vec<f32>,
    zero_points: Vec<i32>,
}

impl QuantisedInputs {
    /// Quantises `xs` (rows of `in_dim`) for weights of that width packed
    /// for `kernel`, on this thread.
    pub(crate) fn new(xs: &[f32], in_dim: usize, kernel: Kernel) -> Self {
        assert!((1..=MAX_IN_DIM).contains(&in_dim), "int8 products take 1 to {MAX_IN_DIM} inputs, not {in_dim}");
        assert!(xs.len().is_multiple_of(in_dim), "whole rows of {in_dim}");
        let layout = RowLayout { kernel, in_dim, padded_in: in_dim.next_multiple_of(kernel.input_multiple()) };
        let rows = xs.len() / in_dim;
        let mut data = Vec::new();
        let QuantisedRows { scales, zero_points, .. } = QuantisedRows::new(xs, rows, layout, &mut data, false);
        let (scales, zero_points) = (scales.into_owned(), zero_points.into_owned());
        Self { layout, rows, data, scales, zero_points }
    }

    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    pub(super) fn view(&self) -> QuantisedRows<'_> {
        QuantisedRows {
            data: &self.data,
            padded_in: self.layout.padded_in,
            scales: Cow::Borrowed(&self.scales),
            zero_points: Cow::Borrowed(&self.zero_points),
        }
    }
}

vectorised! {
    /// Quantises one row to `u8` (the compiler vectorises both loops for the CPU
    /// found at run time); returns its scale and zero point. The range always
    /// holds 0, so that 0 (padding, ReLU's zeros) is exact.
    fn quantise_row(row: &[f32], out: &mut [u8]) -> (f32, i32) {
        const LANES: usize = 16;
        let (mut low, mut high) = ([0f32; LANES], [0f32; LANES]);
        let chunks = row.chunks_exact(LANES);
        let tail = chunks.remainder();
        for chunk in chunks {
            for i in 0..LANES {
                low[i] = if chunk[i] < low[i] { chunk[i] } else { low[i] };
                high[i] = if chunk[i] > high[i] { chunk[i] } else { high[i] };
            }
        }
        let low = tail.iter().chain(&low).fold(0f32, |m, &x| if x < m { x } else { m });
        let high = tail.iter().chain(&high).fold(0f32, |m, &x| if x > m { x } else { m });
        let range = (high - low) / 255.0;
        // A constant, tiny (subnormal) or infinite range: any finite scale will do.
        let scale = if range > 0.0 && range.is_finite() && (1.0 / range).is_finite() { range } else { 1.0 };
        let inverse = 1.0 / scale;
        let zero = (-low * inverse).round().clamp(0.0, 255.0);
        // + 0.5 then truncation: round half up. The comparisons clamp to
        // 0..=255 and send NaN to 0, so the unchecked conversion (which, unlike
        // `as`, vectorises) always gets a value in range.
        for (q, &x) in out.iter_mut().zip(row) {
            let v = x * inverse + zero + 0.5;
            let v = if v > 0.0 { v } else { 0.0 };
            let v = if v < 255.0 { v } else { 255.0 };
            // SAFETY: 0 ≤ v ≤ 255, finite.
            *q = unsafe { v.to_int_unchecked::<i32>() } as u8;
        }
        (scale, zero as i32)
    }
}
