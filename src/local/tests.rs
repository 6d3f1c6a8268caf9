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
    assert!(path.is_file(), "model {} is missing: run `scripts/setup.sh` (or set TRIAGE_MODELS_DIR)", path.display());
    path
}

fn smollm_cfg() -> LocalConfig {
    LocalConfig { weights: WeightFormat::F32, ..LocalConfig::new(model_path(SMOLLM)) }
}

fn gemma_cfg() -> LocalConfig {
    LocalConfig { chat_template: Some("completion".into()), ..LocalConfig::new(model_path(GEMMA)) }
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
    GenRequest { messages: vec![ChatMessage::new("user", text)], ..Default::default() }
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
    let req = GenRequest { max_tokens: Some(24), ..user("What is the capital of France?") };
    let (deltas, out) = run(&mut e, &req);
    let text = deltas.concat();
    assert!(text.contains("Paris"), "answer was {text:?}");
    eprintln!("smollm: {text:?} {:?}", out.finish_reason);
}

/// f16 is the recommended SmolLM2 format (faster than f32 here); it must stay correct too.
#[test]
fn smollm_f16_weights_also_answer_paris() {
    let cfg = LocalConfig { weights: WeightFormat::F16, ..smollm_cfg() };
    let mut e = Engine::load("f16", &cfg, Source::File(&cfg.path)).unwrap_or_else(|e| panic!("loading f16: {e}"));
    let req = GenRequest { max_tokens: Some(24), ..user("What is the capital of France?") };
    let text = run(&mut e, &req).0.concat();
    assert!(text.contains("Paris"), "answer was {text:?}");
}

#[test]
fn gemma_base_completes_known_answer_prompts() {
    let mut e = engine(&GEMMA_ENGINE, gemma_cfg);
    let few_shot = GenRequest { max_tokens: Some(4), ..user("Germany: Berlin\nSpain: Madrid\nFrance:") };
    let text = run(&mut e, &few_shot).0.concat();
    assert!(text.starts_with(" Paris"), "few-shot continuation was {text:?}");
    let qa = GenRequest { max_tokens: Some(12), ..user("Q: What is the capital of France?\nA:") };
    let text = run(&mut e, &qa).0.concat();
    assert!(text.contains("Paris"), "Q/A continuation was {text:?}");
}

#[test]
fn gemma_prompt_starts_with_bos_and_sentencepiece_pieces() {
    let e = engine(&GEMMA_ENGINE, gemma_cfg);
    let ids = e.prompt_ids(&user("The capital of France is")).unwrap_or_default();
    let pieces: Vec<String> = ids.iter().filter_map(|id| e.tok.tokenizer.id_to_token(*id)).collect();
    assert_eq!(ids.first(), Some(&2), "Gemma BOS is id 2: {ids:?}");
    assert_eq!(
        pieces,
        ["<bos>", "The", "\u{2581}capital", "\u{2581}of", "\u{2581}France", "\u{2581}is"],
        "ids {ids:?}"
    );
}

#[test]
fn smollm_tokenization_has_no_prefix_space_and_splits_digits() {
    let e = engine(&SMOLLM_ENGINE, smollm_cfg);
    let enc = e.tok.tokenizer.encode("Hello world 2024<|im_end|>", false).unwrap_or_else(|err| panic!("encode: {err}"));
    let pieces: Vec<String> = enc.get_tokens().to_vec();
    // llama.cpp's `smollm` pre-tokenizer: single digits, GPT-2 regex, no prefix space, and
    // special tokens parsed out of the text.
    assert_eq!(pieces, ["Hello", "\u{120}world", "\u{120}", "2", "0", "2", "4", "<|im_end|>"]);
    assert_eq!(enc.get_ids().last(), Some(&2));
    let prompt = e.prompt_ids(&user("Hi")).unwrap_or_default();
    assert_eq!(prompt.first(), Some(&1), "prompt starts with <|im_start|>, no BOS: {prompt:?}");
    assert_eq!(prompt.iter().filter(|id| **id == 1).count(), 3, "system, user, assistant turns");
}

