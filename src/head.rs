//! The scoring head: an MLP over `[u, v, u⊙v, standardised numeric]` whose
//! sigmoid output is the predicted purchase probability. One struct serves
//! training (autograd through `forward_logits`) and serving (`score_user`,
//! an algebraically identical but cheaper form for many candidates of one
//! user). Weights live in safetensors with stable names (`fc0`, `fc1`, …,
//! `out`, `numeric_mean`, `numeric_std`); the JSON spec beside them says what
//! the head expects and where it came from.
//!
//! A head may be an ensemble of `members` MLPs trained from different seeds
//! on the same examples (weights `m0.fc0`, `m1.fc0`, …, one shared
//! standardisation). Its logit is the members' mean: single MLPs trained
//! from different seeds differ by about 0.01 NDCG@10 on this data, and the
//! mean removes most of that seed noise.

use std::path::Path;

use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::{Linear, Module, VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use crate::features::{Numeric, NUMERIC_FEATURES, NUMERIC_LEN};

/// Spec format understood by this build.
pub const SPEC_FORMAT: u32 = 1;

/// What the head was trained with and how well it did; stored as JSON.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HeadSpec {
    pub format: u32,
    /// Version shown in responses and metrics, e.g. `2011-11-01.s7.a1b2c3`.
    pub version: String,
    /// `["u", "v", "u*v", <numeric feature names>]`.
    pub feature_layout: Vec<String>,
    pub numeric_features: Vec<String>,
    pub hidden: Vec<usize>,
    /// MLPs whose logits are averaged (1 for heads saved before ensembles).
    #[serde(default = "one_member")]
    pub members: usize,
    pub encoder: EncoderIdentity,
    pub training: serde_json::Value,
    /// Inner-validation metrics (EVAL_PROTOCOL inner split).
    pub validation: serde_json::Value,
}

fn one_member() -> usize {
    1
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EncoderIdentity {
    pub name: String,
    pub dim: usize,
}

impl HeadSpec {
    pub fn new(version: String, encoder: EncoderIdentity, hidden: Vec<usize>) -> Self {
        let numeric_features: Vec<String> = NUMERIC_FEATURES.iter().map(|s| s.to_string()).collect();
        let mut feature_layout = vec!["u".to_string(), "v".to_string(), "u*v".to_string()];
        feature_layout.extend(numeric_features.iter().cloned());
        Self {
            format: SPEC_FORMAT,
            version,
            feature_layout,
            numeric_features,
            hidden,
            members: 1,
            encoder,
            training: serde_json::Value::Null,
            validation: serde_json::Value::Null,
        }
    }

    pub fn input_len(&self) -> usize {
        3 * self.encoder.dim + self.numeric_features.len()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    #[error("cannot read head spec {path}: {source}")]
    SpecRead { path: String, source: std::io::Error },
    #[error("head spec {path} is not valid: {source}")]
    SpecParse { path: String, source: serde_json::Error },
    #[error(
        "head spec {path} has format {found} and numeric features {features:?}; this build expects format \
         {SPEC_FORMAT} with {expected:?}: retrain with `shoprank train`"
    )]
    Incompatible { path: String, found: u32, features: Vec<String>, expected: Vec<String> },
    #[error(
        "the head was trained on encoder `{head_encoder}` ({head_dim}-d) but the loaded encoder is \
         `{encoder}` ({dim}-d): set encoder.source to the head's encoder or retrain the head"
    )]
    EncoderMismatch { head_encoder: String, head_dim: usize, encoder: String, dim: usize },
    #[error("cannot write {path}: {source}")]
    Write { path: String, source: std::io::Error },
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
}

