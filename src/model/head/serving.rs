//! The head's serving form: a loaded head's weights, copied once into plain
//! buffers, scored with a few direct `gemm` calls.
//!
//! Through Candle, one user's 100 candidates cost about fifteen tensor ops
//! per member, each with its own allocation and its own parallel section:
//! 0.8 ms, a quarter of an int8 user-text forward pass, for 15 million
//! multiply-adds. This form runs the same algebra as
//! [`ScoringHead::score_user`](super::ScoringHead::score_user) (the first
//! layer regrouped as `W_u·u + (W_v + W_uv∘u)·v + W_n·n`) with the members'
//! first layers stacked, so all members' first layers are one matrix of
//! units.
//!
//! For a request (`share`), the first layer is cut into blocks of
//! [`UNIT_BLOCK`] units, each a task that builds its own slice of the user
//! side and multiplies all candidates by it (see [`share_tasks`]): the
//! calling thread takes tasks, and so does one of rayon's threads when it
//! is free. Other callers (explanations, evaluation) score on the calling
//! thread, or over the pool for more than [`ROWS_PER_TASK`] candidates. The
//! members' later layers are small; they run on the calling thread, and
//! over the pool only for more than [`ROWS_PER_TASK`] candidates.
//!
//! Under `precision = "int8"` the first layer's embedding part runs on the
//! encoder's int8 kernels instead (see [`EmbeddingWeights::Int8`]): the
//! candidates' `v` and `u⊙v`, quantised per row, against `W_v` and `W_uv`
//! packed at load. The numeric features' part and the later layers stay
//! f32. There the calling thread first quantises the candidates' rows
//! (about 0.07 ms for 100), and only then do the blocks start.
//!
//! Only heads loaded from a file get one: a trainer's head changes under
//! its optimiser, and a copy made once would go stale.

use candle_core::Tensor;
use rayon::prelude::*;

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::model::encoder::dot;
use crate::model::encoder::int8::{Epilogue, Kernel, PackedWeights, QuantisedInputs};
use crate::model::encoder::kernels::{Accumulate, Product, SharedOut, View};
use crate::model::features::{Numeric, NUMERIC_LEN};

/// First-layer units per task: 384 units (three members of 128) make six
/// tasks, enough for two threads to share evenly when one starts late.
const UNIT_BLOCK: usize = 64;

/// The fewest candidates a parallel task of the later layers takes (and, for
/// callers that do not share, the fewest for which the first layer's
/// blocks go over the pool). Up to this many go through the later layers
/// on the calling thread: 100 candidates take about 45 µs there, not much
/// more than a hand-off to the pool.
const ROWS_PER_TASK: usize = 128;

/// A dense layer, `out × in` row-major (as stored), and its bias.
struct Dense {
    weight: Vec<f32>,
    bias: Vec<f32>,
    inputs: usize,
}

impl Dense {
    fn from_linear(layer: &candle_nn::Linear) -> candle_core::Result<Self> {
        let (outputs, inputs) = layer.weight().dims2()?;
        let bias = match layer.bias() {
            Some(bias) => bias.to_vec1::<f32>()?,
            None => vec![0.0; outputs],
        };
        Ok(Self { weight: layer.weight().flatten_all()?.to_vec1()?, bias, inputs })
    }

    fn outputs(&self) -> usize {
        self.bias.len()
    }

    /// `relu(xs·Wᵀ + b)` (or without the ReLU), one row per row of `xs`.
    fn forward(&self, xs: View<'_>, relu: bool) -> Vec<f32> {
        let width = self.outputs();
        let mut out: Vec<f32> = self.bias.iter().copied().cycle().take(xs.rows * width).collect();
        product(xs, View::dense(&self.weight, width, self.inputs), &mut out);
        if relu {
            out.iter_mut().for_each(|x| *x = x.max(0.0));
        }
        out
    }
}

/// Every member's first layer, split by the part of the input each block
/// of columns reads: the embeddings' (`embeddings`), `numeric` (`members·hidden
/// × NUMERIC_LEN`, row-major) and `bias` (`members·hidden` values); member
/// `m`'s units are rows `m·hidden..(m + 1)·hidden`.
struct FirstLayers {
    embeddings: EmbeddingWeights,
    numeric: Vec<f32>,
    bias: Vec<f32>,
}

