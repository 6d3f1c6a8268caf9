//! The HTTP edge: routes, extraction, and mapping results to responses. Handlers stay
//! thin; the work happens in `dispatch`.

pub mod admin;
pub mod error;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Extension;
use axum::{Json, Router};
use serde_json::json;

use crate::auth::{Principal, Refusal};
use crate::config::Capability;
use crate::dispatch::request::Endpoint;
use crate::dispatch::{self, HEADER_REQUEST_ID};
use crate::state::AppState;
use crate::telemetry::prometheus;
use error::ApiError;

/// The whole HTTP API; tests call it with `oneshot`, `server` binds it to a socket.
pub fn app(state: Arc<AppState>) -> Router {
    let limit = state.max_body_bytes;
    Router::new()
        .route("/v1/chat/completions", post(generate::<false>))
        .route("/v1/completions", post(generate::<true>))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/models", get(models))
        // A wildcard: expert names may hold a `/` (`org/model`), as OpenAI-style ids do.
        .route("/v1/models/{*model}", get(model))
        .route("/v1/route", post(admin::route))
        .route("/admin/policies", get(admin::policies))
        .route("/admin/reload", post(admin::reload))
        .route("/admin/experts", get(admin::experts))
        .route("/health", get(health))
        .route("/ready", get(ready))
        // --- ledger routes (logic in src/ledger/http.rs) ---
        .route("/v1/feedback", post(feedback))
        .route("/admin/stats", get(admin_stats))
        .route("/metrics", get(metrics))
        // --- virtual API keys (logic in src/auth/) ---
        .route("/admin/keys", post(admin::create_key).get(admin::list_keys))
        .route("/admin/keys/{name}", axum::routing::delete(admin::revoke_key))
        .fallback(|| async { ApiError::RouteNotFound })
        .method_not_allowed_fallback(|method: axum::http::Method, uri: axum::http::Uri| async move {
            ApiError::MethodNotAllowed { method: method.to_string(), path: uri.path().to_string() }
        })
        .layer(DefaultBodyLimit::max(limit))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(state.limits.body_read_timeout))
        // Outermost: header limits and credentials are checked before anything else runs,
        // on every route including the fallback.
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// What answers while `serve` loads experts and routers (see [`crate::server::serve_loading`]):
/// the process is alive (`/health`), not ready (`/ready`: 503 `loading`), and every other
/// call gets an OpenAI-shaped 503 with `Retry-After`, which OpenAI's SDKs retry on their own.
/// Nothing here reads a credential or a body: nothing is served that needs one.
pub fn loading_app() -> Router {
    let not_ready = || async { (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "loading"}))) };
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(not_ready))
        .fallback(|| async { with_request_id(Err(ApiError::Loading)) })
}

/// Checks header size and the credential the path needs; a client key travels on to the
/// handlers as a [`Principal`] extension. Counts the request in flight until its response
/// body is finished or dropped.
async fn guard(State(state): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let held = state.load.request();
    let started = std::time::Instant::now();
    let mut resp = match admit(&state, &mut req) {
        Ok(()) => next.run(req).await,
        Err(refusal) => refused(&state, refusal, endpoint_of(req.uri().path()), started).await,
    };
    // The chat and embeddings handlers set the id their ledger record carries; every other
    // response (models, health, a 404 or 405) gets one here, so each can be quoted.
    if !resp.headers().contains_key(HEADER_REQUEST_ID) {
        resp = with_request_id(Ok(resp));
    }
    let (parts, body) = resp.into_parts();
    Response::from_parts(parts, axum::body::Body::new(Counted { body, _held: held }))
}

/// A response body that holds its request's count in flight until it is finished or
/// dropped; size hint (so `Content-Length`) and end of stream are the inner body's.
struct Counted {
    body: axum::body::Body,
    _held: crate::server::Held,
}

