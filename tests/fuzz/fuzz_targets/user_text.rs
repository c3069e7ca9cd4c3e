//! Arbitrary user signals (any Unicode, any lengths) through the user-text
//! composer with the real tokenizer: it never panics, never splits a
//! character, never exceeds the encoder's window, and the ids it joins
//! from the parts' are the text's own.

#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use shoprank::{compose_with_ids, IdJoin, UserSignals, UserTextBudget};
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

/// The largest window tried; the tokenizer truncates there, as the encoder's does at its own.
const WINDOW: usize = 512;

fn tokenizer() -> &'static (Tokenizer, IdJoin) {
    static TOKENIZER: OnceLock<(Tokenizer, IdJoin)> = OnceLock::new();
    TOKENIZER.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/all-MiniLM-L6-v2/tokenizer.json");
        let mut tokenizer = Tokenizer::from_file(path).expect("run scripts/fetch-model first");
        tokenizer.with_padding(None);
        let truncation = tokenizers::TruncationParams { max_length: WINDOW, ..Default::default() };
        tokenizer.with_truncation(Some(truncation)).expect("truncation");
        let join = IdJoin::new(&tokenizer, WINDOW).expect("BERT's tokenizer joins ids");
        (tokenizer, join)
    })
}

fuzz_target!(|input: Input| {
    let (tokenizer, join) = tokenizer();
    let max_seq_len = 8 + usize::from(input.max_seq_len) % (WINDOW - 7);
    let budget = UserTextBudget {
        query_tokens: usize::from(input.query_tokens),
        profile_tokens: usize::from(input.profile_tokens),
    };
    let history: Vec<&str> = input.history.iter().map(String::as_str).collect();
    let signals = UserSignals { query: input.query.as_deref(), profile: input.profile.as_deref(), history: &history };
    let composed =
        compose_with_ids(tokenizer, join, budget, max_seq_len, signals).expect("composing never fails on valid UTF-8");
    let text = composed.text;
    // Every part is cut at a token boundary within the window, with room
    // for [CLS] and [SEP].
    let encoding = tokenizer.encode(text.as_str(), true).expect("tokenize");
    assert_eq!(join.tokenized(&composed.ids).ids, encoding.get_ids(), "{text:?} from {input:?}");
    if let (Some(ids), Some(query)) = (&composed.query_ids, &input.query) {
        let alone = tokenizer.encode(query.as_str(), true).expect("tokenize");
        assert_eq!(join.tokenized(ids).ids, alone.get_ids(), "the query alone, from {input:?}");
    }
    let tokens = encoding.len();
    assert!(
        tokens <= max_seq_len,
        "{tokens} tokens for a window of {max_seq_len}: {text:?} {:?} from {input:?}",
        encoding.get_tokens()
    );
});
