//! The int8 matrix product of the encoder's linear layers (`encoder.precision
//! = "int8"`): `out = x·Wᵀ + bias (+ residual)`, then an activation, with
//! `W` quantised once, at load, and `x` quantised per call.
//!
//! This file is the product itself (the work split over threads, the
//! portable kernel, the epilogue); each side of it has its own file.
//!
//! - **Weights** (`pack`): symmetric, one scale per output channel (a row
//!   of `W`), packed once into the layout the kernels read: panels of 16
//!   output channels, and within a panel, for each group of 4 inputs, the
//!   16 channels' 4 bytes side by side (64 bytes: one AVX-512 register, two
//!   AVX2 ones, one row of an AMX tile). This is the layout of ONNX
//!   Runtime's MLAS u8×s8 kernels.
//! - **Activations** (`quantise`): asymmetric `u8` with one scale and zero
//!   point per row (per token), so a token with large values does not
//!   coarsen the others. The product then needs one correction per output:
//!   `x·w ≈ sx·sw·(Σ qx·qw − zx·Σ qw)`, with `Σ qw` (the channel's column sum)
//!   computed at pack time.
//! - **Kernels**, chosen at run time (`kernel`; `SHOPRANK_INT8_KERNEL=amx|
//!   avx512vnni|avx2|portable` forces one this CPU has, to time or test a
//!   slower kernel on a faster CPU): AMX (`tdpbusd`, 16 × 16 × 64 products
//!   per instruction, [`amx`]), AVX-512 VNNI (`vpdpbusd`: 4 u8×s8 products
//!   summed into each i32 lane in one instruction; `x86`), AVX2 (`x86`),
//!   and a portable one. AVX2's `vpmaddubsw` would add two u8×s8 products
//!   into a saturating i16, which 255·127·2 overflows; ONNX Runtime accepts
//!   that or drops to 7 bits (`reduce_range`), and 7 bits, of the weights or
//!   of the activations, cost too much accuracy on the reference texts. So
//!   the AVX2 kernel reads the weights widened to i16 (a second packing,
//!   made at load for AVX2 only) and multiplies with `vpmaddwd`, whose i32
//!   pair sums cannot overflow; it widens each thread's rows once per call
//!   into tiles of 6 rows, and goes over the weights in L2-sized blocks of
//!   panels that every tile passes over in turn. `vpmaddwd` and its `vpaddd`
//!   run on more ports than f32's FMA, which is where int8 gains on AVX2
//!   (`vpmaddubsw` too needs a `vpmaddwd` and a `vpaddd` after it). Every
//!   kernel's integer sums are exact, so all give the portable one's bits
//!   (tested), and replicas on different CPUs store the same vectors.
//! - **Threads**: many rows (batches) are split by rows, each thread
//!   quantising its own; few rows (one user text) are quantised once and,
//!   on AMX, split by output channels, so each core reads half the weights.
//!   The quantised rows live in a per-thread buffer kept between calls (up
//!   to 1 MiB each).

use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use crate::model::encoder::kernels::SharedOut;

#[cfg(target_arch = "x86_64")]
mod amx;
mod kernel;
mod pack;
mod quantise;
#[cfg(target_arch = "x86_64")]
mod x86;

pub(crate) use self::kernel::Kernel;
pub(crate) use self::pack::PackedWeights;
pub(crate) use self::quantise::QuantisedInputs;
use self::quantise::{with_scratch, QuantisedRows};

/// Output channels per panel, and inputs per group.
const PANEL: usize = 16;
const GROUP: usize = 4;
/// Rows a vector kernel call handles at once (its accumulators stay in
/// registers).
const ROWS: usize = 4;

/// Products of at least this many multiplications are split by output
/// channels when they have too few rows to split by rows (AMX only: the
/// vector kernels are compute-bound, and split only by rows). Below it, a
/// fork costs about what it saves.
const SPLIT_COLUMNS_FROM: usize = 1 << 24;

