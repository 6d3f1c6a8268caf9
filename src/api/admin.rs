//! Operator endpoints: policy status and reload, routing explanations.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::error::ApiError;
use super::{body_or_error, with_request_id};
use crate::dispatch::request::ChatRequest;
use crate::reload;
use crate::state::AppState;

/// `GET /admin/policies`: the active version, when it was loaded, and the last rejected edit.
pub async fn policies(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    let status = state.policy_status.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    let snap = state.snapshot.load();
    let models: Vec<_> = snap
        .virtual_models()
        .iter()
        .map(|m| {
            json!({
                "name": m.name, "file": m.file,
                "router": m.router.as_ref().map(|r| match r {
                    crate::config::RouterRef::Trained { name, .. } => name.clone(),
                    crate::config::RouterRef::Centroid { .. } => "centroid".to_string(),
                }),
                "experts": m.experts, "fallback": m.fallback, "categories": m.categories,
            })
        })
        .collect();
    Json(json!({"status": status, "models": models}))
}

/// `GET /admin/experts`: every expert; local ones with their tier, bytes, last use, load
/// times and queue depth.
pub async fn experts(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    Json(crate::tiers::report(&state.snapshot.load()))
}

/// `POST /admin/reload`: 200 with the new version, or 422 with the validation error
/// (the previous version keeps serving).
pub async fn reload(State(state): State<Arc<AppState>>) -> Response {
    match reload::reload(&state, "admin api").await {
        Ok(r) => Json(r).into_response(),
        Err(e) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"error": {"message": e, "type": "invalid_request_error", "param": null, "code": "invalid_config"}})),
        )
            .into_response(),
    }
}

/// `POST /v1/route`: explains the routing decision for a chat request (or a text
/// completion's, a body with `prompt` and no `messages`) without calling any expert.
pub async fn route(State(state): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    let result = async {
        let body = body_or_error(body, state.max_body_bytes)?;
        let req = ChatRequest::parse_either(&body)?;
        let snapshot = state.snapshot.load_full();
        let decision =
            snapshot.route(&req.model, || req.routing_text(), req.prompt_hash()).await.map_err(ApiError::from)?;
        let decision = crate::dispatch::serving(&snapshot, decision, req.endpoint)?;
        Ok::<_, ApiError>(Json(decision).into_response())
    }
    .await;
    with_request_id(result)
}

fn keys_of(state: &AppState) -> Result<&crate::auth::KeyStore, ApiError> {
    state.auth.as_ref().map(|a| &a.store).ok_or_else(|| ApiError::InvalidRequest {
        message: "Authentication is off on this gateway: there are no API keys to manage.".into(),
        param: None,
    })
}

/// `POST /admin/keys`: creates a key; the response is the only place its secret appears.
pub async fn create_key(State(state): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    let result = body_or_error(body, state.max_body_bytes).and_then(|body| {
        let spec: crate::auth::KeySpec = serde_json::from_slice(&body).map_err(|e| ApiError::InvalidRequest {
            message: format!("Invalid key specification: {e}."),
            param: None,
        })?;
        let (secret, info) = keys_of(&state)?.create(spec)?;
        tracing::info!(key = %info.spec.name, tenant = %info.tenant(), "API key created.");
        Ok((StatusCode::CREATED, Json(json!({"object": "api_key", "secret": secret.expose(), "key": info})))
            .into_response())
    });
    with_request_id(result)
}

/// `GET /admin/keys`: every key without secrets.
pub async fn list_keys(State(state): State<Arc<AppState>>) -> Response {
    let result = keys_of(&state)
        .and_then(|k| Ok(k.list()?))
        .map(|keys| Json(json!({"object": "list", "data": keys})).into_response());
    with_request_id(result)
}

/// `DELETE /admin/keys/{name}`: revokes a key at once (the next request with it gets 401).
pub async fn revoke_key(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Response {
    let result = keys_of(&state).and_then(|k| Ok(k.revoke(&name)?)).map(|info| {
        tracing::info!(key = %info.spec.name, "API key revoked.");
        Json(json!({"object": "api_key", "key": info})).into_response()
    });
    with_request_id(result)
}
