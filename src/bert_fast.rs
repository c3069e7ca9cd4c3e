//! shoprank's own BERT forward pass over the same weights as
//! candle-transformers' `BertModel`, built for serving on CPU:
//!
//! - **No work on padding.** The texts of a batch are packed end to end into
//!   one `[total_tokens, hidden]` matrix. Every linear layer (the bulk of the
//!   FLOPs) runs once over the packed rows; only attention, which must not mix
//!   texts, runs per text. A batch of one long and many short texts costs the
//!   sum of their lengths, not `batch × longest`.
//! - **Fused Q/K/V projection**: one `[hidden, 3·hidden]` matrix product.
//! - **Optional int8 weights** (candle's `Q8_0` quantized tensors) for the
//!   linear layers, selected by `encoder.precision`.
//! - Mean pooling is one matrix product with a `[batch, total_tokens]`
//!   averaging matrix.
//!
//! Its f32 output matches `BertModel` to float rounding (checked in tests).

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Result, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{Config, HiddenAct};

use crate::config::Precision;

/// A linear layer `y = x·Wᵀ + b` in either precision.
enum Projection {
    /// `W` stored transposed and contiguous (`[in, out]`) for the gemm.
    F32 { weight_t: Tensor, bias: Tensor },
    /// `W` quantized to 8 bits in blocks of 32 with one f16 scale each.
    Int8 { weight: QMatMul, bias: Tensor },
}

impl Projection {
    fn new(weight: Tensor, bias: Tensor, precision: Precision) -> Result<Self> {
        Ok(match precision {
            Precision::F32 => Projection::F32 { weight_t: weight.t()?.contiguous()?, bias },
            Precision::Int8 => Projection::Int8 {
                weight: QMatMul::from_qtensor(QTensor::quantize(&weight, GgmlDType::Q8_0)?)?,
                bias,
            },
        })
    }

    fn load(vb: &VarBuilder, in_dim: usize, out_dim: usize, precision: Precision) -> Result<Self> {
        let weight = vb.get((out_dim, in_dim), "weight")?;
        let bias = vb.get(out_dim, "bias")?;
        Self::new(weight, bias, precision)
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        match self {
            Projection::F32 { weight_t, bias } => xs.matmul(weight_t)?.broadcast_add(bias),
            Projection::Int8 { weight, bias } => weight.forward(xs)?.broadcast_add(bias),
        }
    }
}

struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl LayerNorm {
    fn load(vb: VarBuilder, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self { weight: vb.get(dim, "weight")?, bias: vb.get(dim, "bias")?, eps: eps as f32 })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        candle_nn::ops::layer_norm(xs, &self.weight, &self.bias, self.eps)
    }
}

struct Layer {
    qkv: Projection,
    attention_out: Projection,
    attention_norm: LayerNorm,
    intermediate: Projection,
    output: Projection,
    output_norm: LayerNorm,
}

impl Layer {
    fn load(vb: VarBuilder, config: &Config, precision: Precision) -> Result<Self> {
        let hidden = config.hidden_size;
        let attn = vb.pp("attention");
        let own = attn.pp("self");
        let weights = ["query", "key", "value"]
            .map(|name| own.pp(name).get((hidden, hidden), "weight"));
        let biases = ["query", "key", "value"].map(|name| own.pp(name).get(hidden, "bias"));
        let [wq, wk, wv] = weights;
        let [bq, bk, bv] = biases;
        let qkv = Projection::new(
            Tensor::cat(&[wq?, wk?, wv?], 0)?,
            Tensor::cat(&[bq?, bk?, bv?], 0)?,
            precision,
        )?;
        Ok(Self {
            qkv,
            attention_out: Projection::load(&attn.pp("output").pp("dense"), hidden, hidden, precision)?,
            attention_norm: LayerNorm::load(attn.pp("output").pp("LayerNorm"), hidden, config.layer_norm_eps)?,
            intermediate: Projection::load(
                &vb.pp("intermediate").pp("dense"),
                hidden,
                config.intermediate_size,
                precision,
            )?,
            output: Projection::load(&vb.pp("output").pp("dense"), config.intermediate_size, hidden, precision)?,
            output_norm: LayerNorm::load(vb.pp("output").pp("LayerNorm"), hidden, config.layer_norm_eps)?,
        })
    }
}

/// The transformer, ready to run packed batches.
pub struct FastBert {
    word_embeddings: Tensor,
    position_embeddings: Tensor,
    token_type_zero: Tensor,
    embedding_norm: LayerNorm,
    layers: Vec<Layer>,
    heads: usize,
    head_dim: usize,
    hidden_act: HiddenAct,
}