impl ScoringHead {
    /// Builds the head over `vb`: fresh variables when `vb` is backed by a
    /// `VarMap` (training), stored weights when backed by a file (serving).
    pub fn new(vb: VarBuilder, spec: HeadSpec) -> Result<Self, HeadError> {
        let members = (0..spec.members.max(1))
            .map(|i| match spec.members {
                1 => Member::new(vb.clone(), &spec),
                _ => Member::new(vb.pp(format!("m{i}")), &spec),
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let n = spec.numeric_features.len();
        let numeric_mean = vb.get_with_hints(n, "numeric_mean", candle_nn::Init::Const(0.0))?;
        let numeric_std = vb.get_with_hints(n, "numeric_std", candle_nn::Init::Const(1.0))?;
        Ok(Self { members, numeric_mean, numeric_std, spec, device: vb.device().clone() })
    }

    /// Loads a trained head and checks it against the encoder it will serve with.
    pub fn load(weights: &Path, spec_path: &Path, encoder: &EncoderIdentity) -> Result<Self, HeadError> {
        let spec = read_spec(spec_path)?;
        if spec.encoder.name != encoder.name || spec.encoder.dim != encoder.dim {
            return Err(HeadError::EncoderMismatch {
                head_encoder: spec.encoder.name,
                head_dim: spec.encoder.dim,
                encoder: encoder.name.clone(),
                dim: encoder.dim,
            });
        }
        let device = Device::Cpu;
        // SAFETY: the weights file is only read; `train` writes a new file.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[weights], DType::F32, &device)? };
        Self::new(vb, spec)
    }

    pub fn spec(&self) -> &HeadSpec {
        &self.spec
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
    /// each candidate costs a `D`-wide product instead of `3D`.
    pub fn score_user(&self, user: &[f32], items: &Tensor, numeric: &[Numeric]) -> candle_core::Result<Vec<f32>> {
        let n = numeric.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        let dim = self.spec.encoder.dim;
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

pub fn read_spec(path: &Path) -> Result<HeadSpec, HeadError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| HeadError::SpecRead { path: path.display().to_string(), source })?;
    let spec: HeadSpec =
        serde_json::from_str(&text).map_err(|source| HeadError::SpecParse { path: path.display().to_string(), source })?;
    let expected: Vec<String> = NUMERIC_FEATURES.iter().map(|s| s.to_string()).collect();
    if spec.format != SPEC_FORMAT || spec.numeric_features != expected {
        return Err(HeadError::Incompatible {
            path: path.display().to_string(),
            found: spec.format,
            features: spec.numeric_features,
            expected,
        });
    }
    Ok(spec)
}

/// Writes the weights and the spec of a trained head.
pub fn save(varmap: &VarMap, spec: &HeadSpec, weights: &Path, spec_path: &Path) -> Result<(), HeadError> {
    varmap.save(weights)?;
    let text = serde_json::to_string_pretty(spec).expect("spec serialises") + "\n";
    std::fs::write(spec_path, text).map_err(|source| HeadError::Write { path: spec_path.display().to_string(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh(dim: usize) -> (VarMap, ScoringHead) {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let spec = HeadSpec::new("test".into(), EncoderIdentity { name: "enc".into(), dim }, vec![8, 4]);
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
        let logit = |p: f32| (p / (1.0 - p)).ln();
        let (a, b) = (first.score_user(&user, &items, &rows).unwrap(), second.score_user(&user, &items, &rows).unwrap());
        let both = ensemble.score_user(&user, &items, &rows).unwrap();
        for i in 0..rows.len() {
            let expected = 1.0 / (1.0 + (-(logit(a[i]) + logit(b[i])) / 2.0).exp());
            assert!((both[i] - expected).abs() < 1e-5, "item {i}: {} vs {expected}", both[i]);
        }
        assert_ne!(a, b, "members start from different weights");
    }

    #[test]
    fn save_then_load_round_trips_and_checks_the_encoder() {
        let dim = 6;
        let (varmap, head) = fresh(dim);
        let dir = std::env::temp_dir().join(format!("shoprank-head-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (weights, spec) = (dir.join("head.safetensors"), dir.join("head.json"));
        save(&varmap, head.spec(), &weights, &spec).unwrap();
        let identity = EncoderIdentity { name: "enc".into(), dim };
        let loaded = ScoringHead::load(&weights, &spec, &identity).unwrap();
        assert_eq!(loaded.spec(), head.spec());
        let user = vec![0.1; dim];
        let items = Tensor::ones((2, dim), DType::F32, &Device::Cpu).unwrap();
        let rows = [[0.5; NUMERIC_LEN]; 2];
        assert_eq!(head.score_user(&user, &items, &rows).unwrap(), loaded.score_user(&user, &items, &rows).unwrap());

        let other = EncoderIdentity { name: "other".into(), dim: 768 };
        let err = ScoringHead::load(&weights, &spec, &other).err().unwrap().to_string();
        assert!(err.contains("other") && err.contains("enc"), "{err}");
    }
}
