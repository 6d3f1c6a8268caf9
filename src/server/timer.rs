//! hyper's header read timeout on a coarse clock.
//!
//! hyper arms the header read timeout each time a keep-alive connection waits for its
//! next request, that is once per request. With tokio's timer (`hyper_util::rt::TokioTimer`)
//! each arming registers a timer entry, and whenever its deadline is earlier than the
//! wheel's next wake-up (the usual case: the upstream timeouts of the request just
//! answered are longer) tokio wakes its I/O driver with a write to an eventfd, a syscall
//! per request even on the thread that runs the driver. This timer keeps those deadlines
//! out of tokio's wheel: a sleep is a deadline in a list that one task checks every
//! `tick`, so arming costs a lock and a push, and a timeout fires at most a tick late
//! (the tick is a tenth of the timeout, at most 100 ms).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::task::AtomicWaker;
use hyper::rt::{Sleep, Timer};

/// The coarsest tick: a header timeout fires at most this late.
const MAX_TICK: Duration = Duration::from_millis(100);
const MIN_TICK: Duration = Duration::from_millis(1);

#[derive(Clone)]
pub(crate) struct CoarseTimer {
    armed: Arc<Mutex<Vec<Weak<Deadline>>>>,
}

struct Deadline {
    at: Instant,
    fired: AtomicBool,
    waker: AtomicWaker,
}

pub(crate) struct CoarseSleep {
    deadline: Arc<Deadline>,
    list: Weak<Mutex<Vec<Weak<Deadline>>>>,
    listed: bool,
}

impl CoarseTimer {
    /// A timer precise to a tenth of `timeout` (within 1-100 ms). Starts the task that
    /// fires deadlines, on the current tokio runtime; it ends when the timer and its
    /// clones are dropped.
    pub(crate) fn new(timeout: Duration) -> Self {
        let tick = (timeout / 10).clamp(MIN_TICK, MAX_TICK);
        let armed = Arc::new(Mutex::new(Vec::new()));
        let list = Arc::downgrade(&armed);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(tick);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let Some(list) = list.upgrade() else { return };
                fire_due(&list, Instant::now());
            }
        });
        Self { armed }
    }
}

/// Wakes every sleep whose deadline has passed and forgets those that fired or were
/// dropped (a dropped sleep's entry no longer upgrades). The list is taken out of the lock
/// to be scanned, so arming a sleep never waits for a scan: at most for the put-back of the
/// sleeps still waiting (one per idle keep-alive connection).
fn fire_due(list: &Mutex<Vec<Weak<Deadline>>>, now: Instant) {
    let Ok(mut armed) = list.lock() else { return };
    let mut scanned = std::mem::take(&mut *armed);
    drop(armed);
    let mut due = Vec::new();
    scanned.retain(|w| match w.upgrade() {
        None => false,
        Some(d) if d.at <= now => {
            due.push(d);
            false
        }
        Some(_) => true,
    });
    if let Ok(mut armed) = list.lock() {
        armed.append(&mut scanned);
    }
    for d in due {
        d.fired.store(true, Ordering::Release);
        d.waker.wake();
    }
}

impl Timer for CoarseTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, at: Instant) -> Pin<Box<dyn Sleep>> {
        Box::pin(CoarseSleep {
            deadline: Arc::new(Deadline { at, fired: AtomicBool::new(false), waker: AtomicWaker::new() }),
            list: Arc::downgrade(&self.armed),
            listed: false,
        })
    }
}

impl Future for CoarseSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let d = &self.deadline;
        if d.fired.load(Ordering::Acquire) || Instant::now() >= d.at {
            return Poll::Ready(());
        }
        d.waker.register(cx.waker());
        if !self.listed {
            let Some(list) = self.list.upgrade() else {
                // The timer is gone (the server stopped): nothing will fire this sleep.
                return Poll::Pending;
            };
            if let Ok(mut armed) = list.lock() {
                armed.push(Arc::downgrade(&self.deadline));
            }
            self.listed = true;
        }
        // Fired between the check above and the registration: do not miss the wake-up.
        if self.deadline.fired.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

impl Sleep for CoarseSleep {}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_sleep_fires_about_a_tick_after_its_deadline_and_a_dropped_one_is_forgotten() {
        let timer = CoarseTimer::new(Duration::from_millis(200)); // tick 20 ms
        let started = Instant::now();
        timer.sleep(Duration::from_millis(60)).await;
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(60), "fired early: {took:?}");
        assert!(took < Duration::from_millis(60 + 20 * 5), "fired far over a tick late: {took:?}");

        // A sleep that is polled once and dropped leaves no entry behind after a tick.
        let mut dropped = timer.sleep(Duration::from_secs(60));
        let waker = futures::task::noop_waker();
        assert!(dropped.as_mut().poll(&mut Context::from_waker(&waker)).is_pending());
        assert_eq!(timer.armed.lock().unwrap().len(), 1);
        drop(dropped);
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(timer.armed.lock().unwrap().len(), 0, "the dropped sleep's entry was not forgotten");

        // A deadline already past is ready at once, without a tick.
        let mut past = timer.sleep_until(Instant::now() - Duration::from_millis(1));
        assert!(past.as_mut().poll(&mut Context::from_waker(&waker)).is_ready());
    }
}
