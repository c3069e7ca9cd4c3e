//! The scoring head: an MLP over `[u, v, u⊙v, standardised numeric]` whose
//! sigmoid output is the predicted purchase probability. One struct serves
//! training (autograd through `forward_logits`) and serving (`score_user`,
//! an algebraically identical but cheaper form for many candidates of one
//! user). Weights live in safetensors with stable names (`fc0`, `fc1`, …,
//! `out`, `numeric_mean`, `numeric_std`); the [`HeadSpec`] in the bundle's
//! manifest says what the head expects (see `model::bundle`).
//!
//! A head may be an ensemble of `members` MLPs trained from different seeds
//! on the same examples (weights `m0.fc0`, `m1.fc0`, …, one shared
//! standardisation). Its logit is the members' mean: single MLPs trained
//! from different seeds rank measurably differently on this data, and the
//! mean removes most of that seed noise.
//!
//! - `spec`: the [`HeadSpec`] and its checks (of the spec, and of a
//!   weights file against it), with the [`HeadError`]s that say why not.
//! - `serving`: the loaded head's weights copied for the request path.

use std::path::Path;

use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::{Linear, Module, VarBuilder, VarMap};

use crate::model::calibration::LogitMap;
use crate::model::encoder::int8::Kernel;
use crate::model::encoder::Arithmetic;
use crate::model::features::{Numeric, NUMERIC_LEN};

mod serving;
mod spec;

use serving::ServingHead;
use spec::member_prefix;
pub(crate) use spec::{HeadError, HeadSpec};

/// One MLP of the head.
struct Member {
    layers: Vec<Linear>,
    out: Linear,
}

impl Member {
    fn new(vb: VarBuilder, spec: &HeadSpec) -> candle_core::Result<Self> {
        let mut layers = Vec::new();
        let mut width = spec.input_len();
        for (i, &hidden) in spec.hidden.iter().enumerate() {
            layers.push(candle_nn::linear(width, hidden, vb.pp(format!("fc{i}")))?);
            width = hidden;
        }
        Ok(Self { layers, out: candle_nn::linear(width, 1, vb.pp("out"))? })
    }
}

/// The MLPs and their shared feature standardisation.
pub struct ScoringHead {
    members: Vec<Member>,
    numeric_mean: Tensor,
    numeric_std: Tensor,
    spec: HeadSpec,
    device: Device,
    /// The weights copied for the request path; only for a head loaded from
    /// a file, whose weights never change (see `serving`).
    serving: Option<ServingHead>,
    /// Maps the mean logit before the sigmoid: the bundle's calibration
    /// (see `model::calibration`), else the identity.
    logit_map: LogitMap,
}

