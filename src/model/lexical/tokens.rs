//! How texts become lexical terms, for the index and for scoring alike:
//!
//! - lower-cased words of letters and digits (`SimpleTokenizer`'s words);
//! - words joined by `/`, `-` or `.` with no space (`1/2`, `usb-c`, `2.5`,
//!   `sku-1042-b`) are kept whole *and* as their parts, so a query for
//!   `usb-c` matches it exactly and `usb c` still matches;
//! - apostrophes inside a word are dropped (`men's` → `mens`);
//! - **plurals**: a document holds an English plural and its stem (`jars`,
//!   `jar`), a query the stem alone ([`plural_stem`], [`query_words`]);
//! - **measures**: a number with a unit, however it is written (`16GB`,
//!   `16 GB`, `16-gig`; `32"`, `32 in.`, `32-inch`, `32 inches`), also
//!   gives one term in a canonical spelling (`16gb`, `32in`; see
//!   [`unit`]), so each spelling of a query matches each spelling of a
//!   title. A number written against its unit is not split (`24v` would
//!   match every `20 v` item through `v`). Shops and shoppers write sizes every way: in a
//!   public set of graded product searches, the titles say `2TB` and `2 TB`,
//!   `14-inch`, `13 Inches`, `18 in.` and `15"`, and the queries
//!   `16 gb` and `8 ounce`. Retail search engines ship the same rules as
//!   unit synonyms;
//! - **dimensions**: a document holds `2x4` however it writes it (`2 in. x
//!   4 in.`, `8 x 10`, `8×10`, `2x4x8`), as shoppers type it (`Dimension`);
//! - Chinese, Japanese and Korean script, written without spaces, becomes
//!   overlapping character bigrams (`保温杯` → `保温`, `温杯`), as Lucene's
//!   CJK analyzer does: no dictionary to ship, and a two-character query
//!   word matches wherever it appears;
//! - terms longer than [`MAX_TERM_CHARS`] (hashes, base64) are left out.
//!
//! A change to the terms changes what a saved index holds: bump
//! `persist::FORMAT` with it, so saved indexes are built again.

/// Terms longer than this many characters are not indexed.
pub(crate) const MAX_TERM_CHARS: usize = 40;

/// The terms of `text` as a document holds them, in order (repeats kept:
/// they are term frequencies): each word as written, its plural's stem
/// beside it ([`plural_stem`]), a measure's canonical term beside its
/// number and unit.
pub(crate) fn terms(text: &str) -> Vec<String> {
    words(text).into_iter().flatten().collect()
}

/// [`terms`] by word, so that a phrase can be matched word by word: each
/// part of a joined word is a word (its stem with it; the whole joined word
/// with its first part), but a measure is one word with its canonical term
/// (`16-oz`; `16 oz`, the unit joining the number's last word), as a query
/// has it; a CJK bigram is a word of its own.
pub(crate) fn words(text: &str) -> Vec<Vec<String>> {
    let pieces = pieces(text);
    let mut out: Vec<Vec<String>> = Vec::new();
    // The number each piece ends, and the dimensions (`2x4`) it ends.
    let mut ends: Vec<Dimension> = Vec::with_capacity(pieces.len());
    for (at, piece) in pieces.iter().enumerate() {
        let word = match piece {
            Piece::Cjk(run) => {
                out.extend(bigrams(run).into_iter().map(|bigram| vec![bigram]));
                ends.push(Dimension::default());
                continue;
            }
            Piece::Word(word) => word,
        };
        let mut groups = word.groups(|part| {
            let mut group = vec![part.to_string()];
            group.extend(plural_stem(part).filter(|stem| stem.chars().count() <= MAX_TERM_CHARS));
            group
        });
        let measure = word.measure(neighbours(&pieces, at));
        match measure {
            // One word, as a query has it: the number's (the last pushed) and the unit's.
            Some(Measure::AfterNumber(_)) => {
                let mut unit = groups.concat();
                groups = vec![out.pop().unwrap_or_default()];
                groups[0].append(&mut unit);
            }
            Some(Measure::Whole(_)) if groups.len() > 1 => groups = vec![groups.concat()],
            _ => {}
        }
        let end = match measure {
            Some(Measure::AfterNumber(_)) => ends[at - 1].clone(),
            _ => Dimension::ending_at(word, at.checked_sub(2).map(|before| (&pieces[before + 1], &ends[before]))),
        };
        let extras = measure.map(Measure::into_term).into_iter().chain(end.terms.iter().cloned());
        for extra in extras {
            if !groups.iter().flatten().any(|t| *t == extra) && extra.chars().count() <= MAX_TERM_CHARS {
                if let Some(last) = groups.last_mut() {
                    last.push(extra);
                }
            }
        }
        ends.push(Dimension { terms: Vec::new(), ..end });
        out.extend(groups);
    }
    out
}

