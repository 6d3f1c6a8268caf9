//! The embedded default end to end: real local GGUF experts and the real router behind
//! the OpenAI API.

use std::process::Command;

use serde_json::{json, Value};

use crate::support::{client, local_gateway};

fn url(path: &str) -> String {
    format!("http://{}{path}", local_gateway())
}

async fn chat(body: Value) -> (reqwest::header::HeaderMap, Value) {
    let r = client().post(url("/v1/chat/completions")).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    (h, r.json().await.unwrap())
}

#[tokio::test]
async fn smollm2_answers_paris_with_exact_usage() {
    let body = json!({"model": "smollm2-135m", "temperature": 0, "max_tokens": 24,
                      "messages": [{"role": "user", "content": "What is the capital of France?"}]});
    let (h, v) = chat(body).await;
    assert_eq!(h["x-triage-expert"], "smollm2-135m");
    let text = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(text.contains("Paris"), "{text}");
    let u = &v["usage"];
    assert_eq!(
        u["total_tokens"].as_u64(),
        Some(u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap())
    );
    assert!(u["prompt_tokens"].as_u64().unwrap() > 5);
}

#[tokio::test]
async fn stream_and_non_stream_agree_and_max_tokens_is_honoured() {
    let base = json!({"model": "gemma-3-270m", "seed": 7, "temperature": 0.8, "max_tokens": 12,
                      "messages": [{"role": "user", "content": "Write one sentence about the sea."}]});
    let (_, whole) = chat(base.clone()).await;
    let whole_text = whole["choices"][0]["message"]["content"].as_str().unwrap().to_string();
    let mut s = base.clone();
    s["stream"] = json!(true);
    s["stream_options"] = json!({"include_usage": true});
    let text = client().post(url("/v1/chat/completions")).json(&s).send().await.unwrap().text().await.unwrap();
    let events: Vec<Value> = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect();
    let streamed: String = events.iter().filter_map(|e| e["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(streamed, whole_text, "same seed, same text");
    assert!(text.ends_with("data: [DONE]\n\n"));
    let usage = events.iter().find(|e| !e["usage"].is_null()).expect("a usage event");
    assert_eq!(usage["usage"], whole["usage"]);
    if whole["usage"]["completion_tokens"] == 12 {
        assert_eq!(whole["choices"][0]["finish_reason"], "length");
    }
}

#[tokio::test]
async fn routed_requests_carry_the_decision_headers() {
    let body = json!({"model": "triage", "max_tokens": 8,
                      "messages": [{"role": "user", "content": "Write a haiku about autumn leaves falling on a quiet pond."}]});
    let (h, _) = chat(body).await;
    assert_eq!(h["x-triage-category"], "writing");
    assert_eq!(h["x-triage-expert"], "gemma-3-270m", "writing maps to Gemma in the default policy");
    let c: f32 = h["x-triage-confidence"].to_str().unwrap().parse().unwrap();
    assert!(c >= 0.5, "{c}");
    assert_eq!(h["x-triage-request-id"].len(), 26);
}

#[tokio::test]
async fn route_explains_and_uncertain_prompts_go_to_the_fallback() {
    let explain = |content: &str| {
        let body = json!({"model": "triage", "messages": [{"role": "user", "content": content}]});
        async move { client().post(url("/v1/route")).json(&body).send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let d = explain("Fix this Python function: def add(a, b): return a - b").await;
    assert_eq!(d["category"], "coding", "{d}");
    assert!(d["reasons"].as_array().unwrap().len() >= 2, "{d}");
    let d = explain("qwv zzpl mrrk oobt fnarg").await;
    assert_eq!(d["fallback"], true, "gibberish is uncertain: {d}");
    assert_eq!(d["experts"][0], "smollm2-135m");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_sdk_streams_from_a_local_expert() {
    let base = url("/v1");
    let py =
        std::env::var("TRIAGE_PYTHON").unwrap_or_else(|_| format!("{}/.venv/bin/python", env!("CARGO_MANIFEST_DIR")));
    let script = r#"
import sys, openai
c = openai.OpenAI(base_url=sys.argv[1], api_key="unused", max_retries=0)
text, finish = "", None
for chunk in c.chat.completions.create(model="smollm2-135m", stream=True, temperature=0, max_tokens=24,
        messages=[{"role": "user", "content": "What is the capital of France?"}]):
    if chunk.choices:
        text += chunk.choices[0].delta.content or ""
        finish = chunk.choices[0].finish_reason or finish
assert "Paris" in text, text
assert finish in ("stop", "length"), finish
print("ok", text)
"#;
    let out = tokio::task::spawn_blocking(move || Command::new(&py).arg("-c").arg(script).arg(&base).output())
        .await
        .unwrap()
        .expect("python from .venv (scripts/test.sh creates it)");
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

/// A decision depends only on the request: the same prompts classified alone, then all
/// at once in another order, get the same categories, probabilities and experts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_do_not_change_each_others_decisions() {
    let prompts = [
        "Prove that the square root of 2 is irrational.",
        "hey, how's your day going?",
        "Extract every date from this text: the meeting moved from 3 May to 9 June 2024.",
        "Pretend you are a pirate captain and greet your new crew.",
        "Explain how vaccines train the immune system.",
        "Refactor this loop into a list comprehension: out = []\nfor x in xs:\n    out.append(x * 2)",
        "What were the main causes of the Thirty Years' War?",
        "A farmer has 17 sheep; all but 9 run away. How many are left?",
    ];
    let route = |p: &str| {
        let body = json!({"model": "triage", "messages": [{"role": "user", "content": p}]});
        async move { client().post(url("/v1/route")).json(&body).send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let mut alone = Vec::new();
    for p in prompts {
        alone.push(route(p).await);
    }
    let order = [5, 2, 7, 0, 3, 6, 1, 4];
    let together = futures::future::join_all(order.iter().map(|&i| route(prompts[i]))).await;
    for (k, &i) in order.iter().enumerate() {
        let (a, b) = (&alone[i], &together[k]);
        assert_eq!(a["category"], b["category"], "{}", prompts[i]);
        assert_eq!(a["experts"], b["experts"], "{}", prompts[i]);
        let (pa, pb) = (a["confidence"].as_f64().unwrap(), b["confidence"].as_f64().unwrap());
        assert!((pa - pb).abs() < 1e-5, "{}: {pa} vs {pb}", prompts[i]);
    }
}

/// The shipped eval set runs against the real local experts and becomes accuracy
/// evidence in the ledger (a slice of it, to keep CI short: each answer is a real
/// generation).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_eval_set_scores_the_local_experts() {
    use triage::ledger::eval::{self, ExpertFacts, Target};
    use triage::ledger::{GroupBy, Ledger, LedgerConfig, Origin, ReportQuery};
    let set = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("evals/local-smoke.jsonl");
    let items = eval::load_set(&set).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(LedgerConfig::new(dir.path().join("db"))).unwrap();
    let target = Target::Http { base_url: url(""), client: client(), api_key: None };
    let facts = ExpertFacts { input_per_mtok: 0.0, output_per_mtok: 0.0, active_params: Some(134_515_008) };
    // The first item asks for the capital of France, which SmolLM2 (f16) gets right.
    let mut scores = Vec::new();
    for item in items.iter().take(3) {
        scores.push(eval::run_one(&target, &ledger, item, "smollm2-135m", &facts).await.unwrap());
    }
    assert!(scores.iter().all(Option::is_some), "every answer was scored: {scores:?}");
    assert!(scores[0] == Some(1.0), "SmolLM2 knows the capital of France: {scores:?}");
    ledger.flush().await.unwrap();
    let q = ReportQuery { since_ms: None, by: vec![GroupBy::Category, GroupBy::Expert], origin: Some(Origin::Eval) };
    let r = ledger.report(&q).unwrap();
    let g = r.groups.iter().find(|g| g.key == ["general", "smollm2-135m"]).unwrap_or_else(|| panic!("{r:?}"));
    assert_eq!(g.accuracy.unwrap().n, 3);
    ledger.close().await.unwrap();
}
