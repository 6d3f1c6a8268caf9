//! One chat, text-completion or embeddings request from parsed body to response: route,
//! try experts in order with retries, backoff and circuit breakers, and shape the reply.

pub mod request;
pub mod sse;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use rand::Rng;
use ulid::Ulid;

use crate::api::error::ApiError;
use crate::auth::{Charge, Principal};
use crate::config::{Capability, Resilience};
use crate::experts::breaker::Admission;
use crate::experts::{CallOptions, Expert, ExpertError, Reply};
use crate::ledger::Record;
use crate::routing::{Decision, RouteError, Snapshot};
use crate::state::AppState;
use crate::telemetry::spans::TraceHeaders;
use crate::telemetry::{Attempt, Operation, RequestTelemetry};
use request::{ChatRequest, Endpoint};

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

/// Handles `POST /v1/chat/completions` and, with [`Endpoint::Completions`], `POST
/// /v1/completions`. Every outcome, success or failure, becomes a ledger record with the
/// same id as the `x-triage-request-id` header.
pub async fn chat(
    state: &AppState,
    id: Ulid,
    endpoint: Endpoint,
    headers: &HeaderMap,
    principal: Option<&Principal>,
    body: Result<Bytes, ApiError>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let mut pending = Pending::new(state, record_for(id, principal, endpoint.capability()), started);
    let op = match endpoint {
        Endpoint::Chat => Operation::Chat,
        Endpoint::Completions => Operation::TextCompletion,
    };
    let mut tel = state.telemetry.request(op, headers);
    let parsed = body.and_then(|body| match endpoint {
        Endpoint::Chat => ChatRequest::parse(&body),
        Endpoint::Completions => ChatRequest::parse_completion(&body),
    });
    let result = match parsed {
        Ok(req) => chat_inner(state, &mut tel, principal, req, &mut pending.rec, &mut pending.charge, started).await,
        Err(e) => Err(e),
    };
    tel.finish(&result);
    match &result {
        // A stream's record is completed (and its charge settled) by the relay when it ends.
        Ok((_, true)) => pending.handed_over(),
        Ok((resp, false)) => pending.complete(resp.status().as_u16(), None).await,
        Err(e) => pending.complete(e.status().as_u16(), Some(e.label())).await,
    }
    result.map(|(resp, _)| resp)
}

/// A request's record and charge while its outcome is unknown. When the client hangs up
/// before the answer (the handler's future is dropped while it waits on an expert), its
/// drop still writes the record, as `499 client_disconnect`, and settles the charge:
/// a request is never missing from the ledger for having been abandoned.
struct Pending<'a> {
    state: &'a AppState,
    rec: Record,
    charge: Option<Charge>,
    started: Instant,
    taken: bool,
}

impl<'a> Pending<'a> {
    fn new(state: &'a AppState, rec: Record, started: Instant) -> Self {
        Self { state, rec, charge: None, started, taken: false }
    }

    /// The outcome is known: settles the charge and writes the record, waiting for room in
    /// the ledger's channel if it is full. Should the client hang up during that wait, the
    /// drop writes the record (as a disconnect: the response was never sent).
    async fn complete(&mut self, status: u16, error: Option<&str>) {
        self.rec.status = status;
        self.rec.error = error.map(str::to_string);
        self.rec.latency_ms = ms(self.started.elapsed());
        settle(self.charge.take().as_ref(), &self.rec);
        let Some(ledger) = &self.state.ledger else {
            self.taken = true;
            return;
        };
        match ledger.try_record(std::mem::take(&mut self.rec)) {
            Ok(()) => self.taken = true,
            Err(rec) => {
                self.rec = rec;
                // Cancel-safe: a send cancelled by a drop has not sent.
                ledger.record(self.rec.clone()).await;
                self.taken = true;
            }
        }
    }

    /// A stream's relay completes the record and settles the charge when it ends.
    fn handed_over(&mut self) {
        self.taken = true;
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if self.taken {
            return;
        }
        let mut rec = std::mem::take(&mut self.rec);
        rec.status = crate::ledger::STATUS_CLIENT_CLOSED;
        rec.error = Some("client_disconnect".into());
        rec.latency_ms = ms(self.started.elapsed());
        settle(self.charge.take().as_ref(), &rec);
        if let Some(ledger) = &self.state.ledger {
            submit_detached(ledger, rec);
        }
    }
}

