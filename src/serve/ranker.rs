//! Ranking: a validated query and a bundle in, candidates ordered by
//! predicted purchase probability out. Synchronous and HTTP-free; the API
//! runs it on the blocking pool. The [`Ranker`] is the long-lived part (the
//! embedder with its encoder thread and cache); the bundle is passed to each
//! call, so a request is scored by exactly one bundle even while another is
//! being installed.
//!
//! A request's candidates are the ones it sent, or (without any) those
//! retrieved from the catalog (`retrieve`); the request's filter applies to
//! both. After scoring, `diversity` λ > 0 re-orders the top by maximal
//! marginal relevance, and `explain` attaches each returned item's reasons
//! (`model::explain`).

use std::sync::Arc;

use crate::config::{Settings, UserTextBudget};
use crate::model::bundle::Bundle;
use crate::model::encoder::cosine;
use crate::model::encoder::TokenizedText;
use crate::model::explain::{self, ReasonKind};
use crate::model::features::{self, CandidateInput, UserContext, HISTORY_COPURCHASE_ITEMS};
use crate::model::relevance::{self, Banding};
use crate::model::scoring::ScoringInputs;
use crate::model::stats::{HistoryStats, ItemPos};
use crate::model::user_text::{self, IdJoin, UserSignals};
use crate::serve::batcher::{EmbedError, EmbedJob, Embedder, Pending, Ticket};
use crate::serve::cache::Embedding;
use crate::serve::catalog::index::ItemFilter;
use crate::serve::catalog::Catalog;
use crate::serve::metrics::Metrics;
use crate::serve::retrieve::{self, RetrievalLimits};
use crate::serve::title_tokens::TitleTokenCache;

/// An item the user bought or viewed. `id` (when it matches the history
/// statistics) enables the co-purchase features; else the title is matched.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryItem {
    pub id: Option<String>,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub id: String,
    pub text: String,
    pub price: Option<f32>,
    pub available: bool,
}

/// A request after validation: every field is within the documented limits.
#[derive(Debug, Clone, PartialEq)]
pub struct RankQuery {
    pub query: Option<String>,
    pub profile: Option<String>,
    /// Most recent first.
    pub history: Vec<HistoryItem>,
    /// The caller's candidates; `None`: retrieve from the catalog.
    pub candidates: Option<Vec<Candidate>>,
    pub top_k: usize,
    pub filter: ItemFilter,
    /// Maximal-marginal-relevance weight λ in [0, 1]; 0 ranks by score alone.
    pub diversity: f32,
    pub explain: bool,
}

