//! A degraded answer: the ranking of a request whose texts the encoder
//! cannot embed before its deadline (or whose texts it refused: a full
//! queue, a backlog longer than the time left), made from what needs no new
//! forward pass. The API answers it `200` with `"degraded": true`.
//!
//! - The user vector is the composed user text's, if the embedding cache
//!   holds it (the same shopper again: nothing is lost); else the
//!   L2-normalised mean of the history items' embeddings that are at hand
//!   (`features::mean_of_history`: the cache by title, else the catalog's
//!   vector by id); else the search query's, if cached. Without any, it is
//!   the zero vector: the head's text-similarity features are then 0 for
//!   every candidate, and the order follows what the head reads from the
//!   statistics (co-purchase and recent-purchase links of the history,
//!   popularity, price) and, with a query, the lexical match.
//! - The search query's own vector is used if cached; else the query features
//!   see no query vector, and relevance rests on BM25.
//! - Candidates: retrieval from the catalog as usual (the catalog stores its
//!   items' vectors), the nearest-neighbour source only when there is a user
//!   or query vector; or the request's own candidates, each with its vector
//!   if at hand (the cache by text, else the catalog's by id), else the zero
//!   vector. Those are kept rather than dropped: the storefront chose them,
//!   and without text features they are still ordered by what the head
//!   reads from the statistics (an id the bundle knows), their price and,
//!   with a query, their lexical match (BM25 over the candidates' own
//!   texts), which needs no encoder. Under overload a storefront thus gets
//!   its own candidates back in a considered order rather than nothing.
//! - Then the head scores and orders them as in any answer (`finish`), so
//!   bands, facets and explanations keep their meaning; the score of a
//!   candidate without a vector is the head's guess without its text, less
//!   reliable than a full answer's (the answer says `degraded`).
//!
//! `None` when nothing can be ranked: no candidate passes the request's
//! filter, or (without candidates) the catalog retrieves nothing. The API
//! then answers with no items, degraded.

use crate::model::bundle::Bundle;
use crate::model::features;
use crate::serve::cache::Embedding;
use crate::serve::catalog::Catalog;
use crate::serve::embed::Ticket;

use super::pipeline::{given_candidates, history_positions, Begun, UserSide};
use super::{Candidate, RankError, Ranker, Ranking};

impl Ranker {
    /// The degraded answer to `begun` (see the module doc), or `None` when
    /// nothing can be ranked without the encoder. CPU only, no waiting.
    pub(crate) fn degraded(
        &self,
        bundle: &Bundle,
        begun: Begun,
        catalog: Option<&Catalog>,
        ticket: &Ticket,
    ) -> Result<Option<Ranking>, RankError> {
        ticket.check()?;
        let Begun { query, corrected_query, user_text } = begun;
        let cached = |text: &str| self.embedder.cached(text);
        let given = given_candidates(&query);
        // Every vector at hand, read under one view of the catalog, which is
        // released before retrieval takes its own.
        let view = catalog.map(|c| c.index().read());
        let stored = |id: Option<&str>| -> Option<Embedding> {
            let (_, vector) = view.as_ref()?.get(id?)?;
            vector.map(|v| Embedding::from(v.to_vec()))
        };
        let history: Vec<(usize, Embedding)> = query
            .history
            .iter()
            .enumerate()
            .filter_map(|(i, h)| cached(&h.text).or_else(|| stored(h.id.as_deref())).map(|v| (i, v)))
            .collect();
        // A candidate without a vector at hand stays, with the zero vector:
        // the caller chose it, and its statistics, price and lexical match
        // still order it (see the module doc).
        let zero: Embedding = Embedding::from(vec![0.0; self.embedder.encoder().dim()]);
        let given: Option<Vec<(&Candidate, Embedding)>> = query.candidates.as_ref().map(|_| {
            given
                .into_iter()
                .map(|c| (c, cached(&c.text).or_else(|| stored(Some(&c.id))).unwrap_or_else(|| zero.clone())))
                .collect()
        });
        drop(view);
        if given.as_ref().is_some_and(Vec::is_empty) {
            return Ok(None);
        }
        let query_vector = query.search.as_deref().and_then(cached);
        let vector = cached(&user_text)
            .or_else(|| features::mean_of_history(history.iter().map(|(_, v)| &v[..])).map(Embedding::from))
            .or_else(|| query_vector.clone());
        let search = query_vector.clone().or_else(|| vector.clone());
        let featured: Vec<&(usize, Embedding)> =
            history.iter().filter(|(i, _)| *i < features::HISTORY_FEATURE_ITEMS).collect();
        let user = UserSide {
            vector: vector.unwrap_or(zero),
            query: query_vector,
            history: featured.iter().map(|(_, v)| v.clone()).collect(),
            history_items: featured.iter().map(|(i, _)| *i).collect(),
            positions: history_positions(bundle, &query),
        };
        let pool = self.pool(bundle, &query, &user, given, search.as_deref(), catalog, self.retrieval)?;
        if pool.is_empty() {
            return Ok(None);
        }
        self.finish(bundle, &query, &user, &pool, corrected_query, ticket).map(Some)
    }
}
