//! Per-expert circuit breaker: after `failures` consecutive failures the expert is
//! skipped for `cooldown`; then one trial request is let through (half-open), and its
//! outcome closes the breaker or opens it for another cool-down. A trial whose outcome
//! never comes (its client hung up, and the call was dropped) holds the breaker for at most
//! one more cool-down; one that ends neither way (a full queue, a refused request) is
//! released at once.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Breaker {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The settings (`[resilience]`), which a reload may change on a running breaker.
    failures_to_open: u32,
    cooldown: Duration,
    consecutive_failures: u32,
    open_until: Option<Instant>,
    /// When the trial now in flight was let through.
    trial_since: Option<Instant>,
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
        Self { state: Mutex::new(State { failures_to_open, cooldown, ..State::default() }) }
    }

    /// New settings from a reloaded config; the count and any cool-down in progress stay.
    pub fn configure(&self, failures_to_open: u32, cooldown: Duration) {
        let mut s = self.lock();
        s.failures_to_open = failures_to_open;
        s.cooldown = cooldown;
    }

    pub fn admit(&self) -> Admission {
        let mut s = self.lock();
        let now = Instant::now();
        let trial_pending = s.trial_since.is_some_and(|t| now < t + s.cooldown);
        match s.open_until {
            None => Admission::Closed,
            Some(until) if now < until || trial_pending => Admission::Open,
            Some(_) => {
                s.trial_since = Some(now);
                Admission::Trial
            }
        }
    }

    pub fn record_success(&self) {
        let mut s = self.lock();
        s.consecutive_failures = 0;
        s.open_until = None;
        s.trial_since = None;
    }

    pub fn record_failure(&self) {
        let mut s = self.lock();
        s.consecutive_failures = s.consecutive_failures.saturating_add(1);
        s.trial_since = None;
        if s.consecutive_failures >= s.failures_to_open {
            s.open_until = Some(Instant::now() + s.cooldown);
        }
    }

    /// The call ended without saying anything about the expert's health (it was busy, or
    /// the request was one it cannot take): a trial it was is over, and the next request
    /// may be the trial.
    pub fn record_neutral(&self) {
        self.lock().trial_since = None;
    }

    /// How long until this breaker lets a request through again (at least one second, so
    /// a client told to retry does not come back at once); `None` when it is closed.
    pub fn retry_in(&self) -> Option<Duration> {
        let s = self.lock();
        let until = s.open_until?;
        let trial_until = s.trial_since.map(|t| t + s.cooldown);
        let next = until.max(trial_until.unwrap_or(until));
        Some(next.saturating_duration_since(Instant::now()).max(Duration::from_secs(1)))
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
    fn a_trial_without_an_outcome_does_not_hold_the_breaker_open_for_ever() {
        let b = Breaker::new(1, Duration::from_millis(30));
        b.record_failure();
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(b.admit(), Admission::Trial);
        // Its call was dropped (the client hung up): nothing is recorded.
        assert_eq!(b.admit(), Admission::Open);
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(b.admit(), Admission::Trial, "a lost trial holds it one cool-down at most");
        // A trial that ends neutral (a full queue, a refusal) frees the next at once.
        b.record_neutral();
        assert_eq!(b.admit(), Admission::Trial);
        b.record_success();
        assert_eq!(b.admit(), Admission::Closed);
        assert_eq!(b.retry_in(), None);
        let long = Breaker::new(1, Duration::from_secs(30));
        long.record_failure();
        let wait = long.retry_in().unwrap();
        assert!(wait > Duration::from_secs(29) && wait <= Duration::from_secs(30), "{wait:?}");
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
