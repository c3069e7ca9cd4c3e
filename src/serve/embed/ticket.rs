//! A request's ticket: whether anybody still waits for its answer, and by
//! when it must be done. Admission reads the deadline (see `admission`), the
//! queue and the encoder thread drop work whose ticket is abandoned, and a
//! [`Pending`](super::Pending) wait returns as soon as it is.

use std::time::{Duration, Instant};

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use super::EmbedError;

/// What a request's work carries through the server: whether anybody still
/// waits for its answer, and by when it must be done. The API cancels the
/// token when the request's future is dropped (client gone) or times out.
#[derive(Clone, Debug)]
pub struct Ticket {
    cancel: CancellationToken,
    deadline: Option<Instant>,
}

impl Ticket {
    pub(crate) fn new(cancel: CancellationToken, deadline: Instant) -> Self {
        Self { cancel, deadline: Some(deadline) }
    }

    /// Work that is never abandoned and has no deadline (warm-up, tools, tests).
    pub fn detached() -> Self {
        Self { cancel: CancellationToken::new(), deadline: None }
    }

    /// A ticket for a part of this work that must be done sooner (a
    /// request's wait for the encoder, within its `deadline_ms`): abandoned
    /// whenever this one is, and abandoning it leaves this one running.
    pub(crate) fn part_until(&self, deadline: Instant) -> Self {
        let deadline = self.deadline.map_or(deadline, |whole| whole.min(deadline));
        Self { cancel: self.cancel.child_token(), deadline: Some(deadline) }
    }

    /// True once nobody waits for the answer: stop working on it.
    pub(crate) fn is_abandoned(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Fails with [`EmbedError::Abandoned`] once nobody waits.
    pub(crate) fn check(&self) -> Result<(), EmbedError> {
        if self.is_abandoned() {
            Err(EmbedError::Abandoned)
        } else {
            Ok(())
        }
    }

    /// Marks the work abandoned: everything waiting on the ticket stops.
    pub(crate) fn abandon(&self) {
        self.cancel.cancel();
    }

    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    pub(super) fn time_left(&self) -> Option<Duration> {
        self.deadline.map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Resolves once the ticket is abandoned (a waiter's other arm).
    pub(super) fn abandoned(&self) -> WaitForCancellationFuture<'_> {
        self.cancel.cancelled()
    }
}
