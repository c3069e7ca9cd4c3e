//! Words of product titles, the rule that says whether a title answers a
//! query, and pseudo-queries drawn from titles. Training draws its
//! pseudo-queries here and `eval-search` labels its query set with the same
//! rule, so both speak of one notion of "relevant".
//!
//! **Relevance rule.** A title is relevant to a query when every word of the
//! query is a word of the title. Words are maximal runs of letters and
//! digits, lower-cased, at least two characters long and not all digits
//! ("12", "x" and "&" are not words). So "lunch bag" matches "JUMBO LUNCH BAG
//! RED" and "BAG LUNCH" but not "LUNCHBOX" or "BAGS"; "t-light" is the two
//! words "t" (too short, dropped) and "light".
//!
//! **Chinese.** Chinese is written without spaces, so a run of CJK
//! ideographs is not one word but its overlapping character pairs (bigrams,
//! as CJK search engines index it): "红色手提包" is 红色, 色手, 手提, 提包. A
//! query "手提包" (手提, 提包) then matches "新款女士手提包" and "红色 手提包",
//! as a query word matches wherever it stands in an English title. Written
//! back as a query, consecutive bigrams of one run become the characters they
//! cover ("手提包", not "手提 提包"). Titles without ideographs get exactly
//! the words they always had.

use std::collections::HashMap;

use rand::Rng;

use crate::model::lexical::scorer::TYPO_MIN_CHARS;

/// A word of a text, and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Term {
    pub word: String,
    /// For a CJK bigram, the number of the ideograph run it belongs to:
    /// consecutive bigrams of one run overlap by a character.
    cjk_run: Option<usize>,
}

/// Whether BERT's tokenizers treat `c` as a CJK ideograph (each one a token
/// of its own; the ranges of BERT's `_is_chinese_char`).
fn is_cjk_ideograph(c: char) -> bool {
    matches!(c as u32,
        0x4E00..=0x9FFF | 0x3400..=0x4DBF | 0x20000..=0x2A6DF | 0x2A700..=0x2B73F
        | 0x2B740..=0x2B81F | 0x2B820..=0x2CEAF | 0xF900..=0xFAFF | 0x2F800..=0x2FA1F)
}

/// The terms of `text`, in order (duplicates kept).
pub(crate) fn terms(text: &str) -> Vec<Term> {
    let mut terms = Vec::new();
    let mut runs = 0;
    for run in text.split(|c: char| !c.is_alphanumeric()) {
        let chars: Vec<char> = run.chars().collect();
        // Split the run where it changes between ideographs and the rest.
        for part in chars.chunk_by(|a, b| is_cjk_ideograph(*a) == is_cjk_ideograph(*b)) {
            if is_cjk_ideograph(part[0]) {
                terms.extend(part.windows(2).map(|pair| Term { word: pair.iter().collect(), cjk_run: Some(runs) }));
                runs += 1;
            } else if part.len() >= 2 && !part.iter().all(|c| c.is_ascii_digit()) {
                terms.push(Term { word: part.iter().collect::<String>().to_lowercase(), cjk_run: None });
            }
        }
    }
    terms
}

/// The words of `text`, in order (duplicates kept).
pub(crate) fn words(text: &str) -> Vec<String> {
    terms(text).into_iter().map(|t| t.word).collect()
}

/// Consecutive terms written as a query: words joined by spaces, the
/// bigrams of one ideograph run as the characters they cover.
pub(crate) fn phrase(terms: &[Term]) -> String {
    let mut text = String::new();
    let mut previous_run = None;
    for term in terms {
        match term.cjk_run {
            Some(run) if previous_run == Some(run) => text.extend(term.word.chars().skip(1)),
            _ => {
                if !text.is_empty() {
                    text.push(' ');
                }
                text.push_str(&term.word);
            }
        }
        previous_run = term.cjk_run;
    }
    text
}

/// The relevance rule: every query word is a title word. A query without
/// words matches nothing. The tests' oracle: the query set's phrases are
/// built to obey it (`search_eval`), so only they call it.
#[cfg(test)]
pub(crate) fn matches(title_words: &[String], query_words: &[String]) -> bool {
    !query_words.is_empty() && query_words.iter().all(|q| title_words.contains(q))
}

