//! Classifier benchmark: latency at concurrency 1 by prompt length and on a realistic
//! mix, the encoder's cost by length, throughput at concurrency 16 with the encoder's
//! batch sizes, and the share decided by each stage. Everything but "encoder alone" goes
//! through `ClassifierService`, the path the gateway uses.
//!
//! Several `--router`s are measured side by side: repetitions interleave them, so a
//! change in the machine's load hits all of them alike, and every number printed is the
//! median over the repetitions.
//!
//! cargo run --release --example classifier_bench -- [--router DIR]... [--models models]
//!     [--mix routers/default/eval/test.jsonl] [--reps 5] [--window-ms 1[,4,...]]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use triage::classifier::data::load_jsonl;
use triage::classifier::service::Router;
use triage::classifier::{Classifier, ClassifierService, ServiceConfig, Stage};

/// Requests per latency measurement: 300 makes p99 the 3rd-worst request.
const LATENCY_REQUESTS: usize = 300;
/// Requests for one throughput run.
const THROUGHPUT_REQUESTS: usize = 1600;
const CONCURRENCY: usize = 16;
const TOKEN_BUCKETS: [usize; 4] = [16, 64, 256, 1024];
/// Single-input encoder runs per bucket for "encoder alone".
const ENCODER_SAMPLES: usize = 20;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(f64::NAN)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// p50 ms, p99 ms, stage-1 share.
async fn run_c1(svc: &ClassifierService, texts: &[String]) -> anyhow::Result<[f64; 3]> {
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
    Ok([ms(percentile(&lat, 0.5)), ms(percentile(&lat, 0.99)), fast as f64 / LATENCY_REQUESTS as f64])
}