impl FastBert {
    pub fn load(vb: VarBuilder, config: &Config, precision: Precision) -> Result<Self> {
        let vb = if vb.contains_tensor("bert.embeddings.word_embeddings.weight") { vb.pp("bert") } else { vb };
        let hidden = config.hidden_size;
        let emb = vb.pp("embeddings");
        let token_types = emb.get((config.type_vocab_size, hidden), "token_type_embeddings.weight")?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| Layer::load(vb.pp(format!("encoder.layer.{i}")), config, precision))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            word_embeddings: emb.get((config.vocab_size, hidden), "word_embeddings.weight")?,
            position_embeddings: emb.get((config.max_position_embeddings, hidden), "position_embeddings.weight")?,
            // Single-sentence inputs: every token has type 0.
            token_type_zero: token_types.get(0)?,
            embedding_norm: LayerNorm::load(emb.pp("LayerNorm"), hidden, config.layer_norm_eps)?,
            layers,
            heads: config.num_attention_heads,
            head_dim: hidden / config.num_attention_heads,
            hidden_act: config.hidden_act,
        })
    }

    /// Runs the texts (token ids incl. `[CLS]`/`[SEP]`) packed, and returns
    /// their mean-pooled last hidden states, `[batch, hidden]`, not yet
    /// normalised.
    pub fn forward_pooled(&self, texts: &[&[u32]], device: &Device) -> Result<Tensor> {
        let lengths: Vec<usize> = texts.iter().map(|t| t.len()).collect();
        let total: usize = lengths.iter().sum();
        let ids: Vec<u32> = texts.iter().flat_map(|t| t.iter().copied()).collect();
        let positions: Vec<u32> = lengths.iter().flat_map(|&l| 0..l as u32).collect();
        let ids = Tensor::from_vec(ids, total, device)?;
        let positions = Tensor::from_vec(positions, total, device)?;

        let xs = self
            .word_embeddings
            .index_select(&ids, 0)?
            .add(&self.position_embeddings.index_select(&positions, 0)?)?
            .broadcast_add(&self.token_type_zero)?;
        let mut xs = self.embedding_norm.forward(&xs)?;
        for layer in &self.layers {
            xs = self.layer_forward(layer, &xs, &lengths)?;
        }
        let pooling = averaging_matrix(&lengths, device)?;
        pooling.matmul(&xs)
    }

    fn layer_forward(&self, layer: &Layer, xs: &Tensor, lengths: &[usize]) -> Result<Tensor> {
        let qkv = layer.qkv.forward(xs)?;
        let context = self.attention(&qkv, lengths)?;
        let attended = layer.attention_norm.forward(&layer.attention_out.forward(&context)?.add(xs)?)?;
        let inner = layer.intermediate.forward(&attended)?;
        let inner = match self.hidden_act {
            HiddenAct::Gelu => inner.gelu_erf()?,
            HiddenAct::GeluApproximate => inner.gelu()?,
            HiddenAct::Relu => inner.relu()?,
        };
        layer.output_norm.forward(&layer.output.forward(&inner)?.add(&attended)?)
    }

    /// Scaled dot-product attention of each text with itself only.
    fn attention(&self, qkv: &Tensor, lengths: &[usize]) -> Result<Tensor> {
        let hidden = self.heads * self.head_dim;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let mut contexts = Vec::with_capacity(lengths.len());
        let mut start = 0;
        for &len in lengths {
            let rows = qkv.narrow(0, start, len)?;
            start += len;
            let split = |part: usize| -> Result<Tensor> {
                rows.narrow(1, part * hidden, hidden)?
                    .reshape((len, self.heads, self.head_dim))?
                    .transpose(0, 1)?
                    .contiguous()
            };
            let (q, k, v) = (split(0)?, split(1)?, split(2)?);
            let scores = (q.matmul(&k.t()?)? * scale)?;
            let probs = candle_nn::ops::softmax_last_dim(&scores)?;
            let context = probs.matmul(&v)?.transpose(0, 1)?.reshape((len, hidden))?;
            contexts.push(context);
        }
        if contexts.len() == 1 {
            return Ok(contexts.pop().expect("one context"));
        }
        Tensor::cat(&contexts, 0)
    }
}

/// `[batch, total]` matrix whose row b holds 1/len_b over text b's tokens.
fn averaging_matrix(lengths: &[usize], device: &Device) -> Result<Tensor> {
    let total: usize = lengths.iter().sum();
    let mut weights = vec![0f32; lengths.len() * total];
    let mut start = 0;
    for (row, &len) in lengths.iter().enumerate() {
        let value = 1.0 / len.max(1) as f32;
        weights[row * total + start..row * total + start + len].fill(value);
        start += len;
    }
    Tensor::from_vec(weights, (lengths.len(), total), device)
}
