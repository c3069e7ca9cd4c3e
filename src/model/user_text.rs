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
//!
//! Each part is tokenized once, to cut it. A request keeps those ids
//! ([`compose_with_ids`]): joined with the separators' ids they are the
//! user text's own (see [`IdJoin`]), so the text is not tokenized again.

use std::sync::Arc;

use tokenizers::{ModelWrapper, NormalizerWrapper, PreTokenizerWrapper, Tokenizer, TruncationDirection};

use crate::config::UserTextBudget;
use crate::model::encoder::{cut_to_window, EncoderError, TokenizedText};

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
    /// without a query, or when the query budget or the window leaves it
    /// no token.
    pub query_ids: Option<Vec<u32>>,
}

/// Builds the user text. `max_seq_len` counts the two special tokens.
pub fn compose(
    tokenizer: &Tokenizer,
    budget: UserTextBudget,
    max_seq_len: usize,
    signals: UserSignals<'_>,
) -> Result<String, EncoderError> {
    Ok(compose_parts(tokenizer, None, &Tokenize, budget, max_seq_len, signals)?.text)
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
    compose_parts(tokenizer, Some(join), &Tokenize, budget, max_seq_len, signals)
}

/// As [`compose_with_ids`], with the history titles' tokens from `titles`
/// (the server keeps those of recent titles: they repeat across users).
pub fn compose_with_ids_from(
    tokenizer: &Tokenizer,
    join: &IdJoin,
    titles: &dyn TitleTokens,
    budget: UserTextBudget,
    max_seq_len: usize,
    signals: UserSignals<'_>,
) -> Result<Composed, EncoderError> {
    compose_parts(tokenizer, Some(join), titles, budget, max_seq_len, signals)
}

/// A part's tokens, as cutting it to a budget needs them.
#[derive(Debug, Clone, PartialEq)]
pub struct PartTokens {
    /// Within the tokenizer's window.
    ids: Vec<u32>,
    /// Each token's span of the part, in bytes.
    offsets: Vec<(usize, usize)>,
    /// Whether the window cut the part short.
    overflowed: bool,
}

impl PartTokens {
    /// Tokenizes `text` (no special tokens), cut first to what the
    /// tokenizer's window can use (`encoder::cut_to_window`).
    pub fn of(tokenizer: &Tokenizer, text: &str) -> Result<Self, EncoderError> {
        let window = tokenizer.get_truncation().map_or(usize::MAX, |t| t.max_length);
        let (text, cut) = cut_to_window(text, window);
        let encoding = tokenizer.encode(text, false).map_err(EncoderError::Tokenize)?;
        Ok(Self {
            ids: encoding.get_ids().to_vec(),
            offsets: encoding.get_offsets().to_vec(),
            overflowed: cut || !encoding.get_overflowing().is_empty(),
        })
    }

    /// Memory held, for a cache's bound.
    pub fn bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.ids.len() * std::mem::size_of::<u32>()
            + self.offsets.len() * std::mem::size_of::<(usize, usize)>()
    }
}

/// Where composing gets a history title's tokens.
pub trait TitleTokens {
    /// The tokens of `title` (trimmed), as [`PartTokens::of`] makes them.
    fn title_tokens(&self, tokenizer: &Tokenizer, title: &str) -> Result<Arc<PartTokens>, EncoderError>;
}

/// The tokenizer itself, every time.
struct Tokenize;

impl TitleTokens for Tokenize {
    fn title_tokens(&self, tokenizer: &Tokenizer, title: &str) -> Result<Arc<PartTokens>, EncoderError> {
        PartTokens::of(tokenizer, title).map(Arc::new)
    }
}

