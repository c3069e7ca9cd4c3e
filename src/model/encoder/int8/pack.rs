//! The weights' side of the int8 product: `W` quantised once, at load,
//! symmetric with one scale per output channel, and packed into the layout
//! the kernels read (see the parent module), with each channel's quantised
//! sum for the activations' zero-point correction.

use super::quantise::RowLayout;
use super::{Kernel, GROUP, PANEL};

/// Largest weight magnitude: 8 bits, symmetric.
const WEIGHT_LIMIT: f32 = 127.0;

/// Most inputs a product may have: its i32 sums stay exact while
/// in_dim·255·127 < 2³¹ (BERT's largest layer has 4,096).
pub(super) const MAX_IN_DIM: usize = 60_000;

/// `W` (`[out, in]`), quantised per output channel and packed.
pub(crate) struct PackedWeights {
    pub(super) kernel: Kernel,
    pub(super) in_dim: usize,
    pub(super) out_dim: usize,
    /// `in_dim` rounded up to the kernel's input multiple (4, or 64 on AMX).
    pub(super) padded_in: usize,
    /// Panels stored: `out_dim / 16` rounded up (to an even count on AMX).
    pub(super) panels: usize,
    /// Panel-major: `padded_in / 4` groups of 64 bytes per panel.
    pub(super) packed: Vec<i8>,
    /// For the AVX2 kernel only (else empty): the same weights as i16,
    /// panel-major, per pair of inputs the 16 channels' two values (64 bytes).
    pub(super) wide: Vec<i16>,
    /// Per output channel: the weights' scale, and their quantised sum.
    pub(super) scales: Vec<f32>,
    pub(super) sums: Vec<i32>,
}

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

    /// Output channels.
    pub(crate) fn out_dim(&self) -> usize {
        self.out_dim
    }

    /// The kernel these weights are packed for.
    pub(crate) fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// How rows must be quantised for these weights.
    pub(super) fn layout(&self) -> RowLayout {
        RowLayout { kernel: self.kernel, in_dim: self.in_dim, padded_in: self.padded_in }
    }

    /// The packed bytes of panel `panel` (its groups of 64 bytes in order).
    pub(super) fn panel(&self, panel: usize) -> &[i8] {
        let bytes = self.padded_in * PANEL;
        &self.packed[panel * bytes..(panel + 1) * bytes]
    }

    /// The 64 packed bytes of group `group` in panel `panel`.
    pub(super) fn block(&self, panel: usize, group: usize) -> &[i8] {
        &self.panel(panel)[group * PANEL * GROUP..(group + 1) * PANEL * GROUP]
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
