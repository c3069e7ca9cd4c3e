//! `shoprank eval-search`: does a search query matter? A labelled query set
//! is built from a bundle's own catalog (real product titles), and each query
//! ranks its relevant items among unrelated distractors, as a storefront's
//! search page would send them, by three scorers:
//!
//! - `text-cosine`: the cosine between the query and the item text alone;
//! - `head-no-query`: the head with the query only inside the user text, as
//!   heads before the query features saw it (`has_query` 0);
//! - `head`: the head with its query features;
//! - `bm25`: BM25 of the query's words (`model::lexical`), with the
//!   candidates as the corpus;
//! - `shipped`: the head with its query features, ranked in bands of
//!   relevance (query cosine fused with BM25, `model::relevance`): what
//!   `/recommend` does with given candidates.
//!
//! Each is measured twice: with the items as the log knows them (purchase
//! statistics apply) and as new products (statistics hidden, as for items a
//! request brings that the log never saw).
//!
//! **Query set rule.** Phrases are the last two words and the last word of
//! every catalog title (see `search_terms::words`), skipping phrases with a
//! function word. A phrase is eligible when at least `relevant` titles match
//! it (relevance rule in `search_terms`) and at least `distractors` share no
//! word with it. Two-word phrases are drawn first (seeded), then one-word
//! ones; each query gets a seeded sample of `relevant` matching items and
//! `distractors` non-sharing ones, shuffled. Relevance is binary: NDCG@10
//! over the `relevant` items (ideal: all of them at the top).

use std::collections::{BTreeMap, BTreeSet, HashSet};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::config::UserTextBudget;
use crate::model::encoder::cosine;
use crate::model::features::{CandidateInput, UserContext};
use crate::model::head::ScoringHead;
use crate::model::lexical::{self, LexicalMatch};
use crate::model::relevance::{self, Banding};
use crate::model::scoring;
use crate::model::stats::{HistoryStats, ItemPos};
use crate::model::user_text::UserSignals;
use crate::offline::embed_store::{EmbedStore, EmbedStoreError};
use crate::offline::ranking_metrics::{mean, rank_by_score, score_ranking, RankingMetrics};
use crate::offline::search_terms::{phrase, terms, WordIndex};
use crate::offline::text_embedder::TextEmbedder;

/// Words that make a phrase a fragment rather than a product type.
const FUNCTION_WORDS: [&str; 8] = ["of", "and", "the", "in", "with", "for", "to", "on"];

/// The scorers, in table order.
pub(crate) const SEARCH_METHODS: [&str; 5] = ["text-cosine", "bm25", "head-no-query", "head", "shipped"];
/// How the candidates are shown: as the log knows them, or as new products.
pub(crate) const CATALOGS: [&str; 2] = ["known", "new"];

#[derive(Debug, Clone, Copy)]
pub struct QuerySetRule {
    pub queries: usize,
    pub relevant: usize,
    pub distractors: usize,
    pub seed: u64,
}

/// One labelled query: its candidates (relevant and distractors, shuffled).
#[derive(Debug, Clone)]
pub struct SearchQuery {
    pub text: String,
    pub relevant: HashSet<ItemPos>,
    pub candidates: Vec<ItemPos>,
}

/// Builds the query set from the titles in `stats` (see the module docs).
pub fn build_query_set(stats: &HistoryStats, rule: QuerySetRule) -> Vec<SearchQuery> {
    let titles: Vec<&str> = stats.items.iter().map(|s| s.text.as_str()).collect();
    let index = WordIndex::new(titles.iter().copied());
    // Phrases by word count; a BTreeSet keeps them in a stable order.
    let mut phrases: [BTreeSet<String>; 2] = Default::default();
    for title in &titles {
        let terms = terms(title);
        for len in [2, 1] {
            if terms.len() >= len {
                let last = &terms[terms.len() - len..];
                if last.iter().all(|term| !FUNCTION_WORDS.contains(&term.word.as_str())) {
                    phrases[len - 1].insert(phrase(last));
                }
            }
        }
    }
    let mut rng = StdRng::seed_from_u64(rule.seed);
    let mut queries = Vec::with_capacity(rule.queries);
    for group in [&phrases[1], &phrases[0]] {
        let mut group: Vec<&String> = group.iter().collect();
        group.shuffle(&mut rng);
        for phrase in group {
            if queries.len() == rule.queries {
                return queries;
            }
            let matching = index.matching(phrase);
            let unrelated = index.sharing_no_word(phrase, titles.len());
            if matching.len() < rule.relevant || unrelated.len() < rule.distractors {
                continue;
            }
            let pick = |from: &[u32], n: usize, rng: &mut StdRng| -> Vec<ItemPos> {
                from.choose_multiple(rng, n).map(|&i| ItemPos::new(i as usize)).collect()
            };
            let relevant = pick(&matching, rule.relevant, &mut rng);
            let mut candidates = relevant.clone();
            candidates.extend(pick(&unrelated, rule.distractors, &mut rng));
            candidates.shuffle(&mut rng);
            queries.push(SearchQuery { text: phrase.clone(), relevant: relevant.into_iter().collect(), candidates });
        }
    }
    queries
}

