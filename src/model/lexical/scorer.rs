//! BM25 of a query against any text, given the statistics of the corpus it
//! belongs to: the catalog's (from [`super::LexicalIndex`]) for retrieved
//! items, or the request's own candidates' when a storefront sends them
//! (and the retrieved items' own when the catalog keeps no lexical index).
//! Ranking needs a lexical score for *every* candidate, including those the
//! dense retriever found and the lexical one did not; computing it here, on
//! the candidate's own terms, gives one exact score either way.
//!
//! **Typo tolerance.** A query term the corpus has never seen is most often
//! misspelt ("hnadbag", "leathr"); such a term matches a text's term within
//! Damerau–Levenshtein distance 1 (words of at least [`TYPO_MIN_CHARS`]
//! characters) or 2 (at least [`TWO_TYPOS_MIN_CHARS`]), as Meilisearch and
//! Typesense default to, at [`TYPO_WEIGHT`] of an exact match's score. Terms
//! with a digit are never corrected: `24v` is not a typo of `20v`. Terms the
//! corpus knows are matched exactly only, so a correct "shirt" does not
//! match "short".

use super::tokens;

/// BM25's term-frequency saturation (Lucene's and tantivy's default).
pub(crate) const K1: f32 = 1.2;
/// BM25's length normalisation (Lucene's and tantivy's default).
pub(crate) const B: f32 = 0.75;
/// Shortest query word corrected for one typo.
pub(crate) const TYPO_MIN_CHARS: usize = 5;
/// Shortest query word corrected for two typos.
pub(crate) const TWO_TYPOS_MIN_CHARS: usize = 9;
/// A typo match scores this share of the matched term's exact score.
pub(crate) const TYPO_WEIGHT: f32 = 0.6;
/// Most query terms an index search looks for (see
/// [`LexicalQuery::retrieval_terms`]); shoppers' queries hold fewer.
pub(crate) const MAX_RETRIEVAL_TERMS: usize = 8;

/// What BM25 needs of a corpus.
pub trait CorpusStats {
    /// Documents in the corpus.
    fn docs(&self) -> u64;
    /// Mean terms per document.
    fn mean_terms(&self) -> f32;
    /// Documents holding `term`.
    fn doc_freq(&self, term: &str) -> u64;
}

/// A query's distinct terms and how far each may be mistyped.
#[derive(Debug, Clone)]
pub struct LexicalQuery {
    terms: Vec<QueryTerm>,
    /// The terms of each word, in the order typed, repeats kept: the
    /// phrase a text may hold whole.
    phrase: Vec<Vec<String>>,
    /// The BM25 a text could reach at most: each term's idf × (k1 + 1), the
    /// limit of its score as its frequency grows.
    attainable: f32,
    /// Two words typed apart that the corpus writes as one (see
    /// [`LexicalQuery::new`]).
    joins: Vec<Join>,
}

/// Two adjacent query words the corpus holds joined (`mac book` →
/// `macbook`): a text holding the joined word matches both.
#[derive(Debug, Clone)]
struct Join {
    text: String,
    /// The two words' terms, as indexes into `LexicalQuery::terms`.
    parts: [usize; 2],
}

#[derive(Debug, Clone)]
struct QueryTerm {
    text: String,
    /// Edit distance a match may have (0: exact only).
    typos: usize,
    /// Documents of the corpus holding the term, looked up once per query.
    doc_freq: u64,
}

