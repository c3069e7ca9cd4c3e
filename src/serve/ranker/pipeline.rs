//! The ranking pipeline: one request from its texts to its ranked items.
//! [`Ranker::begin`] composes the user text and hands every text to the
//! embed job (`serve::embed`); once the vectors are in, [`Ranker::end`]
//! takes the candidates (the request's own, or retrieved from the catalog),
//! scores them with the bundle's head, orders them (relevance bands first
//! with a query, then maximal marginal relevance when `diversity` > 0) and
//! attaches the explanations (`explain_text`).

use std::borrow::Cow;

use crate::model::bundle::Bundle;
use crate::model::encoder::cosine;
use crate::model::features::{self, CandidateInput, UserContext};
use crate::model::lexical::{self, LexicalMatch, LexicalQuery};
use crate::model::relevance;
use crate::model::scoring::ScoringInputs;
use crate::model::stats::{HistoryStats, ItemPos};
use crate::serve::cache::Embedding;
use crate::serve::catalog::attributes;
use crate::serve::catalog::index::lexical_text;
use crate::serve::catalog::Catalog;
use crate::serve::embed::{EmbedError, EmbedJob, Embedded, Ticket};
use crate::serve::retrieve::{self, LexicalSearch, RetrievalLimits};

use super::explain_text::explain_item;
use super::{Candidate, Objective, RankError, RankQuery, RankedItem, Ranker, Ranking};

/// The user's side of a request, embedded.
pub(super) struct UserSide {
    pub(super) vector: Embedding,
    pub(super) query: Option<Embedding>,
    /// The first `HISTORY_FEATURE_ITEMS` history items' embeddings (in a
    /// degraded answer, those of them available without the encoder).
    pub(super) history: Vec<Embedding>,
    /// For each of `history`, its index in the request's history.
    pub(super) history_items: Vec<usize>,
    /// Positions of every history item in the bundle's statistics.
    pub(super) positions: Vec<Option<ItemPos>>,
}

/// A candidate ready to score.
pub(super) struct Pooled {
    pub(super) id: String,
    pub(super) price: Option<f32>,
    pub(super) embedding: Embedding,
    /// How the text matches the search query's words (all 0 without one):
    /// against the catalog's statistics when retrieved (the retrieved
    /// items' own without a lexical index), the request's candidates' when
    /// given.
    pub(super) lexical: LexicalMatch,
    /// The item's attributes when the request asks for facets, else `null`.
    pub(super) attributes: serde_json::Value,
}

impl Ranker {
    /// Scores the candidates (given, or retrieved from `catalog`) with
    /// `bundle` and returns the best `top_k`, best first. Equal scores keep
    /// the candidates' order. Blocks while the encoder works; the server
    /// instead runs [`Ranker::begin`], awaits the [`EmbedJob`] without
    /// holding a thread, then [`Ranker::end`].
    pub fn rank(
        &self,
        bundle: &Bundle,
        query: &RankQuery,
        catalog: Option<&Catalog>,
        ticket: &Ticket,
    ) -> Result<Vec<RankedItem>, RankError> {
        let (begun, job) = self.begin(query.clone(), catalog, ticket)?;
        let embedded = job?.wait_blocking(ticket)?;
        Ok(self.end(bundle, begun, embedded, catalog, ticket)?.items)
    }

    /// The first half of a request, CPU only: corrects the search query's
    /// misspelt words against the catalog's terms (see
    /// `model::lexical::LexicalIndex::correct`; the rest of the request
    /// sees the corrected query), composes the user text and asks the embed
    /// job for every text's vector; the texts the cache misses go on the
    /// encoder queue (or are refused, see `serve::embed`). The request comes
    /// back whether the encoder took its texts or not: a refusal can still be
    /// answered without them (`Ranker::degraded`).
    pub(crate) fn begin(
        &self,
        mut query: RankQuery,
        catalog: Option<&Catalog>,
        ticket: &Ticket,
    ) -> Result<(Begun, Result<EmbedJob, EmbedError>), RankError> {
        let mut corrected_query = None;
        if let (Some(search), Some(catalog)) = (&query.search, catalog) {
            if let Some(corrected) = catalog.index().correct(search) {
                query.search = Some(corrected.clone());
                corrected_query = Some(corrected);
            }
        }
        let (user_text, tokens) = self.user_text_and_tokens(&query)?;
        let given = given_candidates(&query);
        let embedded_history = &query.history[..query.history.len().min(features::HISTORY_FEATURE_ITEMS)];
        let mut texts: Vec<&str> = Vec::with_capacity(2 + embedded_history.len() + given.len());
        texts.push(&user_text);
        // The query alone, for the query features (see `features`).
        texts.extend(query.search.as_deref());
        texts.extend(embedded_history.iter().map(|h| h.text.as_str()));
        texts.extend(given.iter().map(|c| c.text.as_str()));
        let job = self.embedder.begin_with(&texts, tokens, ticket);
        drop(texts);
        Ok((Begun { query, corrected_query, user_text }, job))
    }

