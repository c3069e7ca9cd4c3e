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
//! from different seeds differ by about 0.01 NDCG@10 on this data, and the
//! mean removes most of that seed noise.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::{Linear, Module, VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use crate::model::encoder::int8::Kernel;
use crate::model::encoder::{Arithmetic, EncoderIdentity};
use crate::model::features::{Numeric, NUMERIC_FEATURES, NUMERIC_LEN};

mod serving;

use serving::ServingHead;

/// Spec format understood by this build.
pub const SPEC_FORMAT: u32 = 1;

/// What the head expects: its input layout, its shape, and the encoder whose
/// embeddings it was trained on. Validated once, when a bundle is loaded or a
/// trainer creates it, so a head that exists is a head that can score.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HeadSpec {
    pub format: u32,
    /// `["u", "v", "u*v", <numeric feature names>]`.
    pub feature_layout: Vec<String>,
    pub numeric_features: Vec<String>,
    /// Widths of the hidden layers (at least one).
    pub hidden: Vec<usize>,
    /// MLPs whose logits are averaged (at least one).
    pub members: usize,
    pub encoder: EncoderIdentity,
}

impl HeadSpec {
    /// The spec of a head this build trains, checked.
    pub fn new(encoder: EncoderIdentity, hidden: Vec<usize>, members: usize) -> Result<Self, HeadError> {
        let (feature_layout, numeric_features) = expected_layout();
        let spec = Self { format: SPEC_FORMAT, feature_layout, numeric_features, hidden, members, encoder };
        spec.validate()?;
        Ok(spec)
    }

    /// Checks that this build can run the head the spec describes.
    pub fn validate(&self) -> Result<(), HeadError> {
        let invalid = |problem: String| Err(HeadError::InvalidSpec(problem));
        let (layout, expected) = expected_layout();
        if self.format != SPEC_FORMAT || self.numeric_features != expected {
            return Err(HeadError::Incompatible {
                found: self.format,
                features: self.numeric_features.clone(),
                expected,
            });
        }
        if self.feature_layout != layout {
            return invalid(format!("feature_layout {:?} is not {layout:?}", self.feature_layout));
        }
        if self.hidden.is_empty() || self.hidden.contains(&0) {
            return invalid(format!("hidden must list at least one layer, each of width >= 1 (got {:?})", self.hidden));
        }
        if self.members == 0 {
            return invalid("members must be at least 1".into());
        }
        if self.encoder.dim == 0 || self.encoder.name.trim().is_empty() {
            return invalid(format!("encoder must have a name and a width >= 1 (got {:?})", self.encoder));
        }
        Ok(())
    }

    pub fn input_len(&self) -> usize {
        3 * self.encoder.dim + self.numeric_features.len()
    }

    /// Every tensor a weights file for this spec holds, with its shape.
    fn expected_tensors(&self) -> BTreeMap<String, Vec<usize>> {
        let mut tensors = BTreeMap::new();
        for index in 0..self.members {
            let prefix = member_prefix(index, self.members);
            let mut width = self.input_len();
            let layers = self.hidden.iter().enumerate().map(|(i, &h)| (format!("fc{i}"), h));
            for (name, out) in layers.chain([("out".to_string(), 1)]) {
                tensors.insert(format!("{prefix}{name}.weight"), vec![out, width]);
                tensors.insert(format!("{prefix}{name}.bias"), vec![out]);
                width = out;
            }
        }
        let n = self.numeric_features.len();
        tensors.insert("numeric_mean".into(), vec![n]);
        tensors.insert("numeric_std".into(), vec![n]);
        tensors
    }

