//! CPU kernels for the packed BERT forward pass in [`crate::model::encoder::bert_fast`].
//!
//! Candle runs each tensor op as its own pass over memory, with its own
//! allocation and, for element-wise ops, its own thread pool; at the sizes a
//! serving batch has (tens to hundreds of token rows, 12 heads of 32
//! dimensions) that overhead cost more than the arithmetic. These kernels do
//! what ONNX Runtime's fused operators do instead:
//!
//! - matrix products go straight to the `gemm` crate (the one candle itself
//!   multiplies with), reading strided views in place, so Q/K/V heads need no
//!   copies and bias and residual are added by the product itself;
//! - GELU, softmax and layer normalisation are single passes whose loops the
//!   compiler vectorises for the CPU found at run time (`multiversion`,
//!   through [`vectorised!`]: AVX-512 only with the `avx512` feature);
//! - every parallel section uses one pool (rayon's), never two that spin
//!   against each other on a small machine.

use gemm::Parallelism;
use rayon::prelude::*;

/// Compiles a function whose loops the compiler vectorises for AVX-512
/// (with the `avx512` Cargo feature, on by default), AVX2 + FMA and NEON,
/// the CPU's best chosen at run time (`multiversion`): the one list of
/// targets every such kernel uses. Without the feature the f32 path (this,
/// and gemm without `x86-v4`) runs AVX2 at most, as on an AVX2-only CPU.
/// The kernels use no fused multiply-add and a fixed summation order, so
/// every target gives the same bits.
macro_rules! vectorised {
    ($item:item) => {
        #[cfg_attr(
            feature = "avx512",
            multiversion::multiversion(targets(
                "x86_64+avx512f+avx512bw+avx512vl+avx2+fma",
                "x86_64+avx2+fma",
                "aarch64+neon"
            ))
        )]
        #[cfg_attr(not(feature = "avx512"), multiversion::multiversion(targets("x86_64+avx2+fma", "aarch64+neon")))]
        $item
    };
}
pub(crate) use vectorised;

/// A row-major matrix view: `rows × cols` values, row `r` starting at
/// `r * row_stride`. Views may be narrower than their buffer (one attention
/// head inside the fused Q/K/V rows).
#[derive(Clone, Copy)]
pub(crate) struct View<'a> {
    pub(crate) data: &'a [f32],
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) row_stride: usize,
}

impl<'a> View<'a> {
    /// A contiguous `rows × cols` matrix.
    pub(crate) fn dense(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self { data, rows, cols, row_stride: cols }
    }

    /// Columns `start..start + cols` of rows `row..row + rows`.
    pub(crate) fn block(&self, row: usize, rows: usize, start: usize, cols: usize) -> View<'a> {
        assert!(row + rows <= self.rows && start + cols <= self.cols, "block outside the view");
        View { data: &self.data[row * self.row_stride + start..], rows, cols, row_stride: self.row_stride }
    }

    /// Checks that every element lies inside `data`, so the raw-pointer
    /// product below cannot read out of bounds.
    fn check(&self) {
        if self.rows > 0 && self.cols > 0 {
            assert!((self.rows - 1) * self.row_stride + self.cols <= self.data.len(), "view exceeds its buffer");
        }
    }
}

/// How a product combines with what its output already holds.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Accumulate {
    /// `out = scale · a · b`
    Overwrite,
    /// `out += scale · a · b` (the output was pre-filled with bias/residual)
    Add,
}

/// One matrix product `scale · a · b` (or `a · bᵀ`), described before it is
/// written somewhere.
#[derive(Clone, Copy)]
pub(crate) struct Product<'a> {
    pub(crate) a: View<'a>,
    /// Read as `a.cols × out_cols`; with `transpose_b` as the transpose of
    /// `out_cols × a.cols` (the keys in `Q·Kᵀ`).
    pub(crate) b: View<'a>,
    pub(crate) transpose_b: bool,
    pub(crate) scale: f32,
    pub(crate) accumulate: Accumulate,
    /// More than one lets gemm split the product over rayon's pool.
    pub(crate) threads: usize,
}

