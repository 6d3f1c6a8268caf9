//! The byte prediction that budgets are reserved with, against real loads, and what the warm
//! tier accounts for a prepared copy against what that copy really allocates.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use super::*;
use crate::local::WeightFormat;

thread_local! {
    /// Heap bytes allocated minus freed by this thread (see [`Counting`]).
    static NET: Cell<i64> = const { Cell::new(0) };
}

/// Counts each thread's net heap allocation, so a test can measure what one call on its own
/// thread leaves allocated whatever the other tests do meanwhile. Forwards to `System`.
struct Counting;

fn count(delta: i64) {
    // `try_with`: a thread being torn down has no counter left; its frees do not matter.
    let _ = NET.try_with(|n| n.set(n.get() + delta));
}

fn net_heap() -> i64 {
    NET.with(Cell::get)
}

#[expect(unsafe_code, reason = "GlobalAlloc is an unsafe trait; every call forwards to System unchanged")]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            count(layout.size() as i64);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            count(layout.size() as i64);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        count(-(layout.size() as i64));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            count(new_size as i64 - layout.size() as i64);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn model(file: &str) -> std::path::PathBuf {
    crate::config::models_dir().join(file)
}

fn predicted_vs_loaded(file: &str) {
    // The gemma GGUF has no chat template; loading needs one.
    let cfg = LocalConfig { chat_template: Some("completion".into()), ..LocalConfig::new(model(file)) };
    let (params, bytes) = LocalExpert::predict(&cfg).unwrap();
    let e = LocalExpert::spawn("p", cfg).unwrap();
    let info = e.info();
    eprintln!("{file}: predicted {bytes} bytes {params} params; loaded {} bytes {} params", info.bytes, info.params);
    assert!(bytes >= info.bytes, "prediction {bytes} below the loaded {}", info.bytes);
    // An upper bound, but a tight one: a loose one would waste the budget.
    assert!(bytes as f64 <= info.bytes as f64 * 1.01, "prediction {bytes} far above the loaded {}", info.bytes);
    assert!(e.shutdown().is_ok(), "the only handle must be able to join the worker");
}

#[test]
fn hot_bytes_are_predicted_from_the_header_as_an_upper_bound() {
    predicted_vs_loaded("smollm2-135m-instruct-q4_1.gguf");
    predicted_vs_loaded("gemma-3-270m-q4_k_m.gguf");
}

#[test]
fn config_without_tiers_rejects_tier_keys_and_validates_values() {
    let base = "[[experts]]\nname = \"a\"\nkind = \"local\"\npath = \"x.gguf\"\n";
    let err = crate::config::load_str(&format!("{base}pin = true\n"), "t.toml").unwrap_err().to_string();
    assert!(err.contains("experts[0].pin") && err.contains("[tiers]"), "{err}");
    let tiers = "[tiers]\nhot_bytes = 1000\n";
    let err = crate::config::load_str(&format!("{tiers}{base}min_tier = \"hot\"\n"), "t.toml").unwrap_err().to_string();
    assert!(err.contains("experts[0].min_tier") && err.contains("\"hot\""), "{err}");
    let err = crate::config::load_str("[tiers]\nhot_bytes = 0\n", "t.toml").unwrap_err().to_string();
    assert!(err.contains("tiers.hot_bytes"), "{err}");
    let m = format!("{tiers}{base}[[models]]\nname = \"m\"\nexperts = [\"a\"]\nnot_hot = \"later\"\n");
    let err = crate::config::load_str(&m, "t.toml").unwrap_err().to_string();
    assert!(err.contains("models[0].not_hot") && err.contains("\"later\""), "{err}");
    let err = crate::config::load_str("[tiers]\nhot_bytes = 1\nwarm = 2\n", "t.toml").unwrap_err().to_string();
    assert!(err.contains("unknown field `warm`"), "{err}");
}

/// What the warm budget is charged for a prepared copy (weights in their compute format,
/// tokenizer, template, header) covers what reading one really leaves on the heap, and the
/// header-only prediction a load reserves with covers that charge. Tight too: a loose bound
/// would waste the budget.
#[test]
fn warm_bytes_cover_what_a_prepared_copy_allocates() {
    let smollm = LocalConfig::new(model("smollm2-135m-instruct-q4_1.gguf"));
    let cases = [
        ("smollm quantized", smollm.clone()),
        ("smollm f16", LocalConfig { weights: WeightFormat::F16, ..smollm }),
        (
            "gemma quantized",
            LocalConfig {
                chat_template: Some("completion".into()),
                ..LocalConfig::new(model("gemma-3-270m-q4_k_m.gguf"))
            },
        ),
    ];
    for (what, cfg) in cases {
        let footprint = Footprint::read(&cfg).unwrap();
        let before = net_heap();
        let p = LocalExpert::prepare("w", &cfg).unwrap();
        let held = (net_heap() - before) as usize;
        let (charged, weights) = (p.bytes(), p.weight_bytes());
        eprintln!(
            "{what}: heap held {held} (weights {weights}, rest {}); charged {charged}; predicted {}; file {}",
            held - weights,
            footprint.warm_bytes,
            std::fs::metadata(&cfg.path).unwrap().len()
        );
        assert!(charged >= held, "{what}: charged {charged} below the {held} bytes the copy holds");
        assert!(footprint.warm_bytes >= charged, "{what}: predicted {} below charged {charged}", footprint.warm_bytes);
        assert!(charged as f64 <= held as f64 * 1.1, "{what}: charged {charged} far above the {held} held");
        drop(p);
    }
}

