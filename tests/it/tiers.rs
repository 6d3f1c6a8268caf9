//! Memory tiering of local experts, with the real shipped models: budgets under concurrent
//! traffic, eviction order, pinning, leases during a swap, `wait` vs `fallback`, a corrupt
//! file, and warm vs cold promotion.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use triage::local::{Footprint, LocalConfig, LocalExpert};
use triage::tiers::{Tier, TierManager};

use crate::support::{client, Gateway};

const SMOLLM: &str = "smollm2-135m-instruct-q4_1.gguf";
const GEMMA: &str = "gemma-3-270m-q4_k_m.gguf";
/// Slack added to a budget sized for N models, well under one more model.
const SLACK: u64 = 1 << 20;

fn model(file: &str) -> PathBuf {
    let dir = std::env::var("TRIAGE_MODELS_DIR").unwrap_or_else(|_| format!("{}/models", env!("CARGO_MANIFEST_DIR")));
    PathBuf::from(dir).join(file)
}

fn hot_bytes(file: &str) -> u64 {
    LocalExpert::predict(&LocalConfig::new(model(file))).unwrap().1 as u64
}

/// What a warm copy (prepared: weights, tokenizer, template) is charged, predicted from the header.
fn warm_bytes(file: &str, extra: &str) -> u64 {
    let cfg =
        LocalConfig { chat_template: (!extra.is_empty()).then(|| extra.to_string()), ..LocalConfig::new(model(file)) };
    Footprint::read(&cfg).unwrap().warm_bytes as u64
}

fn local(name: &str, file: &std::path::Path, extra: &str) -> String {
    format!(
        "[[experts]]\nname = \"{name}\"\nkind = \"local\"\npath = \"{}\"\nthreads = 2\ntimeouts = {{ first_byte_ms = 60000, total_ms = 60000 }}\n{extra}\n",
        file.display()
    )
}

fn tiers(hot: u64, warm: u64) -> String {
    format!("[resilience]\nbackoff_base_ms = 1\nbackoff_max_ms = 5\n[tiers]\nhot_bytes = {hot}\nwarm_bytes = {warm}\nmin_residency_ms = 0\n")
}

fn manager(gw: &Gateway) -> TierManager {
    gw.state.snapshot.load().tiers().cloned().expect("[tiers] configured")
}

async fn chat(gw: &Gateway, model: &str, max_tokens: u32) -> (u16, Option<String>, Value) {
    let resp = client()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": model, "max_tokens": max_tokens, "temperature": 0,
                      "messages": [{"role": "user", "content": "Name a colour."}]}))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let expert = resp.headers().get("x-triage-expert").map(|v| v.to_str().unwrap().to_string());
    let body: Value = resp.json().await.unwrap();
    (status, expert, body)
}

async fn admin(gw: &Gateway) -> Value {
    client().get(gw.url("/admin/experts")).send().await.unwrap().json().await.unwrap()
}

