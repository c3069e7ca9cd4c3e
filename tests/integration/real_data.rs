//! Tests on the real UCI Online Retail log. They read it from the path in
//! `SHOPRANK_RETAIL_DATA` (.ci/run and scripts/test set it to ../shared/...
//! when it is there). When it is unset they print SKIPPED to stderr and pass,
//! since a fresh clone has no data, unless `SHOPRANK_REQUIRE_REAL_DATA=1`
//! (CI sets it): then a missing log fails them.

use std::io::Write;
use std::path::PathBuf;

use shoprank::{
    numeric_features, parse_time, train, Candidate, DataSource, Dataset, EmbedStore, HistoryItem, ItemPos, Metrics,
    Numeric, PreparedSplit, RankQuery, Split, SplitSettings, TrainOptions, PROTOCOL_T_TEST, PROTOCOL_T_VAL,
};

use crate::common;

fn retail(test: &str) -> Option<Dataset> {
    let required = std::env::var("SHOPRANK_REQUIRE_REAL_DATA").is_ok_and(|v| v == "1");
    match std::env::var_os("SHOPRANK_RETAIL_DATA").filter(|p| !p.is_empty()) {
        Some(path) => Some(DataSource::OnlineRetail(PathBuf::from(path)).load().expect("real log loads")),
        None if required => panic!("{test}: SHOPRANK_REQUIRE_REAL_DATA=1 but SHOPRANK_RETAIL_DATA is unset"),
        None => {
            // Straight to stderr: libtest does not capture this, so the skip shows.
            let _ = writeln!(std::io::stderr(), "SKIPPED {test}: set SHOPRANK_RETAIL_DATA to online_retail.csv.gz");
            None
        }
    }
}

#[test]
fn protocol_split_counts_match_eval_protocol() {
    let Some(data) = retail("protocol_split_counts_match_eval_protocol") else { return };
    assert_eq!(data.events.len(), 396_337, "cleaned events");
    let t_test = parse_time(PROTOCOL_T_TEST).unwrap();
    let split = Split::new(&data, t_test, None);
    assert_eq!(split.test_users.len(), 1_440);
    assert_eq!(split.catalog.len(), 3_607);
    let mean_truth = split.test_users.iter().map(|u| u.truth.len()).sum::<usize>() as f64 / 1_440.0;
    assert!((mean_truth - 22.8).abs() < 0.05, "mean |truth| {mean_truth}");
    let inner = Split::new(&data, parse_time(PROTOCOL_T_VAL).unwrap(), Some(t_test));
    assert_eq!((inner.test_users.len(), inner.catalog.len()), (937, 3_502));
}

#[test]
fn training_lowers_the_loss_on_a_slice_of_the_real_log() {
    let Some(data) = retail("training_lowers_the_loss_on_a_slice_of_the_real_log") else { return };
    let encoder = common::encoder();
    let mut store = EmbedStore::open(None, &*encoder).unwrap();
    let options = TrainOptions {
        t_test: parse_time(PROTOCOL_T_TEST).unwrap(),
        t_val: parse_time(PROTOCOL_T_VAL).unwrap(),
        windows: 1,
        window_days: 30,
        negatives: 4,
        cold_fraction: 0.1,
        query_fraction: 0.3,
        typo_fraction: 0.1,
        hard_negatives: false,
        popular_share: 0.5,
        hidden: vec![32, 8],
        max_epochs: 4,
        patience: 4,
        batch_size: 64,
        learning_rate: 1e-3,
        weight_decay: 0.0,
        dropout: 0.0,
        seed: 1,
        members: 1,
        refit: false,
        calibration_share: 0.25,
        max_users: Some(40),
        max_validation_pairs: 16_000_000,
        max_examples: 1_200_000,
    };
    let outcome =
        train(&data, &*encoder, &SplitSettings::from_settings(&common::settings()), &mut store, &options).unwrap();
    let losses: Vec<f64> = outcome.log.iter().map(|e| e.loss).collect();
    assert!(losses.len() >= 2, "{losses:?}");
    assert!(losses.last().unwrap() < &(losses[0] * 0.95), "loss did not drop: {losses:?}");
    // Better than chance on the validation users: the head learned something.
    assert!(outcome.validation.auc > 0.6, "inner-validation AUC {}", outcome.validation.auc);
    assert_eq!(outcome.stats.items.len(), 3_607, "shipped statistics cover the T_test catalog");
}

#[test]
fn serving_builds_the_features_training_builds() {
    let Some(data) = retail("serving_builds_the_features_training_builds") else { return };
    let settings = common::settings();
    let encoder = common::encoder();
    let mut split = Split::new(&data, parse_time(PROTOCOL_T_TEST).unwrap(), None);
    split.test_users.truncate(2);
    let mut store = EmbedStore::open(None, &*encoder).unwrap();
    let prepared = PreparedSplit::new(split, &*encoder, &SplitSettings::from_settings(&settings), &mut store).unwrap();

    // The committed statistics are exactly what training builds from this history.
    let service = common::service(&settings, Metrics::new());
    let bundle = service.bundle();
    assert_eq!(bundle.stats().items, prepared.stats.items, "models/bundle/stats.json.gz is stale: retrain");

    for index in 0..2 {
        let user = prepared.split.test_users[index].user;
        // Training/eval path.
        let context = prepared.user_context(index, &store);
        let positions: Vec<ItemPos> = prepared.candidates(user).into_iter().take(25).collect();
        let expected: Vec<Numeric> = positions
            .iter()
            .map(|&p| numeric_features(&prepared.stats, &context, &prepared.candidate(p, &store)))
            .collect();
        // Serving path: the same user and items as a storefront would send them.
        let history = prepared
            .history_positions(user)
            .into_iter()
            .map(|p| HistoryItem {
                id: Some(prepared.item_id(p).to_string()),
                text: prepared.stats.item(p).text.clone(),
            })
            .collect();
        let candidates = positions
            .iter()
            .map(|&p| Candidate {
                id: prepared.item_id(p).to_string(),
                text: prepared.stats.item(p).text.clone(),
                price: None,
                available: true,
                attributes: serde_json::Value::Null,
            })
            .collect();
        let query = RankQuery::new(None, history, candidates, 10);
        assert_eq!(service.ranker().user_text(&query).unwrap(), prepared.user_texts[index]);
        let served = service.ranker().numeric_features(&bundle, &query).unwrap();
        for (s, e) in served.iter().zip(&expected) {
            for (a, b) in s.iter().zip(e) {
                assert!((a - b).abs() <= 1e-4, "served {s:?}\nvs trained {e:?}");
            }
        }
    }
}
