//! The int8 matrix product of the encoder's linear layers (`encoder.precision
//! = "int8"`): `out += x·Wᵀ` with `W` quantised once, at load, and `x`
//! quantised per call.
//!
//! - **Weights**: symmetric, one scale per output channel (a row of `W`),
//!   packed once into the layout the kernels read: panels of 16 output
//!   channels, and within a panel, for each group of 4 inputs, the 16
//!   channels' 4 bytes side by side (64 bytes: one AVX-512 register, two
//!   AVX2 ones). This is the layout of ONNX Runtime's MLAS u8×s8 kernels.
//! - **Activations**: asymmetric `u8` with one scale and zero point per row
//!   (per token), so a token with large values does not coarsen the others.
//!   The product then needs one correction per output:
//!   `x·w ≈ sx·sw·(Σ qx·qw − zx·Σ qw)`, with `Σ qw` (the channel's column sum)
//!   computed at pack time.
//! - **Kernels**, chosen at run time: AVX-512 VNNI (`vpdpbusd`: 4 u8×s8
//!   products summed into each i32 lane in one instruction), AVX2, and a
//!   portable one. AVX2's `vpmaddubsw` would add two u8×s8 products into a
//!   saturating i16, which 255·127·2 overflows; ONNX Runtime accepts that or
//!   drops to 7 bits (`reduce_range`), and 7 bits cost too much here (the
//!   lowest cosine to f32 on the reference texts fell to 0.9932 with 7-bit
//!   weights, 0.9900 with 7-bit activations). So the AVX2 kernel reads the
//!   weights widened to i16 (a second packing, made at load for AVX2 only)
//!   and multiplies with `vpmaddwd`, whose i32 pair sums cannot overflow.
//!   Every kernel's integer sums are exact, so all give the portable one's
//!   bits (tested), and replicas on different CPUs store the same vectors.

use rayon::prelude::*;

/// Output channels per panel, and inputs per group.
const PANEL: usize = 16;
const GROUP: usize = 4;
/// Rows a kernel call handles at once (its accumulators stay in registers).
const ROWS: usize = 4;

/// Which instructions the product runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kernel {
    Avx512Vnni,
    Avx2,
    Portable,
}

impl Kernel {
    /// The fastest this CPU has.
    pub(crate) fn detect() -> Self {
        [Kernel::Avx512Vnni, Kernel::Avx2].into_iter().find(|kernel| kernel.is_supported()).unwrap_or(Kernel::Portable)
    }

    /// Whether this CPU can run the kernel.
    fn is_supported(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vnni => {
                is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => is_x86_feature_detected!("avx2"),
            Kernel::Portable => true,
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }
}

/// Largest weight magnitude: 8 bits, symmetric.
const WEIGHT_LIMIT: f32 = 127.0;

/// Most inputs a product may have: its i32 sums stay exact while
/// in_dim·255·127 < 2³¹ (BERT's largest layer has 4,096).
const MAX_IN_DIM: usize = 60_000;

/// `W` (`[out, in]`), quantised per output channel and packed.
pub(crate) struct PackedWeights {
    kernel: Kernel,
    in_dim: usize,
    out_dim: usize,
    /// `in_dim` rounded up to a whole group.
    padded_in: usize,
    /// Panel-major: `padded_in / 4` groups of 64 bytes per panel.
    packed: Vec<i8>,
    /// For the AVX2 kernel only (else empty): the same weights as i16,
    /// panel-major, per pair of inputs the 16 channels' two values (64 bytes).
    wide: Vec<i16>,
    /// Per output channel: the weights' scale, and their quantised sum.
    scales: Vec<f32>,
    sums: Vec<i32>,
}

impl PackedWeights {
    /// Quantises and packs `weight` (`out_dim` rows of `in_dim`) for `kernel`.
    /// Panics if this CPU cannot run `kernel` (the kernels' safety rests on it).
    pub(crate) fn new(weight: &[f32], out_dim: usize, in_dim: usize, kernel: Kernel) -> Self {
        assert!(kernel.is_supported(), "this CPU cannot run the {kernel:?} int8 kernel");
        assert!((1..=MAX_IN_DIM).contains(&in_dim), "int8 products take 1 to {MAX_IN_DIM} inputs, not {in_dim}");
        assert_eq!(weight.len(), out_dim * in_dim, "weight is out_dim × in_dim");
        let padded_in = in_dim.div_ceil(GROUP) * GROUP;
        let panels = out_dim.div_ceil(PANEL);
        let groups = padded_in / GROUP;
        let mut packed = vec![0i8; panels * groups * PANEL * GROUP];
        let mut scales = vec![0f32; out_dim];
        let mut sums = vec![0i32; out_dim];
        let limit = WEIGHT_LIMIT;
        for (n, row) in weight.chunks_exact(in_dim).enumerate() {
            let max = row.iter().fold(0f32, |m, w| m.max(w.abs()));
            let scale = if max > 0.0 { max / limit } else { 1.0 };
            scales[n] = scale;
            let (panel, lane) = (n / PANEL, n % PANEL);
            for (k, w) in row.iter().enumerate() {
                let q = (w / scale).round().clamp(-limit, limit) as i8;
                sums[n] += q as i32;
                packed[(panel * groups + k / GROUP) * PANEL * GROUP + lane * GROUP + k % GROUP] = q;
            }
        }
        let wide = if kernel == Kernel::Avx2 { widen(&packed, panels, groups) } else { Vec::new() };
        Self { kernel, in_dim, out_dim, padded_in, packed, wide, scales, sums }
    }