/// Most numbers in one dimension run (`2x4x8` has 3).
const MAX_DIMENSIONS: usize = 4;

/// The number a piece ends and the dimensions it ends (`2 in. x 4 in.` ends
/// `4` and `2x4`): a document holds each dimension as one term, as shoppers
/// type it (`2x4`, `5x8 rug`, `8x10 frame`), however the title spells it
/// (`2 in. x 4 in.`, `5 ft. x 8 ft.`, `8 x 10`, `8×10`).
#[derive(Debug, Clone, Default)]
struct Dimension {
    number: Option<String>,
    /// The longest chain of dimensions ending here (`2x4x8`).
    chain: Option<String>,
    /// The terms this piece adds (emptied once added).
    terms: Vec<String>,
}

impl Dimension {
    /// What `word` ends, given the piece before it and what the piece
    /// before that ended: a dimension if that is `x` after a number.
    fn ending_at(word: &Word, before: Option<(&Piece, &Dimension)>) -> Self {
        if !word.whole.starts_with(|c: char| c.is_ascii_digit()) {
            // Most words: no number, nothing to split or copy.
            return Self::default();
        }
        let parts: Vec<&str> = word.whole.split('x').collect();
        if word.whole.len() > MAX_TERM_CHARS || parts.len() > MAX_DIMENSIONS {
            // Bounded work whatever a text holds: no runs of an overlong word.
            return Self::default();
        }
        if parts.len() > 1 && parts.iter().all(|part| is_number(part)) {
            // Written whole (`2x4x8`): each shorter run of it too.
            let mut terms = Vec::new();
            for length in 2..parts.len() {
                terms.extend(parts.windows(length).map(|run| run.join("x")));
            }
            let number = parts.last().map(|n| n.to_string());
            return Self { number, chain: Some(word.whole.clone()), terms };
        }
        let Some(number) = word.number().filter(|n| n.len() <= MAX_TERM_CHARS) else { return Self::default() };
        let after_x = before.filter(|(x, _)| x.word().is_some_and(|x| x.whole == "x"));
        let Some((_, Dimension { number: Some(first), chain, .. })) = after_x else {
            return Self { number: Some(number), ..Self::default() };
        };
        let mut terms = vec![format!("{first}x{number}")];
        let chain = match chain {
            Some(chain) => {
                let longer = format!("{chain}x{number}");
                terms.push(longer.clone());
                longer
            }
            None => terms[0].clone(),
        };
        // A chain past a term's length ends (and with it the work it costs).
        let chain = (chain.len() <= MAX_TERM_CHARS && chain.split('x').count() < MAX_DIMENSIONS).then_some(chain);
        Self { number: Some(number), chain, terms }
    }
}

/// A query's term, and how many characters the shopper typed for it: the
/// typo allowance goes by what was typed (`drils` may carry one typo
/// though its stem `dril` is short).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct QueryTerm {
    pub text: String,
    pub typed_chars: usize,
}

impl QueryTerm {
    fn typed(text: String) -> Self {
        let typed_chars = text.chars().count();
        Self { text, typed_chars }
    }
}

impl From<String> for QueryTerm {
    fn from(text: String) -> Self {
        Self::typed(text)
    }
}

