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

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroUsize;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use crate::cache::{Embedding, EmbeddingCache};
use crate::config::BatchingSettings;
use crate::encoder::{Encoder, EncoderError, TokenizedText};
use crate::metrics::Metrics;

#[derive(Debug, thiserror::Error, Clone)]
pub enum EmbedError {
    #[error("the encoder queue is full ({queued} texts waiting, limit {limit})")]
    QueueFull { queued: usize, limit: usize },
    #[error("the encoder thread has stopped")]
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
    closed: bool,
}

struct Shared {
    queue: Mutex<Queue>,
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
    pub fn start(encoder: Arc<Encoder>, settings: BatchingSettings, metrics: Metrics) -> Self {
        let shared = Arc::new(Shared { queue: Mutex::default(), wake: Condvar::new(), settings, metrics });
        let worker_shared = shared.clone();
        let worker = std::thread::Builder::new()
            .name("shoprank-encoder".into())
            .spawn(move || run_worker(&worker_shared, &encoder))
            .expect("spawn the encoder thread");
        Self { shared, worker: Some(worker) }
    }

    /// Embeds tokenized texts, blocking until all are done. Fails at once
    /// with `QueueFull` if they do not fit in the queue.
    pub fn embed(&self, texts: Vec<TokenizedText>) -> Result<Vec<Vec<f32>>, EmbedError> {
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
            if queue.entries.len() + n > limit {
                return Err(EmbedError::QueueFull { queued: queue.entries.len(), limit });
            }
            for (index, text) in texts.into_iter().enumerate() {
                queue.entries.push_back(Entry { text, index, reply: reply.clone() });
            }
            self.shared.metrics.embed_queue_texts.set(queue.entries.len() as i64);
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
/// the token and text budgets allow. `None` once closed and drained.
fn next_batch(shared: &Shared) -> Option<Vec<Entry>> {
    let mut queue = shared.lock();
    while queue.entries.is_empty() {
        if queue.closed {
            return None;
        }
        queue = shared.wake.wait(queue).unwrap_or_else(|p| p.into_inner());
    }
    let settings = &shared.settings;
    let mut batch = Vec::new();
    let mut tokens = 0;
    while let Some(next) = queue.entries.front() {
        let fits = tokens + next.text.len() <= settings.max_batch_tokens && batch.len() < settings.max_batch_texts;
        if !batch.is_empty() && !fits {
            break;
        }
        tokens += next.text.len();
        batch.push(queue.entries.pop_front().expect("front exists"));
    }
    shared.metrics.embed_queue_texts.set(queue.entries.len() as i64);
    Some(batch)
}

fn run_worker(shared: &Shared, encoder: &Encoder) {
    while let Some(batch) = next_batch(shared) {
        let texts: Vec<&TokenizedText> = batch.iter().map(|e| &e.text).collect();
        let tokens: usize = texts.iter().map(|t| t.len()).sum();
        let started = Instant::now();
        let result = encoder.embed_tokenized(&texts);
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
    pub fn new(encoder: Arc<Encoder>, settings: BatchingSettings, cache_entries: NonZeroUsize, metrics: Metrics) -> Self {
        let cache = EmbeddingCache::new(cache_entries, metrics.clone());
        let batcher = Batcher::start(encoder.clone(), settings, metrics);
        Self { encoder, batcher, cache }
    }

    pub fn encoder(&self) -> &Encoder {
        &self.encoder
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
        let tokenized =
            missing.iter().map(|(text, _)| self.encoder.tokenize(text)).collect::<Result<Vec<_>, _>>()?;
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
}