/// classifications/s, stage-1 share, mean encoder batch size.
async fn run_throughput(svc: &Arc<ClassifierService>, mix: &[String]) -> anyhow::Result<[f64; 3]> {
    let before = svc.stats();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..CONCURRENCY {
        let svc = svc.clone();
        let texts: Vec<String> = mix.iter().skip(w).step_by(CONCURRENCY).cloned().collect();
        tasks.push(tokio::spawn(async move {
            for i in 0..THROUGHPUT_REQUESTS / CONCURRENCY {
                svc.classify(texts[i % texts.len()].clone()).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let secs = start.elapsed().as_secs_f64();
    let after = svc.stats();
    let n = THROUGHPUT_REQUESTS / CONCURRENCY * CONCURRENCY;
    let items = (after.encoder_items - before.encoder_items) as f64;
    let batches = (after.encoder_batches - before.encoder_batches).max(1) as f64;
    Ok([n as f64 / secs, (after.fast - before.fast) as f64 / n as f64, items / batches])
}

/// Prompts of ~`tokens` WordPiece tokens: held-out prompts concatenated (so the
/// vocabulary stays realistic) until the length is reached, then cut. Glued pieces of
/// several categories are harder for stage 1 than one prompt of that length, so `main`
/// also measures the mix's whole prompts by length band.
fn bucket(mix: &[String], tokens: usize) -> Vec<String> {
    (0..64)
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
        .collect()
}

struct Target {
    name: String,
    clf: Arc<Classifier>,
    svc: Arc<ClassifierService>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: &str| {
        args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or_else(|| default.to_owned())
    };
    let mut routers: Vec<String> = args.windows(2).filter(|w| w[0] == "--router").map(|w| w[1].clone()).collect();
    if routers.is_empty() {
        routers.push("routers/default".into());
    }
    let models = PathBuf::from(arg("--models", "models"));
    let reps: usize = arg("--reps", "5").parse().context("--reps")?;
    let mix_path = PathBuf::from(arg("--mix", "routers/default/eval/test.jsonl"));
    // Batching windows to compare (each router runs once per window).
    let windows: Vec<u64> = arg("--window-ms", &ServiceConfig::default().batch_window.as_millis().to_string())
        .split(',')
        .map(|w| w.trim().parse().context("--window-ms"))
        .collect::<anyhow::Result<_>>()?;

    let mut targets = Vec::new();
    for dir in &routers {
        let clf = Arc::new(Classifier::load(&PathBuf::from(dir), &models).with_context(|| format!("loading {dir}"))?);
        for &w in &windows {
            let cfg = ServiceConfig { batch_window: Duration::from_millis(w), ..ServiceConfig::default() };
            let svc = Arc::new(ClassifierService::start(clf.clone() as Arc<dyn Router>, cfg)?);
            let name = if windows.len() > 1 { format!("{dir} (window {w} ms)") } else { dir.clone() };
            targets.push(Target { name, clf: clf.clone(), svc });
        }
    }
    // The realistic mix: a held-out split (never trained on), the same for every router.
    let mix: Vec<String> = load_jsonl(&mix_path, targets[0].clf.labels())?.into_iter().map(|e| e.text).collect();
    let mut buckets: Vec<(String, Vec<String>)> = std::iter::once(("realistic mix".to_owned(), mix.clone()))
        .chain(TOKEN_BUCKETS.iter().map(|&t| (format!("~{t} tokens"), bucket(&mix, t))))
        .collect();
    // The same lengths as whole prompts of the mix, not glued pieces: each bucket's band
    // is [t/2, 2t) WordPiece tokens. A band without any prompt gets no row.
    let lengths: Vec<usize> =
        mix.iter().map(|m| targets[0].clf.encoder().wordpiece_ids(m).map(|ids| ids.len())).collect::<Result<_, _>>()?;
    for &t in &TOKEN_BUCKETS {
        let band: Vec<String> =
            mix.iter().zip(&lengths).filter(|(_, &n)| n >= t / 2 && n < 2 * t).map(|(m, _)| m.clone()).collect();
        if band.is_empty() {
            eprintln!("no prompt of the mix has {}-{} tokens: no whole-prompt row for ~{t}", t / 2, 2 * t - 1);
        } else {
            buckets.push((format!("whole prompts of {}-{} tokens (n={})", t / 2, 2 * t - 1, band.len()), band));
        }
    }

    let start_load = loadavg();
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "unset (all cores)".into());
    eprintln!("load average at start: {start_load}; RAYON_NUM_THREADS={threads}; {reps} repetitions");
    // [target][bucket][rep] -> [p50, p99, share, encoder-alone p50]
    let mut lat = vec![vec![Vec::<[f64; 4]>::new(); buckets.len()]; targets.len()];
    let mut thr = vec![Vec::<[f64; 3]>::new(); targets.len()];
    for rep in 0..reps {
        for (ti, t) in targets.iter().enumerate() {
            for (bi, (_, texts)) in buckets.iter().enumerate() {
                let [p50, p99, share] = run_c1(&t.svc, texts).await?;
                // The encoder alone on the same inputs: what the cascade saves.
                let mut enc = Vec::new();
                for text in texts.iter().take(ENCODER_SAMPLES) {
                    let start = Instant::now();
                    t.clf.classify_encoder(&[text.as_str()])?;
                    enc.push(start.elapsed());
                }
                enc.sort();
                lat[ti][bi].push([p50, p99, share, ms(percentile(&enc, 0.5))]);
            }
            thr[ti].push(run_throughput(&t.svc, &mix).await?);
            eprintln!("rep {}/{reps} {}: {:.0}/s (load {})", rep + 1, t.name, thr[ti][rep][0], loadavg());
        }
    }

    println!("load average: {start_load} at start, {} at end; RAYON_NUM_THREADS={threads}", loadavg());
    println!("medians of {reps} interleaved repetitions\n");
    println!("| router | input | encoder sees (max tokens) | p50 ms | p99 ms | stage-1 share | encoder alone p50 ms |");
    println!("|---|---|---|---|---|---|---|");
    for (ti, t) in targets.iter().enumerate() {
        for (bi, (name, texts)) in buckets.iter().enumerate() {
            let col = |k: usize| median(lat[ti][bi].iter().map(|r| r[k]).collect());
            let seen = texts
                .iter()
                .map(|x| t.clf.encoder().token_ids(x).map(|v| v.len()))
                .max_by_key(|r| r.as_ref().map_or(0, |v| *v));
            let seen = seen.and_then(Result::ok).unwrap_or(0);
            println!(
                "| {} | {name} | {seen} | {:.3} | {:.2} | {:.1}% | {:.1} |",
                t.name,
                col(0),
                col(1),
                col(2) * 100.0,
                col(3)
            );
        }
    }
    println!("\n| router | throughput at c={CONCURRENCY} (classifications/s) | stage-1 share | mean encoder batch |");
    println!("|---|---|---|---|");
    for (ti, t) in targets.iter().enumerate() {
        let col = |k: usize| median(thr[ti].iter().map(|r| r[k]).collect());
        println!("| {} | {:.0} | {:.1}% | {:.1} |", t.name, col(0), col(1) * 100.0, col(2));
    }
    Ok(())
}
