//! How texts become lexical terms, for the index and for scoring alike:
//!
//! - lower-cased words of letters and digits (`SimpleTokenizer`'s words);
//! - words joined by `/`, `-` or `.` with no space (`1/2`, `30-in`, `2.5`,
//!   `usb-c`, `sku-1042-b`) are kept whole *and* as their parts, so a query
//!   for `30-in` matches the size exactly and `30 in` still matches;
//! - apostrophes inside a word are dropped (`men's` → `mens`);
//! - Chinese, Japanese and Korean script, written without spaces, becomes
//!   overlapping character bigrams (`保温杯` → `保温`, `温杯`), as Lucene's
//!   CJK analyzer does: no dictionary to ship, and a two-character query
//!   word matches wherever it appears;
//! - terms longer than [`MAX_TERM_CHARS`] (hashes, base64) are left out.

/// Terms longer than this many characters are not indexed.
pub(crate) const MAX_TERM_CHARS: usize = 40;

/// The terms of `text`, in order (repeats kept: they are term frequencies).
pub(crate) fn terms(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut compound = Compound::default();
    let mut cjk = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if is_cjk(c) {
            compound.finish(&mut out);
            cjk.push(c);
            continue;
        }
        push_bigrams(&cjk, &mut out);
        cjk.clear();
        if c.is_alphanumeric() {
            compound.push_char(c);
        } else if matches!(c, '\'' | '’') && compound.in_word() {
            // Dropped inside a word: "men's" is one term.
        } else if matches!(c, '/' | '-' | '.')
            && compound.in_word()
            && chars.peek().is_some_and(|n| n.is_alphanumeric() && !is_cjk(*n))
        {
            compound.join(c);
        } else {
            compound.finish(&mut out);
        }
    }
    compound.finish(&mut out);
    push_bigrams(&cjk, &mut out);
    out
}

/// Scripts written without spaces between words.
fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF      // Hiragana, Katakana
        | 0x3400..=0x4DBF    // CJK Extension A
        | 0x4E00..=0x9FFF    // CJK Unified Ideographs
        | 0xAC00..=0xD7AF    // Hangul syllables
        | 0xF900..=0xFAFF    // CJK Compatibility Ideographs
        | 0x20000..=0x2FFFF) // CJK Extensions B and later
}

/// A run of CJK characters as bigrams; one character alone is its own term.
fn push_bigrams(run: &str, out: &mut Vec<String>) {
    let chars: Vec<char> = run.chars().collect();
    match chars.len() {
        0 => {}
        1 => out.push(chars[0].to_string()),
        _ => out.extend(chars.windows(2).map(|pair| pair.iter().collect::<String>())),
    }
}

/// Words joined by connectors, being read.
#[derive(Default)]
struct Compound {
    whole: String,
    parts: Vec<String>,
    word: String,
}

impl Compound {
    fn in_word(&self) -> bool {
        !self.word.is_empty()
    }

    fn push_char(&mut self, c: char) {
        for lower in c.to_lowercase() {
            self.word.push(lower);
            self.whole.push(lower);
        }
    }

    fn join(&mut self, connector: char) {
        self.parts.push(std::mem::take(&mut self.word));
        self.whole.push(connector);
    }

    fn finish(&mut self, out: &mut Vec<String>) {
        if !self.word.is_empty() {
            self.parts.push(std::mem::take(&mut self.word));
        }
        let whole = std::mem::take(&mut self.whole);
        let parts = std::mem::take(&mut self.parts);
        let keep = |t: &String| !t.is_empty() && t.chars().count() <= MAX_TERM_CHARS;
        if parts.len() > 1 && keep(&whole) {
            out.push(whole);
        }
        out.extend(parts.into_iter().filter(keep));
    }
}

#[cfg(test)]
mod tests {
    use super::terms;

    #[test]
    fn words_are_lower_cased_and_split_on_spaces_and_punctuation() {
        assert_eq!(terms("Red LEATHER handbag, (small)!"), ["red", "leather", "handbag", "small"]);
        assert_eq!(terms("Men's Café"), ["mens", "café"]);
        assert!(terms("  ,;  ").is_empty());
    }

    #[test]
    fn sizes_units_and_model_numbers_survive_whole_and_in_parts() {
        assert_eq!(terms("1/2 inch"), ["1/2", "1", "2", "inch"]);
        assert_eq!(terms("30-in TV"), ["30-in", "30", "in", "tv"]);
        assert_eq!(terms("20v drill 2.5ah"), ["20v", "drill", "2.5ah", "2", "5ah"]);
        assert_eq!(terms("SKU-1042-B."), ["sku-1042-b", "sku", "1042", "b"]);
        // A connector with a space after it is punctuation.
        assert_eq!(terms("end. next - item"), ["end", "next", "item"]);
    }

    #[test]
    fn cjk_text_becomes_bigrams_beside_latin_words() {
        assert_eq!(terms("不锈钢保温杯"), ["不锈", "锈钢", "钢保", "保温", "温杯"]);
        assert_eq!(terms("杯 500ml保温"), ["杯", "500ml", "保温"]);
        assert_eq!(terms("ソニー"), ["ソニ", "ニー"]);
    }

    #[test]
    fn overlong_terms_are_left_out() {
        let long = "x".repeat(41);
        assert_eq!(terms(&format!("a {long} b")), ["a", "b"]);
    }
}
