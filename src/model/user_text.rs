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

use tokenizers::{ModelWrapper, NormalizerWrapper, PreTokenizerWrapper, Tokenizer};

use crate::config::UserTextBudget;
use crate::model::encoder::{EncoderError, TokenizedText};

/// The user signals of a request, borrowed.
#[derive(Debug, Clone, Copy, Default)]
pub struct UserSignals<'a> {
    pub query: Option<&'a str>,
    pub profile: Option<&'a str>,
    /// Product titles, most recent first.
    pub history: &'a [&'a str],
}

/// A user text with the token ids its parts were cut by.
#[derive(Debug, Clone, PartialEq)]
pub struct Composed {
    pub text: String,
    /// The text's ids without the special tokens: the parts' ids joined by
    /// the separators' (see [`IdJoin`]).
    pub ids: Vec<u32>,
    /// The whole (uncut) query's ids, without the special tokens; `None`
    /// without a query, or with a query budget of 0.
    pub query_ids: Option<Vec<u32>>,
}

/// Builds the user text. `max_seq_len` counts the two special tokens.
pub fn compose(
    tokenizer: &Tokenizer,
    budget: UserTextBudget,
    max_seq_len: usize,
    signals: UserSignals<'_>,
) -> Result<String, EncoderError> {
    Ok(compose_parts(tokenizer, None, budget, max_seq_len, signals)?.text)
}

/// As [`compose`], keeping the ids: each part is tokenized once, to cut
/// it to its budget, and those ids make the text's (see [`IdJoin`]), so a
/// request does not tokenize its user text and query a second time.
pub fn compose_with_ids(
    tokenizer: &Tokenizer,
    join: &IdJoin,
    budget: UserTextBudget,
    max_seq_len: usize,
    signals: UserSignals<'_>,
) -> Result<Composed, EncoderError> {
    compose_parts(tokenizer, Some(join), budget, max_seq_len, signals)
}

/// Both of the above: the ids only with `join`.
fn compose_parts(
    tokenizer: &Tokenizer,
    join: Option<&IdJoin>,
    budget: UserTextBudget,
    max_seq_len: usize,
    signals: UserSignals<'_>,
) -> Result<Composed, EncoderError> {
    let mut left = max_seq_len.saturating_sub(2);
    let mut parts: Vec<String> = Vec::new();
    let mut ids: Vec<u32> = Vec::new();
    let mut query_ids = None;
    // Appends a part's ids after the separator's (if any came before).
    let append = |ids: &mut Vec<u32>, separator: fn(&IdJoin) -> u32, part: &[u32]| {
        if let Some(join) = join {
            if !ids.is_empty() {
                ids.push(separator(join));
            }
            ids.extend_from_slice(part);
        }
    };
    for (text, cap, is_query) in
        [(signals.query, budget.query_tokens, true), (signals.profile, budget.profile_tokens, false)]
    {
        let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) else { continue };
        let cut = cut_to_tokens(tokenizer, text, cap.min(left))?;
        if is_query && join.is_some() && cap.min(left) > 0 {
            query_ids = Some(cut.all_ids.clone());
        }
        if !cut.text.is_empty() {
            left = left.saturating_sub(cut.kept + 1); // +1 for the "." joining parts
            parts.push(cut.text.to_string());
            append(&mut ids, |join| join.period, &cut.all_ids[..cut.kept]);
        }
    }
    let mut history = String::new();
    let mut history_ids = Vec::new();
    for title in signals.history.iter().map(|t| t.trim()).filter(|t| !t.is_empty()) {
        if left == 0 {
            break;
        }
        let cut = cut_to_tokens(tokenizer, title, left)?;
        if cut.text.is_empty() {
            break;
        }
        if !history.is_empty() {
            history.push_str(", ");
        }
        history.push_str(cut.text);
        append(&mut history_ids, |join| join.comma, &cut.all_ids[..cut.kept]);
        left = left.saturating_sub(cut.kept + 1); // +1 for the ","
    }
    if !history.is_empty() {
        parts.push(history);
        append(&mut ids, |join| join.period, &history_ids);
    }
    Ok(Composed { text: parts.join(". "), ids, query_ids })
}

/// A part cut to its budget.
struct Cut<'t> {
    /// The longest prefix of the part within the budget, cut at a token boundary.
    text: &'t str,
    /// How many tokens it has: `all_ids[..kept]`.
    kept: usize,
    /// The whole part's ids (within the tokenizer's window).
    all_ids: Vec<u32>,
}

