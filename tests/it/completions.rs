//! `POST /v1/completions`, OpenAI's legacy text completions, in front of remote experts:
//! relayed to each expert's own `/completions`, routed, retried and recorded as chat is.

use serde_json::{json, Value};

use crate::mock::{Behavior, Mock, WORDS};
use crate::support::{client, remote_config, Gateway};

async fn post(gw: &Gateway, body: &Value) -> reqwest::Response {
    client().post(gw.url("/v1/completions")).json(body).send().await.unwrap()
}

/// The `data:` payloads of an SSE body, `[DONE]` included.
fn events(text: &str) -> Vec<&str> {
    text.split("\n\n").filter_map(|e| e.strip_prefix("data: ")).collect()
}

#[tokio::test]
async fn a_completion_reaches_the_experts_completions_endpoint_untouched() {
    let a = Mock::start("a", Behavior::Ok).await;
    let gw = Gateway::start(&remote_config(&[("a", &a.url())], "")).await;
    for model in ["a", "triage"] {
        let body = json!({"model": model, "prompt": "def add(a, b):", "suffix": "\n\nprint(add(1, 2))",
                          "max_tokens": 16, "echo": false, "best_of": 1, "logprobs": 2, "x_vendor": [1]});
        let resp = post(&gw, &body).await;
        assert_eq!(resp.status(), 200, "{model}");
        assert_eq!(resp.headers()["x-triage-expert"], "a");
        assert_eq!(resp.headers()["x-triage-request-id"].len(), 26);
        let v: Value = resp.json().await.unwrap();
        assert_eq!(
            (v["object"].as_str(), v["choices"][0]["text"].as_str()),
            (Some("text_completion"), Some(&*WORDS.concat()))
        );
        assert_eq!(v["usage"]["total_tokens"], 15);
        let sent = a.last_body();
        assert_eq!(sent["model"], "up-a", "the expert's upstream name");
        for key in ["prompt", "suffix", "max_tokens", "echo", "best_of", "logprobs", "x_vendor"] {
            assert_eq!(sent[key], body[key], "{key} reaches the backend untouched");
        }
        assert!(sent.get("messages").is_none());
    }
    assert_eq!(a.hits(), 2, "both went to /v1/completions (the mock's chat route would answer chat objects)");
}

#[tokio::test]
async fn a_streamed_completion_is_relayed_and_hides_the_usage_it_asked_for() {
    let a = Mock::start("a", Behavior::Ok).await;
    let gw = Gateway::start(&remote_config(&[("a", &a.url())], "")).await;
    let text =
        post(&gw, &json!({"model": "a", "prompt": "Once upon a time", "stream": true})).await.text().await.unwrap();
    assert_eq!(a.last_body()["stream_options"]["include_usage"], true, "the gateway asked for usage");
    let evs = events(&text);
    assert_eq!(evs.last(), Some(&"[DONE]"), "{text}");
    let chunks: Vec<Value> = evs.iter().filter_map(|e| serde_json::from_str(e).ok()).collect();
    let streamed: String = chunks.iter().filter_map(|c| c["choices"][0]["text"].as_str()).collect();
    assert_eq!(streamed, WORDS.concat());
    assert!(chunks.iter().all(|c| c["usage"].is_null()), "usage the client did not ask for is hidden: {text}");
    assert_eq!(chunks.iter().filter(|c| c["choices"][0]["finish_reason"] == "stop").count(), 1);

    // Asked for: the usage event is relayed.
    let body = json!({"model": "a", "prompt": "x", "stream": true, "stream_options": {"include_usage": true}});
    let text = post(&gw, &body).await.text().await.unwrap();
    let usage: Vec<Value> = events(&text)
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter(|c| !c["usage"].is_null())
        .collect();
    assert_eq!(usage.len(), 1, "{text}");
    assert_eq!(usage[0]["usage"]["completion_tokens"], 4);
}

