//! Tests of the bundle: saved and loaded back, and every check loading makes.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use super::*;
use crate::model::stats::ItemStats;

fn stats() -> HistoryStats {
    let item = ItemStats {
        id: "A".into(),
        text: "MUG".into(),
        buyers: 2,
        recent_buyers: 1,
        week_buyers: 0,
        age_days: 3.0,
        price: Some(2.5),
        neighbours: Vec::new(),
        recent_ease: Vec::new(),
        quantity: None,
    };
    HistoryStats::from_parts("2011-11-01 00:00:00".into(), 2, vec![item])
}

fn saved(dir: &Path) -> BundleManifest {
    let identity = EncoderIdentity { name: "enc".into(), dim: 4 };
    let spec = HeadSpec::new(identity, vec![3], 1).unwrap();
    let varmap = VarMap::new();
    ScoringHead::new(VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu), spec.clone()).unwrap();
    let manifest = BundleManifest {
        format: BUNDLE_FORMAT,
        version: "v1".into(),
        head: spec,
        training: None,
        validation: None,
        calibration: None,
    };
    Bundle::save(dir, &manifest, &varmap, &stats()).unwrap();
    manifest
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("shoprank-bundle-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn save_then_load_round_trips_and_checks_the_encoder() {
    let dir = scratch("round-trip");
    let manifest = saved(&dir);
    let bundle = Bundle::load(&dir, &EncoderIdentity { name: "enc".into(), dim: 4 }, Arithmetic::F32).unwrap();
    assert_eq!(bundle.manifest(), &manifest);
    assert_eq!(bundle.version(), "v1");
    assert_eq!(bundle.stats().position_of_id("A").map(|p| p.index()), Some(0));
    let mode = |file: &str| std::fs::metadata(dir.join(file)).unwrap().permissions();
    assert_eq!(mode(WEIGHTS_FILE), mode(MANIFEST_FILE), "the weights are as readable as the manifest");

    // Saving again replaces the directory whole.
    let mut second = manifest.clone();
    second.version = "v2".into();
    let varmap = VarMap::new();
    ScoringHead::new(VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu), manifest.head.clone()).unwrap();
    Bundle::save(&dir, &second, &varmap, &stats()).unwrap();
    assert_eq!(
        Bundle::load(&dir, &EncoderIdentity { name: "enc".into(), dim: 4 }, Arithmetic::F32).unwrap().version(),
        "v2"
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.contains("staging") || n.contains("retired"))
        // Only this test's bundle: others save theirs beside it meanwhile.
        .filter(|n| n.contains(&format!("{}.", dir.file_name().unwrap().to_string_lossy())))
        .filter(|n| n.contains(&format!("-{}", std::process::id())))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let other = EncoderIdentity { name: "other".into(), dim: 768 };
    let err = Bundle::load(&dir, &other, Arithmetic::F32).err().unwrap().to_string();
    assert!(err.contains("other") && err.contains("enc"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A log without prices gives items without one: the bundle writes them
/// as `null` (as bundles written before prices were optional did, from
/// a NaN) and loads them as "no price".
#[test]
fn items_without_a_price_round_trip_as_null() {
    let dir = scratch("no-price");
    let manifest = saved(&dir);
    let mut priceless = stats();
    priceless.items[0].price = None;
    let varmap = VarMap::new();
    ScoringHead::new(VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu), manifest.head.clone()).unwrap();
    Bundle::save(&dir, &manifest, &varmap, &HistoryStats::from_parts("2011-11-01 00:00:00".into(), 2, priceless.items))
        .unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut crate::model::open_maybe_gz(&dir.join(STATS_FILE)).unwrap(), &mut text).unwrap();
    assert!(text.contains("\"price\":null"), "{text}");
    let identity = EncoderIdentity { name: "enc".into(), dim: 4 };
    let bundle = Bundle::load(&dir, &identity, Arithmetic::F32).unwrap();
    assert_eq!(bundle.stats().items[0].price, None);
    assert_eq!(bundle.stats().typical_price(), 1.0, "no item has a price: the neutral price");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `save` loads what it wrote before it replaces anything: damaged
/// statistics are refused, naming the item, and the old bundle stays.
#[test]
fn a_bundle_that_would_not_load_is_not_saved() {
    let dir = scratch("unloadable");
    let manifest = saved(&dir);
    let mut broken = stats();
    broken.items[0].neighbours = vec![(crate::model::stats::ItemPos::new(7), 0.5)];
    let varmap = VarMap::new();
    ScoringHead::new(VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu), manifest.head.clone()).unwrap();
    let mut second = manifest.clone();
    second.version = "v2".into();
    let err = Bundle::save(&dir, &second, &varmap, &broken).unwrap_err().to_string();
    assert!(err.contains("does not load back") && err.contains("item 0") && err.contains("position 7"), "{err}");
    let identity = EncoderIdentity { name: "enc".into(), dim: 4 };
    assert_eq!(Bundle::load(&dir, &identity, Arithmetic::F32).unwrap().version(), "v1", "the old bundle stays");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_broken_manifest_is_refused_naming_the_file_and_the_problem() {
    let dir = scratch("broken");
    saved(&dir);
    let path = dir.join(MANIFEST_FILE);
    let text = std::fs::read_to_string(&path).unwrap();
    let identity = EncoderIdentity { name: "enc".into(), dim: 4 };
    for (from, to, needle) in [
        ("\"members\": 1", "\"members\": 0", "members"),
        ("\"hidden\": [\n      3\n    ]", "\"hidden\": []", "hidden"),
        ("\"format\": 2", "\"format\": 1", "retrain"),
        ("\"version\": \"v1\"", "\"version\": \" \"", "no version"),
    ] {
        assert!(text.contains(from), "fixture has {from}: {text}");
        std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
        let err = Bundle::load(&dir, &identity, Arithmetic::F32).err().unwrap().to_string();
        assert!(err.contains(needle) && err.contains("bundle.json"), "{to}: {err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn weights_that_do_not_fit_the_spec_or_cannot_score_are_refused_naming_the_file() {
    let dir = scratch("broken-weights");
    saved(&dir);
    let path = dir.join(WEIGHTS_FILE);
    let good = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    let identity = EncoderIdentity { name: "enc".into(), dim: 4 };
    type Edit = fn(&mut std::collections::HashMap<String, Tensor>);
    let cases: [(&str, Edit, &str); 5] = [
        (
            "NaN weights",
            |t| {
                let w = &t["fc0.weight"];
                t.insert("fc0.weight".into(), (w * f64::NAN).unwrap());
            },
            "not finite",
        ),
        (
            "a second member",
            |t| {
                t.insert("m1.fc0.weight".into(), t["fc0.weight"].clone());
            },
            "m1.fc0.weight",
        ),
        (
            "a missing bias",
            |t| {
                t.remove("out.bias");
            },
            "out.bias",
        ),
        (
            "a wider layer",
            |t| {
                t.insert("fc0.bias".into(), Tensor::zeros(5, DType::F32, &Device::Cpu).unwrap());
            },
            "fc0.bias has shape [5]",
        ),
        (
            "a zero scale",
            |t| {
                let n = t["numeric_std"].dims()[0];
                t.insert("numeric_std".into(), Tensor::zeros(n, DType::F32, &Device::Cpu).unwrap());
            },
            "numeric_std",
        ),
    ];
    for (what, edit, needle) in cases {
        let mut tensors = good.clone();
        edit(&mut tensors);
        candle_core::safetensors::save(&tensors, &path).unwrap();
        let err = Bundle::load(&dir, &identity, Arithmetic::F32).err().unwrap().to_string();
        assert!(err.contains(needle) && err.contains(WEIGHTS_FILE), "{what}: {err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A calibrated bundle maps the head's logit before the sigmoid: the same
/// candidates get other probabilities in the same order; a map that would
/// reverse the order is refused at load, naming the file.
#[test]
fn a_calibrated_bundle_scores_through_its_map_and_a_bad_map_is_refused() {
    use crate::model::calibration::{Calibration, CalibrationData};
    use crate::model::features::{Numeric, NUMERIC_LEN};

    let identity = EncoderIdentity { name: "enc".into(), dim: 4 };
    let plain_dir = scratch("uncalibrated");
    let manifest = saved(&plain_dir);
    let calibrated_dir = scratch("calibrated");
    let mut calibrated = manifest.clone();
    calibrated.calibration = Some(Calibration {
        slope: 0.5,
        intercept: -4.0,
        knots: Vec::new(),
        event: Calibration::event_for(31),
        horizon_days: 31,
        fitted_on: CalibrationData {
            window: "2011-10-01..2011-11-01".into(),
            users: 2,
            pairs: 100,
            positives: 3,
            held_out: true,
        },
    });
    // The same weights in both bundles.
    std::fs::create_dir_all(&calibrated_dir).unwrap();
    for file in [WEIGHTS_FILE, STATS_FILE] {
        std::fs::copy(plain_dir.join(file), calibrated_dir.join(file)).unwrap();
    }
    std::fs::write(calibrated_dir.join(MANIFEST_FILE), serde_json::to_string(&calibrated).unwrap()).unwrap();

    let plain = Bundle::load(&plain_dir, &identity, Arithmetic::F32).unwrap();
    let bundle = Bundle::load(&calibrated_dir, &identity, Arithmetic::F32).unwrap();
    assert!(plain.calibration().is_none());
    assert_eq!(bundle.calibration().map(|c| c.slope), Some(0.5));
    let items =
        Tensor::from_vec((0..12).map(|i| (i as f32 * 0.37).sin()).collect::<Vec<f32>>(), (3, 4), &Device::Cpu).unwrap();
    let numeric: Vec<Numeric> = (0..3).map(|i| [i as f32 * 0.5; NUMERIC_LEN]).collect();
    let user = [0.5, -0.5, 0.5, 0.5];
    let raw = plain.head().score_user(&user, &items, &numeric).unwrap();
    let mapped = bundle.head().score_user(&user, &items, &numeric).unwrap();
    for (r, m) in raw.iter().zip(&mapped) {
        let logit = (r / (1.0 - r)).ln();
        let expected = 1.0 / (1.0 + (-(0.5 * logit - 4.0)).exp());
        assert!((m - expected).abs() < 1e-5, "{r} maps to {m}, not {expected}");
    }
    let order = |s: &[f32]| {
        let mut o: Vec<usize> = (0..s.len()).collect();
        o.sort_by(|&a, &b| s[b].total_cmp(&s[a]));
        o
    };
    assert_eq!(order(&raw), order(&mapped), "calibration keeps the order");

    let text = std::fs::read_to_string(calibrated_dir.join(MANIFEST_FILE)).unwrap();
    std::fs::write(calibrated_dir.join(MANIFEST_FILE), text.replace("\"slope\":0.5", "\"slope\":-0.5")).unwrap();
    let err = Bundle::load(&calibrated_dir, &identity, Arithmetic::F32).err().unwrap().to_string();
    assert!(err.contains("bundle.json") && err.contains("slope"), "{err}");
    std::fs::remove_dir_all(&plain_dir).unwrap();
    std::fs::remove_dir_all(&calibrated_dir).unwrap();
}