    /// Refuses weights that do not fit this spec exactly (a missing, extra
    /// or misshapen tensor: the file and the spec come from different
    /// heads) or that cannot score (a value that is not finite, a feature
    /// scale that is not positive).
    fn check_weights(&self, tensors: &HashMap<String, Tensor>) -> Result<(), HeadError> {
        // Each member has at least two tensors: a spec claiming more members
        // than the file could hold (a billion) is refused before the list
        // of expected names is built from it.
        if self.members > tensors.len() {
            return Err(HeadError::Mismatch(format!(
                "the file holds {} tensors, too few for members = {}",
                tensors.len(),
                self.members
            )));
        }
        let expected = self.expected_tensors();
        let missing: Vec<&String> = expected.keys().filter(|name| !tensors.contains_key(*name)).collect();
        let mut extra: Vec<&String> = tensors.keys().filter(|name| !expected.contains_key(*name)).collect();
        extra.sort();
        let mismatch = |problem: String| {
            Err(HeadError::Mismatch(format!(
                "{problem} (the spec has hidden = {:?}, members = {}, input width {})",
                self.hidden,
                self.members,
                self.input_len()
            )))
        };
        if !missing.is_empty() {
            return mismatch(format!("tensors {missing:?} are missing"));
        }
        if !extra.is_empty() {
            return mismatch(format!("tensors {extra:?} are not part of this head"));
        }
        for (name, shape) in &expected {
            let tensor = &tensors[name];
            if tensor.dims() != shape.as_slice() {
                return mismatch(format!("tensor {name} has shape {:?}, not {shape:?}", tensor.dims()));
            }
            let values = tensor.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            let bad = values.iter().filter(|v| !v.is_finite()).count();
            if bad > 0 {
                return Err(HeadError::Unusable(format!("tensor {name} holds {bad} values that are not finite")));
            }
            if name == "numeric_std" && values.iter().any(|&v| v <= 0.0) {
                return Err(HeadError::Unusable("numeric_std holds a scale <= 0".into()));
            }
        }
        Ok(())
    }
}

/// The input layout this build feeds a head (`[u, v, u*v, numeric…]`) and
/// its numeric part alone.
fn expected_layout() -> (Vec<String>, Vec<String>) {
    let numeric: Vec<String> = NUMERIC_FEATURES.iter().map(|s| s.to_string()).collect();
    let layout = ["u", "v", "u*v"].into_iter().map(String::from).chain(numeric.iter().cloned()).collect();
    (layout, numeric)
}

#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    #[error(
        "the head has spec format {found} and numeric features {features:?}; this build expects format \
         {SPEC_FORMAT} with {expected:?}: retrain with `shoprank train`"
    )]
    Incompatible { found: u32, features: Vec<String>, expected: Vec<String> },
    #[error("the head spec is not valid: {0}")]
    InvalidSpec(String),
    #[error("the weights do not match the head spec in bundle.json: {0}")]
    Mismatch(String),
    #[error("the weights cannot score: {0}")]
    Unusable(String),
    #[error("head weights: {0}")]
    Candle(#[from] candle_core::Error),
}

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

