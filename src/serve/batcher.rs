//! The encoder's own thread and the queue in front of it (TEI-style dynamic
//! batching). A request puts its texts on one bounded queue as a **group**;
//! the thread builds each batch by taking one text from each waiting group
//! in turn (round robin) until the batch would exceed
//! `batching.max_batch_tokens` or `max_batch_texts`, runs one forward pass,
//! and hands each vector back to the request that asked for it. Concurrent
//! requests therefore share forward passes, and a request with one text
//! (the user text of a request whose candidates are cached) joins the next
//! batch even behind a request with a thousand new texts.
//!
//! Work is admitted only if it can be done (`EmbedError` → 503 or 422):
//! - a request's new texts may hold at most `batching.max_request_tokens`
//!   tokens (one request cannot hold the encoder for seconds);
//! - at most `max_queued_texts` texts wait in all;
//! - the work queued ahead of a request, at the encoder's measured
//!   throughput, must be done within `max_queue_wait_ms`, and all of it
//!   before the request's deadline. Under overload the surplus is refused at
//!   once (with Retry-After) instead of waiting to time out, so the encoder
//!   spends its time on answers somebody still waits for.
//!
//! Every request carries a [`Ticket`]. When nobody waits for its answer any
//! more (the client went away, or its time ran out), its texts are
//! withdrawn from the queue at once, a batch whose texts are all abandoned
//! is stopped between layers, and the waiter gets [`EmbedError::Abandoned`].
//! A request's texts go on the queue as a [`Pending`]; the server awaits it
//! without holding a thread (`Pending::wait`), tools block on it.
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
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::config::BatchingSettings;
use crate::model::encoder::{Encoder, EncoderError, TokenizedText};
use crate::serve::cache::{Embedding, EmbeddingCache};
use crate::serve::metrics::Metrics;

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

/// What a request's work carries through the server: whether anybody still
/// waits for its answer, and by when it must be done. The API cancels the
/// token when the request's future is dropped (client gone) or times out.
#[derive(Clone, Debug)]
pub struct Ticket {
    cancel: CancellationToken,
    deadline: Option<Instant>,
}

impl Ticket {
    pub fn new(cancel: CancellationToken, deadline: Instant) -> Self {
        Self { cancel, deadline: Some(deadline) }
    }

    /// Work that is never abandoned and has no deadline (warm-up, tools, tests).
    pub fn detached() -> Self {
        Self { cancel: CancellationToken::new(), deadline: None }
    }