    /// The second half, once the encoder's vectors are in: retrieval (for a
    /// request without candidates), scoring, ordering, facets, explanations.
    pub(crate) fn end(
        &self,
        bundle: &Bundle,
        begun: Begun,
        embedded: Embedded,
        catalog: Option<&Catalog>,
        ticket: &Ticket,
    ) -> Result<Ranking, RankError> {
        ticket.check()?;
        let Begun { query, corrected_query, .. } = begun;
        let embeddings = embedded.into_vectors();
        let (user, pool) = self.user_and_pool(bundle, &query, embeddings, catalog)?;
        self.finish(bundle, &query, &user, &pool, corrected_query, ticket)
    }

    /// Scoring, ordering, facets and explanations of `pool` for `user`:
    /// the end of every answer, degraded or not.
    pub(super) fn finish(
        &self,
        bundle: &Bundle,
        query: &RankQuery,
        user: &UserSide,
        pool: &[Pooled],
        corrected_query: Option<String>,
        ticket: &Ticket,
    ) -> Result<Ranking, RankError> {
        let (user, pool) = (user, pool);
        ticket.check()?;
        let stats = bundle.stats();
        let context = user_context(stats, user);
        let candidates = candidate_inputs(stats, user, pool);
        let (inputs, scores) = ScoringInputs::build_and_score(bundle.head(), stats, &context, &candidates)?;
        self.metrics.candidates_per_request.observe(pool.len() as f64);
        let values_of_purchase = match query.objective {
            Objective::Conversion => None,
            Objective::Revenue => Some(purchase_values(stats, pool)),
        };
        // What the order maximises within a band, scaled into [0, 1] (the
        // bands and the diversity trade-off expect a probability's range).
        let values = match &values_of_purchase {
            Some(purchase) => scaled_revenue(&scores, purchase),
            None => scores.clone(),
        };
        // With a query: relevance bands first, the objective within a band.
        // (A degraded answer may lack the query's vector: its words decide.)
        let relevances = query.search.is_some().then(|| {
            let bm25: Vec<f32> = pool.iter().map(|c| c.lexical.bm25).collect();
            if user.query.is_none() {
                return self.banding.lexical_relevance(&bm25);
            }
            let cosines: Vec<f32> = inputs.numeric().iter().map(|n| n[features::QUERY_COSINE]).collect();
            self.banding.relevance(&cosines, &bm25)
        });
        let keys = match &relevances {
            Some(relevances) => relevance::banded_keys(&values, relevances, self.banding),
            None => values,
        };
        let facets = (!query.facets.is_empty()).then(|| {
            let unrelated = match &relevances {
                Some(relevances) => relevance::unrelated(relevances, self.banding),
                None => vec![false; pool.len()],
            };
            let relevant = pool.iter().zip(unrelated).filter(|(_, unrelated)| !unrelated).map(|(c, _)| &c.attributes);
            attributes::count_facets(&query.facets, relevant)
        });
        let mut order: Vec<usize> = (0..keys.len()).collect();
        order.sort_by(|&a, &b| keys[b].total_cmp(&keys[a]).then(a.cmp(&b)));
        let order = if query.diversity > 0.0 {
            diversify(&order, &keys, pool, query.diversity, query.top_k)
        } else {
            order.into_iter().take(query.top_k).collect()
        };
        let items = order
            .into_iter()
            .enumerate()
            .map(|(rank, i)| {
                self.metrics.predicted_score.observe(scores[i] as f64);
                let explanation = if query.explain {
                    let numeric = &inputs.numeric()[i];
                    Some(explain_item(bundle, query, user, &pool[i], numeric)?)
                } else {
                    None
                };
                let expected_revenue = values_of_purchase.as_ref().map(|values| scores[i] * values[i]);
                Ok(RankedItem {
                    id: pool[i].id.clone(),
                    score: scores[i],
                    rank: rank + 1,
                    expected_revenue,
                    explanation,
                })
            })
            .collect::<Result<_, RankError>>()?;
        Ok(Ranking { items, facets, corrected_query })
    }

    /// The numeric feature vectors this query's candidates are scored with
    /// (what `rank` feeds the head, exposed to check serving against training).
    pub fn numeric_features(&self, bundle: &Bundle, query: &RankQuery) -> Result<Vec<features::Numeric>, RankError> {
        let ticket = Ticket::detached();
        let (_, job) = self.begin(query.clone(), None, &ticket)?;
        let embeddings = job?.wait_blocking(&ticket)?.into_vectors();
        let (user, pool) = self.user_and_pool(bundle, query, embeddings, None)?;
        let context = user_context(bundle.stats(), &user);
        let candidates = candidate_inputs(bundle.stats(), &user, &pool);
        Ok(ScoringInputs::build(bundle.stats(), &context, &candidates)?.numeric().to_vec())
    }