/// The longest prefix of `text` that is at most `max_tokens` tokens, cut at
/// a token boundary, and its token count.
fn cut_to_tokens<'t>(tokenizer: &Tokenizer, text: &'t str, max_tokens: usize) -> Result<Cut<'t>, EncoderError> {
    if max_tokens == 0 {
        return Ok(Cut { text: "", kept: 0, all_ids: Vec::new() });
    }
    let encoding = tokenizer.encode(text, false).map_err(EncoderError::Tokenize)?;
    let offsets = encoding.get_offsets();
    let all_ids = encoding.get_ids().to_vec();
    // The tokenizer itself truncates at the window, so `offsets` may already
    // be shorter than the text: cutting at its last offset is still right.
    if offsets.len() <= max_tokens && encoding.get_overflowing().is_empty() {
        return Ok(Cut { text, kept: offsets.len(), all_ids });
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
        return Ok(Cut { text: "", kept: 0, all_ids });
    }
    let end = offsets[kept - 1].1;
    Ok(Cut { text: text[..end].trim_end(), kept, all_ids })
}

/// Turns the ids [`compose_with_ids`] keeps into what the encoder would
/// make of the text itself, for tokenizers where the two agree: BERT's.
///
/// Its pre-tokenizer splits at whitespace and makes every punctuation mark
/// a word of its own, so the joined text's words are the parts' words and
/// the separators; its normaliser works character by character; and
/// WordPiece cuts each word alone. A part cut after a token is then the
/// prefix of the part's ids: WordPiece takes the longest known prefix of a
/// word first, and within the cut word that is still the same prefix.
/// [`IdJoin::new`] checks the tokenizer is built this way, and that it adds
/// exactly `[CLS]` before and `[SEP]` after; the tests compare the two on
/// real user texts for both shipped tokenizers.
#[derive(Debug, Clone)]
pub struct IdJoin {
    /// `[CLS]` and `[SEP]`.
    first: u32,
    last: u32,
    /// The ids of the "." joining parts and the "," joining titles (the
    /// space after each is no token).
    period: u32,
    comma: u32,
    /// The window, special tokens included.
    max_seq_len: usize,
}

impl IdJoin {
    /// `None` for a tokenizer where joined ids could differ from the text's
    /// own: then the text is tokenized again.
    pub fn new(tokenizer: &Tokenizer, max_seq_len: usize) -> Option<Self> {
        fn per_character(normalizer: &NormalizerWrapper) -> bool {
            match normalizer {
                NormalizerWrapper::BertNormalizer(_)
                | NormalizerWrapper::Lowercase(_)
                | NormalizerWrapper::StripAccents(_)
                | NormalizerWrapper::NFD(_)
                | NormalizerWrapper::NFKD(_) => true,
                NormalizerWrapper::Sequence(steps) => steps.as_ref().iter().all(per_character),
                _ => false,
            }
        }
        let bert_words = matches!(tokenizer.get_pre_tokenizer(), Some(PreTokenizerWrapper::BertPreTokenizer(_)));
        let word_piece = matches!(tokenizer.get_model(), ModelWrapper::WordPiece(_));
        let normalizer = tokenizer.get_normalizer().is_none_or(per_character);
        if !(bert_words && word_piece && normalizer) || max_seq_len < 2 {
            return None;
        }
        let ids = |text: &str, specials: bool| tokenizer.encode(text, specials).ok().map(|e| e.get_ids().to_vec());
        let (Some(empty), Some(probe), Some(bare)) = (ids("", true), ids("a, b.", true), ids("a, b.", false)) else {
            return None;
        };
        let single = |text: &str| match ids(text, false).as_deref() {
            Some(&[id]) => Some(id),
            _ => None,
        };
        let (&[first, last], Some(period), Some(comma)) = (&empty[..], single("."), single(",")) else { return None };
        let join = Self { first, last, period, comma, max_seq_len };
        (join.tokenized(&bare).ids == probe).then_some(join)
    }

    /// `[CLS] ids [SEP]`, the ids cut to the window as the tokenizer does.
    pub fn tokenized(&self, ids: &[u32]) -> TokenizedText {
        let kept = &ids[..ids.len().min(self.max_seq_len - 2)];
        let mut all = Vec::with_capacity(kept.len() + 2);
        all.push(self.first);
        all.extend_from_slice(kept);
        all.push(self.last);
        TokenizedText { ids: all }
    }
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