    /// True once nobody waits for the answer: stop working on it.
    pub fn is_abandoned(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Fails with [`EmbedError::Abandoned`] once nobody waits.
    pub fn check(&self) -> Result<(), EmbedError> {
        if self.is_abandoned() {
            Err(EmbedError::Abandoned)
        } else {
            Ok(())
        }
    }

    /// Marks the work abandoned: everything waiting on the ticket stops.
    pub fn abandon(&self) {
        self.cancel.cancel();
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    fn time_left(&self) -> Option<Duration> {
        self.deadline.map(|d| d.saturating_duration_since(Instant::now()))
    }
}

/// Each text's vector goes back on its request's channel as soon as its
/// batch is done. Unbounded: a request's channel holds at most its own texts.
type Reply = tokio::sync::mpsc::UnboundedSender<(usize, Result<Vec<f32>, EmbedError>)>;

struct Entry {
    text: TokenizedText,
    index: usize,
}

/// One caller's texts still waiting.
struct Group {
    id: u64,
    entries: VecDeque<Entry>,
    tokens: usize,
    reply: Reply,
    ticket: Ticket,
}

/// A text taken into a batch.
struct Taken {
    text: TokenizedText,
    index: usize,
    reply: Reply,
    ticket: Ticket,
}

#[derive(Default)]
struct Queue {
    /// Requests' groups, served round robin.
    requests: VecDeque<Group>,
    /// Catalog ingestion's groups, served in order: taken when no request
    /// waits, or after `background_every_batches` request batches in a row.
    background: VecDeque<Group>,
    /// Texts waiting, in both queues.
    texts: usize,
    /// Request batches run since the last background batch.
    since_background: usize,
    next_id: u64,
    /// The encoder's recent speed, for admission.
    throughput: Throughput,
    /// No more texts are taken: the batcher was dropped or its thread died.
    closed: bool,
}

impl Queue {
    /// Drops the groups nobody waits for; returns how many texts they held.
    fn drop_abandoned(&mut self) -> usize {
        let before = self.texts;
        let mut kept = VecDeque::with_capacity(self.requests.len());
        for group in self.requests.drain(..) {
            if group.ticket.is_abandoned() {
                self.texts -= group.entries.len();
            } else {
                kept.push_back(group);
            }
        }
        self.requests = kept;
        before - self.texts
    }

    /// Removes one group (its caller stopped waiting); returns its texts.
    fn withdraw(&mut self, id: u64) -> usize {
        for groups in [&mut self.requests, &mut self.background] {
            if let Some(at) = groups.iter().position(|g| g.id == id) {
                let group = groups.remove(at).expect("position is in range");
                self.texts -= group.entries.len();
                return group.entries.len();
            }
        }
        0
    }

    /// Seconds of encoder work queued ahead of a new request of `tokens`
    /// tokens: with round robin, each waiting group delays it by at most
    /// as many tokens as the request itself holds.
    fn wait_ahead(&self, tokens: usize) -> Option<f64> {
        let rate = self.throughput.tokens_per_sec();
        (rate > 0.0).then(|| {
            let ahead: usize = self.requests.iter().map(|g| g.tokens.min(tokens)).sum();
            ahead as f64 / rate
        })
    }
}

/// Tokens per second over recent forward passes, each pass weighted by its
/// size: tokens and seconds are summed with the older passes decayed, so a
/// run of one-text passes (slow per token) cannot make the estimate forget
/// what full batches achieve, which is how queued work will run.
#[derive(Default)]
struct Throughput {
    tokens: f64,
    secs: f64,
}

impl Throughput {
    /// How much of the sums one forward pass later still counts.
    const DECAY: f64 = 0.9;

    fn record(&mut self, tokens: usize, secs: f64) {
        self.tokens = self.tokens * Self::DECAY + tokens as f64;
        self.secs = self.secs * Self::DECAY + secs;
    }

    /// Recent tokens below which the estimate is not trusted: the warm-up
    /// pass's few short texts, or a stream of one-text passes, run far below
    /// the speed of full batches, and admission would then refuse work the
    /// encoder can do.
    const MIN_TOKENS: f64 = 256.0;

    /// 0 (unknown: admission does not judge by time) until enough tokens
    /// have been seen.
    fn tokens_per_sec(&self) -> f64 {
        if self.tokens >= Self::MIN_TOKENS && self.secs > 0.0 {
            self.tokens / self.secs
        } else {
            0.0
        }
    }
}

/// The forward pass the batcher's thread runs: the BERT [`Encoder`] in
/// production; tests substitute one that fails on purpose.
pub trait BatchForward: Send + Sync + 'static {
    fn forward(&self, batch: &[&TokenizedText]) -> Result<Vec<Vec<f32>>, EncoderError>;

    /// As `forward`, but may give up (`None`) once `abandoned` says yes;
    /// the encoder asks between layers.
    fn forward_until(
        &self,
        batch: &[&TokenizedText],
        abandoned: &(dyn Fn() -> bool + Sync),
    ) -> Result<Option<Vec<Vec<f32>>>, EncoderError> {
        let _ = abandoned;
        self.forward(batch).map(Some)
    }
}

impl BatchForward for Encoder {
    fn forward(&self, batch: &[&TokenizedText]) -> Result<Vec<Vec<f32>>, EncoderError> {
        self.embed_tokenized(batch)
    }

