//! The vector kernels: AVX-512 VNNI (a tile of up to 4 rows at a time, and
//! the AVX-512 epilogue it shares with the AMX kernel) and AVX2 (cache
//! blocks of panels, tiles of 6 rows, its own epilogue).

use std::arch::x86_64::*;
use std::cell::Cell;

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

/// Rows of an AVX2 tile: 6 rows × 16 channels are 12 accumulators, with
/// the panel's two weight registers and a broadcast 15 of the 16 `ymm`.
pub(super) const AVX2_ROWS: usize = 6;

/// Bytes of (i16) weights in a block of panels: a block stays in L2 while
/// every row tile of the call passes over it, rather than the whole matrix
/// (1.2 MB for a 384 × 1536 layer) streaming from L3 for every tile. Half
/// the smallest L2 of AVX2 CPUs (256 KiB); 256 and 512 KiB measured the
/// same on Zen 4 (1 MiB L2).
const AVX2_BLOCK_BYTES: usize = 128 << 10;

/// The widened tiles kept per thread between calls up to this size (twice
/// the quantised rows' limit: the same rows at 16 bits).
const KEEP_TILES_BYTES: usize = 2 << 20;

thread_local! {
    static TILES: Cell<Vec<i32>> = const { Cell::new(Vec::new()) };
}

/// As [`tile_avx512vnni`] on AVX2, for all `rows` rows of `q` at once,
/// from the i16 weights (`w.wide`): per pair of inputs, each row's two
/// activations broadcast, and `vpmaddwd` into two 8-channel registers per
/// row (exact i32 sums).
///
/// The rows are first widened to i16, once per call, into tiles of 6 rows
/// interleaved by pairs (a tile's 6 pairs of one step side by side, so the
/// inner loop reads them at fixed offsets from one pointer). Then the
/// panels go by blocks of `AVX2_BLOCK_BYTES`, every tile passing over a
/// block (from L2) before the next. The epilogue is vectorised (the
/// arithmetic of [`PackedWeights::finish`], to the bit), and the activation
/// runs on each tile's stretch of a block while it is in cache.
///
/// # Safety
/// The CPU must have AVX2, and `w.wide` must be filled (`Kernel::Avx2`);
/// the epilogue's bias must hold `out_dim` values and its residual (if any)
/// `rows × out_dim`.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn product_avx2(
    w: &PackedWeights,
    q: &QuantisedRows,
    rows: usize,
    epilogue: &Epilogue,
    out: &mut [f32],
) {
    let (k, n) = (w.padded_in, w.out_dim);
    let (pairs, panels) = (k / 2, n.div_ceil(PANEL));
    let panel_values = k * PANEL;
    assert_eq!(w.wide.len(), panels * panel_values, "AVX2 weights packed");
    assert!(out.len() >= rows * n, "an output row per row");
    let tile_values = pairs * AVX2_ROWS;
    let mut tiles = TILES.take();
    tiles.clear();
    tiles.resize(rows.div_ceil(AVX2_ROWS) * tile_values, 0);
    for (tile, first) in tiles.chunks_exact_mut(tile_values).zip((0..rows).step_by(AVX2_ROWS)) {
        // Missing rows repeat the last (computed, never stored).
        let count = AVX2_ROWS.min(rows - first);
        for r in 0..AVX2_ROWS {
            for (pair, two) in q.row(first + r.min(count - 1)).chunks_exact(2).enumerate() {
                tile[pair * AVX2_ROWS + r] = two[0] as i32 | (two[1] as i32) << 16;
            }
        }
    }
    let block_panels = (AVX2_BLOCK_BYTES / (panel_values * size_of::<i16>())).max(1);
    for first_panel in (0..panels).step_by(block_panels) {
        let end_panel = panels.min(first_panel + block_panels);
        let columns = first_panel * PANEL..n.min(end_panel * PANEL);
        for (tile, first) in tiles.chunks_exact(tile_values).zip((0..rows).step_by(AVX2_ROWS)) {
            let count = AVX2_ROWS.min(rows - first);
            for panel in first_panel..end_panel {
                // SAFETY: the panel lies inside `w.wide` (asserted above),
                // `pairs × 32` values, and the tile holds `pairs` steps.
                let sums = unsafe { tile_avx2(w.wide[panel * panel_values..].as_ptr(), tile.as_ptr(), pairs) };
                for (r, sums) in sums.iter().enumerate().take(count) {
                    let row = first + r;
                    // SAFETY: AVX2 (the caller's promise); `out` holds row
                    // `row` whole (asserted), borrowed mutably here, and
                    // the caller promised the epilogue's sizes.
                    unsafe { finish_avx2(w, q, row, panel, sums, epilogue, out[row * n..].as_mut_ptr()) };
                }
            }
            if let Some(activation) = epilogue.activation {
                for row in first..first + count {
                    activation(&mut out[row * n + columns.start..row * n + columns.end]);
                }
            }
        }
    }
    if tiles.capacity() * size_of::<i32>() <= KEEP_TILES_BYTES {
        TILES.set(tiles);
    }
}

