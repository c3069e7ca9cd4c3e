//! Which request work the encoder takes: only what it can do
//! (`EmbedError` → 503 or 422).
//! - a request's new texts may hold at most `batching.max_request_tokens`
//!   tokens (one request cannot hold the encoder for seconds);
//! - at most `batching.max_queued_texts` texts wait in all (checked on
//!   submission, for both lanes);
//! - the work queued ahead of a request, at the encoder's measured
//!   throughput, must be done within `batching.max_queue_wait_ms`, and all
//!   of it before the request's deadline (its [`Ticket`]'s); and its own
//!   work must not push a request admitted before it past that request's
//!   deadline (round robin shares the encoder: see `Queue::makes_late`).
//!   Under overload
//!   the surplus is refused at once (with Retry-After) instead of waiting to
//!   time out, so the encoder spends its time on answers somebody still
//!   waits for.
//!
//! Background work (catalog ingestion, see `ingest`) has no token or time
//! budget.

use std::time::Duration;

use crate::model::encoder::TokenizedText;

use super::queue::Queue;
use super::{Batcher, EmbedError, Pending, Ticket};

impl Batcher {
    /// Puts a request's tokenized texts on the queue, or refuses them at
    /// once if they cannot be admitted (see the module docs).
    pub(crate) fn enqueue(&self, texts: Vec<TokenizedText>, ticket: &Ticket) -> Result<Pending, EmbedError> {
        let tokens: usize = texts.iter().map(TokenizedText::len).sum();
        let limit = self.shared.settings.max_request_tokens;
        if tokens > limit {
            return Err(EmbedError::OverBudget { tokens, limit });
        }
        self.submit(texts, ticket, false)
    }

    /// Refuses at once, before the texts are even tokenized, work of at
    /// least `min_tokens` tokens that [`Batcher::embed`] would refuse. Under
    /// overload most requests are refused, so they should cost little.
    pub(crate) fn precheck(&self, min_tokens: usize, ticket: &Ticket) -> Result<(), EmbedError> {
        let limit = self.shared.settings.max_request_tokens;
        if min_tokens > limit {
            return Err(EmbedError::OverBudget { tokens: min_tokens, limit });
        }
        let queue = self.shared.lock();
        self.admit_in_time(&queue, min_tokens, ticket)
    }

    /// Refuses a request the encoder cannot serve in time: too much work
    /// ahead of it, or not enough time left for that work and its own.
    pub(super) fn admit_in_time(&self, queue: &Queue, tokens: usize, ticket: &Ticket) -> Result<(), EmbedError> {
        let Some(ahead) = queue.wait_ahead(tokens) else { return Ok(()) };
        let limit = Duration::from_millis(self.shared.settings.max_queue_wait_ms);
        let own = tokens as f64 / queue.throughput.planning_rate();
        let time_left = ticket.time_left().unwrap_or(Duration::MAX);
        if ahead > limit.as_secs_f64() || ahead + own > time_left.as_secs_f64() {
            let limit_ms = limit.min(time_left).as_millis() as u64;
            return Err(EmbedError::Backlog { wait_ms: ((ahead + own) * 1e3) as u64, limit_ms });
        }
        // Nor may it make a request admitted before it late.
        if let Some(their_time_left) = queue.makes_late(tokens) {
            let limit_ms = their_time_left.as_millis() as u64;
            return Err(EmbedError::Backlog { wait_ms: ((ahead + own) * 1e3) as u64, limit_ms });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::super::test_support::{settings, wait_until, Recording};
    use super::*;
    use crate::config::BatchingSettings;
    use crate::serve::metrics::Metrics;

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
}
