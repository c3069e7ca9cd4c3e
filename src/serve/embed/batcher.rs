//! The [`Batcher`]: the handle on the encoder thread that callers submit
//! tokenized texts through. A submission goes on the queue as one group,
//! or is refused at once (see `admission`); its vectors come back through a
//! [`Pending`], which the server awaits without holding a thread
//! ([`Pending::wait`]) and tools block on ([`Pending::wait_blocking`]).
//! Dropped unfinished, a `Pending` withdraws its texts from the queue, so
//! the encoder never embeds them for nobody.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use crate::config::BatchingSettings;
use crate::model::encoder::TokenizedText;
use crate::serve::metrics::Metrics;

use super::queue::{Entry, Group, Queue};
use super::worker::{self, BatchForward};
use super::{EmbedError, Ticket};

/// What the callers and the encoder thread share: the queue behind its lock,
/// the thread's wake-up, and the settings and metrics both sides use.
pub(super) struct Shared {
    queue: Mutex<Queue>,
    /// Set (before any waiting request is failed) once the thread is gone;
    /// read without the queue's lock by every readiness check.
    pub(super) stopped: AtomicBool,
    pub(super) wake: Condvar,
    pub(super) settings: BatchingSettings,
    pub(super) metrics: Metrics,
}

impl Shared {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn publish_queue(&self, queue: &Queue) {
        self.metrics.embed_queue_texts.set(queue.texts as i64);
    }
}

/// Handle to the encoder thread. Dropping it stops the thread once the queue
/// is drained.
pub struct Batcher {
    pub(super) shared: Arc<Shared>,
    worker: Option<std::thread::JoinHandle<()>>,
}

/// Texts on the encoder queue, and the way their vectors come back. Waiting
/// for them costs no thread in the async [`Pending::wait`] (the server's
/// path), or blocks in [`Pending::wait_blocking`]. Dropped unfinished (the
/// request was abandoned, failed or timed out), it withdraws the texts still
/// queued, so the encoder never embeds them for nobody.
pub(crate) struct Pending {
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
    pub(crate) async fn wait(mut self, ticket: &Ticket) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut out = vec![Vec::new(); self.texts];
        for _ in 0..self.texts {
            tokio::select! {
                biased;
                () = ticket.abandoned() => return Err(EmbedError::Abandoned),
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
    pub(crate) fn wait_blocking(self, ticket: &Ticket) -> Result<Vec<Vec<f32>>, EmbedError> {
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
        let worker = worker::spawn(shared.clone(), encoder);
        Self { shared, worker: Some(worker) }
    }

    /// False once the encoder thread has stopped: nothing can be embedded.
    pub(crate) fn is_alive(&self) -> bool {
        !self.shared.stopped.load(Ordering::Acquire)
    }

    /// Embeds a request's tokenized texts, blocking until all are done.
    pub fn embed(&self, texts: Vec<TokenizedText>, ticket: &Ticket) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.enqueue(texts, ticket)?.wait_blocking(ticket)
    }

    /// Puts texts on the request queue, or on the background queue
    /// (`background`, see `ingest`), unless the queue is closed or full, or
    /// (for a request) the work cannot be done in time (see `admission`).
    pub(super) fn submit(
        &self,
        texts: Vec<TokenizedText>,
        ticket: &Ticket,
        background: bool,
    ) -> Result<Pending, EmbedError> {
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use tokio_util::sync::CancellationToken;

    use super::super::test_support::{settings, text, wait_until, Recording};
    use super::*;

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
}