    fn forward_until(
        &self,
        batch: &[&TokenizedText],
        abandoned: &(dyn Fn() -> bool + Sync),
    ) -> Result<Option<Vec<Vec<f32>>>, EncoderError> {
        self.embed_tokenized_until(batch, abandoned)
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

    fn publish_queue(&self, queue: &Queue) {
        self.metrics.embed_queue_texts.set(queue.texts as i64);
    }
}

/// Handle to the encoder thread. Dropping it stops the thread once the queue
/// is drained.
pub struct Batcher {
    shared: Arc<Shared>,
    worker: Option<std::thread::JoinHandle<()>>,
}

/// Texts on the encoder queue, and the way their vectors come back. Waiting
/// for them costs no thread in the async [`Pending::wait`] (the server's
/// path), or blocks in [`Pending::wait_blocking`]. Dropped unfinished (the
/// request was abandoned, failed or timed out), it withdraws the texts still
/// queued, so the encoder never embeds them for nobody.
pub struct Pending {
    shared: Arc<Shared>,
    id: u64,
    texts: usize,
    results: tokio::sync::mpsc::UnboundedReceiver<(usize, Result<Vec<f32>, EmbedError>)>,
}

impl Pending {
    /// Nothing to embed.
    fn done(shared: &Arc<Shared>) -> Self {
        let (_, results) = tokio::sync::mpsc::unbounded_channel();
        Self { shared: shared.clone(), id: u64::MAX, texts: 0, results }
    }

    /// The vectors, in the order the texts were given, once all are done;
    /// `Abandoned` as soon as `ticket` is.
    pub async fn wait(mut self, ticket: &Ticket) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut out = vec![Vec::new(); self.texts];
        for _ in 0..self.texts {
            tokio::select! {
                biased;
                () = ticket.cancel.cancelled() => return Err(EmbedError::Abandoned),
                received = self.results.recv() => match received {
                    Some((index, vector)) => out[index] = vector?,
                    // The group was dropped unanswered: the thread stopped.
                    None => return Err(EmbedError::Stopped),
                },
            }
        }
        Ok(out)
    }

    /// As [`Pending::wait`], blocking the calling thread: for warm-up,
    /// catalog ingestion, tools and tests. The thread parks until a vector
    /// arrives or the ticket is abandoned (no polling, which on a small
    /// machine would take turns from the encoder's own threads). It works on
    /// any thread, an async runtime's included (tests build services inside
    /// one), as the channel and the ticket need no runtime to wake it;
    /// `unconstrained` keeps tokio's per-task budget, which the channel
    /// would otherwise spend inside a task, from turning the wait into a spin.
    pub fn wait_blocking(self, ticket: &Ticket) -> Result<Vec<Vec<f32>>, EmbedError> {
        futures_executor::block_on(tokio::task::unconstrained(self.wait(ticket)))
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.texts == 0 {
            return;
        }
        let mut queue = self.shared.lock();
        let withdrawn = queue.withdraw(self.id);
        if withdrawn > 0 {
            self.shared.metrics.encoder_abandoned_texts.inc_by(withdrawn as u64);
            self.shared.publish_queue(&queue);
        }
    }
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

    /// Puts a request's tokenized texts on the queue, or refuses them at
    /// once if they cannot be admitted (see the module docs).
    pub fn enqueue(&self, texts: Vec<TokenizedText>, ticket: &Ticket) -> Result<Pending, EmbedError> {
        let tokens: usize = texts.iter().map(TokenizedText::len).sum();
        let limit = self.shared.settings.max_request_tokens;
        if tokens > limit {
            return Err(EmbedError::OverBudget { tokens, limit });
        }
        self.submit(texts, ticket, false)
    }

    /// Embeds a request's tokenized texts, blocking until all are done.
    pub fn embed(&self, texts: Vec<TokenizedText>, ticket: &Ticket) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.enqueue(texts, ticket)?.wait_blocking(ticket)
    }

    /// Refuses at once, before the texts are even tokenized, work of at
    /// least `min_tokens` tokens that [`Batcher::embed`] would refuse. Under
    /// overload most requests are refused, so they should cost little.
    pub fn precheck(&self, min_tokens: usize, ticket: &Ticket) -> Result<(), EmbedError> {
        let limit = self.shared.settings.max_request_tokens;
        if min_tokens > limit {
            return Err(EmbedError::OverBudget { tokens: min_tokens, limit });
        }
        let queue = self.shared.lock();
        self.admit_in_time(&queue, min_tokens, ticket)
    }

