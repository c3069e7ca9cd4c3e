//! The int8 matrix product of the encoder's linear layers (`encoder.precision
//! = "int8"`): `out = x·Wᵀ + bias (+ residual)`, then an activation, with
//! `W` quantised once, at load, and `x` quantised per call.
//!
//! - **Weights**: symmetric, one scale per output channel (a row of `W`),
//!   packed once into the layout the kernels read: panels of 16 output
//!   channels, and within a panel, for each group of 4 inputs, the 16
//!   channels' 4 bytes side by side (64 bytes: one AVX-512 register, two
//!   AVX2 ones, one row of an AMX tile). This is the layout of ONNX
//!   Runtime's MLAS u8×s8 kernels.
//! - **Activations**: asymmetric `u8` with one scale and zero point per row
//!   (per token), so a token with large values does not coarsen the others.
//!   The product then needs one correction per output:
//!   `x·w ≈ sx·sw·(Σ qx·qw − zx·Σ qw)`, with `Σ qw` (the channel's column sum)
//!   computed at pack time.
//! - **Kernels**, chosen at run time: AMX (`tdpbusd`, 16 × 16 × 64 products
//!   per instruction, [`amx`]), AVX-512 VNNI (`vpdpbusd`: 4 u8×s8 products
//!   summed into each i32 lane in one instruction), AVX2, and a portable
//!   one. AVX2's `vpmaddubsw` would add two u8×s8 products into a
//!   saturating i16, which 255·127·2 overflows; ONNX Runtime accepts that or
//!   drops to 7 bits (`reduce_range`), and 7 bits cost too much here (the
//!   lowest cosine to f32 on the reference texts fell to 0.9932 with 7-bit
//!   weights, 0.9900 with 7-bit activations). So the AVX2 kernel reads the
//!   weights widened to i16 (a second packing, made at load for AVX2 only)
//!   and multiplies with `vpmaddwd`, whose i32 pair sums cannot overflow.
//!   Every kernel's integer sums are exact, so all give the portable one's
//!   bits (tested), and replicas on different CPUs store the same vectors.
//! - **Threads**: many rows (batches) are split by rows, each thread
//!   quantising its own; few rows (one user text) are quantised once and,
//!   on AMX, split by output channels, so each core reads half the weights.
//!   The quantised rows live in a per-thread buffer kept between calls (up
//!   to 1 MiB each).

use std::borrow::Cow;
use std::cell::Cell;

use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use crate::model::encoder::kernels::SharedOut;

#[cfg(target_arch = "x86_64")]
mod amx;
#[cfg(target_arch = "x86_64")]
mod x86;

/// Output channels per panel, and inputs per group.
const PANEL: usize = 16;
const GROUP: usize = 4;
/// Rows a vector kernel call handles at once (its accumulators stay in
/// registers).
const ROWS: usize = 4;

/// Which instructions the product runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kernel {
    Amx,
    Avx512Vnni,
    Avx2,
    Portable,
}

impl Kernel {
    /// The fastest this CPU has.
    pub(crate) fn detect() -> Self {
        [Kernel::Amx, Kernel::Avx512Vnni, Kernel::Avx2]
            .into_iter()
            .find(|kernel| kernel.is_supported())
            .unwrap_or(Kernel::Portable)
    }

    /// Whether the kernel outruns the f32 path (see `Arithmetic::auto`).
    pub(crate) fn beats_f32(self) -> bool {
        matches!(self, Kernel::Amx | Kernel::Avx512Vnni)
    }

    /// Whether this CPU (and OS, for AMX) can run the kernel.
    fn is_supported(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Amx => amx::supported(),
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

    /// Inputs are padded with zeros to a multiple of this.
    fn input_multiple(self) -> usize {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Amx => amx::TILE_INPUTS,
            _ => GROUP,
        }
    }