    /// Gathers the user's side and the candidates from the request's
    /// embeddings (in `begin`'s order): the given candidates, embedded in
    /// the same encoder round trip, or those retrieved from the catalog.
    fn user_and_pool(
        &self,
        bundle: &Bundle,
        query: &RankQuery,
        embeddings: Vec<Embedding>,
        catalog: Option<&Catalog>,
    ) -> Result<(UserSide, Vec<Pooled>), RankError> {
        let given = given_candidates(query);
        let embedded_history = &query.history[..query.history.len().min(features::HISTORY_FEATURE_ITEMS)];
        let mut vectors = embeddings.into_iter();
        let user = UserSide {
            vector: vectors.next().expect("the user text is embedded"),
            query: query.search.as_ref().map(|_| vectors.next().expect("the query is embedded")),
            history: vectors.by_ref().take(embedded_history.len()).collect(),
            history_items: (0..embedded_history.len()).collect(),
            positions: history_positions(bundle, query),
        };
        let given = query.candidates.as_ref().map(|_| given.into_iter().zip(vectors).collect());
        let search = user.query.as_ref().unwrap_or(&user.vector).clone();
        let pool = self.pool(bundle, query, &user, given, Some(&search), catalog, self.retrieval)?;
        Ok((user, pool))
    }

    /// The candidates to score: `given` (the request's own, with their
    /// vectors), or else those retrieved from the catalog, the nearest to
    /// `search` among them (none without a vector).
    // The arguments are what the two kinds of answer differ in.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn pool(
        &self,
        bundle: &Bundle,
        query: &RankQuery,
        user: &UserSide,
        given: Option<Vec<(&Candidate, Embedding)>>,
        search: Option<&[f32]>,
        catalog: Option<&Catalog>,
        mut limits: RetrievalLimits,
    ) -> Result<Vec<Pooled>, RankError> {
        let faceted = !query.facets.is_empty();
        let stats = bundle.stats();
        Ok(match given {
            Some(given) => {
                // The request's candidates are the corpus their words are weighed in.
                let matches: Vec<LexicalMatch> = match &query.search {
                    Some(search) => {
                        let texts: Vec<&str> = given.iter().map(|(c, _)| c.text.as_str()).collect();
                        lexical::score_among(search, &texts)
                    }
                    None => vec![LexicalMatch::default(); given.len()],
                };
                given
                    .into_iter()
                    .zip(matches)
                    .map(|((c, embedding), lexical)| Pooled {
                        id: c.id.clone(),
                        price: c.price,
                        embedding,
                        lexical,
                        attributes: if faceted { c.attributes.clone() } else { serde_json::Value::Null },
                    })
                    .collect()
            }
            None => {
                let catalog = catalog.ok_or(RankError::NoCatalog)?;
                if search.is_none() {
                    limits.retrieve_k = 0;
                }
                let search = search.unwrap_or(&[]);
                let view = catalog.index().read();
                let corpus = query.search.as_ref().and_then(|_| view.lexical_stats());
                let words = query.search.as_deref().zip(corpus.as_ref()).map(|(s, c)| LexicalQuery::new(s, c));
                let lexical = words
                    .as_ref()
                    .zip(corpus.as_ref())
                    .map(|(query, corpus)| LexicalSearch { query, corpus: corpus as &dyn lexical::CorpusStats });
                let mut retrieved =
                    retrieve::retrieve(&view, stats, search, lexical, &user.positions, &query.filter, limits);
                if let (Some(search), None) = (&query.search, &corpus) {
                    // No lexical index (`catalog.lexical_index = false`, or
                    // one that could not open): the words are weighed among
                    // the retrieved items, as a request's own candidates are.
                    let texts: Vec<Cow<'_, str>> = retrieved
                        .iter()
                        .map(|r| view.get(&r.id).map_or(Cow::Borrowed(""), |(item, _)| lexical_text(item)))
                        .collect();
                    let texts: Vec<&str> = texts.iter().map(|t| t.as_ref()).collect();
                    for (item, matched) in retrieved.iter_mut().zip(lexical::score_among(search, &texts)) {
                        item.lexical = matched;
                    }
                }
                retrieved
                    .into_iter()
                    .map(|r| {
                        // Read under the same view the item was retrieved in.
                        let attributes = match faceted.then(|| view.get(&r.id)).flatten() {
                            Some((item, _)) => item.attributes.clone(),
                            None => serde_json::Value::Null,
                        };
                        Pooled { id: r.id, price: r.price, embedding: r.embedding, lexical: r.lexical, attributes }
                    })
                    .collect()
            }
        })
    }
}