    /// As [`Batcher::embed`], on the background queue (catalog ingestion):
    /// no token or time budget, never abandoned.
    pub fn embed_background(&self, texts: Vec<TokenizedText>) -> Result<Vec<Vec<f32>>, EmbedError> {
        let ticket = Ticket::detached();
        self.submit(texts, &ticket, true)?.wait_blocking(&ticket)
    }

    fn submit(&self, texts: Vec<TokenizedText>, ticket: &Ticket, background: bool) -> Result<Pending, EmbedError> {
        let n = texts.len();
        if n == 0 {
            return Ok(Pending::done(&self.shared));
        }
        ticket.check()?;
        let tokens: usize = texts.iter().map(TokenizedText::len).sum();
        let entries: VecDeque<Entry> =
            texts.into_iter().enumerate().map(|(index, text)| Entry { text, index }).collect();
        let (reply, results) = tokio::sync::mpsc::unbounded_channel();
        let id = {
            let mut queue = self.shared.lock();
            if queue.closed {
                return Err(EmbedError::Stopped);
            }
            let abandoned = queue.drop_abandoned();
            if abandoned > 0 {
                self.shared.metrics.encoder_abandoned_texts.inc_by(abandoned as u64);
                self.shared.publish_queue(&queue);
            }
            let limit = self.shared.settings.max_queued_texts;
            if queue.texts + n > limit {
                return Err(EmbedError::QueueFull { queued: queue.texts, limit });
            }
            if !background {
                self.admit_in_time(&queue, tokens, ticket)?;
            }
            let id = queue.next_id;
            queue.next_id += 1;
            let group = Group { id, entries, tokens, reply, ticket: ticket.clone() };
            if background {
                queue.background.push_back(group);
            } else {
                queue.requests.push_back(group);
            }
            queue.texts += n;
            self.shared.publish_queue(&queue);
            id
        };
        self.shared.wake.notify_one();
        Ok(Pending { shared: self.shared.clone(), id, texts: n, results })
    }

