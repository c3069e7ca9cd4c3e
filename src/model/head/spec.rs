//! The head's spec: what a head expects (its input layout, its shape, the
//! encoder whose embeddings it was trained on), the checks that a spec and a
//! weights file describe a head this build can run, and the errors that say
//! why not. The model itself ([`super::ScoringHead`]) sits in `head`.

use std::collections::{BTreeMap, HashMap};

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::model::encoder::EncoderIdentity;
use crate::model::features::{BEFORE_LEXICAL_LEN, NUMERIC_FEATURES};

/// Spec format understood by this build.
pub(crate) const SPEC_FORMAT: u32 = 1;

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
    #[cfg_attr(not(feature = "offline"), allow(dead_code))] // training's
    pub(crate) fn new(encoder: EncoderIdentity, hidden: Vec<usize>, members: usize) -> Result<Self, HeadError> {
        let (feature_layout, numeric_features) = expected_layout();
        let spec = Self { format: SPEC_FORMAT, feature_layout, numeric_features, hidden, members, encoder };
        spec.validate()?;
        Ok(spec)
    }

    /// Checks that this build can run the head the spec describes: one
    /// with this build's numeric features, or one trained before the
    /// lexical features (see [`HeadSpec::widened`]).
    pub(crate) fn validate(&self) -> Result<(), HeadError> {
        let invalid = |problem: String| Err(HeadError::InvalidSpec(problem));
        let (_, expected) = expected_layout();
        let known = self.numeric_features == expected || self.numeric_features == expected[..BEFORE_LEXICAL_LEN];
        if self.format != SPEC_FORMAT || !known {
            return Err(HeadError::Incompatible {
                found: self.format,
                features: self.numeric_features.clone(),
                expected,
            });
        }
        let layout = layout_of(&self.numeric_features);
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

    /// Whether the head was trained before the lexical features existed.
    pub(crate) fn predates_lexical_features(&self) -> bool {
        self.numeric_features.len() < NUMERIC_FEATURES.len()
    }

    /// The spec of this build's layout, with `tensors` (weights checked
    /// against `self`) widened to it: a head trained before the lexical
    /// features gets a zero weight for each (and a standardisation of
    /// mean 0, deviation 1), so it scores exactly as before, whatever their
    /// values. The numeric features are the last inputs of the first layer,
    /// and the new ones the last of those.
    pub(super) fn widened(mut self, tensors: &mut HashMap<String, Tensor>) -> Result<Self, HeadError> {
        let (layout, expected) = expected_layout();
        let missing = expected.len() - self.numeric_features.len();
        if missing == 0 {
            return Ok(self);
        }
        let first = self.hidden[0];
        for index in 0..self.members {
            let name = format!("{}fc0.weight", member_prefix(index, self.members));
            let weight = &tensors[&name];
            let zeros = Tensor::zeros((first, missing), weight.dtype(), weight.device())?;
            let widened = Tensor::cat(&[weight, &zeros], 1)?;
            tensors.insert(name, widened);
        }
        for (name, fill) in [("numeric_mean", 0f32), ("numeric_std", 1f32)] {
            let values = &tensors[name];
            let padding = Tensor::full(fill, missing, values.device())?.to_dtype(values.dtype())?;
            let widened = Tensor::cat(&[values, &padding], 0)?;
            tensors.insert(name.to_string(), widened);
        }
        self.numeric_features = expected;
        self.feature_layout = layout;
        Ok(self)
    }

    pub(crate) fn input_len(&self) -> usize {
        3 * self.encoder.dim + self.numeric_features.len()
    }

    /// Every tensor a weights file for this spec holds, with its shape.
    pub(super) fn expected_tensors(&self) -> BTreeMap<String, Vec<usize>> {
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
    pub(super) fn check_weights(&self, tensors: &HashMap<String, Tensor>) -> Result<(), HeadError> {
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
    (layout_of(&numeric), numeric)
}

/// `[u, v, u*v, numeric…]`.
fn layout_of(numeric: &[String]) -> Vec<String> {
    ["u", "v", "u*v"].into_iter().map(String::from).chain(numeric.iter().cloned()).collect()
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

/// The weight-name prefix of member `index` of a head with `members` MLPs.
pub(super) fn member_prefix(index: usize, members: usize) -> String {
    if members == 1 {
        String::new()
    } else {
        format!("m{index}.")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn a_head_from_before_the_lexical_features_is_valid_and_widened_with_zero_weights() {
        let identity = EncoderIdentity { name: "enc".into(), dim: 2 };
        let mut old = HeadSpec::new(identity, vec![3], 2).unwrap();
        old.numeric_features.truncate(BEFORE_LEXICAL_LEN);
        old.feature_layout.truncate(3 + BEFORE_LEXICAL_LEN);
        assert!(old.validate().is_ok() && old.predates_lexical_features());
        let device = candle_core::Device::Cpu;
        let mut tensors: HashMap<String, Tensor> = old
            .expected_tensors()
            .into_iter()
            .map(|(name, shape)| (name, Tensor::ones(shape, DType::F32, &device).unwrap()))
            .collect();
        old.check_weights(&tensors).unwrap();
        let widened = old.widened(&mut tensors).unwrap();
        assert!(!widened.predates_lexical_features());
        widened.check_weights(&tensors).expect("the widened weights fit the widened spec");
        let added = NUMERIC_FEATURES.len() - BEFORE_LEXICAL_LEN;
        for name in ["m0.fc0.weight", "m1.fc0.weight"] {
            let rows = tensors[name].to_vec2::<f32>().unwrap();
            assert!(rows.iter().all(|r| r[..6 + BEFORE_LEXICAL_LEN].iter().all(|&w| w == 1.0)), "kept: {name}");
            assert!(rows.iter().all(|r| r[6 + BEFORE_LEXICAL_LEN..] == vec![0.0; added][..]), "zero: {name}");
        }
        let std = tensors["numeric_std"].to_vec1::<f32>().unwrap();
        assert_eq!(std[BEFORE_LEXICAL_LEN..], vec![1.0; added][..]);
    }
}
