//! The gateway as a drop-in OpenAI proxy in front of remote experts.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};

use crate::mock::{Behavior, Mock, WORDS};
use crate::support::{client, remote_config, Gateway};

fn chat_body(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "Say hello."}]})
}

async fn post(gw: &Gateway, path: &str, body: &Value) -> reqwest::Response {
    client().post(gw.url(path)).json(body).send().await.unwrap()
}

/// Asserts an OpenAI-shaped error body and returns it.
async fn error_body(resp: reqwest::Response, status: u16) -> Value {
    assert_eq!(resp.status().as_u16(), status);
    assert!(resp.headers().contains_key("x-triage-request-id"));
    let v: Value = resp.json().await.unwrap();
    let e = &v["error"];
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert!(e["type"].is_string(), "{v}");
    assert!(e.as_object().unwrap().contains_key("param") && e.as_object().unwrap().contains_key("code"), "{v}");
    v
}

/// Reads an SSE response to the end; returns the `data:` payloads.
async fn sse_events(resp: reqwest::Response) -> Vec<String> {
    let text = resp.text().await.unwrap();
    text.split("\n\n").filter_map(|e| e.strip_prefix("data: ")).map(str::to_string).collect()
}

#[tokio::test]
async fn non_streaming_passes_unknown_fields_through_and_names_the_expert() {
    let a = Mock::start("a", Behavior::Ok).await;
    let gw = Gateway::start(&remote_config(&[("a", &a.url())], "")).await;
    let body = json!({
        "model": "triage", "messages": [{"role": "user", "content": "hi", "name": "bob"}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
        "response_format": {"type": "json_object"}, "logprobs": true, "seed": 7, "x_vendor": {"k": [1, 2]},
    });
    let resp = post(&gw, "/v1/chat/completions", &body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-triage-expert"], "a");
    assert_eq!(resp.headers()["x-triage-request-id"].len(), 26, "a ULID");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], WORDS.concat());
    assert_eq!(v["usage"]["total_tokens"], 15);
    let sent = a.last_body();
    assert_eq!(sent["model"], "up-a", "the expert's upstream model name is sent");
    for key in ["tools", "response_format", "logprobs", "seed", "x_vendor"] {
        assert_eq!(sent[key], body[key], "{key} reaches the backend untouched");
    }
    assert_eq!(sent["messages"][0]["name"], "bob");
    assert!(sent.get("stream_options").is_none(), "non-streaming requests are not altered");
}

#[tokio::test]
async fn an_expert_name_goes_straight_to_that_expert() {
    let a = Mock::start("a", Behavior::Ok).await;
    let b = Mock::start("b", Behavior::Ok).await;
    let gw = Gateway::start(&remote_config(&[("a", &a.url()), ("b", &b.url())], "")).await;
    let resp = post(&gw, "/v1/chat/completions", &chat_body("b", false)).await;
    assert_eq!(resp.headers()["x-triage-expert"], "b");
    assert_eq!((a.hits(), b.hits()), (0, 1));
}

#[tokio::test]
async fn streaming_is_relayed_event_by_event_and_hides_the_usage_it_asked_for() {
    let a = Mock::start("a", Behavior::Ok).await;
    let gw = Gateway::start(&remote_config(&[("a", &a.url())], "")).await;
    let resp = post(&gw, "/v1/chat/completions", &chat_body("triage", true)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut stream = resp.bytes_stream();
    let start = Instant::now();
    let first = stream.next().await.unwrap().unwrap();
    let first_at = start.elapsed();
    let mut rest = Vec::new();
    while let Some(chunk) = stream.next().await {
        rest.extend_from_slice(&chunk.unwrap());
    }
    let total = start.elapsed();
    assert!(String::from_utf8_lossy(&first).starts_with("data: {"), "first chunk is an event");
    // The mock spaces 7 events 5 ms apart: a buffering proxy would deliver all at once.
    assert!(total - first_at >= Duration::from_millis(20), "first event after {first_at:?}, end after {total:?}");
    let all = format!("{}{}", String::from_utf8_lossy(&first), String::from_utf8_lossy(&rest));
    assert!(!all.contains("\"usage\""), "usage was not requested by the client: {all}");
    assert!(all.ends_with("data: [DONE]\n\n"));
    let text: String = all
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| v["choices"][0]["delta"]["content"].as_str().map(str::to_string))
        .collect();
    assert_eq!(text, WORDS.concat());
    assert_eq!(a.last_body()["stream_options"]["include_usage"], true, "the gateway asks for usage");
}

