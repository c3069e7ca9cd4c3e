//! Training on a synthetic log with a hashing embedder: the whole pipeline,
//! without BERT weights, in well under a second.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use rand::Rng;

use super::*;
use crate::config::UserTextBudget;
use crate::model::encoder::{EncoderError, EncoderIdentity};
use crate::model::user_text::UserSignals;
use crate::offline::data::{parse_time, Event};

/// Bag-of-words hashed into 32 signed buckets, L2-normalised: texts that
/// share words point the same way, which is all training needs of an
/// encoder to learn something, at no cost.
struct HashingEmbedder;

const DIM: usize = 32;

impl TextEmbedder for HashingEmbedder {
    fn identity(&self) -> EncoderIdentity {
        EncoderIdentity { name: "hashing-test".into(), dim: DIM }
    }
    fn cache_key(&self) -> String {
        "hashing-test".into()
    }
    fn user_text(&self, _: UserTextBudget, signals: UserSignals<'_>) -> Result<String, EncoderError> {
        Ok(signals.history.iter().take(20).copied().collect::<Vec<_>>().join(", "))
    }
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EncoderError> {
        Ok(texts
            .iter()
            .map(|text| {
                let mut v = vec![0f32; DIM];
                for word in text.to_lowercase().split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
                    let mut h = DefaultHasher::new();
                    word.hash(&mut h);
                    let h = h.finish();
                    v[(h % DIM as u64) as usize] += if h & (1 << 40) == 0 { 1.0 } else { -1.0 };
                }
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
                v.into_iter().map(|x| x / norm).collect()
            })
            .collect())
    }
}

/// 240 shoppers, 8 departments of 12 products; each shopper buys mostly
/// in one department, popular products more often, every ~9 days from May
/// to November 2011.
fn synthetic_log(seed: u64) -> Dataset {
    let departments = ["garden", "kitchen", "toys", "candles", "tea", "bags", "cards", "lamps"];
    let mut rng = StdRng::seed_from_u64(seed);
    let mut data = Dataset::default();
    let start = parse_time("2011-05-01").unwrap();
    let end = parse_time("2011-12-01").unwrap();
    for user in 0..240 {
        let favourite = rng.gen_range(0..departments.len());
        let mut time = start + rng.gen_range(0..10 * DAY);
        while time < end {
            let department = if rng.gen_bool(0.85) { favourite } else { rng.gen_range(0..departments.len()) };
            // Squared uniform: low product numbers sell more.
            let product = (rng.gen::<f64>().powi(2) * 12.0) as usize;
            let text =
                format!("{} product {product} {}", departments[department], ["red", "blue", "large"][product % 3]);
            let event = Event {
                user: data.users.intern(&format!("u{user}")),
                item: data.items.intern(&format!("{department}-{product}")),
                time,
                quantity: 1.0,
                price: Some(1.0 + product as f32),
                text: Some(data.descriptions.intern(&text)),
            };
            data.events.push(event);
            time += rng.gen_range(2 * DAY..16 * DAY);
        }
    }
    data.finish()
}

fn options() -> TrainOptions {
    TrainOptions {
        windows: 2,
        negatives: 4,
        hidden: vec![16],
        max_epochs: 5,
        patience: 5,
        batch_size: 64,
        learning_rate: 3e-3,
        dropout: 0.0,
        members: 1,
        refit: false,
        ..options::tests::defaults()
    }
}

#[test]
fn training_on_a_synthetic_log_lowers_the_loss_and_learns_the_departments() {
    let data = synthetic_log(1);
    let mut store = EmbedStore::open(None, &HashingEmbedder).unwrap();
    let settings =
        SplitSettings { user_text: UserTextBudget { query_tokens: 48, profile_tokens: 48 }, ease_max_items: 4000 };
    let outcome = train(&data, &HashingEmbedder, &settings, &mut store, &options()).unwrap();
    let losses: Vec<f64> = outcome.log.iter().map(|e| e.loss).collect();
    assert_eq!(losses.len(), 5, "{losses:?}");
    assert!(losses[4] < losses[0] * 0.9, "the loss did not drop: {losses:?}");
    // Chance is 0.5: the head ranks a shopper's next purchases above the
    // rest of the catalog because it learned what their department is.
    assert!(outcome.validation.auc > 0.7, "inner-validation AUC {}", outcome.validation.auc);
    assert_eq!(outcome.stats.items.len(), 96, "the shipped statistics cover the catalog");
    assert_eq!(outcome.version, "2011-11-01-s7-e".to_string() + &outcome.best_epochs[0].to_string());
}