impl PackedWeights {
    /// `out[r] = xs[r]·Wᵀ` plus the epilogue's bias and residual, with its
    /// activation applied, for `rows` rows of `in_dim` (`out` rows
    /// `out_dim` wide). Splits the work over rayon's pool when there is
    /// enough of it to share: by rows if there are many, else (AMX) by
    /// output channels.
    pub(crate) fn product(&self, xs: &[f32], rows: usize, epilogue: &Epilogue, out: &mut [f32]) {
        let (k, n) = (self.in_dim, self.out_dim);
        let xs = &xs[..rows * k];
        let out = &mut out[..rows * n];
        assert_eq!(epilogue.bias.len(), n, "one bias per output");
        if let Some(residual) = epilogue.residual {
            assert!(residual.len() >= rows * n, "a residual row per row");
        }
        let threads = rayon::current_num_threads();
        let pass = self.kernel.rows_per_pass();
        // Below a few passes per thread (16 rows on the vector kernels: one
        // title splits), splitting rows costs more than it saves.
        let split_from = 4 * threads * if self.kernel == Kernel::Amx { pass } else { ROWS };
        if threads >= 2 && rows >= split_from {
            let chunk = rows.div_ceil(threads).next_multiple_of(pass);
            xs.par_chunks(chunk * k)
                .zip(out.par_chunks_mut(chunk * n))
                .enumerate()
                .for_each(|(i, (xs, out))| self.product_rows(xs, &epilogue.rows_from(i * chunk, n), out));
        } else if self.kernel == Kernel::Amx && threads >= 2 && rows * k * n >= SPLIT_COLUMNS_FROM {
            self.product_columns_split(xs, rows, epilogue, out, threads);
        } else {
            self.product_rows(xs, epilogue, out);
        }
    }

    /// One thread's rows, every output: quantise them into this thread's
    /// buffer, then run the kernel.
    fn product_rows(&self, xs: &[f32], epilogue: &Epilogue, out: &mut [f32]) {
        let rows = xs.len() / self.in_dim;
        with_scratch(|scratch| {
            let quantised = QuantisedRows::new(xs, rows, self.layout(), scratch, false);
            self.product_quantised_rows(&quantised, rows, epilogue, out)
        })
    }

    /// `out = xs·Wᵀ` plus the epilogue, on this thread, for rows quantised
    /// beforehand (see [`QuantisedInputs`]). `out` holds `xs.rows() ×
    /// out_dim` values.
    pub(crate) fn product_quantised(&self, xs: &QuantisedInputs, epilogue: &Epilogue, out: &mut [f32]) {
        assert_eq!(xs.layout, self.layout(), "rows quantised for this kernel and input width");
        assert_eq!(epilogue.bias.len(), self.out_dim, "one bias per output");
        assert!(epilogue.residual.is_none_or(|r| r.len() >= xs.rows * self.out_dim), "a residual row per row");
        let out = &mut out[..xs.rows * self.out_dim];
        self.product_quantised_rows(&xs.view(), xs.rows, epilogue, out)
    }

    /// The kernel over `rows` quantised rows, every output.
    fn product_quantised_rows(&self, quantised: &QuantisedRows, rows: usize, epilogue: &Epilogue, out: &mut [f32]) {
        match self.kernel {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `new` asserted that AMX is supported and packed for
            // it; the rows were quantised for this layout, so padded for
            // it; `out` is `rows` rows, borrowed mutably, and the callers
            // checked the epilogue's sizes.
            Kernel::Amx => unsafe { amx::product(self, quantised, rows, 0..self.panels, epilogue, out.as_mut_ptr()) },
            _ => self.product_rows_vector(quantised, rows, epilogue, out),
        }
    }

    /// The vector and portable kernels: AVX2 over all rows at once (it
    /// blocks them itself), the others 4 rows at a time.
    fn product_rows_vector(&self, quantised: &QuantisedRows, rows: usize, epilogue: &Epilogue, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if self.kernel == Kernel::Avx2 {
            // SAFETY: `new` asserted that the CPU has AVX2 and packed the
            // wide weights; `out` holds `rows` rows and the callers checked
            // the epilogue's sizes.
            unsafe { x86::product_avx2(self, quantised, rows, epilogue, out) };
            return;
        }
        for first in (0..rows).step_by(ROWS) {
            let count = ROWS.min(rows - first);
            let out = &mut out[first * self.out_dim..(first + count) * self.out_dim];
            match self.kernel {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `new` asserted that the CPU has the kernel's
                // instructions; `product` checked the epilogue's sizes.
                Kernel::Avx512Vnni => unsafe { x86::tile_avx512vnni(self, quantised, first, count, epilogue, out) },
                _ => tile_portable(self, quantised, first, count, epilogue, out),
            }
            if let Some(activation) = epilogue.activation {
                activation(out);
            }
        }
    }