/// The weight-name prefix of member `index` of a head with `members` MLPs.
fn member_prefix(index: usize, members: usize) -> String {
    if members == 1 {
        String::new()
    } else {
        format!("m{index}.")
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
}

impl ScoringHead {
    /// Builds the head over `vb`: fresh variables when `vb` is backed by a
    /// `VarMap` (training), stored weights when backed by a file (serving).
    pub fn new(vb: VarBuilder, spec: HeadSpec) -> Result<Self, HeadError> {
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
        Ok(Self { members, numeric_mean, numeric_std, spec, device: vb.device().clone(), serving: None })
    }

    /// Loads trained weights for `spec` from a safetensors file, checked
    /// against the spec tensor by tensor. `precision` is the arithmetic of
    /// the first layer's embedding part when serving (see `serving`): the
    /// service passes its encoder's, so `precision = "int8"` speeds up both.
    pub fn load(weights: &Path, spec: HeadSpec, precision: Arithmetic) -> Result<Self, HeadError> {
        let device = Device::Cpu;
        let tensors = candle_core::safetensors::load(weights, &device)?;
        spec.check_weights(&tensors)?;
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

    pub fn spec(&self) -> &HeadSpec {
        &self.spec
    }

    /// The mean of each numeric feature over the training examples: the
    /// "average pair" explanations measure contributions against.
    pub fn numeric_means(&self) -> candle_core::Result<Numeric> {
        let means = self.numeric_mean.to_vec1::<f32>()?;
        let mut out = [0f32; NUMERIC_LEN];
        out.copy_from_slice(&means[..NUMERIC_LEN]);
        Ok(out)
    }

    /// Logits for a batch of pairs: `u`, `v` are `[B, D]`, `numeric` `[B, K]`.
    /// In training, `dropout_masks[i]` (`[B, hidden_i]`, entries 0 or
    /// 1/(1-p)) multiplies hidden layer i; the trainer draws them from its
    /// seeded generator so runs are reproducible.
    pub fn forward_logits(
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
    pub fn score_user(&self, user: &[f32], items: &Tensor, numeric: &[Numeric]) -> candle_core::Result<Vec<f32>> {
        Ok(self.scored(user, items, || numeric.to_vec(), false)?.1)
    }

    /// As [`ScoringHead::score_user`] for one request, with the numeric
    /// features made by `numeric` and returned beside the probabilities: a
    /// loaded head shares its first layer with a pool thread, which starts
    /// on the embeddings while `numeric` runs on this thread (see `serving`).
    pub fn score_user_with(
        &self,
        user: &[f32],
        items: &Tensor,
        numeric: impl FnOnce() -> Vec<Numeric>,
    ) -> candle_core::Result<(Vec<Numeric>, Vec<f32>)> {
        self.scored(user, items, numeric, true)
    }

    fn scored(
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

    /// [`ScoringHead::score_user`] through Candle, on the head's own
    /// variables (a trainer's head, whose weights move).
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
        candle_nn::ops::sigmoid(&mean)?.to_vec1::<f32>()
    }

    /// Sets the standardisation from training features (`[N, K]`).
    pub fn fit_standardisation(varmap: &mut VarMap, numeric: &Tensor) -> candle_core::Result<()> {
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
pub fn merge_members(members: &[VarMap]) -> candle_core::Result<VarMap> {
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
mod tests {
    use super::*;

    fn fresh(dim: usize) -> (VarMap, ScoringHead) {
        fresh_shaped(dim, vec![8, 4])
    }

    /// `weights` saved as a head file and loaded back for `spec`, once per
    /// precision.
    fn saved_and_loaded<const N: usize>(
        weights: &VarMap,
        spec: &HeadSpec,
        precisions: [Arithmetic; N],
    ) -> [ScoringHead; N] {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("shoprank-head-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("head.safetensors");
        weights.save(&file).unwrap();
        let heads = precisions.map(|precision| ScoringHead::load(&file, spec.clone(), precision).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
        heads
    }

    /// `n` rows of random numeric features.
    fn random_numeric(n: usize) -> Vec<Numeric> {
        let numeric = Tensor::randn(0f32, 3.0, (n, NUMERIC_LEN), &Device::Cpu).unwrap();
        numeric.to_vec2::<f32>().unwrap().into_iter().map(|r| r.try_into().unwrap()).collect()
    }

    fn fresh_shaped(dim: usize, hidden: Vec<usize>) -> (VarMap, ScoringHead) {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let spec = HeadSpec::new(EncoderIdentity { name: "enc".into(), dim }, hidden, 1).unwrap();
        let head = ScoringHead::new(vb, spec).unwrap();
        (varmap, head)
    }

    #[test]
    fn score_user_equals_the_concatenated_forward() {
        let dim = 6;
        let (mut varmap, head) = fresh(dim);
        let numeric = Tensor::randn(0f32, 3.0, (5, NUMERIC_LEN), &Device::Cpu).unwrap();
        ScoringHead::fit_standardisation(&mut varmap, &numeric).unwrap();
        let head = ScoringHead::new(VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu), head.spec).unwrap();
        let user: Vec<f32> = (0..dim).map(|i| i as f32 / 10.0 - 0.2).collect();
        let items = Tensor::randn(0f32, 1.0, (5, dim), &Device::Cpu).unwrap();
        let rows: Vec<Numeric> = numeric.to_vec2::<f32>().unwrap().into_iter().map(|r| r.try_into().unwrap()).collect();
        let fast = head.score_user(&user, &items, &rows).unwrap();
        let u = Tensor::from_slice(&user, (1, dim), &Device::Cpu).unwrap().broadcast_as((5, dim)).unwrap();
        let slow = candle_nn::ops::sigmoid(&head.forward_logits(&u, &items, &numeric, None).unwrap())
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for (a, b) in fast.iter().zip(&slow) {
            assert!((a - b).abs() < 1e-5, "{fast:?} vs {slow:?}");
        }
    }

    #[test]
    fn an_ensemble_scores_with_the_mean_of_its_members_logits() {
        let dim = 6;
        let (first_map, first) = fresh(dim);
        let (second_map, second) = fresh(dim);
        let mut spec = first.spec().clone();
        spec.members = 2;
        let merged = merge_members(&[first_map, second_map]).unwrap();
        let ensemble = ScoringHead::new(VarBuilder::from_varmap(&merged, DType::F32, &Device::Cpu), spec).unwrap();
        let user: Vec<f32> = (0..dim).map(|i| 0.3 - i as f32 / 20.0).collect();
        let items = Tensor::randn(0f32, 1.0, (4, dim), &Device::Cpu).unwrap();
        let rows = [[0.2; NUMERIC_LEN], [-1.0; NUMERIC_LEN], [0.0; NUMERIC_LEN], [3.0; NUMERIC_LEN]];
        // The members' logits themselves: recovered from their probabilities,
        // a member sure of an item (p within 1e-6 of 1) would lose them to
        // f32 rounding.
        let u = Tensor::from_slice(&user, (1, dim), &Device::Cpu).unwrap().broadcast_as((4, dim)).unwrap();
        let numeric = Tensor::new(&rows, &Device::Cpu).unwrap();
        let logits =
            |head: &ScoringHead| head.forward_logits(&u, &items, &numeric, None).unwrap().to_vec1::<f32>().unwrap();
        let (a, b) = (logits(&first), logits(&second));
        let both = ensemble.score_user(&user, &items, &rows).unwrap();
        for i in 0..rows.len() {
            let expected = 1.0 / (1.0 + (-(a[i] + b[i]) / 2.0).exp());
            assert!((both[i] - expected).abs() < 1e-5, "item {i}: {} vs {expected}", both[i]);
        }
        assert_ne!(a, b, "members start from different weights");
    }

    /// A loaded head scores on its copied weights (`serving`), without
    /// Candle: the same probabilities as the trained head, for an ensemble
    /// with two hidden layers and a fitted standardisation, on a few
    /// candidates and on many (whose later layers split over the pool), on
    /// the calling thread and with the first layer shared with the pool.
    #[test]
    fn a_loaded_head_scores_as_the_trained_one() {
        // Wider than the 16 lanes of `encoder::dot`, which the serving form uses, with a
        // remainder; two members of 72 units make 144 first-layer units: two
        // whole blocks of the serving form's tasks and a part.
        let dim = 40;
        let (mut first_map, first) = fresh_shaped(dim, vec![72, 4]);
        let (second_map, _) = fresh_shaped(dim, vec![72, 4]);
        let fitted_on = Tensor::randn(0f32, 3.0, (50, NUMERIC_LEN), &Device::Cpu).unwrap();
        ScoringHead::fit_standardisation(&mut first_map, &fitted_on).unwrap();
        let mut spec = first.spec().clone();
        spec.members = 2;
        let merged = merge_members(&[first_map, second_map]).unwrap();
        let trained = ScoringHead::new(VarBuilder::from_varmap(&merged, DType::F32, &Device::Cpu), spec).unwrap();
        let [loaded] = saved_and_loaded(&merged, trained.spec(), [Arithmetic::F32]);
        assert!(loaded.serving.is_some() && trained.serving.is_none());

        let user: Vec<f32> = (0..dim).map(|i| 0.25 - i as f32 / 12.0).collect();
        for n in [7, 300] {
            let items = Tensor::randn(0f32, 1.0, (n, dim), &Device::Cpu).unwrap();
            let rows = random_numeric(n);
            let expected = trained.score_user(&user, &items, &rows).unwrap();
            let served = loaded.score_user(&user, &items, &rows).unwrap();
            let (numeric, shared) = loaded.score_user_with(&user, &items, || rows.clone()).unwrap();
            assert_eq!(numeric, rows);
            for served in [served, shared] {
                assert_eq!(served.len(), n);
                for (a, b) in served.iter().zip(&expected) {
                    assert!((a - b).abs() < 1e-6, "{n} candidates: {a} vs {b}");
                }
            }
        }
        let rows = [[0.5; NUMERIC_LEN]; 7];
        let wrong = Tensor::zeros((6, dim), DType::F32, &Device::Cpu).unwrap();
        let err = loaded.score_user(&user, &wrong, &rows).unwrap_err().to_string();
        assert!(err.contains("7 numeric rows for 6 candidates"), "{err}");
        let err = loaded.score_user(&user[1..], &wrong, &rows[..6]).unwrap_err().to_string();
        assert!(err.contains("the user is 39 wide and the candidates [6, 40], not rows of 40"), "{err}");
    }

    /// In int8 (`precision = "int8"`), a loaded head's first layer runs on
    /// quantised weights and inputs: its probabilities stay close to f32's,
    /// and are the same bits whether the first layer is shared with the
    /// pool, split over it (many candidates) or run on the calling thread.
    #[test]
    fn an_int8_head_scores_close_to_f32_and_alike_on_every_path() {
        // A real encoder's width.
        let dim = 384;
        let (mut map, head) = fresh_shaped(dim, vec![72, 4]);
        let fitted_on = Tensor::randn(0f32, 3.0, (50, NUMERIC_LEN), &Device::Cpu).unwrap();
        ScoringHead::fit_standardisation(&mut map, &fitted_on).unwrap();
        let [f32_head, int8_head] = saved_and_loaded(&map, head.spec(), [Arithmetic::F32, Arithmetic::Int8]);

        let normalised =
            |rows: Tensor| rows.broadcast_div(&rows.sqr().unwrap().sum_keepdim(1).unwrap().sqrt().unwrap());
        let user =
            Tensor::from_vec((0..dim).map(|i| 0.3 - i as f32 / 150.0).collect::<Vec<_>>(), (1, dim), &Device::Cpu)
                .unwrap();
        // Normalised embeddings, as the encoder makes them (there `u⊙v` is
        // about √dim times smaller than `v`: measured up to 0.0008 at worst,
        // 0.0002 on average); and large ones, where the `u⊙v` term weighs as
        // much as `v`'s, so losing or misplacing any part errs by tenths
        // (measured up to 0.012 and 0.003).
        for (normalise, worst_bound, mean_bound) in [(true, 0.005, 0.001), (false, 0.05, 0.01)] {
            let user: Vec<f32> = if normalise { normalised(user.clone()).unwrap() } else { user.clone() }
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            for n in [7, 300] {
                let items = Tensor::randn(0f32, 1.0, (n, dim), &Device::Cpu).unwrap();
                let items = if normalise { normalised(items).unwrap() } else { items };
                let rows = random_numeric(n);
                let exact = f32_head.score_user(&user, &items, &rows).unwrap();
                let served = int8_head.score_user(&user, &items, &rows).unwrap();
                let (_, shared) = int8_head.score_user_with(&user, &items, || rows.clone()).unwrap();
                assert_eq!(served, shared, "{n} candidates: one thread and shared differ");
                let errors: Vec<f32> = served.iter().zip(&exact).map(|(a, b)| (a - b).abs()).collect();
                let worst = errors.iter().fold(0f32, |m, &e| m.max(e));
                let mean = errors.iter().sum::<f32>() / n as f32;
                assert!(
                    worst < worst_bound && mean < mean_bound,
                    "{n} candidates (normalised: {normalise}): int8 is {worst} from f32 at worst, {mean} on average"
                );
                assert_ne!(served, exact, "int8 is not f32");
            }
        }
    }

    #[test]
    fn specs_that_cannot_score_are_refused_with_the_reason() {
        let identity = EncoderIdentity { name: "enc".into(), dim: 6 };
        for (hidden, members, needle) in [(vec![], 1, "hidden"), (vec![8, 0], 1, "hidden"), (vec![8], 0, "members")] {
            let err = HeadSpec::new(identity.clone(), hidden.clone(), members).unwrap_err().to_string();
            assert!(err.contains(needle), "{hidden:?} x{members}: {err}");
        }
        let mut spec = HeadSpec::new(identity, vec![8], 1).unwrap();
        spec.numeric_features.pop();
        assert!(spec.validate().unwrap_err().to_string().contains("retrain"));
    }
}