#[test]
fn stream_deltas_concatenate_to_full_decode_for_same_seed() {
    for (slot, cfg, prompt) in [
        (&SMOLLM_ENGINE, smollm_cfg as fn() -> LocalConfig, "Write one sentence in French about coffee."),
        (&GEMMA_ENGINE, gemma_cfg as fn() -> LocalConfig, "Le caf\u{e9} na\u{ef}f, \u{65e5}\u{672c}\u{8a9e}:"),
    ] {
        let mut e = engine(slot, cfg);
        let req = GenRequest {
            max_tokens: Some(32),
            temperature: Some(0.9),
            top_p: Some(0.95),
            seed: Some(42),
            ..user(prompt)
        };
        let (deltas, out) = run(&mut e, &req);
        // The non-streamed text: a full decode, less a character the model had not finished
        // when max_tokens hit (the stream never emits broken characters).
        let decode = |ids: &[u32]| e.tok.tokenizer.decode(ids, true).unwrap_or_else(|err| panic!("decode: {err}"));
        let mut n = out.ids.len();
        while n > 0 && decode(&out.ids[..n]).ends_with('\u{FFFD}') {
            n -= 1;
        }
        let full = decode(&out.ids[..n]);
        assert_eq!(deltas.concat(), full, "deltas {deltas:?}");
        assert!(deltas.iter().all(|d| !d.is_empty() && !d.contains('\u{FFFD}')), "{deltas:?}");
        let (again, _) = run(&mut e, &req);
        assert_eq!(again, deltas, "same seed, same deltas");
    }
}

/// Multi-byte characters split over byte tokens (SentencePiece byte fallback, byte-level BPE)
/// come out whole, one delta per completed character.
#[test]
fn stream_decoder_never_splits_characters() {
    let text = "caf\u{e9} \u{1d518}\u{1f600} \u{20b9f}!";
    for (slot, cfg) in
        [(&GEMMA_ENGINE, gemma_cfg as fn() -> LocalConfig), (&SMOLLM_ENGINE, smollm_cfg as fn() -> LocalConfig)]
    {
        let e = engine(slot, cfg);
        let tok = &e.tok.tokenizer;
        let ids = tok.encode(text, false).map(|enc| enc.get_ids().to_vec()).unwrap_or_default();
        assert!(ids.len() > text.chars().count(), "some characters take several tokens: {ids:?}");
        let mut dec = super::tokenizer::StreamDecoder::default();
        let mut out = String::new();
        for id in &ids {
            if let Some(d) = dec.push(tok, *id).unwrap_or_else(|err| panic!("{err}")) {
                assert!(!d.contains('\u{FFFD}'), "broken character in delta {d:?}");
                out.push_str(&d);
            }
        }
        out.push_str(&dec.finish(tok).unwrap_or_default().unwrap_or_default());
        assert_eq!(out, text);
    }
}

#[test]
fn stop_strings_and_max_tokens_set_finish_reason() {
    let mut e = engine(&SMOLLM_ENGINE, smollm_cfg);
    let base = GenRequest { max_tokens: Some(24), ..user("What is the capital of France?") };
    let (deltas, free) = run(&mut e, &base);
    let text = deltas.concat();
    let at = text.find(" of Fr").unwrap_or_else(|| panic!("expected ' of France' in {text:?}"));
    // " of Fr" spans the tokens " of" and " France": nothing from it may be emitted.
    let (deltas, out) = run(&mut e, &GenRequest { stop: vec![" of Fr".into(), "zzz".into()], ..base.clone() });
    assert_eq!(deltas.concat(), text[..at]);
    assert_eq!(out.finish_reason, FinishReason::Stop);
    assert!(out.completion_tokens < free.completion_tokens);

    let (deltas, out) = run(&mut e, &GenRequest { max_tokens: Some(3), ..base.clone() });
    assert_eq!(out.finish_reason, FinishReason::Length);
    assert_eq!(out.completion_tokens, 3);
    assert!(text.starts_with(&deltas.concat()), "{deltas:?} vs {text:?}");

    // Unbounded: the model ends its turn with <|im_end|> (EOS), counted as a completion token.
    let (_, out) = run(&mut e, &GenRequest { max_tokens: Some(200), ..base });
    assert_eq!(out.finish_reason, FinishReason::Stop);
    assert_eq!(out.completion_tokens as usize, out.ids.len() + 1);
}

