//! A request's telemetry ends after its response is on its way.
//!
//! Ending a request's telemetry (about ten metric measurements, each an attribute-set
//! lookup in the SDK, and the end of up to three spans) takes microseconds. The request
//! hands it, with its timings already taken, to one of two places, chosen by the CPUs the
//! process may use (`available_parallelism`, which follows affinity and cgroup quotas):
//!
//! - **Several CPUs: the recorder thread** (`deferred.rs`), which drains a queue every
//!   10 ms beside the async workers; the worker that answered is free at once.
//! - **One CPU: a task spawned on the request's own worker.** tokio runs a task spawned from
//!   a worker next (its LIFO slot), so the job starts as soon as the connection task has
//!   written the response and yielded. A second thread on the only CPU can only interrupt
//!   requests: the recorder's drains landed in the middle of them and set the gateway's
//!   p99 (bench/README.md, "Fourth session" and "Eighth session").
//!
//! Outside a runtime the job runs in place. A scrape or a flush first waits for the jobs
//! already handed out, so a response the client has received is counted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The longest a scrape or a flush waits for outstanding jobs (they take microseconds; a
/// runtime that is no longer driven, at shutdown, never runs them).
const SETTLE_LIMIT: Duration = Duration::from_millis(200);

pub(crate) struct AfterResponse {
    /// Set on a machine with several CPUs.
    recorder: Option<super::deferred::Deferred>,
    /// Jobs spawned on a worker so far, and of those the ones that ran (or panicked, or
    /// were dropped unrun): a settle waits for the jobs started before it, not for a
    /// moment without jobs, which steady traffic may never have.
    counts: Arc<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    started: AtomicU64,
    done: AtomicU64,
}

/// One job, counted as done when it ran, panicked or was dropped unrun.
struct Outstanding(Arc<Counts>);

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.0.done.fetch_add(1, Ordering::AcqRel);
    }
}

impl AfterResponse {
    /// The recorder thread where several CPUs are available, else the request's worker.
    pub(crate) fn new() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        Self::with_recorder(cpus > 1)
    }

    fn with_recorder(recorder: bool) -> Self {
        Self { recorder: recorder.then(super::deferred::Deferred::start), counts: Arc::default() }
    }

    pub(crate) fn run(&self, job: impl FnOnce() + Send + 'static) {
        if let Some(r) = &self.recorder {
            return r.run(job);
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return job() };
        self.counts.started.fetch_add(1, Ordering::AcqRel);
        let outstanding = Outstanding(self.counts.clone());
        runtime.spawn(async move {
            let _outstanding = outstanding;
            job();
        });
    }

    fn started(&self) -> u64 {
        self.counts.started.load(Ordering::Acquire)
    }

    fn done_with(&self, started: u64) -> bool {
        self.counts.done.load(Ordering::Acquire) >= started
    }

    /// Waits until the jobs handed out so far have run (bounded), yielding to them; the
    /// recorder's queue is drained in place.
    pub(crate) async fn settled(&self) {
        if let Some(r) = &self.recorder {
            return r.flush();
        }
        let (started, deadline) = (self.started(), Instant::now() + SETTLE_LIMIT);
        while !self.done_with(started) && Instant::now() < deadline {
            tokio::task::yield_now().await;
        }
    }

    /// [`Self::settled`] for a thread outside the runtime's workers (flush, shutdown).
    pub(crate) fn settle_blocking(&self) {
        if let Some(r) = &self.recorder {
            return r.flush();
        }
        let (started, deadline) = (self.started(), Instant::now() + SETTLE_LIMIT);
        while !self.done_with(started) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(100));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[tokio::test]
    async fn jobs_run_after_the_current_task_yields_and_settling_waits_for_them() {
        let after = AfterResponse::with_recorder(false);
        let ran = Arc::new(AtomicUsize::new(0));
        for _ in 0..3 {
            let ran = ran.clone();
            after.run(move || {
                ran.fetch_add(1, Ordering::Relaxed);
            });
        }
        assert_eq!(ran.load(Ordering::Relaxed), 0, "not in place: the caller's response goes first");
        after.settled().await;
        assert_eq!(ran.load(Ordering::Relaxed), 3);
        assert!(after.done_with(3));

        // A job that panics is still counted as done, so no settle waits for it.
        after.run(|| panic!("a broken job"));
        after.settled().await;
        assert!(after.done_with(4));
    }

    #[test]
    fn outside_a_runtime_a_job_runs_in_place() {
        let after = AfterResponse::with_recorder(false);
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        after.run(move || {
            r.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(ran.load(Ordering::Relaxed), 1);
    }
}
