//! Demand: an exponentially decayed request count per expert. Its value right after a
//! request is "requests in the last half-life or so", so it weighs both how recently and
//! how often the policy sends traffic to the expert; eviction takes the lowest.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, Default)]
pub struct Demand {
    value: f64,
    at: Option<Instant>,
}

impl Demand {
    fn decayed(&self, now: Instant, half_life: Duration) -> f64 {
        match self.at {
            None => 0.0,
            Some(at) => {
                let dt = now.saturating_duration_since(at).as_secs_f64();
                self.value * (-dt * std::f64::consts::LN_2 / half_life.as_secs_f64().max(1e-9)).exp()
            }
        }
    }

    pub fn record(&mut self, now: Instant, half_life: Duration) {
        self.value = self.decayed(now, half_life) + 1.0;
        self.at = Some(now);
    }

    /// The decayed count (what eviction compares).
    pub fn score(&self, now: Instant, half_life: Duration) -> f64 {
        self.decayed(now, half_life)
    }

    /// The decayed count as a rate: a steady `r` requests/min converges to `r`.
    pub fn rate_per_min(&self, now: Instant, half_life: Duration) -> f64 {
        let tau_min = half_life.as_secs_f64() / std::f64::consts::LN_2 / 60.0;
        self.decayed(now, half_life) / tau_min.max(1e-9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frequent_use_outweighs_one_recent_use_until_it_decays() {
        let hl = Duration::from_secs(60);
        let t0 = Instant::now();
        let (mut busy, mut once) = (Demand::default(), Demand::default());
        for i in 0..5 {
            busy.record(t0 + Duration::from_secs(i), hl);
        }
        once.record(t0 + Duration::from_secs(10), hl);
        assert!(busy.score(t0 + Duration::from_secs(10), hl) > once.score(t0 + Duration::from_secs(10), hl));
        // Five half-lives later, the busy expert's burst is worth less than one fresh request.
        let later = t0 + Duration::from_secs(310);
        once.record(later, hl);
        assert!(busy.score(later, hl) < once.score(later, hl));
    }
}