impl Product<'_> {
    /// `a.rows × out_cols`.
    pub(crate) fn out_cols(&self) -> usize {
        if self.transpose_b {
            self.b.rows
        } else {
            self.b.cols
        }
    }

    /// Writes (or adds) the product into `out`, whose rows are `out_stride` apart.
    pub(crate) fn write(&self, out: &mut [f32], out_stride: usize) {
        let (rows, cols) = (self.a.rows, self.out_cols());
        if rows > 0 && cols > 0 {
            assert!((rows - 1) * out_stride + cols <= out.len(), "output exceeds its buffer");
        }
        // SAFETY: the output block lies inside `out` (asserted), which is
        // exclusively borrowed, so nothing else reads or writes it meanwhile.
        unsafe { self.write_raw(out.as_mut_ptr(), out_stride) }
    }

    /// [`Product::write`] through a raw pointer, for parallel tasks that
    /// each write their own block of one shared buffer (attention heads).
    ///
    /// # Safety
    /// The `a.rows × out_cols` block at `out` (row stride `out_stride`) must
    /// be valid for writes and not be read or written by anyone else meanwhile.
    pub(crate) unsafe fn write_raw(&self, out: *mut f32, out_stride: usize) {
        let Product { a, b, transpose_b, scale, accumulate, threads } = *self;
        let inner = if transpose_b { b.cols } else { b.rows };
        assert_eq!(a.cols, inner, "inner dimensions differ");
        a.check();
        b.check();
        let (b_row_stride, b_col_stride) =
            if transpose_b { (1, b.row_stride as isize) } else { (b.row_stride as isize, 1) };
        let parallelism = if threads > 1 { Parallelism::Rayon(threads) } else { Parallelism::None };
        // SAFETY: `check` keeps every input index inside its slice; the
        // output block is the caller's promise.
        gemm::gemm(
            a.rows,
            self.out_cols(),
            inner,
            out,
            1,
            out_stride as isize,
            accumulate == Accumulate::Add,
            a.data.as_ptr(),
            1,
            a.row_stride as isize,
            b.data.as_ptr(),
            b_col_stride,
            b_row_stride,
            1.0,
            scale,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Fills each `width`-wide row of `out` with `bias`, plus the matching row of
/// `residual` when given: the starting value a product then adds onto.
pub(crate) fn fill_rows(out: &mut [f32], bias: &[f32], residual: Option<&[f32]>) {
    let width = bias.len();
    match residual {
        None => out.chunks_exact_mut(width).for_each(|row| row.copy_from_slice(bias)),
        Some(residual) => {
            for (row, res) in out.chunks_exact_mut(width).zip(residual.chunks_exact(width)) {
                for ((o, r), b) in row.iter_mut().zip(res).zip(bias) {
                    *o = r + b;
                }
            }
        }
    }
}

/// Rows per parallel task of the element-wise kernels: enough work per task
/// that scheduling costs little, few enough that two threads share a batch.
pub(crate) const ROWS_PER_TASK: usize = 16;

/// Layer normalisation of every `gamma.len()`-wide row, in place.
pub(crate) fn layer_norm_rows(xs: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let width = gamma.len();
    xs.par_chunks_mut(width * ROWS_PER_TASK)
        .for_each(|rows| rows.chunks_exact_mut(width).for_each(|row| layer_norm_row(row, gamma, beta, eps)));
}

vectorised! {

    fn layer_norm_row(row: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
        let n = row.len() as f32;
        let mean = lane_sum(row) / n;
        let mut lanes = [0f32; LANES];
        let mut chunks = row.chunks_exact(LANES);
        for chunk in &mut chunks {
            for (lane, x) in lanes.iter_mut().zip(chunk) {
                *lane += (x - mean) * (x - mean);
            }
        }
        let tail: f32 = chunks.remainder().iter().map(|x| (x - mean) * (x - mean)).sum();
        let variance = (lanes.iter().sum::<f32>() + tail) / n;
        let inv_std = 1.0 / (variance + eps).sqrt();
        for ((x, g), b) in row.iter_mut().zip(gamma).zip(beta) {
            *x = (*x - mean) * inv_std * g + b;
        }
    }
}

/// Independent partial sums, so the compiler may keep them in one vector
/// register (a single running sum forbids reordering the additions).
const LANES: usize = 16;

#[inline(always)]
fn lane_sum(xs: &[f32]) -> f32 {
    let mut lanes = [0f32; LANES];
    let mut chunks = xs.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (lane, x) in lanes.iter_mut().zip(chunk) {
            *lane += x;
        }
    }
    lanes.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}

/// The largest value (NaNs ignored), in independent lanes like
/// [`lane_sum`] (`f32::max`'s NaN rule would keep a fold scalar).
#[inline(always)]
fn lane_max(xs: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let mut chunks = xs.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (lane, &x) in lanes.iter_mut().zip(chunk) {
            *lane = if x > *lane { x } else { *lane };
        }
    }
    chunks.remainder().iter().chain(&lanes).fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m })
}