/// The first layer's weights on the user `u`, the item `v` and their
/// product `u⊙v`, in the precision the head runs in.
enum EmbeddingWeights {
    /// `user`, `item` and `pair` are `members·hidden × dim`, row-major. Per
    /// request, `W_u·u + b` and the item weights `W_v + W_uv∘u` are built
    /// block by block, and all candidates multiplied by the latter:
    /// `D·H` multiply-adds per candidate, but the three f32 matrices
    /// (1.8 MB for 384 units) are read per request.
    F32 { user: Vec<f32>, item: Vec<f32>, pair: Vec<f32> },
    /// Quantised and packed at load (`encoder::int8`): `user` is `W_u`
    /// (all units); `item[b]` and `pair[b]` are units `b·UNIT_BLOCK..` of
    /// `W_v` and `W_uv`, whose inputs are a candidate's `v` and `u⊙v`. Twice
    /// the multiply-adds of the f32 form, but at four times the rate, with
    /// no weights built per request and a quarter of the bytes read (0.44 MB
    /// for 384 units). `v` and `u⊙v` are quantised apart, and so are the
    /// two matrices: with normalised embeddings `u⊙v`'s values are about
    /// √dim times smaller than `v`'s, and one scale for both would leave
    /// them a step or two of the 255.
    Int8 { user: PackedWeights, item: Vec<PackedWeights>, pair: Vec<PackedWeights> },
}

/// A member's layers after the first.
struct Tail {
    hidden: Vec<Dense>,
    out: Dense,
}

/// A loaded head, ready to score one user's candidates.
pub(super) struct ServingHead {
    first: FirstLayers,
    /// Units of each member's first layer.
    first_width: usize,
    tails: Vec<Tail>,
    dim: usize,
    numeric_mean: Vec<f32>,
    numeric_std: Vec<f32>,
}

impl ServingHead {
    /// Copies the weights of `members` (each its hidden layers, then its
    /// output layer; all of the same shape) and the standardisation. With
    /// `int8`, the first layer's embedding part runs in 8-bit integers on
    /// that kernel.
    pub(super) fn new(
        members: &[(&[candle_nn::Linear], &candle_nn::Linear)],
        dim: usize,
        numeric_mean: &Tensor,
        numeric_std: &Tensor,
        int8: Option<Kernel>,
    ) -> candle_core::Result<Self> {
        let (mut user, mut item, mut pair) = (vec![], vec![], vec![]);
        let (mut numeric, mut bias) = (vec![], vec![]);
        let mut tails = Vec::with_capacity(members.len());
        let mut first_width = 0;
        for &(layers, out) in members {
            let (layer, rest) = layers.split_first().expect("a head has a hidden layer");
            let weight = layer.weight();
            first_width = weight.dim(0)?;
            let columns = |start: usize, width: usize| -> candle_core::Result<Vec<f32>> {
                weight.narrow(1, start, width)?.contiguous()?.flatten_all()?.to_vec1()
            };
            user.extend(columns(0, dim)?);
            item.extend(columns(dim, dim)?);
            pair.extend(columns(2 * dim, dim)?);
            numeric.extend(columns(3 * dim, NUMERIC_LEN)?);
            match layer.bias() {
                Some(b) => bias.extend(b.to_vec1::<f32>()?),
                None => bias.extend(std::iter::repeat_n(0.0, first_width)),
            }
            tails.push(Tail {
                hidden: rest.iter().map(Dense::from_linear).collect::<candle_core::Result<_>>()?,
                out: Dense::from_linear(out)?,
            });
        }
        let units = bias.len();
        let embeddings = match int8 {
            None => EmbeddingWeights::F32 { user, item, pair },
            Some(kernel) => {
                let blocks = |weights: &[f32]| -> Vec<PackedWeights> {
                    weights
                        .chunks(UNIT_BLOCK * dim)
                        .map(|block| PackedWeights::new(block, block.len() / dim, dim, kernel))
                        .collect()
                };
                EmbeddingWeights::Int8 {
                    user: PackedWeights::new(&user, units, dim, kernel),
                    item: blocks(&item),
                    pair: blocks(&pair),
                }
            }
        };
        Ok(Self {
            first: FirstLayers { embeddings, numeric, bias },
            first_width,
            tails,
            dim,
            numeric_mean: numeric_mean.to_vec1()?,
            numeric_std: numeric_std.to_vec1()?,
        })
    }