#[derive(Debug, thiserror::Error)]
pub enum SearchEvalError {
    #[error(transparent)]
    Store(#[from] EmbedStoreError),
    #[error("scoring failed: {0}")]
    Model(#[from] candle_core::Error),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SearchReport {
    pub queries: usize,
    pub relevant_per_query: usize,
    pub distractors_per_query: usize,
    /// The relevance bands `shipped` ranked with.
    pub relevance_margin: f32,
    pub relevance_floor: f32,
    #[serde(default)]
    pub lexical_weight: f32,
    /// `"<method>/<catalog>"` → mean metrics over the queries.
    pub results: BTreeMap<String, RankingMetrics>,
}

/// Ranks every query's candidates with every method, on both catalogs.
pub fn evaluate_search(
    stats: &HistoryStats,
    head: &ScoringHead,
    encoder: &dyn TextEmbedder,
    budget: UserTextBudget,
    store: &mut EmbedStore,
    queries: &[SearchQuery],
    banding: Banding,
) -> Result<SearchReport, SearchEvalError> {
    let user_texts: Vec<String> = queries
        .iter()
        .map(|q| encoder.user_text(budget, UserSignals { query: Some(&q.text), profile: None, history: &[] }))
        .collect::<Result<_, _>>()
        .map_err(EmbedStoreError::from)?;
    let mut texts: Vec<&str> =
        queries.iter().map(|q| q.text.as_str()).chain(user_texts.iter().map(String::as_str)).collect();
    texts.extend(queries.iter().flat_map(|q| q.candidates.iter().map(|&p| stats.item(p).text.as_str())));
    store.embed_all(encoder, &texts, "search queries and items")?;

    let mut per_row: BTreeMap<String, Vec<RankingMetrics>> = BTreeMap::new();
    for (query, user_text) in queries.iter().zip(&user_texts) {
        let query_vector = store.get(&query.text);
        let plain = UserContext::new(stats, store.get(user_text).to_vec(), &[], &[]);
        let with_query =
            UserContext::new(stats, store.get(user_text).to_vec(), &[], &[]).with_query(query_vector.to_vec());
        let texts: Vec<&str> = query.candidates.iter().map(|&p| stats.item(p).text.as_str()).collect();
        let matches = lexical::score_among(&query.text, &texts);
        let bm25: Vec<f32> = matches.iter().map(|m| m.bm25).collect();
        for catalog in CATALOGS {
            let inputs: Vec<CandidateInput<'_>> = query
                .candidates
                .iter()
                .zip(&matches)
                .map(|(&p, &lexical)| {
                    let embedding = store.get(&stats.item(p).text);
                    match catalog {
                        "known" => CandidateInput { position: Some(p), embedding, price: None, lexical },
                        _ => CandidateInput { position: None, embedding, price: stats.item(p).price, lexical },
                    }
                })
                .collect();
            let cosines: Vec<f32> = inputs.iter().map(|c| cosine(query_vector, c.embedding)).collect();
            // Before the query features: no query, so no word matched either.
            let without_query: Vec<CandidateInput<'_>> =
                inputs.iter().map(|c| CandidateInput { lexical: LexicalMatch::default(), ..*c }).collect();
            let head_scores = scoring::score(head, stats, &with_query, &inputs)?;
            for method in SEARCH_METHODS {
                let scores = match method {
                    "text-cosine" => cosines.clone(),
                    "bm25" => bm25.clone(),
                    "head-no-query" => scoring::score(head, stats, &plain, &without_query)?,
                    "head" => head_scores.clone(),
                    _ => relevance::banded_keys(&head_scores, &banding.relevance(&cosines, &bm25), banding),
                };
                let ranked = rank_by_score(&query.candidates, &scores, |p| stats.item(p).id.as_str());
                per_row.entry(format!("{method}/{catalog}")).or_default().push(score_ranking(&ranked, &query.relevant));
            }
        }
    }
    Ok(SearchReport {
        queries: queries.len(),
        relevant_per_query: queries.first().map_or(0, |q| q.relevant.len()),
        distractors_per_query: queries.first().map_or(0, |q| q.candidates.len() - q.relevant.len()),
        relevance_margin: banding.margin,
        relevance_floor: banding.floor,
        lexical_weight: banding.lexical_weight,
        results: per_row.into_iter().map(|(row, all)| (row, mean(&all))).collect(),
    })
}

/// The report as a table: one row per method, NDCG@10 and P@10 per catalog.
pub(crate) fn format_search_table(report: &SearchReport) -> String {
    let mut out = format!(
        "search: {} queries, {} relevant + {} distractors each; shipped with relevance_margin {}, floor {}, lexical_weight {}\n{:<14} {:>12} {:>9} {:>12} {:>9}\n",
        report.queries,
        report.relevant_per_query,
        report.distractors_per_query,
        report.relevance_margin,
        report.relevance_floor,
        report.lexical_weight,
        "method",
        "NDCG@10 known",
        "P@10",
        "NDCG@10 new",
        "P@10"
    );
    for method in SEARCH_METHODS {
        let known = report.results.get(&format!("{method}/known"));
        let new = report.results.get(&format!("{method}/new"));
        if let (Some(k), Some(n)) = (known, new) {
            // With as many relevant items as the cutoff, Recall@10 is P@10.
            out.push_str(&format!(
                "{method:<14} {:>12.4} {:>9.3} {:>12.4} {:>9.3}\n",
                k.ndcg10, k.recall10, n.ndcg10, n.recall10
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::stats::ItemStats;
    use crate::offline::search_terms::words;

    fn catalog(titles: &[&str]) -> HistoryStats {
        let items = titles
            .iter()
            .enumerate()
            .map(|(i, t)| ItemStats {
                id: format!("i{i}"),
                text: t.to_string(),
                buyers: 1,
                recent_buyers: 0,
                week_buyers: 0,
                age_days: 1.0,
                price: Some(1.0),
                neighbours: Vec::new(),
                recent_ease: Vec::new(),
                quantity: None,
            })
            .collect();
        HistoryStats::from_parts(String::new(), 1, items)
    }

    #[test]
    fn queries_are_title_phrases_with_relevant_items_and_unrelated_distractors() {
        let mut titles = Vec::new();
        for colour in ["RED", "BLUE", "PINK"] {
            titles.push(format!("{colour} LUNCH BAG"));
            titles.push(format!("JUMBO {colour} LUNCH BAG"));
            titles.push(format!("{colour} CAKE TIN"));
            titles.push(format!("SET OF {colour}"));
        }
        titles.extend((0..6).map(|i| format!("DOORMAT DESIGN{i}")));
        let refs: Vec<&str> = titles.iter().map(String::as_str).collect();
        let stats = catalog(&refs);
        let rule = QuerySetRule { queries: 10, relevant: 3, distractors: 5, seed: 1 };
        let queries = build_query_set(&stats, rule);
        let texts: BTreeSet<&str> = queries.iter().map(|q| q.text.as_str()).collect();
        // "lunch bag" (6 titles) and "cake tin" (3) are two-word phrases,
        // "bag" and "tin" one-word ones; "set of" has a function word.
        assert!(texts.contains("lunch bag") && texts.contains("cake tin"), "{texts:?}");
        assert!(!texts.iter().any(|t| t.contains("of")), "{texts:?}");
        let two_words = queries.iter().take_while(|q| q.text.contains(' ')).count();
        assert!(queries[two_words..].iter().all(|q| !q.text.contains(' ')), "two-word phrases come first");
        for query in &queries {
            let query_words = words(&query.text);
            assert_eq!(query.relevant.len(), 3);
            assert_eq!(query.candidates.len(), 8);
            for &p in &query.candidates {
                let title = words(&stats.item(p).text);
                if query.relevant.contains(&p) {
                    assert!(crate::offline::search_terms::matches(&title, &query_words));
                } else {
                    assert!(query_words.iter().all(|w| !title.contains(w)), "{} vs {}", query.text, stats.item(p).text);
                }
            }
        }
        let again = build_query_set(&stats, rule);
        assert_eq!(
            again.iter().map(|q| &q.candidates).collect::<Vec<_>>(),
            queries.iter().map(|q| &q.candidates).collect::<Vec<_>>(),
            "seeded"
        );
    }
}
