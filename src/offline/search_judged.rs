//! `shoprank eval-search --judged DIR`: search measured on a shop's own
//! judged queries, over its whole catalog, the way a search page runs them
//! (no candidates: everything in the catalog can be returned).
//!
//! **The judged set** is a directory of two UTF-8 CSV files:
//! - `items.csv`: `item_id,text` — the catalog (the generic format's item
//!   file; extra columns are ignored);
//! - `judgements.csv`: `query,item_id,gain` — one row per judged (query,
//!   item) pair; `gain` ≥ 0 is how much the item is worth at the top for
//!   that query (0: judged irrelevant). Unjudged items gain 0. A pair judged
//!   twice keeps its larger gain.
//!
//! **The measures**, per query then averaged over the queries with at least
//! `min_relevant` items of gain ≥ `relevant_gain`:
//! - NDCG@10 with linear gains, `Σ gain_i / log2(i + 1)` over the first 10
//!   ranked catalog items, over the same sum for the judged gains sorted;
//! - Recall@100: the share of the items with gain ≥ `relevant_gain` among
//!   the first 100.
//!
//! **The methods**: `cosine` (the query's embedding against every item's,
//! exact), `bm25` ([`crate::model::lexical`] over the item texts, typos
//! included), `rrf` (reciprocal-rank fusion of those two top-100 lists,
//! `Σ 1/(60 + rank)`, untuned), `fused` (the union of the `retrieve_k`
//! nearest and the `lexical_k` best by BM25, ordered by fused relevance
//! alone, see `model::relevance`), `dense-shipped` (what `/recommend` does
//! with `catalog.lexical_index = false`: the `retrieve_k` nearest, their
//! words weighed among themselves, no typo correction, the head, bands of
//! fused relevance) and `shipped`, what `/recommend` does with a query and no
//! candidates: the same union as `fused`, scored by the head with the query
//! features as new products (the bundle's statistics do not know another
//! shop's ids), ranked in bands of fused relevance.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::config::UserTextBudget;
use crate::model::encoder::cosine;
use crate::model::features::{CandidateInput, UserContext};
use crate::model::head::ScoringHead;
use crate::model::lexical::{self, LexicalError, LexicalIndex, LexicalMatch, LexicalQuery};
use crate::model::relevance::{self, Banding};
use crate::model::scoring;
use crate::model::stats::HistoryStats;
use crate::model::user_text::UserSignals;
use crate::offline::data::generic::{read_items, record_at, records, Columns};
use crate::offline::data::{DataError, Dataset, DenseId};
use crate::offline::embed_store::{EmbedStore, EmbedStoreError};
use crate::offline::text_embedder::TextEmbedder;

/// The methods, in table order.
pub(crate) const JUDGED_METHODS: [&str; 6] = ["shipped", "dense-shipped", "fused", "cosine", "bm25", "rrf"];
/// How deep each method's ranking goes (Recall@100 reads it whole).
const DEPTH: usize = 100;
/// The constant of reciprocal-rank fusion (Cormack, Clarke & Büttcher 2009).
const RRF_K: f32 = 60.0;

/// One judged query: its text and the gain of each judged item.
#[derive(Debug, Clone)]
pub(crate) struct JudgedQuery {
    pub text: String,
    /// Catalog position → gain.
    pub gains: HashMap<usize, f32>,
}

