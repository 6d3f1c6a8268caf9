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
    // Two kinds of work in one request: the router splits its probability between them
    // (writing 0.43, coding 0.39 with router 52d714545aa7), below the policy's 0.5.
    let d = explain("Summarize the plot of Hamlet and then write a SQL query for the characters table.").await;
    assert_eq!(d["fallback"], true, "an uncertain prompt goes to the fallback: {d}");
    assert!(d["confidence"].as_f64().unwrap() < 0.5, "{d}");
    assert_eq!(d["experts"][0], "smollm2-135m");
    assert!(d["reasons"].to_string().contains("0.5"), "the reason names the threshold: {d}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_sdk_streams_from_a_local_expert_and_gets_context_errors_as_its_own() {
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
# Over the 8192-token window: the SDK's own exception, with OpenAI's code and param.
try:
    c.chat.completions.create(model="smollm2-135m", max_tokens=4,
                              messages=[{"role": "user", "content": "word " * 9000}])
    raise AssertionError("expected BadRequestError")
except openai.BadRequestError as err:
    assert err.code == "context_length_exceeded", err.code
    assert err.param == "messages", err.param
    assert "8192" in err.message, err.message
# Legacy text completions from the local expert's own objects, typed by the SDK.
done = c.completions.create(model="smollm2-135m", prompt="Germany: Berlin\nFrance:", max_tokens=3, temperature=0)
assert done.object == "text_completion" and "Paris" in done.choices[0].text, done
assert done.usage.completion_tokens <= 3 and done.choices[0].finish_reason in ("stop", "length"), done
streamed = "".join(ch.choices[0].text for ch in c.completions.create(
    model="smollm2-135m", prompt="Germany: Berlin\nFrance:", max_tokens=3, temperature=0, stream=True) if ch.choices)
assert streamed == done.choices[0].text, (streamed, done)
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

/// Fair queuing at a local expert: tenant A floods it, tenant B's one request is served
/// after at most one more of A's, not after A's whole backlog (which plain FIFO would do);
/// and A alone cannot take more than its share of the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_tenant_cannot_starve_another_at_a_local_expert() {
    const ADMIN_ENV: &str = "TRIAGE_TEST_ADMIN_KEY";
    const ADMIN_KEY: &str = "sk-admin-test-only";
    /// 6 waiting behind the running job, so A's share is 3 (half, the default).
    const QUEUE_LIMIT: usize = 6;
    const FLOOD: usize = 8;
    // SAFETY of set_var: every test sets the same value, so concurrent writers agree.
    std::env::set_var(ADMIN_ENV, ADMIN_KEY);
    let dir = tempfile::tempdir().unwrap();
    let model = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/smollm2-135m-instruct-q4_1.gguf");
    let cfg = format!(
        "[auth]\nkeys_db = \"{}\"\nadmin_key_env = \"{ADMIN_ENV}\"\n[resilience]\nmax_attempts = 1\n\
         [[experts]]\nname = \"smol\"\nkind = \"local\"\npath = \"{}\"\nweights = \"f32\"\nqueue_limit = {QUEUE_LIMIT}\n",
        dir.path().join("keys").display(),
        model.display()
    );
    let t0 = std::time::Instant::now();
    // Loads the model (about a second) before it serves.
    let gw = crate::support::Gateway::start(&cfg).await;
    eprintln!("model loaded after {:?}", t0.elapsed());
    let key = |name: &'static str, tenant: &'static str| {
        let url = gw.url("/admin/keys");
        async move {
            let r = client()
                .post(url)
                .bearer_auth(ADMIN_KEY)
                .json(&json!({"name": name, "tenant": tenant}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
            r.json::<Value>().await.unwrap()["secret"].as_str().unwrap().to_string()
        }
    };
    let (a, b) = (key("flood", "a").await, key("polite", "b").await);
    // One token: a job is mostly its prompt, the same for every request.
    let body = json!({"model": "smol", "temperature": 0, "max_tokens": 1,
                      "messages": [{"role": "user", "content": "Count from 1 to 100, separated by commas."}]});
    let url = gw.url("/v1/chat/completions");
    let send = |secret: String| {
        let (url, body) = (url.clone(), body.clone());
        tokio::spawn(async move {
            let r = client().post(url).bearer_auth(secret).json(&body).send().await.unwrap();
            let (status, retry_after) = (r.status().as_u16(), r.headers().get("retry-after").cloned());
            let _ = r.bytes().await.unwrap();
            (status, retry_after, std::time::Instant::now())
        })
    };
    let flood: Vec<_> = (0..FLOOD).map(|_| send(a.clone())).collect();
    let depth = || {
        let snap = gw.state.snapshot.load();
        match &snap.expert("smol").unwrap().backend {
            triage::experts::Backend::Local(l) => l.fixed().unwrap().queue_depth(),
            triage::experts::Backend::Remote(_) => unreachable!(),
        }
    };
    // A's requests beyond its share come straight back; then B arrives behind A's backlog.
    let started = std::time::Instant::now();
    while flood.iter().filter(|h| h.is_finished()).count() < FLOOD - (QUEUE_LIMIT / 2 + 1) {
        assert!(started.elapsed() < std::time::Duration::from_secs(60), "A's flood was never refused");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let backlog = depth();
    assert!(backlog >= 3, "A has a running job and a backlog when B arrives (depth {backlog})");
    let b_sent = std::time::Instant::now();
    let (b_status, _, b_done) = send(b).await.unwrap();
    eprintln!("B sent after {:?}, served {:?} later", b_sent - t0, b_done - b_sent);
    assert_eq!(b_status, 200, "B is not refused: A holds only its share of the queue");
    let mut served = Vec::new();
    let mut refused = 0;
    for h in flood {
        match h.await.unwrap() {
            (200, _, done) => served.push(done),
            (429, retry_after, _) => {
                assert!(retry_after.is_some(), "a refusal says when to come back");
                refused += 1;
            }
            (status, ..) => panic!("unexpected status {status}"),
        }
    }
    eprintln!("A's last served {:?} after the start", served.iter().max().map(|t| *t - t0));
    let a_ahead_of_b = served.iter().filter(|t| **t > b_sent && **t < b_done).count();
    assert!(
        a_ahead_of_b <= 2,
        "B waited for {a_ahead_of_b} of A's requests (A's running one and at most one turn; FIFO would be {})",
        backlog
    );
    assert_eq!(served.len(), QUEUE_LIMIT / 2 + 1, "A gets its running job and its share (3) of the queue");
    assert_eq!(refused, FLOOD - served.len());
}

/// `triage route` explains a decision from the command line with the embedded default's
/// router and policy, the same decision `POST /v1/route` returns, without loading a model.
#[test]
fn the_route_command_explains_a_decision_offline() {
    let run = |args: &[&str]| std::process::Command::new(env!("CARGO_BIN_EXE_triage")).args(args).output().unwrap();
    let out = run(&["route", "Fix this Python function: def add(a, b): return a - b", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let d: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(d["category"], "coding", "{d}");
    assert_eq!(d["fallback"], false, "{d}");
    assert!(!d["experts"].as_array().unwrap().is_empty(), "{d}");
    assert!(d["top_categories"][0][1].as_f64().unwrap() > 0.5, "{d}");

    let out = run(&["route", "Summarize the plot of Hamlet and then write a SQL query for the characters table."]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("fallback:   yes") && text.contains("below min_confidence"), "{text}");
    assert!(text.contains("experts:    smollm2-135m"), "{text}");

    let out = run(&["route", "hello", "--model", "nope"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("unknown model \"nope\"") && err.contains("triage"), "names the models there are: {err}");
}

/// A prompt longer than a local expert's context window is the client's error (400,
/// `context_length_exceeded`, as OpenAI answers it), not a failed upstream; in a routed
/// list the next expert, whose window may be larger, takes it; the worker stays usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_over_the_context_window_is_a_400_and_falls_to_the_next_expert() {
    use crate::mock::{Behavior, Mock};
    let big = Mock::start("big", Behavior::Ok).await;
    let smollm = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/smollm2-135m-instruct-q4_1.gguf");
    let cfg = format!(
        "[[experts]]\nname = \"tiny\"\nkind = \"local\"\npath = {:?}\ncontext_length = 64\nthreads = 1\n\
         [[experts]]\nname = \"big\"\nkind = \"openai\"\nbase_url = \"{}\"\n\
         [[models]]\nname = \"triage\"\nexperts = [\"tiny\", \"big\"]\n",
        smollm.display().to_string(),
        big.url()
    );
    let gw = crate::support::Gateway::start(&cfg).await;
    let long = "Summarize the following notes about the harbour. ".repeat(20);
    let ask = |model: &'static str, content: String, stream: bool| {
        let body = json!({"model": model, "max_tokens": 4, "stream": stream, "messages": [{"role": "user", "content": content}]});
        let req = client().post(gw.url("/v1/chat/completions")).json(&body);
        async move {
            let r = req.send().await.unwrap();
            let (status, expert) = (r.status().as_u16(), r.headers().get("x-triage-expert").cloned());
            (status, expert, r.text().await.unwrap())
        }
    };
    for stream in [false, true] {
        let (status, _, text) = ask("tiny", long.clone(), stream).await;
        assert_eq!(status, 400, "stream={stream}: {text}");
        let e: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(e["error"]["code"], "context_length_exceeded", "{e}");
        assert_eq!(e["error"]["type"], "invalid_request_error", "{e}");
        assert_eq!(e["error"]["param"], "messages", "{e}");
        let msg = e["error"]["message"].as_str().unwrap();
        assert!(msg.contains("maximum context length is 64 tokens"), "{msg}");
    }
    assert_eq!(big.hits(), 0);
    let (status, expert, text) = ask("triage", long.clone(), false).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(expert.unwrap(), "big", "the expert with room took it");
    assert_eq!(big.hits(), 1);
    let (status, expert, text) = ask("triage", "Say hi.".into(), false).await;
    assert_eq!((status, expert.unwrap().to_str().unwrap().to_string()), (200, "tiny".to_string()), "{text}");
    // A refusal is the request's fault: the local expert's breaker stays closed.
    assert_eq!(big.hits(), 1);
}

/// A text-only local expert refuses what it cannot do (an image, tools, JSON mode, log
/// probabilities) with OpenAI's 400 and the parameter's path, instead of answering as if
/// the request had not asked for it; in a routed list the next expert takes such a request,
/// unchanged. Wrong types and unknown roles are the client's error and go nowhere else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_expert_refuses_what_it_cannot_do_and_the_next_expert_takes_it() {
    use crate::mock::{Behavior, Mock};
    let big = Mock::start("big", Behavior::Ok).await;
    let smollm = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/smollm2-135m-instruct-q4_1.gguf");
    let cfg = format!(
        "[[experts]]\nname = \"tiny\"\nkind = \"local\"\npath = {:?}\nthreads = 1\n\
         [[experts]]\nname = \"big\"\nkind = \"openai\"\nbase_url = \"{}\"\n\
         [[models]]\nname = \"triage\"\nexperts = [\"tiny\", \"big\"]\n\
         [[models]]\nname = \"big-first\"\nexperts = [\"big\", \"tiny\"]\n\
         [resilience]\nmax_attempts = 1\nbreaker_failures = 1\n",
        smollm.display().to_string(),
        big.url()
    );
    let gw = crate::support::Gateway::start(&cfg).await;
    let ask = |model: &str, extra: Value| {
        let mut body = json!({"model": model, "max_tokens": 4, "messages": [{"role": "user", "content": "Say hi."}]});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let req = client().post(gw.url("/v1/chat/completions")).json(&body);
        async move {
            let r = req.send().await.unwrap();
            let (status, expert) = (r.status().as_u16(), r.headers().get("x-triage-expert").cloned());
            let v: Value = r.json().await.unwrap();
            (status, expert.map(|h| h.to_str().unwrap().to_string()), v)
        }
    };
    let image = json!({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}]});
    let tools =
        json!({"tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]});
    let cases = [
        (image, "messages[0].content[1].type", "'image_url'"),
        (tools.clone(), "tools", "'tools'"),
        (json!({"response_format": {"type": "json_object"}}), "response_format", "'json_object'"),
        (json!({"logprobs": true}), "logprobs", "Log probabilities"),
        (json!({"n": 2}), "n", "Only one choice"),
    ];
    for (extra, param, words) in &cases {
        let (status, _, e) = ask("tiny", extra.clone()).await;
        assert_eq!(status, 400, "{e}");
        assert_eq!(e["error"]["code"], "unsupported_parameter", "{e}");
        assert_eq!(e["error"]["type"], "invalid_request_error", "{e}");
        assert_eq!(e["error"]["param"], *param, "{e}");
        let msg = e["error"]["message"].as_str().unwrap();
        assert!(msg.contains(words) && msg.contains("`tiny` is a local text model"), "{msg}");
    }
    assert_eq!(big.hits(), 0);
    for (n, (extra, _, _)) in cases.iter().enumerate() {
        // With `max_attempts = 1`: a refusal costs no backend work and uses no attempt.
        let (status, expert, v) = ask("triage", extra.clone()).await;
        assert_eq!((status, expert.as_deref()), (200, Some("big")), "the next expert took it: {v}");
        assert_eq!(big.hits(), n + 1);
        for (key, value) in extra.as_object().unwrap() {
            assert_eq!(&big.last_body()[key], value, "passed on unchanged");
        }
    }

    // Tools the client says not to call are no reason to refuse; a text part is read.
    let (status, expert, v) = ask("tiny", json!({"tools": tools["tools"], "tool_choice": "none"})).await;
    assert_eq!((status, expert.as_deref()), (200, Some("tiny")), "{v}");
    let parts = json!({"messages": [{"role": "developer", "content": "Be brief."},
                                    {"role": "user", "content": [{"type": "text", "text": "Say hi."}]}]});
    let (status, expert, v) = ask("tiny", parts).await;
    assert_eq!((status, expert.as_deref()), (200, Some("tiny")), "{v}");

    // The client's own mistakes: 400 with the parameter, and no other expert is asked.
    let hits = big.hits();
    for (extra, param, words) in [
        (json!({"temperature": "hot"}), "temperature", "expected a number, got a string"),
        (json!({"seed": "x"}), "seed", "expected an integer, got a string"),
        (json!({"logprobs": "yes"}), "logprobs", "expected a boolean, got a string"),
        (json!({"stop": ["\n", 7]}), "stop[1]", "expected a string, got a number"),
        (json!({"messages": [{"role": "wizard", "content": "hi"}]}), "messages[0].role", "unknown role 'wizard'"),
        (
            json!({"messages": [{"role": "user", "content": 42}]}),
            "messages[0].content",
            "expected a string or an array",
        ),
    ] {
        let (status, _, e) = ask("triage", extra).await;
        assert_eq!(status, 400, "{e}");
        assert_eq!(e["error"]["param"], param, "{e}");
        assert!(e["error"]["message"].as_str().unwrap().contains(words), "{e}");
    }
    assert_eq!(big.hits(), hits, "a malformed request is not passed on");
    // OpenAI takes any 64-bit seed; llama.cpp's clients send -1.
    let (status, expert, v) = ask("tiny", json!({"seed": -1, "temperature": 0.7})).await;
    assert_eq!((status, expert.as_deref()), (200, Some("tiny")), "{v}");

    // When the expert that could take it is down, the client hears that (a 5xx its SDK
    // retries), not the local expert's refusal (a 400 it would give up on).
    big.set(Behavior::ServerError);
    let (status, _, e) = ask("triage", cases[0].0.clone()).await;
    assert_eq!(status, 502, "{e}");
    assert_eq!(e["error"]["type"], "server_error", "{e}");
    // That failure opened big's breaker (`breaker_failures = 1`): big is skipped, tiny
    // refuses, and the answer is that no expert is available now, not the refusal.
    let (status, _, e) = ask("big-first", cases[0].0.clone()).await;
    assert_eq!((status, e["error"]["code"].as_str()), (503, Some("no_expert_available")), "{e}");
}

/// `serve` binds its port before it loads anything. A taken port fails at once, before a
/// model is read. While the embedded default's experts and router load, `/health` answers
/// (an orchestrator's liveness probe passes), `/ready` and the API say 503 `loading` with
/// `Retry-After`, and SIGTERM exits 0 at once. Then it serves. The log, written to a pipe,
/// is plain text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_while_loading_then_serves() {
    let _one_at_a_time = crate::support::EMBEDDED_SERVE.lock().await;
    use std::time::Duration;
    let serve = |addr: std::net::SocketAddr| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_triage"));
        cmd.args(["serve", "--no-watch", "--listen", &addr.to_string()])
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        cmd
    };

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let out = tokio::time::timeout(Duration::from_secs(60), serve(addr).output()).await.unwrap().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{log}");
    assert!(log.contains(&format!("binding {addr}")), "names the address: {log}");
    assert!(!log.contains("Local expert loaded"), "fails before any model loads: {log}");
    drop(taken);

    let deadline = Duration::from_secs(120);
    // Starts the gateway and reads its log up to the line that says it listens.
    let start = || async {
        let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let mut child = serve(addr).spawn().unwrap();
        let lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(child.stderr.take().unwrap()));
        let mut log = Log { lines, text: String::new() };
        tokio::time::timeout(deadline, log.until("Listening; loading experts")).await.expect("it logs that it listens");
        (addr, child, log)
    };
    struct Log {
        lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStderr>>,
        text: String,
    }
    impl Log {
        async fn until(&mut self, what: &str) {
            loop {
                let line = self.lines.next_line().await.unwrap().expect("the gateway exited");
                self.text.push_str(&line);
                self.text.push('\n');
                if line.contains(what) {
                    return;
                }
            }
        }
    }
    let get = |addr: std::net::SocketAddr, path: &'static str| client().get(format!("http://{addr}{path}")).send();

    let (addr, mut child, mut log) = start().await;
    // Asked while the experts load (they take seconds; these answers take milliseconds).
    let health = get(addr, "/health").await.expect("the port answers during loading");
    assert_eq!(health.status(), 200, "alive while loading");
    let ready = get(addr, "/ready").await.unwrap();
    assert_eq!(ready.status(), 503);
    assert_eq!(ready.json::<Value>().await.unwrap()["status"], "loading");
    let body = json!({"model": "triage", "messages": [{"role": "user", "content": "Hi"}]});
    let early = client().post(format!("http://{addr}/v1/chat/completions")).json(&body).send().await.unwrap();
    assert_eq!(early.status(), 503);
    assert_eq!(early.headers()["retry-after"], "1");
    assert!(early.headers().contains_key("x-triage-request-id"));
    let e: Value = early.json().await.unwrap();
    assert_eq!((e["error"]["type"].as_str(), e["error"]["code"].as_str()), (Some("server_error"), Some("loading")));
    tokio::time::timeout(deadline, log.until("Triage is serving")).await.expect("the gateway starts serving");
    assert!(log.text.contains("Local expert loaded"), "the experts loaded in between: {}", log.text);
    assert_eq!(get(addr, "/ready").await.unwrap().status(), 200, "ready once loaded");
    let models: Value = get(addr, "/v1/models").await.unwrap().json().await.unwrap();
    assert_eq!(models["data"][0]["id"], "triage");
    assert!(!log.text.contains('\u{1b}'), "no colour codes in a piped log: {}", log.text);
    child.kill().await.unwrap();

    // SIGTERM while loading: exit 0 without waiting for the models.
    let (_, mut child, mut log) = start().await;
    let pid = child.id().unwrap().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait()).await.expect("exits promptly").unwrap();
    while let Ok(Some(line)) = log.lines.next_line().await {
        log.text.push_str(&line);
        log.text.push('\n');
    }
    assert!(status.success(), "exit 0 on SIGTERM while loading: {status:?}\n{}", log.text);
    assert!(!log.text.contains("Triage is serving"), "{}", log.text);
}