/// A record that names the endpoint, and the key and tenant, never the secret.
fn record_for(id: Ulid, principal: Option<&Principal>, endpoint: Capability) -> Record {
    let mut rec = Record::with_id(id, "");
    rec.endpoint = endpoint.name().to_string();
    if let Some(p) = principal {
        rec.api_key = Some(p.key.spec.name.clone());
        rec.tenant = Some(p.key.tenant().to_string());
    }
    rec
}

fn settle(charge: Option<&Charge>, rec: &Record) {
    if let Some(c) = charge {
        c.settle(rec);
    }
}

/// The key may use `model`, and its TPM limit has room for the estimated prompt.
fn admit(
    state: &AppState,
    principal: Option<&Principal>,
    model: &str,
    prompt_chars: usize,
) -> Result<Option<Charge>, ApiError> {
    let (Some(auth), Some(p)) = (&state.auth, principal) else {
        return Ok(None);
    };
    if !p.key.allows_model(model) {
        return Err(ApiError::ModelNotAllowed(model.to_string()));
    }
    auth.admit(p, crate::auth::estimate_tokens(prompt_chars)).map(Some)
}

/// Returns the response and whether a stream will complete the record itself.
async fn chat_inner(
    state: &AppState,
    tel: &mut RequestTelemetry,
    principal: Option<&Principal>,
    mut req: ChatRequest,
    rec: &mut Record,
    charge: &mut Option<Charge>,
    started: Instant,
) -> Result<(Response, bool), ApiError> {
    rec.model = req.model.clone();
    rec.stream = req.stream;
    tel.streaming(req.stream);
    tel.prompt(req.input());
    let prompt_chars = req.check_limits(&state.limits)?;
    *charge = admit(state, principal, &req.model, prompt_chars)?;
    if state.store_prompts {
        rec.prompt = Some(req.routing_text());
    }
    let snapshot = state.snapshot.load_full();
    rec.policy_version = snapshot.version().to_string();
    let not_hot = snapshot.virtual_model(&req.model).map(|m| m.not_hot);
    let routed = not_hot.is_some();
    // The digest serves the ledger and traffic splits only: a direct call with no ledger
    // skips serializing and hashing the messages on the hot path.
    let request_hash = if state.ledger.is_some() || routed {
        let digest = req.prompt_digest();
        rec.prompt_hash = hex::encode(digest);
        request::split_hash(&digest)
    } else {
        0
    };
    let routing = Instant::now();
    let decision = snapshot.route(&req.model, || req.routing_text(), request_hash).await?;
    let decision = serving(&snapshot, decision, req.endpoint)?;
    tel.routed(&decision, routing, Some(snapshot.version()));
    record_routing_metrics(state, &decision);
    if routed {
        rec.policy = req.model.clone();
    }
    rec.category = decision.category.clone();
    rec.confidence = decision.confidence;
    rec.top_categories = decision.top_categories.clone();
    let strip_usage = req.stream && !req.include_usage;
    if strip_usage {
        // Usage is what the ledger and the metrics count; ask for it and hide it again.
        req.request_usage();
    }
    if let Some(tiers) = snapshot.tiers() {
        // Prefetch: the load of the chosen local expert starts now, before the request
        // reaches its queue; the first one the manager knows is the one that will be tried,
        // unless it will refuse the request (an image for a text model): no load, and no
        // eviction, for a request it will not take.
        let takes = |n: &&String| snapshot.expert(n).is_some_and(|e| !e.refuses(&req.body, req.endpoint));
        if let Some(first) = decision.experts.iter().filter(|n| tiers.tier(n).is_some()).find(takes) {
            tiers.prefetch(first);
        }
    }
    let not_hot = not_hot.unwrap_or_default();
    let last = decision.experts.last().cloned();
    let attempt = attempt_all(&snapshot, &decision, &mut rec.tried, &mut *tel, |e, trace| {
        let body = &req.body;
        let opts = CallOptions {
            endpoint: req.endpoint,
            stream: req.stream,
            not_hot,
            last_candidate: last.as_deref() == Some(e.name()),
            tenant: principal.map(|p| p.key.tenant()),
        };
        async move { e.chat(body, opts, &trace).await }
    })
    .await;
    let (expert, reply, attempt) = attempt?;
    rec.expert = Some(expert.name().to_string());
    rec.active_params = expert.active_params();
    let price = expert.config.price.clone();
    let (mut resp, streaming) = match reply {
        Reply::Json { body, head } => {
            rec.ttft_ms = Some(ms(started.elapsed()));
            if let Some(u) = head.usage {
                set_usage(rec, u, &price);
            }
            tel.answered(attempt.succeeded(body.clone(), head));
            let resp = (StatusCode::OK, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body)
                .into_response();
            (resp, false)
        }
        Reply::Stream { events } => {
            let mut stream_rec = rec.clone();
            let ledger = state.ledger.clone();
            let done = tel.streamed(attempt);
            let stream_charge = charge.clone();
            let relay = sse::Relay::new(events, strip_usage, move |outcome| {
                done.finish(&outcome);
                stream_rec.ttft_ms = outcome.first_event_at.map(|t| ms(t.duration_since(started)));
                stream_rec.latency_ms = ms(started.elapsed());
                match outcome.usage {
                    Some(u) => set_usage(&mut stream_rec, u, &price),
                    // The expert worked on it, and bills for it: an estimate, marked as
                    // one, says more than zero (and is what the key's limits are charged).
                    None if outcome.events > 0 => {
                        let prompt_tokens = crate::auth::estimate_tokens(prompt_chars);
                        let u = crate::experts::Usage {
                            prompt_tokens,
                            completion_tokens: outcome.events,
                            total_tokens: prompt_tokens + outcome.events,
                        };
                        set_usage(&mut stream_rec, u, &price);
                        stream_rec.usage_estimated = true;
                    }
                    None => {}
                }
                match outcome.error {
                    Some("client_disconnected") => {
                        stream_rec.status = crate::ledger::STATUS_CLIENT_CLOSED;
                        stream_rec.error = Some("client_disconnect".into());
                    }
                    Some(e) => stream_rec.error = Some(e.to_string()),
                    None => {}
                }
                settle(stream_charge.as_ref(), &stream_rec);
                if let Some(ledger) = ledger {
                    submit_detached(&ledger, stream_rec);
                }
            });
            let mut r = Response::new(Body::from_stream(relay));
            let h = r.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            (r, true)
        }
    };
    decorate(resp.headers_mut(), &expert, &decision);
    Ok((resp, streaming))
}