    /// AMX on few rows: quantise them once (in parallel), then each thread
    /// multiplies them by its share of the panels (whole pairs), so each
    /// core reads only its part of the weights.
    #[cfg(target_arch = "x86_64")]
    fn product_columns_split(&self, xs: &[f32], rows: usize, epilogue: &Epilogue, out: &mut [f32], threads: usize) {
        with_scratch(|scratch| {
            let quantised = QuantisedRows::new(xs, rows, self.layout(), scratch, true);
            let pairs_each = (self.panels / 2).div_ceil(threads);
            let n = self.out_dim;
            let shared = SharedOut::new(out);
            (0..threads).into_par_iter().for_each(|thread| {
                let panels =
                    (thread * 2 * pairs_each).min(self.panels)..((thread + 1) * 2 * pairs_each).min(self.panels);
                if !panels.is_empty() {
                    // SAFETY: AMX is supported and packed for (`new`), the
                    // rows are padded for it, `product` checked the
                    // epilogue's sizes, and the threads' panel ranges are
                    // disjoint, so no two touch the same column of `out`,
                    // which stays mutably borrowed until all have finished.
                    unsafe { amx::product(self, &quantised, rows, panels, epilogue, shared.block(0, rows, n, n)) };
                }
            });
        });
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn product_columns_split(&self, xs: &[f32], _rows: usize, epilogue: &Epilogue, out: &mut [f32], _threads: usize) {
        self.product_rows(xs, epilogue, out);
    }

    /// One output from its integer sum: dequantised, plus bias and
    /// residual. The arithmetic every kernel's epilogue does, in this order,
    /// so that they agree to the bit.
    #[inline(always)]
    fn finish(&self, quantised: &QuantisedRows, row: usize, column: usize, sum: i32, epilogue: &Epilogue) -> f32 {
        let exact = sum - quantised.zero_points[row] * self.sums[column];
        let start = match epilogue.residual {
            Some(residual) => residual[row * self.out_dim + column] + epilogue.bias[column],
            None => epilogue.bias[column],
        };
        start + exact as f32 * (quantised.scales[row] * self.scales[column])
    }
}

/// What a product's outputs get besides `x·Wᵀ`.
pub(crate) struct Epilogue<'a> {
    /// Added per output channel.
    pub(crate) bias: &'a [f32],
    /// Added per row and channel (a residual connection: the rows the
    /// layer's input came from), `rows × out_dim`.
    pub(crate) residual: Option<&'a [f32]>,
    /// Applied in place to finished stretches of output (GELU after the
    /// intermediate layer), while they are still in cache.
    pub(crate) activation: Option<fn(&mut [f32])>,
}

impl Epilogue<'_> {
    /// The same epilogue for the rows from `first` on.
    fn rows_from(&self, first: usize, width: usize) -> Self {
        Epilogue {
            bias: self.bias,
            residual: self.residual.map(|residual| &residual[first * width..]),
            activation: self.activation,
        }
    }
}