/// All of the above: the ids only with `join`.
fn compose_parts(
    tokenizer: &Tokenizer,
    join: Option<&IdJoin>,
    titles: &dyn TitleTokens,
    budget: UserTextBudget,
    max_seq_len: usize,
    signals: UserSignals<'_>,
) -> Result<Composed, EncoderError> {
    let mut left = max_seq_len.saturating_sub(2);
    let mut parts: Vec<String> = Vec::new();
    let mut ids: Vec<u32> = Vec::new();
    let mut query_ids = None;
    // Appends a part's ids, after the separator's if the text has a part
    // before it: decided as the text is (a part can have no tokens at all,
    // say a lone control character, and still be followed by a separator).
    let append = |ids: &mut Vec<u32>, after_another: bool, separator: fn(&IdJoin) -> u32, part: &[u32]| {
        if let Some(join) = join {
            if after_another {
                ids.push(separator(join));
            }
            ids.extend_from_slice(part);
        }
    };
    for (text, cap, is_query) in
        [(signals.query, budget.query_tokens, true), (signals.profile, budget.profile_tokens, false)]
    {
        let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) else { continue };
        if cap.min(left) == 0 {
            continue;
        }
        let tokens = PartTokens::of(tokenizer, text)?;
        let cut = cut_to_tokens(&tokens, text, cap.min(left));
        if is_query && join.is_some() {
            query_ids = Some(tokens.ids.clone());
        }
        if !cut.text.is_empty() {
            left = left.saturating_sub(cut.kept + 1); // +1 for the "." joining parts
            append(&mut ids, !parts.is_empty(), |join| join.period, &tokens.ids[..cut.kept]);
            parts.push(cut.text.to_string());
        }
    }
    let mut history = String::new();
    let mut history_ids = Vec::new();
    for title in signals.history.iter().map(|t| t.trim()).filter(|t| !t.is_empty()) {
        if left == 0 {
            break;
        }
        let tokens = titles.title_tokens(tokenizer, title)?;
        let cut = cut_to_tokens(&tokens, title, left);
        if cut.text.is_empty() {
            break;
        }
        append(&mut history_ids, !history.is_empty(), |join| join.comma, &tokens.ids[..cut.kept]);
        if !history.is_empty() {
            history.push_str(", ");
        }
        history.push_str(cut.text);
        left = left.saturating_sub(cut.kept + 1); // +1 for the ","
    }
    if !history.is_empty() {
        append(&mut ids, !parts.is_empty(), |join| join.period, &history_ids);
        parts.push(history);
    }
    Ok(Composed { text: parts.join(". "), ids, query_ids })
}

/// A part cut to its budget.
struct Cut<'t> {
    /// The longest prefix of the part within the budget, cut at a token boundary.
    text: &'t str,
    /// How many tokens it has: the first `kept` of the part's.
    kept: usize,
}

