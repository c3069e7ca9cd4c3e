//! One training run of one MLP: seeded initial weights, the optimiser, and
//! epochs of binary cross-entropy over shuffled mini-batches.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{Optimizer, ParamsAdamW, VarBuilder, VarMap};
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;

use super::examples::Examples;
use super::{TrainError, TrainOptions, TrainingSet};
use crate::model::features::NUMERIC_LEN;
use crate::model::head::{HeadSpec, ScoringHead};

/// One training run: a fresh head with seeded weights and its optimiser.
pub(super) struct Run {
    pub(super) varmap: VarMap,
    pub(super) head: ScoringHead,
    optimizer: candle_nn::AdamW,
}

impl Run {
    pub(super) fn new(
        spec: &HeadSpec,
        examples: &Examples,
        options: &TrainOptions,
        rng: &mut StdRng,
    ) -> Result<Self, TrainError> {
        let mut varmap = VarMap::new();
        let head = ScoringHead::new(VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu), spec.clone())?;
        seeded_init(&varmap, rng)?;
        let numeric = Tensor::from_slice(&examples.numeric, (examples.labels.len(), NUMERIC_LEN), &Device::Cpu)?;
        ScoringHead::fit_standardisation(&mut varmap, &numeric)?;
        // The standardisation is fixed data, not a parameter to train.
        let trainable: Vec<Var> = {
            let vars = varmap.data().lock().expect("varmap lock");
            let mut named: Vec<(&String, &Var)> =
                vars.iter().filter(|(name, _)| !name.starts_with("numeric_")).collect();
            named.sort_by(|a, b| a.0.cmp(b.0));
            named.into_iter().map(|(_, v)| v.clone()).collect()
        };
        let params =
            ParamsAdamW { lr: options.learning_rate, weight_decay: options.weight_decay, ..Default::default() };
        let optimizer = candle_nn::AdamW::new(trainable, params)?;
        Ok(Self { varmap, head, optimizer })
    }

    /// One pass over the shuffled examples; returns the mean loss.
    pub(super) fn epoch(
        &mut self,
        set: &TrainingSet<'_>,
        options: &TrainOptions,
        rng: &mut StdRng,
        epoch: usize,
    ) -> Result<f64, TrainError> {
        let (examples, user_table, item_table) = (set.examples, set.users, set.items);
        let mut order: Vec<u32> = (0..examples.labels.len() as u32).collect();
        order.shuffle(rng);
        let batches = order.len().div_ceil(options.batch_size);
        let progress = ProgressBar::new(batches as u64).with_style(
            ProgressStyle::with_template("{msg:>16} {bar:40} {pos}/{len} batches (eta {eta})").expect("template"),
        );
        progress.set_message(format!("epoch {epoch}"));
        let mut total = 0.0;
        for batch in order.chunks(options.batch_size) {
            let pick = |rows: &[u32]| Tensor::from_iter(batch.iter().map(|&i| rows[i as usize]), &Device::Cpu);
            let u = user_table.index_select(&pick(&examples.user_rows)?, 0)?;
            let v = item_table.index_select(&pick(&examples.item_rows)?, 0)?;
            let numeric: Vec<f32> = batch
                .iter()
                .flat_map(|&i| {
                    examples.numeric[i as usize * NUMERIC_LEN..(i as usize + 1) * NUMERIC_LEN].iter().copied()
                })
                .collect();
            let numeric = Tensor::from_vec(numeric, (batch.len(), NUMERIC_LEN), &Device::Cpu)?;
            let labels = Tensor::from_iter(batch.iter().map(|&i| examples.labels[i as usize]), &Device::Cpu)?;
            let masks = dropout_masks(&options.hidden, batch.len(), options.dropout, rng)?;
            let logits = self.head.forward_logits(&u, &v, &numeric, Some(&masks))?;
            let loss = bce_with_logits(&logits, &labels)?;
            self.optimizer.backward_step(&loss)?;
            total += loss.to_scalar::<f32>()? as f64 * batch.len() as f64;
            progress.inc(1);
        }
        progress.finish_and_clear();
        Ok(total / examples.labels.len() as f64)
    }
}

/// Mean binary cross-entropy of `sigmoid(logits)` against `labels`, in the
/// stable form `max(x,0) − x·y + log(1 + e^−|x|)`.
pub(crate) fn bce_with_logits(logits: &Tensor, labels: &Tensor) -> candle_core::Result<Tensor> {
    let softplus = (logits.abs()?.neg()?.exp()? + 1.0)?.log()?;
    (logits.relu()? - logits.mul(labels)? + softplus)?.mean_all()
}

/// Inverted-dropout masks for each hidden layer, from the seeded generator.
fn dropout_masks(hidden: &[usize], batch: usize, p: f32, rng: &mut StdRng) -> candle_core::Result<Vec<Tensor>> {
    let keep = 1.0 - p;
    hidden
        .iter()
        .map(|&width| {
            let values: Vec<f32> =
                (0..batch * width).map(|_| if rng.gen::<f32>() < keep { 1.0 / keep } else { 0.0 }).collect();
            Tensor::from_vec(values, (batch, width), &Device::Cpu)
        })
        .collect()
}

/// PyTorch's default `Linear` initialisation, U(−1/√fan_in, 1/√fan_in),
/// drawn from the seeded generator in a fixed (name-sorted) order.
fn seeded_init(varmap: &VarMap, rng: &mut StdRng) -> candle_core::Result<()> {
    let vars = varmap.data().lock().expect("varmap lock");
    let mut names: Vec<&String> = vars.keys().filter(|n| !n.starts_with("numeric_")).collect();
    names.sort();
    for name in names {
        let var = &vars[name];
        let layer = name.rsplit_once('.').map_or(name.as_str(), |(layer, _)| layer);
        let fan_in = vars.get(&format!("{layer}.weight")).map_or(1, |w| w.dims().last().copied().unwrap_or(1));
        let bound = 1.0 / (fan_in as f32).sqrt();
        let values: Vec<f32> = (0..var.elem_count()).map(|_| rng.gen_range(-bound..bound)).collect();
        var.set(&Tensor::from_vec(values, var.shape(), &Device::Cpu)?)?;
    }
    Ok(())
}

pub(super) fn snapshot(varmap: &VarMap) -> candle_core::Result<HashMap<String, Tensor>> {
    let vars = varmap.data().lock().expect("varmap lock");
    vars.iter().map(|(name, var)| Ok((name.clone(), var.as_tensor().copy()?))).collect()
}

pub(super) fn restore(varmap: &VarMap, weights: &HashMap<String, Tensor>) -> candle_core::Result<()> {
    let vars = varmap.data().lock().expect("varmap lock");
    for (name, var) in vars.iter() {
        var.set(&weights[name])?;
    }
    Ok(())
}
