//! Tier benchmark: time to first token from a hot, warm and cold local expert, and the cost
//! of alternating between two experts under a hot budget that holds one, against reloading
//! from disk every time. See README.md next to this file.
#![expect(clippy::unwrap_used, reason = "a benchmark stops at the first failure")]

use std::time::{Duration, Instant};

use triage::config::{MinTier, TiersConfig};
use triage::local::{ChatMessage, GenEvent, GenRequest, LocalConfig, LocalExpert};
use triage::tiers::{Registration, Tier, TierManager, Wait};

const MODEL: &str = "smollm2-135m-instruct-q4_1.gguf";
/// Repetitions per measurement; the median is reported (the machine is shared).
const ROUNDS: usize = 7;
const WAIT: Wait = Wait::Upto(Duration::from_secs(120));

fn request() -> GenRequest {
    GenRequest {
        messages: vec![ChatMessage::new("user", "Name a colour.")],
        max_tokens: Some(1),
        temperature: Some(0.0),
        ..Default::default()
    }
}

/// Submits a one-token request and waits for its first event.
async fn first_token(e: &LocalExpert) {
    let mut rx = e.submit(request()).unwrap();
    match rx.recv().await {
        Some(GenEvent::Error(err)) => panic!("generation failed: {err}"),
        None => panic!("worker stopped"),
        Some(_) => {}
    }
    while rx.recv().await.is_some() {}
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn cfg(path: &std::path::Path) -> LocalConfig {
    LocalConfig { threads: Some(2), ..LocalConfig::new(path) }
}

fn manager(hot: u64, warm: u64) -> TierManager {
    TierManager::new(TiersConfig {
        hot_bytes: hot,
        warm_bytes: warm,
        min_residency: Duration::ZERO,
        demand_half_life: Duration::from_secs(60),
    })
}

/// Time from `acquire` to the first token, with the expert in `tier` beforehand.
async fn ttft(t: &TierManager, name: &str) -> Duration {
    let start = Instant::now();
    let lease = t.acquire(name, WAIT).await.unwrap();
    first_token(lease.expert()).await;
    start.elapsed()
}

#[tokio::main]
async fn main() {
    let path = triage::config::models_dir().join(MODEL);
    let (_, hot) = LocalExpert::predict(&cfg(&path)).unwrap();
    let (hot, file) = (hot as u64, std::fs::metadata(&path).unwrap().len());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("model {MODEL}: {hot} hot bytes, {file} file bytes; {ROUNDS} rounds; loadavg before: {}", load.trim());

    // TTFT by tier. `h` stays hot; `w` (min_tier warm) and `c` (cold) are promoted and
    // evicted again each round by `h2`, which shares the one free hot slot.
    let (mut by_hot, mut by_warm, mut by_cold) = (Vec::new(), Vec::new(), Vec::new());
    let t = manager(2 * hot + 1, file + 1);
    let reg = |pin, min_tier| Registration { cfg: cfg(&path), pin, min_tier };
    t.register("h", reg(true, MinTier::Cold)).unwrap();
    t.register("w", reg(false, MinTier::Warm)).unwrap();
    t.register("c", reg(false, MinTier::Cold)).unwrap();
    for _ in 0..ROUNDS {
        by_hot.push(ttft(&t, "h").await);
        assert_eq!(t.tier("w"), Some(Tier::Warm));
        by_warm.push(ttft(&t, "w").await);
        assert_eq!(t.tier("c"), Some(Tier::Cold));
        by_cold.push(ttft(&t, "c").await); // evicts w back to warm
    }
    let s = t.snapshot();
    println!("TTFT hot:  median {}", ms(median(by_hot)));
    println!(
        "TTFT warm: median {}  (warm->hot load: mean {:.1} ms)",
        ms(median(by_warm)),
        s.loads["warm->hot"].total_ms / s.loads["warm->hot"].count as f64
    );
    println!(
        "TTFT cold: median {}  (cold->hot load: mean {:.1} ms)",
        ms(median(by_cold)),
        s.loads["cold->hot"].total_ms / s.loads["cold->hot"].count as f64
    );
    drop(t);

    // Alternating a, b, a, b ... under a hot budget that holds one; warm holds both copies.
    let t = manager(hot + 1, 2 * file + 1);
    t.register("a", reg(false, MinTier::Cold)).unwrap();
    t.register("b", reg(false, MinTier::Cold)).unwrap();
    let mut tiered = Vec::new();
    for i in 0..2 * ROUNDS + 2 {
        let d = ttft(&t, if i % 2 == 0 { "a" } else { "b" }).await;
        // The first two requests read the files (cold); the steady state is what alternating costs.
        if i >= 2 {
            tiered.push(d);
        }
    }
    // Naive: load from disk for every request, drop after it.
    let mut naive = Vec::new();
    for i in 0..2 * ROUNDS {
        let start = Instant::now();
        let p = path.clone();
        let e = tokio::task::spawn_blocking(move || LocalExpert::spawn(if i % 2 == 0 { "a" } else { "b" }, cfg(&p)))
            .await
            .unwrap()
            .unwrap();
        first_token(&e).await;
        naive.push(start.elapsed());
        tokio::task::spawn_blocking(move || e.shutdown().is_ok()).await.unwrap();
    }
    let s = t.snapshot();
    let (tm, nm) = (median(tiered), median(naive));
    println!(
        "alternating, tiered (warm->hot swaps): median {} per request; peak hot {} <= budget {}",
        ms(tm),
        s.peak_hot,
        s.hot_budget
    );
    println!("alternating, naive (reload from disk): median {} per request", ms(nm));
    println!("naive / tiered: {:.1}x", nm.as_secs_f64() / tm.as_secs_f64());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("loadavg after: {}", load.trim());
}
