//! The fault-injecting backend (`mock::FaultServer`): connection resets, hangs, slow,
//! truncated and garbled streams. Each fault has one defined outcome the client sees, and
//! afterwards nothing is left behind: no request in flight, no client connection, no
//! connection to the backend. (HTTP-level faults, 500, 429 with Retry-After, invalid JSON
//! bodies, a refused connection and a reset after the stream started, are in `proxy.rs`.)

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::mock::{Behavior, Fault, FaultServer, Mock, WORDS};
use crate::support::{remote_config, Gateway};

/// How long the gateway may take to let go of everything after the client is done.
const SETTLE: Duration = Duration::from_secs(5);

/// A client that closes each connection after its response, so the gateway's open
/// connection count can return to zero.
fn client() -> reqwest::Client {
    reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap()
}

fn chat(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "Say hello."}]})
}

async fn post(gw: &Gateway, body: &Value) -> reqwest::Response {
    client().post(gw.url("/v1/chat/completions")).json(body).send().await.unwrap()
}

/// The `data:` payloads of an SSE body, parsed.
fn events(text: &str) -> Vec<Value> {
    text.split("\n\n")
        .filter_map(|e| e.trim().strip_prefix("data: "))
        .map(
            |d| if d == "[DONE]" { json!("[DONE]") } else { serde_json::from_str(d).unwrap_or(json!({"unparsed": d})) },
        )
        .collect()
}

fn content(events: &[Value]) -> String {
    events.iter().filter_map(|e| e["choices"][0]["delta"]["content"].as_str()).collect()
}