/// The terms of a query by word, in order, each matching every spelling a
/// document's [`terms`] hold: a plural as its stem only (`jars` → `jar`,
/// which `jar` and `jars` both hold), and a measure as its canonical term
/// only (`16 gb` → `16gb`, one word), so that a size the shopper typed
/// counts once, not once per word; so is a dimension (`8 x 10` → `8x10`,
/// the longest run of `2 x 4 x 8`). Words are cut as [`words`] cuts them.
pub(crate) fn query_words(text: &str) -> Vec<Vec<QueryTerm>> {
    let pieces = pieces(text);
    let mut out: Vec<Vec<QueryTerm>> = Vec::new();
    // Per piece: where its words begin in `out` (a unit's: its number's),
    // what it ends (see `Dimension`), and whether it was folded into a
    // dimension.
    let mut starts: Vec<usize> = Vec::with_capacity(pieces.len());
    let mut ends: Vec<Dimension> = Vec::with_capacity(pieces.len());
    let mut folded: Vec<bool> = Vec::with_capacity(pieces.len());
    for (at, piece) in pieces.iter().enumerate() {
        let start = out.len();
        let word = match piece {
            Piece::Cjk(run) => {
                out.extend(bigrams(run).into_iter().map(|bigram| vec![QueryTerm::typed(bigram)]));
                starts.push(start);
                ends.push(Dimension::default());
                folded.push(false);
                continue;
            }
            Piece::Word(word) => word,
        };
        let measure = word.measure(neighbours(&pieces, at));
        let after_number = matches!(measure, Some(Measure::AfterNumber(_)));
        if after_number && folded[at - 1] {
            // `8 x 10 in`: the unit belongs to the dimension already searched.
            starts.push(starts[at - 1]);
            ends.push(ends[at - 1].clone());
            folded.push(true);
            continue;
        }
        let end = if after_number {
            ends[at - 1].clone()
        } else {
            Dimension::ending_at(word, at.checked_sub(2).map(|before| (&pieces[before + 1], &ends[before])))
        };
        let spaced = at >= 2 && pieces[at - 1].word().is_some_and(|x| x.whole == "x");
        if let Some(dimension) = end.chain.clone().filter(|_| spaced && !end.terms.is_empty()) {
            // `8 x 10` is searched as `8x10`, one word, as documents hold it.
            out.truncate(starts[at - 2]);
            out.push(vec![QueryTerm::typed(dimension)]);
            starts.push(starts[at - 2]);
            ends.push(Dimension { terms: Vec::new(), ..end });
            folded.push(true);
            continue;
        }
        let groups = match measure {
            Some(Measure::AfterNumber(term)) => {
                out.truncate(starts[at - 1]);
                vec![vec![QueryTerm::typed(term)]]
            }
            Some(Measure::Whole(term)) => vec![vec![QueryTerm::typed(term)]],
            None => word.groups(|part| {
                let typed_chars = part.chars().count();
                vec![QueryTerm { text: plural_stem(part).unwrap_or_else(|| part.to_string()), typed_chars }]
            }),
        };
        starts.push(if after_number { starts[at - 1] } else { start });
        ends.push(Dimension { terms: Vec::new(), ..end });
        folded.push(false);
        out.extend(groups);
    }
    out
}

/// The words before and after piece `at`, if they are words.
fn neighbours(pieces: &[Piece], at: usize) -> (Option<&Word>, Option<&Word>) {
    let previous = at.checked_sub(1).and_then(|p| pieces[p].word());
    (previous, pieces.get(at + 1).and_then(Piece::word))
}

