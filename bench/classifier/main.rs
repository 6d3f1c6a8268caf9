//! Classifier benchmark: latency at concurrency 1 by prompt length and on a realistic
//! mix, throughput at concurrency 16, and the share decided by each stage. Everything
//! goes through `ClassifierService`, the path the gateway uses.
//!
//! cargo run --example classifier_bench -- [--router routers/default] [--models models]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use triage::classifier::data::load_jsonl;
use triage::classifier::service::Router;
use triage::classifier::{Classifier, ClassifierService, ServiceConfig, Stage};

/// Requests per latency measurement: enough for a stable p99 in a few seconds.
const LATENCY_REQUESTS: usize = 300;
/// Requests for the throughput run.
const THROUGHPUT_REQUESTS: usize = 2000;
const CONCURRENCY: usize = 16;
const TOKEN_BUCKETS: [usize; 4] = [16, 64, 256, 1024];

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

async fn run_c1(svc: &ClassifierService, texts: &[String]) -> anyhow::Result<(Duration, Duration, f64)> {
    let mut lat = Vec::with_capacity(LATENCY_REQUESTS);
    let mut fast = 0usize;
    for i in 0..LATENCY_REQUESTS {
        let t = texts[i % texts.len()].clone();
        let start = Instant::now();
        let c = svc.classify(t).await?;
        lat.push(start.elapsed());
        fast += usize::from(c.stage == Stage::Fast);
    }
    lat.sort();
    Ok((percentile(&lat, 0.5), percentile(&lat, 0.99), fast as f64 / LATENCY_REQUESTS as f64))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: &str| {
        args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or_else(|| default.to_owned())
    };
    let router = PathBuf::from(arg("--router", "routers/default"));
    let models = PathBuf::from(arg("--models", "models"));
    let clf = Arc::new(Classifier::load(&router, &models).context("loading the router")?);
    // The realistic mix: the router's held-out test split (never trained on).
    let mix: Vec<String> =
        load_jsonl(&router.join("eval/test.jsonl"), clf.labels())?.into_iter().map(|e| e.text).collect();
    let svc = Arc::new(ClassifierService::start(clf.clone() as Arc<dyn Router>, ServiceConfig::default())?);

    println!("| input | p50 ms | p99 ms | stage 1 share |\n|---|---|---|---|");
    let (p50, p99, share) = run_c1(&svc, &mix).await?;
    println!("| realistic mix (held-out test split) | {:.3} | {:.2} | {:.1}% |", ms(p50), ms(p99), share * 100.0);
    for tokens in TOKEN_BUCKETS {
        // Prompts of ~`tokens` WordPiece tokens: held-out prompts concatenated (so the
        // vocabulary stays realistic) until the length is reached, then cut.
        let texts: Vec<String> = (0..64)
            .map(|i| {
                let mut s = String::new();
                let mut j = i;
                while s.split_whitespace().count() * 4 < tokens * 3 {
                    s.push_str(&mix[j % mix.len()]);
                    s.push(' ');
                    j += 7;
                }
                s.split_whitespace().take(tokens * 3 / 4).collect::<Vec<_>>().join(" ")
            })
            .collect();
        let measured =
            texts.iter().map(|t| clf.encoder().token_ids(t).map(|v| v.len())).collect::<Result<Vec<_>, _>>()?;
        let (p50, p99, share) = run_c1(&svc, &texts).await?;
        // The encoder alone on the same inputs, to show what the cascade saves.
        let mut enc = Vec::new();
        for t in texts.iter().take(20) {
            let start = Instant::now();
            clf.classify_encoder(&[t.as_str()])?;
            enc.push(start.elapsed());
        }
        enc.sort();
        println!(
            "| ~{tokens} tokens (encoder sees {}) | {:.3} | {:.2} | {:.1}% | encoder alone p50 {:.1} ms",
            measured.iter().max().unwrap_or(&0),
            ms(p50),
            ms(p99),
            share * 100.0,
            ms(percentile(&enc, 0.5))
        );
    }

    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..CONCURRENCY {
        let svc = svc.clone();
        let texts: Vec<String> = mix.iter().skip(w).step_by(CONCURRENCY).cloned().collect();
        tasks.push(tokio::spawn(async move {
            let mut fast = 0usize;
            for i in 0..THROUGHPUT_REQUESTS / CONCURRENCY {
                let c = svc.classify(texts[i % texts.len()].clone()).await?;
                fast += usize::from(c.stage == Stage::Fast);
            }
            anyhow::Ok(fast)
        }));
    }
    let mut fast = 0;
    for t in tasks {
        fast += t.await??;
    }
    let secs = start.elapsed().as_secs_f64();
    let n = THROUGHPUT_REQUESTS / CONCURRENCY * CONCURRENCY;
    println!(
        "\nthroughput at concurrency {CONCURRENCY}: {:.0} classifications/s ({n} in {secs:.2} s, stage 1 decided {:.1}%)",
        n as f64 / secs,
        fast as f64 * 100.0 / n as f64
    );
    Ok(())
}