    /// `out[r] += xs[r]·Wᵀ` for `rows` rows of `in_dim` (`out` rows `out_dim`
    /// wide, pre-filled with bias and residual). Splits the rows over
    /// rayon's pool when there are enough of them to share.
    pub(crate) fn add_product(&self, xs: &[f32], rows: usize, out: &mut [f32]) {
        let (k, n) = (self.in_dim, self.out_dim);
        let xs = &xs[..rows * k];
        let out = &mut out[..rows * n];
        let threads = rayon::current_num_threads();
        // Below a few tiles per thread, splitting costs more than it saves.
        if threads < 2 || rows < 4 * ROWS * threads {
            self.add_rows(xs, out, &mut Vec::new());
            return;
        }
        let chunk = rows.div_ceil(threads).div_ceil(ROWS) * ROWS;
        xs.par_chunks(chunk * k)
            .zip(out.par_chunks_mut(chunk * n))
            .for_each_init(Vec::new, |scratch, (xs, out)| self.add_rows(xs, out, scratch));
    }

    /// One thread's rows: quantise them into `scratch`, then run the kernel.
    fn add_rows(&self, xs: &[f32], out: &mut [f32], scratch: &mut Vec<u8>) {
        let rows = xs.len() / self.in_dim;
        let quantised = QuantisedRows::new(xs, rows, self.in_dim, self.padded_in, scratch);
        for first in (0..rows).step_by(ROWS) {
            let count = ROWS.min(rows - first);
            let out = &mut out[first * self.out_dim..(first + count) * self.out_dim];
            match self.kernel {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `new` asserted that the CPU has the kernel's instructions.
                Kernel::Avx512Vnni => unsafe { x86::tile_avx512vnni(self, &quantised, first, count, out) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: as above.
                Kernel::Avx2 => unsafe { x86::tile_avx2(self, &quantised, first, count, out) },
                _ => tile_portable(self, &quantised, first, count, out),
            }
        }
    }

    /// The 64 packed bytes of group `group` in panel `panel`.
    fn block(&self, panel: usize, group: usize) -> &[i8] {
        let start = (panel * (self.padded_in / GROUP) + group) * PANEL * GROUP;
        &self.packed[start..start + PANEL * GROUP]
    }

    /// Adds one output's dequantised integer sum: the epilogue every kernel
    /// shares, so that they agree to the bit.
    #[inline(always)]
    fn finish(&self, quantised: &QuantisedRows, row: usize, column: usize, sum: i32, out: &mut f32) {
        let exact = sum - quantised.zero_points[row] * self.sums[column];
        *out += exact as f32 * (quantised.scales[row] * self.scales[column]);
    }
}

/// The packed weights as i16 for the AVX2 kernel: per panel and pair of
/// inputs, channel `c`'s two values at `2c` and `2c + 1`.
fn widen(packed: &[i8], panels: usize, groups: usize) -> Vec<i16> {
    let mut wide = vec![0i16; packed.len()];
    for panel in 0..panels {
        for group in 0..groups {
            let block = &packed[(panel * groups + group) * PANEL * GROUP..][..PANEL * GROUP];
            for half in 0..GROUP / 2 {
                let pair = group * 2 + half;
                let out = &mut wide[(panel * groups * 2 + pair) * PANEL * 2..][..PANEL * 2];
                for lane in 0..PANEL {
                    out[lane * 2] = block[lane * GROUP + half * 2] as i16;
                    out[lane * 2 + 1] = block[lane * GROUP + half * 2 + 1] as i16;
                }
            }
        }
    }
    wide
}

/// Rows of activations quantised to `u8`, each with its scale and zero point,
/// padded with zeros to whole groups (padded weights are zero too).
struct QuantisedRows<'a> {
    data: &'a [u8],
    padded_in: usize,
    scales: Vec<f32>,
    zero_points: Vec<i32>,
}

impl<'a> QuantisedRows<'a> {
    fn new(xs: &[f32], rows: usize, in_dim: usize, padded_in: usize, scratch: &'a mut Vec<u8>) -> Self {
        scratch.clear();
        scratch.resize(rows * padded_in, 0);
        let mut scales = Vec::with_capacity(rows);
        let mut zero_points = Vec::with_capacity(rows);
        for (row, out) in xs.chunks_exact(in_dim).zip(scratch.chunks_exact_mut(padded_in)) {
            let (scale, zero) = quantise_row(row, &mut out[..in_dim]);
            scales.push(scale);
            zero_points.push(zero);
        }
        Self { data: scratch, padded_in, scales, zero_points }
    }