/// The stem of an English plural, or `None` if `word` is not one (or is
/// its own stem): Harman's "S" stemmer as Lucene's
/// `EnglishMinimalStemmer` has it (`-ies` → `-y` but `-aies`, `-eies`;
/// `-es` → `-e` but `-aes`, `-ees`, `-oes`; `-s` → `-` but `-us`, `-ss`;
/// words of 4 letters or more), with `-sses`, `-xes`, `-ches` and `-shes`
/// losing their `-es` (`dresses` → `dress`, `boxes` → `box`, where Lucene
/// leaves `dresse`, `boxe`). The light stemming retail search engines
/// default to for English: it folds `jars` into `jar` without the
/// aggressive stemmer's `university` → `univers`. Only lower-case ASCII
/// words: other scripts and words with digits are left alone.
pub(crate) fn plural_stem(word: &str) -> Option<String> {
    let b = word.as_bytes();
    let n = b.len();
    if n < 4 || !b.iter().all(u8::is_ascii_lowercase) || b[n - 1] != b's' {
        return None;
    }
    if ["sses", "xes", "ches", "shes"].iter().any(|end| word.ends_with(end)) {
        return Some(word[..n - 2].to_string());
    }
    match b[n - 2] {
        b'u' | b's' => None,
        b'e' if b[n - 3] == b'i' && !matches!(b[n - 4], b'a' | b'e') => Some(format!("{}y", &word[..n - 3])),
        b'e' if matches!(b[n - 3], b'i' | b'a' | b'o' | b'e') => None,
        _ => Some(word[..n - 1].to_string()),
    }
}

/// A measure's canonical term, and what it stands for.
enum Measure {
    /// The word itself is the measure (`16gb`, `30-in`, `32"`).
    Whole(String),
    /// The word is a unit after a number (`16 gb`): the two words together.
    AfterNumber(String),
}

impl Measure {
    fn term(&self) -> &str {
        match self {
            Measure::Whole(term) | Measure::AfterNumber(term) => term,
        }
    }

    fn into_term(self) -> String {
        match self {
            Measure::Whole(term) | Measure::AfterNumber(term) => term,
        }
    }
}

/// The canonical spelling of a unit of measure, if `word` (lower-cased)
/// names one: `inches` → `in`, `gig` → `gb`, `volts` → `v`. Only units
/// that follow a number are read as such.
pub(crate) fn unit(word: &str) -> Option<&'static str> {
    Some(match word {
        "in" | "inch" | "inches" => "in",
        "ft" | "foot" | "feet" => "ft",
        "yd" | "yard" | "yards" => "yd",
        "mm" | "millimeter" | "millimeters" | "millimetre" | "millimetres" => "mm",
        "cm" | "centimeter" | "centimeters" | "centimetre" | "centimetres" => "cm",
        "m" | "meter" | "meters" | "metre" | "metres" => "m",
        "kb" | "kilobyte" | "kilobytes" => "kb",
        "mb" | "megabyte" | "megabytes" => "mb",
        "gb" | "gig" | "gigs" | "gigabyte" | "gigabytes" => "gb",
        "tb" | "terabyte" | "terabytes" => "tb",
        "oz" | "ounce" | "ounces" => "oz",
        "lb" | "lbs" | "pound" | "pounds" => "lb",
        "g" | "gram" | "grams" => "g",
        "kg" | "kgs" | "kilo" | "kilos" | "kilogram" | "kilograms" => "kg",
        "ml" | "milliliter" | "milliliters" | "millilitre" | "millilitres" => "ml",
        "l" | "liter" | "liters" | "litre" | "litres" | "ltr" => "l",
        "gal" | "gallon" | "gallons" => "gal",
        "qt" | "quart" | "quarts" => "qt",
        "pt" | "pint" | "pints" => "pt",
        "v" | "volt" | "volts" => "v",
        "w" | "watt" | "watts" => "w",
        "kw" | "kilowatt" | "kilowatts" => "kw",
        "amp" | "amps" | "ampere" | "amperes" => "a",
        "ah" => "ah",
        "mah" => "mah",
        "hz" | "hertz" => "hz",
        "khz" => "khz",
        "mhz" => "mhz",
        "ghz" => "ghz",
        "mp" | "megapixel" | "megapixels" => "mp",
        "pk" | "pack" | "packs" => "pk",
        "ct" | "count" => "ct",
        "pc" | "pcs" | "piece" | "pieces" => "pc",
        _ => return None,
    })
}