fn entry<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["experts"].as_array().unwrap().iter().find(|e| e["name"] == name).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_hot_budget_holds_under_concurrent_mixed_traffic() {
    let budget = hot_bytes(SMOLLM).max(hot_bytes(GEMMA)) + SLACK;
    let cfg = format!(
        "{}{}{}",
        tiers(budget, warm_bytes(SMOLLM, "") + warm_bytes(GEMMA, "completion") + SLACK),
        local("small", &model(SMOLLM), ""),
        local("gemma", &model(GEMMA), "chat_template = \"completion\""),
    );
    let gw = Gateway::start(&cfg).await;
    let tiers = manager(&gw);
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (tiers, stop) = (tiers.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut samples, mut max) = (0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                max = max.max(tiers.used().0);
                samples += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            (samples, max)
        })
    };
    let gw = Arc::new(gw);
    let mut reqs = Vec::new();
    for i in 0..6 {
        let gw = gw.clone();
        let name = if i % 2 == 0 { "small" } else { "gemma" };
        reqs.push(tokio::spawn(async move { (name, chat(&gw, name, 2).await) }));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for r in reqs {
        let (name, (status, expert, body)) = r.await.unwrap();
        assert_eq!(status, 200, "{name}: {body}");
        assert_eq!(expert.as_deref(), Some(name));
    }
    stop.store(true, Ordering::Relaxed);
    let (samples, max) = sampler.await.unwrap();
    let snap = tiers.snapshot();
    eprintln!("samples {samples}, max sampled {max}, peak {}, budget {budget}, swaps {:?}", snap.peak_hot, snap.swaps);
    assert!(
        max <= budget && snap.peak_hot <= budget,
        "hot budget {budget} exceeded: sampled {max}, peak {}",
        snap.peak_hot
    );
    assert!(snap.swaps.iter().any(|s| s.from == Tier::Hot), "the two models never swapped: {:?}", snap.swaps);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eviction_takes_the_least_demanded_expert_not_merely_the_least_recent() {
    let p = hot_bytes(SMOLLM);
    let m = model(SMOLLM);
    let cfg = format!("{}{}{}{}", tiers(2 * p + SLACK, 0), local("a", &m, ""), local("b", &m, ""), local("c", &m, ""));
    let gw = Gateway::start(&cfg).await;
    let tiers = manager(&gw);
    // LRU among equals: a, b hot; c pushes out a, the least recently used.
    for n in ["a", "b", "c"] {
        assert_eq!(chat(&gw, n, 1).await.0, 200);
    }
    assert_eq!(tiers.tier("a"), Some(Tier::Cold));
    assert_eq!(tiers.tier("b"), Some(Tier::Hot));
    // Demand: b is asked for three more times, then c once (c is now the most recent).
    for n in ["b", "b", "b", "c"] {
        assert_eq!(chat(&gw, n, 1).await.0, 200);
    }
    assert_eq!(chat(&gw, "a", 1).await.0, 200);
    assert_eq!(tiers.tier("b"), Some(Tier::Hot), "b has the most demand and must stay: {:?}", tiers.snapshot());
    assert_eq!(tiers.tier("c"), Some(Tier::Cold), "c has the least demand: {:?}", tiers.snapshot());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pinned_expert_stays_hot_while_others_swap() {
    let p = hot_bytes(SMOLLM);
    let m = model(SMOLLM);
    let cfg = format!(
        "{}{}{}{}",
        tiers(2 * p + SLACK, 0),
        local("pinned", &m, "pin = true"),
        local("a", &m, ""),
        local("b", &m, "")
    );
    let gw = Gateway::start(&cfg).await;
    let tiers = manager(&gw);
    assert_eq!(tiers.tier("pinned"), Some(Tier::Hot), "pinned experts load at start");
    for n in ["a", "b", "a", "b"] {
        assert_eq!(chat(&gw, n, 1).await.0, 200);
        assert_eq!(tiers.tier("pinned"), Some(Tier::Hot));
    }
    assert_eq!(entry(&admin(&gw).await, "pinned")["pinned"], true);
    assert!(tiers.snapshot().swaps.iter().any(|s| s.from == Tier::Hot), "a and b never swapped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_streaming_request_completes_while_another_expert_waits_to_swap_in() {
    let p = hot_bytes(SMOLLM);
    let m = model(SMOLLM);
    let cfg = format!("{}{}{}", tiers(p + SLACK, 0), local("a", &m, ""), local("b", &m, ""));
    let gw = Arc::new(Gateway::start(&cfg).await);
    let tiers = manager(&gw);
    assert_eq!(chat(&gw, "a", 1).await.0, 200);
    let resp = client()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "a", "max_tokens": 24, "temperature": 0, "stream": true,
                      "messages": [{"role": "user", "content": "Count from one to twenty."}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // `b` needs a's bytes; a is leased by the stream, so b waits for it to end.
    let other = {
        let gw = gw.clone();
        tokio::spawn(async move {
            let r = chat(&gw, "b", 1).await;
            (r, Instant::now())
        })
    };
    let body = resp.text().await.unwrap();
    let stream_end = Instant::now();
    assert!(body.contains("\"finish_reason\":\"") && body.ends_with("data: [DONE]\n\n"), "stream cut short: {body}");
    let ((status, expert, b), b_done) = other.await.unwrap();
    assert_eq!(status, 200, "{b}");
    assert_eq!(expert.as_deref(), Some("b"));
    assert!(b_done >= stream_end, "b was served before a's stream ended: a was evicted under a request");
    assert!(tiers.snapshot().peak_hot <= p + SLACK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wait_serves_the_cold_expert_and_fallback_goes_to_the_next() {
    let p = hot_bytes(SMOLLM);
    let m = model(SMOLLM);
    let cfg = format!(
        "{}{}{}{}\
         [[models]]\nname = \"patient\"\nexperts = [\"cold1\", \"ready\"]\nnot_hot = \"wait\"\npromote_timeout_ms = 60000\n\
         [[models]]\nname = \"hasty\"\nexperts = [\"cold2\", \"ready\"]\nnot_hot = \"fallback\"\n",
        tiers(3 * p + SLACK, 0),
        local("ready", &m, "pin = true"),
        local("cold1", &m, ""),
        local("cold2", &m, ""),
    );
    let gw = Gateway::start(&cfg).await;
    let tiers = manager(&gw);
    // A request cold2 would refuse (an image, for a text model) loads nothing: no bytes
    // moved, nothing evicted, for a request it will not take.
    let image = json!({"model": "hasty", "max_tokens": 1, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}]});
    let r = client().post(gw.url("/v1/chat/completions")).json(&image).send().await.unwrap();
    assert_eq!(r.status(), 400);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(tiers.tier("cold2"), Some(Tier::Cold), "a refused request started a load");
    let (status, expert, body) = chat(&gw, "hasty", 1).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(expert.as_deref(), Some("ready"), "fallback must not wait for cold2");
    // The routing decision started cold2's promotion in the background (prefetch).
    let started = Instant::now();
    while tiers.tier("cold2") != Some(Tier::Hot) {
        assert!(started.elapsed() < Duration::from_secs(60), "cold2 was never promoted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(chat(&gw, "hasty", 1).await.1.as_deref(), Some("cold2"), "once hot, the first choice serves");
    let (status, expert, body) = chat(&gw, "patient", 1).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(expert.as_deref(), Some("cold1"), "wait must serve the first choice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_corrupt_model_file_is_reported_and_routed_around() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.gguf");
    // The header (metadata and tensor table) is intact; the tensor data is cut off.
    let bytes = std::fs::read(model(SMOLLM)).unwrap();
    std::fs::write(&broken, &bytes[..8 << 20]).unwrap();
    let p = hot_bytes(SMOLLM);
    let cfg = format!(
        "{}{}{}[[models]]\nname = \"m\"\nexperts = [\"broken\", \"good\"]\n",
        tiers(2 * p + SLACK, 0),
        local("broken", &broken, ""),
        local("good", &model(SMOLLM), ""),
    );
    let gw = Gateway::start(&cfg).await;
    let (status, expert, body) = chat(&gw, "m", 1).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(expert.as_deref(), Some("good"));
    let report = admin(&gw).await;
    let e = entry(&report, "broken");
    assert_eq!(e["tier"], "cold");
    let err = e["error"].as_str().unwrap_or_default();
    assert!(err.contains("broken.gguf"), "the admin error must name the file: {report}");
    let (status, _, body) = chat(&gw, "broken", 1).await;
    assert_eq!(status, 502, "{body}");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(msg.contains("unavailable") && msg.contains("broken.gguf"), "{body}");
    assert!(report["tiers"]["load_failures"].as_u64().unwrap() >= 1);
}

/// Warm means "in host RAM": a warm expert promotes with its file gone from disk, while
/// a cold one cannot. (How much faster warm->hot is than cold->hot is a benchmark, in
/// bench/tiers: with the file in the page cache the gap is tens of milliseconds, less
/// than the noise of this shared machine.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_warm_expert_promotes_from_ram_without_touching_disk() {
    let dir = tempfile::tempdir().unwrap();
    let (wf, cf) = (dir.path().join("w.gguf"), dir.path().join("c.gguf"));
    std::fs::copy(model(SMOLLM), &wf).unwrap();
    std::fs::copy(model(SMOLLM), &cf).unwrap();
    let cfg = format!(
        "{}{}{}",
        tiers(hot_bytes(SMOLLM) + SLACK, warm_bytes(SMOLLM, "") + SLACK),
        local("w", &wf, "min_tier = \"warm\""),
        local("c", &cf, "")
    );
    let gw = Gateway::start(&cfg).await;
    let tiers = manager(&gw);
    assert_eq!((tiers.tier("w"), tiers.tier("c")), (Some(Tier::Warm), Some(Tier::Cold)));
    std::fs::remove_file(&wf).unwrap();
    std::fs::remove_file(&cf).unwrap();
    assert_eq!(chat(&gw, "w", 1).await.0, 200, "the warm copy in RAM is enough to promote");
    assert_eq!(tiers.tier("w"), Some(Tier::Hot));
    let (status, _, body) = chat(&gw, "c", 1).await;
    assert_eq!(status, 502, "a cold expert needs its file: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn warm_and_cold_promotions_are_timed_and_reported() {
    let p = hot_bytes(SMOLLM);
    let m = model(SMOLLM);
    // Room for one hot model and one warm copy: `w` keeps it (min_tier), `c` loads from disk.
    let cfg = format!(
        "{}{}{}",
        tiers(p + SLACK, warm_bytes(SMOLLM, "") + SLACK),
        local("w", &m, "min_tier = \"warm\""),
        local("c", &m, "")
    );
    let gw = Gateway::start(&cfg).await;
    let tiers = manager(&gw);
    assert_eq!(tiers.tier("w"), Some(Tier::Warm), "min_tier = warm reads the file at start");
    let (mut warm, mut cold) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        for (n, times) in [("c", &mut cold), ("w", &mut warm)] {
            let t = Instant::now();
            assert_eq!(chat(&gw, n, 1).await.0, 200);
            times.push(t.elapsed());
        }
    }
    warm.sort();
    cold.sort();
    let snap = tiers.snapshot();
    let (w2h, c2h) = (&snap.loads["warm->hot"], &snap.loads["cold->hot"]);
    eprintln!(
        "first-request medians: warm {:?}, cold {:?}; loads warm->hot {w2h:?}, cold->hot {c2h:?}",
        warm[1], cold[1]
    );
    assert_eq!((w2h.count, c2h.count), (3, 3), "{snap:?}");
    // A warm copy holds the parsed header, tokenizer, template and weights in their compute
    // format, so promoting it only builds the model around shared weights (milliseconds);
    // cold reads and builds all of it (hundreds). A factor of 3 leaves room for the noise of
    // this shared machine. Whole-request latency is not asserted: a one-token generation takes
    // 1-2 s with noise here.
    assert!(
        w2h.total_ms * 3.0 < c2h.total_ms,
        "warm->hot ({:.1} ms mean) must be far cheaper than cold->hot ({:.1} ms mean)",
        w2h.total_ms / 3.0,
        c2h.total_ms / 3.0
    );
    let report = admin(&gw).await;
    assert!(entry(&report, "w")["warm_to_hot_ms"].is_number() && entry(&report, "c")["cold_to_hot_ms"].is_number());
}

/// A rejected reload leaves a tiered local expert as it was. Registering changed settings
/// replaces the expert's slot (and drops what it had loaded), so it happens only after the
/// rest of the new version (here, a router that cannot load) has been built.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rejected_reload_leaves_a_tiered_expert_loaded() {
    let p = hot_bytes(SMOLLM);
    let m = model(SMOLLM);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("triage.toml");
    std::fs::write(&file, format!("{}{}", tiers(p + SLACK, 0), local("a", &m, ""))).unwrap();
    let mut gw = Gateway::start_files(std::slice::from_ref(&file)).await;
    gw.stop_watching();
    assert_eq!(chat(&gw, "a", 1).await.0, 200);
    let mgr = manager(&gw);
    assert_eq!(mgr.tier("a"), Some(Tier::Hot));
    // `a` changes, and a routed model comes whose router this gateway cannot load.
    let routed = "[[models]]\nname = \"m\"\nrouter = \"centroid\"\nfallback = \"a\"\n\
                  categories = { \"*\" = [\"a\"] }\n[models.centroid]\nhello = [\"Say hi.\"]\n";
    let edit = format!("{}{}{routed}", tiers(p + SLACK, 0), local("a", &m, "context_length = 1024"));
    std::fs::write(&file, edit).unwrap();
    let r = client().post(gw.url("/admin/reload")).send().await.unwrap();
    assert_eq!(r.status(), 422, "{}", r.text().await.unwrap());
    assert_eq!(mgr.tier("a"), Some(Tier::Hot), "the rejected version unloaded the expert");
    assert_eq!(chat(&gw, "a", 1).await.0, 200);
}