/// Longest pseudo-query, in words.
const MAX_PSEUDO_QUERY_WORDS: usize = 3;

/// A query a shopper who bought `title` might have typed: a random run of one
/// to three consecutive words of it (two to four characters of Chinese).
/// `None` when the title has no words.
pub(crate) fn pseudo_query(title: &str, rng: &mut impl Rng) -> Option<String> {
    let terms = terms(title);
    if terms.is_empty() {
        return None;
    }
    let len = rng.gen_range(1..=terms.len().min(MAX_PSEUDO_QUERY_WORDS));
    let start = rng.gen_range(0..=terms.len() - len);
    Some(phrase(&terms[start..start + len]))
}

/// `query` with one word mistyped, as shoppers do: a letter dropped or two
/// neighbouring letters swapped (never the first letter), in a word of
/// Latin letters at least as long as the lexical scorer corrects
/// (`model::lexical`'s typo allowance). A dropped letter can leave a word
/// too short to be matched (five letters become four), as it does for a
/// shopper. `None` when no word is long enough (every Chinese query).
pub(crate) fn with_typo(query: &str, rng: &mut impl Rng) -> Option<String> {
    let mut words: Vec<String> = query.split(' ').map(String::from).collect();
    let long_enough = |w: &String| w.chars().count() >= TYPO_MIN_CHARS && w.chars().all(|c| c.is_ascii_alphabetic());
    let eligible: Vec<usize> = (0..words.len()).filter(|&i| long_enough(&words[i])).collect();
    if eligible.is_empty() {
        return None;
    }
    let word = &mut words[eligible[rng.gen_range(0..eligible.len())]];
    let mut chars: Vec<char> = word.chars().collect();
    let at = rng.gen_range(1..chars.len() - 1);
    if rng.gen_bool(0.5) && chars[at] != chars[at + 1] {
        chars.swap(at, at + 1);
    } else {
        chars.remove(at);
    }
    *word = chars.into_iter().collect();
    Some(words.join(" "))
}

/// Which titles hold each word: finds the titles a query matches without
/// scanning the catalog.
pub(crate) struct WordIndex {
    postings: HashMap<String, Vec<u32>>,
}

