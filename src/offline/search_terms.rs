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

use std::collections::HashMap;

use rand::Rng;

/// The words of `text`, in order (duplicates kept).
pub fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() >= 2 && !w.chars().all(|c| c.is_ascii_digit()))
        .map(str::to_lowercase)
        .collect()
}

/// The relevance rule: every query word is a title word. A query without
/// words matches nothing.
pub fn matches(title_words: &[String], query_words: &[String]) -> bool {
    !query_words.is_empty() && query_words.iter().all(|q| title_words.contains(q))
}

/// Longest pseudo-query, in words.
const MAX_PSEUDO_QUERY_WORDS: usize = 3;

/// A query a shopper who bought `title` might have typed: a random run of one
/// to three consecutive words of it. `None` when the title has no words.
pub fn pseudo_query(title: &str, rng: &mut impl Rng) -> Option<String> {
    let words = words(title);
    if words.is_empty() {
        return None;
    }
    let len = rng.gen_range(1..=words.len().min(MAX_PSEUDO_QUERY_WORDS));
    let start = rng.gen_range(0..=words.len() - len);
    Some(words[start..start + len].join(" "))
}

/// Which titles hold each word: finds the titles a query matches without
/// scanning the catalog.
pub struct WordIndex {
    postings: HashMap<String, Vec<u32>>,
}

impl WordIndex {
    /// Indexes `titles`; a title's number is its position in the iterator.
    pub fn new<'t>(titles: impl IntoIterator<Item = &'t str>) -> Self {
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
    pub fn matching(&self, query: &str) -> Vec<u32> {
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
    pub fn sharing_no_word(&self, query: &str, total: usize) -> Vec<u32> {
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
        assert_eq!(words("红色 手提包"), ["红色", "手提包"]);
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
}
