//! The head's serving form: a loaded head's weights, copied once into plain
//! buffers, scored with a few direct `gemm` calls.
//!
//! Through Candle, one user's 100 candidates cost about fifteen tensor ops
//! per member, each with its own allocation and its own parallel section:
//! 0.8 ms, a quarter of an int8 user-text forward pass, for 15 million
//! multiply-adds. This form runs the same algebra as
//! [`ScoringHead::score_user`](super::ScoringHead::score_user) (the first
//! layer regrouped as `W_u·u + (W_v + W_uv∘u)·v + W_n·n`) with the members'
//! first layers stacked into one product, and the candidates split over
//! rayon's pool when there are enough of them.
//!
//! Only heads loaded from a file get one: a trainer's head changes under
//! its optimiser, and a copy made once would go stale.

use candle_core::Tensor;
use rayon::prelude::*;

use crate::model::encoder::kernels::{Accumulate, Product, View};
use crate::model::features::{Numeric, NUMERIC_LEN};

/// The fewest candidates a parallel task takes. Up to this many are scored
/// on the calling thread: 100 candidates take about half a millisecond of
/// one core, while a hand-off to the pool and back costs a tenth of that
/// when the pool is idle, and waits behind other requests' forward passes
/// when it is not.
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
/// of columns reads: `user`, `item` and `pair` are `members·hidden × dim`,
/// `numeric` `members·hidden × NUMERIC_LEN`, row-major, and `bias` has
/// `members·hidden` values; member `m`'s units are rows
/// `m·hidden..(m + 1)·hidden`.
struct FirstLayers {
    user: Vec<f32>,
    item: Vec<f32>,
    pair: Vec<f32>,
    numeric: Vec<f32>,
    bias: Vec<f32>,
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
    /// output layer; all of the same shape) and the standardisation.
    pub(super) fn new(
        members: &[(&[candle_nn::Linear], &candle_nn::Linear)],
        dim: usize,
        numeric_mean: &Tensor,
        numeric_std: &Tensor,
    ) -> candle_core::Result<Self> {
        let mut first = FirstLayers { user: vec![], item: vec![], pair: vec![], numeric: vec![], bias: vec![] };
        let mut tails = Vec::with_capacity(members.len());
        let mut first_width = 0;
        for &(layers, out) in members {
            let (layer, rest) = layers.split_first().expect("a head has a hidden layer");
            let weight = layer.weight();
            first_width = weight.dim(0)?;
            let columns = |start: usize, width: usize| -> candle_core::Result<Vec<f32>> {
                weight.narrow(1, start, width)?.contiguous()?.flatten_all()?.to_vec1()
            };
            first.user.extend(columns(0, dim)?);
            first.item.extend(columns(dim, dim)?);
            first.pair.extend(columns(2 * dim, dim)?);
            first.numeric.extend(columns(3 * dim, NUMERIC_LEN)?);
            match layer.bias() {
                Some(bias) => first.bias.extend(bias.to_vec1::<f32>()?),
                None => first.bias.extend(std::iter::repeat_n(0.0, first_width)),
            }
            tails.push(Tail {
                hidden: rest.iter().map(Dense::from_linear).collect::<candle_core::Result<_>>()?,
                out: Dense::from_linear(out)?,
            });
        }
        Ok(Self {
            first,
            first_width,
            tails,
            dim,
            numeric_mean: numeric_mean.to_vec1()?,
            numeric_std: numeric_std.to_vec1()?,
        })
    }

    /// Purchase probabilities of `items` (`numeric.len()` rows of `dim`)
    /// for the user `user`.
    pub(super) fn score_user(&self, user: &[f32], items: &[f32], numeric: &[Numeric]) -> Vec<f32> {
        let (n, dim) = (numeric.len(), self.dim);
        // Checked by `ScoringHead::score_user`, the one caller.
        assert_eq!(user.len(), dim, "the user embedding is dim wide");
        assert_eq!(items.len(), n * dim, "one item embedding per numeric row");
        let user_side = self.user_side(user);
        let mut scores = vec![0f32; n];
        if n <= ROWS_PER_TASK {
            self.score_rows(&user_side, items, numeric, &mut scores);
            return scores;
        }
        let rows = ROWS_PER_TASK.max(n.div_ceil(rayon::current_num_threads()));
        scores
            .par_chunks_mut(rows)
            .zip(items.par_chunks(rows * dim))
            .zip(numeric.par_chunks(rows))
            .for_each(|((scores, items), numeric)| self.score_rows(&user_side, items, numeric, scores));
        scores
    }

    /// What every candidate shares: each unit's `W_u·u + b`, and the item
    /// weights `W_v + W_uv∘u`, all members stacked.
    fn user_side(&self, user: &[f32]) -> UserSide {
        let (first, dim) = (&self.first, self.dim);
        let units = first.bias.len();
        let constant = first.user.chunks_exact(dim).zip(&first.bias).map(|(row, bias)| bias + dot(row, user)).collect();
        let mut item_weights = Vec::with_capacity(units * dim);
        for (item, pair) in first.item.chunks_exact(dim).zip(first.pair.chunks_exact(dim)) {
            item_weights.extend(item.iter().zip(pair).zip(user).map(|((w_v, w_uv), u)| w_v + w_uv * u));
        }
        UserSide { constant, item_weights }
    }

    /// Probabilities of some of the candidates, into `scores`.
    fn score_rows(&self, user: &UserSide, items: &[f32], numeric: &[Numeric], scores: &mut [f32]) {
        let (n, dim, units) = (numeric.len(), self.dim, self.first.bias.len());
        let standardised: Vec<f32> = numeric
            .iter()
            .flat_map(|row| row.iter().zip(&self.numeric_mean).zip(&self.numeric_std).map(|((x, m), s)| (x - m) / s))
            .collect();
        let mut first: Vec<f32> = user.constant.iter().copied().cycle().take(n * units).collect();
        product(
            View::dense(&standardised, n, NUMERIC_LEN),
            View::dense(&self.first.numeric, units, NUMERIC_LEN),
            &mut first,
        );
        product(View::dense(items, n, dim), View::dense(&user.item_weights, units, dim), &mut first);
        first.iter_mut().for_each(|x| *x = x.max(0.0));
        let first = View::dense(&first, n, units);
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
        scores.iter_mut().for_each(|s| *s = 1.0 / (1.0 + (-*s / members).exp()));
    }
}

/// See [`ServingHead::user_side`].
struct UserSide {
    constant: Vec<f32>,
    item_weights: Vec<f32>,
}

/// `a·b` in 16 independent lanes, which the compiler vectorises (a plain
/// `sum` is one serial chain of additions).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    let (a_blocks, b_blocks) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = a_blocks.remainder().iter().zip(b_blocks.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in a_blocks.zip(b_blocks) {
        for i in 0..16 {
            lanes[i] += x[i] * y[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// `out += xs·Wᵀ`: `xs.rows × inputs` by the transpose of `outputs ×
/// inputs`, into `out` (`outputs` wide), on this thread.
fn product(xs: View<'_>, weight: View<'_>, out: &mut [f32]) {
    Product { a: xs, b: weight, transpose_b: true, scale: 1.0, accumulate: Accumulate::Add, threads: 1 }
        .write(out, weight.rows);
}
