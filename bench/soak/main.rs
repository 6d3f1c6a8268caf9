//! Soak: the real `triage` binary at a steady request rate for a long time, through a
//! routed virtual model to two mock backends, one of which fails now and then. Reports
//! errors seen by clients, faults survived (backend failures the gateway absorbed), RSS,
//! open file descriptors and the gateway's own gauges (open connections, requests in flight,
//! live tokio tasks) over time, and, after a clean shutdown, records missing from the ledger.
//! See bench/README.md ("Soak") for the command and the recorded run.
//!
//! cargo run --example soak -- --bin target/debug/triage --minutes 10 --rate 200

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{json, Value};

/// Every Nth request to the first backend fails (alternately 500 and 429 with Retry-After):
/// 5 % of its traffic, which the gateway must absorb by falling back to the second.
const FAIL_EVERY: usize = 20;
/// One request in this many is streamed.
const STREAM_EVERY: u64 = 5;
/// How often the gateway process is sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(30);
/// After the load, how long to wait before the last sample: reqwest keeps idle pooled
/// connections (the gateway's to the backends) for 90 s, so after this only leaks remain.
const SETTLE: Duration = Duration::from_secs(100);
/// The ledger's flush interval, as in the shipped default.
const FLUSH_MS: u64 = 200;

struct Args {
    bin: PathBuf,
    minutes: f64,
    rate: u32,
    out: Option<PathBuf>,
    /// Without the ledger: tells the gateway's own memory from sled's page cache.
    ledger: bool,
}

fn args() -> Result<Args> {
    let mut a = Args { bin: PathBuf::from("target/debug/triage"), minutes: 10.0, rate: 200, out: None, ledger: true };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        if k == "--no-ledger" {
            a.ledger = false;
            continue;
        }
        let v = it.next().with_context(|| format!("{k} needs a value"))?;
        match k.as_str() {
            "--bin" => a.bin = v.into(),
            "--minutes" => a.minutes = v.parse()?,
            "--rate" => a.rate = v.parse()?,
            "--out" => a.out = Some(v.into()),
            _ => bail!("unknown option {k} (--bin, --minutes, --rate, --out, --no-ledger)"),
        }
    }
    Ok(a)
}

#[derive(Clone)]
struct Backend {
    hits: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    fail_every: Option<usize>,
}