impl ScoringHead {
    /// Builds the head over `vb`: fresh variables when `vb` is backed by a
    /// `VarMap` (training), stored weights when backed by a file (serving).
    pub(crate) fn new(vb: VarBuilder, spec: HeadSpec) -> Result<Self, HeadError> {
        spec.validate()?;
        let members = (0..spec.members)
            .map(|i| match spec.members {
                1 => Member::new(vb.clone(), &spec),
                _ => Member::new(vb.pp(format!("m{i}")), &spec),
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let n = spec.numeric_features.len();
        let numeric_mean = vb.get_with_hints(n, "numeric_mean", candle_nn::Init::Const(0.0))?;
        let numeric_std = vb.get_with_hints(n, "numeric_std", candle_nn::Init::Const(1.0))?;
        Ok(Self {
            members,
            numeric_mean,
            numeric_std,
            spec,
            device: vb.device().clone(),
            serving: None,
            logit_map: LogitMap::identity(),
        })
    }

    /// Loads trained weights for `spec` from a safetensors file, checked
    /// against the spec tensor by tensor. `precision` is the arithmetic of
    /// the first layer's embedding part when serving (see `serving`): the
    /// service passes its encoder's, so `precision = "int8"` speeds up both.
    pub(crate) fn load(weights: &Path, spec: HeadSpec, precision: Arithmetic) -> Result<Self, HeadError> {
        let device = Device::Cpu;
        let mut tensors = candle_core::safetensors::load(weights, &device)?;
        spec.check_weights(&tensors)?;
        if spec.predates_lexical_features() {
            tracing::warn!(
                weights = %weights.display(),
                "the head was trained before the lexical features: it scores as it did, without them; retrain \
                 with `shoprank train` to learn them"
            );
        }
        let spec = spec.widened(&mut tensors)?;
        let mut head = Self::new(VarBuilder::from_tensors(tensors, DType::F32, &device), spec)?;
        let members: Vec<(&[Linear], &Linear)> = head.members.iter().map(|m| (&m.layers[..], &m.out)).collect();
        let int8 = match precision {
            Arithmetic::F32 => None,
            Arithmetic::Int8 => Some(Kernel::detect()),
        };
        let (dim, mean, std) = (head.spec.encoder.dim, &head.numeric_mean, &head.numeric_std);
        head.serving = Some(ServingHead::new(&members, dim, mean, std, int8)?);
        Ok(head)
    }

    /// The head with its probabilities calibrated by `map` (a bundle's
    /// calibration; see `model::calibration`). The map is strictly
    /// increasing, so the order of any candidates is the same.
    pub(crate) fn with_logit_map(mut self, map: LogitMap) -> Self {
        self.logit_map = map;
        self
    }

    #[cfg(test)]
    pub(crate) fn spec(&self) -> &HeadSpec {
        &self.spec
    }

    /// The mean of each numeric feature over the training examples: the
    /// "average pair" explanations measure contributions against.
    pub(crate) fn numeric_means(&self) -> candle_core::Result<Numeric> {
        let means = self.numeric_mean.to_vec1::<f32>()?;
        let mut out = [0f32; NUMERIC_LEN];
        out.copy_from_slice(&means[..NUMERIC_LEN]);
        Ok(out)
    }

    /// Logits for a batch of pairs: `u`, `v` are `[B, D]`, `numeric` `[B, K]`.
    /// In training, `dropout_masks[i]` (`[B, hidden_i]`, entries 0 or
    /// 1/(1-p)) multiplies hidden layer i; the trainer draws them from its
    /// seeded generator so runs are reproducible.
    #[cfg_attr(not(feature = "offline"), allow(dead_code))] // training's
    pub(crate) fn forward_logits(
        &self,
        u: &Tensor,
        v: &Tensor,
        numeric: &Tensor,
        dropout_masks: Option<&[Tensor]>,
    ) -> candle_core::Result<Tensor> {
        let standardised = numeric.broadcast_sub(&self.numeric_mean)?.broadcast_div(&self.numeric_std)?;
        let input = Tensor::cat(&[u, v, &(u * v)?, &standardised], 1)?;
        let mut total: Option<Tensor> = None;
        for member in &self.members {
            let mut xs = input.clone();
            for (i, layer) in member.layers.iter().enumerate() {
                xs = layer.forward(&xs)?.relu()?;
                if let Some(masks) = dropout_masks {
                    xs = xs.mul(&masks[i])?;
                }
            }
            let logits = member.out.forward(&xs)?.squeeze(D::Minus1)?;
            total = Some(match total {
                None => logits,
                Some(sum) => (sum + logits)?,
            });
        }
        total.expect("a head has at least one member") / self.members.len() as f64
    }

    /// Purchase probabilities of many candidates for one user.
    ///
    /// The first layer's product with `[u, v, u⊙v, n]` is regrouped as
    /// `W_u·u + (W_v + W_uv∘u)·v + W_n·n`: the user part is computed once, and
    /// each candidate costs a `D`-wide product instead of `3D`. A loaded
    /// head runs it on its copied weights, without Candle (see `serving`).
    /// On the calling thread: explanations score one candidate at a time,
    /// and evaluation many users at once.
    pub(crate) fn score_user(
        &self,
        user: &[f32],
        items: &Tensor,
        numeric: &[Numeric],
    ) -> candle_core::Result<Vec<f32>> {
        Ok(self.scored(user, items, || numeric.to_vec(), false)?.1)
    }

    /// As [`ScoringHead::score_user`] for one request, with the numeric
    /// features made by `numeric` and returned beside the probabilities: a
    /// loaded head shares its first layer with a pool thread, which starts
    /// on the embeddings while `numeric` runs on this thread (see `serving`).
    pub(crate) fn score_user_with(
        &self,
        user: &[f32],
        items: &Tensor,
        numeric: impl FnOnce() -> Vec<Numeric>,
    ) -> candle_core::Result<(Vec<Numeric>, Vec<f32>)> {
        self.scored(user, items, numeric, true)
    }

    /// The members' mean logits of [`ScoringHead::score_user`], before the
    /// calibration and the sigmoid: what a calibration map is fitted to.
    #[cfg_attr(not(feature = "offline"), allow(dead_code))] // training's
    pub(crate) fn mean_logits(
        &self,
        user: &[f32],
        items: &Tensor,
        numeric: &[Numeric],
    ) -> candle_core::Result<Vec<f32>> {
        Ok(self.logits(user, items, || numeric.to_vec(), false)?.1)
    }

    fn probabilities(&self, logits: Vec<f32>) -> Vec<f32> {
        logits.into_iter().map(|logit| self.logit_map.probability(logit)).collect()
    }

    fn scored(
        &self,
        user: &[f32],
        items: &Tensor,
        numeric: impl FnOnce() -> Vec<Numeric>,
        share: bool,
    ) -> candle_core::Result<(Vec<Numeric>, Vec<f32>)> {
        let (numeric, logits) = self.logits(user, items, numeric, share)?;
        Ok((numeric, self.probabilities(logits)))
    }

    fn logits(
        &self,
        user: &[f32],
        items: &Tensor,
        numeric: impl FnOnce() -> Vec<Numeric>,
        share: bool,
    ) -> candle_core::Result<(Vec<Numeric>, Vec<f32>)> {
        let dim = self.spec.encoder.dim;
        let n = items.dims().first().copied().unwrap_or(0);
        if user.len() != dim || items.dims() != [n, dim] {
            candle_core::bail!(
                "the user is {} wide and the candidates {:?}, not rows of {dim}",
                user.len(),
                items.dims()
            );
        }
        let (numeric, scores) = match &self.serving {
            Some(serving) if n > 0 => {
                let (storage, layout) = items.storage_and_layout();
                match (&*storage, layout.contiguous_offsets()) {
                    (candle_core::Storage::Cpu(cpu), Some((start, end))) => {
                        serving.score_user_with(user, &cpu.as_slice::<f32>()?[start..end], numeric, share)?
                    }
                    _ => serving.score_user_with(user, &items.flatten_all()?.to_vec1::<f32>()?, numeric, share)?,
                }
            }
            _ => {
                let numeric = numeric();
                if numeric.len() != n {
                    candle_core::bail!("{} numeric rows for {n} candidates", numeric.len());
                }
                let scores = if n == 0 { Vec::new() } else { self.score_with_candle(user, items, &numeric)? };
                (numeric, scores)
            }
        };
        Ok((numeric, scores))
    }

    /// The members' mean logits of [`ScoringHead::score_user`] through
    /// Candle, on the head's own variables (a trainer's head, whose weights
    /// move).
    fn score_with_candle(&self, user: &[f32], items: &Tensor, numeric: &[Numeric]) -> candle_core::Result<Vec<f32>> {
        let (n, dim) = (numeric.len(), self.spec.encoder.dim);
        let u = Tensor::from_slice(user, (1, dim), &self.device)?;
        let flat: Vec<f32> = numeric.iter().flatten().copied().collect();
        let numeric = Tensor::from_vec(flat, (n, NUMERIC_LEN), &self.device)?;
        let standardised = numeric.broadcast_sub(&self.numeric_mean)?.broadcast_div(&self.numeric_std)?;

        let mut total: Option<Tensor> = None;
        for member in &self.members {
            let (first, rest) = member.layers.split_first().expect("the head has a hidden layer");
            let w = first.weight();
            let w_u = w.narrow(1, 0, dim)?;
            let w_v = w.narrow(1, dim, dim)?;
            let w_uv = w.narrow(1, 2 * dim, dim)?;
            let w_n = w.narrow(1, 3 * dim, NUMERIC_LEN)?;
            let user_part = u.matmul(&w_u.t()?)?; // [1, H]
            let user_part = match first.bias() {
                Some(b) => user_part.broadcast_add(b)?,
                None => user_part,
            };
            let item_weights = w_v.add(&w_uv.broadcast_mul(&u)?)?; // [H, D]
            let mut xs = items
                .matmul(&item_weights.t()?)?
                .add(&standardised.matmul(&w_n.t()?)?)?
                .broadcast_add(&user_part)?
                .relu()?;
            for layer in rest {
                xs = layer.forward(&xs)?.relu()?;
            }
            let logits = member.out.forward(&xs)?.squeeze(D::Minus1)?;
            total = Some(match total {
                None => logits,
                Some(sum) => (sum + logits)?,
            });
        }
        let mean = (total.expect("a head has at least one member") / self.members.len() as f64)?;
        mean.to_vec1::<f32>()
    }

    /// Sets the standardisation from training features (`[N, K]`).
    #[cfg_attr(not(feature = "offline"), allow(dead_code))] // training's
    pub(crate) fn fit_standardisation(varmap: &mut VarMap, numeric: &Tensor) -> candle_core::Result<()> {
        let mean = numeric.mean(0)?;
        let std = numeric.broadcast_sub(&mean)?.sqr()?.mean(0)?.sqrt()?.clamp(1e-3, f64::MAX)?;
        varmap.set_one("numeric_mean", mean)?;
        varmap.set_one("numeric_std", std)?;
        Ok(())
    }
}

/// The weights of one head made of `members` trained alone: with several members, each one's
/// variables move under its prefix (`m0.`, `m1.`, …); the standardisation,
/// fitted on the same examples by every member, is taken from the first.
/// Serving loads the merged result.
#[cfg_attr(not(feature = "offline"), allow(dead_code))] // training's
pub(crate) fn merge_members(members: &[VarMap]) -> candle_core::Result<VarMap> {
    let merged = VarMap::new();
    {
        let mut out = merged.data().lock().expect("varmap lock");
        for (index, member) in members.iter().enumerate() {
            let vars = member.data().lock().expect("varmap lock");
            for (name, var) in vars.iter() {
                let shared = name.starts_with("numeric_");
                if shared && index > 0 {
                    continue;
                }
                let name = if shared { name.clone() } else { format!("{}{name}", member_prefix(index, members.len())) };
                out.insert(name, Var::from_tensor(&var.as_tensor().copy()?)?);
            }
        }
    }
    Ok(merged)
}

#[cfg(test)]
mod tests;
