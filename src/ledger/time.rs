//! The two time formats the ledger's commands accept: a relative age (`24h`) and RFC 3339.
//! Written out here because the crate has no date library and needs only these two.

const MS_PER_SEC: u64 = 1_000;
const SECS_PER_DAY: i64 = 86_400;

#[derive(Debug, thiserror::Error)]
#[error("invalid time {given:?}: expected an age like 30m, 24h, 7d or an RFC 3339 time like 2025-01-31T12:00:00Z")]
pub struct TimeError {
    pub given: String,
}

/// `--since`: an age before `now_ms` (`90s`, `30m`, `24h`, `7d`, `2w`) or an RFC 3339 time.
/// Returns Unix milliseconds.
pub fn parse_since(s: &str, now_ms: u64) -> Result<u64, TimeError> {
    let err = || TimeError { given: s.to_string() };
    let s = s.trim();
    if let Some(age) = parse_age_secs(s) {
        return Ok(now_ms.saturating_sub(age.saturating_mul(MS_PER_SEC)));
    }
    parse_rfc3339(s).ok_or_else(err)
}

fn parse_age_secs(s: &str) -> Option<u64> {
    let unit_at = s.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = s.split_at(unit_at);
    let n: u64 = num.parse().ok()?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// `YYYY-MM-DDTHH:MM:SS[.fff][Z|±HH:MM]`, or a bare date (midnight UTC).
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse().ok() };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    let mut secs = days_from_civil(y, mo, d) * SECS_PER_DAY;
    let mut ms = 0i64;
    if b.len() > 10 {
        if !matches!(b[10], b'T' | b't' | b' ') || b.len() < 19 || b[13] != b':' || b[16] != b':' {
            return None;
        }
        let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if h > 23 || mi > 59 || se > 60 {
            return None;
        }
        secs += h * 3_600 + mi * 60 + se;
        let mut rest = &s[19..];
        if let Some(frac) = rest.strip_prefix('.') {
            let digits = frac.find(|c: char| !c.is_ascii_digit()).unwrap_or(frac.len());
            if digits == 0 {
                return None;
            }
            let first3: String = frac[..digits].chars().chain("000".chars()).take(3).collect();
            ms = first3.parse().ok()?;
            rest = &frac[digits..];
        }
        match rest {
            "Z" | "z" => {}
            _ => {
                let sign = match rest.as_bytes().first()? {
                    b'+' => 1,
                    b'-' => -1,
                    _ => return None,
                };
                if rest.len() != 6 || rest.as_bytes()[3] != b':' {
                    return None;
                }
                let (oh, om) = (rest[1..3].parse::<i64>().ok()?, rest[4..6].parse::<i64>().ok()?);
                secs -= sign * (oh * 3_600 + om * 60);
            }
        }
    }
    u64::try_from(secs * 1_000 + ms).ok()
}

/// Unix milliseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn format_rfc3339(ms: u64) -> String {
    let secs = i64::try_from(ms / MS_PER_SEC).unwrap_or(i64::MAX);
    let (days, rem) = (secs.div_euclid(SECS_PER_DAY), secs.rem_euclid(SECS_PER_DAY));
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3_600, rem % 3_600 / 60, rem % 60, ms % MS_PER_SEC)
}

// Howard Hinnant's `days_from_civil` / `civil_from_days` (proleptic Gregorian calendar),
// http://howardhinnant.github.io/date_algorithms.html
pub(crate) fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

pub(crate) fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { yoe + era * 400 + 1 } else { yoe + era * 400 }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_count_back_from_now() {
        let now = 10 * 86_400_000;
        assert_eq!(parse_since("24h", now).unwrap(), now - 86_400_000);
        assert_eq!(parse_since("30m", now).unwrap(), now - 1_800_000);
        assert_eq!(parse_since("7d", now).unwrap(), 3 * 86_400_000);
        assert!(parse_since("24x", now).is_err());
        assert!(parse_since("h", now).is_err());
    }

    #[test]
    fn rfc3339_round_trips_and_honours_offsets() {
        let t = parse_rfc3339("2025-01-31T12:00:00Z").unwrap();
        assert_eq!(t, 1_738_324_800_000);
        assert_eq!(format_rfc3339(t), "2025-01-31T12:00:00.000Z");
        assert_eq!(parse_rfc3339("2025-01-31T13:00:00.250+01:00").unwrap(), t + 250);
        assert_eq!(parse_rfc3339("2025-01-31").unwrap(), t - 12 * 3_600_000);
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert!(parse_rfc3339("2025-13-01T00:00:00Z").is_none());
        assert!(parse_rfc3339("yesterday").is_none());
    }
}