impl axum::body::HttpBody for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// Answers a refused request, and records it: a gateway that never loses a log line logs
/// the requests it turns away too (with the key and tenant when the key was valid).
async fn refused(state: &AppState, refusal: Refusal, endpoint: &str, started: std::time::Instant) -> Response {
    let id = ulid::Ulid::new();
    if let Some(ledger) = &state.ledger {
        let mut rec = crate::ledger::Record::with_id(id, "");
        rec.endpoint = endpoint.to_string();
        rec.status = refusal.error.status().as_u16();
        rec.error = Some(refusal.error.label().to_string());
        rec.latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        if let Some(key) = &refusal.key {
            rec.api_key = Some(key.spec.name.clone());
            rec.tenant = Some(key.tenant().to_string());
        }
        if let Err(rec) = ledger.try_record(rec) {
            ledger.record(rec).await;
        }
    }
    with_id(Err(refusal.error), id)
}

/// The ledger's `endpoint` for a request path: the capability its route needs ([`app`]'s
/// model routes), empty for any other path.
fn endpoint_of(path: &str) -> &'static str {
    match path {
        "/v1/chat/completions" => Capability::Chat.name(),
        "/v1/completions" => Capability::Completions.name(),
        "/v1/embeddings" => Capability::Embeddings.name(),
        _ => "",
    }
}

fn admit(state: &AppState, req: &mut Request) -> Result<(), Refusal> {
    // Name, value, ": " and CRLF: the size the client actually sent.
    let header_bytes: usize = req.headers().iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
    if header_bytes > state.limits.max_header_bytes {
        return Err(ApiError::HeadersTooLarge { limit: state.limits.max_header_bytes, got: header_bytes }.into());
    }
    if let Some(auth) = &state.auth {
        if let Some(principal) = auth.authenticate(req.uri().path(), req.headers())? {
            req.extensions_mut().insert(principal);
        }
    }
    Ok(())
}

/// Reads the body, mapping the size limit to OpenAI's error shape.
fn body_or_error(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::BodyTooLarge { limit },
        _ => ApiError::InvalidRequest { message: format!("Could not read the request body: {rejection}"), param: None },
    })
}

/// Every API response, errors included, carries a request id to quote in a bug report.
fn with_request_id(result: Result<Response, ApiError>) -> Response {
    with_id(result, ulid::Ulid::new())
}

/// The same, with the id the ledger record carries.
fn with_id(result: Result<Response, ApiError>, id: ulid::Ulid) -> Response {
    let mut resp = result.unwrap_or_else(IntoResponse::into_response);
    if let Ok(v) = HeaderValue::try_from(id.to_string()) {
        resp.headers_mut().insert(HEADER_REQUEST_ID, v);
    }
    resp
}

/// `POST /v1/chat/completions`, and with `COMPLETIONS` `POST /v1/completions` (OpenAI's
/// legacy text completions, routed and relayed as chat is).
async fn generate<const COMPLETIONS: bool>(
    State(state): State<Arc<AppState>>,
    principal: Option<Extension<Principal>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let endpoint = if COMPLETIONS { Endpoint::Completions } else { Endpoint::Chat };
    let id = ulid::Ulid::new();
    let principal = principal.map(|Extension(p)| p);
    let body = body_or_error(body, state.max_body_bytes);
    with_id(dispatch::chat(&state, id, endpoint, &headers, principal.as_ref(), body).await, id)
}

async fn embeddings(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    principal: Option<Extension<Principal>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let id = ulid::Ulid::new();
    let principal = principal.map(|Extension(p)| p);
    let body = body_or_error(body, state.max_body_bytes);
    with_id(dispatch::embeddings(&state, id, &headers, principal.as_ref(), body).await, id)
}

