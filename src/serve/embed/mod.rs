//! The embed job: a request's texts in, their vectors out, through the
//! embedding cache and the encoder's own thread (TEI-style dynamic batching).
//! [`Embedder`] is the one way the server embeds text. It serves repeats
//! from the cache and puts only texts never seen (or evicted) on the encoder
//! queue; the caller gets an [`EmbedJob`], awaits it without holding a
//! thread, and takes every text's vector, in order, from the [`Embedded`]
//! result. The cache bookkeeping stays inside this module.
//!
//! Concurrent requests share forward passes: the encoder thread builds each
//! batch by taking one text from each waiting request in turn, so a request
//! with one text (the user text of a request whose candidates are cached)
//! joins the next batch even behind a request with a thousand new texts.
//! Work is admitted only if it can be done in time, and a request nobody
//! waits for any more (its [`Ticket`] abandoned) is withdrawn at once.
//!
//! One job per file:
//! - `bookkeeping`: the cache lookup, and caching and placing new vectors;
//! - `batcher`: the [`Batcher`] handle on the encoder thread, submission,
//!   and the [`Pending`] vectors (withdrawn when dropped unfinished);
//! - `admission`: which request work is taken, and which refused at once;
//! - `queue`: the queue and the batching policy (round robin, the
//!   background lane's turn), and the measured throughput;
//! - `worker`: the encoder thread, its forward passes and how it stops;
//! - `ticket`: a request's [`Ticket`] (abandoned? deadline?);
//! - `ingest`: the background lane catalog ingestion embeds through.

mod admission;
mod batcher;
mod bookkeeping;
mod ingest;
mod queue;
#[cfg(test)]
mod test_support;
mod ticket;
mod worker;

use std::sync::Arc;

use crate::config::BatchingSettings;
use crate::model::encoder::{Encoder, EncoderError, TokenizedText};
use crate::serve::cache::{Embedding, EmbeddingCache};
use crate::serve::metrics::Metrics;

pub use self::batcher::Batcher;
pub(crate) use self::batcher::Pending;
use self::bookkeeping::Lookup;
pub use self::ticket::Ticket;
pub use self::worker::BatchForward;

#[derive(Debug, thiserror::Error, Clone)]
pub enum EmbedError {
    #[error("the encoder queue is full ({queued} texts waiting, limit {limit})")]
    QueueFull { queued: usize, limit: usize },
    #[error(
        "the encoder has about {wait_ms} ms of work queued ahead of this request \
         (limit {limit_ms} ms: batching.max_queue_wait_ms, or the time left before the request times out)"
    )]
    Backlog { wait_ms: u64, limit_ms: u64 },
    #[error(
        "the request's new texts hold {tokens} tokens, over batching.max_request_tokens = {limit}; \
         send fewer or shorter uncached texts, or add the items to the catalog"
    )]
    OverBudget { tokens: usize, limit: usize },
    #[error("nobody waits for this request any more")]
    Abandoned,
    #[error("the encoder has stopped")]
    Stopped,
    #[error("encoder failure: {0}")]
    Encoder(String),
}

impl From<EncoderError> for EmbedError {
    fn from(e: EncoderError) -> Self {
        EmbedError::Encoder(e.to_string())
    }
}

/// A request's texts with the embed job (see [`Embedder::begin`]): the
/// vectors the cache held, and the encoder's pending work for the rest.
/// Dropping it withdraws that work.
pub(crate) struct EmbedJob {
    lookup: Lookup,
    pending: Pending,
    cache: Arc<EmbeddingCache>,
}

impl EmbedJob {
    /// Waits, without holding a thread, until the encoder's vectors are
    /// in; `Abandoned` as soon as `ticket` is (see [`Pending::wait`]).
    pub(crate) async fn wait(self, ticket: &Ticket) -> Result<Embedded, EmbedError> {
        let Self { lookup, pending, cache } = self;
        let vectors = pending.wait(ticket).await?;
        Ok(Embedded { lookup, vectors, cache })
    }

    /// As [`EmbedJob::wait`], blocking the calling thread (see
    /// [`Pending::wait_blocking`]).
    pub(crate) fn wait_blocking(self, ticket: &Ticket) -> Result<Embedded, EmbedError> {
        let Self { lookup, pending, cache } = self;
        let vectors = pending.wait_blocking(ticket)?;
        Ok(Embedded { lookup, vectors, cache })
    }
}

/// A finished [`EmbedJob`]: [`Embedded::into_vectors`] caches the new
/// vectors and returns every text's, which is CPU work for the caller's
/// (blocking) thread, not for the async wait.
pub(crate) struct Embedded {
    lookup: Lookup,
    vectors: Vec<Vec<f32>>,
    cache: Arc<EmbeddingCache>,
}