async fn chat(State(b): State<Backend>, body: Bytes) -> Response {
    let n = b.hits.fetch_add(1, Ordering::Relaxed) + 1;
    if b.fail_every.is_some_and(|k| n % k == 0) {
        b.failed.fetch_add(1, Ordering::Relaxed);
        let err = json!({"error": {"message": "injected", "type": "server_error", "param": null, "code": null}});
        let mut r = (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response();
        if (n / FAIL_EVERY) % 2 == 0 {
            r = (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")], err.to_string()).into_response();
        }
        return r;
    }
    let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let usage = json!({"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17});
    if req["stream"].as_bool() != Some(true) {
        let body = json!({"id": "chatcmpl-soak", "object": "chat.completion", "created": 1, "model": req["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "soak test answer"}, "finish_reason": "stop"}],
            "usage": usage});
        return ([("content-type", "application/json")], body.to_string()).into_response();
    }
    let chunk = |delta: Value, finish: Value| {
        format!(
            "data: {}\n\n",
            json!({"id": "chatcmpl-soak", "object": "chat.completion.chunk", "created": 1, "model": req["model"],
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        )
    };
    let mut text = chunk(json!({"role": "assistant", "content": ""}), Value::Null);
    for w in ["soak", " test", " answer"] {
        text.push_str(&chunk(json!({"content": w}), Value::Null));
    }
    text.push_str(&chunk(json!({}), json!("stop")));
    if req["stream_options"]["include_usage"].as_bool() == Some(true) {
        text.push_str(&format!("data: {}\n\n", json!({"id": "chatcmpl-soak", "object": "chat.completion.chunk", "created": 1, "model": req["model"], "choices": [], "usage": usage})));
    }
    text.push_str("data: [DONE]\n\n");
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from(text))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

async fn start_backend(fail_every: Option<usize>) -> Result<(String, Backend)> {
    let b = Backend { hits: Arc::default(), failed: Arc::default(), fail_every };
    let app = axum::Router::new().route("/v1/chat/completions", post(chat)).with_state(b.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/v1", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, b))
}

#[derive(Debug, Clone, serde::Serialize)]
struct Sample {
    t_s: u64,
    rss_kib: u64,
    fds: usize,
    open_connections: i64,
    requests_in_flight: i64,
    alive_tasks: i64,
    sent: u64,
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("VmRSS:")).map(str::to_string))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

async fn sample(client: &reqwest::Client, base: &str, pid: u32, t0: Instant, sent: u64) -> Sample {
    let text = match client.get(format!("{base}/metrics")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    let gauge = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(-1)
    };
    Sample {
        t_s: t0.elapsed().as_secs(),
        rss_kib: rss_kib(pid),
        fds: fds(pid),
        open_connections: gauge("triage_server_open_connections"),
        // The scrape itself is in flight while it is rendered.
        requests_in_flight: gauge("triage_server_requests_in_flight") - 1,
        alive_tasks: gauge("triage_runtime_alive_tasks"),
        sent,
    }
}

#[derive(Default)]
struct Tally {
    sent: AtomicU64,
    ok: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
    ids: Mutex<Vec<String>>,
    latencies_us: Mutex<Vec<u64>>,
}

async fn one(client: reqwest::Client, base: Arc<str>, n: u64, tally: Arc<Tally>) {
    let stream = n % STREAM_EVERY == 0;
    let body = json!({"model": "triage", "stream": stream,
                      "messages": [{"role": "user", "content": format!("soak request {n}: say something short")}]});
    let started = Instant::now();
    let outcome = async {
        let r = client
            .post(format!("{base}/v1/chat/completions"))
            .json(&body)
            .send()
            .await
            .map_err(|e| format!("send: {e}"))?;
        let status = r.status();
        let id = r.headers().get("x-triage-request-id").and_then(|v| v.to_str().ok()).map(str::to_string);
        let text = r.text().await.map_err(|e| format!("body: {e}"))?;
        if !status.is_success() {
            return Err(format!("HTTP {}", status.as_u16()));
        }
        if stream && (!text.ends_with("data: [DONE]\n\n") || text.contains("\"error\"")) {
            return Err("stream did not complete".to_string());
        }
        id.ok_or_else(|| "no request id".to_string())
    }
    .await;
    match outcome {
        Ok(id) => {
            tally.ok.fetch_add(1, Ordering::Relaxed);
            tally.ids.lock().unwrap_or_else(|p| p.into_inner()).push(id);
            let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            tally.latencies_us.lock().unwrap_or_else(|p| p.into_inner()).push(us);
        }
        Err(e) => *tally.errors.lock().unwrap_or_else(|p| p.into_inner()).entry(e).or_default() += 1,
    }
}

fn write_config(dir: &Path, port: u16, a: &str, b: &str, ledger: bool) -> Result<PathBuf> {
    let ledger = if ledger {
        format!("[ledger]\npath = \"{}\"\nflush_interval_ms = {FLUSH_MS}\n", dir.join("ledger").display())
    } else {
        String::new()
    };
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n{ledger}\
         [resilience]\nbackoff_base_ms = 5\nbackoff_max_ms = 50\n\
         [[experts]]\nname = \"flaky\"\nkind = \"openai\"\nbase_url = \"{a}\"\ntimeouts = {{ connect_ms = 1000, first_byte_ms = 5000, total_ms = 10000 }}\n\
         [[experts]]\nname = \"steady\"\nkind = \"openai\"\nbase_url = \"{b}\"\ntimeouts = {{ connect_ms = 1000, first_byte_ms = 5000, total_ms = 10000 }}\n\
         [[models]]\nname = \"triage\"\nexperts = [\"flaky\", \"steady\"]\n"
    );
    let path = dir.join("soak.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = args()?;
    let dir = tempfile::tempdir()?;
    let (a_url, a) = start_backend(Some(FAIL_EVERY)).await?;
    let (b_url, b) = start_backend(None).await?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let config = write_config(dir.path(), port, &a_url, &b_url, args.ledger)?;
    let log = std::fs::File::create(dir.path().join("triage.log"))?;
    let mut child = tokio::process::Command::new(&args.bin)
        .args(["serve", "--no-watch", "--config"])
        .arg(&config)
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", args.bin.display()))?;
    let pid = child.id().context("no pid")?;
    let base: Arc<str> = Arc::from(format!("http://127.0.0.1:{port}"));
    let client = reqwest::Client::new();
    let started = Instant::now();
    while client.get(format!("{base}/health")).send().await.is_err() {
        if started.elapsed() > Duration::from_secs(30) {
            bail!("the gateway did not start");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let tally = Arc::new(Tally::default());
    let t0 = Instant::now();
    let mut samples = vec![sample(&client, &base, pid, t0, 0).await];
    eprintln!("start: {:?}", samples[0]);
    let total = Duration::from_secs_f64(args.minutes * 60.0);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(args.rate)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut next_sample = t0 + SAMPLE_EVERY;
    let mut inflight = tokio::task::JoinSet::new();
    let mut n = 0u64;
    while t0.elapsed() < total {
        tick.tick().await;
        n += 1;
        tally.sent.store(n, Ordering::Relaxed);
        inflight.spawn(one(client.clone(), base.clone(), n, tally.clone()));
        while inflight.try_join_next().is_some() {}
        if Instant::now() >= next_sample {
            next_sample += SAMPLE_EVERY;
            let s = sample(&client, &base, pid, t0, n).await;
            eprintln!("{s:?}");
            samples.push(s);
        }
    }
    while inflight.join_next().await.is_some() {}
    let elapsed = t0.elapsed();
    let end = sample(&client, &base, pid, t0, n).await;
    eprintln!("end: {end:?}");
    samples.push(end);
    // Idle for a moment: keep-alive connections of the client pool stay, nothing else should.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle = sample(&client, &base, pid, t0, n).await;
    eprintln!("idle: {idle:?}");
    drop(client);
    tokio::time::sleep(SETTLE).await;
    let fresh = reqwest::Client::builder().pool_max_idle_per_host(0).build()?;
    let settled = sample(&fresh, &base, pid, t0, n).await;
    eprintln!("settled: {settled:?}");

    // A clean shutdown, then every answered request must have its record.
    let pid_s = pid.to_string();
    std::process::Command::new("kill").args(["-TERM", &pid_s]).status()?;
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait()).await??;
    let ids = std::mem::take(&mut *tally.ids.lock().unwrap_or_else(|p| p.into_inner()));
    let (mut lost, mut records) = (0u64, 0usize);
    if args.ledger {
        let ledger = triage::ledger::Ledger::open(triage::ledger::LedgerConfig::new(dir.path().join("ledger")))?;
        for id in &ids {
            if ledger.get(id)?.is_none() {
                lost += 1;
            }
        }
        records = ledger.scan(0).count();
        ledger.close().await?;
    }

    let mut lat = std::mem::take(&mut *tally.latencies_us.lock().unwrap_or_else(|p| p.into_inner()));
    lat.sort_unstable();
    let errors = std::mem::take(&mut *tally.errors.lock().unwrap_or_else(|p| p.into_inner()));
    let error_count: u64 = errors.values().sum();
    let sent = tally.sent.load(Ordering::Relaxed);
    let faults = a.failed.load(Ordering::Relaxed);
    let report = json!({
        "duration_s": elapsed.as_secs_f64(),
        "rate_target": args.rate,
        "sent": sent,
        "ok": tally.ok.load(Ordering::Relaxed),
        "achieved_rate": sent as f64 / elapsed.as_secs_f64(),
        "errors": error_count,
        "error_kinds": errors,
        "faults_injected_and_survived": faults,
        "backend_hits": {"flaky": a.hits.load(Ordering::Relaxed), "steady": b.hits.load(Ordering::Relaxed)},
        "latency_ms": {"p50": percentile(&lat, 0.5), "p99": percentile(&lat, 0.99), "max": percentile(&lat, 1.0)},
        "ledger": if args.ledger { json!({"records": records, "answered_requests_missing": lost}) } else { json!("off") },
        "exit_status": status.code(),
        "samples": samples,
        "idle_after_5s": idle,
        "settled_after_load": settled,
    });
    let text = serde_json::to_string_pretty(&report)?;
    println!("{text}");
    if let Some(out) = &args.out {
        std::fs::create_dir_all(out)?;
        std::fs::write(out.join("results.json"), &text)?;
        let _ = std::fs::copy(dir.path().join("triage.log"), out.join("triage.log"));
    }
    if error_count > 0 || lost > 0 {
        bail!("{error_count} client errors, {lost} records lost");
    }
    Ok(())
}