/// Waits until the gateway has no request in flight and no open client connection, and
/// the fault backend has no open connection (the gateway closed every one it gave up on).
async fn settles(gw: &Gateway, fault: &FaultServer) {
    let start = Instant::now();
    loop {
        let (requests, clients, upstream) = (gw.state.load.requests(), gw.state.load.connections(), fault.open());
        if (requests, clients, upstream) == (0, 0, 0) {
            return;
        }
        assert!(
            start.elapsed() < SETTLE,
            "leaked after {SETTLE:?}: {requests} requests in flight, {clients} client connections, {upstream} backend connections"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The fault backend `f` first, a healthy mock `b` behind it.
async fn with_fallback(fault: Fault, timeouts: &str) -> (Gateway, FaultServer, Mock) {
    let f = FaultServer::start(fault).await;
    let b = Mock::start("b", Behavior::Ok).await;
    let cfg = remote_config(&[("f", &f.url()), ("b", &b.url())], "").replace(DEFAULT_TIMEOUTS, timeouts);
    (Gateway::start(&cfg).await, f, b)
}

async fn alone(fault: Fault, timeouts: &str, extra: &str) -> (Gateway, FaultServer) {
    let f = FaultServer::start(fault).await;
    let cfg = remote_config(&[("f", &f.url())], extra).replace(DEFAULT_TIMEOUTS, timeouts);
    (Gateway::start(&cfg).await, f)
}

/// What `remote_config` writes; tests swap in their own.
const DEFAULT_TIMEOUTS: &str = "connect_ms = 500, first_byte_ms = 400, total_ms = 3000";

async fn error_of(resp: reqwest::Response, status: u16) -> Value {
    assert_eq!(resp.status().as_u16(), status);
    assert!(resp.headers().contains_key("x-triage-request-id"));
    let v: Value = resp.json().await.unwrap();
    let mut keys: Vec<&str> = v["error"].as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["code", "message", "param", "type"], "{v}");
    v
}

#[tokio::test]
async fn a_connection_reset_before_the_answer_falls_back_and_alone_is_a_502() {
    let (gw, f, b) = with_fallback(Fault::Reset, DEFAULT_TIMEOUTS).await;
    for stream in [false, true] {
        let resp = post(&gw, &chat("triage", stream)).await;
        assert_eq!(resp.status(), 200, "stream={stream}");
        assert_eq!(resp.headers()["x-triage-expert"], "b");
        assert_eq!(resp.headers().contains_key("content-length"), !stream, "JSON answers keep their length");
        let text = resp.text().await.unwrap();
        assert!(text.contains("mock"), "{text}");
    }
    assert_eq!((f.hits(), b.hits()), (2, 2));
    settles(&gw, &f).await;

    let (gw, f) = alone(Fault::Reset, DEFAULT_TIMEOUTS, "").await;
    let v = error_of(post(&gw, &chat("f", false)).await, 502).await;
    assert_eq!(
        (v["error"]["type"].as_str(), v["error"]["code"].as_str()),
        (Some("server_error"), Some("upstream_error"))
    );
    assert_eq!(f.hits(), 3, "retried up to max_attempts");
    settles(&gw, &f).await;
}

#[tokio::test]
async fn a_hung_backend_is_given_up_at_the_first_byte_timeout_and_its_connections_closed() {
    let (gw, f, _b) = with_fallback(Fault::Hang, DEFAULT_TIMEOUTS).await;
    for stream in [false, true] {
        let started = Instant::now();
        let resp = post(&gw, &chat("triage", stream)).await;
        assert_eq!(resp.headers()["x-triage-expert"], "b");
        let _ = resp.bytes().await.unwrap();
        // first_byte_ms = 400, plus the fallback's own (fast) answer.
        assert!(started.elapsed() < Duration::from_millis(2000), "took {:?}", started.elapsed());
    }
    settles(&gw, &f).await;

    let (gw, f) = alone(Fault::Hang, DEFAULT_TIMEOUTS, "").await;
    let v = error_of(post(&gw, &chat("f", true)).await, 504).await;
    assert_eq!(v["error"]["code"], "upstream_timeout");
    settles(&gw, &f).await;
}

/// `first_byte_ms` is one window from the send: a head that comes in time does not open
/// a second one for the first event.
#[tokio::test]
async fn the_first_byte_window_covers_the_head_and_the_first_event_together() {
    // first_byte_ms = 400: head at 250 ms, first event at 500 ms.
    let late = Fault::SlowHeadThenSlowEvent { each: Duration::from_millis(250) };
    let (gw, f, _b) = with_fallback(late, DEFAULT_TIMEOUTS).await;
    let resp = post(&gw, &chat("triage", true)).await;
    assert_eq!(resp.headers()["x-triage-expert"], "b", "the first event came 500 ms after the send");
    let _ = resp.bytes().await.unwrap();
    settles(&gw, &f).await;
}

#[tokio::test]
async fn a_stream_slower_than_the_total_timeout_ends_with_an_error_event() {
    // Events 300 ms apart, 4 of them, against a 1 s total: the stream is cut mid-way.
    let slow = Fault::SlowStream { gap: Duration::from_millis(300) };
    let (gw, f) = alone(slow, "connect_ms = 500, first_byte_ms = 400, total_ms = 1000", "").await;
    let resp = post(&gw, &chat("f", true)).await;
    assert_eq!(resp.status(), 200, "committed: the first event arrived in time");
    let evs = events(&resp.text().await.unwrap());
    let last = evs.last().unwrap();
    assert_eq!(last["error"]["code"], "total_timeout", "{evs:?}");
    assert_eq!(last["error"]["type"], "server_error");
    let text = content(&evs);
    assert!(!text.is_empty() && text.len() < WORDS.concat().len(), "part of the answer arrived: {text:?}");
    assert!(!evs.contains(&json!("[DONE]")));
    settles(&gw, &f).await;
}

#[tokio::test]
async fn a_client_that_leaves_a_slow_stream_frees_the_backend_connection() {
    // The backend would stream for 2 s (4 events 500 ms apart).
    let slow = Fault::SlowStream { gap: Duration::from_millis(500) };
    let dir = tempfile::tempdir().unwrap();
    let ledger = format!("[ledger]\npath = \"{}\"\n", dir.path().display());
    let (gw, f) = alone(slow, DEFAULT_TIMEOUTS, &ledger).await;
    let mut resp = post(&gw, &chat("f", true)).await;
    let id = resp.headers()["x-triage-request-id"].to_str().unwrap().to_string();
    let first = resp.chunk().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: "), "{first:?}");
    drop(resp);
    // The gateway learns of the hang-up when it next writes (an event or two later) and
    // must then hang up on the backend, well before the backend would have finished.
    let started = Instant::now();
    settles(&gw, &f).await;
    assert!(started.elapsed() < Duration::from_millis(1500), "backend connection held {:?}", started.elapsed());
    let ledger = gw.state.ledger.as_ref().unwrap();
    ledger.flush().await.unwrap();
    let rec = ledger.get(&id).unwrap().unwrap();
    assert_eq!((rec.status, rec.error.as_deref()), (499, Some("client_disconnect")), "{rec:?}");
}

#[tokio::test]
async fn a_stream_cut_before_done_ends_with_an_error_event_and_is_recorded_as_failed() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = format!("[ledger]\npath = \"{}\"\n", dir.path().display());
    let (gw, f) = alone(Fault::TruncatedStream, DEFAULT_TIMEOUTS, &ledger).await;
    let resp = post(&gw, &chat("f", true)).await;
    assert_eq!(resp.status(), 200);
    let id = resp.headers()["x-triage-request-id"].to_str().unwrap().to_string();
    let evs = events(&resp.text().await.unwrap());
    assert_eq!(content(&evs), WORDS[..2].concat(), "what arrived is relayed: {evs:?}");
    let last = evs.last().unwrap();
    assert_eq!(last["error"]["code"], "stream_truncated", "the client can tell the answer is cut short: {evs:?}");
    assert!(!evs.contains(&json!("[DONE]")));
    assert_eq!(f.hits(), 1, "no retry after bytes reached the client");
    let ledger = gw.state.ledger.as_ref().unwrap();
    ledger.flush().await.unwrap();
    let rec = ledger.get(&id).unwrap().unwrap();
    assert_eq!(rec.error.as_deref(), Some("stream_truncated"), "{rec:?}");
    settles(&gw, &f).await;
}

#[tokio::test]
async fn a_garbled_first_stream_event_falls_back_before_the_client_sees_it() {
    let (gw, f, b) = with_fallback(Fault::GarbledStream, DEFAULT_TIMEOUTS).await;
    let resp = post(&gw, &chat("triage", true)).await;
    assert_eq!(resp.headers()["x-triage-expert"], "b");
    let evs = events(&resp.text().await.unwrap());
    assert_eq!(content(&evs), WORDS.concat());
    assert!(evs.iter().all(|e| e.get("unparsed").is_none()), "{evs:?}");
    assert_eq!((f.hits(), b.hits()), (1, 1));
    settles(&gw, &f).await;

    let (gw, f) = alone(Fault::GarbledStream, DEFAULT_TIMEOUTS, "").await;
    let v = error_of(post(&gw, &chat("f", true)).await, 502).await;
    assert!(v["error"]["message"].as_str().unwrap().contains("not JSON"), "{v}");
    settles(&gw, &f).await;
}
