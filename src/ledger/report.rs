//! Aggregates over the ledger: what `triage report` prints and `GET /admin/stats` returns.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::{decode, lower_bound_key, Feedback, LedgerError, Origin, Record};

/// Two-sided 95% normal quantile for the Wilson score interval.
const Z_95: f64 = 1.959_963_984_540_054;
/// Shown for a missing category, expert or tenant.
pub const NONE_LABEL: &str = "(none)";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    Category,
    Expert,
    Model,
    Tenant,
    Origin,
    Status,
    Endpoint,
}

impl GroupBy {
    pub const ALL: [GroupBy; 7] = [
        GroupBy::Category,
        GroupBy::Expert,
        GroupBy::Model,
        GroupBy::Tenant,
        GroupBy::Origin,
        GroupBy::Status,
        GroupBy::Endpoint,
    ];

    pub fn name(self) -> &'static str {
        match self {
            GroupBy::Category => "category",
            GroupBy::Expert => "expert",
            GroupBy::Model => "model",
            GroupBy::Tenant => "tenant",
            GroupBy::Origin => "origin",
            GroupBy::Status => "status",
            GroupBy::Endpoint => "endpoint",
        }
    }

    fn value(self, r: &Record) -> String {
        let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| NONE_LABEL.to_string());
        match self {
            GroupBy::Category => opt(&r.category),
            GroupBy::Expert => opt(&r.expert),
            GroupBy::Model => r.model.clone(),
            GroupBy::Tenant => opt(&r.tenant),
            GroupBy::Origin => r.origin.as_str().to_string(),
            GroupBy::Status => r.status.to_string(),
            // Records from before the field existed were chat or embeddings: unknown.
            GroupBy::Endpoint if r.endpoint.is_empty() => NONE_LABEL.to_string(),
            GroupBy::Endpoint => r.endpoint.clone(),
        }
    }

    /// Parses `category,expert`; an empty string means one group for everything.
    pub fn parse_list(s: &str) -> Result<Vec<GroupBy>, String> {
        s.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| {
                GroupBy::ALL.into_iter().find(|g| g.name() == p).ok_or_else(|| {
                    let names: Vec<&str> = GroupBy::ALL.iter().map(|g| g.name()).collect();
                    format!("unknown group {p:?}; expected some of {}", names.join(", "))
                })
            })
            .collect()
    }
}

#[derive(Debug, Clone, Default)]
pub struct ReportQuery {
    /// Only requests that arrived at or after this Unix time (ms).
    pub since_ms: Option<u64>,
    /// Group keys, in order; empty means one group.
    pub by: Vec<GroupBy>,
    /// Only records of this origin.
    pub origin: Option<Origin>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub since_ms: Option<u64>,
    pub by: Vec<GroupBy>,
    pub total_requests: u64,
    /// Sorted by `key`.
    pub groups: Vec<GroupStats>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupStats {
    /// One value per `Report::by` entry.
    pub key: Vec<String>,
    pub requests: u64,
    /// Fraction of all requests in the report.
    pub share: f64,
    pub cost_total_usd: f64,
    pub cost_mean_usd: f64,
    /// Mean over requests whose expert reported its active parameters.
    pub active_params_mean: Option<f64>,
    pub latency_p50_ms: f64,
    pub latency_p95_ms: f64,
    pub ttft_p50_ms: Option<f64>,
    pub ttft_p95_ms: Option<f64>,
    /// Fraction with a status >= 400, client disconnects excepted (see `Record::is_error`).
    pub error_rate: f64,
    pub accuracy: Option<Accuracy>,
}

/// Mean feedback score with a 95% Wilson score interval. Each (request, source) score is
/// one sample; scores between 0 and 1 are treated as fractional successes, for which the
/// Wilson interval is the usual approximation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Accuracy {
    pub mean: f64,
    pub n: u64,
    pub ci_low: f64,
    pub ci_high: f64,
}

impl Accuracy {
    pub fn from_scores(sum: f64, n: u64) -> Option<Accuracy> {
        if n == 0 {
            return None;
        }
        let nf = n as f64;
        let p = sum / nf;
        let z2 = Z_95 * Z_95;
        let denom = 1.0 + z2 / nf;
        let center = (p + z2 / (2.0 * nf)) / denom;
        let half = Z_95 * (p * (1.0 - p) / nf + z2 / (4.0 * nf * nf)).sqrt() / denom;
        Some(Accuracy { mean: p, n, ci_low: (center - half).max(0.0), ci_high: (center + half).min(1.0) })
    }
}

#[derive(Default)]
struct Acc {
    requests: u64,
    cost: f64,
    params_sum: f64,
    params_n: u64,
    latency: Vec<f64>,
    ttft: Vec<f64>,
    errors: u64,
    score_sum: f64,
    score_n: u64,
}