/// A number as a measure writes it: digits, maybe joined by `.`, `/` or
/// `-` (`2.5`, `1/2`, `1-1/2`), starting and ending with a digit.
fn is_number(text: &str) -> bool {
    text.starts_with(|c: char| c.is_ascii_digit())
        && text.ends_with(|c: char| c.is_ascii_digit())
        && text.chars().all(|c| c.is_ascii_digit() || matches!(c, '.' | '/' | '-'))
}

/// `text` as a number and the canonical unit written against it (`16gb`,
/// `30-in`, `2.5ah`).
fn split_measure(text: &str) -> Option<(&str, &'static str)> {
    let end = text.find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '/' | '-')))?;
    let number = text[..end].trim_end_matches(['.', '/', '-']);
    let written = text[number.len()..].trim_start_matches('-');
    (is_number(number) && !written.is_empty()).then_some(())?;
    unit(written).map(|canonical| (number, canonical))
}

/// A text cut into words (with their parts) and CJK runs, in order.
enum Piece {
    Word(Word),
    Cjk(String),
}

impl Piece {
    fn word(&self) -> Option<&Word> {
        match self {
            Piece::Word(word) => Some(word),
            Piece::Cjk(_) => None,
        }
    }
}

/// One word, or words joined by connectors (`30-in`, `sku-1042-b`).
#[derive(Default)]
struct Word {
    whole: String,
    parts: Vec<String>,
    /// Only spaces lie between the piece before and this one.
    after_space: bool,
    /// The canonical unit of an inch or foot mark written right after the
    /// word (`32"`, `6'`).
    mark: Option<&'static str>,
}

impl Word {
    /// The word's groups of terms, one per part (`group` makes it, from
    /// the part), the whole joined word first in the first; parts over
    /// [`MAX_TERM_CHARS`] are left out.
    fn groups<T: From<String>>(&self, group: impl Fn(&str) -> Vec<T>) -> Vec<Vec<T>> {
        let keep = |t: &String| !t.is_empty() && t.chars().count() <= MAX_TERM_CHARS;
        let mut groups: Vec<Vec<T>> = self.parts.iter().filter(|part| keep(part)).map(|part| group(part)).collect();
        if self.parts.len() > 1 && keep(&self.whole) {
            if let Some(first) = groups.first_mut() {
                first.insert(0, T::from(self.whole.clone()));
            }
        }
        groups
    }

    /// The number this word is or starts a measure with (`8`, `8ft`, `8"`).
    fn number(&self) -> Option<String> {
        if is_number(&self.whole) {
            return Some(self.whole.clone());
        }
        split_measure(&self.whole).map(|(number, _)| number.to_string())
    }

    /// The measure this word makes (see the module docs): a number and
    /// its unit together in their canonical spelling, when the unit is
    /// written against the number, as an inch or foot mark after it, or as
    /// this word after a number and a space (`2 in 1` is no measure).
    fn measure(&self, neighbours: (Option<&Word>, Option<&Word>)) -> Option<Measure> {
        self.any_measure(neighbours).filter(|m| m.term().chars().count() <= MAX_TERM_CHARS)
    }

    fn any_measure(&self, (previous, next): (Option<&Word>, Option<&Word>)) -> Option<Measure> {
        if let Some((number, canonical)) = split_measure(&self.whole) {
            return Some(Measure::Whole(format!("{number}{canonical}")));
        }
        if let Some(canonical) = self.mark.filter(|_| is_number(&self.whole)) {
            return Some(Measure::Whole(format!("{}{canonical}", self.whole)));
        }
        let canonical = unit(&self.whole)?;
        let number = previous.filter(|p| self.after_space && p.mark.is_none() && is_number(&p.whole))?;
        if canonical == "in" && next.is_some_and(|n| n.after_space && is_number(&n.whole)) {
            return None;
        }
        Some(Measure::AfterNumber(format!("{}{canonical}", number.whole)))
    }
}

