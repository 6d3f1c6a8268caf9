//! `triage ledger export`: records as JSON lines or CSV.

use std::io::Write;

use super::time::format_rfc3339;
use super::{Ledger, LedgerError, Record};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One record per line, exactly as stored.
    Jsonl,
    /// A header row, then one row per record; lists are joined with `;`.
    Csv,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("writing the export failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("encoding record {id}: {source}")]
    Encode { id: String, source: serde_json::Error },
}

pub const CSV_COLUMNS: [&str; 26] = [
    "id",
    "time",
    "ts_ms",
    "origin",
    "tenant",
    "model",
    "policy",
    "policy_version",
    "category",
    "confidence",
    "top_categories",
    "expert",
    "tried",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "active_params",
    "latency_ms",
    "ttft_ms",
    "stream",
    "status",
    "error",
    "prompt_hash",
    "prompt",
    // Last, in the order they were added, so that positional readers of the earlier
    // columns keep working.
    "usage_estimated",
    "endpoint",
];

/// Writes every record with `ts_ms >= since_ms`, oldest first. Returns how many.
pub fn export(ledger: &Ledger, since_ms: u64, format: Format, out: &mut dyn Write) -> Result<u64, ExportError> {
    let mut n = 0u64;
    if format == Format::Csv {
        writeln!(out, "{}", CSV_COLUMNS.join(","))?;
    }
    for rec in ledger.scan(since_ms) {
        let rec = rec?;
        match format {
            Format::Jsonl => {
                serde_json::to_writer(&mut *out, &rec)
                    .map_err(|source| ExportError::Encode { id: rec.id.clone(), source })?;
                out.write_all(b"\n")?;
            }
            Format::Csv => writeln!(out, "{}", csv_row(&rec).join(","))?,
        }
        n += 1;
    }
    out.flush()?;
    Ok(n)
}

fn csv_row(r: &Record) -> Vec<String> {
    let opt = |o: &Option<String>| o.clone().unwrap_or_default();
    let num = |o: Option<f64>| o.map(|v| v.to_string()).unwrap_or_default();
    let top: Vec<String> = r.top_categories.iter().map(|(c, p)| format!("{c}:{p}")).collect();
    [
        r.id.clone(),
        format_rfc3339(r.ts_ms),
        r.ts_ms.to_string(),
        r.origin.as_str().to_string(),
        opt(&r.tenant),
        r.model.clone(),
        r.policy.clone(),
        r.policy_version.clone(),
        opt(&r.category),
        num(r.confidence.map(f64::from)),
        top.join(";"),
        opt(&r.expert),
        r.tried.join(";"),
        r.input_tokens.to_string(),
        r.output_tokens.to_string(),
        r.cost_usd.to_string(),
        r.active_params.map(|p| p.to_string()).unwrap_or_default(),
        r.latency_ms.to_string(),
        num(r.ttft_ms),
        r.stream.to_string(),
        r.status.to_string(),
        opt(&r.error),
        r.prompt_hash.clone(),
        opt(&r.prompt),
        r.usage_estimated.to_string(),
        r.endpoint.clone(),
    ]
    .into_iter()
    .map(|f| csv_field(&f))
    .collect()
}

/// RFC 4180 quoting: only fields with a comma, quote or line break are quoted.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}