fn manager(hot: u64, warm: u64) -> TierManager {
    TierManager::new(TiersConfig {
        hot_bytes: hot,
        warm_bytes: warm,
        min_residency: Duration::ZERO,
        demand_half_life: Duration::from_secs(60),
    })
}

/// A warm-floor expert is charged its prepared copy's size, reserved before the read: a warm
/// budget one byte short of the prediction refuses it up front; with `f16` weights the copy
/// (dequantized, ready to promote) costs about twice the quantized file.
#[test]
fn the_warm_tier_accounts_the_prepared_copy_it_holds() {
    let q4 = LocalConfig::new(model("smollm2-135m-instruct-q4_1.gguf"));
    let f16 = LocalConfig { weights: WeightFormat::F16, ..q4.clone() };
    let file = std::fs::metadata(&q4.path).unwrap().len();
    for cfg in [q4, f16] {
        let predicted = Footprint::read(&cfg).unwrap().warm_bytes as u64;
        let reg = || Registration { cfg: cfg.clone(), pin: false, min_tier: MinTier::Warm };
        let tight = manager(1 << 40, predicted - 1);
        match tight.register("w", reg()) {
            Err(TierError::DoesNotFit { need, .. }) => assert_eq!(need, predicted),
            other => panic!("a warm budget below the prediction must refuse the expert, got {other:?}"),
        }
        assert_eq!(tight.used(), (0, 0), "a refused expert must leave nothing accounted");

        let t = manager(1 << 40, predicted);
        t.register("w", reg()).unwrap();
        assert_eq!(t.tier("w"), Some(Tier::Warm));
        let held = LocalExpert::prepare("w", &cfg).unwrap().bytes() as u64;
        let snap = t.snapshot();
        assert_eq!(t.used().1, held, "warm usage must be the prepared copy's size");
        assert_eq!(snap.experts[0].warm_bytes, held);
        assert!(snap.peak_warm <= predicted);
        if cfg.weights == WeightFormat::F16 {
            assert!(held > file * 5 / 2, "f16 copy {held} bytes vs a {file}-byte Q4_1 file");
        } else {
            assert!(held > file * 9 / 10 && held < file * 6 / 5, "quantized copy {held} bytes vs a {file}-byte file");
        }
    }
}

/// A reload that changes an expert while it is being promoted replaces its slot: the bytes
/// the old promotion reserved are released, the model it loads (with the old settings) is
/// dropped instead of filling the new slot, and the new settings load on the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_during_a_promotion_leaks_no_reservation_and_installs_the_new_settings() {
    let q4 = LocalConfig::new(model("smollm2-135m-instruct-q4_1.gguf"));
    let f16 = LocalConfig { weights: WeightFormat::F16, ..q4.clone() };
    let t = manager(1 << 40, 0);
    let reg = |cfg: &LocalConfig| Registration { cfg: cfg.clone(), pin: false, min_tier: MinTier::Cold };
    t.register("x", reg(&q4)).unwrap();
    let mut old = {
        let mut st = t.shared.lock();
        t.start_promotion(&mut st, "x", false)
    };
    // The promotion has reserved its hot bytes and is reading the file.
    let deadline = Instant::now() + Duration::from_secs(5);
    while t.used().0 == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(t.used().0 > 0, "the promotion should have reserved hot bytes by now");
    let (tt, cfg) = (t.clone(), f16.clone());
    tokio::task::spawn_blocking(move || tt.register("x", reg(&cfg))).await.unwrap().unwrap();
    assert_eq!(t.used(), (0, 0), "the replaced slot's reservation must be released at once");
    // The old promotion finishes its load and gives up.
    let ended = tokio::time::timeout(Duration::from_secs(120), old.wait_for(|p| !matches!(p, Progress::Running))).await;
    assert!(matches!(ended.unwrap().as_deref(), Ok(Progress::GaveUp)), "the old promotion must give up");
    assert_eq!(t.tier("x"), Some(Tier::Cold), "the old settings' model must not fill the new slot");
    assert_eq!(t.used(), (0, 0), "nothing accounted for a model that was dropped");
    let lease = t.acquire("x", Wait::Upto(Duration::from_secs(60))).await.unwrap();
    let f16_bytes = LocalExpert::predict(&f16).unwrap().1 as u64;
    assert_eq!(t.used().0, lease.expert().info().bytes as u64);
    assert!(t.used().0 * 10 >= f16_bytes * 9, "the f16 settings are loaded: {} vs {f16_bytes}", t.used().0);
}
