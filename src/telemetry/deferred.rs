//! Ending a request's telemetry off the request path, on a machine with several CPUs
//! (see `after.rs` for the one-CPU case).
//!
//! Recording a finished request means about ten metric measurements (each an attribute-set
//! lookup in the SDK) and the end of up to three spans: microseconds that the client would
//! otherwise wait for. The request hands that work, as a closure with the timings already
//! taken, to a queue that a recorder thread drains on a short period. Senders never wake
//! the thread (no syscall per request); a full queue runs the job in place, so nothing is
//! ever dropped, only recorded later.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often the recorder drains the queue: the most a metric lags behind its request,
/// far below any scrape or export interval, and few enough wake-ups to cost nothing.
const DRAIN_PERIOD: Duration = Duration::from_millis(10);
/// Jobs waiting at most. At the gateway's peak rate (~20k requests/s per core) a period
/// produces ~200; the margin absorbs a stalled recorder before requests record in place,
/// and bounds what waiting jobs hold (a sampled span's job keeps its reply body).
const QUEUE_CAPACITY: usize = 4096;
/// Jobs the recorder runs between yields of its CPU. A drain after a busy period holds
/// ~125 requests' work (~0.4 ms); where the recorder shares a core with a busy worker, a
/// request that arrives meanwhile would wait for all of it. Yielding every few jobs lets
/// it run first; on an idle core a yield returns at once. (On one CPU the recorder is not
/// used at all: `after.rs`.)
const JOBS_PER_SLICE: usize = 16;

pub(crate) type Job = Box<dyn FnOnce() + Send>;

pub(crate) struct Deferred {
    tx: SyncSender<Job>,
    rx: Arc<Mutex<Receiver<Job>>>,
}

impl Deferred {
    /// Starts the recorder thread; it exits once this handle is dropped and the queue is
    /// empty. Without a thread (spawn failed) every job runs in place.
    pub(crate) fn start() -> Self {
        let (tx, rx) = sync_channel::<Job>(QUEUE_CAPACITY);
        let rx = Arc::new(Mutex::new(rx));
        let worker = rx.clone();
        // Normal priority on purpose: at nice 19 the recorder starved whenever requests kept
        // its core busy (measured on one core), the queue filled, requests recorded in
        // place, and the queued jobs held 70 MB.
        let spawned = std::thread::Builder::new().name("triage-telemetry".into()).spawn(move || loop {
            std::thread::sleep(DRAIN_PERIOD);
            if !drain(&worker, Some(JOBS_PER_SLICE)) {
                return;
            }
        });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "Cannot start the telemetry recorder; requests record in place.");
        }
        Self { tx, rx }
    }

    /// Queues `job`; runs it now if the queue is full.
    pub(crate) fn run(&self, job: impl FnOnce() + Send + 'static) {
        match self.tx.try_send(Box::new(job)) {
            Ok(()) => {}
            Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => job(),
        }
    }

    /// Runs every queued job now (before `/metrics` renders, and on flush).
    pub(crate) fn flush(&self) {
        drain(&self.rx, None);
    }
}

/// Runs the queued jobs, yielding the CPU after every `slice` of them; false once every
/// sender is gone and the queue is empty.
fn drain(rx: &Mutex<Receiver<Job>>, slice: Option<usize>) -> bool {
    let Ok(rx) = rx.lock() else { return false };
    let mut ran = 0usize;
    loop {
        match rx.try_recv() {
            Ok(job) => {
                job();
                ran += 1;
                if slice.is_some_and(|n| ran % n == 0) {
                    std::thread::yield_now();
                }
            }
            Err(TryRecvError::Empty) => return true,
            Err(TryRecvError::Disconnected) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn jobs_run_later_on_the_recorder_or_at_flush_and_none_is_lost_when_full() {
        let d = Deferred::start();
        let n = Arc::new(AtomicUsize::new(0));
        // More than the queue holds: the overflow runs in place, nothing is dropped.
        for _ in 0..QUEUE_CAPACITY + 100 {
            let n = n.clone();
            d.run(move || {
                n.fetch_add(1, Ordering::Relaxed);
            });
        }
        d.flush();
        assert_eq!(n.load(Ordering::Relaxed), QUEUE_CAPACITY + 100);
        let m = n.clone();
        d.run(move || {
            m.fetch_add(1, Ordering::Relaxed);
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while n.load(Ordering::Relaxed) == QUEUE_CAPACITY + 100 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(n.load(Ordering::Relaxed), QUEUE_CAPACITY + 101, "the recorder thread drains without a flush");
    }
}