    /// The members' mean logits for `items` (`n` rows of `dim`) for the user
    /// `user` (the head maps them to probabilities), and the candidates'
    /// numeric features, which `numeric` makes
    /// on the calling thread while a pool thread (if one is free) starts on
    /// the candidates' embeddings: the features take about as long as
    /// waking that thread.
    pub(super) fn score_user_with(
        &self,
        user: &[f32],
        items: &[f32],
        numeric: impl FnOnce() -> Vec<Numeric>,
        share: bool,
    ) -> candle_core::Result<(Vec<Numeric>, Vec<f32>)> {
        let dim = self.dim;
        // Checked by `ScoringHead`, the one caller.
        assert_eq!(user.len(), dim, "the user embedding is dim wide");
        assert!(items.len().is_multiple_of(dim), "whole item embeddings");
        let (n, units) = (items.len() / dim, self.first.bias.len());
        if n == 0 {
            return Ok((numeric(), Vec::new()));
        }
        let mut first = vec![0f32; n * units];
        let out = SharedOut::new(&mut first);
        let int8 = match &self.first.embeddings {
            EmbeddingWeights::Int8 { user: user_weights, .. } => {
                Some(Int8Inputs::new(user_weights, &self.first.bias, user, items))
            }
            EmbeddingWeights::F32 { .. } => None,
        };
        let block = |task: usize| {
            let start = task * UNIT_BLOCK;
            let width = UNIT_BLOCK.min(units - start);
            let block = out.block(start, n, width, units);
            // SAFETY: each task index runs once (`share_tasks` hands each
            // out once), so each writes its own columns `start..start +
            // width` of `first`, which stays borrowed by `out` until all are done.
            unsafe {
                match &int8 {
                    Some(inputs) => self.embedding_block_int8(inputs, task, block),
                    None => self.embedding_block(user, items, start, width, block),
                }
            };
        };
        let tasks = units.div_ceil(UNIT_BLOCK);
        let numeric = if share {
            share_tasks(tasks, numeric, block)
        } else if n > ROWS_PER_TASK {
            (0..tasks).into_par_iter().for_each(block);
            numeric()
        } else {
            (0..tasks).for_each(block);
            numeric()
        };
        if numeric.len() != n {
            candle_core::bail!("{} numeric rows for {n} candidates", numeric.len());
        }
        let standardised: Vec<f32> = numeric
            .iter()
            .flat_map(|row| row.iter().zip(&self.numeric_mean).zip(&self.numeric_std).map(|((x, m), s)| (x - m) / s))
            .collect();
        product(
            View::dense(&standardised, n, NUMERIC_LEN),
            View::dense(&self.first.numeric, units, NUMERIC_LEN),
            &mut first,
        );
        first.iter_mut().for_each(|x| *x = x.max(0.0));
        let first = View::dense(&first, n, units);
        let mut scores = vec![0f32; n];
        if n <= ROWS_PER_TASK {
            self.later_layers(first, &mut scores);
        } else {
            let rows = ROWS_PER_TASK.max(n.div_ceil(rayon::current_num_threads()));
            scores.par_chunks_mut(rows).enumerate().for_each(|(chunk, scores)| {
                self.later_layers(first.block(chunk * rows, scores.len(), 0, units), scores)
            });
        }
        Ok((numeric, scores))
    }

