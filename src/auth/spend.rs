//! Spend per key today and this month (UTC), kept in memory: updated as records are
//! submitted to the ledger and seeded from the ledger at start.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use crate::ledger::Record;

const MS_PER_DAY: u64 = 86_400_000;

/// Days since the epoch and the month (`year * 12 + month - 1`) of a Unix time in ms.
pub fn day_and_month(ms: u64) -> (u64, i64) {
    let day = ms / MS_PER_DAY;
    let (y, m, _) = civil_from_days(i64::try_from(day).unwrap_or(i64::MAX));
    (day, y * 12 + m - 1)
}

/// Unix ms at which the current UTC month began.
pub fn month_start_ms(now_ms: u64) -> u64 {
    let (_, month) = day_and_month(now_ms);
    let days = days_from_civil(month.div_euclid(12), month.rem_euclid(12) + 1, 1);
    u64::try_from(days).unwrap_or(0) * MS_PER_DAY
}

/// Seconds until the next UTC midnight / the next month, for `Retry-After`.
pub fn secs_to_next_day(now_ms: u64) -> u64 {
    (MS_PER_DAY - now_ms % MS_PER_DAY).div_ceil(1000)
}

pub fn secs_to_next_month(now_ms: u64) -> u64 {
    let (_, month) = day_and_month(now_ms);
    let next = month + 1;
    let days = days_from_civil(next.div_euclid(12), next.rem_euclid(12) + 1, 1);
    (u64::try_from(days).unwrap_or(0) * MS_PER_DAY).saturating_sub(now_ms).div_ceil(1000)
}

use crate::ledger::time::{civil_from_days, days_from_civil};

#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Spent {
    pub day: u64,
    pub today: f64,
    pub month: i64,
    pub this_month: f64,
}

/// Spend per key name.
#[derive(Debug, Default)]
pub struct SpendTally {
    by_key: Mutex<HashMap<String, Spent>>,
}

impl SpendTally {
    /// Adds `cost` spent at `ts_ms` by `key`; spend from an earlier day or month only
    /// counts where it still belongs.
    pub fn add(&self, key: &str, cost: f64, ts_ms: u64, now_ms: u64) {
        if !(cost.is_finite() && cost > 0.0) {
            return;
        }
        let (day, month) = day_and_month(ts_ms);
        let (today, this_month) = day_and_month(now_ms);
        let mut map = self.by_key.lock().unwrap_or_else(PoisonError::into_inner);
        let s = map.entry(key.to_string()).or_default();
        roll(s, today, this_month);
        if day == today {
            s.today += cost;
        }
        if month == this_month {
            s.this_month += cost;
        }
    }

    pub fn spent(&self, key: &str, now_ms: u64) -> Spent {
        let (today, this_month) = day_and_month(now_ms);
        let mut map = self.by_key.lock().unwrap_or_else(PoisonError::into_inner);
        match map.get_mut(key) {
            Some(s) => {
                roll(s, today, this_month);
                *s
            }
            None => Spent { day: today, today: 0.0, month: this_month, this_month: 0.0 },
        }
    }

    /// Seeds from the ledger's records of this month.
    pub fn seed<'a>(&self, records: impl Iterator<Item = &'a Record>, now_ms: u64) {
        for r in records {
            if let Some(key) = &r.api_key {
                self.add(key, r.cost_usd, r.ts_ms, now_ms);
            }
        }
    }
}

fn roll(s: &mut Spent, today: u64, this_month: i64) {
    if s.day != today {
        s.day = today;
        s.today = 0.0;
    }
    if s.month != this_month {
        s.month = this_month;
        s.this_month = 0.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_and_months_roll_over() {
        // 2025-01-31T12:00:00Z
        let t = 1_738_324_800_000;
        assert_eq!(month_start_ms(t), 1_735_689_600_000);
        assert_eq!(secs_to_next_day(t), 43_200);
        assert_eq!(secs_to_next_month(t), 43_200);
        let tally = SpendTally::default();
        tally.add("k", 1.0, t - MS_PER_DAY, t);
        tally.add("k", 2.0, t, t);
        let s = tally.spent("k", t);
        assert_eq!((s.today, s.this_month), (2.0, 3.0));
        let s = tally.spent("k", t + MS_PER_DAY);
        assert_eq!((s.today, s.this_month), (0.0, 0.0), "February starts afresh");
    }
}