impl Embedded {
    /// Every text's vector, in the order the texts were given.
    pub(crate) fn into_vectors(self) -> Vec<Embedding> {
        self.lookup.place(&self.cache, self.vectors)
    }
}

/// Cached, batched text embeddings: the one way the server embeds text.
pub struct Embedder {
    encoder: Arc<Encoder>,
    batcher: Batcher,
    cache: Arc<EmbeddingCache>,
}

impl Embedder {
    pub fn new(encoder: Arc<Encoder>, settings: BatchingSettings, cache_bytes: usize, metrics: Metrics) -> Self {
        Self::with_forward(encoder.clone(), encoder, settings, cache_bytes, metrics)
    }

    /// An embedder whose thread runs `forward` instead of the encoder's own
    /// pass (the encoder still tokenizes): for tests of failure handling.
    pub fn with_forward(
        encoder: Arc<Encoder>,
        forward: Arc<dyn BatchForward>,
        settings: BatchingSettings,
        cache_bytes: usize,
        metrics: Metrics,
    ) -> Self {
        let cache = Arc::new(EmbeddingCache::new(cache_bytes, metrics.clone()));
        let batcher = Batcher::start(forward, settings, metrics);
        Self { encoder, batcher, cache }
    }

    pub fn encoder(&self) -> &Encoder {
        &self.encoder
    }

    /// `text`'s vector if the cache holds it: no forward pass, no queue.
    pub(crate) fn cached(&self, text: &str) -> Option<Embedding> {
        self.cache.peek(EmbeddingCache::key(text))
    }

    /// False once the encoder thread has stopped.
    pub(crate) fn is_alive(&self) -> bool {
        self.batcher.is_alive()
    }

    /// Embeds a request's texts, serving repeats from the cache; the same
    /// text twice in one call is encoded once. Blocks until done; call from
    /// a blocking context.
    pub fn embed(&self, texts: &[&str], ticket: &Ticket) -> Result<Vec<Embedding>, EmbedError> {
        let job = self.begin(texts, ticket)?;
        Ok(job.wait_blocking(ticket)?.into_vectors())
    }

    /// The first half of [`Embedder::embed`], which does the CPU work: the
    /// cache lookups, tokenizing the texts it misses, and putting them on the
    /// encoder queue (or refusing them). The vectors then come through the
    /// [`EmbedJob`].
    pub(crate) fn begin(&self, texts: &[&str], ticket: &Ticket) -> Result<EmbedJob, EmbedError> {
        self.begin_with(texts, Vec::new(), ticket)
    }

    /// As [`Embedder::begin`], where `tokens[i]` (if any) already holds
    /// `texts[i]`'s tokens, exactly as the encoder would make them: a
    /// missing text with tokens is not tokenized again.
    pub(crate) fn begin_with(
        &self,
        texts: &[&str],
        mut tokens: Vec<Option<TokenizedText>>,
        ticket: &Ticket,
    ) -> Result<EmbedJob, EmbedError> {
        let lookup = Lookup::new(&self.cache, texts);
        let cache = self.cache.clone();
        if lookup.is_complete() {
            return Ok(EmbedJob { lookup, pending: self.batcher.submit(Vec::new(), ticket, false)?, cache });
        }
        self.batcher.precheck(lookup.missing_firsts().map(|first| self.min_tokens(texts[first])).sum(), ticket)?;
        let mut tokenized = Vec::with_capacity(lookup.missing_firsts().len());
        for (n, first) in lookup.missing_firsts().enumerate() {
            // Tokenizing a thousand texts takes tens of milliseconds: stop
            // if nobody waits any more.
            if n % 64 == 63 {
                ticket.check()?;
            }
            let known = tokens.get_mut(first).and_then(Option::take);
            tokenized.push(match known {
                Some(tokens) => tokens,
                None => self.encoder.tokenize(texts[first])?,
            });
        }
        let pending = self.batcher.enqueue(tokenized, ticket)?;
        Ok(EmbedJob { lookup, pending, cache })
    }

    /// A lower bound of `text`'s token count, without tokenizing: every
    /// whitespace-separated word is at least one token, plus `[CLS]` and
    /// `[SEP]`, within the window. (The reported `OverBudget` figure can
    /// therefore be below the real count.)
    fn min_tokens(&self, text: &str) -> usize {
        (2 + text.split_whitespace().count()).min(self.encoder.max_seq_len())
    }
}