vectorised! {
    /// Exact (erf-based) GELU, in place (one stretch of a layer's output: the
    /// products call it on what they have just written).
    pub(crate) fn gelu_erf_chunk(xs: &mut [f32]) {
        for x in xs.iter_mut() {
            *x = 0.5 * *x * (1.0 + erf(*x * std::f32::consts::FRAC_1_SQRT_2));
        }
    }
}

vectorised! {
    /// GELU by its tanh approximation (configs with `gelu_new`), in place.
    pub(crate) fn gelu_tanh_chunk(xs: &mut [f32]) {
        const SQRT_2_OVER_PI: f32 = 0.797_884_6;
        for x in xs.iter_mut() {
            let y = SQRT_2_OVER_PI * (*x + 0.044_715 * *x * *x * *x);
            // tanh(y) = 1 − 2 / (e^{2y} + 1), exact at both tails.
            let tanh = 1.0 - 2.0 / (exp(2.0 * y) + 1.0);
            *x = 0.5 * *x * (1.0 + tanh);
        }
    }
}

/// ReLU, in place.
pub(crate) fn relu(xs: &mut [f32]) {
    xs.iter_mut().for_each(|x| *x = x.max(0.0));
}

vectorised! {
    /// Softmax of each `width`-wide row, in place.
    pub(crate) fn softmax_rows(xs: &mut [f32], width: usize) {
        for row in xs.chunks_exact_mut(width) {
            let max = lane_max(row);
            for x in row.iter_mut() {
                *x = exp(*x - max);
            }
            let inv = 1.0 / lane_sum(row);
            for x in row.iter_mut() {
                *x *= inv;
            }
        }
    }
}

/// `eˣ` without a library call, so that loops over it vectorise: Cody–Waite
/// reduction `x = n·ln2 + r`, a degree-6 polynomial for `eʳ` on
/// `|r| ≤ ln2/2`, and `2ⁿ` built in the exponent bits. Relative error is
/// below 2 ulp over the f32 range; inputs below −87 give 0.
///
/// Only float and integer-bit arithmetic, no float → int conversion (Rust's
/// saturating `as` would keep the loop scalar).
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Adding 1.5·2²³ rounds to the nearest integer in plain arithmetic and
    // leaves that integer, n, in the low mantissa bits of the sum.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * std::f32::consts::LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // (n + 127) << 23 is 2ⁿ; the shift drops the sum's upper bits.
    let scale = f32::from_bits(shifted.to_bits().wrapping_add(127) << 23);
    p * scale
}

/// The error function, by Abramowitz & Stegun 7.1.26 (absolute error below
/// 1.5·10⁻⁷, the size of f32 rounding near 1), branch-free for vectorising.
#[inline(always)]
pub(crate) fn erf(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [0.254_829_6, -0.284_496_74, 1.421_413_7, -1.453_152_1, 1.061_405_4];
    let a = x.abs();
    let t = 1.0 / (1.0 + P * a);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    let y = 1.0 - poly * exp(-a * a);
    y.copysign(x)
}

/// A buffer's base pointer that parallel tasks may share because each
/// writes a disjoint block of it through [`Product::write_raw`].
#[derive(Clone, Copy)]
pub(crate) struct SharedOut<'a> {
    ptr: *mut f32,
    len: usize,
    /// Keeps the buffer mutably borrowed for as long as the tasks hold this.
    _buffer: std::marker::PhantomData<&'a mut [f32]>,
}

