//! The encoder's own thread and the queue in front of it (TEI-style dynamic
//! batching). Requests put their texts on one bounded queue; the thread takes
//! texts in arrival order into a batch until the batch would exceed
//! `batching.max_batch_tokens` or `max_batch_texts`, runs one forward pass,
//! and hands each vector back to the request that asked for it. Concurrent
//! requests therefore share forward passes, and a full queue is refused
//! (`EmbedError::QueueFull` → 503) instead of growing without bound.
//!
//! [`Embedder`] puts the embedding cache in front: only texts never seen (or
//! evicted) reach the queue.
//!
//! Catalog ingestion uses the same thread through a second, **background**
//! queue: a batch of background texts (at most
//! `batching.background_batch_texts`) runs when no request is waiting, and
//! at least once every `batching.background_every_batches` batches while
//! requests keep coming, so ingestion gets a share of the encoder without
//! starving `/recommend`: a request waits at most one small background batch.
//!
//! If the thread dies (a panic in a forward pass), it says so once in the log,
//! closes the queue and fails every text still waiting with
//! [`EmbedError::Stopped`]; later calls fail at once, and
//! [`Batcher::is_alive`] turns false so `/ready` reports 503.

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroUsize;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use crate::config::BatchingSettings;
use crate::model::encoder::{Encoder, EncoderError, TokenizedText};
use crate::serve::cache::{Embedding, EmbeddingCache};
use crate::serve::metrics::Metrics;

#[derive(Debug, thiserror::Error, Clone)]
pub enum EmbedError {
    #[error("the encoder queue is full ({queued} texts waiting, limit {limit})")]
    QueueFull { queued: usize, limit: usize },
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

type Reply = mpsc::Sender<(usize, Result<Vec<f32>, EmbedError>)>;

struct Entry {
    text: TokenizedText,
    index: usize,
    reply: Reply,
}

#[derive(Default)]
struct Queue {
    entries: VecDeque<Entry>,
    /// Catalog ingestion's texts: taken when `entries` is empty, or after
    /// `background_every_batches` request batches in a row.
    background: VecDeque<Entry>,
    /// Request batches run since the last background batch.
    since_background: usize,
    /// No more texts are taken: the batcher was dropped or its thread died.
    closed: bool,
}

/// The forward pass the batcher's thread runs: the BERT [`Encoder`] in
/// production; tests substitute one that fails on purpose.
pub trait BatchForward: Send + Sync + 'static {
    fn forward(&self, batch: &[&TokenizedText]) -> Result<Vec<Vec<f32>>, EncoderError>;
}

impl BatchForward for Encoder {
    fn forward(&self, batch: &[&TokenizedText]) -> Result<Vec<Vec<f32>>, EncoderError> {
        self.embed_tokenized(batch)
    }
}

struct Shared {
    queue: Mutex<Queue>,
    /// Set (before any waiting request is failed) once the thread is gone;
    /// read without the queue's lock by every readiness check.
    stopped: AtomicBool,
    wake: Condvar,
    settings: BatchingSettings,
    metrics: Metrics,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Handle to the encoder thread. Dropping it stops the thread once the queue
/// is drained.
pub struct Batcher {
    shared: Arc<Shared>,
    worker: Option<std::thread::JoinHandle<()>>,
}

impl Batcher {
    pub fn start(encoder: Arc<dyn BatchForward>, settings: BatchingSettings, metrics: Metrics) -> Self {
        let shared = Arc::new(Shared {
            queue: Mutex::default(),
            stopped: AtomicBool::new(false),
            wake: Condvar::new(),
            settings,
            metrics,
        });
        let worker_shared = shared.clone();
        let worker = std::thread::Builder::new()
            .name("shoprank-encoder".into())
            .spawn(move || {
                run_worker(&worker_shared, &*encoder);
                stop(&worker_shared);
            })
            .expect("spawn the encoder thread");
        Self { shared, worker: Some(worker) }
    }

    /// False once the encoder thread has stopped: nothing can be embedded.
    pub fn is_alive(&self) -> bool {
        !self.shared.stopped.load(Ordering::Acquire)
    }

    /// Embeds tokenized texts, blocking until all are done. Fails at once
    /// with `QueueFull` if they do not fit in the queue.
    pub fn embed(&self, texts: Vec<TokenizedText>) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.submit(texts, false)
    }