/// The decision without the experts that do not serve the endpoint (a remote expert that
/// does not declare `completions`, an embeddings-only one named for chat): they are passed
/// over before any attempt, so no call, no breaker outcome and no `tried` entry. When none
/// is left, the request is the client's to change (a 400), whatever state their breakers are in.
pub fn serving(snapshot: &Snapshot, mut decision: Decision, endpoint: Endpoint) -> Result<Decision, ApiError> {
    let capability = endpoint.capability();
    let serves = |n: &String| snapshot.expert(n).is_none_or(|e| e.config.supports(capability));
    if decision.experts.iter().all(serves) {
        // The usual case, on every request's path: nothing to take out, nothing to allocate.
        return Ok(decision);
    }
    let (kept, passed): (Vec<String>, Vec<String>) = decision.experts.drain(..).partition(serves);
    decision.experts = kept;
    let name = endpoint.capability().name();
    decision.reasons.push(format!("passed over {}: they do not declare `{name}`", passed.join(", ")));
    if decision.experts.is_empty() {
        let what = match endpoint {
            Endpoint::Chat => "chat completions (none of its experts declares the `chat` capability)",
            Endpoint::Completions => {
                "text completions (none of its experts declares the `completions` capability); use /v1/chat/completions"
            }
        };
        return Err(ApiError::Unsupported { model: decision.model.clone(), what });
    }
    Ok(decision)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn set_usage(rec: &mut Record, u: crate::experts::Usage, price: &crate::config::Price) {
    rec.input_tokens = u.prompt_tokens;
    rec.output_tokens = u.completion_tokens;
    rec.cost_usd =
        crate::ledger::cost_usd(u.prompt_tokens, u.completion_tokens, price.input_per_mtok, price.output_per_mtok);
}

fn record_routing_metrics(state: &AppState, d: &Decision) {
    let m = state.telemetry.metrics();
    if let Some(us) = d.classify_micros {
        m.classifier_latency(Duration::from_micros(us));
    }
    if d.fallback {
        m.uncertainty_fallback(d.category.as_deref(), d.experts.first().map_or("", String::as_str));
    }
    if let Some(l) = &state.ledger {
        m.ledger_backlog(l.backlog());
    }
}

/// From a synchronous context (a stream's end): a full channel hands the record to a
/// task that waits for room, so it is still never dropped.
fn submit_detached(ledger: &crate::ledger::Ledger, rec: Record) {
    if let Err(rec) = ledger.try_record(rec) {
        let ledger = ledger.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn(async move { ledger.record(rec).await });
            }
            Err(_) => tracing::error!(id = %rec.id, "Ledger channel full outside the runtime; record lost."),
        }
    }
}

