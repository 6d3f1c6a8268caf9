//! The HTTP edge: routes, extraction, and mapping results to responses. Handlers stay
//! thin; the work happens in `dispatch`.

pub mod error;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::dispatch::{self, HEADER_REQUEST_ID};
use crate::state::AppState;
use crate::telemetry::prometheus;
use error::ApiError;

/// The whole HTTP API; tests call it with `oneshot`, `server` binds it to a socket.
pub fn app(state: Arc<AppState>) -> Router {
    let limit = state.max_body_bytes;
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::RouteNotFound })
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
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
    let mut resp = result.unwrap_or_else(IntoResponse::into_response);
    if let Ok(v) = HeaderValue::try_from(ulid::Ulid::new().to_string()) {
        resp.headers_mut().insert(HEADER_REQUEST_ID, v);
    }
    resp
}

async fn chat_completions(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = match body_or_error(body, state.max_body_bytes) {
        Ok(body) => dispatch::chat(&state, &headers, &body).await,
        Err(e) => Err(e),
    };
    with_request_id(result)
}

async fn embeddings(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = match body_or_error(body, state.max_body_bytes) {
        Ok(body) => dispatch::embeddings(&state, &headers, &body).await,
        Err(e) => Err(e),
    };
    with_request_id(result)
}

async fn models(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    let snap = state.snapshot.load();
    let experts = snap
        .experts()
        .iter()
        .map(|e| json!({"id": e.name(), "object": "model", "created": 0, "owned_by": "triage-expert"}));
    let virtuals = snap
        .virtual_models()
        .iter()
        .map(|m| json!({"id": m.name, "object": "model", "created": 0, "owned_by": "triage-router"}));
    Json(json!({"object": "list", "data": virtuals.chain(experts).collect::<Vec<_>>()}))
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

/// Prometheus scrape endpoint; 404 when telemetry is off (`OTEL_SDK_DISABLED=true`).
async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    match state.telemetry.render_prometheus() {
        Some(text) => {
            ([(header::CONTENT_TYPE, HeaderValue::from_static(prometheus::CONTENT_TYPE))], text).into_response()
        }
        None => ApiError::RouteNotFound.into_response(),
    }
}