#[tokio::test]
async fn streaming_keeps_usage_when_the_client_asks_for_it() {
    let a = Mock::start("a", Behavior::Ok).await;
    let gw = Gateway::start(&remote_config(&[("a", &a.url())], "")).await;
    let mut body = chat_body("triage", true);
    body["stream_options"] = json!({"include_usage": true});
    let events = sse_events(post(&gw, "/v1/chat/completions", &body).await).await;
    let usage: Vec<Value> =
        events.iter().filter_map(|e| serde_json::from_str::<Value>(e).ok()).filter(|v| !v["usage"].is_null()).collect();
    assert_eq!(usage.len(), 1);
    assert_eq!(usage[0]["usage"]["completion_tokens"], 4);
}

#[tokio::test]
async fn a_failing_expert_falls_back_to_the_next() {
    for behavior in
        [Behavior::ServerError, Behavior::Hang, Behavior::MalformedJson, Behavior::RateLimited, Behavior::ErrorWith200]
    {
        let a = Mock::start("a", behavior).await;
        let b = Mock::start("b", Behavior::Ok).await;
        let gw = Gateway::start(&remote_config(&[("a", &a.url()), ("b", &b.url())], "")).await;
        for stream in [false, true] {
            let resp = post(&gw, "/v1/chat/completions", &chat_body("triage", stream)).await;
            assert_eq!(resp.status(), 200, "{behavior:?} stream={stream}");
            assert_eq!(resp.headers()["x-triage-expert"], "b", "{behavior:?} stream={stream}");
            let _ = resp.bytes().await.unwrap();
        }
        assert_eq!(a.hits(), 2, "{behavior:?}: one try per request");
    }
}

#[tokio::test]
async fn a_refused_connection_falls_back() {
    let b = Mock::start("b", Behavior::Ok).await;
    let gw = Gateway::start(&remote_config(&[("dead", "http://127.0.0.1:9/v1"), ("b", &b.url())], "")).await;
    let resp = post(&gw, "/v1/chat/completions", &chat_body("triage", false)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-triage-expert"], "b");
}

#[tokio::test]
async fn when_every_expert_fails_the_last_error_decides_the_status() {
    let cases = [
        (Behavior::ServerError, 502),
        (Behavior::Hang, 504),
        (Behavior::RateLimited, 429),
        (Behavior::MalformedJson, 502),
    ];
    for (behavior, status) in cases {
        let a = Mock::start("a", behavior).await;
        let gw = Gateway::start(&remote_config(&[("a", &a.url())], "")).await;
        let resp = post(&gw, "/v1/chat/completions", &chat_body("triage", false)).await;
        if status == 429 {
            assert_eq!(resp.headers()["retry-after"], "7", "the backend's Retry-After is passed on");
        }
        let v = error_body(resp, status).await;
        // A 429 or a timeout is not called again from the same request: the backend asked
        // for time, or took all it had.
        let calls = if status == 429 || status == 504 { 1 } else { 3 };
        assert_eq!(a.hits(), calls, "{behavior:?}: bounded retries (max_attempts = 3): {v}");
    }
}

#[tokio::test]
async fn a_rate_limited_expert_is_not_hammered_and_its_breaker_stays_closed() {
    let a = Mock::start("a", Behavior::RateLimited).await;
    let cfg = remote_config(&[("a", &a.url())], "")
        .replace("[resilience]\n", "[resilience]\nbreaker_failures = 2\nbreaker_cooldown_ms = 30000\n");
    let gw = Gateway::start(&cfg).await;
    for n in 1..=4 {
        let resp = post(&gw, "/v1/chat/completions", &chat_body("triage", false)).await;
        assert_eq!(resp.headers()["retry-after"], "7");
        error_body(resp, 429).await;
        assert_eq!(a.hits(), n, "one call a request");
    }
    // Four 429s opened no breaker: the backend is asked again as soon as it is ready.
    a.set(Behavior::Ok);
    let resp = post(&gw, "/v1/chat/completions", &chat_body("triage", false)).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn a_client_error_from_the_backend_is_passed_through_without_retry() {
    let a = Mock::start("a", Behavior::BadRequest).await;
    let b = Mock::start("b", Behavior::Ok).await;
    let gw = Gateway::start(&remote_config(&[("a", &a.url()), ("b", &b.url())], "")).await;
    let v = error_body(post(&gw, "/v1/chat/completions", &chat_body("triage", false)).await, 400).await;
    assert_eq!(v["error"]["message"], "mock says the request is bad");
    assert_eq!((a.hits(), b.hits()), (1, 0));
    // A body in another shape (older vLLM's) still tells the client what was wrong.
    a.set(Behavior::VllmBadRequest);
    let v = error_body(post(&gw, "/v1/chat/completions", &chat_body("triage", false)).await, 400).await;
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("maximum context length is 2048"), "{v}");
    assert_eq!(b.hits(), 0);
    // An error object with a 4xx code inside a 200 (vLLM, found while generating) is the
    // request's fault too: passed through, in a stream or not, and not tried elsewhere.
    a.set(Behavior::ClientErrorWith200);
    for stream in [false, true] {
        let v = error_body(post(&gw, "/v1/chat/completions", &chat_body("triage", stream)).await, 400).await;
        assert_eq!(v["error"]["message"], "bad guided_json schema", "stream={stream}: {v}");
    }
    assert_eq!((a.hits(), b.hits()), (4, 0));
}

#[tokio::test]
async fn a_stream_that_breaks_after_it_started_ends_with_an_error_event_and_no_retry() {
    let a = Mock::start("a", Behavior::ResetMidStream).await;
    let b = Mock::start("b", Behavior::Ok).await;
    let gw = Gateway::start(&remote_config(&[("a", &a.url()), ("b", &b.url())], "")).await;
    let resp = post(&gw, "/v1/chat/completions", &chat_body("triage", true)).await;
    assert_eq!(resp.status(), 200);
    let events = sse_events(resp).await;
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["type"], "server_error", "{events:?}");
    assert!(events.len() >= 2, "content before the failure was delivered: {events:?}");
    assert_eq!(b.hits(), 0, "never retry after bytes reached the client");
}

