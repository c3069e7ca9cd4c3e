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
//! - **Search sessions** (`--query-fraction`): a share of each window's
//!   users also search with a pseudo-query from one item they bought; see
//!   `examples`. Model selection and the shipped statistics do not use them.
//! - **Model selection** on the protocol's inner split (history before
//!   `T_val`, truth in `[T_val, T_test)`): full-catalog NDCG@10 after each
//!   epoch; training stops after `patience` epochs without improvement and
//!   keeps the best epoch.
//! - **Refit** (default): the head is retrained with the `[T_val, T_test)`
//!   window added, for the selected number of epochs, so it learns from the
//!   most recent month too, all but a share of its shoppers
//!   (`--calibration-share`), on whom the refitted head is then calibrated.
//!   The statistics shipped beside it are built from all history before
//!   `T_test`.
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

mod examples;
mod options;
mod run;
mod validator;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rand::rngs::StdRng;
use rand::SeedableRng;

use self::examples::{add_examples, limit_users, search_sessions, Examples, VectorTable};
/// The documented defaults, for tests elsewhere in the crate.
#[cfg(test)]
pub(crate) use self::options::tests as tests_support;
pub(crate) use self::options::InvalidOption;
pub use self::options::TrainOptions;
use self::run::{restore, snapshot, Run};
use self::validator::Validator;
use crate::model::bundle::{EpochLog, RankingMetrics, StageRecord};
use crate::model::calibration::{Calibration, CalibrationData};
use crate::model::head::{merge_members, HeadSpec, ScoringHead};
use crate::model::stats::HistoryStats;
use crate::offline::data::split::Split;
use crate::offline::data::Dataset;
use crate::offline::embed_store::{EmbedStore, EmbedStoreError};
use crate::offline::prepared::{PreparedSplit, SplitSettings};
use crate::offline::resources::Stage;
use crate::offline::stats_builder::{self, CoPurchase, EaseCoverage};
use crate::offline::text_embedder::TextEmbedder;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Store(#[from] EmbedStoreError),
    #[error("model error: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("head error: {0}")]
    Head(#[from] crate::model::head::HeadError),
    #[error(transparent)]
    Options(#[from] InvalidOption),
    #[error("no training examples: the windows before {0} hold no users with new purchases")]
    NoExamples(String),
    #[error("the inner validation split has no test users; is T_val inside the log?")]
    NoValidationUsers,
}

pub struct TrainOutcome {
    /// `<T_test day>-s<seed>[-x<members>]-e<each member's selected epochs>`.
    pub version: String,
    pub varmap: VarMap,
    pub spec: HeadSpec,
    /// Statistics of all history before `t_test`, to ship with the head.
    pub stats: HistoryStats,
    /// Epoch log of every member, one after the other.
    pub log: Vec<EpochLog>,
    /// The selected epoch count of each member.
    pub best_epochs: Vec<usize>,
    pub validation: RankingMetrics,
    /// The logit map fitted on the validation window's pairs at the real
    /// base rate, of the shoppers held out of the refit scored by the
    /// shipped weights (see `fit_calibration`); `None` when the pairs cannot
    /// identify one.
    pub(crate) calibration: Option<Calibration>,
    pub examples: usize,
    /// Time and peak memory of each stage.
    pub stages: Vec<StageRecord>,
    /// Bounds the run met, in words (also logged as it met them).
    pub limits: Vec<String>,
}

const DAY: i64 = 86_400;

pub fn train(
    data: &Dataset,
    encoder: &dyn TextEmbedder,
    settings: &SplitSettings,
    store: &mut EmbedStore,
    options: &TrainOptions,
) -> Result<TrainOutcome, TrainError> {
    // Every option and the head's shape are checked before any work.
    options.validate()?;
    let spec = HeadSpec::new(encoder.identity(), options.hidden.clone(), options.members)?;
    let mut rng = StdRng::seed_from_u64(options.seed);
    let dim = spec.encoder.dim;
    let mut users = VectorTable::default();
    let mut items = VectorTable::default();
    let mut stages = Vec::new();
    let mut limits = Vec::new();

    // Training windows, oldest first; the inner validation split last (it
    // doubles as the refit window).
    let stage = Stage::start("training windows");
    let windows: Vec<(i64, i64)> = (1..=options.windows)
        .rev()
        .map(|k| options.t_val - k as i64 * options.window_days * DAY)
        .map(|cutoff| (cutoff, cutoff + options.window_days * DAY))
        .chain(std::iter::once((options.t_val, options.t_test)))
        .collect();
    let user_share = example_budget_share(data, &windows, options, &mut limits);
    let window_split = |(index, &(start, end)): (usize, &(i64, i64))| {
        let mut split = limit_users(Split::new(data, start, Some(end)), options.max_users);
        if user_share < 1.0 {
            let keep = ((split.test_users.len() as f64 * user_share).ceil() as usize).max(1);
            split.sample_test_users(keep, options.seed ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9));
        }
        split
    };
    let mut window_examples = Examples::default();
    for (index, &(cutoff, end)) in windows[..options.windows].iter().enumerate() {
        let prepared = PreparedSplit::new(window_split((index, &(cutoff, end))), encoder, settings, store)?;
        note_ease(&prepared, &format!("window from {}", day(cutoff)), &mut limits);
        let sessions = search_sessions(&prepared, encoder, settings.user_text, store, options, &mut rng)?;
        add_examples(&prepared, store, &sessions, options, &mut rng, &mut users, &mut items, &mut window_examples);
        tracing::info!(cutoff = %day(cutoff), examples = window_examples.labels.len(), "training window ready");
    }
    if window_examples.labels.is_empty() {
        return Err(TrainError::NoExamples(day(options.t_val)));
    }
    stages.push(stage.finish());

    // The inner validation split doubles as the refit window.
    let stage = Stage::start("validation split");
    let val_split = window_split((options.windows, &windows[options.windows]));
    let mut validation = PreparedSplit::new(val_split, encoder, settings, store)?;
    if validation.split.test_users.is_empty() {
        return Err(TrainError::NoValidationUsers);
    }
    note_ease(&validation, "validation split", &mut limits);
    let validator = Validator::new(&validation, store, options.max_validation_pairs, options.seed)?;
    if validator.users() < validation.split.test_users.len() {
        let limit = format!(
            "model selection ranked {} of {} validation users (max_validation_pairs {}: users × {} catalog items)",
            validator.users(),
            validation.split.test_users.len(),
            options.max_validation_pairs,
            validation.stats.items.len()
        );
        tracing::warn!("{limit}");
        limits.push(limit);
    }

    // With a refit, a share of the validation users is kept out of it: the
    // shipped (refit) weights are calibrated on them (see `fit_calibration`).
    let held_out = match options.refit {
        true => {
            let within_budget = (options.max_validation_pairs / validation.stats.items.len().max(1)).max(1);
            let users = validation.split.test_users.len();
            held_out_users(users, options.calibration_share, within_budget, options.seed)
        }
        false => Vec::new(),
    };
    let calibration_users = match held_out.is_empty() {
        true => None,
        false => Some(Validator::over(&validation, store, held_out.clone())?),
    };
    validation.retain_test_users(|index| held_out.binary_search(&index).is_err());

    // Members train alone, as one-MLP heads; the ensemble is assembled after.
    let member_spec = HeadSpec { members: 1, ..spec.clone() };
    let (user_table, item_table) = (users.tensor(dim)?, items.tensor(dim)?);
    let window = TrainingSet { examples: &window_examples, users: &user_table, items: &item_table };
    // The refit's examples (and the tables their new rows point into) are
    // sampled once, before any member trains, so every member sees the same data.
    let refit_data = if options.refit {
        let mut all = Examples::default();
        all.extend_from(&window_examples);
        let sessions = search_sessions(&validation, encoder, settings.user_text, store, options, &mut rng)?;
        add_examples(&validation, store, &sessions, options, &mut rng, &mut users, &mut items, &mut all);
        Some((all, users.tensor(dim)?, items.tensor(dim)?))
    } else {
        None
    };
    let refit = refit_data.as_ref().map(|(examples, users, items)| TrainingSet { examples, users, items });
    // The validator keeps what it needs; the split's statistics can go.
    drop(validation);
    stages.push(stage.finish());

    let stage = Stage::start("members");
    let members = options.members;
    let mut selected = Vec::with_capacity(members);
    let mut refitted = Vec::with_capacity(members);
    let mut best_epochs = Vec::with_capacity(members);
    let mut log = Vec::new();
    for member in 0..members {
        if members > 1 {
            eprintln!("member {}/{members}", member + 1);
        }
        let mut member_rng = StdRng::seed_from_u64(options.seed.wrapping_mul(1000).wrapping_add(member as u64));
        let trained = train_member(&member_spec, &window, refit.as_ref(), &validator, options, &mut member_rng)?;
        log.extend(trained.log);
        selected.push(trained.selected);
        refitted.push(trained.varmap);
        best_epochs.push(trained.best_epoch);
    }

    let selected_head = head_over(&merge_members(&selected)?, &spec)?;
    let validation_metrics = validator.evaluate(&selected_head)?;
    if members > 1 {
        eprintln!("ensemble of {members}: inner-validation NDCG@10 {:.4}", validation_metrics.ndcg10);
    }
    let varmap = merge_members(&refitted)?;
    let held_out_map = match &calibration_users {
        Some(users) => fit_calibration(users, &head_over(&varmap, &spec)?, options, true)?,
        None => None,
    };
    let calibration = match held_out_map {
        Some(map) => Some(map),
        None => {
            // A small log's few held-out shoppers may not identify a map;
            // every validation shopper under the selected weights still may.
            if calibration_users.is_some() {
                let limit = "calibration: the shoppers held out of the refit cannot identify a map; \
                             fitted on every validation shopper with the pre-refit weights instead"
                    .to_string();
                tracing::warn!("{limit}");
                limits.push(limit);
            }
            fit_calibration(&validator, &selected_head, options, false)?
        }
    };
    match &calibration {
        Some(c) => eprintln!(
            "calibration on {} validation pairs of {} users{} (base rate {:.5}): {} isotonic knots, Platt tails σ({:.4}·z {:+.4})",
            c.fitted_on.pairs,
            c.fitted_on.users,
            if c.fitted_on.held_out { " held out of the refit" } else { "" },
            c.fitted_on.base_rate(),
            c.knots.len(),
            c.slope,
            c.intercept
        ),
        None => {
            let limit = "calibration: the validation pairs cannot identify a map (one kind of label only, \
                         or scores that do not rise with purchases)"
                .to_string();
            tracing::warn!("{limit}");
            limits.push(limit);
        }
    }
    let examples = refit.as_ref().map_or(window_examples.labels.len(), |set| set.examples.labels.len());
    stages.push(stage.finish());

    // Statistics shipped with the head: all history before T_test.
    let stage = Stage::start("shipped statistics");
    let full = Split::new(data, options.t_test, Some(options.t_test));
    let (stats, ease) = stats_builder::build(&full, &CoPurchase::build(&full), settings.ease_max_items);
    if ease.fitted_items < ease.catalog_items {
        limits.push(ease_limit("shipped statistics", ease));
    }
    stages.push(stage.finish());
    let epochs = best_epochs.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("_");
    let version = match members {
        1 => format!("{}-s{}-e{epochs}", day(options.t_test), options.seed),
        n => format!("{}-s{}-x{n}-e{epochs}", day(options.t_test), options.seed),
    };
    Ok(TrainOutcome {
        version,
        varmap,
        spec,
        stats,
        log,
        best_epochs,
        validation: validation_metrics,
        calibration,
        examples,
        stages,
        limits,
    })
}

/// Fits the calibration map on the validation window: every pair of a
/// user and a catalog item they had not bought, at the real base rate.
///
/// `held_out`: the users were kept out of the refit and `head` is the refit
/// head that ships, so the map is fitted to the very weights it corrects, on
/// users they never saw. Otherwise (no refit, or `--calibration-share 0`)
/// `head` is the members' selected weights, which trained on earlier windows
/// only; a refit head then ranks better than the map assumes, and its top
/// items sell more often than their scores say (the bundle before this
/// option understated the top-10 purchase rate by 15.5%).
fn fit_calibration(
    validator: &Validator,
    head: &ScoringHead,
    options: &TrainOptions,
    held_out: bool,
) -> Result<Option<Calibration>, TrainError> {
    let mut pairs = validator.logits_and_labels(head)?;
    let Some((slope, intercept)) = Calibration::fit(&pairs) else {
        return Ok(None);
    };
    let knots = Calibration::fit_isotonic(&mut pairs);
    let horizon_days = ((options.t_test - options.t_val) as f64 / DAY as f64).round() as u32;
    Ok(Some(Calibration {
        slope,
        intercept,
        knots,
        event: Calibration::event_for(horizon_days),
        horizon_days,
        fitted_on: CalibrationData {
            window: format!("{}..{}", day(options.t_val), day(options.t_test)),
            users: validator.users(),
            pairs: pairs.len(),
            positives: pairs.iter().filter(|(_, bought)| *bought).count(),
            held_out,
        },
    }))
}

/// Indices (ascending) of the validation users kept out of the refit: a
/// seeded sample of `share` of them (rounded up, so any share above 0 keeps
/// at least one), at most `budget` (the users whose pairs fit in
/// `max_validation_pairs`: every one held out is calibrated on), drawn from
/// a generator of its own so the training draws do not move.
fn held_out_users(users: usize, share: f64, budget: usize, seed: u64) -> Vec<usize> {
    let wanted = ((users as f64 * share).ceil() as usize).min(users).min(budget);
    let mut rng = StdRng::seed_from_u64(seed ^ 0x00CA_11B2_A7E5);
    let mut chosen = rand::seq::index::sample(&mut rng, users, wanted).into_vec();
    chosen.sort_unstable();
    chosen
}

/// The share of each window's users to keep so that the examples (about
/// positives × (1 + negatives), over the windows and the refit window) fit
/// in `max_examples`: 1 when they do. Counting takes one pass over the
/// splits, which are dropped again.
fn example_budget_share(
    data: &Dataset,
    windows: &[(i64, i64)],
    options: &TrainOptions,
    limits: &mut Vec<String>,
) -> f64 {
    let positives: usize = windows
        .iter()
        .map(|&(start, end)| limit_users(Split::new(data, start, Some(end)), options.max_users).positives())
        .sum();
    let examples = positives * (1 + options.negatives);
    if examples <= options.max_examples {
        return 1.0;
    }
    let share = options.max_examples as f64 / examples as f64;
    let limit = format!(
        "examples: a {:.0}% sample of each window's users, about {} of {examples} examples (max_examples {})",
        share * 100.0,
        options.max_examples,
        options.max_examples
    );
    tracing::warn!("{limit}");
    limits.push(limit);
    share
}

fn ease_limit(what: &str, ease: EaseCoverage) -> String {
    format!(
        "{what}: recent-purchase EASE fitted over the {} most recently bought of {} items (offline.ease_max_items)",
        ease.fitted_items, ease.catalog_items
    )
}

/// Records that a split's EASE met its bound (once per kind of split).
fn note_ease(prepared: &PreparedSplit<'_>, what: &str, limits: &mut Vec<String>) {
    if prepared.ease.fitted_items < prepared.ease.catalog_items {
        limits.push(ease_limit(what, prepared.ease));
    }
}

/// Examples with the vector tables their rows point into.
pub(super) struct TrainingSet<'a> {
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

#[cfg(test)]
mod tests;
