//! `eval-search --judged DIR --typos SEED`: the judged queries with one
//! typo each, to measure what a method keeps of its clean NDCG@10 when
//! shoppers mistype (see `model::lexical` for how search tolerates typos).

use super::search_judged::{JudgedQuery, JudgedSet};

/// The set with one typo in each query, as shoppers make them: in one
/// seeded word of at least [`TYPO_WORD_CHARS`] letters (no digits), one
/// character dropped or two neighbours swapped (the first letter is kept,
/// as it mostly is in real typos). Queries without such a word are left
/// out: the result is (those queries clean, the same mistyped).
pub(crate) fn with_typos(set: &JudgedSet, seed: u64) -> (JudgedSet, JudgedSet) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut clean = Vec::new();
    let queries = set
        .queries
        .iter()
        .filter_map(|query| {
            let words: Vec<&str> = query.text.split(' ').collect();
            let eligible: Vec<usize> = (0..words.len())
                .filter(|&i| words[i].chars().count() >= TYPO_WORD_CHARS && words[i].chars().all(char::is_alphabetic))
                .collect();
            if eligible.is_empty() {
                return None;
            }
            clean.push(query.clone());
            let at = eligible[rng.gen_range(0..eligible.len())];
            let mut chars: Vec<char> = words[at].chars().collect();
            let i = rng.gen_range(1..chars.len() - 1);
            if rng.gen_bool(0.5) {
                chars.remove(i);
            } else {
                chars.swap(i, i + 1);
            }
            let typo: String = chars.into_iter().collect();
            let text =
                words.iter().enumerate().map(|(j, w)| if j == at { typo.as_str() } else { w }).collect::<Vec<_>>();
            Some(JudgedQuery { text: text.join(" "), gains: query.gains.clone() })
        })
        .collect();
    let subset = |queries| JudgedSet { ids: set.ids.clone(), texts: set.texts.clone(), queries };
    (subset(clean), subset(queries))
}

/// Shortest word [`with_typos`] mistypes.
pub(crate) const TYPO_WORD_CHARS: usize = 5;

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn typos_drop_or_swap_one_inner_letter_of_one_long_word() {
        let set = JudgedSet {
            ids: vec![],
            texts: vec![],
            queries: ["leather handbag", "tv 4k", "wireless mouse pad"]
                .map(|t| JudgedQuery { text: t.into(), gains: HashMap::new() })
                .to_vec(),
        };
        let (clean, typos) = with_typos(&set, 7);
        assert_eq!(typos.queries.len(), 2, "\"tv 4k\" has no word of five letters");
        assert_eq!(clean.queries[1].text, "wireless mouse pad");
        for (clean, typo) in clean.queries.iter().zip(&typos.queries) {
            let diff: Vec<(&str, &str)> =
                clean.text.split(' ').zip(typo.text.split(' ')).filter(|(a, b)| a != b).collect();
            assert_eq!(diff.len(), 1, "{typo:?}");
            let (a, b) = diff[0];
            assert_eq!(a[..1], b[..1], "first letter kept");
            assert_eq!(strsim::damerau_levenshtein(a, b), 1, "{a} -> {b}");
        }
        assert_eq!(with_typos(&set, 7).1.queries[0].text, typos.queries[0].text, "seeded");
    }
}
