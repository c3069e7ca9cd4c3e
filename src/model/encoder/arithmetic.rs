//! What `encoder.precision` runs as: the configuration keeps what the user
//! wrote (`auto`, `f32` or `int8`); the encoder resolves it here when it
//! opens, against the int8 kernels this CPU has, and reports the result
//! (`Encoder::precision`) to the head, `/ready`, the metrics and the logs.

use super::int8::Kernel;
use crate::config::{EncoderSettings, LinearLayer, Precision};

/// The arithmetic a matrix product runs in: `encoder.precision` resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arithmetic {
    /// Exact: the weights as shipped.
    F32,
    /// 8-bit integers (`model::encoder::int8`).
    Int8,
}

impl Arithmetic {
    /// What `precision` runs as on this CPU.
    pub(crate) fn resolve(precision: Precision) -> Self {
        match precision {
            Precision::Auto => Self::auto(),
            Precision::F32 => Arithmetic::F32,
            Precision::Int8 => Arithmetic::Int8,
        }
    }

    /// What `"auto"` runs on this CPU: int8 where it has an int8 kernel
    /// faster than f32 (AMX, AVX-512 VNNI or AVX2), else f32: the portable
    /// kernel (CPUs without AVX2) is much slower.
    pub(crate) fn auto() -> Self {
        if Kernel::detect().beats_f32() {
            Arithmetic::Int8
        } else {
            Arithmetic::F32
        }
    }

    /// The name the configuration, `/ready` and the metrics use.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Arithmetic::F32 => "f32",
            Arithmetic::Int8 => "int8",
        }
    }
}

/// The linear layers of each block that run in int8 under `settings` on
/// this CPU (in [`LinearLayer::ALL`]'s order): those of `encoder.int8_layers`
/// when the precision resolves to int8, none when it resolves to f32.
pub(crate) fn int8_layers(settings: &EncoderSettings) -> Vec<LinearLayer> {
    match Arithmetic::resolve(settings.precision) {
        Arithmetic::F32 => Vec::new(),
        Arithmetic::Int8 => LinearLayer::ALL.into_iter().filter(|layer| settings.int8_layers.contains(layer)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(precision: Precision, int8_layers: Vec<LinearLayer>) -> EncoderSettings {
        EncoderSettings {
            preset: "test".into(),
            source: "models/test".into(),
            revision: "main".into(),
            max_seq_len: 128,
            lowercase: false,
            precision,
            int8_layers,
            threads: 1,
        }
    }

    #[test]
    fn the_written_precision_resolves_per_layer() {
        let some = vec![LinearLayer::Output, LinearLayer::Qkv];
        assert_eq!(int8_layers(&settings(Precision::Int8, some.clone())), [LinearLayer::Qkv, LinearLayer::Output]);
        assert_eq!(int8_layers(&settings(Precision::F32, some)), []);
        let auto = int8_layers(&settings(Precision::Auto, LinearLayer::ALL.to_vec()));
        let expected = if Arithmetic::auto() == Arithmetic::Int8 { LinearLayer::ALL.to_vec() } else { Vec::new() };
        assert_eq!(auto, expected, "auto: all of int8_layers where int8 is faster, none elsewhere");
        assert_eq!(Arithmetic::resolve(Precision::Auto), Arithmetic::auto());
    }
}