/// Lists what the caller may use: a key restricted to some models sees only those.
/// The models a caller may use, as OpenAI's model objects: virtual models first.
fn model_objects(state: &AppState, principal: Option<&Principal>) -> Vec<serde_json::Value> {
    let snap = state.snapshot.load();
    let allowed = |name: &str| principal.is_none_or(|p| p.key.allows_model(name));
    let object = |id: &str, owned_by: &str| json!({"id": id, "object": "model", "created": 0, "owned_by": owned_by});
    let virtuals = snap.virtual_models().iter().filter(|m| allowed(&m.name)).map(|m| object(&m.name, "triage-router"));
    let experts = snap.experts().iter().filter(|e| allowed(e.name())).map(|e| object(e.name(), "triage-expert"));
    virtuals.chain(experts).collect()
}

async fn models(
    State(state): State<Arc<AppState>>,
    principal: Option<Extension<Principal>>,
) -> Json<serde_json::Value> {
    let data = model_objects(&state, principal.as_ref().map(|Extension(p)| p));
    Json(json!({"object": "list", "data": data}))
}

/// `GET /v1/models/{model}` (the SDKs' `models.retrieve`). A model the caller's key may
/// not use is not found, as on OpenAI.
async fn model(
    State(state): State<Arc<AppState>>,
    principal: Option<Extension<Principal>>,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = id.map(|Path(id)| id).map_err(|rejection| ApiError::InvalidRequest {
        message: format!("Invalid model id in the path: {rejection}"),
        param: Some("model".into()),
    })?;
    let id = id.strip_prefix('/').unwrap_or(&id);
    model_objects(&state, principal.as_ref().map(|Extension(p)| p))
        .into_iter()
        .find(|m| m["id"] == id)
        .map(Json)
        .ok_or_else(|| ApiError::ModelNotFound(id.to_string()))
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn ready(State(state): State<Arc<AppState>>) -> (StatusCode, Json<serde_json::Value>) {
    if state.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "draining"})))
    } else {
        (StatusCode::OK, Json(json!({"status": "ready"})))
    }
}

// --- ledger handlers ---

fn ledger_of(state: &AppState) -> Result<&crate::ledger::Ledger, ApiError> {
    state.ledger.as_ref().ok_or(ApiError::LedgerDisabled)
}

async fn feedback(State(state): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    let result = body_or_error(body, state.max_body_bytes)
        .and_then(|body| crate::ledger::http::feedback(ledger_of(&state)?, &body))
        .map(|ack| Json(ack).into_response());
    with_request_id(result)
}

async fn admin_stats(
    State(state): State<Arc<AppState>>,
    query: Result<axum::extract::Query<crate::ledger::http::StatsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let result = async {
        let axum::extract::Query(q) =
            query.map_err(|e| ApiError::InvalidRequest { message: e.body_text(), param: None })?;
        let report = crate::ledger::http::stats(ledger_of(&state)?, q).await?;
        Ok(Json(report).into_response())
    };
    with_request_id(result.await)
}

/// Prometheus scrape endpoint; 404 when telemetry is off (`OTEL_SDK_DISABLED=true`).
async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    state.telemetry.settled().await;
    match state.telemetry.render_prometheus() {
        Some(mut text) => {
            server_gauges(&mut text, &state.load);
            ([(header::CONTENT_TYPE, HeaderValue::from_static(prometheus::CONTENT_TYPE))], text).into_response()
        }
        None => ApiError::RouteNotFound.into_response(),
    }
}

/// The gauges a leak would grow, read at scrape time: open client connections, requests in
/// flight (this scrape included) and the tokio runtime's live tasks.
fn server_gauges(text: &mut String, load: &crate::server::Load) {
    use std::fmt::Write;
    let tasks = tokio::runtime::Handle::try_current().map_or(0, |h| h.metrics().num_alive_tasks());
    for (name, help, value) in [
        ("triage_server_open_connections", "Client connections open.", load.connections()),
        ("triage_server_requests_in_flight", "Requests whose response has not finished.", load.requests()),
        ("triage_runtime_alive_tasks", "Tasks alive in the gateway's tokio runtime.", tasks),
    ] {
        let _ = write!(text, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n");
    }
}
