//! shoprank's own BERT forward pass over the same weights as
//! candle-transformers' `BertModel`, built for serving on CPU:
//!
//! - **No work on padding.** The texts of a batch are packed end to end into
//!   one `[total_tokens, hidden]` matrix. Every linear layer (the bulk of the
//!   FLOPs) runs once over the packed rows; only attention, which must not mix
//!   texts, runs per text and head (in parallel). A batch of one long and
//!   many short texts costs the sum of their lengths, not `batch × longest`.
//! - **Fused kernels** ([`crate::model::encoder::kernels`]): one `[hidden, 3·hidden]` Q/K/V
//!   product; bias and residual added by the products themselves; heads read
//!   in place from the Q/K/V rows; single-pass GELU, softmax and layer norm.
//!   Candle loads the weights (safetensors, or the hub); the f32 products
//!   call the `gemm` crate that candle itself uses, without candle's per-op
//!   allocation and second thread pool.
//! - **Optional int8 linear layers** ([`crate::model::encoder::int8`]:
//!   per-channel weights packed at load, per-token activations, AMX, VNNI
//!   and AVX2 kernels with bias, residual and GELU in their epilogue),
//!   selected by `encoder.precision` and, per layer, `encoder.int8_layers`.
//!
//! Its f32 output matches `BertModel` to float rounding (checked in tests).

use std::sync::Mutex;