#[tokio::test]
async fn the_breaker_skips_an_expert_that_keeps_failing() {
    let a = Mock::start("a", Behavior::ServerError).await;
    let b = Mock::start("b", Behavior::Ok).await;
    let cfg = remote_config(&[("a", &a.url()), ("b", &b.url())], "")
        .replace("[resilience]\n", "[resilience]\nbreaker_failures = 2\nbreaker_cooldown_ms = 300\n");
    let gw = Gateway::start(&cfg).await;
    for _ in 0..5 {
        let resp = post(&gw, "/v1/chat/completions", &chat_body("triage", false)).await;
        assert_eq!(resp.headers()["x-triage-expert"], "b");
    }
    assert_eq!(a.hits(), 2, "after 2 failures the breaker opens");
    a.set(Behavior::Ok);
    tokio::time::sleep(Duration::from_millis(350)).await;
    let resp = post(&gw, "/v1/chat/completions", &chat_body("triage", false)).await;
    assert_eq!(resp.headers()["x-triage-expert"], "a", "after the cool-down a trial request goes through");

    // With no other expert, an open breaker is a 503 that says when to come back.
    let c = Mock::start("c", Behavior::ServerError).await;
    let cfg = remote_config(&[("c", &c.url())], "")
        .replace("[resilience]\n", "[resilience]\nbreaker_failures = 2\nbreaker_cooldown_ms = 30000\n");
    let gw = Gateway::start(&cfg).await;
    error_body(post(&gw, "/v1/chat/completions", &chat_body("triage", false)).await, 502).await;
    assert_eq!(c.hits(), 2, "the breaker opened after two failures");
    let resp = post(&gw, "/v1/chat/completions", &chat_body("triage", false)).await;
    let wait: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((29..=30).contains(&wait), "the cool-down left: {wait}");
    let v = error_body(resp, 503).await;
    assert_eq!(v["error"]["code"], "no_expert_available");
    assert_eq!(c.hits(), 2);
}

