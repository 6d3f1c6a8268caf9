//! `triage experts`: the tier table of a running gateway.

use std::fmt::Write as _;

use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ExpertsCliError {
    #[error("cannot reach {url}: {detail}")]
    Request { url: String, detail: String },
    #[error("{url} answered HTTP {status}: {body}")]
    Status { url: String, status: u16, body: String },
}

/// Fetches `GET /admin/experts` and prints it as a table (or as JSON).
pub fn experts(gateway: &str, json: bool) -> Result<(), ExpertsCliError> {
    let url = format!("{}/admin/experts", gateway.trim_end_matches('/'));
    let err = |e: &dyn std::fmt::Display| ExpertsCliError::Request { url: url.clone(), detail: e.to_string() };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| err(&e))?;
    let body: Value = rt.block_on(async {
        let resp = reqwest::get(&url).await.map_err(|e| err(&e))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| err(&e))?;
        if !status.is_success() {
            return Err(ExpertsCliError::Status { url: url.clone(), status: status.as_u16(), body: text });
        }
        serde_json::from_str(&text).map_err(|e| err(&e))
    })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&body).unwrap_or_default());
    } else {
        print!("{}", table(&body));
    }
    Ok(())
}

fn mb(v: &Value) -> String {
    v.as_u64().map_or_else(|| "-".into(), |b| format!("{:.1}", b as f64 / 1e6))
}

fn num(v: &Value) -> String {
    match v {
        Value::Number(n) => n.as_f64().map_or_else(|| n.to_string(), |f| format!("{f:.0}")),
        _ => "-".into(),
    }
}

/// The report as a fixed-width table: one line per expert, then budgets and swaps.
pub fn table(body: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<20} {:<6} {:>8} {:>8} {:>5} {:>9} {:>9} {:>10} {:>10} {:>10}  error",
        "expert", "tier", "hot_MB", "warm_MB", "queue", "idle_ms", "demand/m", "warm>hot", "cold>warm", "cold>hot"
    );
    for e in body["experts"].as_array().into_iter().flatten() {
        let tier = match (e["tier"].as_str(), e["loading"].as_bool()) {
            (Some(t), Some(true)) => format!("{t}*"),
            (Some(t), _) => t.to_string(),
            (None, _) => e["kind"].as_str().unwrap_or("-").to_string(),
        };
        let demand = e["demand_per_min"].as_f64().map_or_else(|| "-".into(), |d| format!("{d:.2}"));
        let _ = writeln!(
            out,
            "{:<20} {:<6} {:>8} {:>8} {:>5} {:>9} {:>9} {:>10} {:>10} {:>10}  {}",
            e["name"].as_str().unwrap_or("?"),
            tier,
            mb(&e["hot_bytes"]),
            mb(&e["warm_bytes"]),
            num(&e["queue_depth"]),
            num(&e["idle_ms"]),
            demand,
            num(&e["warm_to_hot_ms"]),
            num(&e["cold_to_warm_ms"]),
            num(&e["cold_to_hot_ms"]),
            e["error"].as_str().unwrap_or(""),
        );
    }
    let t = &body["tiers"];
    if t.is_object() {
        let _ = writeln!(
            out,
            "\nhot {} / {} MB (peak {}), warm {} / {} MB (peak {}), min residency {} ms, load failures {}",
            mb(&t["hot_used"]),
            mb(&t["hot_budget"]),
            mb(&t["peak_hot"]),
            mb(&t["warm_used"]),
            mb(&t["warm_budget"]),
            mb(&t["peak_warm"]),
            num(&t["min_residency_ms"]),
            num(&t["load_failures"]),
        );
        for s in t["swaps"].as_array().into_iter().flatten() {
            let _ = writeln!(
                out,
                "swaps {}->{}: {}",
                s["from"].as_str().unwrap_or("?"),
                s["to"].as_str().unwrap_or("?"),
                s["count"]
            );
        }
    } else {
        let _ = writeln!(out, "\nno [tiers] section: every local expert is hot");
    }
    out
}