use candle_core::{Device, Result, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{Config, HiddenAct};
use rayon::prelude::*;

use super::Arithmetic;
use crate::config::LinearLayer;
use crate::model::encoder::int8::{Epilogue, Kernel, PackedWeights};
use crate::model::encoder::kernels::{self, Accumulate, Product, SharedOut, View};

/// A linear layer `y = x·Wᵀ + b` in either precision.
struct Projection {
    weight: Weight,
    bias: Vec<f32>,
    in_dim: usize,
    out_dim: usize,
}

enum Weight {
    /// `W` stored transposed and contiguous (`[in, out]`) for the gemm.
    F32(Vec<f32>),
    /// `W` quantised per output channel and packed for the int8 kernels.
    Int8(PackedWeights),
}

impl Projection {
    fn new(weight: Tensor, bias: Tensor, precision: Arithmetic) -> Result<Self> {
        let (out_dim, in_dim) = weight.dims2()?;
        let weight = match precision {
            Arithmetic::F32 => Weight::F32(weight.t()?.contiguous()?.flatten_all()?.to_vec1()?),
            Arithmetic::Int8 => {
                Weight::Int8(PackedWeights::new(&weight.flatten_all()?.to_vec1()?, out_dim, in_dim, Kernel::detect()))
            }
        };
        Ok(Self { weight, bias: bias.to_vec1()?, in_dim, out_dim })
    }

    fn load(vb: &VarBuilder, in_dim: usize, out_dim: usize, precision: Arithmetic) -> Result<Self> {
        let weight = vb.get((out_dim, in_dim), "weight")?;
        let bias = vb.get(out_dim, "bias")?;
        Self::new(weight, bias, precision)
    }

    /// `out = x·Wᵀ + b (+ residual)` for `rows` packed rows, then
    /// `activation` in place if given.
    fn forward(
        &self,
        xs: &[f32],
        rows: usize,
        residual: Option<&[f32]>,
        activation: Option<fn(&mut [f32])>,
        out: &mut [f32],
    ) -> Result<()> {
        let out = &mut out[..rows * self.out_dim];
        match &self.weight {
            Weight::F32(weight_t) => {
                kernels::fill_rows(out, &self.bias, residual);
                let product = Product {
                    a: View::dense(&xs[..rows * self.in_dim], rows, self.in_dim),
                    b: View::dense(weight_t, self.in_dim, self.out_dim),
                    transpose_b: false,
                    scale: 1.0,
                    accumulate: Accumulate::Add,
                    threads: rayon::current_num_threads(),
                };
                product.write(out, self.out_dim);
                if let Some(activation) = activation {
                    out.par_chunks_mut(self.out_dim * kernels::ROWS_PER_TASK).for_each(activation);
                }
            }
            // Bias, residual and activation in the kernels' epilogue, on
            // each stretch of output just computed.
            Weight::Int8(weight) => weight.product(xs, rows, &Epilogue { bias: &self.bias, residual, activation }, out),
        }
        Ok(())
    }
}

struct LayerNorm {
    weight: Vec<f32>,
    bias: Vec<f32>,
    eps: f32,
}

impl LayerNorm {
    fn load(vb: VarBuilder, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self { weight: vb.get(dim, "weight")?.to_vec1()?, bias: vb.get(dim, "bias")?.to_vec1()?, eps: eps as f32 })
    }

    fn apply(&self, xs: &mut [f32]) {
        kernels::layer_norm_rows(xs, &self.weight, &self.bias, self.eps);
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
    fn load(vb: VarBuilder, config: &Config, int8_layers: &[LinearLayer]) -> Result<Self> {
        let precision = |layer| if int8_layers.contains(&layer) { Arithmetic::Int8 } else { Arithmetic::F32 };
        let hidden = config.hidden_size;
        let attn = vb.pp("attention");
        let own = attn.pp("self");
        let weights = ["query", "key", "value"].map(|name| own.pp(name).get((hidden, hidden), "weight"));
        let biases = ["query", "key", "value"].map(|name| own.pp(name).get(hidden, "bias"));
        let [wq, wk, wv] = weights;
        let [bq, bk, bv] = biases;
        let qkv = Projection::new(
            Tensor::cat(&[wq?, wk?, wv?], 0)?,
            Tensor::cat(&[bq?, bk?, bv?], 0)?,
            precision(LinearLayer::Qkv),
        )?;
        Ok(Self {
            qkv,
            attention_out: Projection::load(
                &attn.pp("output").pp("dense"),
                hidden,
                hidden,
                precision(LinearLayer::AttentionOutput),
            )?,
            attention_norm: LayerNorm::load(attn.pp("output").pp("LayerNorm"), hidden, config.layer_norm_eps)?,
            intermediate: Projection::load(
                &vb.pp("intermediate").pp("dense"),
                hidden,
                config.intermediate_size,
                precision(LinearLayer::Intermediate),
            )?,
            output: Projection::load(
                &vb.pp("output").pp("dense"),
                config.intermediate_size,
                hidden,
                precision(LinearLayer::Output),
            )?,
            output_norm: LayerNorm::load(vb.pp("output").pp("LayerNorm"), hidden, config.layer_norm_eps)?,
        })
    }
}

/// The activation buffers of one forward pass, sized for its token rows
/// and reused by every layer and, through [`Activations::take`], by the
/// next pass.
#[derive(Default)]
struct Activations {
    hidden: Vec<f32>,
    qkv: Vec<f32>,
    context: Vec<f32>,
    attended: Vec<f32>,
    inner: Vec<f32>,
}

/// Activation buffers kept between passes up to this size (a user text of
/// 100 tokens needs 1.5 MiB on all-MiniLM-L6-v2); a larger batch's are
/// freed after it, so an idle encoder holds little.
const KEEP_ACTIVATION_BYTES: usize = 8 << 20;

/// One spare set for the process: passes run one at a time on the encoder
/// thread, on whichever pool worker takes them, so one set is enough and the
/// memory kept does not grow with the core count.
static SPARE_ACTIVATIONS: Mutex<Option<Activations>> = Mutex::new(None);

impl Activations {
    /// The spare buffers (or new ones), resized for `rows` token rows. Their
    /// old contents are never read: every kernel writes its output in full.
    fn take(rows: usize, hidden: usize, intermediate: usize) -> Self {
        let spare = SPARE_ACTIVATIONS.lock().unwrap_or_else(|e| e.into_inner()).take();
        let mut acts = spare.unwrap_or_default();
        acts.hidden.resize(rows * hidden, 0.0);
        acts.qkv.resize(rows * 3 * hidden, 0.0);
        acts.context.resize(rows * hidden, 0.0);
        acts.attended.resize(rows * hidden, 0.0);
        acts.inner.resize(rows * intermediate, 0.0);
        acts
    }

    /// Keeps the buffers for the next pass, unless they are large.
    fn give_back(self) {
        let floats = [&self.hidden, &self.qkv, &self.context, &self.attended, &self.inner].map(Vec::capacity);
        if floats.iter().sum::<usize>() * size_of::<f32>() <= KEEP_ACTIVATION_BYTES {
            *SPARE_ACTIVATIONS.lock().unwrap_or_else(|e| e.into_inner()) = Some(self);
        }
    }
}

/// The transformer, ready to run packed batches.
pub(crate) struct FastBert {
    word_embeddings: Vec<f32>,
    position_embeddings: Vec<f32>,
    token_type_zero: Vec<f32>,
    vocab_size: usize,
    max_positions: usize,
    embedding_norm: LayerNorm,
    layers: Vec<Layer>,
    hidden: usize,
    intermediate: usize,
    heads: usize,
    head_dim: usize,
    hidden_act: HiddenAct,
}

impl FastBert {
    /// Loads the weights: the linear layers of `int8_layers` in int8, the
    /// others in f32.
    pub(crate) fn load(vb: VarBuilder, config: &Config, int8_layers: &[LinearLayer]) -> Result<Self> {
        let vb = if vb.contains_tensor("bert.embeddings.word_embeddings.weight") { vb.pp("bert") } else { vb };
        let hidden = config.hidden_size;
        let emb = vb.pp("embeddings");
        let token_types = emb.get((config.type_vocab_size, hidden), "token_type_embeddings.weight")?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| Layer::load(vb.pp(format!("encoder.layer.{i}")), config, int8_layers))
            .collect::<Result<Vec<_>>>()?;
        let table =
            |name: &str, rows: usize| -> Result<Vec<f32>> { emb.get((rows, hidden), name)?.flatten_all()?.to_vec1() };
        Ok(Self {
            word_embeddings: table("word_embeddings.weight", config.vocab_size)?,
            position_embeddings: table("position_embeddings.weight", config.max_position_embeddings)?,
            // Single-sentence inputs: every token has type 0.
            token_type_zero: token_types.get(0)?.to_vec1()?,
            vocab_size: config.vocab_size,
            max_positions: config.max_position_embeddings,
            embedding_norm: LayerNorm::load(emb.pp("LayerNorm"), hidden, config.layer_norm_eps)?,
            layers,
            hidden,
            intermediate: config.intermediate_size,
            heads: config.num_attention_heads,
            head_dim: hidden / config.num_attention_heads,
            hidden_act: config.hidden_act,
        })
    }

    /// Runs the texts (token ids incl. `[CLS]`/`[SEP]`) packed, and returns
    /// their mean-pooled last hidden states, `[batch, hidden]`, not yet
    /// normalised. `stop` is asked before each layer; `None` if it said yes
    /// (nobody waits for these texts any more).
    pub(crate) fn forward_pooled(
        &self,
        texts: &[&[u32]],
        device: &Device,
        stop: &(dyn Fn() -> bool + Sync),
    ) -> Result<Option<Tensor>> {
        let lengths: Vec<usize> = texts.iter().map(|t| t.len()).collect();
        let total: usize = lengths.iter().sum();
        // On a worker of the pool: the pass's many parallel sections are then
        // forks from inside it (a push to its queue), not each a hand-off
        // from this thread that sleeps until a worker is done.
        let pooled = rayon::scope(|_| {
            let mut acts = Activations::take(total, self.hidden, self.intermediate);
            let pooled = self.run_layers(texts, &lengths, &mut acts, stop);
            acts.give_back();
            pooled
        });
        match pooled? {
            Some(pooled) => Tensor::from_vec(pooled, (texts.len(), self.hidden), device).map(Some),
            None => Ok(None),
        }
    }

    /// Embeddings, every layer, and the mean pool, in `acts`.
    fn run_layers(
        &self,
        texts: &[&[u32]],
        lengths: &[usize],
        acts: &mut Activations,
        stop: &(dyn Fn() -> bool + Sync),
    ) -> Result<Option<Vec<f32>>> {
        self.embed(texts, &mut acts.hidden)?;
        for layer in &self.layers {
            if stop() {
                return Ok(None);
            }
            self.layer_forward(layer, acts, lengths)?;
        }
        Ok(Some(self.mean_pool(&acts.hidden, lengths)))
    }

    /// Word + position + type embeddings of every packed token, normalised,
    /// into `xs` (one row per token).
    fn embed(&self, texts: &[&[u32]], xs: &mut [f32]) -> Result<()> {
        let h = self.hidden;
        let mut rows = xs.chunks_exact_mut(h);
        for text in texts {
            if text.len() > self.max_positions {
                candle_core::bail!("text of {} tokens exceeds the {} positions", text.len(), self.max_positions);
            }
            for (position, &id) in text.iter().enumerate() {
                let id = id as usize;
                if id >= self.vocab_size {
                    candle_core::bail!("token id {id} outside the vocabulary of {}", self.vocab_size);
                }
                let row = rows.next().expect("one row per token");
                let word = &self.word_embeddings[id * h..(id + 1) * h];
                let pos = &self.position_embeddings[position * h..(position + 1) * h];
                for (((x, w), p), t) in row.iter_mut().zip(word).zip(pos).zip(&self.token_type_zero) {
                    *x = w + p + t;
                }
            }
        }
        self.embedding_norm.apply(xs);
        Ok(())
    }

    fn layer_forward(&self, layer: &Layer, acts: &mut Activations, lengths: &[usize]) -> Result<()> {
        let rows = lengths.iter().sum();
        layer.qkv.forward(&acts.hidden, rows, None, None, &mut acts.qkv)?;
        self.attention(&acts.qkv, lengths, &mut acts.context);
        layer.attention_out.forward(&acts.context, rows, Some(&acts.hidden), None, &mut acts.attended)?;
        layer.attention_norm.apply(&mut acts.attended);
        let activation: fn(&mut [f32]) = match self.hidden_act {
            HiddenAct::Gelu => kernels::gelu_erf_chunk,
            HiddenAct::Relu => kernels::relu,
            HiddenAct::GeluApproximate => kernels::gelu_tanh_chunk,
        };
        layer.intermediate.forward(&acts.attended, rows, None, Some(activation), &mut acts.inner)?;
        layer.output.forward(&acts.inner, rows, Some(&acts.attended), None, &mut acts.hidden)?;
        layer.output_norm.apply(&mut acts.hidden);
        Ok(())
    }

    /// Scaled dot-product attention of each text with itself only, one
    /// parallel task per (text, head), each reading its head's columns of
    /// the Q/K/V rows in place and writing its own block of `context`.
    fn attention(&self, qkv: &[f32], lengths: &[usize], context: &mut [f32]) {
        let (h, d) = (self.hidden, self.head_dim);
        let scale = 1.0 / (d as f32).sqrt();
        let total: usize = lengths.iter().sum();
        let qkv = View::dense(qkv, total, 3 * h);
        // Head by head, each text's task in turn: rayon first splits the list
        // in halves, which then hold the same texts, so a long user text and
        // the short query embedded beside it load both threads alike (text by
        // text, one half would hold all of the long text's heads).
        let starts: Vec<usize> =
            lengths.iter().scan(0, |start, &len| Some(std::mem::replace(start, *start + len))).collect();
        let tasks: Vec<(usize, usize, usize)> = (0..self.heads)
            .flat_map(|head| starts.iter().zip(lengths).map(move |(&start, &len)| (start, len, head)))
            .collect();
        let out = SharedOut::new(context);
        tasks.into_par_iter().for_each(|(start, len, head)| {
            let query = qkv.block(start, len, head * d, d);
            let key = qkv.block(start, len, h + head * d, d);
            let value = qkv.block(start, len, 2 * h + head * d, d);
            let mut scores = vec![0.0; len * len];
            let scaled_scores =
                Product { a: query, b: key, transpose_b: true, scale, accumulate: Accumulate::Overwrite, threads: 1 };
            scaled_scores.write(&mut scores, len);
            kernels::softmax_rows(&mut scores, len);
            let weighted_values = Product {
                a: View::dense(&scores, len, len),
                b: value,
                transpose_b: false,
                scale: 1.0,
                accumulate: Accumulate::Overwrite,
                threads: 1,
            };
            // SAFETY: (text, head) pairs are distinct, so their blocks of
            // `context` (rows of the text × columns of the head) are disjoint,
            // and `context` stays mutably borrowed until all tasks finish.
            unsafe { weighted_values.write_raw(out.block(start * h + head * d, len, d, h), h) };
        });
    }

    /// Mean of each text's rows.
    fn mean_pool(&self, xs: &[f32], lengths: &[usize]) -> Vec<f32> {
        let h = self.hidden;
        let mut pooled = vec![0.0; lengths.len() * h];
        let mut rows = xs.chunks_exact(h);
        for (out, &len) in pooled.chunks_exact_mut(h).zip(lengths) {
            for row in rows.by_ref().take(len) {
                out.iter_mut().zip(row).for_each(|(o, x)| *o += x);
            }
            let inv = 1.0 / len.max(1) as f32;
            out.iter_mut().for_each(|o| *o *= inv);
        }
        pooled
    }
}