/// Any CPU: the same sums in plain integer arithmetic (and the oracle the
/// vector kernels are tested against).
fn tile_portable(
    w: &PackedWeights,
    q: &QuantisedRows,
    first: usize,
    count: usize,
    epilogue: &Epilogue,
    out: &mut [f32],
) {
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
            *o = w.finish(q, first + r, column, sum, epilogue);
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
        let kernels: Vec<Kernel> = [Kernel::Portable, Kernel::Avx2, Kernel::Avx512Vnni, Kernel::Amx]
            .into_iter()
            .filter(|k| k.is_supported())
            .collect();
        eprintln!("int8 kernels this CPU runs, all tested: {kernels:?}");
        kernels
    }

    /// An activation whose effect is easy to see (and to get wrong twice).
    fn square(xs: &mut [f32]) {
        xs.iter_mut().for_each(|x| *x *= *x);
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
        let mut out = vec![f32::NAN; 3 * n];
        let zero_bias = Epilogue { bias: &[0.0; 3], residual: None, activation: None };
        packed.product(&xs, 3, &zero_bias, &mut out);
        assert!(out.iter().all(|x| x.is_finite()), "{out:?}");
        assert_eq!(&out[..n], &[0.0; 3], "zeros in, zeros out");
        assert_eq!((out[n], out[2 * n]), (0.0, 0.0), "the zero channel");
        let mut none = vec![];
        packed.product(&[], 0, &zero_bias, &mut none);
    }

    /// Every kernel gives the portable kernel's bits on the same packed
    /// weights, for shapes that leave partial groups, panels and tiles, with
    /// each part of the epilogue.
    #[test]
    fn vector_kernels_match_the_portable_one_exactly_on_odd_shapes() {
        for kernel in kernels() {
            for (rows, k, n) in [(1, 4, 16), (3, 5, 17), (5, 37, 33), (17, 64, 100), (40, 385, 47), (33, 130, 80)] {
                let weight = values(n * k, 7);
                let xs = values(rows * k, 11);
                let (bias, residual) = (values(n, 13), values(rows * n, 17));
                let packed = PackedWeights::new(&weight, n, k, kernel);
                let portable = PackedWeights { kernel: Kernel::Portable, ..PackedWeights::new(&weight, n, k, kernel) };
                let epilogues = [
                    Epilogue { bias: &bias, residual: None, activation: None },
                    Epilogue { bias: &bias, residual: Some(&residual), activation: None },
                    Epilogue { bias: &bias, residual: Some(&residual), activation: Some(square) },
                ];
                for (e, epilogue) in epilogues.iter().enumerate() {
                    let mut got = vec![0.5; rows * n];
                    packed.product(&xs, rows, epilogue, &mut got);
                    let mut expected = vec![0.5; rows * n];
                    portable.product(&xs, rows, epilogue, &mut expected);
                    assert_eq!(got, expected, "{kernel:?} {rows}×{k}×{n}, epilogue {e}");
                }
            }
        }
    }

    /// The quantised product stays close to the exact one, with the bias,
    /// residual and activation applied once each.
    #[test]
    fn the_product_approximates_f32_within_quantisation_error() {
        for kernel in kernels() {
            let (rows, k, n) = (9, 384, 40);
            let weight = values(n * k, 3);
            let xs = values(rows * k, 5);
            let (bias, residual) = (values(n, 6), values(rows * n, 8));
            let packed = PackedWeights::new(&weight, n, k, kernel);
            let mut got = vec![f32::NAN; rows * n];
            let epilogue = Epilogue { bias: &bias, residual: Some(&residual), activation: Some(square) };
            packed.product(&xs, rows, &epilogue, &mut got);
            for r in 0..rows {
                for c in 0..n {
                    let products = (0..k).map(|i| xs[r * k + i] * weight[c * k + i]);
                    let exact = products.clone().sum::<f32>() + bias[c] + residual[r * n + c];
                    let magnitude: f32 = products.map(f32::abs).sum();
                    let error = (got[r * n + c].sqrt() - exact.abs()).abs();
                    // Rounding each factor to 8 bits errs by well under 1%
                    // of the products' total size.
                    assert!(error < 0.01 * magnitude, "{kernel:?} ({r}, {c}): {} vs {exact}²", got[r * n + c]);
                }
            }
        }
    }

    /// Rows quantised once ([`QuantisedInputs`], the head's path) give the
    /// bits of the product that quantises them itself, on every kernel and
    /// shape, AMX's row padding included.
    #[test]
    fn rows_quantised_beforehand_give_the_same_bits() {
        for kernel in kernels() {
            for (rows, k, n) in [(1, 4, 16), (3, 5, 17), (40, 385, 47), (100, 768, 64)] {
                let packed = PackedWeights::new(&values(n * k, 21), n, k, kernel);
                let xs = values(rows * k, 22);
                let bias = values(n, 23);
                let epilogue = Epilogue { bias: &bias, residual: None, activation: None };
                let mut expected = vec![0.0; rows * n];
                packed.product_rows(&xs, &epilogue, &mut expected);
                let quantised = QuantisedInputs::new(&xs, k, kernel);
                assert_eq!(quantised.rows(), rows);
                let mut got = vec![f32::NAN; rows * n];
                packed.product_quantised(&quantised, &epilogue, &mut got);
                assert_eq!(got, expected, "{kernel:?} {rows}×{k}×{n}");
            }
        }
    }

    /// Splitting the work over threads, by rows (many rows) or by output
    /// channels (AMX, few rows but much work, an odd panel count shared
    /// unevenly), gives the bits of one row at a time, on every kernel.
    #[test]
    fn work_split_over_threads_gives_the_same_result() {
        // Four threads whatever the machine.
        let pool = rayon::ThreadPoolBuilder::new().num_threads(4).build().unwrap();
        for kernel in kernels() {
            for (rows, k, n) in [(70, 48, 20), (600, 70, 40), (100, 390, 470)] {
                let packed = PackedWeights::new(&values(n * k, 1), n, k, kernel);
                let xs = values(rows * k, 2);
                let (bias, residual) = (values(n, 3), values(rows * n, 4));
                let epilogue = Epilogue { bias: &bias, residual: Some(&residual), activation: Some(square) };
                let mut together = vec![0.0; rows * n];
                pool.install(|| packed.product(&xs, rows, &epilogue, &mut together));
                let mut alone = vec![0.0; rows * n];
                for r in 0..rows {
                    let one_row = epilogue.rows_from(r, n);
                    packed.product_rows(&xs[r * k..(r + 1) * k], &one_row, &mut alone[r * n..(r + 1) * n]);
                }
                assert_eq!(together, alone, "{kernel:?} {rows}×{k}×{n}");
            }
        }
    }

    /// Not a test: the product's speed, one thread, on the encoder's
    /// shapes (240 rows: a batch's share of one core), against gemm's f32
    /// on the same shapes. `SHOPRANK_INT8_KERNEL=avx2 cargo test --release
    /// --no-default-features --features offline --lib int8_speed --
    /// --ignored --nocapture` times the AVX2 kernel against AVX2 f32.
    #[test]
    #[ignore]
    fn int8_speed_against_f32() {
        use crate::model::encoder::kernels::{Accumulate, Product, View};
        let kernel = Kernel::detect();
        let best = |f: &mut dyn FnMut()| {
            (0..30)
                .map(|_| {
                    let start = std::time::Instant::now();
                    f();
                    start.elapsed().as_secs_f64()
                })
                .fold(f64::INFINITY, f64::min)
        };
        for (rows, k, n) in [(240, 384, 1152), (240, 384, 384), (240, 384, 1536), (240, 1536, 384)] {
            let (weight, xs, bias) = (values(n * k, 1), values(rows * k, 2), values(n, 3));
            let transposed: Vec<f32> = (0..k * n).map(|i| weight[(i % n) * k + i / n]).collect();
            let packed = PackedWeights::new(&weight, n, k, kernel);
            let epilogue = Epilogue { bias: &bias, residual: None, activation: None };
            let mut out = vec![0.0; rows * n];
            let int8 = best(&mut || packed.product_rows(&xs, &epilogue, &mut out));
            let product = Product {
                a: View { data: &xs, rows, cols: k, row_stride: k },
                b: View { data: &transposed, rows: k, cols: n, row_stride: n },
                transpose_b: false,
                scale: 1.0,
                accumulate: Accumulate::Overwrite,
                threads: 1,
            };
            let f32 = best(&mut || product.write(&mut out, n));
            let gmacs = (rows * k * n) as f64 / 1e9;
            eprintln!(
                "{rows}×{k}×{n}: {kernel:?} int8 {:.1} GMAC/s, f32 {:.1} GMAC/s, {:.2}×",
                gmacs / int8,
                gmacs / f32,
                f32 / int8
            );
        }
    }
}