/// A catalog and its judged queries.
#[derive(Debug, Clone)]
pub(crate) struct JudgedSet {
    pub ids: Vec<String>,
    pub texts: Vec<String>,
    /// In order of first appearance in `judgements.csv`.
    pub queries: Vec<JudgedQuery>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum JudgedError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Store(#[from] EmbedStoreError),
    #[error(transparent)]
    Lexical(#[from] LexicalError),
    #[error("scoring failed: {0}")]
    Model(#[from] candle_core::Error),
}

/// Reads `dir/items.csv` and `dir/judgements.csv`. A judgement naming an
/// item not in the catalog, or a gain that is not a number ≥ 0, stops the
/// read with its line.
pub(crate) fn load(dir: &Path) -> Result<JudgedSet, DataError> {
    let mut data = Dataset::default();
    let items_path = dir.join("items.csv");
    read_items(&items_path, &mut data)?;
    let ids: Vec<String> = (0..data.items.len()).map(|i| data.items.name(DenseId::from_index(i)).to_string()).collect();
    let texts: Vec<String> = data.item_texts.into_iter().map(Option::unwrap_or_default).collect();

    let path = dir.join("judgements.csv");
    let mut reader = records(&path)?;
    let columns = Columns::read(&path, &mut reader, &["query", "item_id", "gain"])?;
    let mut queries: Vec<JudgedQuery> = Vec::new();
    let mut by_text: HashMap<String, usize> = HashMap::new();
    for (index, record) in reader.records().enumerate() {
        let line = index + 2;
        let record = record_at(&path, line, record)?;
        let malformed = |problem: String| DataError::Malformed { path: path.clone(), line, problem };
        let query = columns.get(&record, "query").ok_or_else(|| malformed("column query is empty".into()))?;
        let id = columns.get(&record, "item_id").ok_or_else(|| malformed("column item_id is empty".into()))?;
        let position = data
            .items
            .get(id)
            .map(DenseId::index)
            .ok_or_else(|| malformed(format!("item_id {id:?} has no row in items.csv")))?;
        let gain = columns
            .get(&record, "gain")
            .and_then(|g| g.parse::<f32>().ok())
            .filter(|g| g.is_finite() && *g >= 0.0)
            .ok_or_else(|| malformed(format!("gain {:?} is not a number >= 0", columns.get(&record, "gain"))))?;
        let q = *by_text.entry(query.to_string()).or_insert_with(|| {
            queries.push(JudgedQuery { text: query.to_string(), gains: HashMap::new() });
            queries.len() - 1
        });
        let entry = queries[q].gains.entry(position).or_insert(gain);
        *entry = entry.max(gain);
    }
    Ok(JudgedSet { ids, texts, queries })
}

/// Which queries count, and what counts as relevant for recall.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct JudgedRule {
    /// Items with at least this gain are the relevant ones.
    pub relevant_gain: f32,
    /// Queries with fewer relevant items are left out.
    pub min_relevant: usize,
}

/// One method's means over the queries.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub(crate) struct JudgedMetrics {
    #[serde(rename = "ndcg@10")]
    pub ndcg10: f64,
    #[serde(rename = "recall@100")]
    pub recall100: f64,
    /// Mean time this method adds to rank one query, milliseconds, in this
    /// process (not a server): item and query embeddings are computed
    /// before, `dense-shipped` reuses `cosine`'s scan and `rrf` both lists.
    pub ms_per_query: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct JudgedReport {
    pub catalog_items: usize,
    /// Queries in the file, and those the rule kept.
    pub queries_judged: usize,
    pub queries: usize,
    pub rule: JudgedRule,
    pub retrieve_k: usize,
    pub lexical_k: usize,
    pub relevance_margin: f32,
    pub relevance_floor: f32,
    pub lexical_weight: f32,
    pub results: BTreeMap<String, JudgedMetrics>,
}

/// What scoring a query needs besides the set.
pub(crate) struct JudgedScorer<'a> {
    pub head: &'a ScoringHead,
    pub stats: &'a HistoryStats,
    pub encoder: &'a dyn TextEmbedder,
    pub budget: UserTextBudget,
    pub banding: Banding,
    /// `catalog.retrieve_k`: how many nearest items the shipped methods score.
    pub retrieve_k: usize,
    /// `catalog.lexical_k`: how many items by BM25 `shipped` and `fused` add.
    pub lexical_k: usize,
}

/// Ranks every kept query's whole catalog with every method.
pub(crate) fn evaluate(
    set: &JudgedSet,
    rule: JudgedRule,
    scorer: &JudgedScorer<'_>,
    store: &mut EmbedStore,
) -> Result<JudgedReport, JudgedError> {
    let relevant = |q: &JudgedQuery| q.gains.values().filter(|g| **g >= rule.relevant_gain).count();
    let kept: Vec<&JudgedQuery> = set.queries.iter().filter(|q| relevant(q) >= rule.min_relevant).collect();
    let lexical = LexicalIndex::build(set.texts.iter().map(String::as_str))?;
    let corpus = lexical.stats();
    // What the shipped methods search for: the query with its misspelt
    // words corrected against the catalog, as `/recommend` does.
    let searched: Vec<String> =
        kept.iter().map(|q| lexical.correct(&q.text).unwrap_or_else(|| q.text.clone())).collect();
    let user_text = |query: &str| {
        scorer.encoder.user_text(scorer.budget, UserSignals { query: Some(query), profile: None, history: &[] })
    };
    let raw_user_texts: Vec<String> =
        kept.iter().map(|q| user_text(&q.text)).collect::<Result<_, _>>().map_err(EmbedStoreError::from)?;
    let user_texts: Vec<String> =
        searched.iter().map(|q| user_text(q)).collect::<Result<_, _>>().map_err(EmbedStoreError::from)?;
    let mut texts: Vec<&str> = set.texts.iter().map(String::as_str).collect();
    texts.extend(kept.iter().map(|q| q.text.as_str()));
    texts.extend(searched.iter().map(String::as_str));
    texts.extend(raw_user_texts.iter().map(String::as_str));
    texts.extend(user_texts.iter().map(String::as_str));
    store.embed_all(scorer.encoder, &texts, "judged catalog and queries")?;
    let items: Vec<&[f32]> = set.texts.iter().map(|t| store.get(t)).collect();

    let mut per_method: BTreeMap<&str, Vec<(f64, f64, f64)>> = BTreeMap::new();
    for (i, query) in kept.iter().enumerate() {
        let mut record = |method: &'static str, ranked: &[usize], took_ms: f64| {
            let measures = (ndcg10(ranked, &query.gains), recall(ranked, query, rule.relevant_gain), took_ms);
            per_method.entry(method).or_default().push(measures);
        };
        // The simple methods, on the query as typed.
        let started = Instant::now();
        let cosines: Vec<f32> = items.iter().map(|v| cosine(store.get(&query.text), v)).collect();
        let dense = top_by(&cosines, DEPTH.max(scorer.retrieve_k));
        record("cosine", &dense[..DEPTH.min(dense.len())], ms(started));

        let started = Instant::now();
        let hits = lexical.search(&LexicalQuery::new(&query.text, &corpus), DEPTH)?;
        let bm25: Vec<usize> = hits.iter().map(|&(p, _)| p as usize).collect();
        record("bm25", &bm25, ms(started));

        let started = Instant::now();
        record("rrf", &fuse(&[&dense[..DEPTH.min(dense.len())], &bm25]), ms(started));

        // `matches[i]`: how `pool[i]`'s text matches the query's words.
        let head_order =
            |user_text: &str, query: &str, pool: &[usize], matches: &[LexicalMatch], relevances: &[f32]| {
                let context = UserContext::new(scorer.stats, store.get(user_text).to_vec(), &[], &[])
                    .with_query(store.get(query).to_vec());
                let inputs: Vec<CandidateInput<'_>> = pool
                    .iter()
                    .zip(matches)
                    .map(|(&p, &lexical)| CandidateInput { position: None, embedding: items[p], price: None, lexical })
                    .collect();
                let probabilities = scoring::score(scorer.head, scorer.stats, &context, &inputs)?;
                let keys = relevance::banded_keys(&probabilities, relevances, scorer.banding);
                Ok::<_, JudgedError>(top_by(&keys, DEPTH).into_iter().map(|i| pool[i]).collect::<Vec<usize>>())
            };

        // Before lexical search: the nearest, in bands of query cosine.
        let started = Instant::now();
        let pool = &dense[..scorer.retrieve_k.min(dense.len())];
        let pool_cosines: Vec<f32> = pool.iter().map(|&p| cosines[p]).collect();
        // As a service with `catalog.lexical_index = false` weighs the
        // nearest items' words: among themselves, the query uncorrected.
        let pool_texts: Vec<&str> = pool.iter().map(|&p| set.texts[p].as_str()).collect();
        let pool_matches = lexical::score_among(&query.text, &pool_texts);
        let pool_bm25: Vec<f32> = pool_matches.iter().map(|m| m.bm25).collect();
        let pool_relevances = scorer.banding.relevance(&pool_cosines, &pool_bm25);
        let dense_shipped = head_order(&raw_user_texts[i], &query.text, pool, &pool_matches, &pool_relevances)?;
        record("dense-shipped", &dense_shipped, ms(started));

        // Shipped: the corrected query; the union of its nearest and its
        // best by BM25, nearest first, in bands of fused relevance.
        let started = Instant::now();
        let searched = searched[i].as_str();
        let cosines: Vec<f32> = if searched == query.text {
            cosines
        } else {
            items.iter().map(|v| cosine(store.get(searched), v)).collect()
        };
        let mut hybrid = top_by(&cosines, scorer.retrieve_k);
        let words = LexicalQuery::new(searched, &corpus);
        let mut in_pool: std::collections::HashSet<usize> = hybrid.iter().copied().collect();
        let lexical_hits = lexical.search(&words, scorer.lexical_k)?;
        hybrid.extend(lexical_hits.iter().map(|&(p, _)| p as usize).filter(|p| in_pool.insert(*p)));
        let hybrid_cosines: Vec<f32> = hybrid.iter().map(|&p| cosines[p]).collect();
        let hybrid_matches: Vec<LexicalMatch> =
            hybrid.iter().map(|&p| lexical::score(&words, &set.texts[p], &corpus)).collect();
        let hybrid_bm25: Vec<f32> = hybrid_matches.iter().map(|m| m.bm25).collect();
        let relevances = scorer.banding.relevance(&hybrid_cosines, &hybrid_bm25);
        let fusing_ms = ms(started);
        let started = Instant::now();
        let fused: Vec<usize> = top_by(&relevances, DEPTH).into_iter().map(|i| hybrid[i]).collect();
        record("fused", &fused, fusing_ms + ms(started));
        let started = Instant::now();
        let shipped = head_order(&user_texts[i], searched, &hybrid, &hybrid_matches, &relevances)?;
        record("shipped", &shipped, fusing_ms + ms(started));
    }
    let results = per_method
        .into_iter()
        .map(|(method, all)| {
            let n = all.len().max(1) as f64;
            let sum = |f: fn(&(f64, f64, f64)) -> f64| all.iter().map(f).sum::<f64>() / n;
            (
                method.to_string(),
                JudgedMetrics { ndcg10: sum(|m| m.0), recall100: sum(|m| m.1), ms_per_query: sum(|m| m.2) },
            )
        })
        .collect();
    Ok(JudgedReport {
        catalog_items: set.ids.len(),
        queries_judged: set.queries.len(),
        queries: kept.len(),
        rule,
        retrieve_k: scorer.retrieve_k,
        lexical_k: scorer.lexical_k,
        relevance_margin: scorer.banding.margin,
        relevance_floor: scorer.banding.floor,
        lexical_weight: scorer.banding.lexical_weight,
        results,
    })
}

