//! `shoprank train`: fits the scoring head on a purchase log, following
//! EVAL_PROTOCOL v1 §3 — only history before `T_test` is used.
//!
//! - **Training windows**: for cutoffs `T_val − k·window` (k = 1..=windows),
//!   the history before the cutoff gives the user text, the statistics and
//!   the features; the items each user newly bought in the following window
//!   are positives; negatives are drawn uniformly from the rest of the
//!   catalog. Uniform is what full-catalog ranking needs: a pointwise
//!   classifier learns the odds of a purchase against the distribution its
//!   negatives come from, so drawing them by popularity (half of them, until
//!   this version; `--popular-share`) taught the head that popular items sell
//!   less than they do, and drawing them among the items linked to the
//!   history (`--hard-negatives`) taught it that those links are a bad sign.
//!   Both lowered inner-validation NDCG@10 (see `models/README.md`).
//! - **Model selection** on the protocol's inner split (history before
//!   `T_val`, truth in `[T_val, T_test)`): full-catalog NDCG@10 after each
//!   epoch; training stops after `patience` epochs without improvement and
//!   keeps the best epoch.
//! - **Refit** (default): the head is retrained with the `[T_val, T_test)`
//!   window added, for the selected number of epochs, so it learns from the
//!   most recent month too. The statistics shipped beside it are built from
//!   all history before `T_test`.
//!
//! - **Ensemble** (`members` > 1): the examples are sampled once; each member
//!   MLP then runs the selection and the refit above from its own seed
//!   (initial weights, shuffling, dropout), and the head averages their
//!   logits. The inner-validation figure reported is the ensemble's, from
//!   the members' selected (pre-refit) weights.
//!
//! Loss: binary cross-entropy on logits; optimiser: Adam (candle-nn's AdamW,
//! decoupled weight decay). Everything random is drawn from generators
//! seeded by `seed`, so a run is reproducible given its seed.