    /// The embeddings' part of units `start..start + width` of every
    /// member's first layer, for all candidates: `W_u·u + b + (W_v +
    /// W_uv∘u)·v`, with this block's rows of the user side (`W_u·u + b` and
    /// the item weights `W_v + W_uv∘u`) built here. The numeric features'
    /// part and the ReLU follow once all blocks are done.
    ///
    /// # Safety
    /// `out` must point at the `n × width` block (row stride: all units) of
    /// a buffer that nobody else reads or writes meanwhile.
    unsafe fn embedding_block<'a>(&'a self, user: &[f32], items: &[f32], start: usize, width: usize, out: *mut f32) {
        let (first, dim) = (&self.first, self.dim);
        let EmbeddingWeights::F32 { user: on_user, item: on_item, pair: on_pair } = &first.embeddings else {
            unreachable!("called for the f32 form only")
        };
        let (units, n) = (first.bias.len(), items.len() / dim);
        let block = |weights: &'a [f32]| &weights[start * dim..(start + width) * dim];
        let constant: Vec<f32> = block(on_user)
            .chunks_exact(dim)
            .zip(&first.bias[start..start + width])
            .map(|(row, bias)| bias + dot(row, user))
            .collect();
        let mut item_weights = Vec::with_capacity(width * dim);
        for (item, pair) in block(on_item).chunks_exact(dim).zip(block(on_pair).chunks_exact(dim)) {
            item_weights.extend(item.iter().zip(pair).zip(user).map(|((w_v, w_uv), u)| w_v + w_uv * u));
        }
        for row in 0..n {
            // SAFETY: row `row` of the block: the caller's promise on `out`.
            unsafe { std::slice::from_raw_parts_mut(out.add(row * units), width) }.copy_from_slice(&constant);
        }
        let product = Product {
            a: View::dense(items, n, dim),
            b: View::dense(&item_weights, width, dim),
            transpose_b: true,
            scale: 1.0,
            accumulate: Accumulate::Add,
            threads: 1,
        };
        // SAFETY: the block, as above.
        unsafe { product.write_raw(out, units) };
    }

    /// [`ServingHead::embedding_block`] in int8: block `task`'s units of
    /// `v·W_vᵀ + (u⊙v)·W_uvᵀ + (W_u·u + b)` for all candidates, on weights
    /// packed at load.
    ///
    /// # Safety
    /// As [`ServingHead::embedding_block`], for block `task`.
    unsafe fn embedding_block_int8(&self, inputs: &Int8Inputs, task: usize, out: *mut f32) {
        let EmbeddingWeights::Int8 { item, pair, .. } = &self.first.embeddings else {
            unreachable!("called for the int8 form only")
        };
        let (item, pair) = (&item[task], &pair[task]);
        let (units, n, width) = (self.first.bias.len(), inputs.items.rows(), item.out_dim());
        let start = task * UNIT_BLOCK;
        let mut plain = vec![0f32; n * width];
        let no_bias = Epilogue { bias: &[0.0; UNIT_BLOCK][..width], residual: None, activation: None };
        item.product_quantised(&inputs.items, &no_bias, &mut plain);
        let mut block = vec![0f32; n * width];
        let constant = &inputs.constant[start..start + width];
        let epilogue = Epilogue { bias: constant, residual: Some(&plain), activation: None };
        pair.product_quantised(&inputs.pairs, &epilogue, &mut block);
        for (row, values) in block.chunks_exact(width).enumerate() {
            // SAFETY: row `row` of the block: the caller's promise on `out`.
            unsafe { std::slice::from_raw_parts_mut(out.add(row * units), width) }.copy_from_slice(values);
        }
    }

    /// Mean logits from some candidates' first-layer units (`first`, all
    /// members side by side), into `scores`: each member's later layers,
    /// then the members' mean.
    fn later_layers(&self, first: View<'_>, scores: &mut [f32]) {
        let n = first.rows;
        scores.fill(0.0);
        for (m, tail) in self.tails.iter().enumerate() {
            let mut xs = first.block(0, n, m * self.first_width, self.first_width);
            let mut hidden;
            for layer in &tail.hidden {
                hidden = layer.forward(xs, true);
                xs = View::dense(&hidden, n, layer.outputs());
            }
            let logits = tail.out.forward(xs, false);
            scores.iter_mut().zip(logits).for_each(|(sum, logit)| *sum += logit);
        }
        let members = self.tails.len() as f32;
        scores.iter_mut().for_each(|s| *s /= members);
    }
}

/// What the int8 first layer's blocks share for one request: `W_u·u + b`
/// for every unit, and the candidates' `v` and `u⊙v` rows, quantised.
struct Int8Inputs {
    constant: Vec<f32>,
    items: QuantisedInputs,
    pairs: QuantisedInputs,
}

impl Int8Inputs {
    fn new(user_weights: &PackedWeights, bias: &[f32], user: &[f32], items: &[f32]) -> Self {
        let (dim, kernel) = (user.len(), user_weights.kernel());
        let mut constant = vec![0f32; bias.len()];
        let epilogue = Epilogue { bias, residual: None, activation: None };
        user_weights.product_quantised(&QuantisedInputs::new(user, dim, kernel), &epilogue, &mut constant);
        let products: Vec<f32> = items.chunks_exact(dim).flat_map(|v| v.iter().zip(user).map(|(v, u)| v * u)).collect();
        Self {
            constant,
            items: QuantisedInputs::new(items, dim, kernel),
            pairs: QuantisedInputs::new(&products, dim, kernel),
        }
    }
}

/// Runs `first` on the calling thread, then `run(0)`, …, `run(tasks - 1)`,
/// each once, there and on one of rayon's threads if one comes free: both
/// take the next task from a shared counter until none is left. The pool
/// thread starts at once, while `first` runs, so its wake-up (about 60 µs
/// on a small VM) costs nothing; when the pool is busy with other
/// requests' forward passes, the caller does every task and then waits only
/// until a pool thread has picked up the helper job (a free thread looks for
/// it between the forward passes' parallel sections) and found nothing left.
fn share_tasks<R>(tasks: usize, first: impl FnOnce() -> R, run: impl Fn(usize) + Sync) -> R {
    let next = AtomicUsize::new(0);
    let work = || loop {
        let task = next.fetch_add(1, Ordering::Relaxed);
        if task >= tasks {
            break;
        }
        run(task);
    };
    rayon::in_place_scope(|scope| {
        scope.spawn(|_| work());
        let result = first();
        work();
        result
    })
}

/// `out += xs·Wᵀ`: `xs.rows × inputs` by the transpose of `outputs ×
/// inputs`, into `out` (`outputs` wide), on this thread.
fn product(xs: View<'_>, weight: View<'_>, out: &mut [f32]) {
    Product { a: xs, b: weight, transpose_b: true, scale: 1.0, accumulate: Accumulate::Add, threads: 1 }
        .write(out, weight.rows);
}
