//! The encoder's own thread: it waits for texts on the queue, takes a batch
//! (the policy is in `queue`), runs one forward pass and sends each vector
//! back to the request that asked for it. Texts whose requests were
//! abandoned are dropped before the pass, and a pass whose texts are all
//! abandoned is stopped between layers.
//!
//! If the thread dies (a panic in a forward pass), it says so once in the
//! log, closes the queue and fails every text still waiting with
//! [`EmbedError::Stopped`]; later calls fail at once, and
//! [`Batcher::is_alive`](super::Batcher::is_alive) turns false so `/ready`
//! reports 503.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crate::model::encoder::{Encoder, EncoderError, TokenizedText};

use super::batcher::Shared;
use super::queue::Taken;
use super::EmbedError;

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

/// Starts the encoder thread over `shared`'s queue. It runs until the queue
/// is closed and drained, or a forward pass panics; either way it leaves
/// the batcher stopped.
pub(super) fn spawn(shared: Arc<Shared>, encoder: Arc<dyn BatchForward>) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("shoprank-encoder".into())
        .spawn(move || {
            run_worker(&shared, &*encoder);
            stop(&shared);
        })
        .expect("spawn the encoder thread")
}

/// Waits for the next batch (see `queue`). `None` once closed and drained.
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
    let batch = queue.take_batch(&shared.settings);
    shared.publish_queue(&queue);
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::test_support::{settings, text};
    use super::super::{Batcher, Ticket};
    use super::*;
    use crate::serve::metrics::Metrics;

    /// Panics on its first batch, after its caller has queued more texts.
    struct Panicking(std::sync::Barrier);

    impl BatchForward for Panicking {
        fn forward(&self, _: &[&TokenizedText]) -> Result<Vec<Vec<f32>>, EncoderError> {
            self.0.wait();
            std::thread::sleep(Duration::from_millis(50));
            panic!("a forward pass failed");
        }
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
}
