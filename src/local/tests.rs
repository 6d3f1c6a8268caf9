//! Local experts exercised with the real GGUF models from `scripts/setup.sh` (no mocks).
//! Run: `cargo test --lib local::`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::engine::{Abort, Engine, Outcome, Source};
use super::*;

const SMOLLM: &str = "smollm2-135m-instruct-q4_1.gguf";
const GEMMA: &str = "gemma-3-270m-q4_k_m.gguf";
/// Generous bound for one short request on a busy two-core machine.
const PROMPT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

fn model_path(file: &str) -> PathBuf {
    let dir = std::env::var_os("TRIAGE_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models"));
    let path = dir.join(file);
    assert!(
        path.is_file(),
        "model {} is missing: run `scripts/setup.sh` (or set TRIAGE_MODELS_DIR)",
        path.display()
    );
    path
}

fn smollm_cfg() -> LocalConfig {
    LocalConfig {
        weights: WeightFormat::F32,
        ..LocalConfig::new(model_path(SMOLLM))
    }
}

fn gemma_cfg() -> LocalConfig {
    LocalConfig {
        chat_template: Some("completion".into()),
        ..LocalConfig::new(model_path(GEMMA))
    }
}

/// Engines are loaded once per test binary; tests that use one take the lock in turn.
fn engine(slot: &'static OnceLock<Mutex<Engine>>, cfg: fn() -> LocalConfig) -> std::sync::MutexGuard<'static, Engine> {
    let m = slot.get_or_init(|| {
        let cfg = cfg();
        let e = Engine::load("test", &cfg, Source::File(&cfg.path));
        Mutex::new(e.unwrap_or_else(|e| panic!("loading {}: {e}", cfg.path.display())))
    });
    m.lock().unwrap_or_else(|p| p.into_inner())
}

static SMOLLM_ENGINE: OnceLock<Mutex<Engine>> = OnceLock::new();
static GEMMA_ENGINE: OnceLock<Mutex<Engine>> = OnceLock::new();

fn user(text: &str) -> GenRequest {
    GenRequest {
        messages: vec![ChatMessage::new("user", text)],
        ..Default::default()
    }
}

/// Runs a request to completion, returning the streamed deltas and the outcome.
fn run(engine: &mut Engine, req: &GenRequest) -> (Vec<String>, Outcome) {
    let mut deltas = Vec::new();
    let out = engine.generate(
        req,
        |t| {
            deltas.push(t.to_string());
            true
        },
        || true,
    );
    match out {
        Ok(o) => (deltas, o),
        Err(Abort::Cancelled) => panic!("generation cancelled unexpectedly"),
        Err(Abort::Failed(e)) => panic!("generation failed: {e}"),
    }
}

#[test]
fn smollm_greedy_answers_paris() {
    let mut e = engine(&SMOLLM_ENGINE, smollm_cfg);
    let req = GenRequest {
        max_tokens: Some(24),
        ..user("What is the capital of France?")
    };
    let (deltas, out) = run(&mut e, &req);
    let text = deltas.concat();
    assert!(text.contains("Paris"), "answer was {text:?}");
    eprintln!("smollm: {text:?} {:?}", out.finish_reason);
}

#[test]
fn gemma_base_completes_capital_of_france() {
    let mut e = engine(&GEMMA_ENGINE, gemma_cfg);
    let req = GenRequest {
        max_tokens: Some(8),
        ..user("The capital of France is")
    };
    let (deltas, _) = run(&mut e, &req);
    let text = deltas.concat();
    assert!(text.starts_with(" Paris"), "continuation was {text:?}");
}

#[test]
fn debug_gemma_top() {
    let mut e = engine(&GEMMA_ENGINE, gemma_cfg);
    let ids = e.prompt_ids(&user("The capital of France is")).unwrap();
    eprintln!("ids {ids:?}");
    for id in &ids { eprint!("{:?} ", e.tok.tokenizer.id_to_token(*id)); }
    e.model_reset();
    let l = e.model_forward(&ids, 0).unwrap().to_vec1::<f32>().unwrap();
    let mut idx: Vec<usize> = (0..l.len()).collect();
    idx.sort_by(|a, b| l[*b].total_cmp(&l[*a]));
    for i in &idx[..8] { eprintln!("{} {:?} {}", i, e.tok.tokenizer.id_to_token(*i as u32), l[*i]); }
}

#[test]
fn debug_gemma_prompts() {
    let mut e = engine(&GEMMA_ENGINE, gemma_cfg);
    for p in ["Germany: Berlin\nSpain: Madrid\nFrance:", "The first president of the United States was George", "Q: What is the capital of France?\nA:", "def fibonacci(n):\n"] {
        let (d, _) = run(&mut e, &GenRequest { max_tokens: Some(20), ..user(p) });
        eprintln!("{p:?} => {:?}", d.concat());
    }
}