/// Cuts `text` into words and CJK runs (see [`terms`]).
fn pieces(text: &str) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut compound = Compound::default();
    let mut cjk = String::new();
    // Whether only whitespace was read since the last piece ended.
    let mut spaces_only = true;
    // The character before this one (a word opened by a quote is quoted:
    // `"32"` is no size).
    let mut before = ' ';
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        // The multiplication sign of dimensions (`8×10`, `8 × 10`) is their
        // `x`; elsewhere (`KAWS×UNIQLO`) it parts words.
        let c = match (c, chars.peek()) {
            ('×', next) if before.is_ascii_digit() || next.is_some_and(|n| n.is_ascii_digit() || n.is_whitespace()) => {
                'x'
            }
            _ => c,
        };
        let opened_by_quote = matches!(before, '"' | '\'' | '“' | '‘');
        before = c;
        if is_cjk(c) {
            compound.finish(&mut pieces, &mut spaces_only);
            cjk.push(c);
            continue;
        }
        if !cjk.is_empty() {
            pieces.push(Piece::Cjk(std::mem::take(&mut cjk)));
            spaces_only = true;
        }
        let next_is_word = chars.peek().is_some_and(|n| n.is_alphanumeric() && !is_cjk(*n));
        if c.is_alphanumeric() {
            compound.push_char(c, spaces_only, opened_by_quote);
        } else if let Some((mark, took_next)) =
            compound.unquoted_number().then(|| mark_unit(c, chars.peek().copied())).flatten()
        {
            if took_next {
                chars.next();
            }
            // A mark opens no quote.
            before = ' ';
            compound.word.mark = Some(mark);
            compound.finish(&mut pieces, &mut spaces_only);
        } else if matches!(c, '\'' | '’') && compound.in_word() {
            // Dropped inside a word: "men's" is one term.
        } else if matches!(c, '/' | '-' | '.') && compound.in_word() && next_is_word {
            compound.join(c);
        } else {
            compound.finish(&mut pieces, &mut spaces_only);
            spaces_only &= c.is_whitespace();
        }
    }
    compound.finish(&mut pieces, &mut spaces_only);
    if !cjk.is_empty() {
        pieces.push(Piece::Cjk(cjk));
    }
    pieces
}

