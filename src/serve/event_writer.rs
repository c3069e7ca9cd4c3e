//! Writing feedback events durably, fast, and never silently dropping one.
//!
//! Requests hand their validated batch to a bounded queue
//! (`events.max_queued_events`, counted in events) and wait for its commit
//! without holding a thread. One writer thread takes whatever has queued
//! meanwhile, up to `events.max_commit_events`, and commits it in one
//! transaction: one fsync (or one PostgreSQL commit) for several requests,
//! which is what lets a single disk take tens of thousands of events a
//! second. A request is answered only after its transaction committed; a
//! batch that would overfill the queue is refused at once (503).
//!
//! A request whose client goes away after queueing is still written: the
//! events are valid, and their ids make the client's retry a no-op.
//!
//! A shopper's erasure (`DELETE /v1/users/{id}`) goes through the same
//! queue, in its place: every batch queued before it is committed first,
//! then the erasure runs in a transaction of its own. So no event accepted
//! before the erasure is written after it answered; a batch queued after it
//! is new data, and kept.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use tokio::sync::oneshot;

use crate::config::EventSettings;
use crate::serve::metrics::Metrics;
use crate::store::event_log::{EventStore, FeedbackEvent};
use crate::store::StoreError;

/// Which events of a batch were new (the others were stored before).
pub(crate) type Committed = Result<Vec<bool>, Arc<StoreError>>;

/// How many stored events of a user an erasure deleted.
pub(crate) type Erased = Result<u64, Arc<StoreError>>;

#[derive(Debug, thiserror::Error)]
pub(crate) enum SubmitError {
    #[error("the event queue holds {queued} of at most {limit} events (events.max_queued_events)")]
    Full { queued: usize, limit: usize },
    #[error("the event writer has stopped")]
    Stopped,
}

/// A request's batch of events.
struct Append {
    events: Vec<FeedbackEvent>,
    done: oneshot::Sender<Committed>,
}

/// A shopper's erasure: every stored event of `user_id` deleted.
struct Erase {
    user_id: String,
    done: oneshot::Sender<Erased>,
}

enum Job {
    Append(Append),
    Erase(Erase),
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// Events queued or being committed: what the bound counts.
    events: usize,
    stopping: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
}

/// The queue and its writer thread; dropping it commits what is queued,
/// then stops the thread.
pub(crate) struct EventWriter {
    shared: Arc<Shared>,
    limit: usize,
    worker: Option<std::thread::JoinHandle<()>>,
}

impl EventWriter {
    pub(crate) fn start(
        store: Arc<dyn EventStore>,
        settings: EventSettings,
        metrics: Metrics,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared { queue: Mutex::new(Queue::default()), wake: Condvar::new() });
        let worker = {
            let shared = shared.clone();
            std::thread::Builder::new().name("shoprank-events".into()).spawn(move || {
                yield_to_requests();
                write_loop(&shared, store.as_ref(), settings.max_commit_events, &metrics)
            })?
        };
        Ok(Self { shared, limit: settings.max_queued_events, worker: Some(worker) })
    }

    /// Queues `events`; the receiver resolves once they are committed.
    pub(crate) fn submit(&self, events: Vec<FeedbackEvent>) -> Result<oneshot::Receiver<Committed>, SubmitError> {
        let (done, receiver) = oneshot::channel();
        let mut queue = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
        if queue.stopping {
            return Err(SubmitError::Stopped);
        }
        if queue.events + events.len() > self.limit {
            return Err(SubmitError::Full { queued: queue.events, limit: self.limit });
        }
        queue.events += events.len();
        queue.jobs.push_back(Job::Append(Append { events, done }));
        drop(queue);
        self.shared.wake.notify_one();
        Ok(receiver)
    }

    /// Queues the erasure of every stored event of `user_id`, behind the
    /// batches queued now (which are committed first, then erased with the
    /// rest); the receiver resolves once the erasure is committed. It holds
    /// no events, so a full queue does not refuse it.
    pub(crate) fn erase(&self, user_id: String) -> Result<oneshot::Receiver<Erased>, SubmitError> {
        let (done, receiver) = oneshot::channel();
        let mut queue = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
        if queue.stopping {
            return Err(SubmitError::Stopped);
        }
        queue.jobs.push_back(Job::Erase(Erase { user_id, done }));
        drop(queue);
        self.shared.wake.notify_one();
        Ok(receiver)
    }

    /// Events queued or being committed now (the tests wait on it).
    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        self.shared.queue.lock().unwrap_or_else(|p| p.into_inner()).events
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        self.shared.queue.lock().unwrap_or_else(|p| p.into_inner()).stopping = true;
        self.shared.wake.notify_all();
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

