//! `triage experts`: the tier table of a running gateway.

use std::fmt::Write as _;

use serde_json::Value;

/// The variable `triage experts` reads the admin key from unless `--admin-key-env` names
/// another: the name the README uses for `[auth] admin_key_env`.
pub const DEFAULT_ADMIN_KEY_ENV: &str = "TRIAGE_ADMIN_KEY";

/// Where the gateway is and how to authenticate to its `/admin/*` routes.
#[derive(Debug, Clone, clap::Args)]
pub struct GatewayArgs {
    /// The gateway's base URL.
    #[arg(long = "gateway", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Environment variable holding the gateway's admin key (the one its `[auth]
    /// admin_key_env` names), sent as `Authorization: Bearer`. Unset: no header is sent.
    #[arg(long, value_name = "VAR", default_value = DEFAULT_ADMIN_KEY_ENV)]
    pub admin_key_env: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ExpertsCliError {
    #[error("cannot reach {url}: {detail}")]
    Request { url: String, detail: String },
    #[error("{url} answered HTTP {status}: {body}")]
    Status { url: String, status: u16, body: String },
    #[error("{url} answered HTTP {status}: {hint}")]
    Unauthorized { url: String, status: u16, hint: String },
}

/// Why the gateway refused the admin request, naming the variable and the flag.
fn unauthorized_hint(var: &str, key_sent: bool) -> String {
    if key_sent {
        format!("the gateway refused the admin key in ${var}; set it to the key the gateway's [auth] admin_key_env names (or pass --admin-key-env VAR)")
    } else {
        format!("the gateway requires its admin key; ${var} is not set: export it, or pass --admin-key-env VAR naming the variable that holds it")
    }
}

/// Fetches `GET /admin/experts` and prints it as a table (or as JSON). The admin key, when
/// the variable `gateway.admin_key_env` names is set, goes along as a bearer token.
pub fn experts(gateway: &GatewayArgs, json: bool) -> Result<(), ExpertsCliError> {
    let key = std::env::var(&gateway.admin_key_env).ok().filter(|k| !k.is_empty());
    let body = fetch(&gateway.url, &gateway.admin_key_env, key.as_deref())?;
    if json {
        println!("{}", serde_json::to_string_pretty(&body).unwrap_or_default());
    } else {
        print!("{}", table(&body));
    }
    Ok(())
}

fn fetch(gateway: &str, var: &str, key: Option<&str>) -> Result<Value, ExpertsCliError> {
    let url = format!("{}/admin/experts", gateway.trim_end_matches('/'));
    let err = |e: &dyn std::fmt::Display| ExpertsCliError::Request { url: url.clone(), detail: e.to_string() };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| err(&e))?;
    rt.block_on(async {
        let mut req = reqwest::Client::new().get(&url);
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        let resp = req.send().await.map_err(|e| err(&e))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| err(&e))?;
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(ExpertsCliError::Unauthorized {
                url: url.clone(),
                status: status.as_u16(),
                hint: unauthorized_hint(var, key.is_some()),
            });
        }
        if !status.is_success() {
            return Err(ExpertsCliError::Status { url: url.clone(), status: status.as_u16(), body: text });
        }
        serde_json::from_str(&text).map_err(|e| err(&e))
    })
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
