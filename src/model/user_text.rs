//! Turning what a storefront knows about a user into one text for the
//! encoder, within the encoder's token window.
//!
//! The parts are joined in a fixed order, each cut at a token boundary to its
//! budget:
//!
//! 1. the search **query** (at most `user_text.query_tokens` tokens),
//! 2. the free-text **profile** (at most `user_text.profile_tokens`),
//! 3. the **history** titles, most recent first, joined with `", "`, filling
//!    whatever is left of `encoder.max_seq_len` (minus `[CLS]`/`[SEP]`).
//!    Whole titles are added while they fit; the last one may be cut.
//!
//! Parts are joined with `". "`. Because the query comes first and has its
//! own budget, a long history can never crowd it out. Training builds user
//! texts from history alone with this same function, so a served request
//! carrying only history gets exactly the text the head was trained on.

use tokenizers::Tokenizer;

use crate::config::UserTextBudget;
use crate::model::encoder::EncoderError;

/// The user signals of a request, borrowed.
#[derive(Debug, Clone, Copy, Default)]
pub struct UserSignals<'a> {
    pub query: Option<&'a str>,
    pub profile: Option<&'a str>,
    /// Product titles, most recent first.
    pub history: &'a [&'a str],
}

/// Builds the user text. `max_seq_len` counts the two special tokens.
pub fn compose(
    tokenizer: &Tokenizer,
    budget: UserTextBudget,
    max_seq_len: usize,
    signals: UserSignals<'_>,
) -> Result<String, EncoderError> {
    let mut left = max_seq_len.saturating_sub(2);
    let mut parts: Vec<String> = Vec::new();
    for (text, cap) in [(signals.query, budget.query_tokens), (signals.profile, budget.profile_tokens)] {
        let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) else { continue };
        let (cut, used) = cut_to_tokens(tokenizer, text, cap.min(left))?;
        if !cut.is_empty() {
            left = left.saturating_sub(used + 1); // +1 for the "." joining parts
            parts.push(cut.to_string());
        }
    }
    let mut history = String::new();
    for title in signals.history.iter().map(|t| t.trim()).filter(|t| !t.is_empty()) {
        if left == 0 {
            break;
        }
        let (cut, used) = cut_to_tokens(tokenizer, title, left)?;
        if cut.is_empty() {
            break;
        }
        if !history.is_empty() {
            history.push_str(", ");
        }
        history.push_str(cut);
        left = left.saturating_sub(used + 1); // +1 for the ","
    }
    if !history.is_empty() {
        parts.push(history);
    }
    Ok(parts.join(". "))
}

/// The longest prefix of `text` that is at most `max_tokens` tokens, cut at
/// a token boundary, and its token count.
fn cut_to_tokens<'t>(
    tokenizer: &Tokenizer,
    text: &'t str,
    max_tokens: usize,
) -> Result<(&'t str, usize), EncoderError> {
    if max_tokens == 0 {
        return Ok(("", 0));
    }
    let encoding = tokenizer.encode(text, false).map_err(EncoderError::Tokenize)?;
    let offsets = encoding.get_offsets();
    // The tokenizer itself truncates at the window, so `offsets` may already
    // be shorter than the text: cutting at its last offset is still right.
    if offsets.len() <= max_tokens && encoding.get_overflowing().is_empty() {
        return Ok((text, offsets.len()));
    }
    // Cut after token `kept - 1`, where the next token starts no earlier
    // than it ends. Normalisation can turn one character into several
    // tokens (a Hangul syllable into its jamo, each with the syllable's
    // offsets); such a character cannot be split, so it is left out whole.
    let kept = (1..=max_tokens.min(offsets.len()))
        .rev()
        .find(|&kept| offsets.get(kept).is_none_or(|next| next.0 >= offsets[kept - 1].1))
        .unwrap_or(0);
    if kept == 0 {
        return Ok(("", 0));
    }
    let end = offsets[kept - 1].1;
    Ok((text[..end].trim_end(), kept))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenizers::models::wordlevel::WordLevel;
    use tokenizers::pre_tokenizers::whitespace::Whitespace;

    /// A whitespace tokenizer: one token per word or punctuation mark.
    fn word_tokenizer() -> Tokenizer {
        let vocab = [("[UNK]".to_string(), 0u32)].into_iter().collect();
        let model = WordLevel::builder().vocab(vocab).unk_token("[UNK]".into()).build().unwrap();
        let mut tokenizer = Tokenizer::new(model);
        tokenizer.with_pre_tokenizer(Some(Whitespace {}));
        tokenizer
    }

    const BUDGET: UserTextBudget = UserTextBudget { query_tokens: 3, profile_tokens: 2 };

    #[test]
    fn joins_parts_in_order() {
        let text = compose(
            &word_tokenizer(),
            BUDGET,
            64,
            UserSignals { query: Some("red mug"), profile: Some("tea fan"), history: &["BLUE CUP", "TEAPOT"] },
        )
        .unwrap();
        assert_eq!(text, "red mug. tea fan. BLUE CUP, TEAPOT");
    }

    #[test]
    fn a_long_history_cannot_crowd_out_the_query() {
        let history: Vec<&str> = vec!["VERY LONG TITLE OF MANY WORDS"; 50];
        let text = compose(
            &word_tokenizer(),
            BUDGET,
            16,
            UserSignals { query: Some("red mug for dad today"), profile: None, history: &history },
        )
        .unwrap();
        // Query cut to 3 tokens; 16 - 2 special - 3 - 1 = 10 tokens of history:
        // one whole 6-word title, a comma, then 3 words of the next.
        assert_eq!(text, "red mug for. VERY LONG TITLE OF MANY WORDS, VERY LONG TITLE");
    }

    #[test]
    fn empty_fields_are_skipped() {
        let text =
            compose(&word_tokenizer(), BUDGET, 64, UserSignals { query: Some("  "), profile: None, history: &["MUG"] })
                .unwrap();
        assert_eq!(text, "MUG");
    }
}
