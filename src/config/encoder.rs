//! The `[encoder]` section: which encoder, its window, and the precision
//! its matrix products run in, as the user wrote them. `precision = "auto"`
//! stays `auto` here; the model resolves it against the CPU when the encoder
//! opens (`model::encoder::Arithmetic`).

use serde::Deserialize;

/// The numeric precision the user asked for: of the encoder's linear layers
/// and, in serving, of the head's first layer (`model::head::serving`).
/// Configured as `"f32"`, `"int8"` or `"auto"` (the default). What `"auto"`
/// runs is decided by the model layer, where the encoder opens: int8 where
/// the CPU has an int8 kernel faster than f32, else f32 (see
/// `model::encoder::Arithmetic::resolve`); `Encoder::precision` then says
/// which one runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Whichever of the two is faster on this CPU.
    Auto,
    /// Exact: the weights as shipped.
    F32,
    /// 8-bit integers (`model::encoder::int8`).
    Int8,
}

/// The four linear layers of each transformer block, any of which
/// `encoder.int8_layers` may keep in f32 under int8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LinearLayer {
    /// The fused query/key/value projection (hidden → 3·hidden).
    Qkv,
    /// The attention's output projection (hidden → hidden, plus residual).
    AttentionOutput,
    /// The feed-forward expansion (hidden → intermediate, then GELU).
    Intermediate,
    /// The feed-forward contraction (intermediate → hidden, plus residual).
    Output,
}

impl LinearLayer {
    pub const ALL: [LinearLayer; 4] =
        [LinearLayer::Qkv, LinearLayer::AttentionOutput, LinearLayer::Intermediate, LinearLayer::Output];

    pub fn as_str(self) -> &'static str {
        match self {
            LinearLayer::Qkv => "qkv",
            LinearLayer::AttentionOutput => "attention_output",
            LinearLayer::Intermediate => "intermediate",
            LinearLayer::Output => "output",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncoderSettings {
    /// The preset the encoder keys came from (see [`PRESETS`](super::PRESETS)).
    pub preset: String,
    /// A local directory or a Hugging Face repo id.
    pub source: String,
    pub revision: String,
    pub max_seq_len: usize,
    /// Lower-case text before the model's tokenizer (see
    /// `model::encoder::lowercase_first`); false keeps the model's own rule.
    pub lowercase: bool,
    pub precision: Precision,
    /// Under int8 (`precision = "int8"`, or `"auto"` on a CPU where int8
    /// is faster), the linear layers that run in int8 (the others stay
    /// f32); all four by default.
    pub int8_layers: Vec<LinearLayer>,
    pub threads: usize,
}
