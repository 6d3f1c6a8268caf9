//! One chat or embeddings request from parsed body to response: route, try experts in
//! order with retries, backoff and circuit breakers, and shape the reply.

pub mod request;
pub mod sse;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use rand::Rng;

use crate::api::error::ApiError;
use crate::config::{Capability, Resilience};
use crate::experts::breaker::Admission;
use crate::experts::{CallOptions, Expert, ExpertError, Reply};
use crate::routing::{Decision, RouteError, Snapshot};
use crate::state::AppState;
use crate::telemetry::spans::TraceHeaders;
use crate::telemetry::{Attempt, Operation, RequestTelemetry};
use request::ChatRequest;

pub const HEADER_REQUEST_ID: &str = "x-triage-request-id";
pub const HEADER_EXPERT: &str = "x-triage-expert";
pub const HEADER_CATEGORY: &str = "x-triage-category";
pub const HEADER_CONFIDENCE: &str = "x-triage-confidence";

impl From<RouteError> for ApiError {
    fn from(e: RouteError) -> Self {
        match e {
            RouteError::UnknownModel(m) => ApiError::ModelNotFound(m),
        }
    }
}

/// Handles `POST /v1/chat/completions` after the body has been read.
pub async fn chat(state: &AppState, headers: &HeaderMap, body: &[u8]) -> Result<Response, ApiError> {
    let mut tel = state.telemetry.request(Operation::Chat, headers);
    let result = chat_traced(state, &mut tel, body).await;
    tel.finish(&result);
    result
}

async fn chat_traced(state: &AppState, tel: &mut RequestTelemetry, body: &[u8]) -> Result<Response, ApiError> {
    let mut req = ChatRequest::parse(body)?;
    tel.streaming(req.stream);
    tel.prompt(req.body.get("messages"));
    let snapshot = state.snapshot.load_full();
    let routing = Instant::now();
    let decision = snapshot.route(&req.model)?;
    tel.routed(&decision, routing, None);
    let strip_usage = req.stream && !req.include_usage;
    if strip_usage {
        // Usage is what the ledger and the metrics count; ask for it and hide it again.
        req.request_usage();
    }
    let opts = CallOptions { stream: req.stream };
    let (expert, reply, attempt) = attempt_all(&snapshot, &state.resilience, &decision, tel, |e, trace| {
        let body = &req.body;
        async move {
            if !e.config.supports(Capability::Chat) {
                return Err(ExpertError::Unavailable {
                    expert: e.name().to_string(),
                    detail: "does not declare chat".into(),
                });
            }
            e.chat(body, opts, &trace).await
        }
    })
    .await?;
    let mut resp = match reply {
        Reply::Json { body, usage } => {
            tel.answered(attempt.succeeded(Some(&body), usage));
            (StatusCode::OK, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body)
                .into_response()
        }
        Reply::Stream { events } => {
            let done = tel.streamed(attempt);
            let relay = sse::Relay::new(events, strip_usage, move |outcome| done.finish(&outcome));
            let mut r = Response::new(Body::from_stream(relay));
            let h = r.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            r
        }
    };
    decorate(resp.headers_mut(), &expert, &decision);
    Ok(resp)
}

/// Handles `POST /v1/embeddings`: only experts that declare embeddings take it.
pub async fn embeddings(state: &AppState, headers: &HeaderMap, body: &[u8]) -> Result<Response, ApiError> {
    let mut tel = state.telemetry.request(Operation::Embeddings, headers);
    let result = embeddings_traced(state, &mut tel, body).await;
    tel.finish(&result);
    result
}

