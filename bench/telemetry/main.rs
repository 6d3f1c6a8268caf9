//! Added latency of the gateway with telemetry off, on (Prometheus only: the default) and
//! on with OTLP export of traces and metrics, against a mock OpenAI backend.
//!
//! Everything runs in this one process: the mock backend, an OTLP sink that accepts and
//! discards exports, the gateway (the library's `server::run`, as `triage serve` runs it)
//! and a keep-alive client sending one request at a time. "Added latency" is the
//! gateway's median minus the median of the same request sent to the mock directly.
//! See bench/telemetry/README.md for the command and recorded numbers.

#![expect(clippy::expect_used, reason = "a benchmark stops at the first broken set-up step")]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::routing::post;
use axum::Router;
use triage::telemetry::{Telemetry, TelemetryConfig};
use triage::{config, server, state::AppState};

/// Requests per mode after warm-up; enough for a stable median and p99 at ~100 µs each.
const REQUESTS: usize = 10_000;
const WARMUP: usize = 500;
/// The modes take turns every this many requests, so drift (CPU frequency, other
/// processes: the development machine is shared) hits all of them alike. Whole-mode
/// rounds of thousands of requests let a busy second favour one mode by more than the
/// few microseconds measured here.
const BLOCK: usize = 10;

const RESPONSE: &str = r#"{"id":"chatcmpl-bench","object":"chat.completion","created":1,"model":"up-bench","choices":[{"index":0,"message":{"role":"assistant","content":"Hello from the bench backend."},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":7,"total_tokens":19}}"#;
const REQUEST: &str = r#"{"model":"triage","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello in five words."}]}"#;

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

async fn gateway(backend: SocketAddr, telemetry: Telemetry) -> SocketAddr {
    let text = format!(
        "[[experts]]\nname = \"bench\"\nkind = \"openai\"\nbase_url = \"http://{backend}/v1\"\nmodel = \"up-bench\"\n\
         price = {{ input_per_mtok = 1.0, output_per_mtok = 2.0 }}\n[[models]]\nname = \"triage\"\nexperts = [\"bench\"]\n"
    );
    let config = config::load_str(&text, "bench.toml").expect("config");
    let state =
        Arc::new(AppState::with_telemetry(config, &triage::routing::no_routers, None, telemetry).expect("state"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(server::run(listener, state, std::future::pending(), Duration::from_secs(1)));
    addr
}

async fn measure(client: &reqwest::Client, url: &str, n: usize) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let resp = client.post(url).header("content-type", "application/json").body(REQUEST).send().await;
        let ok = match resp {
            Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
            Err(_) => false,
        };
        assert!(ok, "request to {url} failed");
        out.push(started.elapsed());
    }
    out
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let backend = serve(
        Router::new()
            .route("/v1/chat/completions", post(|| async { ([("content-type", "application/json")], RESPONSE) })),
    )
    .await;
    let sink = serve(
        Router::new()
            .route("/v1/traces", post(|_b: Bytes| async { ([("content-type", "application/x-protobuf")], "") }))
            .route("/v1/metrics", post(|_b: Bytes| async { ([("content-type", "application/x-protobuf")], "") })),
    )
    .await;
    let otlp = TelemetryConfig {
        metric_interval: Some(Duration::from_secs(10)),
        ..TelemetryConfig::otlp(&format!("http://{sink}"))
    };
    let otlp = TelemetryConfig {
        batch: triage::telemetry::BatchConfig { delay: Duration::from_secs(1), ..otlp.batch },
        ..otlp
    };
    let modes: Vec<(&str, String)> = vec![
        ("direct (no gateway)", format!("http://{backend}/v1/chat/completions")),
        (
            "gateway, telemetry off",
            format!(
                "http://{}/v1/chat/completions",
                gateway(backend, Telemetry::start(&TelemetryConfig::disabled()).expect("off")).await
            ),
        ),
        (
            "gateway, /metrics only",
            format!("http://{}/v1/chat/completions", gateway(backend, Telemetry::local()).await),
        ),
        (
            "gateway, OTLP traces+metrics",
            format!("http://{}/v1/chat/completions", gateway(backend, Telemetry::start(&otlp).expect("otlp")).await),
        ),
    ];
    let client = reqwest::Client::builder().tcp_nodelay(true).build().expect("client");
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); modes.len()];
    for (_, url) in &modes {
        measure(&client, url, WARMUP).await;
    }
    for _ in 0..REQUESTS / BLOCK {
        for (i, (_, url)) in modes.iter().enumerate() {
            samples[i].extend(measure(&client, url, BLOCK).await);
        }
    }
    let mut direct_p50 = 0.0;
    let mut off_added = 0.0;
    println!("{:<30} {:>9} {:>9} {:>9} {:>12}", "mode", "p50 µs", "p90 µs", "p99 µs", "added p50 µs");
    for (i, (name, _)) in modes.iter().enumerate() {
        let s = &mut samples[i];
        s.sort();
        let p50 = pct(s, 0.5);
        if i == 0 {
            direct_p50 = p50;
        }
        let added = p50 - direct_p50;
        if i == 1 {
            off_added = added;
        }
        let vs_off = if i >= 2 && off_added > 0.0 {
            format!("  ({:+.1}% vs off)", (added / off_added - 1.0) * 100.0)
        } else {
            String::new()
        };
        println!("{name:<30} {p50:>9.1} {:>9.1} {:>9.1} {added:>12.1}{vs_off}", pct(s, 0.9), pct(s, 0.99));
    }
}
