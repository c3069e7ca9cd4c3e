//! The AMX kernel (Intel Sapphire Rapids and later): `tdpbusd` multiplies a
//! tile of 16 activation rows × 64 inputs (u8) by a tile of 64 inputs × 16
//! channels (s8) into 16 × 16 exact i32 sums, 16,384 products in one
//! instruction, where a `vpdpbusd` does 64.
//!
//! The weight tile is exactly 16 of the packed 64-byte groups of a panel
//! (each tile row is one group: 16 channels × 4 inputs, the layout AMX
//! calls VNNI), so the packing is the one every kernel shares; AMX only
//! needs the inputs padded to a multiple of 64 and an even number of panels.
//!
//! The tiles are driven by inline assembly (Rust's AMX intrinsics are not
//! stable); the sums are stored and finished by the AVX-512 epilogue the
//! VNNI kernel uses, so the results are its, to the bit.
//!
//! Linux grants a process AMX's 8 KiB of tile state only on request
//! (`arch_prctl(ARCH_REQ_XCOMP_PERM)`); [`permitted`] asks once.

use std::arch::asm;
use std::arch::x86_64::*;
use std::ops::Range;
use std::sync::OnceLock;

use super::x86::finish_avx512;
use super::{Epilogue, PackedWeights, QuantisedRows, PANEL};

/// Rows of a tile, and input bytes per tile row.
pub(super) const TILE_ROWS: usize = 16;
pub(super) const TILE_INPUTS: usize = 64;
/// Rows one pass of the kernel covers: two activation tiles.
pub(super) const BLOCK_ROWS: usize = 2 * TILE_ROWS;

/// Whether the CPU has AMX-TILE and AMX-INT8 (and the AVX-512 the epilogue
/// needs), and the OS lets this process use them.
pub(super) fn supported() -> bool {
    // CPUID leaf 7 (present where AVX-512 is): EDX bit 24 is AMX-TILE, 25 AMX-INT8.
    let has_amx = is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && __cpuid_count(7, 0).edx & (0b11 << 24) == 0b11 << 24;
    has_amx && permitted()
}

/// Asks Linux, once per process, for the tile state (the kernel refuses
/// AMX instructions, with SIGILL, to a process that has not asked).
fn permitted() -> bool {
    static PERMITTED: OnceLock<bool> = OnceLock::new();
    *PERMITTED.get_or_init(|| {
        #[cfg(target_os = "linux")]
        {
            const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
            const XFEATURE_XTILEDATA: libc::c_long = 18;
            // SAFETY: arch_prctl with these arguments only changes which
            // register state the kernel will save for this process.
            let granted = unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0 };
            if !granted {
                let error = std::io::Error::last_os_error();
                tracing::warn!(%error, "the CPU has AMX but Linux refused its tile state: int8 runs on AVX-512 VNNI");
            }
            granted
        }
        #[cfg(not(target_os = "linux"))]
        false
    })
}

/// The `ldtilecfg` operand: palette 1, all 8 tiles 16 rows × 64 bytes
/// (tmm0–3 the sums, tmm4–5 activations, tmm6–7 weights).
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    bytes_per_row: [u16; 16],
    rows: [u8; 16],
}

impl TileConfig {
    fn uniform() -> Self {
        let mut config =
            TileConfig { palette: 1, start_row: 0, reserved: [0; 14], bytes_per_row: [0; 16], rows: [0; 16] };
        config.bytes_per_row[..8].fill(TILE_INPUTS as u16);
        config.rows[..8].fill(TILE_ROWS as u8);
        config
    }
}

/// The sums of a 2 × 2 block of tiles, as `tilestored` writes them.
#[repr(C, align(64))]
struct Sums([[i32; PANEL * TILE_ROWS]; 4]);