/// One panel's 16 channels for a tile of 6 rows: their exact i32 sums over
/// `pairs` pairs of inputs (an even count), two registers (channels 0–7,
/// 8–15) per row; two pairs per turn of the loop.
///
/// Per pair: 2 weight loads, 6 broadcasts, 12 `vpmaddwd` and 12 `vpaddd`.
/// The multiply-adds and adds bound it (about 1.5× gemm's f32 per product
/// on Zen 4; plain loads in place of the broadcasts were no faster): with
/// exact sums AVX2 has no cheaper form, `vpmaddubsw` needing a `vpmaddwd`
/// and a `vpaddd` after it as well.
///
/// # Safety
/// The CPU must have AVX2; `block` must point at a panel of `w.wide`
/// (`pairs × 32` i16) and `tile` at `pairs × 6` widened pairs.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn tile_avx2(block: *const i16, tile: *const i32, pairs: usize) -> [[__m256i; 2]; AVX2_ROWS] {
    debug_assert!(pairs.is_multiple_of(2));
    let mut acc = [[_mm256_setzero_si256(); 2]; AVX2_ROWS];
    for pair in (0..pairs).step_by(2) {
        for pair in [pair, pair + 1] {
            // SAFETY: `pair < pairs` keeps the two 32-byte loads inside the
            // panel and the six 4-byte reads inside the tile.
            unsafe {
                let low = _mm256_loadu_si256(block.add(pair * PANEL * 2).cast());
                let high = _mm256_loadu_si256(block.add(pair * PANEL * 2 + PANEL).cast());
                let step = tile.add(pair * AVX2_ROWS);
                for (r, acc) in acc.iter_mut().enumerate() {
                    let a = _mm256_set1_epi32(step.add(r).read());
                    acc[0] = _mm256_add_epi32(acc[0], _mm256_madd_epi16(a, low));
                    acc[1] = _mm256_add_epi32(acc[1], _mm256_madd_epi16(a, high));
                }
            }
        }
    }
    acc
}

/// As [`finish_avx512`] on AVX2: one row's 16 outputs of one panel from
/// their integer sums (channels 0–7 and 8–15), to the bit as
/// [`PackedWeights::finish`]; a partial last panel goes through `finish`
/// itself.
///
/// # Safety
/// The CPU must have AVX2; the epilogue's bias holds `out_dim` values and
/// its residual (if any) row `row`; `out_row` must point at `w.out_dim`
/// f32s whose columns of this panel nobody else reads or writes meanwhile.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn finish_avx2(
    w: &PackedWeights,
    q: &QuantisedRows,
    row: usize,
    panel: usize,
    sums: &[__m256i; 2],
    epilogue: &Epilogue,
    out_row: *mut f32,
) {
    let start = panel * PANEL;
    debug_assert!(start < w.out_dim);
    if w.out_dim - start < PANEL {
        let mut lanes = [0i32; PANEL];
        // SAFETY: `lanes` holds 16 i32, two registers' worth; the columns
        // written lie below out_dim.
        unsafe {
            _mm256_storeu_si256(lanes.as_mut_ptr().cast(), sums[0]);
            _mm256_storeu_si256(lanes.as_mut_ptr().add(8).cast(), sums[1]);
            for (column, &sum) in (start..w.out_dim).zip(&lanes) {
                *out_row.add(column) = w.finish(q, row, column, sum, epilogue);
            }
        }
        return;
    }
    let scale = _mm256_set1_ps(q.scales[row]);
    let zero = _mm256_set1_epi32(q.zero_points[row]);
    for (half, &sums) in sums.iter().enumerate() {
        let column = start + half * 8;
        // SAFETY: columns column..column + 8 lie below out_dim (a whole
        // panel), so inside `w.sums`, `w.scales`, the bias, the residual
        // row and the output row.
        unsafe {
            let column_sums = _mm256_loadu_si256(w.sums.as_ptr().add(column).cast());
            let column_scales = _mm256_loadu_ps(w.scales.as_ptr().add(column));
            let exact = _mm256_sub_epi32(sums, _mm256_mullo_epi32(zero, column_sums));
            let value = _mm256_mul_ps(_mm256_cvtepi32_ps(exact), _mm256_mul_ps(scale, column_scales));
            let bias = _mm256_loadu_ps(epilogue.bias.as_ptr().add(column));
            let base = match epilogue.residual {
                Some(residual) => _mm256_add_ps(_mm256_loadu_ps(residual.as_ptr().add(row * w.out_dim + column)), bias),
                None => bias,
            };
            _mm256_storeu_ps(out_row.add(column), _mm256_add_ps(base, value));
        }
    }
}