/// The unit an inch or foot mark stands for right after a number, and
/// whether it took the character after it too: `"`, `″`, `”` or two
/// apostrophes (`32''`) inches; `′` feet, and `'` or `’` feet unless a
/// letter goes on after it (`90's`; `5'10"` is 5 feet and 10 inches).
fn mark_unit(c: char, next: Option<char>) -> Option<(&'static str, bool)> {
    let apostrophe = |c: char| matches!(c, '\'' | '’');
    match c {
        '"' | '″' | '”' => Some(("in", false)),
        '′' => Some(("ft", false)),
        c if apostrophe(c) && next.is_some_and(apostrophe) => Some(("in", true)),
        c if apostrophe(c) && !next.is_some_and(char::is_alphabetic) => Some(("ft", false)),
        _ => None,
    }
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
fn bigrams(run: &str) -> Vec<String> {
    let chars: Vec<char> = run.chars().collect();
    match chars.len() {
        0 => Vec::new(),
        1 => vec![chars[0].to_string()],
        _ => chars.windows(2).map(|pair| pair.iter().collect()).collect(),
    }
}

/// A word being read, maybe of parts joined by connectors.
#[derive(Default)]
struct Compound {
    word: Word,
    /// Opened right after a quote.
    quoted: bool,
    /// The part being read.
    part: String,
}

impl Compound {
    fn in_word(&self) -> bool {
        !self.part.is_empty()
    }

    /// A number is being read, not opened by a quote: a mark after it is a unit.
    fn unquoted_number(&self) -> bool {
        self.in_word() && !self.quoted && is_number(&self.word.whole)
    }

    fn push_char(&mut self, c: char, after_space: bool, quoted: bool) {
        if self.word.whole.is_empty() {
            self.word.after_space = after_space;
            self.quoted = quoted;
        }
        for lower in c.to_lowercase() {
            self.part.push(lower);
            self.word.whole.push(lower);
        }
    }

    fn join(&mut self, connector: char) {
        self.word.parts.push(std::mem::take(&mut self.part));
        self.word.whole.push(connector);
    }

    /// Ends the word, if one is being read, as the next piece.
    fn finish(&mut self, pieces: &mut Vec<Piece>, spaces_only: &mut bool) {
        if !self.part.is_empty() {
            self.word.parts.push(std::mem::take(&mut self.part));
        }
        let word = std::mem::take(&mut self.word);
        if !word.whole.is_empty() {
            pieces.push(Piece::Word(word));
            *spaces_only = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{plural_stem, query_words, terms, QueryTerm};

    #[test]
    fn words_are_lower_cased_and_split_on_spaces_and_punctuation() {
        assert_eq!(terms("Red LEATHER handbag, (small)!"), ["red", "leather", "handbag", "small"]);
        assert_eq!(terms("Men's Café"), ["mens", "men", "café"]);
        assert!(terms("  ,;  ").is_empty());
    }

    #[test]
    fn sizes_units_and_model_numbers_survive_whole_and_in_parts() {
        assert_eq!(terms("1/2 inch"), ["1/2", "1", "2", "inch", "1/2in"]);
        assert_eq!(terms("30-in TV"), ["30-in", "30", "in", "30in", "tv"]);
        assert_eq!(terms("20v drill 2.5ah"), ["20v", "drill", "2.5ah", "2", "5ah"]);
        assert_eq!(terms("SKU-1042-B."), ["sku-1042-b", "sku", "1042", "b"]);
        // A connector with a space after it is punctuation.
        assert_eq!(terms("end. next - item"), ["end", "next", "item"]);
    }

    /// The terms every spelling of a measure shares.
    fn shared(spellings: &[&str]) -> Vec<String> {
        let mut common = terms(spellings[0]);
        for spelling in &spellings[1..] {
            let these = terms(spelling);
            common.retain(|t| these.contains(t));
        }
        common.sort();
        common.dedup();
        common
    }

    #[test]
    fn every_spelling_of_a_measure_shares_its_canonical_term() {
        assert_eq!(shared(&["16GB", "16 GB", "16 gb", "16-GB"]), ["16gb"]);
        assert!(shared(&["16-gig", "16 gigabytes", "16GB"]).contains(&"16gb".to_string()));
        for inches in ["32\" TV", "32″ TV", "32 in. TV", "32-inch TV", "32 Inches TV", "32in tv"] {
            assert!(terms(inches).contains(&"32in".to_string()), "{inches}: {:?}", terms(inches));
        }
        assert!(terms("10' cord").contains(&"10ft".to_string()));
        assert_eq!(terms("55'' tv"), ["55", "55in", "tv"]);
        assert_eq!(terms("5'10\" shelf"), ["5", "5ft", "10", "10in", "shelf"]);
        assert!(terms("20-Volt drill").contains(&"20v".to_string()));
        assert!(terms("8 ounce jars").contains(&"8oz".to_string()));
        assert!(terms("2.5 lbs").contains(&"2.5lb".to_string()));
        assert!(terms("(12-Pack)").contains(&"12pk".to_string()));
        // Spelt canonically already: no repeat.
        assert_eq!(terms("2TB drive"), ["2tb", "drive"]);
        assert_eq!(terms("16-gig"), ["16-gig", "16", "gig", "16gb"]);
    }

    #[test]
    fn documents_hold_dimensions_as_shoppers_type_them() {
        let holds = |text: &str, dimension: &str| terms(text).contains(&dimension.to_string());
        assert!(holds("5 ft. x 8 ft. Area Rug", "5x8"));
        assert!(holds("8 x 10 frame", "8x10") && holds("8×10 frame", "8x10") && holds("8-in x 10-in", "8x10"));
        for dimension in ["2x4", "4x8", "2x4x8"] {
            assert!(holds("2 in. x 4 in. x 8 ft. Lumber", dimension), "{dimension}");
            assert!(holds("2x4x8 stud", dimension), "{dimension}");
        }
        assert_eq!(terms("2 x batteries"), ["2", "x", "batteries", "battery"]);
        assert_eq!(terms("NIKE×SACAI"), ["nike", "sacai"]);
        assert!(holds("8 × 10 frame", "8x10"));
        // Overlong runs cost no more than a word: no runs, no growing chain.
        let long = vec!["1"; 5_000].join("x");
        assert_eq!(terms(&long), Vec::<String>::new());
        let spaced = vec!["1"; 5_000].join(" x ");
        assert!(terms(&spaced).iter().all(|t| t.len() <= 7), "at most 1x1x1x1");
        let texts: Vec<Vec<String>> =
            query_words("5x8 rug").into_iter().map(|word| word.into_iter().map(|t| t.text).collect()).collect();
        assert_eq!(texts, [["5x8"], ["rug"]]);
        let query = |text: &str| -> Vec<Vec<String>> {
            query_words(text).into_iter().map(|word| word.into_iter().map(|t| t.text).collect()).collect()
        };
        assert_eq!(query("8 x 10 frames"), [["8x10"], ["frame"]]);
        assert_eq!(query("5 ft x 8 ft rug"), [["5x8"], ["rug"]]);
        assert_eq!(query("2 x 4 x 8 stud"), [["2x4x8"], ["stud"]]);
        assert_eq!(query("8 x 10 in"), [["8x10"]]);
        assert_eq!(query("pack 2 x batteries"), [["pack"], ["2"], ["x"], ["battery"]]);
    }

    #[test]
    fn words_that_only_look_like_measures_stay_words() {
        // "in" between numbers, a unit after punctuation, a quoted number,
        // a decade, a unit no number precedes.
        assert_eq!(terms("2 in 1 charger"), ["2", "in", "1", "charger"]);
        assert_eq!(terms("size 2, in stock"), ["size", "2", "in", "stock"]);
        assert_eq!(terms("model \"32\" black"), ["model", "32", "black"]);
        assert_eq!(terms("'32' black"), ["32", "black"]);
        assert_eq!(terms("90's hits"), ["90s", "hits", "hit"]);
        assert_eq!(terms("gb ram"), ["gb", "ram"]);
        assert_eq!(terms("x2 3in1 ps4"), ["x2", "3in1", "ps4"]);
    }

    #[test]
    fn plurals_fold_to_their_stems_and_other_words_stay() {
        let stem = |word: &str| plural_stem(word);
        for (plural, singular) in [
            ("jars", "jar"),
            ("batteries", "battery"),
            ("boxes", "box"),
            ("dresses", "dress"),
            ("watches", "watch"),
            ("brushes", "brush"),
            ("cases", "case"),
            ("keys", "key"),
        ] {
            assert_eq!(stem(plural).as_deref(), Some(singular), "{plural}");
        }
        for word in ["shoes", "glass", "bus", "plus", "jar", "20s", "café", "Jars"] {
            assert_eq!(stem(word), None, "{word}");
        }
    }

    #[test]
    fn documents_hold_each_word_and_its_stem_queries_the_stem_alone() {
        assert_eq!(terms("Mason Jars"), ["mason", "jars", "jar"]);
        let typed = |text: &str, typed_chars| QueryTerm { text: text.to_string(), typed_chars };
        assert_eq!(query_words("mason jars"), [vec![typed("mason", 5)], vec![typed("jar", 4)]]);
        // A misspelt plural keeps the typos its typed length allows.
        assert_eq!(query_words("drils"), [vec![typed("dril", 5)]]);
    }

    #[test]
    fn a_query_counts_a_measure_once_as_one_word() {
        let texts = |text: &str| -> Vec<Vec<String>> {
            query_words(text).into_iter().map(|word| word.into_iter().map(|t| t.text).collect()).collect()
        };
        assert_eq!(texts("16 gb memory card"), [["16gb"], ["memory"], ["card"]]);
        assert_eq!(texts("1/2 inch pipe"), [["1/2in"], ["pipe"]]);
        assert_eq!(texts("32\" tv"), [["32in"], ["tv"]]);
        assert_eq!(texts("20-volt drill"), [["20v"], ["drill"]]);
        assert_eq!(texts("2 in 1 cable"), [["2"], ["in"], ["1"], ["cable"]]);
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