/// Lowers this thread's priority (nice 10), so that on a busy machine the
/// commits' CPU work (SQLite's inserts and index updates) waits for the
/// encoder and the requests, not the other way round: a request's latency
/// is what the storefront feels, a commit's is a few milliseconds more
/// before an answer nobody is looking at. Linux only; elsewhere a no-op.
fn yield_to_requests() {
    #[cfg(target_os = "linux")]
    // SAFETY: gettid and setpriority take and return plain integers; they
    // change this thread's scheduling priority and touch no memory.
    unsafe {
        let thread = libc::syscall(libc::SYS_gettid) as libc::id_t;
        if libc::setpriority(libc::PRIO_PROCESS, thread, 10) != 0 {
            tracing::debug!("could not lower the event writer's priority");
        }
    }
}

fn write_loop(shared: &Shared, store: &dyn EventStore, max_commit: usize, metrics: &Metrics) {
    loop {
        // Take an erasure alone, or every batch queued meanwhile up to the
        // next erasure and max_commit events (at least one, however large).
        let jobs = {
            let mut queue = shared.queue.lock().unwrap_or_else(|p| p.into_inner());
            while queue.jobs.is_empty() && !queue.stopping {
                queue = shared.wake.wait(queue).unwrap_or_else(|p| p.into_inner());
            }
            if let Some(Job::Erase(_)) = queue.jobs.front() {
                if let Some(Job::Erase(erase)) = queue.jobs.pop_front() {
                    drop(queue);
                    run_erase(store, erase, metrics);
                }
                continue;
            }
            let mut taken = Vec::new();
            let mut events = 0;
            while let Some(Job::Append(job)) = queue.jobs.front() {
                if !taken.is_empty() && events + job.events.len() > max_commit {
                    break;
                }
                events += job.events.len();
                if let Some(Job::Append(job)) = queue.jobs.pop_front() {
                    taken.push(job);
                }
            }
            if taken.is_empty() {
                return;
            }
            taken
        };
        let started = Instant::now();
        let events: usize = jobs.iter().map(|job| job.events.len()).sum();
        let results = commit(store, &jobs);
        metrics.event_commit_seconds.observe(started.elapsed().as_secs_f64());
        metrics.event_commit_events.observe(events as f64);
        {
            let mut queue = shared.queue.lock().unwrap_or_else(|p| p.into_inner());
            queue.events -= events;
            metrics.event_queue.set(queue.events as i64);
        }
        for (job, result) in jobs.into_iter().zip(results) {
            if let Ok(new) = &result {
                count(metrics, &job.events, new);
            }
            let _ = job.done.send(result);
        }
    }
}

/// Deletes the user's stored events; counted and logged with the count
/// only: the id is personal data, and a log is kept longer than the store.
fn run_erase(store: &dyn EventStore, erase: Erase, metrics: &Metrics) {
    let result = store.erase_user(&erase.user_id).map_err(Arc::new);
    match &result {
        Ok(deleted) => {
            metrics.user_erasures.inc();
            metrics.erased_events.inc_by(*deleted);
            tracing::info!(deleted_events = deleted, "a user's events were erased");
        }
        Err(error) => tracing::error!(%error, "erasing a user's events failed"),
    }
    let _ = erase.done.send(result);
}

/// Counts stored events by kind and variant, and the duplicates, once
/// committed (whether or not the request still waits for its answer).
fn count(metrics: &Metrics, events: &[FeedbackEvent], new: &[bool]) {
    let mut stored: std::collections::HashMap<(&str, &str), u64> = std::collections::HashMap::new();
    for (event, _) in events.iter().zip(new).filter(|(_, new)| **new) {
        *stored.entry((event.kind.as_str(), event.variant.as_deref().unwrap_or("none"))).or_default() += 1;
    }
    let mut total = 0;
    for ((kind, variant), n) in stored {
        metrics.events_stored.with_label_values(&[kind, variant]).inc_by(n);
        total += n;
    }
    metrics.events_duplicate.inc_by(events.len() as u64 - total);
}