/// `POST /v1/completions` on a local expert: the prompt is continued as it is, without the
/// chat template, streamed or not; what a local model cannot do is refused with the
/// parameter that asked for it.
#[tokio::test]
async fn a_local_expert_continues_a_raw_prompt_as_a_text_completion() {
    let prompt = "Germany: Berlin\nSpain: Madrid\nFrance:";
    let body = json!({"model": "smollm2-135m", "temperature": 0, "max_tokens": 3, "prompt": prompt});
    let r = client().post(url("/v1/completions")).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-triage-expert"], "smollm2-135m");
    let whole: Value = r.json().await.unwrap();
    assert_eq!(whole["object"], "text_completion", "{whole}");
    assert!(whole["id"].as_str().unwrap().starts_with("cmpl-"), "{whole}");
    let text = whole["choices"][0]["text"].as_str().unwrap();
    assert!(text.contains("Paris"), "the few-shot pattern is continued: {text:?}");
    if whole["usage"]["completion_tokens"] == 3 {
        assert_eq!(whole["choices"][0]["finish_reason"], "length", "{whole}");
    }
    // The same words as a chat message are wrapped in the chat template: more tokens.
    let (_, chat) = chat(json!({"model": "smollm2-135m", "max_tokens": 1,
                                "messages": [{"role": "user", "content": prompt}]}))
    .await;
    let raw_tokens = whole["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(raw_tokens < chat["usage"]["prompt_tokens"].as_u64().unwrap(), "{whole} {chat}");

    let mut s = body.clone();
    s["stream"] = json!(true);
    s["stream_options"] = json!({"include_usage": true});
    let text_stream = client().post(url("/v1/completions")).json(&s).send().await.unwrap().text().await.unwrap();
    assert!(text_stream.ends_with("data: [DONE]\n\n"), "{text_stream}");
    let events: Vec<Value> = text_stream
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect();
    assert!(events.iter().all(|e| e["object"] == "text_completion"), "{text_stream}");
    let streamed: String = events.iter().filter_map(|e| e["choices"][0]["text"].as_str()).collect();
    assert_eq!(streamed, text, "greedy: the stream says what the whole reply said");
    let usage = events.iter().find(|e| !e["usage"].is_null()).expect("a usage event");
    assert_eq!(usage["usage"], whole["usage"]);
    // Not asked for: no usage event, and the stream still ends with its finish reason.
    s.as_object_mut().unwrap().remove("stream_options");
    let plain = client().post(url("/v1/completions")).json(&s).send().await.unwrap().text().await.unwrap();
    assert!(!plain.contains("\"usage\""), "{plain}");
    assert!(plain.contains("\"finish_reason\":\"") && plain.ends_with("data: [DONE]\n\n"), "{plain}");

    // No max_tokens: OpenAI's default for a completion, 16, not the whole context window.
    let open_ended =
        json!({"model": "smollm2-135m", "temperature": 0, "prompt": "Once upon a time, in a land far away,"});
    let v: Value = client().post(url("/v1/completions")).json(&open_ended).send().await.unwrap().json().await.unwrap();
    let n = v["usage"]["completion_tokens"].as_u64().unwrap();
    assert!(n <= 16 && (n == 16) == (v["choices"][0]["finish_reason"] == "length"), "{v}");

    // Routed: the prompt is what the router reads.
    let code = json!({"model": "triage", "max_tokens": 2,
                      "prompt": "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number, iteratively.\"\"\"\n"});
    let r = client().post(url("/v1/completions")).json(&code).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-triage-category"], "coding");

    for (extra, param) in [
        (json!({"echo": true}), "echo"),
        (json!({"logprobs": 1}), "logprobs"),
        (json!({"suffix": "\nItaly: Rome"}), "suffix"),
        (json!({"prompt": ["a", "b"]}), "prompt"),
        (json!({"best_of": 2}), "best_of"),
        (json!({"prompt": [1, 2, 3]}), "prompt"),
        (json!({"prompt": ""}), "prompt"),
    ] {
        let mut b = body.clone();
        b.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let r = client().post(url("/v1/completions")).json(&b).send().await.unwrap();
        assert_eq!(r.status(), 400, "{b}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(
            (v["error"]["code"].as_str(), v["error"]["param"].as_str()),
            (Some("unsupported_parameter"), Some(param)),
            "{v}"
        );
    }
}