/// Handles `POST /v1/embeddings`: only experts that declare embeddings take it.
pub async fn embeddings(
    state: &AppState,
    id: Ulid,
    headers: &HeaderMap,
    principal: Option<&Principal>,
    body: Result<Bytes, ApiError>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let mut pending = Pending::new(state, record_for(id, principal, Capability::Embeddings), started);
    let mut tel = state.telemetry.request(Operation::Embeddings, headers);
    let result = match body {
        Ok(body) => embeddings_inner(state, &mut tel, principal, &body, &mut pending.rec, &mut pending.charge).await,
        Err(e) => Err(e),
    };
    tel.finish(&result);
    match &result {
        Ok(resp) => pending.complete(resp.status().as_u16(), None).await,
        Err(e) => pending.complete(e.status().as_u16(), Some(e.label())).await,
    }
    result
}

async fn embeddings_inner(
    state: &AppState,
    tel: &mut RequestTelemetry,
    principal: Option<&Principal>,
    body: &[u8],
    rec: &mut Record,
    charge: &mut Option<Charge>,
) -> Result<Response, ApiError> {
    let req = request::EmbeddingsRequest::parse(body)?;
    rec.model = req.model.clone();
    let input_chars = req.check_limits(&state.limits)?;
    *charge = admit(state, principal, &req.model, input_chars)?;
    let snapshot = state.snapshot.load_full();
    let Some(expert) = snapshot.expert(&req.model) else {
        if snapshot.virtual_model(&req.model).is_some() {
            // It exists, for chat: "does not exist" would send the client looking elsewhere.
            let what = "embeddings (it routes chat requests; send embeddings to an expert that declares them)";
            return Err(ApiError::Unsupported { model: req.model, what });
        }
        return Err(ApiError::ModelNotFound(req.model));
    };
    if !expert.config.supports(Capability::Embeddings) {
        return Err(ApiError::Unsupported { model: req.model, what: "embeddings" });
    }
    let routing = Instant::now();
    let decision = snapshot.route(&req.model, String::new, 0).await?;
    tel.routed(&decision, routing, Some(snapshot.version()));
    rec.policy_version = snapshot.version().to_string();
    let (expert, (body, head), attempt) = attempt_all(&snapshot, &decision, &mut rec.tried, &mut *tel, |e, trace| {
        let body = &req.body;
        async move { e.embeddings(body, &trace).await }
    })
    .await?;
    rec.expert = Some(expert.name().to_string());
    if let Some(u) = head.usage {
        set_usage(rec, u, &expert.config.price);
    }
    tel.answered(attempt.succeeded(body.clone(), head));
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
    decision: &Decision,
    tried: &mut Vec<String>,
    tel: &mut RequestTelemetry,
    mut call: F,
) -> Result<(Arc<Expert>, T, Attempt), ApiError>
where
    F: FnMut(Arc<Expert>, TraceHeaders) -> Fut,
    Fut: std::future::Future<Output = Result<T, ExpertError>>,
{
    let resilience = snapshot.resilience();
    let candidates: Vec<Arc<Expert>> = decision.experts.iter().filter_map(|n| snapshot.expert(n).cloned()).collect();
    // The last failure (an error, a timeout, a full queue) and the last refusal.
    let mut last_error = None;
    let mut refusal = None;
    // The soonest an expert skipped by its breaker takes requests again.
    let mut breaker_skipped: Option<Duration> = None;
    // Calls made (numbers the attempts) and the failed ones among them (bounded by
    // `max_attempts`). A refusal costs no backend work and is not a failure.
    let (mut attempts, mut failures) = (0u32, 0u32);
    let mut tries = vec![0u32; candidates.len()];
    // Experts not to call again for this request: it does not fit their context window, it
    // needs what they cannot do, they answered 429, or they timed out.
    let mut cannot_take = vec![false; candidates.len()];
    let max_picks = candidates.len() * resilience.max_attempts as usize;
    for pick in 0..max_picks {
        if failures >= resilience.max_attempts {
            break;
        }
        let i = pick % candidates.len();
        let expert = &candidates[i];
        if cannot_take[i] {
            continue;
        }
        if expert.breaker.admit() == Admission::Open {
            tel.fallback(expert.name(), "breaker_open");
            let wait = expert.breaker.retry_in().unwrap_or(Duration::from_secs(1));
            breaker_skipped = Some(breaker_skipped.map_or(wait, |w| w.min(wait)));
            continue;
        }
        if tries[i] > 0 {
            // Coming back to an expert that already failed: give it a moment.
            tokio::time::sleep(backoff(resilience, tries[i])).await;
        }
        tries[i] += 1;
        attempts += 1;
        let attempt = tel.attempt(expert, attempts);
        match call(expert.clone(), attempt.trace_headers().to_vec()).await {
            Ok(out) => {
                expert.breaker.record_success();
                return Ok((expert.clone(), out, attempt));
            }
            Err(e) if e.retryable() => {
                tracing::warn!(error = %e, expert = %expert.name(), attempt = attempts, "Expert call failed; trying the next.");
                // A local expert still loading, or with a full queue, is healthy: its
                // breaker must not open (else one tenant's flood would shut out all).
                // Nor must a request it cannot take (too long, or an image for a text
                // model), which is the request's doing.
                let refused = matches!(e, ExpertError::ContextExceeded { .. } | ExpertError::Unsupported { .. });
                // A backend's 429 is a healthy backend asking for time: no breaker failure,
                // and no second call from this request (its `Retry-After` reaches the client
                // if no other expert answers).
                let rate_limited =
                    matches!(&e, ExpertError::Status { status, .. } if *status == StatusCode::TOO_MANY_REQUESTS);
                match e {
                    ExpertError::NotHot { .. } | ExpertError::Overloaded { .. } => expert.breaker.record_neutral(),
                    _ if refused || rate_limited => {
                        cannot_take[i] = true;
                        expert.breaker.record_neutral();
                    }
                    // No answer within `first_byte_ms` (for a non-streamed request: no
                    // finished answer): giving the same expert the same work again would
                    // most likely time out again, after generating for as long.
                    ExpertError::FirstByteTimeout { .. } => {
                        cannot_take[i] = true;
                        expert.breaker.record_failure();
                    }
                    _ => expert.breaker.record_failure(),
                }
                tried.push(expert.name().to_string());
                attempt.failed(&e);
                tel.fallback(expert.name(), e.kind());
                if refused {
                    refusal = Some(e);
                } else {
                    failures += 1;
                    last_error = Some(e);
                }
            }
            Err(e) => {
                // The backend is healthy; it judged the request itself.
                expert.breaker.record_success();
                attempt.failed(&e);
                return Err(ApiError::Upstream(e));
            }
        }
    }
    // A failure says more than a refusal: an expert that could take the request is down,
    // and the client's retry may find it back (a refusal's 400 would never be retried).
    // Refusals alone are the request's to fix, unless a breaker kept an expert from trying.
    Err(match (last_error, refusal) {
        (Some(e), _) => ApiError::Upstream(e),
        (None, Some(e)) if breaker_skipped.is_none() => ApiError::Upstream(e),
        _ => ApiError::NoExpertAvailable {
            model: decision.model.clone(),
            retry_after_secs: breaker_skipped.map(|w| w.as_secs_f64().ceil() as u64),
        },
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