pub(crate) fn build(records: &sled::Tree, feedback: &sled::Tree, q: &ReportQuery) -> Result<Report, LedgerError> {
    let since_key = lower_bound_key(q.since_ms.unwrap_or(0));
    // Feedback keys start with the request id, so the same lower bound applies.
    let mut scores: HashMap<String, Vec<f64>> = HashMap::new();
    for kv in feedback.range(since_key.as_slice()..) {
        let (k, v) = kv?;
        let fb: Feedback = decode(&k, &v)?;
        scores.entry(fb.request_id).or_default().push(fb.score);
    }
    let mut groups: BTreeMap<Vec<String>, Acc> = BTreeMap::new();
    let mut total = 0u64;
    for kv in records.range(since_key.as_slice()..) {
        let (k, v) = kv?;
        let r: Record = decode(&k, &v)?;
        if q.origin.is_some_and(|o| o != r.origin) {
            continue;
        }
        total += 1;
        let a = groups.entry(q.by.iter().map(|g| g.value(&r)).collect()).or_default();
        a.requests += 1;
        a.cost += r.cost_usd;
        if let Some(p) = r.active_params {
            a.params_sum += p as f64;
            a.params_n += 1;
        }
        a.latency.push(r.latency_ms);
        if let Some(t) = r.ttft_ms {
            a.ttft.push(t);
        }
        a.errors += u64::from(r.is_error());
        if let Some(s) = scores.get(&r.id) {
            a.score_sum += s.iter().sum::<f64>();
            a.score_n += s.len() as u64;
        }
    }
    let groups = groups
        .into_iter()
        .map(|(key, mut a)| {
            let n = a.requests as f64;
            a.latency.sort_by(f64::total_cmp);
            a.ttft.sort_by(f64::total_cmp);
            GroupStats {
                key,
                requests: a.requests,
                share: if total == 0 { 0.0 } else { n / total as f64 },
                cost_total_usd: a.cost,
                cost_mean_usd: a.cost / n,
                active_params_mean: (a.params_n > 0).then(|| a.params_sum / a.params_n as f64),
                latency_p50_ms: percentile(&a.latency, 0.50).unwrap_or(0.0),
                latency_p95_ms: percentile(&a.latency, 0.95).unwrap_or(0.0),
                ttft_p50_ms: percentile(&a.ttft, 0.50),
                ttft_p95_ms: percentile(&a.ttft, 0.95),
                error_rate: a.errors as f64 / n,
                accuracy: Accuracy::from_scores(a.score_sum, a.score_n),
            }
        })
        .collect();
    Ok(Report { since_ms: q.since_ms, by: q.by.clone(), total_requests: total, groups })
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// The report as a fixed-width table for terminals.
pub fn render_table(r: &Report) -> String {
    let key_header =
        if r.by.is_empty() { "all".to_string() } else { r.by.iter().map(|g| g.name()).collect::<Vec<_>>().join("/") };
    let rows: Vec<[String; 10]> = r
        .groups
        .iter()
        .map(|g| {
            let ms = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{v:.0}"));
            [
                if g.key.is_empty() { "all".into() } else { g.key.join("/") },
                g.requests.to_string(),
                format!("{:.1}%", g.share * 100.0),
                format!("{:.6}", g.cost_total_usd),
                format!("{:.6}", g.cost_mean_usd),
                g.active_params_mean.map_or_else(|| "-".into(), human_count),
                format!("{}/{}", ms(Some(g.latency_p50_ms)), ms(Some(g.latency_p95_ms))),
                format!("{}/{}", ms(g.ttft_p50_ms), ms(g.ttft_p95_ms)),
                format!("{:.1}%", g.error_rate * 100.0),
                g.accuracy.map_or_else(
                    || "-".into(),
                    |a| format!("{:.2} n={} [{:.2},{:.2}]", a.mean, a.n, a.ci_low, a.ci_high),
                ),
            ]
        })
        .collect();
    let header = [
        key_header.as_str(),
        "requests",
        "share",
        "cost $",
        "mean $",
        "params",
        "p50/p95 ms",
        "ttft p50/p95",
        "errors",
        "accuracy (95% CI)",
    ];
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let parts: Vec<String> = cells.zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        let _ = writeln!(out, "{}", parts.join("  ").trim_end());
    };
    line(&mut header.iter().copied());
    for row in &rows {
        line(&mut row.iter().map(String::as_str));
    }
    let _ = writeln!(out, "{} requests", r.total_requests);
    out
}

/// 135000000 -> "135M".
pub fn human_count(v: f64) -> String {
    match v {
        v if v >= 1e9 => format!("{:.1}B", v / 1e9),
        v if v >= 1e6 => format!("{:.0}M", v / 1e6),
        v if v >= 1e3 => format!("{:.0}K", v / 1e3),
        v => format!("{v:.0}"),
    }
}