/// `text` (whose tokens are `tokens`) cut to at most `max_tokens` tokens at
/// a token boundary (see [`Cut`]).
fn cut_to_tokens<'t>(tokens: &PartTokens, text: &'t str, max_tokens: usize) -> Cut<'t> {
    if max_tokens == 0 {
        return Cut { text: "", kept: 0 };
    }
    let offsets = &tokens.offsets;
    // The tokenizer itself truncates at the window, so `offsets` may already
    // be shorter than the text: cutting at its last offset is still right.
    if offsets.len() <= max_tokens && !tokens.overflowed {
        return Cut { text, kept: offsets.len() };
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
        return Cut { text: "", kept: 0 };
    }
    let end = offsets[kept - 1].1;
    Cut { text: text[..end].trim_end(), kept }
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
        // BERT's own, and the lower-casing `encoder.lowercase` puts before it.
        fn per_character(normalizer: &NormalizerWrapper) -> bool {
            match normalizer {
                NormalizerWrapper::BertNormalizer(_) | NormalizerWrapper::Lowercase(_) => true,
                NormalizerWrapper::Sequence(steps) => steps.as_ref().iter().all(per_character),
                _ => false,
            }
        }
        let bert_words = matches!(tokenizer.get_pre_tokenizer(), Some(PreTokenizerWrapper::BertPreTokenizer(_)));
        let word_piece = matches!(tokenizer.get_model(), ModelWrapper::WordPiece(_));
        let normalizer = tokenizer.get_normalizer().is_none_or(per_character);
        // `tokenized` cuts at the window's end, as this truncation does.
        let truncation = tokenizer
            .get_truncation()
            .is_some_and(|t| t.max_length == max_seq_len && t.direction == TruncationDirection::Right && t.stride == 0);
        if !(bert_words && word_piece && normalizer && truncation) || max_seq_len < 2 {
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

    /// A small BERT tokenizer: BERT's normaliser and pre-tokenizer,
    /// WordPiece over a few words and pieces, `[CLS] … [SEP]`.
    fn bert_tokenizer(window: usize) -> Tokenizer {
        use tokenizers::models::wordpiece::WordPiece;
        use tokenizers::normalizers::bert::BertNormalizer;
        use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
        use tokenizers::processors::template::TemplateProcessing;
        let words = ["[UNK]", "[CLS]", "[SEP]", ".", ",", "red", "mug", "tea", "play", "##ing", "##s", "cup"];
        // A vocabulary file (one token per line, ids in order): WordPiece's
        // in-memory vocabulary type is its hasher crate's map.
        let path = std::env::temp_dir().join(format!("shoprank-wordpiece-{}.txt", std::process::id()));
        std::fs::write(&path, words.join("\n")).unwrap();
        let model = WordPiece::from_file(&path.display().to_string()).unk_token("[UNK]".into()).build().unwrap();
        std::fs::remove_file(&path).unwrap();
        let mut tokenizer = Tokenizer::new(model);
        tokenizer.with_normalizer(Some(BertNormalizer::default())).unwrap();
        tokenizer.with_pre_tokenizer(Some(BertPreTokenizer));
        let template = TemplateProcessing::builder()
            .try_single("[CLS] $A [SEP]")
            .unwrap()
            .special_tokens(vec![("[CLS]", 1), ("[SEP]", 2)])
            .build()
            .unwrap();
        tokenizer.with_post_processor(Some(template));
        let truncation = tokenizers::TruncationParams { max_length: window, ..Default::default() };
        tokenizer.with_truncation(Some(truncation)).unwrap();
        tokenizer
    }

    #[test]
    fn joined_ids_are_the_texts_own_even_around_parts_without_tokens() {
        let window = 12;
        let tokenizer = bert_tokenizer(window);
        let join = IdJoin::new(&tokenizer, window).expect("a BERT tokenizer joins");
        let own = |text: &str| tokenizer.encode(text, true).unwrap().get_ids().to_vec();
        let cases: [(&str, &str, &[&str]); 4] = [
            ("red mugs", "tea", &["PLAYING cup", "mug"]),
            // Zero-width and control characters: no token, but a separator after them.
            ("\u{200b}", "tea", &["\u{7f}", "\u{feff}", "mug"]),
            ("red", "\u{7f}", &["\u{feff}"]),
            // Cut inside a word, after "play": the prefix of its pieces.
            ("playing playing playing", "", &["cups cups cups cups"]),
        ];
        for (query, profile, history) in cases {
            let signals = UserSignals { query: Some(query), profile: Some(profile), history };
            let composed = compose_with_ids(&tokenizer, &join, BUDGET, window, signals).unwrap();
            assert_eq!(join.tokenized(&composed.ids).ids, own(&composed.text), "{:?}", composed.text);
            assert_eq!(join.tokenized(composed.query_ids.as_deref().unwrap()).ids, own(query), "{query:?}");
            assert_eq!(composed.text, compose(&tokenizer, BUDGET, window, signals).unwrap());
        }
        // A tokenizer of another make, or one that truncates elsewhere, is not joined.
        assert!(IdJoin::new(&word_tokenizer(), window).is_none());
        assert!(IdJoin::new(&tokenizer, window + 1).is_none());
    }

    #[test]
    fn empty_fields_are_skipped() {
        let text =
            compose(&word_tokenizer(), BUDGET, 64, UserSignals { query: Some("  "), profile: None, history: &["MUG"] })
                .unwrap();
        assert_eq!(text, "MUG");
    }
}