impl WordIndex {
    /// Indexes `titles`; a title's number is its position in the iterator.
    pub(crate) fn new<'t>(titles: impl IntoIterator<Item = &'t str>) -> Self {
        let mut postings: HashMap<String, Vec<u32>> = HashMap::new();
        for (n, title) in titles.into_iter().enumerate() {
            let mut seen = words(title);
            seen.sort_unstable();
            seen.dedup();
            for word in seen {
                postings.entry(word).or_default().push(n as u32);
            }
        }
        Self { postings }
    }

    /// Numbers of the titles `query` matches under the relevance rule, ascending.
    pub(crate) fn matching(&self, query: &str) -> Vec<u32> {
        let mut words = words(query);
        words.sort_unstable();
        words.dedup();
        let mut lists: Vec<&Vec<u32>> = Vec::with_capacity(words.len());
        for word in &words {
            match self.postings.get(word) {
                Some(list) => lists.push(list),
                None => return Vec::new(),
            }
        }
        lists.sort_by_key(|l| l.len());
        let Some((shortest, rest)) = lists.split_first() else { return Vec::new() };
        shortest.iter().copied().filter(|n| rest.iter().all(|l| l.binary_search(n).is_ok())).collect()
    }

    /// Numbers of the titles sharing no word with `query`, ascending, out of `total`.
    pub(crate) fn sharing_no_word(&self, query: &str, total: usize) -> Vec<u32> {
        let mut excluded = vec![false; total];
        for word in words(query) {
            for &n in self.postings.get(&word).into_iter().flatten() {
                excluded[n as usize] = true;
            }
        }
        (0..total as u32).filter(|&n| !excluded[n as usize]).collect()
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn words_are_lowercased_alphanumeric_runs_without_numbers_or_single_letters() {
        assert_eq!(words("WHITE HANGING T-LIGHT HOLDER, 12 PCS & X"), ["white", "hanging", "light", "holder", "pcs"]);
    }

    #[test]
    fn chinese_runs_are_overlapping_character_pairs() {
        assert_eq!(words("红色 手提包"), ["红色", "手提", "提包"]);
        assert_eq!(words("LEGO乐高积木 10698"), ["lego", "乐高", "高积", "积木"]);
        assert_eq!(words("女"), Vec::<String>::new(), "one character is too short, as one letter is");
        let terms = terms("红色真皮手提包 女士 LUNCH BAG");
        assert_eq!(phrase(&terms[3..6]), "皮手提包");
        assert_eq!(phrase(&terms[5..8]), "提包 女士 lunch", "bigrams of different runs stay apart");
    }

    #[test]
    fn a_chinese_query_matches_wherever_it_stands_in_a_title() {
        let query = words("手提包");
        assert!(matches(&words("新款女士手提包"), &query));
        assert!(matches(&words("红色 手提包 真皮"), &query));
        assert!(!matches(&words("手提电脑包"), &query), "手提 and 电脑包 hold no 提包");
        let index = WordIndex::new(["新款女士手提包", "男士运动鞋", "手提电脑包"]);
        assert_eq!(index.matching("手提包"), [0]);
        assert_eq!(index.sharing_no_word("手提包", 3), [1]);
    }

    #[test]
    fn a_title_is_relevant_when_it_holds_every_query_word() {
        let title = words("JUMBO LUNCH BAG RED");
        assert!(matches(&title, &words("lunch bag")));
        assert!(matches(&title, &words("Bag lunch")));
        assert!(!matches(&title, &words("lunch box")));
        assert!(!matches(&words("JUMBO BAGS"), &words("bag")), "whole words only");
        assert!(!matches(&title, &words("&")), "a query without words matches nothing");
    }

    #[test]
    fn the_index_agrees_with_the_rule() {
        let titles = ["JUMBO LUNCH BAG RED", "LUNCH BOX", "RED RETROSPOT BAG", "BAG LUNCH PINK", "CAKE TIN"];
        let index = WordIndex::new(titles);
        for query in ["lunch bag", "bag", "red", "cake tin", "mug", "lunch"] {
            let by_rule: Vec<u32> =
                (0..titles.len() as u32).filter(|&n| matches(&words(titles[n as usize]), &words(query))).collect();
            assert_eq!(index.matching(query), by_rule, "{query}");
        }
        assert_eq!(index.sharing_no_word("red bag", titles.len()), [1, 4]);
    }

    #[test]
    fn pseudo_queries_are_runs_of_title_words_that_match_their_title() {
        let mut rng = StdRng::seed_from_u64(1);
        let title = "SET OF 3 CAKE TINS PANTRY DESIGN";
        let mut lengths = [0; 4];
        for _ in 0..200 {
            let query = pseudo_query(title, &mut rng).unwrap();
            assert!(matches(&words(title), &words(&query)), "{query}");
            assert!(words(title).join(" ").contains(&query), "consecutive words: {query}");
            lengths[words(&query).len()] += 1;
        }
        assert!(lengths[1] > 0 && lengths[2] > 0 && lengths[3] > 0, "{lengths:?}");
        assert_eq!(pseudo_query("12 & 3", &mut rng), None);
    }

    #[test]
    fn a_typo_changes_one_long_latin_word_by_one_edit() {
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..200 {
            let typo = with_typo("red lunch bag", &mut rng).unwrap();
            let (changed, kept): (Vec<&str>, Vec<&str>) = typo.split(' ').partition(|w| !["red", "bag"].contains(w));
            assert_eq!(kept, ["red", "bag"], "{typo}");
            assert_eq!(strsim::damerau_levenshtein(changed[0], "lunch"), 1, "{typo}");
            assert!(changed[0].starts_with('l'), "{typo}");
        }
        assert_eq!(with_typo("red bag 2024", &mut rng), None, "no word of five letters");
        assert_eq!(with_typo("红色手提包", &mut rng), None);
    }

    #[test]
    fn chinese_pseudo_queries_are_runs_of_characters_that_match_their_title() {
        let mut rng = StdRng::seed_from_u64(1);
        let title = "红色真皮手提包 女士";
        for _ in 0..200 {
            let query = pseudo_query(title, &mut rng).unwrap();
            assert!(matches(&words(title), &words(&query)), "{query}");
            assert!(query.split(' ').all(|part| title.contains(part)), "characters of the title: {query}");
        }
    }
}
