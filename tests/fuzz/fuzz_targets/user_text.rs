//! Arbitrary user signals (any Unicode, any lengths) through the user-text
//! composer with the real tokenizer: it never panics, never splits a
//! character, and never exceeds the encoder's window.

#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use shoprank::config::UserTextBudget;
use shoprank::model::user_text::{compose, UserSignals};
use tokenizers::Tokenizer;

#[derive(Arbitrary, Debug)]
struct Input {
    query: Option<String>,
    profile: Option<String>,
    history: Vec<String>,
    query_tokens: u8,
    profile_tokens: u8,
    max_seq_len: u16,
}

fn tokenizer() -> &'static Tokenizer {
    static TOKENIZER: OnceLock<Tokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/all-MiniLM-L6-v2/tokenizer.json");
        let mut tokenizer = Tokenizer::from_file(path).expect("run scripts/fetch-model first");
        tokenizer.with_padding(None);
        tokenizer
    })
}

fuzz_target!(|input: Input| {
    let max_seq_len = 8 + usize::from(input.max_seq_len) % 505;
    let budget = UserTextBudget {
        query_tokens: usize::from(input.query_tokens),
        profile_tokens: usize::from(input.profile_tokens),
    };
    let history: Vec<&str> = input.history.iter().map(String::as_str).collect();
    let signals = UserSignals { query: input.query.as_deref(), profile: input.profile.as_deref(), history: &history };
    let text = compose(tokenizer(), budget, max_seq_len, signals).expect("composing never fails on valid UTF-8");
    // Every part is cut at a token boundary within the window, with room
    // for [CLS] and [SEP].
    let encoding = tokenizer().encode(text.as_str(), true).expect("tokenize");
    let tokens = encoding.len();
    assert!(
        tokens <= max_seq_len,
        "{tokens} tokens for a window of {max_seq_len}: {text:?} {:?} from {input:?}",
        encoding.get_tokens()
    );
});
