//! Where `/recommend` computes the answers to requests the encoder refused
//! at admission (its backlog longer than the request's time left, or its
//! queue full): a few threads of their own, at a lower CPU priority.
//!
//! A degraded answer costs milliseconds where a forward pass over a
//! request's texts costs hundreds, so answering the excess of an overload
//! that way is cheap, but not free: clients that ask again as soon as they
//! are answered (a closed-loop load, a retry loop) would turn every cheap
//! answer into another request, and on the blocking pool those answers took
//! the cores from the encoder until it finished nothing in time (measured:
//! with 16 such clients, every answer degraded, none full). Here they run at
//! `nice` +10, which Linux's scheduler weighs at about a ninth of the
//! encoder's threads (110 against 1024): while the encoder is busy they get
//! what it leaves, and when it is idle they get the cores. Requests that were admitted and waited for the
//! encoder until their deadline are answered on the blocking pool as usual:
//! there are only as many of those as the encoder could take on.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};

/// Threads of the lane.
const THREADS: usize = 1;
/// Their niceness (0 is the default; higher is a smaller CPU share).
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

    /// Runs `job` on the lane; `None` if the lane has no thread left.
    pub(crate) async fn run<T: Send + 'static>(&self, job: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = answer.send(job());
        });
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).send(job).ok()?;
        answered.await.ok()
    }
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

/// This thread's niceness to [`NICENESS`]. Linux only; elsewhere a no-op.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: gettid and setpriority take and return plain integers; they
    // change this thread's scheduling priority and touch no memory.
    unsafe {
        let thread = libc::syscall(libc::SYS_gettid) as libc::id_t;
        if libc::setpriority(libc::PRIO_PROCESS, thread, NICENESS) != 0 {
            tracing::debug!("could not lower the overload lane's priority");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_on_the_lane_s_threads_at_a_lower_priority() {
        let lane = OverloadLane::start();
        let (name, niceness) = lane
            .run(|| {
                let name = std::thread::current().name().map(str::to_string);
                // SAFETY: getpriority reads this process's scheduling value.
                #[cfg(target_os = "linux")]
                let niceness =
                    unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::syscall(libc::SYS_gettid) as libc::id_t) };
                #[cfg(not(target_os = "linux"))]
                let niceness = NICENESS;
                (name, niceness)
            })
            .await
            .expect("answered");
        assert!(name.is_some_and(|n| n.starts_with("shoprank-overload-")));
        assert!(niceness >= NICENESS, "niceness {niceness}");
        assert_eq!(lane.run(|| panic!("a broken job")).await, None::<()>, "no answer, no hang");
        assert_eq!(lane.run(|| 7).await, Some(7), "the lane serves on after a panic");
    }
}
