//! Tests with the real backbone and the shipped routers/default (no mocks: the
//! classifier is what this project ships).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failure should stop the test loudly")]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use super::centroid::CentroidRouter;
use super::data::load_dir;
use super::eval::compute;
use super::service::{ClassifierService, Router, ServiceConfig};
use super::train::{fit, fit_threshold, TrainOptions, CASCADE_ACCURACY_TOLERANCE};
use super::{prompt_text, Classifier, ClassifyError, RouterConfig, Stage};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The backbone; a missing one fails (never skips) and says how to fetch it.
fn models_dir() -> PathBuf {
    let dir = root().join("models");
    let weights = dir.join("all-minilm-l6-v2/model.safetensors");
    assert!(weights.is_file(), "{} is missing: run scripts/setup.sh to fetch the models", weights.display());
    dir
}

fn router_dir() -> PathBuf {
    root().join("routers/default")
}

fn shipped() -> Arc<Classifier> {
    static CLF: OnceLock<Arc<Classifier>> = OnceLock::new();
    Arc::clone(CLF.get_or_init(|| {
        Arc::new(
            Classifier::load(&router_dir(), &models_dir()).unwrap_or_else(|e| panic!("loading routers/default: {e}")),
        )
    }))
}

#[test]
fn missing_backbone_error_names_setup_script() {
    let err = Classifier::load(&router_dir(), &root().join("no-such-models-dir")).err().expect("must fail");
    assert!(err.to_string().contains("scripts/setup.sh"), "error should name scripts/setup.sh: {err}");
}