// SAFETY: only handed to tasks that write disjoint blocks, while the owning
// buffer stays mutably borrowed (the lifetime) for their whole scope.
unsafe impl Send for SharedOut<'_> {}
unsafe impl Sync for SharedOut<'_> {}

impl<'a> SharedOut<'a> {
    pub(crate) fn new(buffer: &'a mut [f32]) -> Self {
        Self { ptr: buffer.as_mut_ptr(), len: buffer.len(), _buffer: std::marker::PhantomData }
    }

    /// Pointer to the `rows × cols` block starting at element `offset`
    /// with row stride `stride`, after checking that it fits the buffer.
    pub(crate) fn block(&self, offset: usize, rows: usize, cols: usize, stride: usize) -> *mut f32 {
        if rows > 0 && cols > 0 {
            assert!(offset + (rows - 1) * stride + cols <= self.len, "block outside the shared buffer");
        }
        // SAFETY: in bounds, as just asserted.
        unsafe { self.ptr.add(offset) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_the_library_within_a_few_ulp() {
        for i in -8700..8800 {
            let x = i as f32 / 100.0;
            let (fast, exact) = (exp(x), x.exp());
            assert!((fast - exact).abs() <= 4e-7 * exact, "exp({x}) = {fast}, expected {exact}");
        }
        assert_eq!(exp(-1000.0), exp(-87.0));
    }

    #[test]
    fn erf_matches_known_values() {
        // erf values from Abramowitz & Stegun table 7.1.
        let table = [(0.0, 0.0), (0.5, 0.520_499_9), (1.0, 0.842_700_8), (2.0, 0.995_322_3), (-1.0, -0.842_700_8)];
        for (x, expected) in table {
            assert!((erf(x) - expected).abs() < 3e-7, "erf({x}) = {}, expected {expected}", erf(x));
        }
    }

    #[test]
    fn layer_norm_gives_zero_mean_unit_variance_before_the_affine_part() {
        let width = 40; // not a multiple of the lane count
        let mut xs: Vec<f32> = (0..width * 3).map(|i| (i as f32 * 0.37).sin() * 5.0 + 2.0).collect();
        layer_norm_rows(&mut xs, &vec![1.0; width], &vec![0.0; width], 1e-12);
        for row in xs.chunks(width) {
            let mean = row.iter().sum::<f32>() / width as f32;
            let var = row.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / width as f32;
            assert!(mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-4, "mean {mean}, variance {var}");
        }
    }

    #[test]
    fn softmax_rows_sum_to_one_and_keep_order() {
        let mut xs = vec![1.0, 2.0, 3.0, -50.0, 0.0, 50.0];
        softmax_rows(&mut xs, 3);
        for row in xs.chunks(3) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
            assert!(row[0] < row[1] && row[1] < row[2]);
        }
        let expected = 1.0 / (1.0 + (-1f32).exp() + (-2f32).exp());
        assert!((xs[2] - expected).abs() < 1e-6);
    }

    #[test]
    fn matmul_reads_strided_and_transposed_views() {
        // a = [[1, 2], [3, 4]] inside a 3-wide buffer; b = [[5, 6], [7, 8]].
        let a = [1.0, 2.0, 0.0, 3.0, 4.0, 0.0];
        let b = [5.0, 6.0, 7.0, 8.0];
        let a = View { data: &a, rows: 2, cols: 2, row_stride: 3 };
        let b = View::dense(&b, 2, 2);
        let mut out = vec![1.0; 4];
        let product = Product { a, b, transpose_b: false, scale: 1.0, accumulate: Accumulate::Add, threads: 1 };
        product.write(&mut out, 2);
        assert_eq!(out, [20.0, 23.0, 44.0, 51.0]);
        let product = Product { transpose_b: true, scale: 2.0, accumulate: Accumulate::Overwrite, ..product };
        product.write(&mut out, 2);
        // a·bᵀ = [[17, 23], [39, 53]], doubled.
        assert_eq!(out, [34.0, 46.0, 78.0, 106.0]);
    }
}
