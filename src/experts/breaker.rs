//! Per-expert circuit breaker: after `failures` consecutive failures the expert is
//! skipped for `cooldown`; then one trial request is let through (half-open), and its
//! outcome closes the breaker or opens it for another cool-down.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Breaker {
    failures_to_open: u32,
    cooldown: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    consecutive_failures: u32,
    open_until: Option<Instant>,
    trial_in_flight: bool,
}

/// What the breaker says about sending a request now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Closed,
    /// The cool-down has passed: this request is the one trial.
    Trial,
    /// Skip this expert.
    Open,
}

impl Breaker {
    pub fn new(failures_to_open: u32, cooldown: Duration) -> Self {
        Self { failures_to_open, cooldown, state: Mutex::new(State::default()) }
    }

    pub fn admit(&self) -> Admission {
        let mut s = self.lock();
        match s.open_until {
            None => Admission::Closed,
            Some(until) if Instant::now() < until || s.trial_in_flight => Admission::Open,
            Some(_) => {
                s.trial_in_flight = true;
                Admission::Trial
            }
        }
    }

    pub fn record_success(&self) {
        *self.lock() = State::default();
    }

    pub fn record_failure(&self) {
        let mut s = self.lock();
        s.consecutive_failures = s.consecutive_failures.saturating_add(1);
        s.trial_in_flight = false;
        if s.consecutive_failures >= self.failures_to_open {
            s.open_until = Some(Instant::now() + self.cooldown);
        }
    }

    /// True while requests are being skipped (for `/admin` views and metrics).
    pub fn is_open(&self) -> bool {
        self.lock().open_until.is_some_and(|t| Instant::now() < t)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave State inconsistent (plain fields),
        // so a poisoned lock is still safe to use.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_failures_then_lets_one_trial_through() {
        let b = Breaker::new(2, Duration::from_millis(30));
        b.record_failure();
        assert_eq!(b.admit(), Admission::Closed);
        b.record_failure();
        assert_eq!(b.admit(), Admission::Open);
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(b.admit(), Admission::Trial);
        assert_eq!(b.admit(), Admission::Open, "only one trial at a time");
        b.record_success();
        assert_eq!(b.admit(), Admission::Closed);
    }

    #[test]
    fn a_success_resets_the_count() {
        let b = Breaker::new(2, Duration::from_secs(60));
        b.record_failure();
        b.record_success();
        b.record_failure();
        assert_eq!(b.admit(), Admission::Closed);
    }
}