    /// Refuses a request the encoder cannot serve in time: too much work
    /// ahead of it, or not enough time left for that work and its own.
    fn admit_in_time(&self, queue: &Queue, tokens: usize, ticket: &Ticket) -> Result<(), EmbedError> {
        let Some(ahead) = queue.wait_ahead(tokens) else { return Ok(()) };
        let limit = Duration::from_millis(self.shared.settings.max_queue_wait_ms);
        let own = tokens as f64 / queue.throughput.tokens_per_sec();
        let time_left = ticket.time_left().unwrap_or(Duration::MAX);
        if ahead > limit.as_secs_f64() || ahead + own > time_left.as_secs_f64() {
            let limit_ms = limit.min(time_left).as_millis() as u64;
            return Err(EmbedError::Backlog { wait_ms: ((ahead + own) * 1e3) as u64, limit_ms });
        }
        Ok(())
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

/// Takes the next batch (see the module docs): round robin over the
/// requests' groups, or in order from the background queue when its turn
/// has come. `None` once closed and drained.
fn next_batch(shared: &Shared) -> Option<Vec<Taken>> {
    let mut queue = shared.lock();
    loop {
        let abandoned = queue.drop_abandoned();
        if abandoned > 0 {
            shared.metrics.encoder_abandoned_texts.inc_by(abandoned as u64);
        }
        if !queue.requests.is_empty() || !queue.background.is_empty() {
            break;
        }
        shared.publish_queue(&queue);
        if queue.closed {
            return None;
        }
        queue = shared.wake.wait(queue).unwrap_or_else(|p| p.into_inner());
    }
    let settings = &shared.settings;
    let background_turn = !queue.background.is_empty()
        && (queue.requests.is_empty() || queue.since_background >= settings.background_every_batches);
    let mut batch = Budget { texts: Vec::new(), tokens: 0, max_tokens: settings.max_batch_tokens, max_texts: 0 };
    if background_turn {
        queue.since_background = 0;
        batch.max_texts = settings.background_batch_texts.min(settings.max_batch_texts);
        take_in_order(&mut queue.background, &mut batch);
    } else {
        queue.since_background += 1;
        batch.max_texts = settings.max_batch_texts;
        take_round_robin(&mut queue.requests, &mut batch);
    }
    queue.texts -= batch.texts.len();
    shared.publish_queue(&queue);
    Some(batch.texts)
}

/// A batch being filled, and its limits.
struct Budget {
    texts: Vec<Taken>,
    tokens: usize,
    max_tokens: usize,
    max_texts: usize,
}

impl Budget {
    /// Whether a text of `len` tokens may join. The first always may (a text
    /// longer than the token budget runs alone).
    fn fits(&self, len: usize) -> bool {
        self.texts.is_empty() || (self.tokens + len <= self.max_tokens && self.texts.len() < self.max_texts)
    }

    fn take(&mut self, group: &mut Group) {
        let entry = group.entries.pop_front().expect("the group has a text");
        group.tokens -= entry.text.len();
        self.tokens += entry.text.len();
        self.texts.push(Taken {
            text: entry.text,
            index: entry.index,
            reply: group.reply.clone(),
            ticket: group.ticket.clone(),
        });
    }
}

/// One text from each group in turn until the batch is full. The group
/// that did not fit goes first next time; emptied groups leave.
fn take_round_robin(groups: &mut VecDeque<Group>, batch: &mut Budget) {
    let mut resume_at = 0;
    'fill: loop {
        let mut took_any = false;
        for (at, group) in groups.iter_mut().enumerate() {
            let Some(next) = group.entries.front() else { continue };
            if !batch.fits(next.text.len()) {
                resume_at = at;
                break 'fill;
            }
            batch.take(group);
            took_any = true;
        }
        if !took_any {
            break;
        }
    }
    groups.rotate_left(resume_at);
    groups.retain(|g| !g.entries.is_empty());
}

/// Texts in arrival order until the batch is full.
fn take_in_order(groups: &mut VecDeque<Group>, batch: &mut Budget) {
    while let Some(group) = groups.front_mut() {
        while group.entries.front().is_some_and(|next| batch.fits(next.text.len())) {
            batch.take(group);
        }
        if !group.entries.is_empty() {
            break;
        }
        groups.pop_front();
    }
}

/// Marks the batcher stopped, then fails the texts still queued (dropping
/// their reply channels wakes their requesters with `Stopped`) instead of
/// leaving them to time out. In this order, a request told `Stopped` finds
/// the service already not ready.
fn stop(shared: &Shared) {
    shared.stopped.store(true, Ordering::Release);
    let mut queue = shared.lock();
    queue.closed = true;
    queue.requests.clear();
    queue.background.clear();
    queue.texts = 0;
    shared.publish_queue(&queue);
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
        // Abandoned while the batch was formed: nobody would read it.
        let (batch, abandoned): (Vec<Taken>, Vec<Taken>) = batch.into_iter().partition(|t| !t.ticket.is_abandoned());
        if !abandoned.is_empty() {
            shared.metrics.encoder_abandoned_texts.inc_by(abandoned.len() as u64);
        }
        if batch.is_empty() {
            continue;
        }
        let texts: Vec<&TokenizedText> = batch.iter().map(|t| &t.text).collect();
        let tokens: usize = texts.iter().map(|t| t.len()).sum();
        let started = Instant::now();
        // Abandoned while it runs: the rest of the pass is skipped.
        let abandoned = || batch.iter().all(|t| t.ticket.is_abandoned());
        // A panic in the forward pass leaves the encoder in an unknown state:
        // the thread stops for good, and says why once.
        let result = match std::panic::catch_unwind(AssertUnwindSafe(|| encoder.forward_until(&texts, &abandoned))) {
            Ok(Ok(None)) => {
                shared.metrics.encoder_abandoned_texts.inc_by(batch.len() as u64);
                continue;
            }
            Ok(result) => result.map(|vectors| vectors.expect("not abandoned")),
            Err(payload) => {
                tracing::error!(
                    panic = panic_message(&*payload),
                    "the encoder thread panicked; embedding has stopped and the service is no longer ready"
                );
                stop(shared);
                return;
            }
        };
        let secs = started.elapsed().as_secs_f64();
        shared.metrics.encoder_forward.observe(secs);
        shared.metrics.encoder_batch_texts.observe(batch.len() as f64);
        shared.metrics.encoder_batch_tokens.observe(tokens as f64);
        {
            let mut queue = shared.lock();
            queue.throughput.record(tokens, secs);
            shared.metrics.encoder_tokens_per_second.set(queue.throughput.tokens_per_sec());
        }
        match result {
            Ok(vectors) => {
                for (taken, vector) in batch.into_iter().zip(vectors) {
                    // A requester that gave up has dropped its receiver.
                    let _ = taken.reply.send((taken.index, Ok(vector)));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "encoder forward pass failed");
                let error = EmbedError::from(e);
                for taken in batch {
                    let _ = taken.reply.send((taken.index, Err(error.clone())));
                }
            }
        }
    }
}