    fn row(&self, row: usize) -> &[u8] {
        &self.data[row * self.padded_in..(row + 1) * self.padded_in]
    }
}

/// Quantises one row to `u8` (the compiler vectorises both loops for the CPU
/// found at run time); returns its scale and zero point. The range always
/// holds 0, so that 0 (padding, ReLU's zeros) is exact.
#[multiversion::multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx2+fma", "x86_64+avx2+fma", "aarch64+neon"))]
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
    // + 0.5 then truncation: round half up, in range after the clamp.
    for (q, &x) in out.iter_mut().zip(row) {
        *q = (x * inverse + zero + 0.5).clamp(0.0, 255.0) as u8;
    }
    (scale, zero as i32)
}

/// Any CPU: the same sums in plain integer arithmetic (and the oracle the
/// vector kernels are tested against).
fn tile_portable(w: &PackedWeights, q: &QuantisedRows, first: usize, count: usize, out: &mut [f32]) {
    let groups = w.padded_in / GROUP;
    for r in 0..count {
        let a = q.row(first + r);
        let out_row = &mut out[r * w.out_dim..(r + 1) * w.out_dim];
        for (column, o) in out_row.iter_mut().enumerate() {
            let (panel, lane) = (column / PANEL, column % PANEL);
            let mut sum = 0i32;
            for group in 0..groups {
                let b = &w.block(panel, group)[lane * GROUP..(lane + 1) * GROUP];
                for j in 0..GROUP {
                    sum += a[group * GROUP + j] as i32 * b[j] as i32;
                }
            }
            w.finish(q, first + r, column, sum, o);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{PackedWeights, QuantisedRows, GROUP, PANEL, ROWS};

    /// Pointers to the (up to) 4 activation rows of a tile; missing rows
    /// repeat the last one (computed, never stored).
    fn row_pointers(q: &QuantisedRows, first: usize, count: usize) -> [*const u8; ROWS] {
        std::array::from_fn(|r| q.row(first + r.min(count - 1)).as_ptr())
    }

    /// Up to 4 rows × every panel, two panels at a time (8 accumulators,
    /// each broadcast of 4 activation bytes feeding two `vpdpbusd`): per
    /// panel, one register per row holds its 16 channels' sums.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F, BW and VNNI.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn tile_avx512vnni(
        w: &PackedWeights,
        q: &QuantisedRows,
        first: usize,
        count: usize,
        out: &mut [f32],
    ) {
        let panels = w.out_dim.div_ceil(PANEL);
        let mut panel = 0;
        while panel < panels {
            // SAFETY: the caller's promise about the CPU.
            unsafe {
                if panel + 1 < panels {
                    panels_avx512vnni::<2>(w, q, first, count, panel, out);
                    panel += 2;
                } else {
                    panels_avx512vnni::<1>(w, q, first, count, panel, out);
                    panel += 1;
                }
            }
        }
    }

    /// `P` panels from `panel` on, for up to 4 rows.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn panels_avx512vnni<const P: usize>(
        w: &PackedWeights,
        q: &QuantisedRows,
        first: usize,
        count: usize,
        panel: usize,
        out: &mut [f32],
    ) {
        let groups = w.padded_in / GROUP;
        let rows = row_pointers(q, first, count);
        // Each panel's groups are consecutive 64-byte blocks.
        let panel_bytes = groups * PANEL * GROUP;
        let blocks: [*const i8; P] = std::array::from_fn(|p| w.packed[(panel + p) * panel_bytes..].as_ptr());
        let mut acc = [[_mm512_setzero_si512(); P]; ROWS];
        for group in 0..groups {
            // SAFETY: `group < groups`, so each block lies inside its panel
            // and each 4-byte read inside its padded row.
            unsafe {
                let b: [__m512i; P] = std::array::from_fn(|p| _mm512_loadu_si512(blocks[p].add(group * 64).cast()));
                for r in 0..ROWS {
                    let a = _mm512_set1_epi32(rows[r].add(group * GROUP).cast::<i32>().read_unaligned());
                    for p in 0..P {
                        acc[r][p] = _mm512_dpbusd_epi32(acc[r][p], a, b[p]);
                    }
                }
            }
        }
        for (r, sums) in acc.iter().enumerate().take(count) {
            let row = first + r;
            let scale = _mm512_set1_ps(q.scales[row]);
            let zero = _mm512_set1_epi32(q.zero_points[row]);
            let out_row = &mut out[r * w.out_dim..(r + 1) * w.out_dim];
            for (p, &sums) in sums.iter().enumerate() {
                let start = (panel + p) * PANEL;
                let width = PANEL.min(w.out_dim - start);
                let mask: __mmask16 = if width == PANEL { !0 } else { (1u16 << width) - 1 };
                // SAFETY: the masked lanes lie inside `w.sums`, `w.scales`
                // and `out_row` (columns start..start + width).
                unsafe {
                    let column_sums = _mm512_maskz_loadu_epi32(mask, w.sums[start..].as_ptr());
                    let column_scales = _mm512_maskz_loadu_ps(mask, w.scales[start..].as_ptr());
                    let exact = _mm512_sub_epi32(sums, _mm512_mullo_epi32(zero, column_sums));
                    let value = _mm512_mul_ps(_mm512_cvtepi32_ps(exact), _mm512_mul_ps(scale, column_scales));
                    let target = out_row[start..].as_mut_ptr();
                    let previous = _mm512_maskz_loadu_ps(mask, target);
                    _mm512_mask_storeu_ps(target, mask, _mm512_add_ps(previous, value));
                }
            }
        }
    }

    /// As [`tile_avx512vnni`] on AVX2, from the i16 weights: per pair of
    /// inputs, the row's two activations widened to i16 and broadcast, and
    /// `vpmaddwd` into two 8-channel registers per row (exact i32 sums).
    ///
    /// # Safety
    /// The CPU must have AVX2, and `w.wide` must be filled (`Kernel::Avx2`).
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn tile_avx2(w: &PackedWeights, q: &QuantisedRows, first: usize, count: usize, out: &mut [f32]) {
        let pairs = w.padded_in / 2;
        let rows = row_pointers(q, first, count);
        let panel_values = pairs * PANEL * 2;
        assert_eq!(w.wide.len(), w.out_dim.div_ceil(PANEL) * panel_values, "AVX2 weights packed");
        for panel in 0..w.out_dim.div_ceil(PANEL) {
            let block = w.wide[panel * panel_values..].as_ptr();
            let mut acc = [[_mm256_setzero_si256(); 2]; ROWS];
            for pair in 0..pairs {
                // SAFETY: `pair < pairs` keeps the two 32-byte loads inside the
                // panel and the 2-byte read inside the padded row.
                unsafe {
                    let low = _mm256_loadu_si256(block.add(pair * PANEL * 2).cast());
                    let high = _mm256_loadu_si256(block.add(pair * PANEL * 2 + PANEL).cast());
                    for r in 0..ROWS {
                        let [a0, a1] = rows[r].add(pair * 2).cast::<[u8; 2]>().read();
                        let a = _mm256_set1_epi32(a0 as i32 | (a1 as i32) << 16);
                        acc[r][0] = _mm256_add_epi32(acc[r][0], _mm256_madd_epi16(a, low));
                        acc[r][1] = _mm256_add_epi32(acc[r][1], _mm256_madd_epi16(a, high));
                    }
                }
            }
            for (r, [low, high]) in acc.iter().enumerate().take(count) {
                let mut lanes = [0i32; PANEL];
                // SAFETY: `lanes` holds 16 i32, two registers' worth.
                unsafe {
                    _mm256_storeu_si256(lanes.as_mut_ptr().cast(), *low);
                    _mm256_storeu_si256(lanes.as_mut_ptr().add(8).cast(), *high);
                }
                let start = panel * PANEL;
                let end = (start + PANEL).min(w.out_dim);
                let out_row = &mut out[r * w.out_dim..(r + 1) * w.out_dim];
                for (column, (o, &sum)) in (start..end).zip(out_row[start..end].iter_mut().zip(&lanes)) {
                    w.finish(q, first + r, column, sum, o);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n).map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 2001) as f32 / 1000.0 - 1.0).collect()
    }

    fn kernels() -> Vec<Kernel> {
        let kernels: Vec<Kernel> =
            [Kernel::Portable, Kernel::Avx2, Kernel::Avx512Vnni].into_iter().filter(|k| k.is_supported()).collect();
        eprintln!("int8 kernels this CPU runs, all tested: {kernels:?}");
        kernels
    }

    #[test]
    fn degenerate_rows_give_finite_exact_zeros() {
        let (k, n) = (8, 3);
        let mut weight = values(n * k, 4);
        weight[..k].fill(0.0); // a channel of zeros
        let packed = PackedWeights::new(&weight, n, k, Kernel::detect());
        let mut xs = vec![0.0; 3 * k]; // a zero row,
        xs[k..2 * k].fill(2.5); // a constant one,
        xs[2 * k] = 1e-42; // and one with a subnormal range
        let mut out = vec![0.0; 3 * n];
        packed.add_product(&xs, 3, &mut out);
        assert!(out.iter().all(|x| x.is_finite()), "{out:?}");
        assert_eq!(&out[..n], &[0.0; 3], "zeros in, zeros out");
        assert_eq!((out[n], out[2 * n]), (0.0, 0.0), "the zero channel");
        let mut none = vec![];
        packed.add_product(&[], 0, &mut none);
    }

    /// Every kernel gives the portable kernel's bits on the same packed
    /// weights, for shapes that leave partial groups, panels and tiles.
    #[test]
    fn vector_kernels_match_the_portable_one_exactly_on_odd_shapes() {
        for kernel in kernels() {
            for (rows, k, n) in [(1, 4, 16), (3, 5, 17), (5, 37, 33), (17, 64, 100), (40, 385, 47)] {
                let weight = values(n * k, 7);
                let xs = values(rows * k, 11);
                let packed = PackedWeights::new(&weight, n, k, kernel);
                let mut got = vec![0.5; rows * n];
                packed.add_product(&xs, rows, &mut got);
                let portable = PackedWeights { kernel: Kernel::Portable, ..PackedWeights::new(&weight, n, k, kernel) };
                let mut expected = vec![0.5; rows * n];
                portable.add_product(&xs, rows, &mut expected);
                assert_eq!(got, expected, "{kernel:?} {rows}×{k}×{n}");
            }
        }
    }

    /// The quantised product stays close to the exact one, and adds onto
    /// what the output held.
    #[test]
    fn the_product_approximates_f32_within_quantisation_error() {
        for kernel in kernels() {
            let (rows, k, n) = (9, 384, 40);
            let weight = values(n * k, 3);
            let xs = values(rows * k, 5);
            let packed = PackedWeights::new(&weight, n, k, kernel);
            let mut got = vec![1.0; rows * n];
            packed.add_product(&xs, rows, &mut got);
            for r in 0..rows {
                for c in 0..n {
                    let products = (0..k).map(|i| xs[r * k + i] * weight[c * k + i]);
                    let exact = products.clone().sum::<f32>() + 1.0;
                    let magnitude: f32 = products.map(f32::abs).sum();
                    let error = (got[r * n + c] - exact).abs();
                    // Rounding each factor to 8 bits (weights to 7 on AVX2)
                    // errs by well under 1% of the products' total size.
                    assert!(error < 0.01 * magnitude, "{kernel:?} ({r}, {c}): {} vs {exact}", got[r * n + c]);
                }
            }
        }
    }

    #[test]
    fn many_rows_split_over_threads_give_the_same_result() {
        let (rows, k, n) = (70, 48, 20);
        let packed = PackedWeights::new(&values(n * k, 1), n, k, Kernel::detect());
        let xs = values(rows * k, 2);
        let mut together = vec![0.0; rows * n];
        // Four threads whatever the machine: 70 rows are split in 4.
        let pool = rayon::ThreadPoolBuilder::new().num_threads(4).build().unwrap();
        pool.install(|| packed.add_product(&xs, rows, &mut together));
        let mut alone = vec![0.0; rows * n];
        for r in 0..rows {
            packed.add_rows(&xs[r * k..(r + 1) * k], &mut alone[r * n..(r + 1) * n], &mut Vec::new());
        }
        assert_eq!(together, alone);
    }
}