#[tokio::test]
async fn bad_requests_get_openai_shaped_errors() {
    let a = Mock::start("a", Behavior::Ok).await;
    let cfg =
        remote_config(&[("a", &a.url())], "").replace("[resilience]", "[server]\nmax_body_bytes = 2048\n[resilience]");
    let gw = Gateway::start(&cfg).await;
    let raw = client()
        .post(gw.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body("{\"model\": ")
        .send()
        .await
        .unwrap();
    let v = error_body(raw, 400).await;
    assert!(v["error"]["message"].as_str().unwrap().contains("parse the JSON"), "{v}");

    let v = error_body(post(&gw, "/v1/chat/completions", &json!({"model": "triage"})).await, 400).await;
    assert_eq!(v["error"]["param"], "messages");
    let v = error_body(
        post(&gw, "/v1/chat/completions", &json!({"model": "triage", "messages": [{"content": "x"}]})).await,
        400,
    )
    .await;
    assert_eq!(v["error"]["param"], "messages[0].role");
    let v = error_body(
        post(&gw, "/v1/chat/completions", &json!({"model": "triage", "messages": [], "stream": 1})).await,
        400,
    )
    .await;
    assert_eq!(v["error"]["param"], "messages");

    let v = error_body(post(&gw, "/v1/chat/completions", &chat_body("nope", false)).await, 404).await;
    assert_eq!(v["error"]["code"], "model_not_found");

    let big = json!({"model": "triage", "messages": [{"role": "user", "content": "x".repeat(5000)}]});
    let v = error_body(post(&gw, "/v1/chat/completions", &big).await, 413).await;
    assert!(v["error"]["message"].as_str().unwrap().contains("2048"), "{v}");
    assert_eq!(a.hits(), 0, "nothing invalid reached the backend");

    // The gateway is intact after all that.
    assert_eq!(post(&gw, "/v1/chat/completions", &chat_body("triage", false)).await.status(), 200);
}

#[tokio::test]
async fn models_lists_virtual_models_and_experts() {
    let a = Mock::start("a", Behavior::Ok).await;
    let gw = Gateway::start(&remote_config(&[("a", &a.url())], "")).await;
    let v: Value = client().get(gw.url("/v1/models")).send().await.unwrap().json().await.unwrap();
    let ids: Vec<&str> = v["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["triage", "a"]);
    assert_eq!(v["object"], "list");

    // One model by id (the SDKs' `models.retrieve`), the same object the list holds.
    for (i, id) in ids.iter().enumerate() {
        let one: Value = client().get(gw.url(&format!("/v1/models/{id}"))).send().await.unwrap().json().await.unwrap();
        assert_eq!(one, v["data"][i], "{one}");
    }
    let e = error_body(client().get(gw.url("/v1/models/org/none")).send().await.unwrap(), 404).await;
    assert_eq!(e["error"]["code"], "model_not_found", "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("`org/none`"), "{e}");

    // A wrong method is an OpenAI-shaped 405 that names the method and the path.
    let r = client().get(gw.url("/v1/chat/completions")).send().await.unwrap();
    assert_eq!(r.headers()["allow"], "POST");
    let e = error_body(r, 405).await;
    assert_eq!(e["error"]["code"], "method_not_allowed", "{e}");
    assert_eq!(e["error"]["message"], "Invalid method for URL (GET /v1/chat/completions).", "{e}");
}

#[tokio::test]
async fn embeddings_go_to_experts_that_declare_them() {
    let a = Mock::start("a", Behavior::Ok).await;
    let extra = format!("[[experts]]\nname = \"chat-only\"\nkind = \"openai\"\nbase_url = \"{}\"\n", a.url());
    let gw = Gateway::start(&remote_config(&[("a", &a.url())], &extra)).await;
    let resp = post(&gw, "/v1/embeddings", &json!({"model": "a", "input": ["x", "y"]})).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(a.last_body()["model"], "up-a");
    let v = error_body(post(&gw, "/v1/embeddings", &json!({"model": "chat-only", "input": "x"})).await, 400).await;
    assert!(v["error"]["message"].as_str().unwrap().contains("embeddings"));
    // A virtual model exists but routes chat: it is named as such, not "does not exist".
    let v = error_body(post(&gw, "/v1/embeddings", &json!({"model": "triage", "input": "x"})).await, 400).await;
    assert_eq!(v["error"]["param"], "model", "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("`triage` does not support embeddings") && msg.contains("routes chat"), "{msg}");
}

#[tokio::test]
async fn traceparent_is_propagated_to_remote_experts() {
    let a = Mock::start("a", Behavior::Ok).await;
    let gw = Gateway::start(&remote_config(&[("a", &a.url())], "")).await;
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    client()
        .post(gw.url("/v1/chat/completions"))
        .header("traceparent", tp)
        .json(&chat_body("triage", false))
        .send()
        .await
        .unwrap();
    assert_eq!(a.headers.lock().unwrap().last().unwrap()["traceparent"], tp);
}

#[tokio::test]
async fn shutdown_lets_a_running_stream_finish_and_turns_not_ready() {
    let a = Mock::start("a", Behavior::Ok).await;
    let mut gw = Gateway::start(&remote_config(&[("a", &a.url())], "")).await;
    assert_eq!(client().get(gw.url("/ready")).send().await.unwrap().status(), 200);
    assert_eq!(client().get(gw.url("/health")).send().await.unwrap().status(), 200);
    let resp = post(&gw, "/v1/chat/completions", &chat_body("triage", true)).await;
    gw.shutdown();
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(gw.state.is_draining());
    let events = sse_events(resp).await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "the in-flight stream completed");
    let finished = tokio::time::timeout(Duration::from_secs(3), &mut gw.task).await;
    assert!(matches!(finished, Ok(Ok(Ok(())))), "the server exits cleanly once drained");
    assert!(client().get(gw.url("/health")).send().await.is_err(), "no longer accepting");
}