fn ms(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1e3
}

/// Positions of the `k` largest scores, best first (ties: lower position).
fn top_by(scores: &[f32], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    let by_score = |a: &usize, b: &usize| scores[*b].total_cmp(&scores[*a]).then(a.cmp(b));
    if order.len() > k && k > 0 {
        order.select_nth_unstable_by(k - 1, by_score);
        order.truncate(k);
    }
    order.sort_by(by_score);
    order.truncate(k);
    order
}

/// Reciprocal-rank fusion of ranked lists: `Σ 1/(RRF_K + rank)`, ranks
/// from 1; the first `DEPTH`, best first (ties: lower position).
fn fuse(lists: &[&[usize]]) -> Vec<usize> {
    let mut fused: HashMap<usize, f32> = HashMap::new();
    for list in lists {
        for (rank, &p) in list.iter().enumerate() {
            *fused.entry(p).or_default() += 1.0 / (RRF_K + rank as f32 + 1.0);
        }
    }
    let mut ranked: Vec<(usize, f32)> = fused.into_iter().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    ranked.into_iter().take(DEPTH).map(|(p, _)| p).collect()
}

/// NDCG@10 with linear gains; 0 for a query with no positive gain.
fn ndcg10(ranked: &[usize], gains: &HashMap<usize, f32>) -> f64 {
    let discount = |i: usize| 1.0 / ((i + 2) as f64).log2();
    let dcg: f64 = ranked
        .iter()
        .take(10)
        .enumerate()
        .map(|(i, p)| gains.get(p).copied().unwrap_or(0.0) as f64 * discount(i))
        .sum();
    let mut ideal: Vec<f32> = gains.values().copied().collect();
    ideal.sort_by(|a, b| b.total_cmp(a));
    let idcg: f64 = ideal.iter().take(10).enumerate().map(|(i, g)| *g as f64 * discount(i)).sum();
    if idcg > 0.0 {
        dcg / idcg
    } else {
        0.0
    }
}

