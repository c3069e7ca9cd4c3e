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
//!
//! One job per file: `request` (the query and answer types), `pipeline`
//! (begin/end/rank: embedding, retrieval, scoring, ordering, diversity),
//! `degraded` (the answer without the encoder, when a request's deadline
//! passes first) and `explain_text` (the explanations' wording).

mod degraded;
mod explain_text;
mod pipeline;
mod request;

use std::sync::Arc;

use crate::config::{Settings, UserTextBudget};
use crate::model::bundle::Bundle;
use crate::model::encoder::TokenizedText;
use crate::model::relevance::Banding;
use crate::model::user_text::{self, IdJoin, UserSignals};
use crate::serve::embed::{EmbedError, Embedder, Ticket};
use crate::serve::metrics::Metrics;
use crate::serve::retrieve::RetrievalLimits;
use crate::serve::title_tokens::TitleTokenCache;

pub use self::request::{Candidate, HistoryItem, Objective, RankQuery};
pub(crate) use self::request::{Explanation, RankedItem, Ranking, Reason};

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
            UserSignals { query: query.search.as_deref(), profile: query.profile.as_deref(), history: &titles };
        let (tokenizer, window) = (encoder.tokenizer(), encoder.max_seq_len());
        let Some(join) = &self.join else {
            return Ok((user_text::compose(tokenizer, self.budget, window, signals)?, Vec::new()));
        };
        let composed = user_text::compose_with_ids_from(tokenizer, join, &self.titles, self.budget, window, signals)?;
        let mut tokens = vec![Some(join.tokenized(&composed.ids))];
        if query.search.is_some() {
            tokens.push(composed.query_ids.map(|ids| join.tokenized(&ids)));
        }
        Ok((composed.text, tokens))
    }

    /// One full request through every part with `bundle`, so the first real
    /// request does not pay for lazy initialisation, and a bundle whose scores
    /// are not probabilities never serves.
    pub(crate) fn warm_up(&self, bundle: &Bundle) -> Result<(), RankError> {
        let mut query = RankQuery::new(
            Some("warm-up".into()),
            vec![HistoryItem { id: None, text: "warm-up history item".into() }],
            vec![Candidate {
                id: "warm-up".into(),
                text: "warm-up candidate".into(),
                price: None,
                available: true,
                attributes: serde_json::Value::Null,
            }],
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