/// Commits every job in one transaction. If the store refuses the data
/// (a constraint, a value it cannot hold), each job is retried in a
/// transaction of its own, so that the batch at fault fails alone rather
/// than every request that shared its commit; any other failure (the store
/// unreachable or busy) fails them all at once.
fn commit(store: &dyn EventStore, jobs: &[Append]) -> Vec<Committed> {
    let batches: Vec<&[FeedbackEvent]> = jobs.iter().map(|job| job.events.as_slice()).collect();
    match store.append(&batches) {
        Ok(new) => new.into_iter().map(Ok).collect(),
        // Unreachable or busy: every request fails now (and retries), rather
        // than each waiting out the store's timeout in turn.
        Err(error) if jobs.len() == 1 || !error.is_refusal() => {
            tracing::error!(%error, requests = jobs.len(), "committing feedback events failed");
            let error = Arc::new(error);
            jobs.iter().map(|_| Err(error.clone())).collect()
        }
        Err(error) => {
            tracing::warn!(%error, requests = jobs.len(), "a group commit of events failed; committing each request alone");
            jobs.iter().map(|job| commit(store, std::slice::from_ref(job)).remove(0)).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;
    use crate::store::event_log::{EventKind, VariantCount};

    /// A store for the writer's tests: its commits wait at `gate` (when
    /// there is one) until the test lets them through, and it refuses any
    /// commit holding an event with id "poison", as a constraint would.
    #[derive(Default)]
    struct TestStore {
        gate: Option<Mutex<mpsc::Receiver<()>>>,
        commits: Mutex<Vec<usize>>,
        /// What the commits stored, less what erasures deleted.
        stored: Mutex<Vec<FeedbackEvent>>,
    }

    impl EventStore for TestStore {
        fn append(&self, batches: &[&[FeedbackEvent]]) -> Result<Vec<Vec<bool>>, StoreError> {
            if let Some(gate) = &self.gate {
                // A timeout rather than a hang if an assertion fails first.
                gate.lock().unwrap().recv_timeout(std::time::Duration::from_secs(10)).unwrap();
            }
            if batches.iter().flat_map(|b| b.iter()).any(|e| e.event_id == "poison") {
                let refusal = rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT);
                return Err(StoreError::Sqlite(rusqlite::Error::SqliteFailure(refusal, None)));
            }
            self.commits.lock().unwrap().push(batches.iter().map(|b| b.len()).sum());
            self.stored.lock().unwrap().extend(batches.iter().flat_map(|b| b.iter().cloned()));
            Ok(batches.iter().map(|b| vec![true; b.len()]).collect())
        }
        fn erase_user(&self, user_id: &str) -> Result<u64, StoreError> {
            let mut stored = self.stored.lock().unwrap();
            let before = stored.len();
            stored.retain(|e| e.user_id != user_id);
            Ok((before - stored.len()) as u64)
        }
        fn scan(&self, _: &[EventKind], _: &mut dyn FnMut(FeedbackEvent)) -> Result<(), StoreError> {
            Ok(())
        }
        fn variant_counts(&self) -> Result<Vec<VariantCount>, StoreError> {
            Ok(Vec::new())
        }
        fn event_count(&self) -> Result<u64, StoreError> {
            Ok(0)
        }
    }

    fn events(n: usize) -> Vec<FeedbackEvent> {
        events_of("u", n)
    }

    fn events_of(user: &str, n: usize) -> Vec<FeedbackEvent> {
        (0..n)
            .map(|i| FeedbackEvent {
                event_id: format!("{user}{i}"),
                user_id: user.into(),
                item_id: "i".into(),
                kind: EventKind::Click,
                timestamp_ms: 0,
                request_id: None,
                variant: None,
                quantity: None,
                price: None,
            })
            .collect()
    }

    #[test]
    fn a_full_queue_refuses_and_waiting_batches_share_one_commit() {
        let (open, gate) = mpsc::channel();
        let store = Arc::new(TestStore { gate: Some(Mutex::new(gate)), ..TestStore::default() });
        let settings =
            EventSettings { max_batch_events: 10, max_queued_events: 30, max_commit_events: 100, max_future_hours: 1 };
        let writer = EventWriter::start(store.clone(), settings, Metrics::new()).unwrap();
        // The first batch is taken by the writer, which then waits at the gate.
        let first = writer.submit(events(10)).unwrap();
        while !writer.shared.queue.lock().unwrap().jobs.is_empty() {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let second = writer.submit(events(10)).unwrap();
        let third = writer.submit(events(10)).unwrap();
        // 30 events are queued or committing: the next batch is refused, not dropped.
        assert!(matches!(writer.submit(events(1)), Err(SubmitError::Full { queued: 30, limit: 30 })));
        for _ in 0..2 {
            open.send(()).unwrap();
        }
        for receiver in [first, second, third] {
            assert_eq!(receiver.blocking_recv().unwrap().unwrap(), vec![true; 10]);
        }
        // The two batches that queued behind the first went in one commit.
        assert_eq!(*store.commits.lock().unwrap(), [10, 20]);
        assert_eq!(writer.queued(), 0);
        drop(open);
    }

    #[test]
    fn a_batch_the_store_refuses_fails_alone() {
        let mut poisoned = events(3);
        poisoned[1].event_id = "poison".into();
        let jobs: Vec<Append> = [events(2), poisoned, events(4)]
            .into_iter()
            .map(|events| Append { events, done: oneshot::channel().0 })
            .collect();
        let results = commit(&TestStore::default(), &jobs);
        assert_eq!(results.len(), 3);
        assert_eq!(results[0].as_ref().unwrap(), &vec![true; 2]);
        assert!(results[1].is_err(), "the refused batch fails");
        assert_eq!(results[2].as_ref().unwrap(), &vec![true; 4]);
        // Through the writer: the error reaches the request, the queue empties.
        let writer = EventWriter::start(
            Arc::new(TestStore::default()),
            EventSettings { max_batch_events: 10, max_queued_events: 30, max_commit_events: 100, max_future_hours: 1 },
            Metrics::new(),
        )
        .unwrap();
        let mut bad = events(1);
        bad[0].event_id = "poison".into();
        assert!(writer.submit(bad).unwrap().blocking_recv().unwrap().is_err());
        assert!(writer.submit(events(2)).unwrap().blocking_recv().unwrap().is_ok());
        assert_eq!(writer.queued(), 0);
    }

    /// Issue 30: an erasure queued behind batches of its user's events (one
    /// being committed, one still queued) deletes them all: none is written
    /// after it answered. A batch queued after it is kept.
    #[test]
    fn an_erasure_deletes_the_events_queued_before_it_and_keeps_later_ones() {
        let (open, gate) = mpsc::channel();
        let store = Arc::new(TestStore { gate: Some(Mutex::new(gate)), ..TestStore::default() });
        let settings =
            EventSettings { max_batch_events: 10, max_queued_events: 30, max_commit_events: 100, max_future_hours: 1 };
        let metrics = Metrics::new();
        let writer = EventWriter::start(store.clone(), settings, metrics.clone()).unwrap();
        // The first batch is taken by the writer, which then waits at the gate.
        let committing = writer.submit(events_of("gone", 3)).unwrap();
        while !writer.shared.queue.lock().unwrap().jobs.is_empty() {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let queued = writer.submit([events_of("gone", 2), events_of("stays", 1)].concat()).unwrap();
        let mut erased = writer.erase("gone".into()).unwrap();
        let mut after = events_of("gone", 1);
        after[0].event_id = "came-back".into();
        let after = writer.submit(after).unwrap();
        // Nothing is erased while the batches before it wait.
        assert!(erased.try_recv().is_err());
        for _ in 0..3 {
            open.send(()).unwrap();
        }
        assert_eq!(erased.blocking_recv().unwrap().unwrap(), 5, "both earlier batches, committed then erased");
        assert!(committing.blocking_recv().unwrap().is_ok() && queued.blocking_recv().unwrap().is_ok());
        assert!(after.blocking_recv().unwrap().is_ok());
        let ids: Vec<String> = store.stored.lock().unwrap().iter().map(|e| e.event_id.clone()).collect();
        assert_eq!(ids, ["stays0", "came-back"]);
        // A second erasure finds nothing of what it erased.
        let again = writer.erase("gone".into()).unwrap();
        assert_eq!(again.blocking_recv().unwrap().unwrap(), 1, "only the event queued after the first");
        let text = metrics.render();
        assert!(text.contains("shoprank_user_erasures_total 2"), "{text}");
        assert!(text.contains("shoprank_erased_events_total 6"), "{text}");
        assert_eq!(writer.queued(), 0);
    }
}
