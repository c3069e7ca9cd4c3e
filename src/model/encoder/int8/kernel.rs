//! Which int8 kernel a CPU runs: detected once, at load, from the
//! instructions this CPU (and OS, for AMX) offers, or forced for
//! measurements and tests by `SHOPRANK_INT8_KERNEL` (see [`Kernel::detect`]);
//! and the padding each kernel needs of the weights and rows it reads.

use std::sync::OnceLock;

#[cfg(target_arch = "x86_64")]
use super::{amx, x86};
use super::{GROUP, ROWS};

/// Which instructions the product runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kernel {
    Amx,
    Avx512Vnni,
    Avx2,
    Portable,
}

/// The environment variable that forces a kernel: `amx`, `avx512vnni`,
/// `avx2` or `portable` (or `auto`, the same as unset).
pub(crate) const FORCE_VARIABLE: &str = "SHOPRANK_INT8_KERNEL";

impl Kernel {
    /// Every kernel, fastest first: the order `detect` tries them in.
    pub(crate) const ALL: [Kernel; 4] = [Kernel::Amx, Kernel::Avx512Vnni, Kernel::Avx2, Kernel::Portable];

    /// The kernel this process runs: the fastest this CPU has, unless
    /// `SHOPRANK_INT8_KERNEL` names one (to time or test a slower kernel on
    /// a faster CPU, as an AVX2-only machine would run it). Read once, the
    /// first time; like `RAYON_NUM_THREADS` or oneDNN's `ONEDNN_MAX_CPU_ISA`
    /// it is a process-wide override of what the hardware offers, so it
    /// is an environment variable, not a configuration key.
    ///
    /// # Panics
    /// If the variable names no kernel, or one this CPU cannot run: a
    /// measurement must not quietly run another kernel than it names.
    pub(crate) fn detect() -> Self {
        static KERNEL: OnceLock<Kernel> = OnceLock::new();
        *KERNEL.get_or_init(|| {
            let forced = std::env::var(FORCE_VARIABLE).ok();
            Kernel::choose(forced.as_deref()).unwrap_or_else(|problem| panic!("{problem}"))
        })
    }

    /// Whether `SHOPRANK_INT8_KERNEL` names a kernel this CPU runs (or
    /// nothing): the encoder checks it when it loads, so that a bad value
    /// is a start-up error naming the variable rather than the panic
    /// [`Kernel::detect`] would raise at the first int8 product.
    pub(crate) fn check_forced() -> Result<(), String> {
        Kernel::choose(std::env::var(FORCE_VARIABLE).ok().as_deref()).map(|_| ())
    }

    /// The kernel for the value of `SHOPRANK_INT8_KERNEL` (`None`: unset):
    /// the fastest supported for `auto` or nothing, else the one named, if
    /// this CPU runs it.
    fn choose(forced: Option<&str>) -> Result<Self, String> {
        let fastest = || Kernel::ALL.into_iter().find(|kernel| kernel.is_supported()).unwrap_or(Kernel::Portable);
        let name = match forced.map(str::trim) {
            None | Some("" | "auto") => return Ok(fastest()),
            Some(name) => name,
        };
        let supported: Vec<&str> = Kernel::ALL.into_iter().filter(|k| k.is_supported()).map(Kernel::as_str).collect();
        match Kernel::ALL.into_iter().find(|kernel| kernel.as_str().eq_ignore_ascii_case(name)) {
            Some(kernel) if kernel.is_supported() => Ok(kernel),
            Some(kernel) => Err(format!(
                "{FORCE_VARIABLE}={name}: this CPU cannot run the {kernel:?} int8 kernel (it runs: {})",
                supported.join(", ")
            )),
            None => Err(format!(
                "{FORCE_VARIABLE}={name}: no such int8 kernel (amx, avx512vnni, avx2, portable or auto; this CPU runs: {})",
                supported.join(", ")
            )),
        }
    }

    /// The name `SHOPRANK_INT8_KERNEL` gives the kernel.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kernel::Amx => "amx",
            Kernel::Avx512Vnni => "avx512vnni",
            Kernel::Avx2 => "avx2",
            Kernel::Portable => "portable",
        }
    }

    /// Whether the kernel outruns the f32 path (see `Arithmetic::auto`):
    /// all but the portable one. The AVX2 kernel against f32 on AVX2 was
    /// measured in README.md, "Performance".
    pub(crate) fn beats_f32(self) -> bool {
        matches!(self, Kernel::Amx | Kernel::Avx512Vnni | Kernel::Avx2)
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

    /// Rows the kernel handles in one pass over (part of) the weights: a
    /// thread's share of the rows is a multiple of it.
    pub(super) fn rows_per_pass(self) -> usize {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Amx => amx::BLOCK_ROWS,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => x86::AVX2_ROWS,
            _ => ROWS,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forced_kernel_is_run_only_where_the_cpu_has_it() {
        let fastest = Kernel::choose(None).unwrap();
        assert!(fastest.is_supported());
        assert_eq!(Kernel::choose(Some("auto")), Ok(fastest));
        assert_eq!(Kernel::choose(Some("")), Ok(fastest));
        assert_eq!(Kernel::choose(Some("portable")), Ok(Kernel::Portable));
        for kernel in Kernel::ALL {
            match Kernel::choose(Some(kernel.as_str())) {
                Ok(chosen) => assert!(chosen == kernel && kernel.is_supported()),
                Err(problem) => {
                    assert!(!kernel.is_supported());
                    assert!(problem.contains("cannot run"), "{problem}");
                }
            }
        }
        let problem = Kernel::choose(Some("avx3")).unwrap_err();
        assert!(problem.contains("SHOPRANK_INT8_KERNEL=avx3: no such int8 kernel"), "{problem}");
    }
}
