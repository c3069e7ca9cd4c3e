//! Where `/recommend` computes the answers to requests the encoder refused
//! at admission (its backlog longer than the request's time left, or its
//! queue full): a thread of its own, at the lowest CPU priority.
//!
//! A degraded answer costs milliseconds where a forward pass over a
//! request's texts costs hundreds, so answering the excess of an overload
//! that way is cheap, but not free: clients that ask again as soon as they
//! are answered (a closed-loop load, a retry loop) would turn every cheap
//! answer into another request, and on the blocking pool those answers took
//! the cores from the encoder until it finished nothing in time (measured:
//! with 16 such clients, every answer degraded, none full).
//!
//! So the lane's thread runs under Linux's `SCHED_IDLE` policy: it gets a
//! core only when no ordinary thread wants it, and a waking encoder thread
//! preempts it at once. `nice` +10, used before, was not enough: the forward
//! pass is fork-join on rayon's threads, so each time one of them woke up
//! behind a lane job and waited out the scheduler's wake-up granularity (a
//! few milliseconds), the other waited at the join; the lane took 0.35 of
//! the 2 cores and the encoder lost 0.4 (`cargo bench --bench resilience`,
//! 32 and 64 closed-loop clients, AVX2-only EPYC). Where `SCHED_IDLE` is
//! refused, the thread falls back to `nice` +10.
//!
//! An idle-priority thread can starve while the encoder keeps every core
//! busy, so a job that has not started by the time its request must be
//! answered ([`OverloadLane::run`]'s `fall_back_at`) is taken back and run
//! on the blocking pool instead. A job the lane has already started is left
//! to it: preempted halfway, it finishes when a core comes free, which under
//! a closed loop of clients can be later than its deadline (not within
//! it: the request timeout still bounds it).
//!
//! A lane job takes the embedding cache's lock and the catalog's read lock
//! for microseconds; preempted while holding one, it makes the encoder's
//! threads wait, which gives it the idle core it needs to finish. That
//! inversion is short, so the job keeps the locks rather than copying what
//! it needs on the blocking pool first.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, TryLockError};
use std::time::Instant;

/// Threads of the lane.
const THREADS: usize = 1;
/// Their niceness where `SCHED_IDLE` is refused (0 is the default; higher
/// is a smaller CPU share).
const NICENESS: i32 = 10;

type Job = Box<dyn FnOnce() + Send>;

/// The lane's queue; its threads stop when it is dropped.
pub(crate) struct OverloadLane {
    jobs: Mutex<Sender<Job>>,
}

impl OverloadLane {
    pub(crate) fn start() -> Self {
        let (jobs, queue) = channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for index in 0..THREADS {
            let queue = queue.clone();
            let spawned =
                std::thread::Builder::new().name(format!("shoprank-overload-{index}")).spawn(move || work(&queue));
            if let Err(error) = spawned {
                tracing::warn!(%error, "could not start an overload-lane thread");
            }
        }
        Self { jobs: Mutex::new(jobs) }
    }

    /// Runs `job` on the lane; if no lane thread has started it by
    /// `fall_back_at` (or the lane has no thread left), on the blocking pool
    /// instead. `None` if the job panicked.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
        fall_back_at: Instant,
    ) -> Option<T> {
        // Whoever takes the job out first runs it: a lane thread, or the
        // fallback below.
        let claim = Arc::new(Mutex::new(Some(job)));
        let (answer, mut answered) = tokio::sync::oneshot::channel();
        let lane_claim = claim.clone();
        let lane_job: Job = Box::new(move || {
            if let Some(job) = take(&lane_claim) {
                let _ = answer.send(job());
            }
        });
        if self.jobs.lock().unwrap_or_else(|e| e.into_inner()).send(lane_job).is_ok() {
            if let Ok(answer) = tokio::time::timeout_at(fall_back_at.into(), &mut answered).await {
                return answer.ok();
            }
        }
        // Never blocks this runtime thread: a claim that is locked is the
        // lane's thread taking the job.
        let job = match claim.try_lock() {
            Ok(mut job) => job.take(),
            Err(TryLockError::Poisoned(job)) => job.into_inner().take(),
            Err(TryLockError::WouldBlock) => None,
        };
        match job {
            Some(job) => tokio::task::spawn_blocking(job).await.ok(),
            // A lane thread has it: its answer is on the way.
            None => answered.await.ok(),
        }
    }
}

