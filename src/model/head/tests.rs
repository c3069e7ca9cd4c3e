//! Tests of the scoring head: the serving form against the concatenated
//! forward, ensembles, and loaded heads in f32 and int8.

use super::*;
use crate::model::encoder::EncoderIdentity;

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

    let normalised = |rows: Tensor| rows.broadcast_div(&rows.sqr().unwrap().sum_keepdim(1).unwrap().sqrt().unwrap());
    let user =
        Tensor::from_vec((0..dim).map(|i| 0.3 - i as f32 / 150.0).collect::<Vec<_>>(), (1, dim), &Device::Cpu).unwrap();
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
