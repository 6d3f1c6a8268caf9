#![no_main]
//! The whole HTTP app, in process (`oneshot`, no client socket), on fuzzed request bodies:
//! no panic, no 5xx, every error in OpenAI's shape, every stream finished with `[DONE]`.
//!
//! The expert behind the gateway is an in-process upstream that answers every request
//! correctly and at once, and the ledger is on, so no 5xx is legitimate here: an upstream
//! failure (502/503/504) cannot happen, and a 500 from the ledger would be a bug. Auth is
//! off; the bodies reach the parsers.
//!
//! Input: one byte picks the route, the rest is the body (for `GET /admin/stats`, the
//! query string).
use std::sync::{Arc, OnceLock};

use axum::body::{Body, Bytes};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http::{Method, Request, StatusCode};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};
use tower::ServiceExt;

/// Routes a fuzzed body can reach, picked by the input's first byte.
static ROUTES: [(Method, &str); 6] = [
    (Method::POST, "/v1/chat/completions"),
    (Method::POST, "/v1/embeddings"),
    (Method::POST, "/v1/route"),
    (Method::POST, "/v1/feedback"),
    (Method::GET, "/admin/stats"),
    (Method::POST, "/v1/completions"),
];

/// Small limits, so a fuzzed body of a few KiB reaches each limit's error; the ledger is
/// capped so `/admin/stats` scans stay cheap however long the campaign runs; timeouts are
/// generous because only a hang should ever hit them on a busy machine.
fn config(upstream: &str, ledger: &str) -> String {
    format!(
        r#"
[limits]
max_messages = 8
max_prompt_chars = 2000
max_tokens = 100

[ledger]
path = "{ledger}"
flush_interval_ms = 50
max_records = 1000

[[experts]]
name = "a"
kind = "openai"
base_url = "{upstream}"
model = "up-a"
capabilities = ["chat", "embeddings", "completions"]
timeouts = {{ connect_ms = 10000, first_byte_ms = 30000, total_ms = 60000 }}

[[models]]
name = "triage"
experts = ["a"]
"#
    )
}

struct Harness {
    rt: tokio::runtime::Runtime,
    app: axum::Router,
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"));
        let upstream = rt.block_on(start_upstream());
        // One ledger per fuzzing process (libFuzzer's -fork/-jobs run several at once).
        let ledger = std::env::temp_dir().join(format!("triage-fuzz-http-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&ledger);
        let text = config(&upstream, &ledger.display().to_string());
        let config = triage::config::load_str(&text, "fuzz-http.toml").unwrap_or_else(|e| panic!("config: {e}"));
        let app = rt.block_on(async {
            let state = triage::state::AppState::new(config, &triage::routing::no_routers, None)
                .unwrap_or_else(|e| panic!("state: {e}"));
            triage::api::app(Arc::new(state))
        });
        Harness { rt, app }
    })
}

/// An OpenAI-compatible upstream that always answers: JSON, or the whole SSE stream in
/// one write (with the usage event when it is asked for).
async fn start_upstream() -> String {
    let app = axum::Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/embeddings", post(embeddings));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("addr: {e}"));
    // Without TCP_NODELAY the answer's second write waits out the gateway's delayed ACK:
    // 40 ms a request, 13 exec/s.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/v1")
}

async fn chat(body: Bytes) -> Response {
    let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let usage = json!({"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5});
    let json_type = [("content-type", "application/json")];
    if req["stream"] != true {
        let answer = json!({"id": "chatcmpl-fuzz", "object": "chat.completion", "created": 1, "model": "up-a",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
            "usage": usage});
        return (json_type, answer.to_string()).into_response();
    }
    let chunk = |delta: Value, finish: Value, usage: Option<&Value>| {
        let mut c = json!({"id": "chatcmpl-fuzz", "object": "chat.completion.chunk", "created": 1, "model": "up-a",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        if let Some(u) = usage {
            c["choices"] = json!([]);
            c["usage"] = u.clone();
        }
        format!("data: {c}\n\n")
    };
    let mut sse = chunk(json!({"role": "assistant", "content": "ok"}), Value::Null, None);
    sse += &chunk(json!({}), json!("stop"), None);
    if req["stream_options"]["include_usage"] == true {
        sse += &chunk(json!({}), Value::Null, Some(&usage));
    }
    sse += "data: [DONE]\n\n";
    ([("content-type", "text/event-stream")], sse).into_response()
}

async fn completions(body: Bytes) -> Response {
    let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let usage = json!({"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5});
    let chunk = |text: &str, finish: Value| {
        json!({"id": "cmpl-fuzz", "object": "text_completion", "created": 1, "model": "up-a",
            "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": finish}]})
    };
    if req["stream"] != true {
        let mut answer = chunk("ok", json!("stop"));
        answer["usage"] = usage;
        return ([("content-type", "application/json")], answer.to_string()).into_response();
    }
    let mut sse = format!("data: {}\n\ndata: {}\n\n", chunk("ok", Value::Null), chunk("", json!("stop")));
    if req["stream_options"]["include_usage"] == true {
        let u = json!({"id": "cmpl-fuzz", "object": "text_completion", "created": 1, "model": "up-a",
            "choices": [], "usage": usage});
        sse += &format!("data: {u}\n\n");
    }
    sse += "data: [DONE]\n\n";
    ([("content-type", "text/event-stream")], sse).into_response()
}

async fn embeddings(body: Bytes) -> Response {
    let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let n = req["input"].as_array().map_or(1, Vec::len);
    let data: Vec<Value> =
        (0..n).map(|i| json!({"object": "embedding", "index": i, "embedding": [0.1, 0.2]})).collect();
    let answer =
        json!({"object": "list", "data": data, "model": "up-a", "usage": {"prompt_tokens": 1, "total_tokens": 1}});
    ([("content-type", "application/json")], answer.to_string()).into_response()
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else { return };
    let (method, path) = &ROUTES[usize::from(pick) % ROUTES.len()];
    let request = if *method == Method::GET {
        // Only a query string that makes a valid URI reaches the app; hyper refuses the rest.
        let Ok(query) = std::str::from_utf8(body) else { return };
        let Ok(uri) = http::Uri::try_from(format!("{path}?{query}")) else { return };
        Request::get(uri).body(Body::empty())
    } else {
        Request::builder()
            .method(method.clone())
            .uri(*path)
            .header("content-type", "application/json")
            .body(Body::from(body.to_vec()))
    };
    let Ok(request) = request else { return };
    let h = harness();
    let (status, content_type, text) = h.rt.block_on(async {
        let resp = h.app.clone().oneshot(request).await.unwrap_or_else(|never| match never {});
        let status = resp.status();
        let content_type = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await;
        let bytes = bytes.unwrap_or_else(|e| panic!("{path}: the response body failed: {e}"));
        (status, content_type, String::from_utf8_lossy(&bytes).into_owned())
    });
    let input = String::from_utf8_lossy(body);
    assert!(!status.is_server_error(), "{method} {path} answered {status} {text} to {input:?}");
    if status != StatusCode::OK {
        let err: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        assert!(
            err["error"]["message"].is_string() && err["error"]["type"].is_string(),
            "{method} {path} answered {status} with a body not in OpenAI's error shape: {text} to {input:?}"
        );
    } else if content_type.starts_with("text/event-stream") {
        assert!(text.ends_with("data: [DONE]\n\n"), "{path}: a stream did not end with [DONE]: {text} to {input:?}");
    }
});