fn take<F>(claim: &Mutex<Option<F>>) -> Option<F> {
    claim.lock().unwrap_or_else(|e| e.into_inner()).take()
}

fn work(queue: &Mutex<Receiver<Job>>) {
    lower_priority();
    loop {
        let job = match queue.lock().unwrap_or_else(|e| e.into_inner()).recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        // A panicking job drops its answer's sender (the caller sees no
        // answer) and leaves the thread serving.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
    }
}

/// This thread to the `SCHED_IDLE` policy, else its niceness to
/// [`NICENESS`]. Linux only; elsewhere a no-op.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: sched_setscheduler reads the parameter struct passed by
    // reference (pid 0: the calling thread); gettid and setpriority take and
    // return plain integers. They change this thread's scheduling only.
    unsafe {
        let param = libc::sched_param { sched_priority: 0 };
        if libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) == 0 {
            return;
        }
        let thread = libc::syscall(libc::SYS_gettid) as libc::id_t;
        if libc::setpriority(libc::PRIO_PROCESS, thread, NICENESS) != 0 {
            tracing::debug!("could not lower the overload lane's priority");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    #[tokio::test]
    async fn jobs_run_on_the_lane_s_threads_at_idle_priority() {
        let lane = OverloadLane::start();
        let (name, idle_or_nice) = lane
            .run(
                || {
                    let name = std::thread::current().name().map(str::to_string);
                    // SAFETY: sched_getscheduler and getpriority read this
                    // thread's scheduling values.
                    #[cfg(target_os = "linux")]
                    let lowered = unsafe {
                        libc::sched_getscheduler(0) == libc::SCHED_IDLE
                            || libc::getpriority(libc::PRIO_PROCESS, libc::syscall(libc::SYS_gettid) as libc::id_t)
                                >= NICENESS
                    };
                    #[cfg(not(target_os = "linux"))]
                    let lowered = true;
                    (name, lowered)
                },
                far(),
            )
            .await
            .expect("answered");
        assert!(name.is_some_and(|n| n.starts_with("shoprank-overload-")));
        assert!(idle_or_nice, "the lane runs at idle priority (or nice {NICENESS})");
        assert_eq!(lane.run(|| panic!("a broken job"), far()).await, None::<()>, "no answer, no hang");
        assert_eq!(lane.run(|| 7, far()).await, Some(7), "the lane serves on after a panic");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_the_lane_has_not_started_by_its_time_runs_on_the_blocking_pool() {
        let lane = Arc::new(OverloadLane::start());
        // Keep the lane's one thread busy until released.
        let (release, held) = std::sync::mpsc::channel::<()>();
        let busy = {
            let lane = lane.clone();
            tokio::spawn(async move { lane.run(move || held.recv().is_ok(), far()).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = Instant::now();
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = runs.clone();
        let job = move || {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::thread::current().name().map(str::to_string)
        };
        let thread = lane.run(job, started + Duration::from_millis(100)).await.expect("answered");
        assert!(started.elapsed() >= Duration::from_millis(100), "waited for the lane until its time");
        assert!(
            !thread.as_deref().is_some_and(|n| n.starts_with("shoprank-overload-")),
            "ran off the lane: {thread:?}"
        );
        release.send(()).unwrap();
        assert_eq!(busy.await.unwrap(), Some(true));
        // The lane, free again, runs jobs itself (after the stale copy of
        // the job taken back, which it finds empty: it ran once).
        let name = lane.run(|| std::thread::current().name().map(str::to_string), far()).await.expect("answered");
        assert!(name.is_some_and(|n| n.starts_with("shoprank-overload-")));
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1, "the job taken back ran once");
    }
}