    /// Quantised rows are padded with zero rows to a multiple of this.
    fn row_multiple(self) -> usize {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Amx => amx::BLOCK_ROWS,
            _ => 1,
        }
    }

    /// Panels are padded with zero panels to a multiple of this.
    fn panel_multiple(self) -> usize {
        if self == Kernel::Amx {
            2
        } else {
            1
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
    /// `in_dim` rounded up to the kernel's input multiple (4, or 64 on AMX).
    padded_in: usize,
    /// Panels stored: `out_dim / 16` rounded up (to an even count on AMX).
    panels: usize,
    /// Panel-major: `padded_in / 4` groups of 64 bytes per panel.
    packed: Vec<i8>,
    /// For the AVX2 kernel only (else empty): the same weights as i16,
    /// panel-major, per pair of inputs the 16 channels' two values (64 bytes).
    wide: Vec<i16>,
    /// Per output channel: the weights' scale, and their quantised sum.
    scales: Vec<f32>,
    sums: Vec<i32>,
}

/// Products of at least this many multiplications are split by output
/// channels when they have too few rows to split by rows (AMX only: the
/// vector kernels are compute-bound, and split only by rows). Below it, a
/// fork costs about what it saves.
const SPLIT_COLUMNS_FROM: usize = 1 << 24;

impl PackedWeights {
    /// Quantises and packs `weight` (`out_dim` rows of `in_dim`) for `kernel`.
    /// Panics if this CPU cannot run `kernel` (the kernels' safety rests on it).
    pub(crate) fn new(weight: &[f32], out_dim: usize, in_dim: usize, kernel: Kernel) -> Self {
        assert!(kernel.is_supported(), "this CPU cannot run the {kernel:?} int8 kernel");
        assert!((1..=MAX_IN_DIM).contains(&in_dim), "int8 products take 1 to {MAX_IN_DIM} inputs, not {in_dim}");
        assert_eq!(weight.len(), out_dim * in_dim, "weight is out_dim × in_dim");
        let padded_in = in_dim.next_multiple_of(kernel.input_multiple());
        let panels = out_dim.div_ceil(PANEL).next_multiple_of(kernel.panel_multiple());
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
        Self { kernel, in_dim, out_dim, padded_in, panels, packed, wide, scales, sums }
    }

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
        let pass = if self.kernel == Kernel::Amx { self.kernel.row_multiple() } else { ROWS };
        // Below a few passes per thread, splitting rows costs more than it saves.
        if threads >= 2 && rows >= 4 * pass * threads {
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

    /// Output channels.
    pub(crate) fn out_dim(&self) -> usize {
        self.out_dim
    }

    /// The kernel these weights are packed for.
    pub(crate) fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// How rows must be quantised for these weights.
    fn layout(&self) -> RowLayout {
        RowLayout { kernel: self.kernel, in_dim: self.in_dim, padded_in: self.padded_in }
    }

    /// The vector and portable kernels, 4 rows at a time.
    fn product_rows_vector(&self, quantised: &QuantisedRows, rows: usize, epilogue: &Epilogue, out: &mut [f32]) {
        // The AVX2 kernel's tile rows widened to i16, one buffer per call.
        let mut wide_rows = if self.kernel == Kernel::Avx2 { vec![0i16; ROWS * self.padded_in] } else { Vec::new() };
        for first in (0..rows).step_by(ROWS) {
            let count = ROWS.min(rows - first);
            let out = &mut out[first * self.out_dim..(first + count) * self.out_dim];
            match self.kernel {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `new` asserted that the CPU has the kernel's
                // instructions; `product` checked the epilogue's sizes.
                Kernel::Avx512Vnni => unsafe { x86::tile_avx512vnni(self, quantised, first, count, epilogue, out) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: as above.
                Kernel::Avx2 => unsafe { x86::tile_avx2(self, quantised, first, count, epilogue, &mut wide_rows, out) },
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

    /// The packed bytes of panel `panel` (its groups of 64 bytes in order).
    fn panel(&self, panel: usize) -> &[i8] {
        let bytes = self.padded_in * PANEL;
        &self.packed[panel * bytes..(panel + 1) * bytes]
    }

    /// The 64 packed bytes of group `group` in panel `panel`.
    fn block(&self, panel: usize, group: usize) -> &[i8] {
        &self.panel(panel)[group * PANEL * GROUP..(group + 1) * PANEL * GROUP]
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
fn with_scratch<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    let mut scratch = SCRATCH.take();
    let result = f(&mut scratch);
    if scratch.capacity() <= KEEP_SCRATCH_BYTES {
        SCRATCH.set(scratch);
    }
    result
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

/// What quantised rows must look like for a set of packed weights: their
/// width, padded for the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RowLayout {
    kernel: Kernel,
    in_dim: usize,
    padded_in: usize,
}

/// Rows of activations quantised to `u8`, each with its scale and zero point,
/// padded with zeros to whole groups (padded weights are zero too) and, for
/// AMX, with zero rows to whole blocks.
struct QuantisedRows<'a> {
    data: &'a [u8],
    padded_in: usize,
    scales: Cow<'a, [f32]>,
    zero_points: Cow<'a, [i32]>,
}

impl<'a> QuantisedRows<'a> {
    /// Quantises `rows` rows of `xs` for `layout` into `scratch`;
    /// `parallel` shares the rows out over rayon's pool.
    fn new(xs: &[f32], rows: usize, layout: RowLayout, scratch: &'a mut Vec<u8>, parallel: bool) -> Self {
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

    fn row(&self, row: usize) -> &[u8] {
        &self.data[row * self.padded_in..(row + 1) * self.padded_in]
    }
}

/// Rows quantised once, to be multiplied by several weight matrices of the
/// same input width and kernel: the head multiplies the same candidates by
/// each block of its first layer.
pub(crate) struct QuantisedInputs {
    layout: RowLayout,
    rows: usize,
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

    fn view(&self) -> QuantisedRows<'_> {
        QuantisedRows {
            data: &self.data,
            padded_in: self.layout.padded_in,
            scales: Cow::Borrowed(&self.scales),
            zero_points: Cow::Borrowed(&self.zero_points),
        }
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
}