/// The share of the query's relevant items in `ranked`.
fn recall(ranked: &[usize], query: &JudgedQuery, relevant_gain: f32) -> f64 {
    let relevant: Vec<usize> = query.gains.iter().filter(|(_, g)| **g >= relevant_gain).map(|(p, _)| *p).collect();
    if relevant.is_empty() {
        return 0.0;
    }
    relevant.iter().filter(|p| ranked.contains(p)).count() as f64 / relevant.len() as f64
}

/// The report as a table: one row per method.
pub(crate) fn format_judged_table(report: &JudgedReport) -> String {
    let mut out = format!(
        "judged search: {} of {} queries (>= {} items of gain >= {}), over {} catalog items; \
         shipped scores the {} nearest and the {} best by BM25, relevance_margin {}, floor {}, lexical_weight {}\n\
         {:<14} {:>8} {:>11} {:>12}\n",
        report.queries,
        report.queries_judged,
        report.rule.min_relevant,
        report.rule.relevant_gain,
        report.catalog_items,
        report.retrieve_k,
        report.lexical_k,
        report.relevance_margin,
        report.relevance_floor,
        report.lexical_weight,
        "method",
        "NDCG@10",
        "Recall@100",
        "ms/query"
    );
    for method in JUDGED_METHODS {
        if let Some(m) = report.results.get(method) {
            out.push_str(&format!("{method:<14} {:>8.4} {:>11.4} {:>12.2}\n", m.ndcg10, m.recall100, m.ms_per_query));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ndcg_uses_linear_gains_over_the_judged_ideal() {
        let gains: HashMap<usize, f32> = [(1, 2.0), (2, 1.0), (3, 0.0)].into_iter().collect();
        assert!((ndcg10(&[1, 2, 3], &gains) - 1.0).abs() < 1e-12);
        let swapped = (1.0 + 2.0 / 3f64.log2()) / (2.0 + 1.0 / 3f64.log2());
        assert!((ndcg10(&[2, 1], &gains) - swapped).abs() < 1e-12);
        assert_eq!(ndcg10(&[7, 8], &gains), 0.0, "unjudged items gain nothing");
    }

    #[test]
    fn rrf_sums_reciprocal_ranks_and_recall_counts_relevant_items() {
        assert_eq!(fuse(&[&[1, 2, 3], &[3, 4]]), vec![3, 1, 2, 4]);
        let query = JudgedQuery { text: "q".into(), gains: [(1, 2.0), (5, 2.0), (6, 1.0)].into_iter().collect() };
        assert_eq!(recall(&[1, 6, 7], &query, 2.0), 0.5);
        assert_eq!(top_by(&[0.1, 0.9, 0.5, 0.9], 3), vec![1, 3, 2]);
    }

    #[test]
    fn the_judged_set_reads_and_names_bad_lines() {
        let dir = std::env::temp_dir().join(format!("shoprank-judged-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("items.csv"), "item_id,text\na,red mug\nb,blue lamp\n").unwrap();
        std::fs::write(dir.join("judgements.csv"), "query,item_id,gain\nmug,a,2\nmug,b,0\nlamp,b,1\nmug,a,1\n")
            .unwrap();
        let set = load(&dir).unwrap();
        assert_eq!(set.ids, ["a", "b"]);
        assert_eq!(set.queries.len(), 2);
        assert_eq!(set.queries[0].gains[&0], 2.0, "a pair judged twice keeps its larger gain");
        std::fs::write(dir.join("judgements.csv"), "query,item_id,gain\nmug,zz,2\n").unwrap();
        let err = load(&dir).unwrap_err().to_string();
        assert!(err.contains("judgements.csv, line 2") && err.contains("\"zz\""), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
