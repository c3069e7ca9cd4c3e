//! Ranking: a validated query and a bundle in, candidates ordered by
//! predicted purchase probability out. Synchronous and HTTP-free; the API
//! runs it on the blocking pool. The [`Ranker`] is the long-lived part (the
//! embedder with its encoder thread and cache); the bundle is passed to each
//! call, so a request is scored by exactly one bundle even while another is
//! being installed.

use crate::config::UserTextBudget;
use crate::model::bundle::Bundle;
use crate::model::features::{self, CandidateInput, UserContext};
use crate::model::scoring::ScoringInputs;
use crate::model::user_text::{self, UserSignals};
use crate::serve::batcher::{EmbedError, Embedder};
use crate::serve::metrics::Metrics;

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
}

/// A request after validation: every field is within the documented limits.
#[derive(Debug, Clone, PartialEq)]
pub struct RankQuery {
    pub query: Option<String>,
    pub profile: Option<String>,
    /// Most recent first.
    pub history: Vec<HistoryItem>,
    pub candidates: Vec<Candidate>,
    pub top_k: usize,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RankedItem {
    pub id: String,
    pub score: f32,
    pub rank: usize,
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
}

/// The embedder and the user-text budget, built once at start-up.
pub struct Ranker {
    embedder: Embedder,
    budget: UserTextBudget,
    metrics: Metrics,
}

impl Ranker {
    pub fn new(embedder: Embedder, budget: UserTextBudget, metrics: Metrics) -> Self {
        Self { embedder, budget, metrics }
    }

    pub fn embedder(&self) -> &Embedder {
        &self.embedder
    }

    /// The user text the encoder sees for this query (see `user_text`).
    pub fn user_text(&self, query: &RankQuery) -> Result<String, RankError> {
        let titles: Vec<&str> = query.history.iter().map(|h| h.text.as_str()).collect();
        let encoder = self.embedder.encoder();
        Ok(user_text::compose(
            encoder.tokenizer(),
            self.budget,
            encoder.max_seq_len(),
            UserSignals { query: query.query.as_deref(), profile: query.profile.as_deref(), history: &titles },
        )?)
    }

    /// Scores every candidate with `bundle` and returns the best `top_k`,
    /// best first. Equal scores keep the request's order.
    pub fn rank(&self, bundle: &Bundle, query: &RankQuery) -> Result<Vec<RankedItem>, RankError> {
        let scores = self.inputs(bundle, query)?.score(bundle.head())?;
        self.metrics.candidates_per_request.observe(query.candidates.len() as f64);
        let mut order: Vec<usize> = (0..scores.len()).collect();
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
        order.truncate(query.top_k);
        Ok(order
            .into_iter()
            .enumerate()
            .map(|(rank, i)| {
                self.metrics.predicted_score.observe(scores[i] as f64);
                RankedItem { id: query.candidates[i].id.clone(), score: scores[i], rank: rank + 1 }
            })
            .collect())
    }

    /// The numeric feature vectors this query's candidates are scored with
    /// (what `rank` feeds the head, exposed to check serving against training).
    pub fn numeric_features(&self, bundle: &Bundle, query: &RankQuery) -> Result<Vec<features::Numeric>, RankError> {
        Ok(self.inputs(bundle, query)?.numeric().to_vec())
    }

    /// Embeds the query's texts, maps it onto the feature builder's inputs
    /// (the user context and one `CandidateInput` per candidate) and builds
    /// what the head scores, through the one scoring path.
    fn inputs(&self, bundle: &Bundle, query: &RankQuery) -> Result<ScoringInputs<'static>, RankError> {
        let user_text = self.user_text(query)?;
        // Only the most recent history titles are embedded for the cosine
        // features; co-purchase looks at every history item.
        let embedded_history = &query.history[..query.history.len().min(features::HISTORY_FEATURE_ITEMS)];
        let mut texts: Vec<&str> = Vec::with_capacity(1 + embedded_history.len() + query.candidates.len());
        texts.push(&user_text);
        texts.extend(embedded_history.iter().map(|h| h.text.as_str()));
        texts.extend(query.candidates.iter().map(|c| c.text.as_str()));
        let vectors = self.embedder.embed(&texts)?;
        let (user_vector, rest) = vectors.split_first().expect("the user text is embedded");
        let (history_vectors, candidate_vectors) = rest.split_at(embedded_history.len());

        let stats = bundle.stats();
        let history_positions: Vec<_> = query
            .history
            .iter()
            .map(|h| {
                h.id.as_deref().and_then(|id| stats.position_of_id(id)).or_else(|| stats.position_of_text(&h.text))
            })
            .collect();
        let history_embeddings: Vec<&[f32]> = history_vectors.iter().map(|v| &v[..]).collect();
        let user = UserContext::new(stats, user_vector.to_vec(), &history_positions, &history_embeddings);
        let candidates: Vec<CandidateInput<'_>> = query
            .candidates
            .iter()
            .zip(candidate_vectors)
            .map(|(c, v)| CandidateInput { position: stats.position_of_id(&c.id), embedding: v, price: c.price })
            .collect();
        Ok(ScoringInputs::build(stats, &user, &candidates)?)
    }

    /// One full request through every part with `bundle`, so the first real
    /// request does not pay for lazy initialisation, and a bundle whose scores
    /// are not probabilities never serves.
    pub fn warm_up(&self, bundle: &Bundle) -> Result<(), RankError> {
        let query = RankQuery {
            query: Some("warm-up".into()),
            profile: None,
            history: vec![HistoryItem { id: None, text: "warm-up history item".into() }],
            candidates: vec![Candidate { id: "warm-up".into(), text: "warm-up candidate".into(), price: None }],
            top_k: 1,
        };
        let ranked = self.rank(bundle, &query)?;
        match ranked.first().map(|item| item.score) {
            Some(score) if (0.0..=1.0).contains(&score) => Ok(()),
            other => Err(RankError::BadScore { bundle: bundle.version().to_string(), score: other }),
        }
    }
}