impl RankQuery {
    /// A query over given candidates with the default options.
    pub fn new(query: Option<String>, history: Vec<HistoryItem>, candidates: Vec<Candidate>, top_k: usize) -> Self {
        Self {
            query,
            profile: None,
            history,
            candidates: Some(candidates),
            top_k,
            filter: ItemFilter { available_only: true, ..ItemFilter::default() },
            diversity: 0.0,
            explain: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct RankedItem {
    pub id: String,
    pub score: f32,
    pub rank: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explanation: Option<Explanation>,
}

/// Why an item scored what it did (see `model::explain`):
/// `score = baseline + Σ reasons' contributions + unlisted`, exactly;
/// `reasons` lists the groups that raised the score, largest first.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Explanation {
    /// The score of this pair with every item feature at its training mean.
    pub baseline: f32,
    pub reasons: Vec<Reason>,
    /// What the groups not listed add up to (those that lowered the score,
    /// or raised it by under 5% of the listed ones' total).
    pub unlisted: f32,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Reason {
    pub kind: ReasonKind,
    pub text: String,
    /// Change in purchase probability this reason accounts for.
    pub contribution: f32,
    /// The history items behind it (bought together with, similar to).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history_ids: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RankError {
    #[error(transparent)]
    Embed(#[from] EmbedError),
    #[error("scoring failed: {0}")]
    Model(#[from] candle_core::Error),
    #[error("tokenization failed: {0}")]
    Encoder(#[from] crate::model::encoder::EncoderError),
    #[error("bundle {bundle} scored the warm-up request {score:?}, not a probability in [0, 1]")]
    BadScore { bundle: String, score: Option<f32> },
    #[error("the request has no candidates and this service keeps no catalog")]
    NoCatalog,
}

/// The user's side of a request, embedded.
struct UserSide {
    vector: Embedding,
    query: Option<Embedding>,
    /// The first `HISTORY_FEATURE_ITEMS` history items' embeddings.
    history: Vec<Embedding>,
    /// Positions of every history item in the bundle's statistics.
    positions: Vec<Option<ItemPos>>,
}

/// A candidate ready to score.
struct Pooled {
    id: String,
    price: Option<f32>,
    embedding: Embedding,
}

/// The embedder and the user-text budget, built once at start-up.
pub struct Ranker {
    embedder: Arc<Embedder>,
    budget: UserTextBudget,
    retrieval: RetrievalLimits,
    /// `search.relevance_margin` and `relevance_floor` (see `model::relevance`).
    banding: Banding,
    metrics: Metrics,
    /// How the user text's and the query's ids are made from the parts'
    /// (see `user_text::IdJoin`); `None`: the encoder tokenizes them again.
    join: Option<IdJoin>,
    /// Recent history titles' tokens, for composing user texts.
    titles: TitleTokenCache,
}

impl Ranker {
    /// The ranker over `embedder`, with the user-text budget, retrieval
    /// limits, relevance banding and title-token cache of `settings`.
    pub fn new(embedder: Arc<Embedder>, settings: &Settings, metrics: Metrics) -> Self {
        let encoder = embedder.encoder();
        let join = IdJoin::new(encoder.tokenizer(), encoder.max_seq_len());
        if join.is_none() {
            tracing::info!(encoder = encoder.name(), "this tokenizer is not BERT's: user texts are tokenized twice");
        }
        let titles = TitleTokenCache::new(settings.cache.title_tokens_max_bytes, metrics.clone());
        Self {
            embedder,
            budget: settings.user_text,
            retrieval: RetrievalLimits::from_settings(&settings.catalog),
            banding: Banding::from_settings(&settings.search),
            metrics,
            join,
            titles,
        }
    }

    pub fn embedder(&self) -> &Embedder {
        &self.embedder
    }

    /// The embedder, shared (catalog ingestion embeds through it too).
    pub fn shared_embedder(&self) -> Arc<Embedder> {
        self.embedder.clone()
    }

    /// The user text the encoder sees for this query (see `user_text`).
    pub fn user_text(&self, query: &RankQuery) -> Result<String, RankError> {
        Ok(self.user_text_and_tokens(query)?.0)
    }

    /// The user text, and with it (where the tokenizer allows, see
    /// `IdJoin`) the tokens of the user text and of the query alone.
    /// The tokens are in `begin`'s order of texts: the user text's, then
    /// the query's (if the request has a query).
    fn user_text_and_tokens(&self, query: &RankQuery) -> Result<(String, Vec<Option<TokenizedText>>), RankError> {
        let titles: Vec<&str> = query.history.iter().map(|h| h.text.as_str()).collect();
        let encoder = self.embedder.encoder();
        let signals =
            UserSignals { query: query.query.as_deref(), profile: query.profile.as_deref(), history: &titles };
        let (tokenizer, window) = (encoder.tokenizer(), encoder.max_seq_len());
        let Some(join) = &self.join else {
            return Ok((user_text::compose(tokenizer, self.budget, window, signals)?, Vec::new()));
        };
        let composed = user_text::compose_with_ids_from(tokenizer, join, &self.titles, self.budget, window, signals)?;
        let mut tokens = vec![Some(join.tokenized(&composed.ids))];
        if query.query.is_some() {
            tokens.push(composed.query_ids.map(|ids| join.tokenized(&ids)));
        }
        Ok((composed.text, tokens))
    }

    /// Scores the candidates (given, or retrieved from `catalog`) with
    /// `bundle` and returns the best `top_k`, best first. Equal scores keep
    /// the candidates' order. Blocks while the encoder works; the server
    /// instead runs [`Ranker::begin`], awaits the [`Pending`] vectors without
    /// holding a thread, then [`Ranker::end`].
    pub fn rank(
        &self,
        bundle: &Bundle,
        query: &RankQuery,
        catalog: Option<&Catalog>,
        ticket: &Ticket,
    ) -> Result<Vec<RankedItem>, RankError> {
        let (begun, pending) = self.begin(query.clone(), ticket)?;
        let vectors = pending.wait_blocking(ticket)?;
        self.end(bundle, begun, vectors, catalog, ticket)
    }

    /// The first half of a request, CPU only: composes the user text and
    /// puts every text the cache misses on the encoder queue (or refuses
    /// them, see `batcher`).
    pub fn begin(&self, query: RankQuery, ticket: &Ticket) -> Result<(Begun, Pending), RankError> {
        let (user_text, tokens) = self.user_text_and_tokens(&query)?;
        let given = given_candidates(&query);
        let embedded_history = &query.history[..query.history.len().min(features::HISTORY_FEATURE_ITEMS)];
        let mut texts: Vec<&str> = Vec::with_capacity(2 + embedded_history.len() + given.len());
        texts.push(&user_text);
        // The query alone, for the query features (see `features`).
        texts.extend(query.query.as_deref());
        texts.extend(embedded_history.iter().map(|h| h.text.as_str()));
        texts.extend(given.iter().map(|c| c.text.as_str()));
        let EmbedJob { out, missing, pending } = self.embedder.begin_with(&texts, tokens, ticket)?;
        Ok((Begun { query, cached: out, missing }, pending))
    }

    /// The second half, once the encoder's vectors are in: retrieval (for a
    /// request without candidates), scoring, ordering, explanations.
    pub fn end(
        &self,
        bundle: &Bundle,
        begun: Begun,
        vectors: Vec<Vec<f32>>,
        catalog: Option<&Catalog>,
        ticket: &Ticket,
    ) -> Result<Vec<RankedItem>, RankError> {
        ticket.check()?;
        let Begun { query, cached, missing } = begun;
        let embeddings = self.embedder.finish(cached, missing, vectors);
        let (user, pool) = self.user_and_pool(bundle, &query, embeddings, catalog)?;
        let query = &query;
        ticket.check()?;
        let stats = bundle.stats();
        let context = user_context(stats, &user);
        let candidates = candidate_inputs(stats, &pool);
        let (inputs, scores) = ScoringInputs::build_and_score(bundle.head(), stats, &context, &candidates)?;
        self.metrics.candidates_per_request.observe(pool.len() as f64);
        // With a query: relevance bands first, probability within a band.
        let keys = if query.query.is_some() {
            let cosines: Vec<f32> = inputs.numeric().iter().map(|n| n[features::QUERY_COSINE]).collect();
            relevance::banded_keys(&scores, &cosines, self.banding)
        } else {
            scores.clone()
        };
        let mut order: Vec<usize> = (0..keys.len()).collect();
        order.sort_by(|&a, &b| keys[b].total_cmp(&keys[a]).then(a.cmp(&b)));
        let order = if query.diversity > 0.0 {
            diversify(&order, &keys, &pool, query.diversity, query.top_k)
        } else {
            order.into_iter().take(query.top_k).collect()
        };
        order
            .into_iter()
            .enumerate()
            .map(|(rank, i)| {
                self.metrics.predicted_score.observe(scores[i] as f64);
                let explanation = if query.explain {
                    let numeric = &inputs.numeric()[i];
                    Some(explain_item(bundle, query, &user, &pool[i], numeric)?)
                } else {
                    None
                };
                Ok(RankedItem { id: pool[i].id.clone(), score: scores[i], rank: rank + 1, explanation })
            })
            .collect()
    }

    /// The numeric feature vectors this query's candidates are scored with
    /// (what `rank` feeds the head, exposed to check serving against training).
    pub fn numeric_features(&self, bundle: &Bundle, query: &RankQuery) -> Result<Vec<features::Numeric>, RankError> {
        let ticket = Ticket::detached();
        let (begun, pending) = self.begin(query.clone(), &ticket)?;
        let embeddings = self.embedder.finish(begun.cached, begun.missing, pending.wait_blocking(&ticket)?);
        let (user, pool) = self.user_and_pool(bundle, query, embeddings, None)?;
        let context = user_context(bundle.stats(), &user);
        let candidates = candidate_inputs(bundle.stats(), &pool);
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
        let stats = bundle.stats();
        let user = UserSide {
            vector: vectors.next().expect("the user text is embedded"),
            query: query.query.as_ref().map(|_| vectors.next().expect("the query is embedded")),
            history: vectors.by_ref().take(embedded_history.len()).collect(),
            positions: query
                .history
                .iter()
                .map(|h| {
                    h.id.as_deref().and_then(|id| stats.position_of_id(id)).or_else(|| stats.position_of_text(&h.text))
                })
                .collect(),
        };
        let pool = match &query.candidates {
            Some(_) => given
                .into_iter()
                .zip(vectors)
                .map(|(c, embedding)| Pooled { id: c.id.clone(), price: c.price, embedding })
                .collect(),
            None => {
                let catalog = catalog.ok_or(RankError::NoCatalog)?;
                let search = user.query.as_ref().unwrap_or(&user.vector);
                let view = catalog.index().read();
                retrieve::retrieve(&view, stats, search, &user.positions, &query.filter, self.retrieval)
                    .into_iter()
                    .map(|r| Pooled { id: r.id, price: r.price, embedding: r.embedding })
                    .collect()
            }
        };
        Ok((user, pool))
    }

    /// One full request through every part with `bundle`, so the first real
    /// request does not pay for lazy initialisation, and a bundle whose scores
    /// are not probabilities never serves.
    pub fn warm_up(&self, bundle: &Bundle) -> Result<(), RankError> {
        let mut query = RankQuery::new(
            Some("warm-up".into()),
            vec![HistoryItem { id: None, text: "warm-up history item".into() }],
            vec![Candidate { id: "warm-up".into(), text: "warm-up candidate".into(), price: None, available: true }],
            1,
        );
        query.explain = true;
        let ranked = self.rank(bundle, &query, None, &Ticket::detached())?;
        match ranked.first().map(|item| item.score) {
            Some(score) if (0.0..=1.0).contains(&score) => Ok(()),
            other => Err(RankError::BadScore { bundle: bundle.version().to_string(), score: other }),
        }
    }
}

/// The request's own candidates that pass its filter.
fn given_candidates(query: &RankQuery) -> Vec<&Candidate> {
    query.candidates.iter().flatten().filter(|c| query.filter.allows(&c.id, c.price, c.available)).collect()
}

/// A request whose texts are with the encoder (see [`Ranker::begin`]).
pub struct Begun {
    query: RankQuery,
    /// The request's embeddings found in the cache, `None` where missing.
    cached: Vec<Option<Embedding>>,
    /// Each missing text's cache key and positions.
    missing: Vec<(u128, Vec<usize>)>,
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
fn candidate_inputs<'a>(stats: &HistoryStats, pool: &'a [Pooled]) -> Vec<CandidateInput<'a>> {
    pool.iter()
        .map(|c| CandidateInput { position: stats.position_of_id(&c.id), embedding: &c.embedding, price: c.price })
        .collect()
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

/// Contributions below this share of the score's upward deviation are not
/// listed as reasons.
const MIN_REASON_SHARE: f32 = 0.05;

/// The item's reasons: the attribution's positive contributions, worded
/// with the inputs behind them.
fn explain_item(
    bundle: &Bundle,
    query: &RankQuery,
    user: &UserSide,
    item: &Pooled,
    numeric: &features::Numeric,
) -> Result<Explanation, RankError> {
    let held: &[ReasonKind] = if user.query.is_some() { &[] } else { &[ReasonKind::MatchesQuery] };
    let attribution = explain::attribute(bundle.head(), &user.vector, &item.embedding, numeric, held)?;
    let mut contributions = attribution.contributions.clone();
    if query.profile.is_none() && query.history.is_empty() {
        // The user text is the query alone: its match is the query's.
        let profile = contributions.iter().position(|c| c.kind == ReasonKind::MatchesProfile);
        let search = contributions.iter().position(|c| c.kind == ReasonKind::MatchesQuery);
        if let (Some(profile), Some(search), Some(_)) = (profile, search, &query.query) {
            contributions[search].value += std::mem::take(&mut contributions[profile].value);
        }
    }
    let upward: f32 = contributions.iter().map(|c| c.value.max(0.0)).sum();
    contributions.retain(|c| c.value > 0.0 && c.value >= MIN_REASON_SHARE * upward);
    contributions.sort_by(|a, b| b.value.total_cmp(&a.value));
    // A group whose inputs support no true sentence stays in `unlisted`.
    let reasons: Vec<Reason> = contributions
        .into_iter()
        .filter_map(|c| {
            let (kind, text, history_ids) = describe(c.kind, bundle.stats(), query, user, item)?;
            Some(Reason { kind, text, contribution: c.value, history_ids })
        })
        .collect();
    let listed: f32 = reasons.iter().map(|r| r.contribution).sum();
    let total: f32 = attribution.contributions.iter().map(|c| c.value).sum();
    Ok(Explanation { baseline: attribution.baseline, reasons, unlisted: total - listed })
}

/// How many history items a reason names at most.
const REASON_HISTORY_ITEMS: usize = 2;

/// A feature group's contribution as a reason a shopper can read: its kind
/// (a new product's purchase-history group is `NewProduct`, not `Popular`),
/// its words and the history items it rests on. `None` when nothing true of
/// this item and request can be said for the group (no co-purchase link, no
/// history, no known price): its share then stays in `unlisted`. Each text
/// states only what the request and the statistics hold; the README's
/// explanation section lists the conditions.
fn describe(
    kind: ReasonKind,
    stats: &HistoryStats,
    query: &RankQuery,
    user: &UserSide,
    item: &Pooled,
) -> Option<(ReasonKind, String, Vec<String>)> {
    let history_id = |i: usize| {
        let h = &query.history[i];
        h.id.clone().or_else(|| user.positions[i].map(|p| stats.item(p).id.clone())).unwrap_or_default()
    };
    let titles = |items: &[usize]| items.iter().map(|&i| format!("\"{}\"", query.history[i].text)).collect::<Vec<_>>();
    let (text, ids) = match kind {
        ReasonKind::MatchesQuery => (format!("matches your search \"{}\"", query.query.as_deref()?), vec![]),
        ReasonKind::BoughtTogether => {
            let links = bought_together_with(stats, user, item);
            if links.is_empty() {
                return None;
            }
            let text = format!("bought together with {}", titles(&links).join(" and "));
            (text, links.into_iter().map(history_id).filter(|id| !id.is_empty()).collect())
        }
        ReasonKind::SimilarToHistory => {
            let closest = user
                .history
                .iter()
                .enumerate()
                .map(|(i, v)| (i, cosine(v, &item.embedding)))
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .map(|(i, _)| i)?;
            let ids = Some(history_id(closest)).filter(|id| !id.is_empty()).into_iter().collect();
            (format!("similar to {}", titles(&[closest])[0]), ids)
        }
        ReasonKind::Popular | ReasonKind::NewProduct => {
            let Some(s) = stats.position_of_id(&item.id).map(|p| stats.item(p)).filter(|s| s.buyers > 0) else {
                return Some((ReasonKind::NewProduct, "new in the catalog".to_string(), vec![]));
            };
            let text = match (s.week_buyers, s.recent_buyers, s.buyers) {
                (week, _, _) if week > 0 => format!("popular this week ({week} {})", buyers(week)),
                (_, month, _) if month > 0 => format!("popular this month ({month} {})", buyers(month)),
                (_, _, ever) => format!("bought by {ever} {}", if ever == 1 { "customer" } else { "customers" }),
            };
            (text, vec![])
        }
        ReasonKind::MatchesProfile => {
            if query.profile.is_none() && query.history.is_empty() {
                return None;
            }
            ("matches your interests".to_string(), vec![])
        }
        ReasonKind::Price => {
            let known = stats.position_of_id(&item.id).and_then(|p| stats.item(p).price);
            let price = item.price.filter(|p| p.is_finite() && *p > 0.0).or(known)?;
            (format!("its price ({price:.2})"), vec![])
        }
    };
    Some((kind, text, ids))
}

fn buyers(n: u32) -> &'static str {
    if n == 1 {
        "buyer"
    } else {
        "buyers"
    }
}

/// History items (indices into the request's history) whose co-purchase or
/// EASE links reach `item`, strongest first.
fn bought_together_with(stats: &HistoryStats, user: &UserSide, item: &Pooled) -> Vec<usize> {
    let Some(target) = stats.position_of_id(&item.id) else { return Vec::new() };
    let mut links: Vec<(usize, f32)> = user
        .positions
        .iter()
        .take(HISTORY_COPURCHASE_ITEMS)
        .enumerate()
        .filter_map(|(i, p)| {
            let s = stats.item((*p)?);
            let w: f32 = s.neighbours.iter().chain(&s.recent_ease).filter(|(n, _)| *n == target).map(|(_, w)| w).sum();
            (w > 0.0).then_some((i, w))
        })
        .collect();
    links.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    links.into_iter().take(REASON_HISTORY_ITEMS).map(|(i, _)| i).collect()
}
