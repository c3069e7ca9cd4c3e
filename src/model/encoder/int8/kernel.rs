//! Which int8 kernel a CPU runs: detected once, at load, from the
//! instructions this CPU (and OS, for AMX) offers, and the padding each
//! kernel needs of the weights and rows it reads.

#[cfg(target_arch = "x86_64")]
use super::amx;
use super::GROUP;

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
    pub(super) fn is_supported(self) -> bool {
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
    pub(super) fn input_multiple(self) -> usize {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Amx => amx::TILE_INPUTS,
            _ => GROUP,
        }
    }

    /// Quantised rows are padded with zero rows to a multiple of this.
    pub(super) fn row_multiple(self) -> usize {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Amx => amx::BLOCK_ROWS,
            _ => 1,
        }
    }

    /// Panels are padded with zero panels to a multiple of this.
    pub(super) fn panel_multiple(self) -> usize {
        if self == Kernel::Amx {
            2
        } else {
            1
        }
    }
}
