//! An in-process OpenAI-compatible backend with scripted failures.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behavior {
    /// Answers correctly (JSON or SSE).
    Ok,
    /// HTTP 500 with an OpenAI-shaped body.
    ServerError,
    /// HTTP 429 with `Retry-After: 7`.
    RateLimited,
    /// HTTP 400 with an OpenAI-shaped body (a client error the gateway must not retry).
    BadRequest,
    /// Never answers.
    Hang,
    /// 200 with a body that is not JSON.
    MalformedJson,
    /// Streams two content events, then drops the connection.
    ResetMidStream,
    /// Status 200 with an error object: the whole JSON body, or a stream's only event
    /// before `[DONE]` (as vLLM reports a failure that happened after the head was sent).
    ErrorWith200,
    /// HTTP 400 with older vLLM's body, `{"object":"error","message":...}`, not OpenAI's shape.
    VllmBadRequest,
    /// Status 200 with an error object whose `code` is 400 (vLLM, for a request it finds bad
    /// only while generating): the whole JSON body, or a stream's only event.
    ClientErrorWith200,
}

pub struct Mock {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    pub bodies: Arc<Mutex<Vec<Value>>>,
    pub headers: Arc<Mutex<Vec<HeaderMap>>>,
    behavior: Arc<Mutex<Behavior>>,
}

#[derive(Clone)]
struct MockState {
    hits: Arc<AtomicUsize>,
    bodies: Arc<Mutex<Vec<Value>>>,
    headers: Arc<Mutex<Vec<HeaderMap>>>,
    behavior: Arc<Mutex<Behavior>>,
    name: &'static str,
}

/// The words the mock streams, one per event.
pub const WORDS: [&str; 4] = ["Hello", " from", " the", " mock"];

impl Mock {
    pub async fn start(name: &'static str, behavior: Behavior) -> Mock {
        let state = MockState {
            hits: Arc::default(),
            bodies: Arc::default(),
            headers: Arc::default(),
            behavior: Arc::new(Mutex::new(behavior)),
            name,
        };
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/completions", post(completions))
            .route("/v1/embeddings", post(embeddings))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Mock { addr, hits: state.hits, bodies: state.bodies, headers: state.headers, behavior: state.behavior }
    }

    pub fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn set(&self, b: Behavior) {
        *self.behavior.lock().unwrap() = b;
    }

    pub fn last_body(&self) -> Value {
        self.bodies.lock().unwrap().last().cloned().expect("the mock received a request")
    }
}

/// The failure `state`'s behaviour calls for, if any; `stream`: the request asked for SSE.
async fn fail(state: &MockState, stream: bool) -> Option<Response> {
    let behavior = *state.behavior.lock().unwrap();
    let err = |status: StatusCode, msg: &str| {
        (
            status,
            [("content-type", "application/json")],
            json!({"error": {"message": msg, "type": "mock_error", "param": null, "code": null}}).to_string(),
        )
            .into_response()
    };
    match behavior {
        Behavior::Ok | Behavior::ResetMidStream => None,
        Behavior::ServerError => Some(err(StatusCode::INTERNAL_SERVER_ERROR, "mock exploded")),
        Behavior::BadRequest => Some(err(StatusCode::BAD_REQUEST, "mock says the request is bad")),
        Behavior::RateLimited => {
            let mut r = err(StatusCode::TOO_MANY_REQUESTS, "slow down");
            r.headers_mut().insert("retry-after", "7".parse().unwrap());
            Some(r)
        }
        Behavior::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            None
        }
        Behavior::MalformedJson => Some(
            (StatusCode::OK, [("content-type", "application/json")], "{\"id\": \"x\", \"choices\": [").into_response(),
        ),
        Behavior::VllmBadRequest => Some(
            (
                StatusCode::BAD_REQUEST,
                [("content-type", "application/json")],
                json!({"object": "error", "message": "This model's maximum context length is 2048 tokens.",
                       "type": "BadRequestError", "code": 400})
                .to_string(),
            )
                .into_response(),
        ),
        Behavior::ErrorWith200 | Behavior::ClientErrorWith200 => {
            let error = if behavior == Behavior::ErrorWith200 {
                json!({"error": {"message": "engine died", "type": "internal_error", "code": 500}})
            } else {
                json!({"error": {"message": "bad guided_json schema", "type": "BadRequestError", "param": null, "code": 400}})
            };
            if stream {
                let body = format!("data: {error}\n\ndata: [DONE]\n\n");
                return Some(([("content-type", "text/event-stream")], body).into_response());
            }
            Some(([("content-type", "application/json")], error.to_string()).into_response())
        }
    }
}

async fn chat(State(state): State<MockState>, headers: HeaderMap, body: Bytes) -> Response {
    generate(state, headers, body, false).await
}