/// A request's texts half embedded (see [`Embedder::begin`]): the vectors
/// found in the cache, where each missing text goes, and the encoder's
/// pending work. Dropping it withdraws that work.
pub struct EmbedJob {
    pub out: Vec<Option<Embedding>>,
    /// Each missing text's cache key and its positions in `out`.
    pub missing: Vec<(u128, Vec<usize>)>,
    pub pending: Pending,
}

/// Cached, batched text embeddings: the one way the server embeds text.
pub struct Embedder {
    encoder: Arc<Encoder>,
    batcher: Batcher,
    cache: EmbeddingCache,
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
        let cache = EmbeddingCache::new(cache_bytes, metrics.clone());
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

    /// Embeds a request's texts, serving repeats from the cache; the same
    /// text twice in one call is encoded once. Blocks until done; call from
    /// a blocking context.
    pub fn embed(&self, texts: &[&str], ticket: &Ticket) -> Result<Vec<Embedding>, EmbedError> {
        let job = self.begin(texts, ticket)?;
        let vectors = job.pending.wait_blocking(ticket)?;
        Ok(self.finish(job.out, job.missing, vectors))
    }

    /// The first half of [`Embedder::embed`], which does the CPU work: the
    /// cache lookups, tokenizing the texts it misses, and putting them on the
    /// encoder queue (or refusing them). The vectors then come through the
    /// job's [`Pending`]; [`Embedder::finish`] caches and places them.
    pub fn begin(&self, texts: &[&str], ticket: &Ticket) -> Result<EmbedJob, EmbedError> {
        self.begin_with(texts, Vec::new(), ticket)
    }

    /// As [`Embedder::begin`], where `tokens[i]` (if any) already holds
    /// `texts[i]`'s tokens, exactly as the encoder would make them: a
    /// missing text with tokens is not tokenized again.
    pub fn begin_with(
        &self,
        texts: &[&str],
        mut tokens: Vec<Option<TokenizedText>>,
        ticket: &Ticket,
    ) -> Result<EmbedJob, EmbedError> {
        let keys: Vec<u128> = texts.iter().map(|t| EmbeddingCache::key(t)).collect();
        let out: Vec<Option<Embedding>> = keys.iter().map(|&key| self.cache.get(key)).collect();
        let mut missing: HashMap<u128, (usize, Vec<usize>)> = HashMap::new();
        for (i, &key) in keys.iter().enumerate() {
            if out[i].is_none() {
                missing.entry(key).or_insert_with(|| (i, Vec::new())).1.push(i);
            }
        }
        let missing: Vec<(u128, usize, Vec<usize>)> =
            missing.into_iter().map(|(key, (first, positions))| (key, first, positions)).collect();
        if missing.is_empty() {
            return Ok(EmbedJob { out, missing: Vec::new(), pending: self.batcher.submit(Vec::new(), ticket, false)? });
        }
        self.batcher.precheck(missing.iter().map(|&(_, first, _)| self.min_tokens(texts[first])).sum(), ticket)?;
        let mut tokenized = Vec::with_capacity(missing.len());
        for (n, &(_, first, _)) in missing.iter().enumerate() {
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
        let missing = missing.into_iter().map(|(key, _, positions)| (key, positions)).collect();
        Ok(EmbedJob { out, missing, pending })
    }

    /// The second half of [`Embedder::embed`]: caches the new vectors and
    /// returns every text's vector in order.
    pub fn finish(
        &self,
        mut out: Vec<Option<Embedding>>,
        missing: Vec<(u128, Vec<usize>)>,
        vectors: Vec<Vec<f32>>,
    ) -> Vec<Embedding> {
        for ((key, positions), vector) in missing.into_iter().zip(vectors) {
            let vector: Embedding = Arc::from(vector);
            self.cache.insert(key, vector.clone());
            for i in positions {
                out[i] = Some(vector.clone());
            }
        }
        out.into_iter().map(|v| v.expect("every text embedded")).collect()
    }

    /// A lower bound of `text`'s token count, without tokenizing: every
    /// whitespace-separated word is at least one token, plus `[CLS]` and
    /// `[SEP]`, within the window. (The reported `OverBudget` figure can
    /// therefore be below the real count.)
    fn min_tokens(&self, text: &str) -> usize {
        (2 + text.split_whitespace().count()).min(self.encoder.max_seq_len())
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
            std::thread::sleep(Duration::from_millis(50));
            panic!("a forward pass failed");
        }
    }

