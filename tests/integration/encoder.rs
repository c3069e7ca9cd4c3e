//! The encoder against sentence-transformers' reference vectors
//! (tests/fixtures/reference_vectors.json, made by
//! scripts/make-reference-vectors.py from the same weights).

use serde::Deserialize;
use shoprank::model::encoder::{cosine, Encoder};

use crate::common;

#[derive(Deserialize)]
struct Fixture {
    texts: Vec<Reference>,
}

#[derive(Deserialize)]
struct Reference {
    text: String,
    vector: Vec<f32>,
}

fn fixture() -> Fixture {
    let text = std::fs::read_to_string(common::repo_path("tests/fixtures/reference_vectors.json")).expect("fixture");
    serde_json::from_str(&text).expect("fixture parses")
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn check_single_texts(encoder: &Encoder) {
    for reference in fixture().texts {
        let got = encoder.embed(&[&reference.text], 1).unwrap().remove(0);
        let diff = max_abs_diff(&got, &reference.vector);
        assert!(diff <= 1e-5, "{:?}: max abs diff {diff}", reference.text);
    }
}

fn check_padded_batch(encoder: &Encoder) {
    let fixture = fixture();
    let texts: Vec<&str> = fixture.texts.iter().map(|r| r.text.as_str()).collect();
    // One batch of mixed lengths (1 to 256 tokens), in fixture order.
    let got = encoder.embed(&texts, texts.len()).unwrap();
    for (vector, reference) in got.iter().zip(&fixture.texts) {
        let diff = max_abs_diff(vector, &reference.vector);
        assert!(diff <= 1e-5, "{:?} in a batch: max abs diff {diff}", reference.text);
    }
}

#[test]
fn fast_encoder_matches_sentence_transformers_on_single_texts() {
    check_single_texts(&common::encoder());
}

#[test]
fn fast_encoder_matches_sentence_transformers_in_a_mixed_batch() {
    check_padded_batch(&common::encoder());
}

#[test]
fn reference_bert_model_matches_sentence_transformers_on_single_texts() {
    check_single_texts(&common::reference_encoder());
}

#[test]
fn reference_bert_model_matches_sentence_transformers_in_a_padded_batch() {
    check_padded_batch(&common::reference_encoder());
}

#[test]
fn int8_encoder_stays_within_cosine_bound() {
    let encoder = common::int8_encoder();
    for reference in fixture().texts {
        let got = encoder.embed(&[&reference.text], 1).unwrap().remove(0);
        let c = cosine(&got, &reference.vector);
        assert!(c >= 0.995, "{:?}: cosine {c} to the f32 reference", reference.text);
    }
}

#[test]
fn long_texts_are_truncated_to_the_window() {
    let encoder = common::encoder();
    let long = "teapot ".repeat(1000);
    assert_eq!(encoder.tokenize(&long).unwrap().len(), 256);
    let v = encoder.embed(&[&long], 1).unwrap().remove(0);
    assert_eq!(v.len(), 384);
    let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5);
}

#[test]
fn vectors_do_not_depend_on_batch_order_or_size() {
    let encoder = common::encoder();
    let texts = ["red mug", "a much longer product title about a ceramic teapot with saucers", "bag"];
    let alone: Vec<Vec<f32>> = texts.iter().map(|t| encoder.embed(&[t], 1).unwrap().remove(0)).collect();
    let together = encoder.embed(&texts, 3).unwrap();
    for (a, b) in alone.iter().zip(&together) {
        assert!(max_abs_diff(a, b) <= 1e-5);
    }
}

/// Found by `scripts/fuzz` (user_text): the normaliser splits a Hangul
/// syllable into three jamo tokens that share its offsets, so cutting "after
/// the fifth token" kept the whole syllable, and the text overflowed its
/// window. Each part is now cut where no character is split.
#[test]
fn the_user_text_stays_in_its_window_when_one_character_is_several_tokens() {
    use shoprank::config::UserTextBudget;
    use shoprank::model::user_text::{compose, UserSignals};
    let encoder = common::encoder();
    let budget = UserTextBudget { query_tokens: 0, profile_tokens: 0 };
    for window in 8..16 {
        let history = ["\u{7f}", "fts\0JB\0\0\0텬\0\0RED", "NUNC RER", "한국어 가방 텬텬"];
        let signals = UserSignals { query: Some("빨간 가방"), profile: None, history: &history };
        let budget = UserTextBudget { query_tokens: 4, ..budget };
        let text = compose(encoder.tokenizer(), budget, window, signals).unwrap();
        let tokens = encoder.tokenizer().encode(text.as_str(), true).unwrap().len();
        assert!(tokens <= window, "{tokens} tokens for a window of {window}: {text:?}");
    }
}
