//! A GCRA (generic cell rate algorithm) limiter: the algorithm the `governor` crate
//! implements. It is written out here because TPM needs two things governor cannot do:
//! charging tokens after the fact (a response used more than estimated) and refunding
//! them (it used fewer). GCRA keeps one number per limiter: the theoretical arrival time.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// `rate` units per `period`, with a burst of the whole `rate` (a fresh key may use its
/// full minute's allowance at once, as OpenAI's limits allow).
#[derive(Debug)]
pub struct Gcra {
    /// Time one unit "costs".
    emission: Duration,
    /// How far ahead of now the arrival time may run: the burst.
    tolerance: Duration,
    capacity: u64,
    tat: Mutex<Option<Instant>>,
}

impl Gcra {
    pub fn new(rate: u32, period: Duration) -> Gcra {
        let rate = rate.max(1);
        let emission = period / rate;
        Gcra { emission, tolerance: period, capacity: u64::from(rate), tat: Mutex::new(None) }
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    fn cost(&self, n: u64) -> Duration {
        self.emission.saturating_mul(u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// Takes `n` units now, or says how long to wait until they would be allowed.
    pub fn check(&self, n: u64, now: Instant) -> Result<(), Duration> {
        let mut tat = self.tat.lock().unwrap_or_else(PoisonError::into_inner);
        let start = tat.map_or(now, |t| t.max(now));
        let new_tat = start + self.cost(n);
        let allowed_at = new_tat.checked_sub(self.tolerance).unwrap_or(now);
        if allowed_at > now {
            return Err(allowed_at - now);
        }
        *tat = Some(new_tat);
        Ok(())
    }

    /// Corrects an earlier charge: positive `delta` takes more units unconditionally (they
    /// were already used), negative gives units back.
    pub fn adjust(&self, delta: i64, now: Instant) {
        let mut tat = self.tat.lock().unwrap_or_else(PoisonError::into_inner);
        let start = tat.map_or(now, |t| t.max(now));
        *tat = Some(if delta >= 0 {
            start + self.cost(delta.unsigned_abs())
        } else {
            start.checked_sub(self.cost(delta.unsigned_abs())).unwrap_or(now).max(now)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_the_burst_then_paces() {
        let g = Gcra::new(3, Duration::from_secs(60));
        let t = Instant::now();
        for _ in 0..3 {
            g.check(1, t).unwrap();
        }
        let wait = g.check(1, t).unwrap_err();
        assert_eq!(wait, Duration::from_secs(20));
        g.check(1, t + wait).unwrap();
    }

    #[test]
    fn charges_and_refunds() {
        let g = Gcra::new(100, Duration::from_secs(60));
        let t = Instant::now();
        g.check(50, t).unwrap();
        g.adjust(50, t);
        assert!(g.check(1, t).is_err(), "the correction used the rest of the minute");
        g.adjust(-10, t);
        g.check(10, t).unwrap();
        assert!(g.check(101, t + Duration::from_secs(600)).is_err(), "more than the burst never fits");
    }
}
