//! Tier benchmark: promotion time and time to first token from a hot, warm and cold local
//! expert, and the cost of alternating between two experts under a hot budget that holds one,
//! against reloading from disk for every request. Both weight formats the shipped configs use
//! (`quantized`, and `f16` as in `policies/default.toml`). See README.md next to this file.
#![expect(clippy::unwrap_used, reason = "a benchmark stops at the first failure")]

use std::time::{Duration, Instant};

use triage::config::{MinTier, TiersConfig};
use triage::local::{ChatMessage, Footprint, GenEvent, GenRequest, LocalConfig, LocalExpert, WeightFormat};
use triage::tiers::{Registration, Tier, TierManager, Wait};

const MODEL: &str = "smollm2-135m-instruct-q4_1.gguf";
/// Repetitions per measurement; medians are reported (the machine is shared).
const ROUNDS: usize = 9;
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
        Some(ev @ GenEvent::TooLong { .. }) => panic!("prompt refused: {ev:?}"),
        None => panic!("worker stopped"),
        Some(_) => {}
    }
    while rx.recv().await.is_some() {}
}

fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(1e-9)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim().to_string()
}

fn cfg(path: &std::path::Path, weights: WeightFormat) -> LocalConfig {
    LocalConfig { threads: Some(2), weights, ..LocalConfig::new(path) }
}

fn manager(hot: u64, warm: u64) -> TierManager {
    TierManager::new(TiersConfig {
        hot_bytes: hot,
        warm_bytes: warm,
        min_residency: Duration::ZERO,
        demand_half_life: Duration::from_secs(60),
    })
}

/// One request through the tier manager: (time to the lease = promotion as the request sees
/// it, eviction of the previous expert included; time to the first token; how long building
/// the model took in the last promotion, without eviction and thread hand-offs).
async fn tiered(t: &TierManager, name: &str) -> (Duration, Duration, Duration) {
    let start = Instant::now();
    let lease = t.acquire(name, WAIT).await.unwrap();
    let promoted = start.elapsed();
    first_token(lease.expert()).await;
    (promoted, start.elapsed(), lease.expert().info().load_time)
}

/// What a user without tiers does: load from disk, generate, drop. (load, first token); the
/// drop (joining the worker) is not timed, which favours this baseline.
async fn naive(c: &LocalConfig, name: &'static str) -> (Duration, Duration, Duration) {
    let start = Instant::now();
    let c = c.clone();
    let e = tokio::task::spawn_blocking(move || LocalExpert::spawn(name, c)).await.unwrap().unwrap();
    let loaded = start.elapsed();
    first_token(&e).await;
    let total = start.elapsed();
    let build = e.info().load_time;
    tokio::task::spawn_blocking(move || e.shutdown().is_ok()).await.unwrap();
    (loaded, total, build)
}

async fn bench(path: &std::path::Path, weights: WeightFormat) {
    let c = cfg(path, weights);
    let f = Footprint::read(&c).unwrap();
    let (hot, warm) = (f.hot_bytes as u64, f.warm_bytes as u64);
    println!("\n## weights = {weights:?}: {hot} hot bytes, {warm} warm bytes; loadavg {}", loadavg());

    // By tier. `h` stays hot; `w` (min_tier warm) and `c` (cold: the warm budget is w's) are
    // promoted and evicted again each round, sharing the one free hot slot.
    let t = manager(2 * hot + 1, warm + 1);
    let reg = |pin, min_tier| Registration { cfg: c.clone(), pin, min_tier };
    t.register("h", reg(true, MinTier::Cold)).unwrap();
    t.register("w", reg(false, MinTier::Warm)).unwrap();
    t.register("c", reg(false, MinTier::Cold)).unwrap();
    let (mut h, mut w, mut co) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        h.push(tiered(&t, "h").await);
        assert_eq!(t.tier("w"), Some(Tier::Warm));
        w.push(tiered(&t, "w").await);
        assert_eq!(t.tier("c"), Some(Tier::Cold));
        co.push(tiered(&t, "c").await); // evicts w back to warm
    }
    let s = t.snapshot();
    drop(t);
    type Sample = (Duration, Duration, Duration);
    let promo = |v: &[Sample]| median(&v.iter().map(|x| x.0).collect::<Vec<_>>());
    let ttft = |v: &[Sample]| median(&v.iter().map(|x| x.1).collect::<Vec<_>>());
    let build = |v: &[Sample]| median(&v.iter().map(|x| x.2).collect::<Vec<_>>());
    println!("tier  promotion (median)  model build (median)  TTFT incl. promotion (median)");
    println!("hot   {:>18}  {:>20}  {:>12}", ms(promo(&h)), "-", ms(ttft(&h)));
    println!("warm  {:>18}  {:>20}  {:>12}", ms(promo(&w)), ms(build(&w)), ms(ttft(&w)));
    println!("cold  {:>18}  {:>20}  {:>12}", ms(promo(&co)), ms(build(&co)), ms(ttft(&co)));
    let mean = |k: &str| s.loads[k].total_ms / s.loads[k].count as f64;
    println!(
        "manager's load timers (means): warm->hot {:.1} ms (max {:.1}), cold->hot {:.1} ms (max {:.1})",
        mean("warm->hot"),
        s.loads["warm->hot"].max_ms,
        mean("cold->hot"),
        s.loads["cold->hot"].max_ms
    );

    // Alternating a, b, a, b ... under a hot budget that holds one (warm holds both copies),
    // interleaved request by request with the naive baseline so load drift hits both alike.
    let t = manager(hot + 1, 2 * warm + 1);
    t.register("a", reg(false, MinTier::Cold)).unwrap();
    t.register("b", reg(false, MinTier::Cold)).unwrap();
    // The first two requests read the files (cold); the steady state is what alternating costs.
    tiered(&t, "a").await;
    tiered(&t, "b").await;
    let (mut tv, mut nv) = (Vec::new(), Vec::new());
    for i in 0..2 * ROUNDS {
        let name = if i % 2 == 0 { "a" } else { "b" };
        tv.push(tiered(&t, name).await);
        nv.push(naive(&c, name).await);
    }
    let s = t.snapshot();
    let (ts, tr, ns, nr) = (promo(&tv), ttft(&tv), promo(&nv), ttft(&nv));
    println!("alternating ({} requests each, peak hot {} <= budget {}):", 2 * ROUNDS, s.peak_hot, s.hot_budget);
    println!("              per swap (median)  model build (median)  per request, to first token (median)");
    println!("tiered        {:>17}  {:>20}  {:>12}", ms(ts), ms(build(&tv)), ms(tr));
    println!("naive reload  {:>17}  {:>20}  {:>12}", ms(ns), ms(build(&nv)), ms(nr));
    println!("naive / tiered: per swap {:.1}x, per request {:.2}x", ratio(ns, ts), ratio(nr, tr));
    println!("loadavg after: {}", loadavg());
}

#[tokio::main]
async fn main() {
    let path = triage::config::models_dir().join(MODEL);
    println!("model {MODEL}; {ROUNDS} rounds; loadavg before: {}", loadavg());
    for weights in [WeightFormat::Quantized, WeightFormat::F16] {
        bench(&path, weights).await;
    }
}