    /// Records each batch's first token ids, and takes `delay` per batch.
    struct Recording {
        batches: Mutex<Vec<Vec<u32>>>,
        delay: Duration,
    }

    impl Recording {
        fn new(delay: Duration) -> Arc<Self> {
            Arc::new(Self { batches: Mutex::default(), delay })
        }
    }

    impl BatchForward for Recording {
        fn forward(&self, batch: &[&TokenizedText]) -> Result<Vec<Vec<f32>>, EncoderError> {
            std::thread::sleep(self.delay);
            self.batches.lock().unwrap().push(batch.iter().map(|t| t.ids[1]).collect());
            Ok(batch.iter().map(|t| vec![t.ids[1] as f32]).collect())
        }
    }

    fn settings() -> BatchingSettings {
        BatchingSettings {
            max_batch_tokens: 512,
            max_batch_texts: 1,
            max_queued_texts: 100,
            max_request_tokens: 1000,
            max_queue_wait_ms: 60_000,
            background_batch_texts: 1,
            background_every_batches: 4,
        }
    }

    fn text(id: u32) -> TokenizedText {
        TokenizedText { ids: vec![101, id, 102] }
    }

    fn wait_until(what: &str, condition: impl Fn() -> bool) {
        let started = Instant::now();
        while !condition() {
            assert!(started.elapsed() < Duration::from_secs(5), "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn one_text_passes_do_not_drag_the_throughput_below_what_batches_achieve() {
        let mut throughput = Throughput::default();
        assert_eq!(throughput.tokens_per_sec(), 0.0);
        throughput.record(4000, 0.4); // a full batch: 10,000 tokens/s
        for _ in 0..10 {
            throughput.record(10, 0.002); // one short text each: 5,000 tokens/s
        }
        let rate = throughput.tokens_per_sec();
        assert!((9000.0..10_000.0).contains(&rate), "{rate}");
    }

    #[test]
    fn a_dead_encoder_thread_fails_waiting_and_later_requests_at_once() {
        let forward = Arc::new(Panicking(std::sync::Barrier::new(2)));
        let batcher = Arc::new(Batcher::start(forward.clone(), settings(), Metrics::new()));
        assert!(batcher.is_alive());
        let waiting = {
            let batcher = batcher.clone();
            // One text per batch: the first batch panics while the other texts wait.
            std::thread::spawn(move || batcher.embed((0..5).map(text).collect(), &Ticket::detached()))
        };
        forward.0.wait();
        let started = Instant::now();
        assert!(matches!(waiting.join().unwrap(), Err(EmbedError::Stopped)));
        assert!(started.elapsed() < Duration::from_secs(2), "waiting texts fail fast");
        assert!(!batcher.is_alive());
        assert!(
            matches!(batcher.embed(vec![text(7)], &Ticket::detached()), Err(EmbedError::Stopped)),
            "later calls fail at once"
        );
    }

    #[test]
    fn one_text_joins_the_next_batch_behind_a_long_request() {
        let forward = Recording::new(Duration::from_millis(2));
        let settings = BatchingSettings { max_batch_texts: 4, ..settings() };
        let batcher = Arc::new(Batcher::start(forward.clone(), settings, Metrics::new()));
        let long = {
            let batcher = batcher.clone();
            std::thread::spawn(move || batcher.embed((1000..1040).map(text).collect(), &Ticket::detached()))
        };
        wait_until("the long request to start", || !forward.batches.lock().unwrap().is_empty());
        let short = batcher.embed(vec![text(7)], &Ticket::detached()).unwrap();
        assert_eq!(short, vec![vec![7.0]]);
        let long = long.join().unwrap().unwrap();
        assert_eq!(long.len(), 40);
        assert!(long.iter().zip(1000..).all(|(v, id)| v[0] == id as f32), "answers go back in order");
        let batches = forward.batches.lock().unwrap();
        let at = batches.iter().position(|b| b.contains(&7)).expect("the short text ran");
        assert!(at <= 2, "the short text waited for {at} batches of the long request: {batches:?}");
    }

    #[test]
    fn an_abandoned_request_is_withdrawn_and_its_waiter_returns_at_once() {
        let forward = Recording::new(Duration::from_millis(20));
        let metrics = Metrics::new();
        let batcher = Arc::new(Batcher::start(forward.clone(), settings(), metrics.clone()));
        let cancel = CancellationToken::new();
        let ticket = Ticket::new(cancel.clone(), Instant::now() + Duration::from_secs(60));
        let abandoned = {
            let batcher = batcher.clone();
            std::thread::spawn(move || batcher.embed((1000..1050).map(text).collect(), &ticket))
        };
        wait_until("the first batch", || !forward.batches.lock().unwrap().is_empty());
        let cancelled_at = Instant::now();
        cancel.cancel();
        assert!(matches!(abandoned.join().unwrap(), Err(EmbedError::Abandoned)));
        assert!(cancelled_at.elapsed() < Duration::from_millis(500), "the waiter returns at once");
        // Another request runs right after the batch in flight, not after 50.
        let started = Instant::now();
        assert_eq!(batcher.embed(vec![text(7)], &Ticket::detached()).unwrap(), vec![vec![7.0]]);
        assert!(started.elapsed() < Duration::from_millis(200), "waited {:?}", started.elapsed());
        let ran: usize = forward.batches.lock().unwrap().iter().map(Vec::len).sum();
        assert!(ran <= 4, "{ran} texts of the abandoned request were encoded");
        assert!(metrics.encoder_abandoned_texts.get() >= 45);
        assert_eq!(metrics.embed_queue_texts.get(), 0);
    }

    #[test]
    fn work_over_the_request_budget_or_the_backlog_is_refused_at_once() {
        // One 100-token text per pass, 30 ms each: about 3,300 tokens/s.
        let forward = Recording::new(Duration::from_millis(30));
        let settings = BatchingSettings { max_request_tokens: 1500, max_queue_wait_ms: 50, ..settings() };
        let batcher = Arc::new(Batcher::start(forward.clone(), settings, Metrics::new()));
        let long = |id: u32| TokenizedText { ids: [101, id].into_iter().chain([7; 97]).chain([102]).collect() };
        let over = batcher.embed((0..16).map(long).collect(), &Ticket::detached());
        assert!(matches!(over, Err(EmbedError::OverBudget { tokens: 1600, limit: 1500 })), "{over:?}");
        // Admitted at once: no throughput is known yet.
        let queued = {
            let batcher = batcher.clone();
            std::thread::spawn(move || batcher.embed((0..10).map(long).collect(), &Ticket::detached()))
        };
        // Three passes (300 tokens) make the estimate; about 700 tokens, 0.2 s, are still queued.
        wait_until("the estimate", || forward.batches.lock().unwrap().len() >= 3);
        let refused = batcher.embed((20..30).map(long).collect(), &Ticket::detached());
        assert!(matches!(refused, Err(EmbedError::Backlog { .. })), "{refused:?}");
        assert!(queued.join().unwrap().is_ok(), "admitted work still completes");
    }

    #[test]
    fn the_estimate_is_not_trusted_before_enough_tokens() {
        let mut throughput = Throughput::default();
        throughput.record(24, 0.5); // a slow warm-up pass
        assert_eq!(throughput.tokens_per_sec(), 0.0);
        throughput.record(4000, 0.4);
        assert!(throughput.tokens_per_sec() > 4000.0);
    }
}