    /// As [`Batcher::embed`], on the background queue (catalog ingestion).
    pub fn embed_background(&self, texts: Vec<TokenizedText>) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.submit(texts, true)
    }

    fn submit(&self, texts: Vec<TokenizedText>, background: bool) -> Result<Vec<Vec<f32>>, EmbedError> {
        let n = texts.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        let (reply, results) = mpsc::channel();
        {
            let mut queue = self.shared.lock();
            let limit = self.shared.settings.max_queued_texts;
            if queue.closed {
                return Err(EmbedError::Stopped);
            }
            let queued = queue.entries.len() + queue.background.len();
            if queued + n > limit {
                return Err(EmbedError::QueueFull { queued, limit });
            }
            let target = if background { &mut queue.background } else { &mut queue.entries };
            for (index, text) in texts.into_iter().enumerate() {
                target.push_back(Entry { text, index, reply: reply.clone() });
            }
            self.shared.metrics.embed_queue_texts.set((queue.entries.len() + queue.background.len()) as i64);
        }
        drop(reply);
        self.shared.wake.notify_one();
        let mut out = vec![Vec::new(); n];
        for _ in 0..n {
            let (index, vector) = results.recv().map_err(|_| EmbedError::Stopped)?;
            out[index] = vector?;
        }
        Ok(out)
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_all();
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

/// Takes the next batch: at least one text, then more in arrival order while
/// the token and text budgets allow; from the request queue unless the
/// background queue's turn has come (see the module docs). `None` once
/// closed and drained.
fn next_batch(shared: &Shared) -> Option<Vec<Entry>> {
    let mut queue = shared.lock();
    while queue.entries.is_empty() && queue.background.is_empty() {
        if queue.closed {
            return None;
        }
        queue = shared.wake.wait(queue).unwrap_or_else(|p| p.into_inner());
    }
    let settings = &shared.settings;
    let background_turn = !queue.background.is_empty()
        && (queue.entries.is_empty() || queue.since_background >= settings.background_every_batches);
    let (source, max_texts) = if background_turn {
        queue.since_background = 0;
        (&mut queue.background, settings.background_batch_texts.min(settings.max_batch_texts))
    } else {
        queue.since_background += 1;
        (&mut queue.entries, settings.max_batch_texts)
    };
    let mut batch = Vec::new();
    let mut tokens = 0;
    while let Some(next) = source.front() {
        let fits = tokens + next.text.len() <= settings.max_batch_tokens && batch.len() < max_texts;
        if !batch.is_empty() && !fits {
            break;
        }
        tokens += next.text.len();
        batch.push(source.pop_front().expect("front exists"));
    }
    shared.metrics.embed_queue_texts.set((queue.entries.len() + queue.background.len()) as i64);
    Some(batch)
}

/// Marks the batcher stopped, then fails the texts still queued (dropping
/// their reply channels wakes their requesters with `Stopped`) instead of
/// leaving them to time out. In this order, a request told `Stopped` finds
/// the service already not ready.
fn stop(shared: &Shared) {
    shared.stopped.store(true, Ordering::Release);
    let mut queue = shared.lock();
    queue.closed = true;
    queue.entries.clear();
    queue.background.clear();
    shared.metrics.embed_queue_texts.set(0);
}

/// The text of a panic's payload, for the log.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

fn run_worker(shared: &Shared, encoder: &dyn BatchForward) {
    while let Some(batch) = next_batch(shared) {
        let texts: Vec<&TokenizedText> = batch.iter().map(|e| &e.text).collect();
        let tokens: usize = texts.iter().map(|t| t.len()).sum();
        let started = Instant::now();
        // A panic in the forward pass leaves the encoder in an unknown state:
        // the thread stops for good, and says why once.
        let result = match std::panic::catch_unwind(AssertUnwindSafe(|| encoder.forward(&texts))) {
            Ok(result) => result,
            Err(payload) => {
                tracing::error!(
                    panic = panic_message(&*payload),
                    "the encoder thread panicked; embedding has stopped and the service is no longer ready"
                );
                stop(shared);
                return;
            }
        };
        shared.metrics.encoder_forward.observe(started.elapsed().as_secs_f64());
        shared.metrics.encoder_batch_texts.observe(batch.len() as f64);
        shared.metrics.encoder_batch_tokens.observe(tokens as f64);
        match result {
            Ok(vectors) => {
                for (entry, vector) in batch.into_iter().zip(vectors) {
                    // A requester that gave up (timeout) has dropped its receiver.
                    let _ = entry.reply.send((entry.index, Ok(vector)));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "encoder forward pass failed");
                let error = EmbedError::from(e);
                for entry in batch {
                    let _ = entry.reply.send((entry.index, Err(error.clone())));
                }
            }
        }
    }
}

/// Cached, batched text embeddings: the one way the server embeds text.
pub struct Embedder {
    encoder: Arc<Encoder>,
    batcher: Batcher,
    cache: EmbeddingCache,
}

impl Embedder {
    pub fn new(
        encoder: Arc<Encoder>,
        settings: BatchingSettings,
        cache_entries: NonZeroUsize,
        metrics: Metrics,
    ) -> Self {
        Self::with_forward(encoder.clone(), encoder, settings, cache_entries, metrics)
    }

    /// An embedder whose thread runs `forward` instead of the encoder's own
    /// pass (the encoder still tokenizes): for tests of failure handling.
    pub fn with_forward(
        encoder: Arc<Encoder>,
        forward: Arc<dyn BatchForward>,
        settings: BatchingSettings,
        cache_entries: NonZeroUsize,
        metrics: Metrics,
    ) -> Self {
        let cache = EmbeddingCache::new(cache_entries, metrics.clone());
        let batcher = Batcher::start(forward, settings, metrics);
        Self { encoder, batcher, cache }
    }

    pub fn encoder(&self) -> &Encoder {
        &self.encoder
    }

    /// False once the encoder thread has stopped.
    pub fn is_alive(&self) -> bool {
        self.batcher.is_alive()
    }

    /// Embeds texts, serving repeats from the cache; the same text twice in
    /// one call is encoded once. Blocks; call from a blocking context.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Embedding>, EmbedError> {
        let mut out: Vec<Option<Embedding>> = texts.iter().map(|t| self.cache.get(t)).collect();
        let mut missing: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, text) in texts.iter().enumerate() {
            if out[i].is_none() {
                missing.entry(text).or_default().push(i);
            }
        }
        let missing: Vec<(&str, Vec<usize>)> = missing.into_iter().collect();
        let tokenized = missing.iter().map(|(text, _)| self.encoder.tokenize(text)).collect::<Result<Vec<_>, _>>()?;
        let vectors = self.batcher.embed(tokenized)?;
        for ((text, positions), vector) in missing.into_iter().zip(vectors) {
            let vector: Embedding = Arc::from(vector);
            self.cache.insert(text, vector.clone());
            for i in positions {
                out[i] = Some(vector.clone());
            }
        }
        Ok(out.into_iter().map(|v| v.expect("every text embedded")).collect())
    }

    /// Embeds texts on the background queue, bypassing the cache (catalog
    /// ingestion keeps its vectors in the catalog). Blocks.
    pub fn embed_background(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let tokenized = texts.iter().map(|text| self.encoder.tokenize(text)).collect::<Result<Vec<_>, _>>()?;
        self.batcher.embed_background(tokenized)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Panics on its first batch, after its caller has queued more texts.
    struct Panicking(std::sync::Barrier);

    impl BatchForward for Panicking {
        fn forward(&self, _: &[&TokenizedText]) -> Result<Vec<Vec<f32>>, EncoderError> {
            self.0.wait();
            std::thread::sleep(std::time::Duration::from_millis(50));
            panic!("a forward pass failed");
        }
    }

    fn settings() -> BatchingSettings {
        BatchingSettings {
            max_batch_tokens: 512,
            max_batch_texts: 1,
            max_queued_texts: 100,
            background_batch_texts: 1,
            background_every_batches: 4,
        }
    }

    fn text(id: u32) -> TokenizedText {
        TokenizedText { ids: vec![101, id, 102] }
    }

    #[test]
    fn a_dead_encoder_thread_fails_waiting_and_later_requests_at_once() {
        let forward = Arc::new(Panicking(std::sync::Barrier::new(2)));
        let batcher = Arc::new(Batcher::start(forward.clone(), settings(), Metrics::new()));
        assert!(batcher.is_alive());
        let waiting = {
            let batcher = batcher.clone();
            // One text per batch: the first batch panics while the other texts wait.
            std::thread::spawn(move || batcher.embed((0..5).map(text).collect()))
        };
        forward.0.wait();
        let started = Instant::now();
        assert!(matches!(waiting.join().unwrap(), Err(EmbedError::Stopped)));
        assert!(started.elapsed() < std::time::Duration::from_secs(2), "waiting texts fail fast");
        assert!(!batcher.is_alive());
        assert!(matches!(batcher.embed(vec![text(7)]), Err(EmbedError::Stopped)), "later calls fail at once");
    }
}
