//! The vector kernels: AVX-512 VNNI and AVX2, a tile of up to 4 rows at a
//! time, and the AVX-512 epilogue they share with the AMX kernel.

use std::arch::x86_64::*;

use super::{Epilogue, PackedWeights, QuantisedRows, GROUP, PANEL, ROWS};

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
/// The CPU must have AVX-512 F, BW and VNNI; the epilogue's bias holds
/// `out_dim` values and its residual (if any) rows `first..first + count`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn tile_avx512vnni(
    w: &PackedWeights,
    q: &QuantisedRows,
    first: usize,
    count: usize,
    epilogue: &Epilogue,
    out: &mut [f32],
) {
    let panels = w.out_dim.div_ceil(PANEL);
    let mut panel = 0;
    while panel < panels {
        // SAFETY: the caller's promises.
        unsafe {
            if panel + 1 < panels {
                panels_avx512vnni::<2>(w, q, first, count, panel, epilogue, out);
                panel += 2;
            } else {
                panels_avx512vnni::<1>(w, q, first, count, panel, epilogue, out);
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
    epilogue: &Epilogue,
    out: &mut [f32],
) {
    let groups = w.padded_in / GROUP;
    let rows = row_pointers(q, first, count);
    let blocks: [*const i8; P] = std::array::from_fn(|p| w.panel(panel + p).as_ptr());
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
        let out_row = out[r * w.out_dim..(r + 1) * w.out_dim].as_mut_ptr();
        for (p, &sums) in sums.iter().enumerate() {
            // SAFETY: the CPU has AVX-512 F and the epilogue fits (the
            // caller's promise), and `out_row` is a whole row of `out`,
            // borrowed mutably here.
            unsafe { finish_avx512(w, q, first + r, panel + p, sums, epilogue, out_row) };
        }
    }
}

/// Writes one row's 16 outputs of one panel from their integer sums, as
/// [`PackedWeights::finish`] computes them, to the bit, into the row of
/// `out_dim` outputs at `out_row`; columns past the layer's width are
/// masked off.
///
/// # Safety
/// The CPU must have AVX-512 F; the epilogue's bias holds `out_dim` values
/// and its residual (if any) row `row`; `out_row` must point at `w.out_dim`
/// f32s whose columns of this panel nobody else reads or writes meanwhile.
#[target_feature(enable = "avx512f")]
#[inline]
pub(super) unsafe fn finish_avx512(
    w: &PackedWeights,
    q: &QuantisedRows,
    row: usize,
    panel: usize,
    sums: __m512i,
    epilogue: &Epilogue,
    out_row: *mut f32,
) {
    let start = panel * PANEL;
    debug_assert!(start < w.out_dim);
    let width = PANEL.min(w.out_dim - start);
    let mask: __mmask16 = if width == PANEL { !0 } else { (1u16 << width) - 1 };
    let scale = _mm512_set1_ps(q.scales[row]);
    let zero = _mm512_set1_epi32(q.zero_points[row]);
    // SAFETY: the masked lanes lie inside `w.sums`, `w.scales`, the bias,
    // the residual row and the output row (columns start..start + width,
    // all below out_dim).
    unsafe {
        let column_sums = _mm512_maskz_loadu_epi32(mask, w.sums.as_ptr().add(start));
        let column_scales = _mm512_maskz_loadu_ps(mask, w.scales.as_ptr().add(start));
        let exact = _mm512_sub_epi32(sums, _mm512_mullo_epi32(zero, column_sums));
        let value = _mm512_mul_ps(_mm512_cvtepi32_ps(exact), _mm512_mul_ps(scale, column_scales));
        let bias = _mm512_maskz_loadu_ps(mask, epilogue.bias.as_ptr().add(start));
        let base = match epilogue.residual {
            Some(residual) => {
                let residual = residual.as_ptr().add(row * w.out_dim + start);
                _mm512_add_ps(_mm512_maskz_loadu_ps(mask, residual), bias)
            }
            None => bias,
        };
        _mm512_mask_storeu_ps(out_row.add(start), mask, _mm512_add_ps(base, value));
    }
}

/// As [`tile_avx512vnni`] on AVX2, from the i16 weights: per pair of
/// inputs, the row's two activations (widened to i16 once per tile)
/// broadcast, and `vpmaddwd` into two 8-channel registers per row (exact
/// i32 sums).
///
/// # Safety
/// The CPU must have AVX2, and `w.wide` must be filled (`Kernel::Avx2`).
#[target_feature(enable = "avx2")]
pub(super) unsafe fn tile_avx2(
    w: &PackedWeights,
    q: &QuantisedRows,
    first: usize,
    count: usize,
    epilogue: &Epilogue,
    wide_rows: &mut [i16],
    out: &mut [f32],
) {
    let pairs = w.padded_in / 2;
    // The tile's rows widened to i16 once (into `wide_rows`, 4 × padded_in),
    // so each pair of activations is one 32-bit broadcast from memory below.
    let wide_rows = &mut wide_rows[..ROWS * w.padded_in];
    for (r, wide) in wide_rows.chunks_exact_mut(w.padded_in).enumerate() {
        for (value, &byte) in wide.iter_mut().zip(q.row(first + r.min(count - 1))) {
            *value = byte as i16;
        }
    }
    let rows: [*const i32; ROWS] = std::array::from_fn(|r| wide_rows[r * w.padded_in..].as_ptr().cast());
    let panel_values = pairs * PANEL * 2;
    assert_eq!(w.wide.len(), w.out_dim.div_ceil(PANEL) * panel_values, "AVX2 weights packed");
    for panel in 0..w.out_dim.div_ceil(PANEL) {
        let block = w.wide[panel * panel_values..].as_ptr();
        let mut acc = [[_mm256_setzero_si256(); 2]; ROWS];
        for pair in 0..pairs {
            // SAFETY: `pair < pairs` keeps the two 32-byte loads inside the
            // panel and the 4-byte read (two i16) inside the widened row.
            unsafe {
                let low = _mm256_loadu_si256(block.add(pair * PANEL * 2).cast());
                let high = _mm256_loadu_si256(block.add(pair * PANEL * 2 + PANEL).cast());
                for r in 0..ROWS {
                    let a = _mm256_set1_epi32(rows[r].add(pair).read_unaligned());
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
                *o = w.finish(q, first + r, column, sum, epilogue);
            }
        }
    }
}