async fn embeddings_traced(state: &AppState, tel: &mut RequestTelemetry, body: &[u8]) -> Result<Response, ApiError> {
    let req = request::EmbeddingsRequest::parse(body)?;
    let snapshot = state.snapshot.load_full();
    let Some(expert) = snapshot.expert(&req.model) else {
        return Err(ApiError::ModelNotFound(req.model));
    };
    if !expert.config.supports(Capability::Embeddings) {
        return Err(ApiError::Unsupported { model: req.model, what: "embeddings" });
    }
    let decision = Decision {
        model: req.model.clone(),
        experts: vec![req.model.clone()],
        category: None,
        confidence: None,
        reasons: vec![],
    };
    tel.routed(&decision, Instant::now(), None);
    let (expert, body, attempt) = attempt_all(&snapshot, &state.resilience, &decision, tel, |e, _trace| {
        let body = &req.body;
        async move { e.embeddings(body).await }
    })
    .await?;
    tel.answered(attempt.succeeded(Some(&body), crate::experts::remote::parse_usage(&body).ok().flatten()));
    let mut resp =
        (StatusCode::OK, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response();
    decorate(resp.headers_mut(), &expert, &decision);
    Ok(resp)
}

/// Tries the decision's experts in order, wrapping around for up to `max_attempts`
/// calls. Only errors that happen before anything reached the client come back here, so
/// a retry can never duplicate output. Breakers skip experts that keep failing.
async fn attempt_all<T, F, Fut>(
    snapshot: &Snapshot,
    resilience: &Resilience,
    decision: &Decision,
    tel: &RequestTelemetry,
    mut call: F,
) -> Result<(Arc<Expert>, T, Attempt), ApiError>
where
    F: FnMut(Arc<Expert>, TraceHeaders) -> Fut,
    Fut: std::future::Future<Output = Result<T, ExpertError>>,
{
    let candidates: Vec<Arc<Expert>> = decision.experts.iter().filter_map(|n| snapshot.expert(n).cloned()).collect();
    let mut last_error = None;
    let mut attempts = 0u32;
    let mut tried = vec![0u32; candidates.len()];
    let max_picks = candidates.len() * resilience.max_attempts as usize;
    for pick in 0..max_picks {
        if attempts >= resilience.max_attempts {
            break;
        }
        let i = pick % candidates.len();
        let expert = &candidates[i];
        if expert.breaker.admit() == Admission::Open {
            tel.fallback(expert.name(), "breaker_open");
            continue;
        }
        if tried[i] > 0 {
            // Coming back to an expert that already failed: give it a moment.
            tokio::time::sleep(backoff(resilience, tried[i])).await;
        }
        tried[i] += 1;
        attempts += 1;
        let attempt = tel.attempt(expert, attempts);
        match call(expert.clone(), attempt.trace_headers().to_vec()).await {
            Ok(out) => {
                expert.breaker.record_success();
                return Ok((expert.clone(), out, attempt));
            }
            Err(e) if e.retryable() => {
                tracing::warn!(error = %e, expert = %expert.name(), attempt = attempts, "Expert call failed; trying the next.");
                expert.breaker.record_failure();
                attempt.failed(&e);
                tel.fallback(expert.name(), e.kind());
                last_error = Some(e);
            }
            Err(e) => {
                // The backend is healthy; it judged the request itself.
                expert.breaker.record_success();
                attempt.failed(&e);
                return Err(ApiError::Upstream(e));
            }
        }
    }
    Err(match last_error {
        Some(e) => ApiError::Upstream(e),
        None => ApiError::NoExpertAvailable(decision.model.clone()),
    })
}

/// Exponential backoff with full jitter (the AWS Architecture Blog's recommendation):
/// spreads retries of many clients instead of synchronizing them.
fn backoff(r: &Resilience, previous_tries: u32) -> Duration {
    let exp = r.backoff_base.saturating_mul(1u32 << previous_tries.min(16)).min(r.backoff_max);
    let ms = exp.as_millis() as u64;
    Duration::from_millis(rand::rng().random_range(0..=ms))
}

fn decorate(h: &mut HeaderMap, expert: &Expert, decision: &Decision) {
    if let Ok(v) = HeaderValue::try_from(expert.name()) {
        h.insert(HEADER_EXPERT, v);
    }
    if let Some(c) = decision.category.as_deref().and_then(|c| HeaderValue::try_from(c).ok()) {
        h.insert(HEADER_CATEGORY, c);
    }
    if let Some(p) = decision.confidence {
        if let Ok(v) = HeaderValue::try_from(format!("{p:.3}")) {
            h.insert(HEADER_CONFIDENCE, v);
        }
    }
}