#[tokio::test]
async fn an_expert_that_does_not_declare_completions_is_passed_over_without_a_call() {
    let chat_only = Mock::start("chat-only", Behavior::Ok).await;
    let full = Mock::start("full", Behavior::Ok).await;
    let cfg = remote_config(&[("chat-only", &chat_only.url()), ("full", &full.url())], "").replacen(
        "capabilities = [\"chat\", \"embeddings\", \"completions\"]",
        "capabilities = [\"chat\"]",
        1,
    );
    let gw = Gateway::start(&cfg).await;
    // Routed: the list's first expert cannot take it, the second does.
    for _ in 0..4 {
        let resp = post(&gw, &json!({"model": "triage", "prompt": "x"})).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-triage-expert"], "full");
    }
    // The explanation says so.
    let d: Value = client()
        .post(gw.url("/v1/route"))
        .json(&json!({"model": "triage", "prompt": "x"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(d["experts"], json!(["full"]), "{d}");
    assert!(d["reasons"].to_string().contains("passed over chat-only"), "{d}");
    // Named directly: a 400 that says why, and no call.
    let direct = json!({"model": "chat-only", "prompt": "x"});
    let resp = post(&gw, &direct).await;
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["param"], "model", "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("`completions` capability"), "{v}");
    assert_eq!(chat_only.hits(), 0);
    // Passing it over is not a failure: its breaker stays closed and chat still reaches it.
    let chat = json!({"model": "triage", "messages": [{"role": "user", "content": "hi"}]});
    let resp = client().post(gw.url("/v1/chat/completions")).json(&chat).send().await.unwrap();
    assert_eq!(resp.headers()["x-triage-expert"], "chat-only");
    // Nor does its breaker, open after chat failures, turn the 400 into a 503 to retry.
    chat_only.set(Behavior::ServerError);
    let chat = json!({"model": "chat-only", "messages": [{"role": "user", "content": "hi"}]});
    for _ in 0..3 {
        client().post(gw.url("/v1/chat/completions")).json(&chat).send().await.unwrap();
    }
    let resp = client().post(gw.url("/v1/chat/completions")).json(&chat).send().await.unwrap();
    assert_eq!(resp.status(), 503, "the breaker is open");
    assert_eq!(post(&gw, &direct).await.status(), 400);
}

#[tokio::test]
async fn a_failing_expert_falls_back_for_completions_too() {
    let bad = Mock::start("bad", Behavior::ServerError).await;
    let good = Mock::start("good", Behavior::Ok).await;
    let gw = Gateway::start(&remote_config(&[("bad", &bad.url()), ("good", &good.url())], "")).await;
    let resp = post(&gw, &json!({"model": "triage", "prompt": "x", "stream": true})).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-triage-expert"], "good");
    assert!(resp.text().await.unwrap().ends_with("data: [DONE]\n\n"));
    assert_eq!((bad.hits(), good.hits()), (1, 1));
    // A backend's 400 is the client's to fix: passed through, not retried elsewhere.
    bad.set(Behavior::BadRequest);
    let resp = post(&gw, &json!({"model": "triage", "prompt": "x"})).await;
    assert_eq!(resp.status(), 400);
    assert_eq!((bad.hits(), good.hits()), (2, 1));
}

#[tokio::test]
async fn a_prompt_of_the_wrong_shape_is_an_openai_400_and_reaches_no_expert() {
    let a = Mock::start("a", Behavior::Ok).await;
    let gw = Gateway::start(&remote_config(&[("a", &a.url())], "")).await;
    for (body, message) in [
        (json!({"model": "a"}), "Missing required parameter: 'prompt'"),
        (json!({"model": "a", "prompt": 5}), "got a number"),
        (json!({"model": "a", "prompt": []}), "empty array"),
        (json!({"model": "a", "prompt": ["a", 1]}), "every item of one kind"),
        (json!({"model": "a", "prompt": [[1, 2], []]}), "every item of one kind"),
        (json!({"model": "a", "prompt": "x", "stream": "yes"}), "'stream'"),
    ] {
        let resp = post(&gw, &body).await;
        assert_eq!(resp.status(), 400, "{body}");
        let v: Value = resp.json().await.unwrap();
        let e = &v["error"];
        assert!(e["message"].as_str().unwrap().contains(message), "{body}: {v}");
        assert_eq!(e["type"], "invalid_request_error");
    }
    assert_eq!(a.hits(), 0);
    // Token ids and lists of prompts are valid prompts.
    for prompt in [json!([1, 2, 3]), json!([[1, 2], [3]]), json!(["a", "b"])] {
        let resp = post(&gw, &json!({"model": "triage", "prompt": prompt})).await;
        assert_eq!(resp.status(), 200, "{prompt}");
        assert_eq!(a.last_body()["prompt"], prompt);
    }
}
