//! The HTTP edge: routes, extraction, and mapping results to responses. Handlers stay
//! thin; the work happens in `dispatch`.

pub mod admin;
pub mod error;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::dispatch::{self, HEADER_REQUEST_ID};
use crate::state::AppState;
use error::ApiError;

/// The whole HTTP API; tests call it with `oneshot`, `server` binds it to a socket.
pub fn app(state: Arc<AppState>) -> Router {
    let limit = state.max_body_bytes;
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/models", get(models))
        .route("/v1/route", post(admin::route))
        .route("/admin/policies", get(admin::policies))
        .route("/admin/reload", post(admin::reload))
        .route("/admin/experts", get(admin::experts))
        .route("/health", get(health))
        .route("/ready", get(ready))
        // --- ledger routes (logic in src/ledger/http.rs) ---
        .route("/v1/feedback", post(feedback))
        .route("/admin/stats", get(admin_stats))
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

async fn chat_completions(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let id = ulid::Ulid::new();
    with_id(dispatch::chat(&state, id, &headers, body_or_error(body, state.max_body_bytes)).await, id)
}

async fn embeddings(State(state): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    let id = ulid::Ulid::new();
    with_id(dispatch::embeddings(&state, id, body_or_error(body, state.max_body_bytes)).await, id)
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