/// Positions of every history item in the bundle's statistics (by id, else
/// by title).
pub(super) fn history_positions(bundle: &Bundle, query: &RankQuery) -> Vec<Option<ItemPos>> {
    let stats = bundle.stats();
    query
        .history
        .iter()
        .map(|h| h.id.as_deref().and_then(|id| stats.position_of_id(id)).or_else(|| stats.position_of_text(&h.text)))
        .collect()
}

/// The request's own candidates that pass its filter.
pub(super) fn given_candidates(query: &RankQuery) -> Vec<&Candidate> {
    query
        .candidates
        .iter()
        .flatten()
        .filter(|c| query.filter.allows(&c.id, c.price, c.available, &c.attributes))
        .collect()
}

/// A request whose texts are with the embed job (see [`Ranker::begin`]).
pub(crate) struct Begun {
    pub(super) query: RankQuery,
    /// The search query after typo correction, when it changed.
    pub(super) corrected_query: Option<String>,
    /// The composed user text (a degraded answer looks it up in the cache).
    pub(super) user_text: String,
}

/// The feature builder's view of the user.
fn user_context(stats: &HistoryStats, user: &UserSide) -> UserContext {
    let history: Vec<&[f32]> = user.history.iter().map(|v| &v[..]).collect();
    let context = UserContext::new(stats, user.vector.to_vec(), &user.positions, &history);
    match &user.query {
        Some(query) => context.with_query(query.to_vec()),
        None => context,
    }
}

/// The feature builder's view of the candidates.
/// The words' match goes with the query's vector: a degraded answer without
/// it has `has_query` 0, and the head never saw words matched without a
/// query (its bands still follow the words).
fn candidate_inputs<'a>(stats: &HistoryStats, user: &UserSide, pool: &'a [Pooled]) -> Vec<CandidateInput<'a>> {
    let with_words = user.query.is_some();
    pool.iter()
        .map(|c| CandidateInput {
            position: stats.position_of_id(&c.id),
            embedding: &c.embedding,
            price: c.price,
            lexical: if with_words { c.lexical } else { LexicalMatch::default() },
        })
        .collect()
}

/// What one purchase of each candidate brings, which the revenue objective
/// multiplies its probability by: the price (the request's or the
/// catalog's, else the item's median in the statistics, else the
/// statistics' median over priced items) times the item's typical quantity
/// per purchase in the statistics (1 for an item they do not know); see
/// [`Objective::Revenue`].
fn purchase_values(stats: &HistoryStats, pool: &[Pooled]) -> Vec<f32> {
    pool.iter()
        .map(|c| {
            let known = stats.position_of_id(&c.id);
            let price =
                c.price.or_else(|| known.and_then(|p| stats.item(p).price)).unwrap_or_else(|| stats.typical_price());
            price * known.map_or(1.0, |p| stats.typical_quantity(p))
        })
        .collect()
}

/// Expected revenue (probability × purchase value) divided by the largest
/// among the candidates: the same order, in [0, 1].
fn scaled_revenue(probabilities: &[f32], values: &[f32]) -> Vec<f32> {
    let revenue: Vec<f32> = probabilities.iter().zip(values).map(|(p, value)| p * value).collect();
    let best = revenue.iter().copied().fold(0f32, f32::max);
    if best > 0.0 {
        revenue.iter().map(|r| r / best).collect()
    } else {
        revenue
    }
}

/// Maximal marginal relevance: picks `k` items one at a time, each
/// maximising `(1 − λ)·score − λ·max cosine to the items already picked`.
/// `order` is the candidates by score, best first; `scores` are the sort
/// keys (relevance-banded with a query).
fn diversify(order: &[usize], scores: &[f32], pool: &[Pooled], lambda: f32, k: usize) -> Vec<usize> {
    let mut left: Vec<usize> = order.to_vec();
    let mut picked: Vec<usize> = Vec::with_capacity(k.min(left.len()));
    // Highest cosine of each remaining candidate to the picked ones.
    let mut redundancy = vec![0f32; pool.len()];
    while picked.len() < k && !left.is_empty() {
        let (best, _) = left
            .iter()
            .enumerate()
            .map(|(at, &i)| (at, (1.0 - lambda) * scores[i] - lambda * redundancy[i]))
            .fold((0, f32::NEG_INFINITY), |best, next| if next.1 > best.1 { next } else { best });
        let chosen = left.remove(best);
        for &i in &left {
            redundancy[i] = redundancy[i].max(cosine(&pool[i].embedding, &pool[chosen].embedding));
        }
        picked.push(chosen);
    }
    picked
}