/// `POST /v1/completions`: the same words as `text_completion` objects (vLLM's shapes).
async fn completions(State(state): State<MockState>, headers: HeaderMap, body: Bytes) -> Response {
    generate(state, headers, body, true).await
}

async fn generate(state: MockState, headers: HeaderMap, body: Bytes, text: bool) -> Response {
    state.hits.fetch_add(1, Ordering::SeqCst);
    let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    state.bodies.lock().unwrap().push(req.clone());
    state.headers.lock().unwrap().push(headers);
    if let Some(r) = fail(&state, req["stream"].as_bool() == Some(true)).await {
        return r;
    }
    let model = req["model"].as_str().unwrap_or("").to_string();
    let usage = json!({"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15});
    if req["stream"].as_bool() != Some(true) && text {
        let body = json!({
            "id": "cmpl-mock", "object": "text_completion", "created": 1, "model": model,
            "choices": [{"index": 0, "text": WORDS.concat(), "logprobs": null, "finish_reason": "stop"}],
            "usage": usage,
        });
        return ([("content-type", "application/json")], body.to_string()).into_response();
    }
    if req["stream"].as_bool() != Some(true) {
        let body = json!({
            "id": "chatcmpl-mock", "object": "chat.completion", "created": 1, "model": model,
            "system_fingerprint": state.name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": WORDS.concat()}, "finish_reason": "stop"}],
            "usage": usage,
        });
        return ([("content-type", "application/json")], body.to_string()).into_response();
    }
    let include_usage = req["stream_options"]["include_usage"].as_bool() == Some(true);
    let reset = *state.behavior.lock().unwrap() == Behavior::ResetMidStream;
    let mut events = Vec::new();
    if text {
        let chunk = |t: &str, finish: Value| {
            json!({"id": "cmpl-mock", "object": "text_completion", "created": 1, "model": model,
                   "choices": [{"index": 0, "text": t, "logprobs": null, "finish_reason": finish}]})
        };
        events.extend(WORDS.iter().map(|w| chunk(w, Value::Null)));
        events.push(chunk("", json!("stop")));
    } else {
        let chunk = |delta: Value, finish: Value| {
            json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1, "model": model,
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        };
        events.push(chunk(json!({"role": "assistant", "content": ""}), Value::Null));
        events.extend(WORDS.iter().map(|w| chunk(json!({"content": w}), Value::Null)));
        events.push(chunk(json!({}), json!("stop")));
    }
    if include_usage {
        let object = if text { "text_completion" } else { "chat.completion.chunk" };
        events
            .push(json!({"id": "mock", "object": object, "created": 1, "model": model, "choices": [], "usage": usage}));
    }
    let stream = async_stream(events, reset);
    Response::builder().header("content-type", "text/event-stream").body(Body::from_stream(stream)).unwrap()
}

/// Sends each event 5 ms apart, so a test can tell streaming from buffering.
fn async_stream(events: Vec<Value>, reset: bool) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    futures::stream::unfold((events.into_iter(), 0usize, false), move |(mut it, n, done)| async move {
        if done {
            return None;
        }
        if n > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if reset && n == 3 {
            return Some((
                Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "mock reset")),
                (it, n + 1, true),
            ));
        }
        match it.next() {
            Some(ev) => Some((Ok(Bytes::from(format!("data: {ev}\n\n"))), (it, n + 1, false))),
            None => Some((Ok(Bytes::from_static(b"data: [DONE]\n\n")), (it, n + 1, true))),
        }
    })
}

