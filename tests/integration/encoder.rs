//! The encoders against sentence-transformers' reference vectors
//! (tests/fixtures/reference-vectors/<model>.json, made by
//! scripts/make-reference-vectors.py from the same weights): English
//! all-MiniLM-L6-v2 and Chinese m3e-small, on English, Chinese and mixed
//! texts, titles to user texts cut at the window.

use serde::Deserialize;
use shoprank::{cosine, Encoder, EncoderSettings, LinearLayer, Precision};

use crate::common::{self, Backbone, M3E, MINILM};

#[derive(Deserialize)]
struct Fixture {
    max_seq_length: usize,
    texts: Vec<Reference>,
}

#[derive(Deserialize)]
struct Reference {
    text: String,
    vector: Vec<f32>,
}

fn fixture(model: &str) -> Fixture {
    let path = common::repo_path(&format!("tests/fixtures/reference-vectors/{model}.json"));
    let text = std::fs::read_to_string(path).expect("fixture");
    serde_json::from_str(&text).expect("fixture parses")
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn check_single_texts(model: &str, backbone: Backbone) {
    let encoder = common::model_encoder(model, backbone);
    let fixture = fixture(model);
    assert_eq!(encoder.max_seq_len(), fixture.max_seq_length, "the preset's window is the fixture's");
    for reference in fixture.texts {
        let got = encoder.embed(&[&reference.text], 1).unwrap().remove(0);
        let diff = max_abs_diff(&got, &reference.vector);
        assert!(diff <= 1e-5, "{model} {backbone:?} {:?}: max abs diff {diff}", reference.text);
    }
}

fn check_padded_batch(model: &str, backbone: Backbone) {
    let encoder = common::model_encoder(model, backbone);
    let fixture = fixture(model);
    let texts: Vec<&str> = fixture.texts.iter().map(|r| r.text.as_str()).collect();
    // One batch of mixed lengths (1 to 256 tokens), in fixture order.
    let got = encoder.embed(&texts, texts.len()).unwrap();
    for (vector, reference) in got.iter().zip(&fixture.texts) {
        let diff = max_abs_diff(vector, &reference.vector);
        assert!(diff <= 1e-5, "{model} {backbone:?} {:?} in a batch: max abs diff {diff}", reference.text);
    }
}

fn check_int8_cosine(model: &str) {
    let encoder = common::model_encoder(model, Backbone::Fast(Precision::Int8));
    let mut lowest = f32::MAX;
    for reference in fixture(model).texts {
        let got = encoder.embed(&[&reference.text], 1).unwrap().remove(0);
        let c = cosine(&got, &reference.vector);
        assert!(c >= 0.995, "{model} {:?}: cosine {c} to the f32 reference", reference.text);
        lowest = lowest.min(c);
    }
    eprintln!("{model} int8: lowest cosine to the reference {lowest:.5}");
}

/// Each linear layer's share of the int8 error, measured: the worst and
/// mean cosine to the f32 reference over the fixture texts with only that
/// layer in int8, and with every layer but it. Every mix stays within the
/// bound the all-int8 default meets, and names its vectors apart.
fn check_int8_layers(model: &str) {
    let files = common::model_files(model);
    let settings = common::preset_settings(model).encoder;
    let texts = fixture(model).texts;
    let measure = |int8_layers: Vec<LinearLayer>| {
        let settings = EncoderSettings { precision: Precision::Int8, int8_layers, ..settings.clone() };
        let encoder = Encoder::load(&files, &settings).expect("load encoder");
        let cosines: Vec<f32> = texts
            .iter()
            .map(|reference| cosine(&encoder.embed(&[&reference.text], 1).unwrap()[0], &reference.vector))
            .collect();
        let lowest = cosines.iter().copied().fold(f32::MAX, f32::min);
        (lowest, cosines.iter().sum::<f32>() / cosines.len() as f32, encoder.embedding_key())
    };
    let mut keys = std::collections::HashSet::new();
    let (all_lowest, all_mean, key) = measure(LinearLayer::ALL.to_vec());
    eprintln!("{model} int8 layers: lowest / mean cosine to f32 over {} texts", texts.len());
    eprintln!("  all four in int8:        {all_lowest:.5} / {all_mean:.6}");
    keys.insert(key);
    for layer in LinearLayer::ALL {
        let (alone_lowest, alone_mean, alone_key) = measure(vec![layer]);
        let others = LinearLayer::ALL.into_iter().filter(|&l| l != layer).collect();
        let (others_lowest, others_mean, others_key) = measure(others);
        eprintln!(
            "  {:<17} only: {alone_lowest:.5} / {alone_mean:.6};  all but it: {others_lowest:.5} / {others_mean:.6}",
            layer.as_str()
        );
        for (lowest, mix) in [(alone_lowest, "only"), (others_lowest, "all but")] {
            assert!(lowest >= 0.995, "{model}: {mix} {} in int8 gives cosine {lowest}", layer.as_str());
            // And the layer really ran in int8 (f32 would be exact).
            assert!(lowest < 0.99999, "{model}: {mix} {} in int8 matches f32 ({lowest})", layer.as_str());
        }
        assert!(keys.insert(alone_key) && keys.insert(others_key), "each mix keys its vectors apart");
    }
    let (none_lowest, _, none_key) = measure(Vec::new());
    assert!(none_lowest > 0.99999, "no layer in int8 is f32: {none_lowest}");
    assert!(none_key.contains("-f32-"), "{none_key}");
}

#[test]
fn int8_layers_are_chosen_per_layer_and_each_ones_cost_is_measured() {
    check_int8_layers(MINILM);
    check_int8_layers(M3E);
}

const FAST: Backbone = Backbone::Fast(Precision::F32);

#[test]
fn fast_encoder_matches_sentence_transformers_on_single_texts() {
    check_single_texts(MINILM, FAST);
}

#[test]
fn fast_encoder_matches_sentence_transformers_in_a_mixed_batch() {
    check_padded_batch(MINILM, FAST);
}

#[test]
fn reference_bert_model_matches_sentence_transformers_on_single_texts() {
    check_single_texts(MINILM, Backbone::Reference);
}

#[test]
fn reference_bert_model_matches_sentence_transformers_in_a_padded_batch() {
    check_padded_batch(MINILM, Backbone::Reference);
}

#[test]
fn int8_encoder_stays_within_cosine_bound() {
    check_int8_cosine(MINILM);
}

#[test]
fn chinese_encoder_matches_sentence_transformers_on_single_texts() {
    check_single_texts(M3E, FAST);
}

#[test]
fn chinese_encoder_matches_sentence_transformers_in_a_mixed_batch() {
    check_padded_batch(M3E, FAST);
}

#[test]
fn chinese_reference_bert_model_matches_sentence_transformers() {
    check_single_texts(M3E, Backbone::Reference);
    check_padded_batch(M3E, Backbone::Reference);
}

#[test]
fn chinese_int8_encoder_stays_within_cosine_bound() {
    check_int8_cosine(M3E);
}

/// The fixture's long Chinese user text really is cut: one token per
/// character, more characters than the window.
#[test]
fn chinese_text_is_truncated_at_the_window_on_a_character() {
    let encoder = common::model_encoder(M3E, FAST);
    let long = "纯棉四件套床上用品".repeat(100);
    let tokens = encoder.tokenize(&long).unwrap();
    assert_eq!(tokens.len(), 256);
    let pieces: Vec<String> =
        tokens.ids[1..255].iter().map(|&id| encoder.tokenizer().id_to_token(id).expect("known id")).collect();
    assert!(pieces.iter().all(|p| p.chars().count() == 1), "one token per character: {:?}", &pieces[..9]);
    assert_eq!(encoder.dim(), 512);
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

/// A huge text (2 MB, within the body limit) is cut to what the window can
/// use before it is tokenized, and gets exactly the tokens the whole text
/// would: on both tokenizers, as a candidate and as a user-text part.
#[test]
fn a_huge_text_gets_the_tokens_of_the_whole_text() {
    for model in [common::MINILM, M3E] {
        let encoder = common::model_encoder(model, FAST);
        let huge = "Handmade ceramic teapot, 1.2 l, blue glaze; 纯棉四件套. ".repeat(40_000);
        assert!(huge.len() > 2_000_000);
        let whole = encoder.tokenizer().encode(huge.as_str(), true).unwrap().get_ids().to_vec();
        assert_eq!(encoder.tokenize(&huge).unwrap().ids, whole, "{model}");
        let part = shoprank::PartTokens::of(encoder.tokenizer(), &huge).unwrap();
        let whole_part = encoder.tokenizer().encode(huge.as_str(), false).unwrap().get_ids().to_vec();
        let reference = shoprank::PartTokens::of(encoder.tokenizer(), &huge[..200]).unwrap();
        assert!(part.bytes() > reference.bytes(), "{model}");
        assert_eq!(
            part.bytes(),
            std::mem::size_of::<shoprank::PartTokens>()
                + whole_part.len() * 4
                + whole_part.len() * std::mem::size_of::<(usize, usize)>(),
            "{model}: the same window of tokens"
        );
    }
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
    use shoprank::{compose, UserSignals, UserTextBudget};
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

/// `encoder.lowercase`: m3e-small keeps case but knows lower-case English
/// only, so capitalised brand names are `[UNK]` unless lower-cased first.
/// The lower-cased encoder gives exactly the vectors of lower-cased text,
/// and says so in its name (bundles and cached vectors are keyed by it).
/// all-MiniLM-L6-v2 lower-cases already: there the setting changes nothing.
#[test]
fn lowercasing_lets_the_chinese_vocabulary_read_capitalised_english() {
    use shoprank::{Encoder, EncoderSettings};
    let load = |model: &str| {
        // f32, as `cased` below (the default, "auto", may be int8).
        let settings =
            EncoderSettings { lowercase: true, precision: Precision::F32, ..common::preset_settings(model).encoder };
        Encoder::load(&common::model_files(model), &settings).unwrap()
    };
    let lowered = load(M3E);
    assert_eq!(lowered.name(), "m3e-small+lowercase");
    let cased = common::model_encoder(M3E, FAST);
    let unknown = cased.tokenizer().token_to_id("[UNK]").unwrap();
    let title = "Apple iPhone 15 Pro 手机壳 MagSafe";
    assert!(cased.tokenize(title).unwrap().ids.contains(&unknown));
    assert!(!lowered.tokenize(title).unwrap().ids.contains(&unknown));
    let got = lowered.embed(&[title], 1).unwrap().remove(0);
    let expected = cased.embed(&[&title.to_lowercase()], 1).unwrap().remove(0);
    assert!(max_abs_diff(&got, &expected) <= 1e-6);

    assert_eq!(load(MINILM).name(), MINILM, "all-MiniLM-L6-v2's tokenizer lower-cases already");
}

/// A request's user text and query are not tokenized a second time: their
/// ids are the parts' ids joined (`user_text::IdJoin`). For both shipped
/// tokenizers (m3e-small also lower-cased), on the bench fixture's users
/// cut to many windows and budgets, and on awkward text (accents, Hangul
/// jamo, Chinese, a 150-letter word, control characters, parts with no
/// token at all, runs of punctuation, a query longer than the window),
/// they are exactly the ids the encoder makes of the text itself; and the
/// server, which takes history titles' tokens from a cache
/// (`serve::title_tokens`), composes the same.
#[test]
fn a_user_texts_joined_ids_are_its_own_tokens() {
    use shoprank::{
        compose, compose_with_ids, compose_with_ids_from, IdJoin, Metrics, TitleTokenCache, UserSignals, UserTextBudget,
    };
    let fixture = std::fs::read_to_string(common::repo_path("benches/fixtures/user_texts.jsonl")).unwrap();
    let mut users: Vec<(String, Vec<String>)> = fixture
        .lines()
        .take(40)
        .map(|line| {
            let user: serde_json::Value = serde_json::from_str(line).unwrap();
            let text = user["text"].as_str().unwrap();
            let viewed = text.split_once("recently viewed: ").unwrap().1.split(" ; ").map(str::to_string).collect();
            (user["query"].as_str().unwrap().to_string(), viewed)
        })
        .collect();
    let awkward =
        ["Café crème brûlée", "빨간 가방 텬텬", "手机壳 MagSafe 保护套", &"a".repeat(150), "dots...and,,commas!?"];
    users.push(("Rött  glas – 2 st.".into(), awkward.iter().map(|t| t.to_string()).collect()));
    users.push(("\u{7f}ctrl\0chars 🎁".into(), vec!["supercalifragilisticexpialidocious".into(), "x".into()]));
    users.push(("mug ".repeat(300), vec!["BLUE CUP".into()]));
    // Parts with no token at all (deleted by the normaliser) still get their separators.
    users.push(("\u{200b}".into(), vec!["\u{7f}".into(), "\u{feff}".into(), "mug".into(), "\u{301}".into()]));
    for (model, lowercase) in [(MINILM, false), (M3E, false), (M3E, true)] {
        let settings = EncoderSettings { lowercase, ..common::preset_settings(model).encoder };
        let encoder = Encoder::load(&common::model_files(model), &settings).unwrap();
        let tokenizer = encoder.tokenizer();
        let join = IdJoin::new(tokenizer, encoder.max_seq_len()).expect("BERT's tokenizers join");
        // The server's path: titles' tokens from its cache, which every
        // window below reuses.
        let titles = TitleTokenCache::new(1 << 20, Metrics::new());
        for (query, viewed) in &users {
            let history: Vec<&str> = viewed.iter().map(String::as_str).collect();
            let signals = UserSignals { query: Some(query), profile: Some("tea lover, café"), history: &history };
            for (window, query_tokens) in [(8, 3), (13, 0), (24, 5), (40, 16), (96, 16), (encoder.max_seq_len(), 32)] {
                let budget = UserTextBudget { query_tokens, profile_tokens: 4 };
                let composed = compose_with_ids(tokenizer, &join, budget, window, signals).unwrap();
                let context = format!("{model} lowercase={lowercase} window {window}: {:?}", composed.text);
                assert_eq!(composed.text, compose(tokenizer, budget, window, signals).unwrap(), "{context}");
                let cached = compose_with_ids_from(tokenizer, &join, &titles, budget, window, signals).unwrap();
                assert_eq!(cached, composed, "{context}: with the titles' cached tokens");
                assert_eq!(
                    join.tokenized(&composed.ids).ids,
                    encoder.tokenize(&composed.text).unwrap().ids,
                    "{context}"
                );
                match &composed.query_ids {
                    Some(ids) => assert_eq!(join.tokenized(ids).ids, encoder.tokenize(query).unwrap().ids, "{context}"),
                    None => assert_eq!(query_tokens, 0, "{context}: the query's ids are kept"),
                }
            }
        }
    }
}