impl LexicalQuery {
    /// The distinct terms of `query`; a term `corpus` does not hold may be
    /// matched with typos (see the module docs).
    ///
    /// Shoppers split and join words the catalog writes the other way
    /// (`mac book` for `MacBook`, `harleydavidson`, `videogames`), as
    /// Meilisearch and Typesense handle: a word the corpus lacks that two
    /// words it holds make up is searched as those two
    /// ([`split_compounds`]), and two adjacent words whose joined form the
    /// corpus holds also match a text holding that form (a [`Join`]).
    pub fn new(query: &str, corpus: &dyn CorpusStats) -> Self {
        let words = split_compounds(tokens::query_words(query), corpus);
        let phrase: Vec<Vec<String>> = words.iter().map(|word| word.iter().map(|t| t.text.clone()).collect()).collect();
        let mut pairs: Vec<(String, String)> = phrase
            .windows(2)
            .filter_map(|pair| match pair {
                [a, b] if a.len() == 1 && b.len() == 1 && joinable(&a[0]) && joinable(&b[0]) && a[0] != b[0] => {
                    Some((a[0].clone(), b[0].clone()))
                }
                _ => None,
            })
            .collect();
        pairs.sort();
        pairs.dedup();
        let mut typed: Vec<tokens::QueryTerm> = words.into_iter().flatten().collect();
        // The same term typed twice keeps its longest spelling's allowance.
        typed.sort_by(|a, b| a.text.cmp(&b.text).then(b.typed_chars.cmp(&a.typed_chars)));
        typed.dedup_by(|later, first| later.text == first.text);
        let terms = typed
            .into_iter()
            .map(|term| {
                let doc_freq = corpus.doc_freq(&term.text);
                let typos = if doc_freq > 0 { 0 } else { allowed_typos(&term.text, term.typed_chars) };
                QueryTerm { text: term.text, typos, doc_freq }
            })
            .collect::<Vec<QueryTerm>>();
        let position = |text: &str| terms.binary_search_by(|t| t.text.as_str().cmp(text)).ok();
        let joins = pairs
            .into_iter()
            .filter_map(|(a, b)| {
                let text = format!("{a}{b}");
                let doc_freq = corpus.doc_freq(&text);
                let parts = [position(&a)?, position(&b)?];
                (doc_freq > 0 && position(&text).is_none()).then_some(Join { text, parts })
            })
            .collect();
        let docs = corpus.docs().max(1) as f32;
        let attainable = terms.iter().map(|t| idf(t.doc_freq, docs) * (K1 + 1.0)).sum();
        Self { terms, phrase, attainable, joins }
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The terms matched exactly, and those that may carry typos with how many.
    pub fn terms(&self) -> impl Iterator<Item = (&str, usize)> {
        self.terms.iter().map(|t| (t.text.as_str(), t.typos))
    }

    /// The terms an index search looks for: all of a query of at most
    /// [`MAX_RETRIEVAL_TERMS`], else that many, the rarest known terms
    /// first, then words that may carry typos; and the joined form of two
    /// of those words, where the corpus holds it (see [`LexicalQuery::new`]). A storefront may send a long
    /// text as the query; every term costs its postings (a 20-word text
    /// took 24 ms p50 at a million items), and the rare ones decide BM25's
    /// order. Scoring ([`score`]) still weighs every term.
    pub fn retrieval_terms(&self) -> Vec<(&str, usize)> {
        let mut terms: Vec<&QueryTerm> = self.terms.iter().collect();
        if terms.len() > MAX_RETRIEVAL_TERMS {
            terms.sort_by_key(|t| (t.doc_freq == 0, t.doc_freq));
            terms.truncate(MAX_RETRIEVAL_TERMS);
        }
        // A join is searched where both its words are.
        let searched = |part: usize| terms.iter().any(|t| std::ptr::eq(*t, &self.terms[part]));
        let joins = self.joins.iter().filter(|join| join.parts.iter().all(|&part| searched(part)));
        let joins: Vec<(&str, usize)> = joins.map(|join| (join.text.as_str(), 0)).collect();
        terms.into_iter().map(|t| (t.text.as_str(), t.typos)).chain(joins).collect()
    }
}

/// A word that may be joined to its neighbour: letters and digits, a letter first.
fn joinable(term: &str) -> bool {
    term.starts_with(|c: char| c.is_ascii_lowercase()) && term.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Shortest half of a word split in two ([`split_compounds`]).
const SPLIT_MIN_CHARS: usize = 3;
/// Fewest texts each half of a split word must be in: a half in one text
/// is more likely a typo's accident (`hardisk` → `har` + `disk`).
const SPLIT_MIN_DOCS: u64 = 2;

/// `words` with each word the corpus lacks (one term of lower-case letters,
/// at least twice [`SPLIT_MIN_CHARS`]) split in two where both halves are
/// in at least [`SPLIT_MIN_DOCS`] texts (the second as a plural's stem),
/// at the point whose rarer half is in the most texts: `harleydavidson` →
/// `harley`, `davidson`. A word that splits is not matched with typos.
fn split_compounds(words: Vec<Vec<tokens::QueryTerm>>, corpus: &dyn CorpusStats) -> Vec<Vec<tokens::QueryTerm>> {
    let mut out = Vec::with_capacity(words.len());
    for word in words {
        let split = match word.as_slice() {
            [term]
                if term.text.len() >= 2 * SPLIT_MIN_CHARS
                    && term.text.bytes().all(|b| b.is_ascii_lowercase())
                    && corpus.doc_freq(&term.text) == 0 =>
            {
                (SPLIT_MIN_CHARS..=term.text.len() - SPLIT_MIN_CHARS)
                    .map(|at| {
                        let (left, right) = term.text.split_at(at);
                        let right = tokens::plural_stem(right).unwrap_or_else(|| right.to_string());
                        let docs = corpus.doc_freq(left).min(corpus.doc_freq(&right));
                        (docs, left.to_string(), right)
                    })
                    .filter(|(docs, ..)| *docs >= SPLIT_MIN_DOCS)
                    .max_by_key(|(docs, ..)| *docs)
            }
            _ => None,
        };
        match split {
            Some((_, left, right)) => {
                out.push(vec![tokens::QueryTerm { typed_chars: left.len(), text: left }]);
                out.push(vec![tokens::QueryTerm { typed_chars: right.len(), text: right }]);
            }
            None => out.push(word),
        }
    }
    out
}

/// How many typos a query term may carry when the corpus does not know
/// it, by the characters typed for it (a plural's, for its stem).
pub(crate) fn allowed_typos(term: &str, typed_chars: usize) -> usize {
    let chars = typed_chars;
    if term.chars().any(|c| c.is_numeric()) || chars < TYPO_MIN_CHARS {
        0
    } else if chars < TWO_TYPOS_MIN_CHARS {
        1
    } else {
        2
    }
}

/// How well one text matches a query: the BM25 that relevance fuses, and
/// the head's lexical features (`model::features`), each in [0, 1] and on
/// the query's own scale, not relative to the best among the items scored
/// with it (the corpus statistics, and so idf and which words may carry
/// typos, are the catalog's, or a request's candidates' when it brings them).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LexicalMatch {
    /// BM25 (typo matches weighted by [`TYPO_WEIGHT`]).
    pub bm25: f32,
    /// `bm25` over the query's attainable BM25 (see [`LexicalQuery`]).
    pub bm25_share: f32,
    /// Share of the query's distinct terms the text holds exactly.
    pub exact: f32,
    /// Share of the query's distinct terms the text holds, exactly or within typos.
    pub matched: f32,
    /// 1 when the text holds the query's words in order, next to each other,
    /// each sharing a term with the query's ("lunch bag" in "jumbo lunch
    /// bag red", not in "bag for lunch"; "mason jars" in "Mason Jar").
    pub phrase: f32,
}

/// BM25's inverse document frequency (Lucene's, never negative).
fn idf(doc_freq: u64, docs: f32) -> f32 {
    // A text scored from outside the corpus may hold a term the corpus
    // lacks: count it as in one document.
    let df = (doc_freq.max(1) as f32).min(docs);
    (1.0 + (docs - df + 0.5) / (df + 0.5)).ln()
}

/// Scores `text` against `query` with `corpus`'s statistics. Each query
/// term adds the BM25 of its exact match, else [`TYPO_WEIGHT`] × that of
/// the text's closest term within its typo allowance.
pub(crate) fn score(query: &LexicalQuery, text: &str, corpus: &dyn CorpusStats) -> LexicalMatch {
    score_terms(query, &tokens::words(text), corpus)
}

/// The words of `query` weighed among `texts` alone, with their own
/// statistics: a request's own candidates, or items retrieved without a
/// lexical index. Each text is tokenised once, for the statistics and its
/// score alike.
pub(crate) fn score_among(query: &str, texts: &[&str]) -> Vec<LexicalMatch> {
    let words: Vec<Vec<Vec<String>>> = texts.iter().map(|text| tokens::words(text)).collect();
    let corpus = TextsStats::of_words(&words);
    let query = LexicalQuery::new(query, &corpus);
    words.iter().map(|in_order| score_terms(&query, in_order, &corpus)).collect()
}

/// [`score`] of a text already split into its words' terms, in order.
fn score_terms(query: &LexicalQuery, words: &[Vec<String>], corpus: &dyn CorpusStats) -> LexicalMatch {
    if query.terms.is_empty() {
        return LexicalMatch::default();
    }
    let mut terms: Vec<&str> = words.iter().flatten().map(String::as_str).collect();
    let length = terms.len() as f32;
    terms.sort_unstable();
    let docs = corpus.docs().max(1) as f32;
    let mean = corpus.mean_terms().max(1.0);
    let term_score = |term: &str, doc_freq: u64| {
        let tf = frequency(&terms, term) as f32;
        idf(doc_freq, docs) * tf * (K1 + 1.0) / (tf + K1 * (1.0 - B + B * length / mean))
    };
    // Each query term's (BM25, exact, matched).
    let mut hits: Vec<(f32, bool, bool)> = query
        .terms
        .iter()
        .map(|term| {
            if frequency(&terms, &term.text) > 0 {
                return (term_score(&term.text, term.doc_freq), true, true);
            }
            if term.typos == 0 {
                return (0.0, false, false);
            }
            // Lengths further apart than the allowance are further apart
            // in edits too: skip them before the quadratic distance.
            let chars = term.text.chars().count();
            let closest = distinct(&terms)
                .filter(|t| t.chars().count().abs_diff(chars) <= term.typos)
                .filter_map(|t| {
                    let distance = strsim::damerau_levenshtein(&term.text, t);
                    (distance <= term.typos).then_some((distance, t))
                })
                .min();
            match closest {
                Some((_, t)) => (TYPO_WEIGHT * term_score(t, corpus.doc_freq(t)), false, true),
                None => (0.0, false, false),
            }
        })
        .collect();
    for join in &query.joins {
        let [a, b] = join.parts;
        if !(hits[a].1 && hits[b].1) && frequency(&terms, &join.text) > 0 {
            // The joined word stands for both words: each scores as if the
            // text held it as often as the joined word.
            for part in [a, b] {
                let apart = term_score(&join.text, query.terms[part].doc_freq);
                hits[part] = (hits[part].0.max(apart), true, true);
            }
        }
    }
    let mut found = LexicalMatch::default();
    for (bm25, exact, matched) in hits {
        found.bm25 += bm25;
        found.exact += f32::from(u8::from(exact));
        found.matched += f32::from(u8::from(matched));
    }
    let distinct_terms = query.terms.len() as f32;
    found.exact /= distinct_terms;
    found.matched /= distinct_terms;
    if query.attainable > 0.0 {
        found.bm25_share = (found.bm25 / query.attainable).min(1.0);
    }
    if found.exact == 1.0 && holds_phrase(words, &query.phrase) {
        found.phrase = 1.0;
    }
    found
}

/// Whether consecutive words of a text match the phrase's words in order,
/// each sharing a term with its own (`16 gb` holds `16gb` in its second
/// word, `jars` its stem `jar`).
fn holds_phrase(words: &[Vec<String>], phrase: &[Vec<String>]) -> bool {
    !phrase.is_empty()
        && words
            .windows(phrase.len())
            .any(|run| run.iter().zip(phrase).all(|(word, wanted)| wanted.iter().any(|term| word.contains(term))))
}

/// Occurrences of `term` in sorted `terms`.
fn frequency(terms: &[&str], term: &str) -> usize {
    let start = terms.partition_point(|t| *t < term);
    terms[start..].iter().take_while(|t| **t == term).count()
}

fn distinct<'a>(sorted: &'a [&'a str]) -> impl Iterator<Item = &'a str> {
    sorted.iter().enumerate().filter(|(i, t)| *i == 0 || sorted[i - 1] != **t).map(|(_, t)| *t)
}

/// The statistics of a small set of texts, counted directly: the corpus for
/// candidates a request brings.
pub(crate) struct TextsStats {
    docs: u64,
    mean_terms: f32,
    doc_freq: std::collections::HashMap<String, u64>,
}

impl TextsStats {
    #[cfg(any(test, feature = "offline"))]
    pub(crate) fn of<'a>(texts: impl IntoIterator<Item = &'a str>) -> Self {
        let words: Vec<Vec<Vec<String>>> = texts.into_iter().map(tokens::words).collect();
        Self::of_words(&words)
    }

    /// The statistics of texts already split into their words' terms.
    fn of_words(texts: &[Vec<Vec<String>>]) -> Self {
        let mut doc_freq = std::collections::HashMap::new();
        let total: usize = texts.iter().flatten().map(Vec::len).sum();
        for words in texts {
            let mut distinct: Vec<&String> = words.iter().flatten().collect();
            distinct.sort_unstable();
            distinct.dedup();
            for term in distinct {
                *doc_freq.entry(term.clone()).or_insert(0) += 1;
            }
        }
        let docs = texts.len() as u64;
        Self { docs, mean_terms: total as f32 / docs.max(1) as f32, doc_freq }
    }
}

impl CorpusStats for TextsStats {
    fn docs(&self) -> u64 {
        self.docs
    }
    fn mean_terms(&self) -> f32 {
        self.mean_terms
    }
    fn doc_freq(&self, term: &str) -> u64 {
        self.doc_freq.get(term).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXTS: [&str; 4] = ["red leather handbag", "blue denim jacket", "red wine glass set", "leather belt"];

    #[test]
    fn exact_terms_score_textbook_bm25() {
        let corpus = TextsStats::of(TEXTS);
        let query = LexicalQuery::new("leather bag", &corpus);
        let m = score(&query, TEXTS[0], &corpus);
        // "leather": df 2 of 4, length 3, mean 3; "bag" matches nothing.
        let idf = (1.0f32 + (4.0 - 2.0 + 0.5) / (2.0 + 0.5)).ln();
        assert!((m.bm25 - idf * 2.2 / (1.0 + 1.2)).abs() < 1e-5, "{m:?}");
        assert_eq!((m.exact, m.matched, m.phrase), (0.5, 0.5, 0.0));
        // "bag" is in no text: its idf is that of a term in one document.
        let attainable = (idf + (1.0f32 + 3.5 / 1.5).ln()) * 2.2;
        assert!((m.bm25_share - m.bm25 / attainable).abs() < 1e-6, "{m:?}");
        assert_eq!(score(&query, TEXTS[1], &corpus), LexicalMatch::default());
    }

    #[test]
    fn a_phrase_is_every_query_term_in_order_and_adjacent() {
        let corpus = TextsStats::of(["jumbo lunch bag red", "bag for lunch", "lunch bag lunch"]);
        let query = LexicalQuery::new("Lunch Bag", &corpus);
        let matched = |text: &str| score(&query, text, &corpus);
        assert_eq!(matched("jumbo lunch bag red").phrase, 1.0);
        assert_eq!(matched("bag for lunch").phrase, 0.0, "both words, not as a phrase");
        assert_eq!(matched("bag for lunch").exact, 1.0);
        // Repeated query words are part of the phrase, counted once in the shares.
        let repeated = LexicalQuery::new("lunch bag lunch", &corpus);
        let m = score(&repeated, "lunch bag lunch", &corpus);
        assert_eq!((m.exact, m.phrase), (1.0, 1.0));
        assert_eq!(score(&repeated, "jumbo lunch bag red", &corpus).phrase, 0.0);
    }

    #[test]
    fn weighing_among_texts_is_scoring_with_their_own_statistics() {
        let among = score_among("leather bag", &TEXTS);
        let corpus = TextsStats::of(TEXTS);
        let query = LexicalQuery::new("leather bag", &corpus);
        let one_by_one: Vec<LexicalMatch> = TEXTS.iter().map(|t| score(&query, t, &corpus)).collect();
        assert_eq!(among, one_by_one);
        assert!(among[0].bm25 > 0.0 && among[1] == LexicalMatch::default());
    }

    #[test]
    fn unknown_words_match_within_their_typo_allowance() {
        let corpus = TextsStats::of(TEXTS);
        let exact = score(&LexicalQuery::new("handbag", &corpus), TEXTS[0], &corpus);
        // "handbgs": a misspelt plural, its stem within one typo.
        for typo in ["hnadbag", "handbg", "handbgs"] {
            let m = score(&LexicalQuery::new(typo, &corpus), TEXTS[0], &corpus);
            assert!((m.bm25 - TYPO_WEIGHT * exact.bm25).abs() < 1e-5, "{typo}: {m:?} vs {exact:?}");
            assert_eq!((m.matched, m.exact, m.phrase), (1.0, 0.0, 0.0), "a typo match is no exact one");
        }
        assert_eq!(score(&LexicalQuery::new("handbags", &corpus), TEXTS[0], &corpus), exact, "a plural is its stem");
        // Four letters: too short to correct. Two typos need nine letters.
        assert_eq!(score(&LexicalQuery::new("bleu", &corpus), TEXTS[1], &corpus).bm25, 0.0);
        assert_eq!(score(&LexicalQuery::new("hnadbga", &corpus), TEXTS[0], &corpus).bm25, 0.0);
    }

    #[test]
    fn a_long_query_searches_its_rarest_known_terms_and_scores_every_term() {
        let corpus = TextsStats::of(TEXTS);
        let short = LexicalQuery::new("red leather handbag", &corpus);
        assert_eq!(short.retrieval_terms().len(), 3, "a short query searches every term");
        // Ten terms: "red" and "leather" (2 documents each), "handbag", "wine" and "belt" (1), and five words
        // no text holds.
        let long = LexicalQuery::new("red leather handbag wine belt zebra quokka ocelot walrus okapi", &corpus);
        let searched: Vec<&str> = long.retrieval_terms().into_iter().map(|(t, _)| t).collect();
        assert_eq!(searched.len(), MAX_RETRIEVAL_TERMS);
        assert_eq!(&searched[..5], ["belt", "handbag", "wine", "leather", "red"], "known terms, rarest first");
        let every = score(&long, TEXTS[0], &corpus);
        assert_eq!(every.matched, 0.3, "scoring still counts all ten terms");
    }

    #[test]
    fn plurals_and_spellings_of_a_measure_match_and_hold_the_phrase() {
        let titles = ["Mason Jar 16 oz", "mason jars, 16-ounce", "SanDisk 16GB memory card", "16 GB Memory Card"];
        let corpus = TextsStats::of(titles);
        for title in titles {
            let query = if title.contains("ason") { "mason jars 16 ounce" } else { "16 gb memory cards" };
            let found = score(&LexicalQuery::new(query, &corpus), title, &corpus);
            assert_eq!(found.exact, 1.0, "{query} in {title}");
        }
        let phrase = |query: &str, title: &str| score(&LexicalQuery::new(query, &corpus), title, &corpus).phrase;
        assert_eq!(phrase("16 gb memory card", "16 GB Memory Card"), 1.0);
        assert_eq!(phrase("16gb memory cards", "SanDisk 16GB memory card"), 1.0);
        assert_eq!(phrase("mason jars", "Mason Jar 16 oz"), 1.0);
        assert_eq!(phrase("jar mason", "Mason Jar 16 oz"), 0.0);
        // A measure after other words, and a joined word typed apart.
        assert_eq!(phrase("sandisk 16 gb", "SanDisk 16 GB memory card"), 1.0);
        assert_eq!(phrase("mason jars 16 ounce", "mason jars, 16-ounce"), 1.0);
        let shirts = TextsStats::of(["red T-Shirt", "red shirt"]);
        let in_shirts = |query: &str| score(&LexicalQuery::new(query, &shirts), "red T-Shirt", &shirts).phrase;
        assert_eq!((in_shirts("t shirt"), in_shirts("red t-shirt"), in_shirts("t shirts")), (1.0, 1.0, 1.0));
    }

    #[test]
    fn words_typed_apart_or_together_match_the_way_the_texts_write_them() {
        let texts = [
            "Apple MacBook Air 13",
            "MacBook Pro sleeve",
            "mac and cheese book",
            "light bulb LED",
            "LED light bulbs",
            "Harley Davidson jacket",
            "harley davidson mug",
        ];
        let corpus = TextsStats::of(texts);
        let found = |query: &str, text: &str| score(&LexicalQuery::new(query, &corpus), text, &corpus);
        let macbook = found("mac book air", texts[0]);
        assert_eq!((macbook.exact, macbook.matched), (1.0, 1.0), "macbook holds mac and book");
        assert!(macbook.bm25 > found("mac book air", texts[2]).bm25);
        let mac_book = LexicalQuery::new("mac book", &corpus);
        assert!(mac_book.retrieval_terms().contains(&("macbook", 0)), "the index searches the joined word too");
        assert_eq!(found("lightbulb", texts[3]).exact, 1.0);
        assert_eq!(found("harleydavidson jacket", texts[5]).phrase, 1.0);
        // A word the texts hold is never split, though its halves are words too.
        let whole = TextsStats::of(["harley davidson mug", "harley davidson cap", "harleydavidson tee"]);
        let known = LexicalQuery::new("harleydavidson", &whole);
        assert_eq!(known.retrieval_terms(), [("harleydavidson", 0)]);
        assert_eq!(score(&known, "harley davidson mug", &whole), LexicalMatch::default());
    }

    #[test]
    fn known_words_and_numbers_are_never_corrected() {
        let corpus = TextsStats::of(["blue shorts", "white shirts", "drill 20v"]);
        assert_eq!(score(&LexicalQuery::new("shirts", &corpus), "blue shorts", &corpus).bm25, 0.0);
        assert_eq!(allowed_typos("24v", 3), 0);
        assert_eq!(score(&LexicalQuery::new("24v", &corpus), "drill 20v", &corpus).bm25, 0.0);
        assert_eq!((allowed_typos("desk", 4), allowed_typos("chair", 5), allowed_typos("bookshelf", 9)), (0, 1, 2));
        // A plural's stem may carry the typos of what was typed.
        assert_eq!(allowed_typos("dril", 5), 1);
    }
}