async fn embeddings(State(state): State<MockState>, headers: HeaderMap, body: Bytes) -> Result<Response, Infallible> {
    state.hits.fetch_add(1, Ordering::SeqCst);
    let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    state.bodies.lock().unwrap().push(req.clone());
    state.headers.lock().unwrap().push(headers);
    if let Some(r) = fail(&state, false).await {
        return Ok(r);
    }
    let n = req["input"].as_array().map_or(1, Vec::len);
    let data: Vec<Value> =
        (0..n).map(|i| json!({"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]})).collect();
    let body = json!({"object": "list", "data": data, "model": req["model"], "usage": {"prompt_tokens": 3, "total_tokens": 3}});
    Ok(([("content-type", "application/json")], body.to_string()).into_response())
}

/// Faults below HTTP that a framework would not produce on request: a raw TCP backend that
/// reads one request per connection and then misbehaves. Every answer it does give says
/// `Connection: close` and is close-delimited, so no connection is legitimately pooled and
/// [`FaultServer::open`] must return to zero once the gateway lets go of each connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Reads the request, then resets the connection (RST) without a byte of answer.
    Reset,
    /// Reads the request and never answers; holds the connection until the gateway closes it.
    Hang,
    /// A valid SSE answer whose content events come `gap` apart.
    SlowStream { gap: Duration },
    /// Two content events, then a clean close (FIN): no finish_reason, no `[DONE]`.
    TruncatedStream,
    /// 200 `text/event-stream` whose first event is not JSON.
    GarbledStream,
    /// The SSE head after `each`, the first event `each` later, then the rest at once.
    SlowHeadThenSlowEvent { each: Duration },
}

pub struct FaultServer {
    pub addr: SocketAddr,
    /// Requests read.
    pub hits: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
}

/// Counts a connection open until its task ends, however it ends.
struct OpenGuard(Arc<AtomicUsize>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl FaultServer {
    pub async fn start(fault: Fault) -> FaultServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (hits, open) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (h, o) = (hits.clone(), open.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                o.fetch_add(1, Ordering::SeqCst);
                let guard = OpenGuard(o.clone());
                let h = h.clone();
                tokio::spawn(async move {
                    let _guard = guard;
                    serve_fault(tcp, fault, &h).await;
                });
            }
        });
        FaultServer { addr, hits, open }
    }

    pub fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Connections the gateway has not closed yet.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

/// Reads one request (head and `Content-Length` body: closing with unread bytes would
/// turn every fault into a reset). None if the peer went away first.
async fn read_request(tcp: &mut tokio::net::TcpStream) -> Option<Value> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = tcp.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let len: usize =
        head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
    while buf.len() < head_end + len {
        let n = tcp.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(serde_json::from_slice(&buf[head_end..head_end + len]).unwrap_or(Value::Null))
}

const SSE_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";

fn sse_chunk(delta: Value, finish: Value) -> Vec<u8> {
    let c = json!({"id": "chatcmpl-fault", "object": "chat.completion.chunk", "created": 1, "model": "fault",
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
    format!("data: {c}\n\n").into_bytes()
}

async fn serve_fault(mut tcp: tokio::net::TcpStream, fault: Fault, hits: &AtomicUsize) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if read_request(&mut tcp).await.is_none() {
        return;
    }
    hits.fetch_add(1, Ordering::SeqCst);
    if fault == Fault::Reset {
        // Dropped with a zero linger, the socket is reset (RST), not closed (FIN).
        let _ = tcp.set_zero_linger();
        return;
    }
    let (mut rd, mut wr) = tcp.into_split();
    // Whatever the fault, the connection's end is the gateway's call: a read of 0 bytes
    // (or an error) means it closed, and the task ends with the guard.
    let peer_closed = async move {
        let mut b = [0u8; 64];
        while matches!(rd.read(&mut b).await, Ok(n) if n > 0) {}
    };
    let act = async {
        match fault {
            Fault::Reset => {} // Handled above.
            Fault::Hang => std::future::pending::<()>().await,
            Fault::SlowStream { gap } => {
                let mut out = SSE_HEAD.to_vec();
                out.extend(sse_chunk(json!({"role": "assistant", "content": ""}), Value::Null));
                if wr.write_all(&out).await.is_err() {
                    return;
                }
                for w in WORDS {
                    tokio::time::sleep(gap).await;
                    if wr.write_all(&sse_chunk(json!({"content": w}), Value::Null)).await.is_err() {
                        return;
                    }
                }
                let mut end = sse_chunk(json!({}), json!("stop"));
                end.extend_from_slice(b"data: [DONE]\n\n");
                let _ = wr.write_all(&end).await;
                let _ = wr.shutdown().await;
            }
            Fault::TruncatedStream => {
                let mut out = SSE_HEAD.to_vec();
                out.extend(sse_chunk(json!({"role": "assistant", "content": ""}), Value::Null));
                out.extend(sse_chunk(json!({"content": WORDS[0]}), Value::Null));
                out.extend(sse_chunk(json!({"content": WORDS[1]}), Value::Null));
                let _ = wr.write_all(&out).await;
                let _ = wr.shutdown().await;
            }
            Fault::SlowHeadThenSlowEvent { each } => {
                tokio::time::sleep(each).await;
                if wr.write_all(SSE_HEAD).await.is_err() {
                    return;
                }
                tokio::time::sleep(each).await;
                let mut out = sse_chunk(json!({"role": "assistant", "content": ""}), Value::Null);
                out.extend(sse_chunk(json!({"content": WORDS.concat()}), json!("stop")));
                out.extend_from_slice(b"data: [DONE]\n\n");
                let _ = wr.write_all(&out).await;
                let _ = wr.shutdown().await;
            }
            Fault::GarbledStream => {
                let mut out = SSE_HEAD.to_vec();
                out.extend_from_slice(b"data: {\"choices\": [{\"delta\": <html>oops</html>\n\n");
                let _ = wr.write_all(&out).await;
                let _ = wr.shutdown().await;
            }
        }
    };
    tokio::pin!(peer_closed);
    tokio::select! {
        _ = &mut peer_closed => {}
        () = act => {
            // Answered (or failed to): wait until the gateway closes its end.
            let _ = tokio::time::timeout(Duration::from_secs(30), peer_closed).await;
        }
    }
}