#[test]
fn model_selection_ranks_exactly_as_eval_does() {
    let data = synthetic_log(3);
    let mut store = EmbedStore::open(None, &HashingEmbedder).unwrap();
    let settings =
        SplitSettings { user_text: UserTextBudget { query_tokens: 48, profile_tokens: 48 }, ease_max_items: 4000 };
    let split = Split::new(&data, options().t_val, Some(options().t_test));
    let prepared = PreparedSplit::new(split, &HashingEmbedder, &settings, &mut store).unwrap();
    let spec = HeadSpec::new(HashingEmbedder.identity(), vec![8], 1).unwrap();
    let varmap = VarMap::new();
    let head = ScoringHead::new(VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu), spec).unwrap();

    // Every user (the pairs fit), then a sample of 10.
    let validator = Validator::new(&prepared, &store, usize::MAX, 7).unwrap();
    assert_eq!(validator.users(), prepared.split.test_users.len());
    let eval =
        crate::offline::eval::evaluate(&prepared, &store, Some(&head), &["model"], 0, false, None).unwrap().methods;
    assert_eq!(validator.evaluate(&head).unwrap(), eval["model"], "same users, same scores, same metrics");

    let pairs = 10 * prepared.stats.items.len();
    let sampled = Validator::new(&prepared, &store, pairs, 7).unwrap();
    assert_eq!(sampled.users(), 10);
    assert_ne!(sampled.evaluate(&head).unwrap(), eval["model"], "a sample, not the whole split");
}

#[test]
fn bad_options_stop_training_before_any_work() {
    let data = synthetic_log(2);
    let mut store = EmbedStore::open(None, &HashingEmbedder).unwrap();
    let settings =
        SplitSettings { user_text: UserTextBudget { query_tokens: 48, profile_tokens: 48 }, ease_max_items: 4000 };
    let bad = TrainOptions { batch_size: 0, ..options() };
    match train(&data, &HashingEmbedder, &settings, &mut store, &bad) {
        Err(TrainError::Options(e)) => assert_eq!(e.option, "batch-size"),
        Err(other) => panic!("expected an options error, got {other}"),
        Ok(_) => panic!("trained with batch size 0"),
    }
    for bad in [TrainOptions { members: 0, ..options() }, TrainOptions { hidden: vec![], ..options() }] {
        match train(&data, &HashingEmbedder, &settings, &mut store, &bad) {
            Err(TrainError::Head(e)) => assert!(e.to_string().contains("spec is not valid"), "{e}"),
            Err(other) => panic!("expected a head spec error, got {other}"),
            Ok(_) => panic!("trained a head that cannot score"),
        }
    }
}

#[test]
fn with_a_refit_the_shipped_weights_are_calibrated_on_users_kept_out_of_it() {
    let data = synthetic_log(4);
    let settings =
        SplitSettings { user_text: UserTextBudget { query_tokens: 48, profile_tokens: 48 }, ease_max_items: 4000 };
    let validation_users = {
        let mut store = EmbedStore::open(None, &HashingEmbedder).unwrap();
        let split = Split::new(&data, options().t_val, Some(options().t_test));
        PreparedSplit::new(split, &HashingEmbedder, &settings, &mut store).unwrap().split.test_users.len()
    };
    let calibrated = |refit: bool, calibration_share: f64| {
        let mut store = EmbedStore::open(None, &HashingEmbedder).unwrap();
        let options = TrainOptions { refit, calibration_share, max_epochs: 2, ..options() };
        let outcome = train(&data, &HashingEmbedder, &settings, &mut store, &options).unwrap();
        (outcome.calibration.expect("both labels in the window").fitted_on, outcome.examples)
    };

    let (held_out, refit_examples) = calibrated(true, 0.25);
    assert!(held_out.held_out);
    assert_eq!(held_out.users, (validation_users as f64 * 0.25).ceil() as usize);
    assert!(held_out.positives > 0 && held_out.pairs > held_out.positives, "{held_out:?}");

    // Share 0: every validation user, scored by the pre-refit weights; the
    // refit then trains on all of them, so it has more examples.
    let (everyone, all_examples) = calibrated(true, 0.0);
    assert!(!everyone.held_out);
    assert_eq!(everyone.users, validation_users);
    assert!(all_examples > refit_examples, "{all_examples} vs {refit_examples}");

    // Without a refit nothing is held out: the selected weights ship.
    let (no_refit, _) = calibrated(false, 0.25);
    assert!(!no_refit.held_out);
    assert_eq!(no_refit.users, validation_users);
}

#[test]
fn held_out_users_are_a_seeded_ascending_share_and_never_empty_above_zero() {
    assert!(held_out_users(100, 0.0, 1_000, 7).is_empty());
    let chosen = held_out_users(100, 0.25, 1_000, 7);
    assert_eq!(chosen.len(), 25);
    assert!(chosen.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(chosen, held_out_users(100, 0.25, 1_000, 7));
    assert_eq!(held_out_users(3, 0.01, 1_000, 7).len(), 1, "rounded up");
    assert_eq!(held_out_users(4, 1.0, 1_000, 7), vec![0, 1, 2, 3]);
    let capped = held_out_users(100, 0.25, 10, 7);
    assert_eq!(capped.len(), 10, "no more than the pair budget calibrates on");
    assert!(capped.last() > Some(&10), "a sample of all users, not the first ones: {capped:?}");
}