#[test]
fn training_is_deterministic() {
    let mut cfg = RouterConfig::load(&router_dir()).unwrap();
    // A small config: enough to exercise every step (split, stage 1, caching, autograd
    // through one layer, calibration) in well under a minute.
    cfg.train.max_per_class = 8;
    cfg.train.epochs = 1;
    cfg.train.fast_epochs = 2;
    cfg.trainable_layers = 1;
    cfg.max_tokens = 32;
    cfg.train.val_fraction = 0.25;
    cfg.train.test_fraction = 0.25;
    // Stage 1's static embeddings on a slice of the vocabulary: same code path, seconds.
    cfg.fast.static_dims = 16;
    cfg.train.distill_vocab_limit = 1500;
    let data = load_dir(&router_dir().join("data"), &cfg.labels).unwrap();
    let opts = TrainOptions { models_dir: models_dir(), progress: false };
    let a = fit(cfg.clone(), data.clone(), &opts).unwrap();
    let b = fit(cfg, data, &opts).unwrap();
    assert_eq!(a.fast, b.fast, "stage-1 weights differ between identical runs");
    assert_eq!(a.fast.statics().map(|s| s.embeddings.dims()), Some(16), "static embeddings missing from stage 1");
    let mut names: Vec<&String> = a.tensors.keys().collect();
    names.sort();
    assert!(names.iter().any(|n| n.starts_with("encoder.layer.0.")), "fine-tuned layer missing: {names:?}");
    for name in names {
        let x =
            a.tensors[name].to_dtype(candle_core::DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let y =
            b.tensors[name].to_dtype(candle_core::DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(x, y, "tensor {name} differs between identical runs");
    }
    assert_eq!(a.config.temperature, b.config.temperature);
    assert_eq!(a.config.fast.accept_threshold, b.config.fast.accept_threshold);
    // Fine-tuning must move the encoder layer it trains, beyond the f16 rounding of the
    // stored copy (candle's fused LayerNorm once cut the gradient: the saved layer was
    // the backbone's).
    let backbone = super::encoder::backbone_top_tensors(&models_dir(), "all-minilm-l6-v2", 5).unwrap();
    for name in ["layer.0.attention.self.query.weight", "layer.0.output.dense.weight"] {
        let before = backbone[name].to_dtype(candle_core::DType::F16).unwrap();
        let after = &a.tensors[&format!("encoder.{name}")];
        let moved = (after.to_dtype(candle_core::DType::F32).unwrap()
            - before.to_dtype(candle_core::DType::F32).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .filter(|d| **d > 0.0)
        .count();
        assert!(moved > 1000, "{name}: only {moved} weights changed by fine-tuning");
    }
}

/// 300 validation inputs of two classes, all gold 0; stage 1's confidence falls from 0.99
/// by 0.001 per input. `fast_ok(i)` and `enc_ok(i)` say which stage gets input `i` right.
fn threshold_case(fast_ok: impl Fn(usize) -> bool, enc_ok: impl Fn(usize) -> bool) -> (f32, Vec<f32>) {
    let conf: Vec<f32> = (0..300).map(|i| 0.99 - i as f32 * 0.001).collect();
    let probs = |c: f32, right: bool| if right { vec![c, 1.0 - c] } else { vec![1.0 - c, c] };
    let fast: Vec<Vec<f32>> = conf.iter().enumerate().map(|(i, &c)| probs(c, fast_ok(i))).collect();
    let enc: Vec<Vec<f32>> = (0..300).map(|i| probs(0.9, enc_ok(i))).collect();
    (fit_threshold(&fast, &enc, &[0; 300]), conf)
}

#[test]
fn stage_one_threshold_trades_at_most_the_tolerance_for_coverage() {
    // One input in 300 is a third of a point, two are two thirds: the tolerance is half.
    const { assert!(1.0 / 300.0 < CASCADE_ACCURACY_TOLERANCE && 2.0 / 300.0 > CASCADE_ACCURACY_TOLERANCE) };

    // The encoder is right on inputs 0-249; stage 1 slips once at input 100 and is wrong
    // from 200 on. One slip is within the tolerance, so stage 1 keeps inputs 0-199 (the
    // strict "never worse than the encoder" rule stopped at 99); a second would not be.
    let (t, conf) = threshold_case(|i| i != 100 && i < 200, |i| i < 250);
    assert_eq!(t, conf[199], "threshold {t}: expected stage 1 to decide the 200 inputs up to the second error");

    // Stage 1 beats the encoder on its 50 most confident inputs and is wrong below: the
    // reference is the best cascade (all 300 right), so only one input past 50 may go.
    let (t, conf) = threshold_case(|i| i < 50, |i| i >= 50);
    assert_eq!(t, conf[50], "threshold {t}: expected the best cascade plus one error's slack");

    // A stage 1 that is never right never decides, although one input would fit in the
    // tolerance: what it takes must be as accurate as the encoder is overall. One that is
    // always right decides everything.
    let (t, _) = threshold_case(|_| false, |_| true);
    assert!(t > 1.0, "threshold {t}: a stage 1 that is always wrong must never decide");
    let (t, conf) = threshold_case(|_| true, |_| true);
    assert_eq!(t, conf[299]);
}

#[test]
fn eval_metrics_match_hand_computed_example() {
    let labels: Vec<String> = ["a", "b"].iter().map(|s| s.to_string()).collect();
    // gold a,a,b,b ; predicted a (0.95), b (0.65), b (0.85), b (0.75)
    let gold = [0, 0, 1, 1];
    // Confidences sit mid-bin: f32 0.7 is 0.69999..., which would land in bin 6.
    let probs = vec![vec![0.95, 0.05], vec![0.35, 0.65], vec![0.15, 0.85], vec![0.25, 0.75]];
    let m = compute(&labels, &gold, &probs);
    assert_eq!(m.confusion, vec![vec![1, 1], vec![0, 2]]);
    assert!((m.accuracy - 0.75).abs() < 1e-12);
    // a: P = 1/1, R = 1/2, F1 = 2/3 ; b: P = 2/3, R = 1, F1 = 0.8
    assert!((m.per_class[0].precision - 1.0).abs() < 1e-12);
    assert!((m.per_class[0].recall - 0.5).abs() < 1e-12);
    assert!((m.per_class[0].f1 - 2.0 / 3.0).abs() < 1e-12);
    assert!((m.per_class[1].precision - 2.0 / 3.0).abs() < 1e-12);
    assert!((m.per_class[1].f1 - 0.8).abs() < 1e-12);
    // ECE, 10 bins: bin 6 {0.65 wrong}, bin 7 {0.75 ok}, bin 8 {0.85 ok}, bin 9 {0.95 ok}
    // = (0.65 + 0.25 + 0.15 + 0.05) / 4 = 0.275
    assert!((m.ece - 0.275).abs() < 1e-6, "ece {}", m.ece);
}

#[test]
fn obvious_prompts_land_in_their_category() {
    let clf = shipped();
    let cases = [
        ("Write a Python function that returns the n-th Fibonacci number using memoization.", "coding"),
        ("Fix this JavaScript error: TypeError: undefined is not a function in my React component.", "coding"),
        ("Solve for x: 3x^2 - 12x + 9 = 0.", "math"),
        ("What is the integral of x * e^x dx?", "math"),
        ("If all bloops are razzies and all razzies are lazzies, are all bloops definitely lazzies? Explain your reasoning.", "reasoning"),
        ("Extract all the dates and company names mentioned in the following press release and return them as JSON.", "extraction"),
        ("Write a short poem about autumn leaves falling in the wind.", "writing"),
        ("Pretend you are Sherlock Holmes and stay in character while I ask you questions about a case.", "roleplay"),
        ("Explain how photosynthesis converts light energy into chemical energy in plant cells.", "stem"),
        ("What were the main causes of the French Revolution?", "humanities"),
        ("hi, how are you today?", "general"),
    ];
    let mut wrong = Vec::new();
    for (prompt, want) in cases {
        let c = clf.classify(prompt).unwrap();
        let got = c.top_label(clf.labels()).unwrap();
        if got != want {
            wrong.push(format!(
                "{prompt:?}: want {want}, got {got} ({:.2}, {:?}) probs {:?}",
                c.confidence(),
                c.stage,
                c.probs
            ));
        }
    }
    assert!(wrong.is_empty(), "misrouted:\n{}", wrong.join("\n"));
}

#[test]
fn gibberish_is_not_taken_for_a_task_and_a_two_task_prompt_is_uncertain() {
    let clf = shipped();
    // Known limit: strings of made-up *words* ("blorp snazzle wug") read as code
    // identifiers to the encoder (coding 0.69). Keyboard mash reads as `general` chat
    // (0.64 with version 52d714545aa7, 0.95 with de6d1ae8ea1e; the training set has very
    // short chit-chat such as "yo"): never as a task that would send it to a specialist.
    let text = "qwv zzpl mrrk oobt fnarg";
    let c = clf.classify(text).unwrap();
    assert_eq!(c.top_label(clf.labels()), Some("general"), "{text:?}: probs {:?}", c.probs);

    // A request that asks for two kinds of work at once splits the probability between
    // them (writing for the summary, coding for the query): the top category stays below
    // the default policy's 0.5 confidence floor, so the uncertainty rule sends it to the
    // fallback expert (tests/it/local.rs checks that end). Routers up to de6d1ae8ea1e were
    // pinned on "Extract the theorem from this story and solve it." (writing 0.46,
    // extraction 0.35); 52d714545aa7's stage 1 reads that one as extraction at 0.88.
    let text = "Summarize the plot of Hamlet and then write a SQL query for the characters table.";
    let c = clf.classify(text).unwrap();
    assert!(c.confidence() < 0.5, "{text:?}: confidence {:.3}, probs {:?}", c.confidence(), c.probs);
    // Both kinds of work are seen (52d714545aa7: writing 0.43, coding 0.39).
    let p = |label: &str| c.probs[clf.labels().iter().position(|l| l == label).unwrap()];
    for label in ["writing", "coding"] {
        assert!(p(label) > 0.25, "{text:?}: {label} should hold a large share: probs {:?}", c.probs);
    }
}

#[test]
fn batching_does_not_change_results() {
    let clf = shipped();
    let a = "How do I reverse a linked list in C?";
    let others = [
        "Summarize the plot of Hamlet in three sentences, then compare its themes with those of Macbeth, focusing on ambition, guilt and fate, and explain which play you find darker and why.",
        "hello",
        "What is 17 * 23?",
    ];
    let alone = clf.classify_encoder(&[a]).unwrap().remove(0);
    let mut batch = vec![others[0], a, others[1], others[2]];
    let together = clf.classify_encoder(&batch).unwrap().remove(1);
    batch.reverse();
    let reversed = clf.classify_encoder(&batch).unwrap().remove(2);
    for other in [&together, &reversed] {
        assert_eq!(alone.top_index(), other.top_index());
        for (x, y) in alone.probs.iter().zip(&other.probs) {
            assert!((x - y).abs() < 1e-5, "alone {:?} vs batched {:?}", alone.probs, other.probs);
        }
    }
}

#[test]
fn packed_inference_forward_matches_candles_bert() {
    // Serving runs bert.rs; training runs candle-transformers' BERT. Both must be the
    // same model: same pooled embeddings for a batch whose lengths differ (candle pads
    // and masks, bert.rs packs), on the full backbone.
    let encoder = CentroidRouter::load_encoder(&models_dir()).unwrap();
    let texts = [
        "How do I reverse a linked list in C?",
        "hello",
        "Write a haiku about the sea, then explain which image in it carries the most weight and why.",
    ];
    let seqs: Vec<Vec<u32>> = texts.iter().map(|t| encoder.token_ids(t).unwrap()).collect();
    let packed = encoder.embed_ids(&seqs, None).unwrap().to_vec2::<f32>().unwrap();
    let reference = encoder.embed_ids_candle(&seqs).unwrap().to_vec2::<f32>().unwrap();
    for (i, (p, r)) in packed.iter().zip(&reference).enumerate() {
        let worst = p.iter().zip(r).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst < 1e-4, "{:?}: max |packed - candle| = {worst}", texts[i]);
        let norm = r.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!(norm > 1.0, "{:?}: a degenerate reference embedding (norm {norm})", texts[i]);
    }
}

#[test]
fn centroid_router_picks_a_new_category_without_retraining() {
    let encoder = CentroidRouter::load_encoder(&models_dir()).unwrap();
    let cats = |label: &str, ex: &[&str]| (label.to_owned(), ex.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    let mut r = CentroidRouter::new(
        encoder,
        vec![
            cats(
                "cooking",
                &[
                    "How long should I bake a chicken breast?",
                    "Give me a recipe for pancakes.",
                    "How do I make a tomato sauce from scratch?",
                ],
            ),
            cats(
                "sports",
                &[
                    "Who won the last World Cup?",
                    "How many players are on a basketball team?",
                    "Explain the offside rule in soccer.",
                ],
            ),
        ],
    )
    .unwrap();
    let query = "When should I prune my rose bushes and how much should I water the tomato seedlings in my garden?";
    let before = r.classify_encoder(&[query], None).unwrap().remove(0);
    assert_eq!(r.labels().len(), 2);
    r.add_category(
        "gardening".into(),
        &[
            "How often should I water my vegetable garden?",
            "What is the best soil for growing roses?",
            "When do I plant tulip bulbs?",
        ]
        .map(String::from),
    )
    .unwrap();
    let after = r.classify_encoder(&[query], None).unwrap().remove(0);
    assert_eq!(after.top_label(r.labels()), Some("gardening"), "before {:?}, after {:?}", before.probs, after.probs);
    assert_eq!(after.stage, Stage::Encoder);
}

#[test]
fn service_batches_concurrent_requests_and_reports_queue_full() {
    let clf = shipped();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    // Inputs stage 1 cannot decide, so they all need the (slow) encoder.
    let texts: Vec<String> = (0..24).map(|i| format!("zzq{i} blorp wug {i} fnord")).collect();
    rt.block_on(async {
        let svc = Arc::new(ClassifierService::start(clf.clone() as Arc<dyn Router>, ServiceConfig::default()).unwrap());
        let handles: Vec<_> = texts
            .iter()
            .map(|t| {
                tokio::spawn({
                    let s = svc.clone();
                    let t = t.clone();
                    async move { s.classify(t).await }
                })
            })
            .collect();
        for (h, t) in handles.into_iter().zip(&texts) {
            let got = h.await.unwrap().unwrap();
            let alone = clf.classify(t).unwrap();
            assert_eq!(got.top_index(), alone.top_index());
            assert!(
                got.probs.iter().zip(&alone.probs).all(|(x, y)| (x - y).abs() < 1e-5),
                "{t:?}: service result differs from alone"
            );
        }
        let st = svc.stats();
        assert_eq!(st.fast + st.encoder_items, texts.len() as u64, "every request counted once: {st:?}");
        assert!(st.encoder_batches < st.encoder_items, "concurrent encoder requests were not batched: {st:?}");
        let tiny = ServiceConfig { encoder_queue_capacity: 1, max_batch: 1, ..ServiceConfig::default() };
        let svc = Arc::new(ClassifierService::start(clf.clone() as Arc<dyn Router>, tiny).unwrap());
        let handles: Vec<_> = texts
            .iter()
            .map(|t| {
                tokio::spawn({
                    let s = svc.clone();
                    let t = t.clone();
                    async move { s.classify(t).await }
                })
            })
            .collect();
        let mut full = 0;
        for h in handles {
            if matches!(h.await.unwrap(), Err(ClassifyError::QueueFull)) {
                full += 1;
            }
        }
        assert!(full > 0, "a 1-slot encoder queue must overflow under 24 concurrent requests");
        assert_eq!(svc.stats().queue_full, full, "the queue-full counter must match the refusals");
    });
}

#[test]
fn prompt_text_feeds_the_classifier_for_follow_ups() {
    let clf = shipped();
    let msgs = vec![
        serde_json::json!({"role": "user", "content": "Write a Python script that renames all .txt files in a folder."}),
        serde_json::json!({"role": "assistant", "content": "import os ..."}),
        serde_json::json!({"role": "user", "content": "Now add error handling."}),
    ];
    let c = clf.classify(&prompt_text(&msgs)).unwrap();
    assert_eq!(c.top_label(clf.labels()), Some("coding"), "probs {:?}", c.probs);

    // A long request whose end drifts to another subject: the follow-up is classified with
    // the request's opening (the persona), not its tail (with the tail: stem at 0.83).
    let persona = "You are a medieval blacksmith in a small village and I am a traveller who needs a sword \
                   repaired. Answer only as the blacksmith would. For context, my sword cracked when I struck a \
                   rock, and I wonder whether heating steel changes its crystal structure and hardness.";
    let msgs = vec![
        serde_json::json!({"role": "user", "content": persona}),
        serde_json::json!({"role": "assistant", "content": "Aye, let me see that blade."}),
        serde_json::json!({"role": "user", "content": "How long will it take?"}),
    ];
    let c = clf.classify(&prompt_text(&msgs)).unwrap();
    assert_eq!(c.top_label(clf.labels()), Some("roleplay"), "probs {:?}", c.probs);
}

/// The fast WordPiece path gives the `tokenizers` pipeline's ids for every training prompt
/// and for the edge cases of its rules, and it takes most of the training prompts (it is
/// not silently falling back).
#[test]
fn fast_wordpiece_matches_the_tokenizer_pipeline() {
    let mut tokenizer = tokenizers::Tokenizer::from_file(models_dir().join("all-minilm-l6-v2/tokenizer.json")).unwrap();
    tokenizer.with_padding(None);
    tokenizer.with_truncation(None).unwrap();
    let fast =
        super::wordpiece::FastWordPiece::for_tokenizer(&tokenizer).expect("all-MiniLM's tokenizer is BERT uncased");
    let labels = RouterConfig::load(&router_dir()).unwrap().labels;
    let mut texts: Vec<String> =
        load_dir(&router_dir().join("data"), &labels).unwrap().into_iter().map(|e| e.text).collect();
    let corpus = texts.len();
    let long_word = "a".repeat(101);
    let edge = [
        "",
        "   ",
        "\t\n\r",
        "a\u{0}b\u{1}c\u{7f}d\u{b}e\u{c}f\u{1c}g",
        "Hello, World!! How's it   going?",
        "e-mail me at jane.doe@example.com ($100,000; 50% off) #tag ~home ^up `code` {x|y}",
        "fn main() { let x: Vec<u8> = vec![1, 2]; x.iter().map(|v| v * 2); } // C++ && a->b",
        "__init__ self._private __dunder__",
        "supercalifragilisticexpialidocious qzxqzxqzx zzzzzzzzzzzzzzzzzzzz",
        "12345.6789 3.14e-10 0x1F 1,000,000",
        "[SEP] is special, and so is [cls] and x[MASK]y",
        "[sep",
        "UPPER lower MiXeD",
        "naïve café — non-ASCII goes the slow way",
        "Hello\u{3000}world 野口",
        &long_word,
        &long_word[1..],
    ];
    texts.extend(edge.iter().map(|s| (*s).to_string()));
    let mut fast_count = 0;
    for text in &texts {
        let Some(got) = fast.encode(text) else { continue };
        fast_count += 1;
        let want = tokenizer.encode(text.as_str(), false).unwrap().get_ids().to_vec();
        assert_eq!(got, want, "ids differ for {text:?}");
    }
    assert!(fast_count * 10 >= corpus * 9, "the fast path took only {fast_count} of {corpus} training prompts");
    // The fallbacks: non-ASCII text and added tokens' text.
    assert!(fast.encode("naïve").is_none());
    assert!(fast.encode("a [SEP] b").is_none() && fast.encode("a [sep] b").is_none());
    assert_eq!(fast.encode(&long_word), Some(vec![tokenizer.token_to_id("[UNK]").unwrap()]));
}