#[test]
fn usage_counts_rendered_prompt_tokens_exactly() {
    let mut e = engine(&SMOLLM_ENGINE, smollm_cfg);
    let req = GenRequest {
        max_tokens: Some(5),
        messages: vec![ChatMessage::new("system", "Answer briefly."), ChatMessage::new("user", "Name a colour.")],
        ..Default::default()
    };
    let rendered = "<|im_start|>system\nAnswer briefly.<|im_end|>\n<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n";
    let count = e.tok.tokenizer.encode(rendered, false).map(|enc| enc.len()).unwrap_or_default();
    let (_, out) = run(&mut e, &req);
    assert_eq!(out.prompt_tokens as usize, count);
    assert_eq!(out.completion_tokens, 5);
}

#[test]
fn gemma_chat_template_constant_renders_turns() {
    let t = super::template::ChatTemplate::new("g", Some("gemma"), None, "<bos>".into(), "<eos>".into());
    let t = t.unwrap_or_else(|e| panic!("{e}"));
    let s = t.render(&[
        ChatMessage::new("system", "Be brief."),
        ChatMessage::new("user", " Hi "),
        ChatMessage::new("assistant", "Hello."),
        ChatMessage::new("user", "Bye"),
    ]);
    assert_eq!(
        s.unwrap_or_else(|e| panic!("{e}")),
        "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello.<end_of_turn>\n<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"
    );
    let bad = t.render(&[ChatMessage::new("assistant", "x")]);
    assert!(matches!(bad, Err(LocalError::Template { .. })), "{bad:?}");
}

#[test]
fn gemma_without_chat_template_is_a_clear_error() {
    let cfg = LocalConfig::new(model_path(GEMMA));
    let err = LocalExpert::spawn("gemma-no-template", cfg).map(|_| ());
    match err {
        Err(e @ LocalError::NoChatTemplate { .. }) => {
            assert!(e.to_string().contains("gemma"), "{e}")
        }
        other => panic!("expected NoChatTemplate, got {other:?}"),
    }
}

#[test]
fn missing_or_corrupt_gguf_is_a_clear_error() {
    let missing = LocalExpert::spawn("missing", LocalConfig::new("/nonexistent/model.gguf"));
    assert!(matches!(missing, Err(LocalError::Io { .. })), "{missing:?}");

    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let garbage = dir.path().join("garbage.gguf");
    std::fs::write(&garbage, b"this is not a gguf file at all").unwrap_or_else(|e| panic!("{e}"));
    let corrupt = LocalExpert::spawn("corrupt", LocalConfig::new(&garbage));
    match corrupt {
        Err(e @ LocalError::Gguf { .. }) => assert!(e.to_string().contains("GGUF"), "{e}"),
        other => panic!("expected Gguf error, got {other:?}"),
    }

    // A real header whose tensor data is cut off.
    let bytes = std::fs::read(model_path(SMOLLM)).unwrap_or_else(|e| panic!("{e}"));
    let truncated = Arc::new(bytes[..bytes.len() / 2].to_vec());
    let cut = LocalExpert::spawn_from_bytes("truncated", smollm_cfg(), truncated);
    assert!(matches!(cut, Err(LocalError::Load { .. } | LocalError::Gguf { .. })), "{cut:?}");
}

async fn collect(mut rx: tokio::sync::mpsc::Receiver<GenEvent>) -> (String, GenEvent) {
    let mut text = String::new();
    while let Some(ev) = rx.recv().await {
        match ev {
            GenEvent::Delta(d) => text.push_str(&d),
            last => return (text, last),
        }
    }
    panic!("stream ended without Done/Error after {text:?}");
}