/// Writes the outputs of `panels` (an even start, the range's end at most
/// the padded panel count) for `q`'s first `rows` rows to the output rows at
/// `out`, `w.out_dim` apart: the products, 32 rows × 2 panels at a time
/// (16 rows where at most 16 are left: the query a request embeds beside
/// its user text often adds just a few rows past a multiple of 32),
/// finished by the epilogue; its activation runs on each 32 rows' stretch
/// of these columns once they are written.
///
/// # Safety
/// - [`supported`] returned true (the CPU has AMX and AVX-512 F/BW, and
///   Linux granted the tile state).
/// - `w` is packed for AMX (inputs to a multiple of 64, even panel count),
///   and `q` holds `rows` rounded up to 32 rows of `w.padded_in` bytes.
/// - The epilogue's bias holds `out_dim` values, its residual (if any)
///   `rows` rows.
/// - `out` points at `rows` rows of `w.out_dim` f32s whose columns of
///   `panels` nobody else reads or writes meanwhile.
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) unsafe fn product(
    w: &PackedWeights,
    q: &QuantisedRows,
    rows: usize,
    panels: Range<usize>,
    epilogue: &Epilogue,
    out: *mut f32,
) {
    debug_assert!(panels.start.is_multiple_of(2) && w.padded_in.is_multiple_of(TILE_INPUTS));
    debug_assert!(q.data.len() >= rows.div_ceil(BLOCK_ROWS) * BLOCK_ROWS * q.padded_in);
    let config = TileConfig::uniform();
    let steps = w.padded_in / TILE_INPUTS;
    // One weight tile is 16 packed groups (64 bytes each) of one panel.
    let (tile_bytes, weight_stride, input_stride) = (TILE_ROWS * 64, 64usize, q.padded_in);
    let mut sums = Sums([[0; PANEL * TILE_ROWS]; 4]);
    // SAFETY (every asm block): the tiles are configured 16 × 64 bytes; each
    // `tileloadd` reads 16 rows of 64 bytes inside `q`'s padded rows or
    // inside one panel of `w` (steps·16 groups of 64 bytes); `tilestored`
    // writes 16 rows of 64 bytes inside `sums`; the CPU has AMX (the
    // caller's promise).
    unsafe {
        asm!("ldtilecfg [{}]", in(reg) &config, options(nostack, readonly));
        // Releases the tiles however this returns (a panic in the
        // activation included), so a worker never keeps AMX state live.
        let _release = TileRelease;
        for first in (0..rows).step_by(BLOCK_ROWS) {
            // Pointers into the whole buffer: each tile load reads 16 rows.
            let upper = q.data[first * q.padded_in..].as_ptr();
            let lower = q.data[(first + TILE_ROWS) * q.padded_in..].as_ptr();
            // At most 16 rows left: the lower tile would hold only padding,
            // so its loads and products are skipped (half the work).
            let lower_rows = rows - first > TILE_ROWS;
            for panel in panels.clone().step_by(2) {
                let left = w.panel(panel).as_ptr();
                let right = w.panel(panel + 1).as_ptr();
                asm!("tilezero tmm0", "tilezero tmm1", options(nostack, nomem));
                if lower_rows {
                    asm!("tilezero tmm2", "tilezero tmm3", options(nostack, nomem));
                }
                for step in 0..steps {
                    asm!(
                        "tileloadd tmm4, [{upper} + {input_stride} * 1]",
                        "tileloadd tmm6, [{left} + {weight_stride} * 1]",
                        "tileloadd tmm7, [{right} + {weight_stride} * 1]",
                        "tdpbusd tmm0, tmm4, tmm6",
                        "tdpbusd tmm1, tmm4, tmm7",
                        upper = in(reg) upper.add(step * TILE_INPUTS),
                        left = in(reg) left.add(step * tile_bytes),
                        right = in(reg) right.add(step * tile_bytes),
                        input_stride = in(reg) input_stride,
                        weight_stride = in(reg) weight_stride,
                        options(nostack, readonly),
                    );
                    // The same weight tiles (still in tmm6/7) times the lower
                    // 16 rows, unless the block has no rows there.
                    if lower_rows {
                        asm!(
                            "tileloadd tmm5, [{lower} + {input_stride} * 1]",
                            "tdpbusd tmm2, tmm5, tmm6",
                            "tdpbusd tmm3, tmm5, tmm7",
                            lower = in(reg) lower.add(step * TILE_INPUTS),
                            input_stride = in(reg) input_stride,
                            options(nostack, readonly),
                        );
                    }
                }
                asm!(
                    "tilestored [{s0} + {stride} * 1], tmm0",
                    "tilestored [{s1} + {stride} * 1], tmm1",
                    s0 = in(reg) sums.0[0].as_mut_ptr(),
                    s1 = in(reg) sums.0[1].as_mut_ptr(),
                    stride = in(reg) PANEL * 4,
                    options(nostack),
                );
                if lower_rows {
                    asm!(
                        "tilestored [{s2} + {stride} * 1], tmm2",
                        "tilestored [{s3} + {stride} * 1], tmm3",
                        s2 = in(reg) sums.0[2].as_mut_ptr(),
                        s3 = in(reg) sums.0[3].as_mut_ptr(),
                        stride = in(reg) PANEL * 4,
                        options(nostack),
                    );
                }
                // Tiles 0, 1: the upper 16 rows × left, right; 2, 3: the lower.
                let tiles = if lower_rows { 4 } else { 2 };
                for (tile, tile_sums) in sums.0.iter().enumerate().take(tiles) {
                    let column_panel = panel + tile % 2;
                    if column_panel * PANEL >= w.out_dim {
                        continue; // the zero panel that evens the count
                    }
                    let top = first + (tile / 2) * TILE_ROWS;
                    for (r, row_sums) in tile_sums.chunks_exact(PANEL).enumerate().take(rows.saturating_sub(top)) {
                        let row = top + r;
                        let row_sums = _mm512_load_si512(row_sums.as_ptr().cast());
                        finish_avx512(w, q, row, column_panel, row_sums, epilogue, out.add(row * w.out_dim));
                    }
                }
            }
            if let Some(activation) = epilogue.activation {
                let columns = panels.start * PANEL..(panels.end * PANEL).min(w.out_dim);
                for row in first..rows.min(first + BLOCK_ROWS) {
                    let start = out.add(row * w.out_dim + columns.start);
                    activation(std::slice::from_raw_parts_mut(start, columns.len()));
                }
            }
        }
    }
}

/// `tilerelease` on drop.
struct TileRelease;

impl Drop for TileRelease {
    fn drop(&mut self) {
        // SAFETY: only made after `ldtilecfg` succeeded, so the CPU has AMX;
        // releasing returns the tiles to their initial state.
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
    }
}