use std::collections::{HashMap, HashSet};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{Optimizer, ParamsAdamW, VarBuilder, VarMap};
use indicatif::{ProgressBar, ProgressStyle};
use rand::distributions::{Distribution, WeightedIndex};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::config::UserTextBudget;
use crate::data::split::Split;
use crate::data::Dataset;
use crate::embed_store::{EmbedStore, StoreError};
use crate::encoder::Encoder;
use crate::eval::metrics::{mean, rank_by_score, score_ranking, RankingMetrics};
use crate::eval::prepared::PreparedSplit;
use crate::features::{self, NUMERIC_LEN};
use crate::head::{merge_members, EncoderIdentity, HeadSpec, ScoringHead};
use crate::stats::HistoryStats;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainOptions {
    pub t_test: i64,
    pub t_val: i64,
    /// Training windows before `t_val`.
    pub windows: usize,
    pub window_days: i64,
    /// Negatives sampled per positive.
    pub negatives: usize,
    /// Share of examples whose item is shown as a new product (statistics
    /// hidden), so the head learns to score items the log does not know.
    pub cold_fraction: f64,
    /// Also draw negatives among the items most strongly linked to the history.
    pub hard_negatives: bool,
    /// Share of the (not hard) negatives drawn by popularity; the rest are uniform.
    pub popular_share: f64,
    pub hidden: Vec<usize>,
    pub max_epochs: usize,
    pub patience: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub dropout: f32,
    pub seed: u64,
    /// MLPs trained from different seeds whose logits the head averages.
    pub members: usize,
    pub refit: bool,
    /// Use at most this many users per window (quick runs and tests).
    pub max_users: Option<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("model error: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("head error: {0}")]
    Head(#[from] crate::head::HeadError),
    #[error("no training examples: the windows before {0} hold no users with new purchases")]
    NoExamples(String),
    #[error("the inner validation split has no test users; is T_val inside the log?")]
    NoValidationUsers,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochLog {
    pub epoch: usize,
    pub loss: f64,
    /// Inner-validation NDCG@10 (absent during the refit).
    pub val_ndcg10: Option<f64>,
}

pub struct TrainOutcome {
    pub varmap: VarMap,
    pub spec: HeadSpec,
    /// Statistics of all history before `t_test`, to ship with the head.
    pub stats: HistoryStats,
    /// Epoch log of every member, one after the other.
    pub log: Vec<EpochLog>,
    /// The selected epoch count of each member.
    pub best_epochs: Vec<usize>,
    pub validation: RankingMetrics,
    pub examples: usize,
}

/// Examples as row indices into shared user/item vector tables.
#[derive(Default)]
struct Examples {
    user_rows: Vec<u32>,
    item_rows: Vec<u32>,
    numeric: Vec<f32>,
    labels: Vec<f32>,
}

impl Examples {
    fn extend_from(&mut self, other: &Examples) {
        self.user_rows.extend_from_slice(&other.user_rows);
        self.item_rows.extend_from_slice(&other.item_rows);
        self.numeric.extend_from_slice(&other.numeric);
        self.labels.extend_from_slice(&other.labels);
    }
}

/// Unique vectors, each stored once, addressed by row.
#[derive(Default)]
struct VectorTable {
    rows: HashMap<String, u32>,
    data: Vec<f32>,
}

impl VectorTable {
    fn row(&mut self, text: &str, store: &EmbedStore) -> u32 {
        if let Some(&row) = self.rows.get(text) {
            return row;
        }
        let row = self.rows.len() as u32;
        self.data.extend_from_slice(store.get(text));
        self.rows.insert(text.to_string(), row);
        row
    }
    fn tensor(&self, dim: usize) -> candle_core::Result<Tensor> {
        Tensor::from_slice(&self.data, (self.rows.len(), dim), &Device::Cpu)
    }
}

const DAY: i64 = 86_400;
/// Hard negatives come from this many items most strongly linked to the
/// user's history.
const HARD_NEGATIVE_POOL: usize = 100;

pub fn train(
    data: &Dataset,
    encoder: &Encoder,
    budget: UserTextBudget,
    store: &mut EmbedStore,
    options: &TrainOptions,
) -> Result<TrainOutcome, TrainError> {
    let mut rng = StdRng::seed_from_u64(options.seed);
    let dim = encoder.dim();
    let mut users = VectorTable::default();
    let mut items = VectorTable::default();

    // Training windows, oldest first.
    let mut window_examples = Examples::default();
    for k in (1..=options.windows).rev() {
        let cutoff = options.t_val - k as i64 * options.window_days * DAY;
        let split = Split::new(data, cutoff, Some(cutoff + options.window_days * DAY));
        let prepared = PreparedSplit::new(limit_users(split, options.max_users), encoder, budget, store)?;
        add_examples(&prepared, store, options, &mut rng, &mut users, &mut items, &mut window_examples);
        tracing::info!(cutoff = %day(cutoff), examples = window_examples.labels.len(), "training window ready");
    }
    if window_examples.labels.is_empty() {
        return Err(TrainError::NoExamples(day(options.t_val)));
    }

    // The inner validation split doubles as the refit window.
    let val_split = Split::new(data, options.t_val, Some(options.t_test));
    let validation = PreparedSplit::new(limit_users(val_split, options.max_users), encoder, budget, store)?;
    if validation.split.test_users.is_empty() {
        return Err(TrainError::NoValidationUsers);
    }
    let validator = Validator::new(&validation, store)?;

    let spec_base = HeadSpec::new(String::new(), EncoderIdentity { name: encoder.name().into(), dim }, options.hidden.clone());
    let (user_table, item_table) = (users.tensor(dim)?, items.tensor(dim)?);
    let window = TrainingSet { examples: &window_examples, users: &user_table, items: &item_table };
    // The refit's examples (and the tables their new rows point into) are
    // sampled once, before any member trains, so every member sees the same data.
    let refit_data = if options.refit {
        let mut all = Examples::default();
        all.extend_from(&window_examples);
        add_examples(&validation, store, options, &mut rng, &mut users, &mut items, &mut all);
        Some((all, users.tensor(dim)?, items.tensor(dim)?))
    } else {
        None
    };
    let refit = refit_data.as_ref().map(|(examples, users, items)| TrainingSet { examples, users, items });

    let members = options.members.max(1);
    let mut selected = Vec::with_capacity(members);
    let mut refitted = Vec::with_capacity(members);
    let mut best_epochs = Vec::with_capacity(members);
    let mut log = Vec::new();
    for member in 0..members {
        if members > 1 {
            eprintln!("member {}/{members}", member + 1);
        }
        let mut member_rng = StdRng::seed_from_u64(options.seed.wrapping_mul(1000).wrapping_add(member as u64));
        let trained = train_member(&spec_base, &window, refit.as_ref(), &validator, options, &mut member_rng)?;
        log.extend(trained.log);
        selected.push(trained.selected);
        refitted.push(trained.varmap);
        best_epochs.push(trained.best_epoch);
    }

    let mut spec = spec_base;
    spec.members = members;
    let validation_metrics = validator.evaluate(&head_over(&merge_members(&selected)?, &spec)?)?;
    if members > 1 {
        eprintln!("ensemble of {members}: inner-validation NDCG@10 {:.4}", validation_metrics.ndcg10);
    }
    let varmap = merge_members(&refitted)?;
    let examples = refit.as_ref().map_or(window_examples.labels.len(), |set| set.examples.labels.len());

    // Statistics shipped with the head: all history before T_test.
    let full = Split::new(data, options.t_test, Some(options.t_test));
    let stats = HistoryStats::build(&full, &crate::stats::CoPurchase::build(&full));
    let epochs = best_epochs.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("_");
    spec.version = match members {
        1 => format!("{}-s{}-e{epochs}", day(options.t_test), options.seed),
        n => format!("{}-s{}-x{n}-e{epochs}", day(options.t_test), options.seed),
    };
    spec.validation = serde_json::to_value(validation_metrics).expect("metrics serialise");
    Ok(TrainOutcome { varmap, spec, stats, log, best_epochs, validation: validation_metrics, examples })
}

/// Examples with the vector tables their rows point into.
struct TrainingSet<'a> {
    examples: &'a Examples,
    users: &'a Tensor,
    items: &'a Tensor,
}

struct TrainedMember {
    /// Weights after the refit (or the selected weights without one).
    varmap: VarMap,
    /// Weights of the selected epoch, before any refit.
    selected: VarMap,
    best_epoch: usize,
    log: Vec<EpochLog>,
}

/// One MLP: epochs on the windows with early stopping on inner-validation
/// NDCG@10, then (with `refit`) a fresh run for the selected epoch count.
fn train_member(
    spec: &HeadSpec,
    window: &TrainingSet<'_>,
    refit: Option<&TrainingSet<'_>>,
    validator: &Validator,
    options: &TrainOptions,
    rng: &mut StdRng,
) -> Result<TrainedMember, TrainError> {
    let mut run = Run::new(spec, window.examples, options, rng)?;
    let mut log = Vec::new();
    let mut best: Option<(usize, f64, HashMap<String, Tensor>)> = None;
    for epoch in 1..=options.max_epochs {
        let loss = run.epoch(window, options, rng, epoch)?;
        let metrics = validator.evaluate(&run.head)?;
        tracing::info!(epoch, loss, val_ndcg10 = metrics.ndcg10, "epoch done");
        eprintln!("epoch {epoch:>2}: train loss {loss:.4}, inner-validation NDCG@10 {:.4}", metrics.ndcg10);
        log.push(EpochLog { epoch, loss, val_ndcg10: Some(metrics.ndcg10) });
        if best.as_ref().is_none_or(|(_, ndcg, _)| metrics.ndcg10 > *ndcg) {
            best = Some((epoch, metrics.ndcg10, snapshot(&run.varmap)?));
        } else if epoch - best.as_ref().map_or(0, |b| b.0) >= options.patience {
            break;
        }
    }
    let (best_epoch, _, weights) = best.expect("at least one epoch ran");
    restore(&run.varmap, &weights)?;
    let selected = run.varmap;
    let Some(refit) = refit else {
        return Ok(TrainedMember { varmap: copy(&selected)?, selected, best_epoch, log });
    };
    let mut run = Run::new(spec, refit.examples, options, rng)?;
    for epoch in 1..=best_epoch {
        let loss = run.epoch(refit, options, rng, epoch)?;
        eprintln!("refit epoch {epoch:>2}/{best_epoch}: train loss {loss:.4}");
        log.push(EpochLog { epoch, loss, val_ndcg10: None });
    }
    Ok(TrainedMember { varmap: run.varmap, selected, best_epoch, log })
}

fn copy(varmap: &VarMap) -> candle_core::Result<VarMap> {
    merge_members(std::slice::from_ref(varmap))
}

fn head_over(varmap: &VarMap, spec: &HeadSpec) -> Result<ScoringHead, TrainError> {
    Ok(ScoringHead::new(VarBuilder::from_varmap(varmap, DType::F32, &Device::Cpu), spec.clone())?)
}

fn day(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0).map(|t| t.format("%Y-%m-%d").to_string()).unwrap_or_default()
}

fn limit_users(mut split: Split<'_>, max_users: Option<usize>) -> Split<'_> {
    if let Some(max) = max_users {
        split.test_users.truncate(max);
    }
    split
}

/// Positives (truth) and sampled negatives of every test user of a window.
fn add_examples(
    prepared: &PreparedSplit<'_>,
    store: &EmbedStore,
    options: &TrainOptions,
    rng: &mut StdRng,
    users: &mut VectorTable,
    items: &mut VectorTable,
    out: &mut Examples,
) {
    let stats = &prepared.stats;
    let n = stats.items.len();
    let popular = WeightedIndex::new(stats.items.iter().map(|s| s.buyers as f64 + 1.0)).expect("non-empty catalog");
    for (index, test_user) in prepared.split.test_users.iter().enumerate() {
        let context = prepared.user_context(index, store);
        let user_row = users.row(&prepared.user_texts[index], store);
        let truth = prepared.truth_positions(test_user);
        let bought: HashSet<u32> = prepared.history_positions(test_user.user).into_iter().collect();
        let mut push = |position: u32, label: f32, cold: bool| {
            let mut candidate = prepared.candidate(position, store);
            if cold {
                // As a request would carry it: text and price, no history.
                candidate.position = None;
                candidate.price = Some(stats.items[position as usize].price);
            }
            out.user_rows.push(user_row);
            out.item_rows.push(items.row(&stats.items[position as usize].text, store));
            out.numeric.extend_from_slice(&features::numeric(stats, &context, &candidate));
            out.labels.push(label);
        };
        let mut positives: Vec<u32> = truth.iter().copied().collect();
        positives.sort_unstable();
        for &p in &positives {
            push(p, 1.0, rng.gen_bool(options.cold_fraction));
        }
        let hard_pool = if options.hard_negatives { context.strongest_links(HARD_NEGATIVE_POOL) } else { Vec::new() };
        let wanted = positives.len() * options.negatives;
        let mut drawn = 0;
        let mut tries = 0;
        while drawn < wanted && tries < wanted * 20 {
            tries += 1;
            // Uniform and by popularity, and (with --hard-negatives) a third
            // among the items most strongly linked to the user's history.
            let p = if !hard_pool.is_empty() && rng.gen_bool(1.0 / 3.0) {
                hard_pool[rng.gen_range(0..hard_pool.len())]
            } else if rng.gen_bool(options.popular_share) {
                popular.sample(rng) as u32
            } else {
                rng.gen_range(0..n) as u32
            };
            if truth.contains(&p) || bought.contains(&p) {
                continue;
            }
            push(p, 0.0, rng.gen_bool(options.cold_fraction));
            drawn += 1;
        }
    }
}

/// One training run: a fresh head with seeded weights and its optimiser.
struct Run {
    varmap: VarMap,
    head: ScoringHead,
    optimizer: candle_nn::AdamW,
}

impl Run {
    fn new(spec: &HeadSpec, examples: &Examples, options: &TrainOptions, rng: &mut StdRng) -> Result<Self, TrainError> {
        let mut varmap = VarMap::new();
        let head = ScoringHead::new(VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu), spec.clone())?;
        seeded_init(&varmap, rng)?;
        let numeric = Tensor::from_slice(&examples.numeric, (examples.labels.len(), NUMERIC_LEN), &Device::Cpu)?;
        ScoringHead::fit_standardisation(&mut varmap, &numeric)?;
        // The standardisation is fixed data, not a parameter to train.
        let trainable: Vec<Var> = {
            let vars = varmap.data().lock().expect("varmap lock");
            let mut named: Vec<(&String, &Var)> = vars.iter().filter(|(name, _)| !name.starts_with("numeric_")).collect();
            named.sort_by(|a, b| a.0.cmp(b.0));
            named.into_iter().map(|(_, v)| v.clone()).collect()
        };
        let params = ParamsAdamW { lr: options.learning_rate, weight_decay: options.weight_decay, ..Default::default() };
        let optimizer = candle_nn::AdamW::new(trainable, params)?;
        Ok(Self { varmap, head, optimizer })
    }

    /// One pass over the shuffled examples; returns the mean loss.
    fn epoch(
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
                .flat_map(|&i| examples.numeric[i as usize * NUMERIC_LEN..(i as usize + 1) * NUMERIC_LEN].iter().copied())
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
pub fn bce_with_logits(logits: &Tensor, labels: &Tensor) -> candle_core::Result<Tensor> {
    let softplus = (logits.abs()?.neg()?.exp()? + 1.0)?.log()?;
    (logits.relu()? - logits.mul(labels)? + softplus)?.mean_all()
}

/// Inverted-dropout masks for each hidden layer, from the seeded generator.
fn dropout_masks(hidden: &[usize], batch: usize, p: f32, rng: &mut StdRng) -> candle_core::Result<Vec<Tensor>> {
    let keep = 1.0 - p;
    hidden
        .iter()
        .map(|&width| {
            let values: Vec<f32> = (0..batch * width).map(|_| if rng.gen::<f32>() < keep { 1.0 / keep } else { 0.0 }).collect();
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

fn snapshot(varmap: &VarMap) -> candle_core::Result<HashMap<String, Tensor>> {
    let vars = varmap.data().lock().expect("varmap lock");
    vars.iter().map(|(name, var)| Ok((name.clone(), var.as_tensor().copy()?))).collect()
}

fn restore(varmap: &VarMap, weights: &HashMap<String, Tensor>) -> candle_core::Result<()> {
    let vars = varmap.data().lock().expect("varmap lock");
    for (name, var) in vars.iter() {
        var.set(&weights[name])?;
    }
    Ok(())
}

/// Full-catalog ranking of the inner-validation users, with their features
/// built once (they do not change between epochs).
struct Validator {
    users: Vec<ValidationUser>,
    /// Item id of each catalog position (ties are broken by id).
    ids: Vec<String>,
}

struct ValidationUser {
    embedding: Vec<f32>,
    candidates: Vec<u32>,
    items: Tensor,
    numeric: Vec<features::Numeric>,
    truth: HashSet<u32>,
}

impl Validator {
    fn new(prepared: &PreparedSplit<'_>, store: &EmbedStore) -> candle_core::Result<Self> {
        let dim = prepared.stats.items.first().map_or(0, |s| store.get(&s.text).len());
        let users = prepared
            .split
            .test_users
            .iter()
            .enumerate()
            .map(|(index, test_user)| {
                let context = prepared.user_context(index, store);
                let candidates = prepared.candidates(test_user.user);
                let inputs: Vec<_> = candidates.iter().map(|&p| prepared.candidate(p, store)).collect();
                let numeric = inputs.iter().map(|c| features::numeric(&prepared.stats, &context, c)).collect();
                let flat: Vec<f32> = inputs.iter().flat_map(|c| c.embedding.iter().copied()).collect();
                Ok(ValidationUser {
                    items: Tensor::from_vec(flat, (candidates.len(), dim), &Device::Cpu)?,
                    embedding: context.embedding,
                    numeric,
                    truth: prepared.truth_positions(test_user),
                    candidates,
                })
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let ids = prepared.stats.items.iter().map(|s| s.id.clone()).collect();
        Ok(Self { users, ids })
    }

    fn evaluate(&self, head: &ScoringHead) -> candle_core::Result<RankingMetrics> {
        let mut all = Vec::with_capacity(self.users.len());
        for user in &self.users {
            let scores = head.score_user(&user.embedding, &user.items, &user.numeric)?;
            let ranked = rank_by_score(&user.candidates, &scores, |p| self.ids[p as usize].as_str());
            all.push(score_ranking(&ranked, &user.truth));
        }
        Ok(mean(&all))
    }
}
