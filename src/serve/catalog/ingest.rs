//! Background embedding of catalog items: a thread takes the oldest pending
//! items from the store, embeds them on the encoder's background queue (see
//! `serve::embed`), stores the vectors and puts them in the index. It sleeps
//! until an upsert wakes it, and stops when the catalog is dropped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::index::CatalogIndex;
use crate::serve::embed::{EmbedError, Embedder};
use crate::serve::metrics::Metrics;
use crate::store::catalog::CatalogStore;

/// How long the thread waits before retrying after a failure.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Wakes the ingestion thread and tells it to stop.
#[derive(Default)]
pub(crate) struct IngestSignal {
    pending: Mutex<bool>,
    wake: Condvar,
    stop: AtomicBool,
}

impl IngestSignal {
    /// New items are waiting.
    pub(crate) fn notify(&self) {
        *self.pending.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.wake.notify_one();
    }

    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.notify();
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Waits until notified (or `timeout`), and clears the notice.
    fn wait(&self, timeout: Duration) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if !*pending {
            pending = self.wake.wait_timeout(pending, timeout).unwrap_or_else(|p| p.into_inner()).0;
        }
        *pending = false;
    }
}

pub(crate) struct IngestWorker {
    pub store: Arc<dyn CatalogStore>,
    pub index: Arc<CatalogIndex>,
    pub embedder: Arc<Embedder>,
    /// The encoder's cache key: which stored embeddings count.
    pub encoder_key: String,
    /// Items taken from the store per round (one background batch's worth).
    pub batch: usize,
    pub signal: Arc<IngestSignal>,
    pub metrics: Metrics,
}

impl IngestWorker {
    /// Runs until stopped. Never panics on a failure: logs, waits, retries.
    pub(crate) fn run(self) {
        while !self.signal.stopped() {
            match self.round() {
                Ok(0) => self.signal.wait(Duration::from_secs(60)),
                Ok(_) => {}
                Err(IngestError::Embed(EmbedError::Stopped)) => {
                    tracing::error!("catalog ingestion stops: the encoder has stopped");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "catalog ingestion failed; retrying");
                    self.signal.wait(RETRY_AFTER);
                }
            }
        }
    }

    /// Embeds one batch of pending items; returns how many were pending.
    fn round(&self) -> Result<usize, IngestError> {
        let pending = self.store.pending(self.batch)?;
        if pending.is_empty() {
            self.metrics.catalog_pending.set(0);
            return Ok(0);
        }
        let texts: Vec<&str> = pending.iter().map(|p| p.text.as_str()).collect();
        let vectors = self.embedder.embed_background(&texts)?;
        let embedded: Vec<_> = pending.into_iter().zip(vectors).collect();
        self.store.set_embeddings(&self.encoder_key, &embedded)?;
        self.index.set_vectors(&embedded);
        self.metrics.catalog_embedded.inc_by(embedded.len() as u64);
        let (items, with_vectors) = self.index.counts();
        self.metrics.catalog_pending.set((items - with_vectors) as i64);
        Ok(embedded.len())
    }
}

#[derive(Debug, thiserror::Error)]
enum IngestError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Embed(#[from] EmbedError),
}
