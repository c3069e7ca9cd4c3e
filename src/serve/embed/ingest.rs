//! The background lane: catalog ingestion embeds on the same encoder thread
//! through a second queue. Its texts bypass the embedding cache (the catalog
//! keeps its own vectors) and admission's budgets, and are never abandoned.
//! A background batch (at most `batching.background_batch_texts`) runs when
//! no request is waiting, and at least once every
//! `batching.background_every_batches` batches while requests keep coming
//! (see `queue`), so ingestion gets a share of the encoder without starving
//! `/recommend`: a request waits at most one small background batch.

use crate::model::encoder::TokenizedText;

use super::{Batcher, EmbedError, Embedder, Ticket};

impl Batcher {
    /// As [`Batcher::embed`], on the background queue (catalog ingestion):
    /// no token or time budget, never abandoned.
    pub(crate) fn embed_background(&self, texts: Vec<TokenizedText>) -> Result<Vec<Vec<f32>>, EmbedError> {
        let ticket = Ticket::detached();
        self.submit(texts, &ticket, true)?.wait_blocking(&ticket)
    }
}

impl Embedder {
    /// Embeds texts on the background queue, bypassing the cache (catalog
    /// ingestion keeps its vectors in the catalog). Blocks.
    pub(crate) fn embed_background(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let tokenized = texts.iter().map(|text| self.encoder.tokenize(text)).collect::<Result<Vec<_>, _>>()?;
        self.batcher.embed_background(tokenized)
    }
}