fn spawn_smollm(queue_limit: usize) -> LocalExpert {
    let cfg = LocalConfig { queue_limit, ..smollm_cfg() };
    LocalExpert::spawn("smollm", cfg).unwrap_or_else(|e| panic!("spawn: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_concurrent_requests_complete_from_bytes() {
    let bytes = Arc::new(std::fs::read(model_path(SMOLLM)).unwrap_or_else(|e| panic!("{e}")));
    let expert =
        LocalExpert::spawn_from_bytes("smollm-bytes", smollm_cfg(), bytes).unwrap_or_else(|e| panic!("spawn: {e}"));
    assert_eq!(expert.info().arch, Arch::Llama);
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let req = GenRequest { max_tokens: Some(8), ..user(&format!("Count to {}.", i + 2)) };
            let rx = expert.submit(req).unwrap_or_else(|e| panic!("submit: {e}"));
            tokio::spawn(collect(rx))
        })
        .collect();
    for h in handles {
        let (_, last) = tokio::time::timeout(PROMPT_REQUEST_TIMEOUT * 2, h)
            .await
            .unwrap_or_else(|_| panic!("request timed out"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(last, GenEvent::Done { .. }), "{last:?}");
    }
    // The worker counts a job out just after sending its last event.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while expert.queue_depth() != 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(expert.queue_depth(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_receiver_frees_the_worker() {
    let expert = spawn_smollm(4);
    let long = GenRequest {
        max_tokens: Some(4000),
        temperature: Some(1.0),
        seed: Some(1),
        ..user("Write a very long story about a dragon.")
    };
    let mut rx = expert.submit(long).unwrap_or_else(|e| panic!("submit: {e}"));
    let first = rx.recv().await;
    assert!(matches!(first, Some(GenEvent::Delta(_))), "{first:?}");
    drop(rx);
    // 4000 tokens would take over a minute here; a freed worker answers in about a second.
    let started = Instant::now();
    let short = GenRequest { max_tokens: Some(4), ..user("Hi") };
    let rx = expert.submit(short).unwrap_or_else(|e| panic!("submit: {e}"));
    let (_, last) = tokio::time::timeout(Duration::from_secs(20), collect(rx))
        .await
        .unwrap_or_else(|_| panic!("worker still busy with the abandoned request"));
    assert!(matches!(last, GenEvent::Done { .. }), "{last:?}");
    eprintln!("follow-up request finished {:?} after the drop", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_rejects_with_queue_full() {
    let expert = spawn_smollm(1);
    let long = || GenRequest { max_tokens: Some(4000), ..user("Write a very long story about a dragon.") };
    let running = expert.submit(long()).unwrap_or_else(|e| panic!("first: {e}"));
    let waiting = expert.submit(long()).unwrap_or_else(|e| panic!("second: {e}"));
    assert_eq!(expert.queue_depth(), 2);
    let third = expert.submit(long());
    match third {
        Err(LocalError::QueueFull { limit: 1, .. }) => {}
        other => panic!("expected QueueFull, got {other:?}"),
    }
    drop((running, waiting));
    // Both abandoned jobs are dropped promptly and the expert accepts work again.
    let rx = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Ok(rx) = expert.submit(GenRequest { max_tokens: Some(2), ..user("Hi") }) {
                return rx;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("queue never drained"));
    let (_, last) = collect(rx).await;
    assert!(matches!(last, GenEvent::Done { .. }), "{last:?}");
}

#[test]
fn invalid_request_parameters_are_rejected_by_name() {
    let bad = GenRequest { top_p: Some(1.5), ..user("x") };
    match bad.validate() {
        Err(LocalError::InvalidRequest { param: "top_p", .. }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn config_toml_uses_defaults_and_rejects_unknown_keys() {
    let cfg: LocalConfig = toml::from_str("path = \"m.gguf\"\nweights = \"f16\"").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.weights, WeightFormat::F16);
    assert_eq!(cfg.device, "cpu");
    assert_eq!(cfg.queue_limit, DEFAULT_QUEUE_LIMIT);
    let unknown = toml::from_str::<LocalConfig>("path = \"m.gguf\"\nthreadz = 2");
    assert!(unknown.is_err());
}

/// A model built from a warm [`Prepared`] copy generates exactly what one loaded from the file
/// does, and keeps working after the copy is dropped (the warm tier evicting it while the
/// expert is hot): the model holds what it shares.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_copy_spawns_the_same_model_as_the_file() {
    let cfg = LocalConfig { weights: WeightFormat::F16, ..LocalConfig::new(model_path(SMOLLM)) };
    let prepared = Arc::new(LocalExpert::prepare("smollm", &cfg).unwrap_or_else(|e| panic!("prepare: {e}")));
    assert_eq!(prepared.weight_bytes(), Footprint::read(&cfg).unwrap_or_else(|e| panic!("{e}")).hot_bytes);
    let from_prepared = LocalExpert::spawn_prepared("prepared", cfg.clone(), Arc::clone(&prepared))
        .unwrap_or_else(|e| panic!("spawn_prepared: {e}"));
    drop(prepared);
    let from_file = LocalExpert::spawn("file", cfg).unwrap_or_else(|e| panic!("spawn: {e}"));
    let (a, b) = (from_prepared.info(), from_file.info());
    assert_eq!(
        (a.bytes, a.params, a.vocab_size, a.context_length),
        (b.bytes, b.params, b.vocab_size, b.context_length)
    );
    let req = GenRequest { max_tokens: Some(12), temperature: Some(0.0), ..user("What is the capital of France?") };
    let submit = |e: &LocalExpert| e.submit(req.clone()).unwrap_or_else(|err| panic!("submit: {err}"));
    let prepared_out = collect(submit(&from_prepared)).await;
    let file_out = collect(submit(&from_file)).await;
    assert_eq!(prepared_out, file_out, "a prepared copy must generate what the file does");
    assert!(prepared_out.0.contains("Paris"), "{prepared_out:?}");
}

/// Writes SmolLM2 as a Qwen2 GGUF, the way llama.cpp's converter would have written the
/// same weights under `general.architecture = "qwen2"`: metadata keys under `qwen2.`,
/// q/k rows in Hugging Face order (the llama converter permutes them for interleaved RoPE;
/// the qwen2 one does not), and q/k/v biases (zeros, or `k_bias` on k and `v_bias` on v).
/// No Qwen2 GGUF is available from the registries, so this is how the Qwen2 path runs on
/// real weights.
fn smollm_as_qwen2(dir: &std::path::Path, k_bias: f32, v_bias: f32) -> PathBuf {
    use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
    use candle_core::{Device, Tensor};

    let src_path = model_path(SMOLLM);
    let mut src = std::fs::File::open(&src_path).expect("open SmolLM2");
    let content = gguf_file::Content::read(&mut src).expect("read SmolLM2 GGUF");
    let md_usize = |k: &str| content.metadata[k].to_u32().expect(k) as usize;
    let (n_head, n_kv_head) = (md_usize("llama.attention.head_count"), md_usize("llama.attention.head_count_kv"));
    let head_dim = md_usize("llama.embedding_length") / n_head;
    let mut metadata: Vec<(String, gguf_file::Value)> = content
        .metadata
        .iter()
        .map(|(k, v)| (k.strip_prefix("llama.").map_or_else(|| k.clone(), |rest| format!("qwen2.{rest}")), v.clone()))
        .collect();
    for (k, v) in &mut metadata {
        if k == "general.architecture" {
            *v = gguf_file::Value::String("qwen2".into());
        }
    }
    let dev = Device::Cpu;
    // Row `h * head_dim + j * half + i` (HF order) is GGUF row `h * head_dim + 2 * i + j`.
    let unpermute = |t: &QTensor, heads: usize| -> QTensor {
        let half = head_dim / 2;
        let rows: Vec<u32> = (0..heads)
            .flat_map(|h| (0..2).flat_map(move |j| (0..half).map(move |i| (h * head_dim + 2 * i + j) as u32)))
            .collect();
        let w = t.dequantize(&dev).expect("dequantize");
        let idx = Tensor::new(rows.as_slice(), &dev).expect("index");
        QTensor::quantize(&w.index_select(&idx, 0).expect("permute"), GgmlDType::F32).expect("f32")
    };
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    for name in names {
        let t = content.tensor(&mut src, name, &dev).expect("tensor");
        let rows = t.shape().dims()[0];
        let bias = |value: f32| {
            let b = Tensor::full(value, rows, &dev).expect("bias");
            QTensor::quantize(&b, GgmlDType::F32).expect("bias f32")
        };
        if let Some(layer) = name.strip_suffix(".attn_q.weight") {
            tensors.push((format!("{layer}.attn_q.bias"), bias(0.0)));
            tensors.push((name.clone(), unpermute(&t, n_head)));
        } else if let Some(layer) = name.strip_suffix(".attn_k.weight") {
            tensors.push((format!("{layer}.attn_k.bias"), bias(k_bias)));
            tensors.push((name.clone(), unpermute(&t, n_kv_head)));
        } else if let Some(layer) = name.strip_suffix(".attn_v.weight") {
            tensors.push((format!("{layer}.attn_v.bias"), bias(v_bias)));
            tensors.push((name.clone(), t));
        } else {
            tensors.push((name.clone(), t));
        }
    }
    let path = dir.join(format!("smollm2-as-qwen2-k{k_bias}-v{v_bias}.gguf"));
    let mut out = std::fs::File::create(&path).expect("create");
    let md: Vec<(&str, &gguf_file::Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let ts: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, t)| (k.as_str(), t)).collect();
    gguf_file::write(&mut out, &md, &ts).expect("write qwen2 GGUF");
    path
}

/// The Qwen2 path (biases, "neox" RoPE pairing, `qwen2.*` keys) on SmolLM2's weights
/// rewritten as a Qwen2 file: with zero biases it must answer exactly as the llama path
/// does on the original file (same weights, same greedy tokens). A v bias must change the
/// answer (the bias is read and added). So must a k bias: added before RoPE, as Qwen2
/// does, it rotates with the position; added after RoPE it would shift every score of a
/// query by the same amount, which softmax ignores, and leave the answer unchanged.
#[test]
fn qwen2_file_with_smollm_weights_answers_as_the_llama_path_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let req = GenRequest { max_tokens: Some(24), ..user("What is the capital of France?") };
    let reference = run(&mut engine(&SMOLLM_ENGINE, smollm_cfg), &req);

    let qwen2 = smollm_as_qwen2(dir.path(), 0.0, 0.0);
    let cfg = LocalConfig { weights: WeightFormat::F32, ..LocalConfig::new(qwen2.clone()) };
    let mut e = Engine::load("qwen2", &cfg, Source::File(&qwen2)).unwrap_or_else(|e| panic!("loading qwen2: {e}"));
    let got = run(&mut e, &req);
    assert_eq!(got.1.ids, reference.1.ids, "qwen2 {:?} vs llama {:?}", got.0.concat(), reference.0.concat());
    assert!(got.0.concat().contains("Paris"), "answer was {:?}", got.0.concat());
    drop(e);

    for (k_bias, v_bias, what) in [(0.0, 2.0, "v bias"), (1.0, 0.0, "k bias")] {
        let biased = smollm_as_qwen2(dir.path(), k_bias, v_bias);
        let cfg = LocalConfig { weights: WeightFormat::F32, ..LocalConfig::new(biased.clone()) };
        let mut e = Engine::load("qwen2-bias", &cfg, Source::File(&biased)).unwrap_or_else(|e| panic!("loading: {e}"));
        let shifted = run(&mut e, &req);
        assert_ne!(shifted.1.ids, reference.1.ids, "a {what} left the answer unchanged: {:?}", shifted.0.concat());
    }
}
