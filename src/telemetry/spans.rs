//! One request's spans and metrics: a server span, a `route` child, and one client span
//! per expert attempt, named and attributed by the GenAI semantic conventions.
//!
//! Each handle records its metrics and ends its span exactly once, on `finish`/`failed`/
//! `succeeded`, or, for a stream, when the relay reports the stream's end. A disabled
//! telemetry hands out empty handles that only forward the client's trace headers.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanContext, SpanKind, Status, TraceContextExt};
use opentelemetry::{Array, Context, KeyValue, StringValue, Value};
use opentelemetry_http::HeaderExtractor;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::metrics::Instruments;
use super::semconv::*;
use super::trace::{trace_headers, OpenSpan, Tracing};
use super::Telemetry;
use crate::api::error::ApiError;
use crate::config::ExpertKind;
use crate::dispatch::sse::RelayOutcome;
use crate::experts::{Expert, ExpertError, ReplyHead, Usage};
use crate::routing::Decision;

/// W3C trace context headers.
const TRACE_HEADERS: [&str; 2] = ["traceparent", "tracestate"];
/// `gen_ai.request.model` on server metrics until routing accepted the name: the client
/// picks that string, and unknown names must not each become a time series.
const UNROUTED_MODEL: &str = "_unknown";
/// Tokens per million, the unit the experts' prices are quoted in.
const TOKENS_PER_PRICE_UNIT: f64 = 1_000_000.0;

pub type TraceHeaders = Vec<(HeaderName, HeaderValue)>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Chat,
    /// A legacy text completion (`POST /v1/completions`).
    TextCompletion,
    Embeddings,
}

impl Operation {
    /// `gen_ai.operation.name`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::TextCompletion => "text_completion",
            Self::Embeddings => "embeddings",
        }
    }

    fn route(self) -> &'static str {
        match self {
            Self::Chat => "/v1/chat/completions",
            Self::TextCompletion => "/v1/completions",
            Self::Embeddings => "/v1/embeddings",
        }
    }

    /// The server span's name (HTTP semconv: method and route).
    fn span_name(self) -> &'static str {
        match self {
            Self::Chat => "POST /v1/chat/completions",
            Self::TextCompletion => "POST /v1/completions",
            Self::Embeddings => "POST /v1/embeddings",
        }
    }
}

struct Req {
    instruments: Arc<Instruments>,
    /// Set when traces are exported (sampled or not: unsampled requests still get ids).
    tracing: Option<Arc<Tracing>>,
    capture_content: bool,
    /// The server span's context when tracing; else the client's, so it is still
    /// propagated to the experts.
    cx: SpanContext,
    /// The server span, when sampled.
    span: Option<OpenSpan>,
    start: Instant,
    op: Operation,
    /// `gen_ai.request.model`, built once and shared by every measurement.
    request_model: KeyValue,
    /// `triage.category`, likewise.
    category: KeyValue,
    stream: bool,
    confidence: Option<f32>,
    response_model: Option<String>,
    /// Token usage for the server span: from the winning reply at the end, or the stream.
    usage: Option<Usage>,
    /// The winning attempt of a complete (non-streamed) answer, ended with the request.
    won: Option<Won>,
    /// The routing decision, recorded with the request's end (one hand-off per request).
    routed: Option<Routed>,
}

/// `triage.routing.decisions`' attributes and, when sampled, the `route` span.
struct Routed {
    decisions: [KeyValue; 2],
    span: Option<(Arc<Tracing>, OpenSpan, Vec<KeyValue>)>,
    ended: Instant,
}

impl Routed {
    fn record(self, instruments: &Instruments) {
        instruments.routing_decisions.add(1, &self.decisions);
        if let Some((tracing, span, attrs)) = self.span {
            span.end(&tracing, "route", SpanKind::Internal, self.ended, attrs, Status::Unset);
        }
    }
}

/// The telemetry of one API request.
pub struct RequestTelemetry {
    inner: Option<Box<Req>>,
    /// Forwarded verbatim when telemetry is off, so the gateway is transparent to tracing.
    passthrough: TraceHeaders,
}

fn extract(headers: &HeaderMap) -> Context {
    if !headers.contains_key(TRACE_HEADERS[0]) {
        return Context::new();
    }
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

impl Telemetry {
    /// Starts the server span of a request, continuing the client's `traceparent`.
    pub fn request(&self, op: Operation, headers: &HeaderMap) -> RequestTelemetry {
        let Some(t) = &self.0 else {
            let passthrough = TRACE_HEADERS
                .iter()
                .filter_map(|&n| headers.get(n).map(|v| (HeaderName::from_static(n), v.clone())))
                .collect();
            return RequestTelemetry { inner: None, passthrough };
        };
        let start = Instant::now();
        let parent = extract(headers);
        let (cx, span) = match &t.tracing {
            Some(tracing) => {
                let cx = tracing.server(&parent, op.span_name());
                let span = OpenSpan::start(&cx, parent.span().span_context(), start);
                (cx, span)
            }
            None => (parent.span().span_context().clone(), None),
        };
        RequestTelemetry {
            inner: Some(Box::new(Req {
                instruments: t.instruments.clone(),
                tracing: t.tracing.clone(),
                capture_content: t.capture_content,
                cx,
                span,
                start,
                op,
                request_model: KeyValue::new(GEN_AI_REQUEST_MODEL, UNROUTED_MODEL),
                category: KeyValue::new(TRIAGE_CATEGORY, NO_CATEGORY),
                stream: false,
                confidence: None,
                response_model: None,
                usage: None,
                won: None,
                routed: None,
            })),
            passthrough: Vec::new(),
        }
    }
}

fn category_kv(c: &Option<String>) -> KeyValue {
    match c {
        Some(c) => KeyValue::new(TRIAGE_CATEGORY, shared(c)),
        None => KeyValue::new(TRIAGE_CATEGORY, NO_CATEGORY),
    }
}

/// A string attribute value whose clones are reference counts, not copies.
fn shared(s: &str) -> StringValue {
    StringValue::from(Arc::<str>::from(s))
}

/// An expert's attributes, built once with the expert: every attempt's metrics reuse
/// them instead of formatting and parsing the same strings per request.
#[derive(Debug, Clone)]
pub struct ExpertAttrs {
    /// Metric attributes per operation: operation, provider, request (upstream) model,
    /// expert, and the backend's `server.address`/`server.port` when remote.
    chat: Arc<[KeyValue]>,
    text_completion: Arc<[KeyValue]>,
    embeddings: Arc<[KeyValue]>,
    expert: KeyValue,
    upstream_model: Arc<str>,
}

impl ExpertAttrs {
    pub fn new(config: &crate::config::ExpertConfig) -> Self {
        let (provider, upstream_model, address) = match &config.kind {
            ExpertKind::OpenAi(remote) => (PROVIDER_OPENAI, remote.model.as_str(), server_address(&remote.base_url)),
            ExpertKind::Local(_) => (PROVIDER_LOCAL, config.name.as_str(), None),
        };
        let upstream_model: Arc<str> = Arc::from(upstream_model);
        let expert = KeyValue::new(TRIAGE_EXPERT, shared(&config.name));
        let attrs = |op: Operation| -> Arc<[KeyValue]> {
            let mut v = vec![
                KeyValue::new(GEN_AI_OPERATION_NAME, op.name()),
                KeyValue::new(GEN_AI_PROVIDER_NAME, provider),
                KeyValue::new(GEN_AI_REQUEST_MODEL, StringValue::from(upstream_model.clone())),
                expert.clone(),
            ];
            if let Some((host, port)) = &address {
                v.push(KeyValue::new(SERVER_ADDRESS, shared(host)));
                v.push(KeyValue::new(SERVER_PORT, i64::from(*port)));
            }
            v.into()
        };
        Self {
            chat: attrs(Operation::Chat),
            text_completion: attrs(Operation::TextCompletion),
            embeddings: attrs(Operation::Embeddings),
            expert,
            upstream_model,
        }
    }

    fn for_op(&self, op: Operation) -> Arc<[KeyValue]> {
        match op {
            Operation::Chat => self.chat.clone(),
            Operation::TextCompletion => self.text_completion.clone(),
            Operation::Embeddings => self.embeddings.clone(),
        }
    }
}

fn strings(v: impl IntoIterator<Item = String>) -> Value {
    Value::Array(Array::String(v.into_iter().map(StringValue::from).collect()))
}

/// Low-cardinality `error.type` for an error the client sees.
pub fn api_error_type(e: &ApiError) -> &'static str {
    e.label()
}

impl RequestTelemetry {
    pub fn streaming(&mut self, stream: bool) {
        if let Some(r) = &mut self.inner {
            r.stream = stream;
        }
    }

    /// Records the prompt on the server span, only if the operator opted in
    /// ([`super::ENV_CAPTURE_CONTENT`]).
    pub fn prompt(&mut self, messages: Option<&serde_json::Value>) {
        let Some(r) = &mut self.inner else { return };
        if let (true, Some(span), Some(m)) = (r.capture_content, &mut r.span, messages) {
            span.attrs.push(KeyValue::new(GEN_AI_INPUT_MESSAGES, m.to_string()));
        }
    }

    /// The routing decision, which took from `started` until now: a `route` child span and
    /// the `triage.routing.decisions` counter, both recorded when the request ends.
    pub fn routed(&mut self, d: &Decision, started: Instant, policy_version: Option<&str>) {
        let Some(r) = &mut self.inner else { return };
        r.request_model = KeyValue::new(GEN_AI_REQUEST_MODEL, shared(&d.model));
        r.category = category_kv(&d.category);
        r.confidence = d.confidence;
        let first = KeyValue::new(TRIAGE_EXPERT, d.experts.first().map_or("", String::as_str).to_string());
        let decisions = [r.category.clone(), first];
        let route = match (&r.tracing, &r.span) {
            (Some(tracing), Some(_)) => {
                let mut attrs = vec![
                    r.request_model.clone(),
                    r.category.clone(),
                    KeyValue::new(TRIAGE_EXPERTS, strings(d.experts.iter().cloned())),
                    KeyValue::new(TRIAGE_ROUTE_REASONS, strings(d.reasons.iter().cloned())),
                ];
                if let Some(c) = d.confidence {
                    attrs.push(KeyValue::new(TRIAGE_CONFIDENCE, f64::from(c)));
                }
                if let Some(v) = policy_version {
                    attrs.push(KeyValue::new(TRIAGE_POLICY_VERSION, v.to_string()));
                }
                let cx = tracing.child(&r.cx);
                OpenSpan::start(&cx, &r.cx, started).map(|span| (tracing.clone(), span, attrs))
            }
            _ => None,
        };
        r.routed = Some(Routed { decisions, span: route, ended: Instant::now() });
    }

    /// An expert was passed over (failed, or its breaker is open) for `reason`.
    pub fn fallback(&mut self, expert: &str, reason: &'static str) {
        let Some(r) = &mut self.inner else { return };
        r.instruments.fallbacks.add(
            1,
            &[
                r.category.clone(),
                KeyValue::new(TRIAGE_EXPERT, expert.to_string()),
                KeyValue::new(TRIAGE_FALLBACK_REASON, reason),
            ],
        );
        if let Some(span) = &mut r.span {
            span.add_event(
                "triage.fallback",
                vec![KeyValue::new(TRIAGE_EXPERT, expert.to_string()), KeyValue::new(TRIAGE_FALLBACK_REASON, reason)],
            );
        }
    }

    /// Starts the client span of the `n`th call, to `expert`.
    pub fn attempt(&self, expert: &Expert, n: u32) -> Attempt {
        let Some(r) = &self.inner else {
            return Attempt { inner: None, headers: self.passthrough.clone() };
        };
        let start = Instant::now();
        let known = &expert.otel;
        let (cx, span) = match &r.tracing {
            Some(tracing) => {
                let cx = tracing.child(&r.cx);
                let span = OpenSpan::start(&cx, &r.cx, start);
                (cx, span)
            }
            None => (r.cx.clone(), None),
        };
        let headers = trace_headers(&cx);
        Attempt {
            inner: Some(Box::new(Att {
                instruments: r.instruments.clone(),
                tracing: span.as_ref().and(r.tracing.clone()),
                span,
                capture_content: r.capture_content,
                start,
                attrs: known.for_op(r.op),
                op: r.op,
                n,
                upstream_model: known.upstream_model.clone(),
                price: (expert.config.price.input_per_mtok, expert.config.price.output_per_mtok),
                category: r.category.clone(),
                expert: known.expert.clone(),
            })),
            headers,
        }
    }

    /// The winning attempt answered with a complete body.
    pub fn answered(&mut self, a: Answer) {
        if let Some(r) = &mut self.inner {
            r.won = a.won;
        }
    }

    /// Hands the request and the winning attempt to the stream relay, which ends both
    /// when the stream ends; `finish` then does nothing.
    pub fn streamed(&mut self, attempt: Attempt) -> StreamTelemetry {
        StreamTelemetry { request: self.inner.take(), attempt }
    }

    /// Ends the request with `result` (unless a stream took it over).
    pub fn finish<T>(&mut self, result: &Result<T, ApiError>) {
        let Some(mut r) = self.inner.take() else { return };
        let at = Instant::now();
        let (status, error, message) = match result {
            Ok(_) => (200, None, None),
            Err(e) => (e.status().as_u16(), Some(api_error_type(e)), Some(e.to_string())),
        };
        let instruments = r.instruments.clone();
        instruments.after.run(move || {
            if let Some(won) = r.won.take() {
                (r.response_model, r.usage) = won.end();
            }
            r.end_at(at, status, error, message.as_deref(), None);
        });
    }
}

impl Req {
    /// Records the request, which ended `at`, and ends its server span.
    fn end_at(
        self,
        at: Instant,
        status: u16,
        error: Option<&'static str>,
        message: Option<&str>,
        first_event: Option<Instant>,
    ) {
        if let Some(routed) = self.routed {
            routed.record(&self.instruments);
        }
        let elapsed = at.duration_since(self.start);
        let mut attrs = vec![KeyValue::new(GEN_AI_OPERATION_NAME, self.op.name()), self.request_model.clone()];
        if let Some(m) = &self.response_model {
            attrs.push(KeyValue::new(GEN_AI_RESPONSE_MODEL, m.clone()));
        }
        if let Some(e) = error {
            attrs.push(KeyValue::new(ERROR_TYPE, e));
        }
        let i = &self.instruments;
        i.server_duration.record(elapsed.as_secs_f64(), &attrs);
        let outcome = KeyValue::new(TRIAGE_OUTCOME, error.unwrap_or("ok"));
        i.requests.add(1, &[attrs[0].clone(), attrs[1].clone(), self.category.clone(), outcome]);
        if let Some(e) = error {
            i.errors.add(1, &[attrs[0].clone(), KeyValue::new(ERROR_TYPE, e)]);
        }
        // Streams only: a complete JSON body has no first token to time apart from the rest.
        if let (Some(first), None) = (first_event, error) {
            let ttft = first.saturating_duration_since(self.start);
            i.ttft.record(ttft.as_secs_f64(), &attrs);
            if let Some(out) = self.usage.map(|u| u.completion_tokens).filter(|&n| n > 1) {
                let rest = elapsed.saturating_sub(ttft);
                i.tpot.record(rest.as_secs_f64() / (out - 1) as f64, &attrs);
            }
        }
        let (Some(tracing), Some(span)) = (&self.tracing, self.span) else { return };
        let mut attrs = vec![
            KeyValue::new(HTTP_REQUEST_METHOD, "POST"),
            KeyValue::new(HTTP_ROUTE, self.op.route()),
            KeyValue::new(GEN_AI_OPERATION_NAME, self.op.name()),
            KeyValue::new(TRIAGE_STREAM, self.stream),
            self.request_model,
            self.category,
            KeyValue::new(HTTP_RESPONSE_STATUS_CODE, i64::from(status)),
        ];
        if let Some(c) = self.confidence {
            attrs.push(KeyValue::new(TRIAGE_CONFIDENCE, f64::from(c)));
        }
        if let Some(m) = self.response_model {
            attrs.push(KeyValue::new(GEN_AI_RESPONSE_MODEL, m));
        }
        if let Some(u) = self.usage {
            attrs.push(KeyValue::new(GEN_AI_USAGE_INPUT_TOKENS, u.prompt_tokens as i64));
            attrs.push(KeyValue::new(GEN_AI_USAGE_OUTPUT_TOKENS, u.completion_tokens as i64));
        }
        let mut span_status = Status::Unset;
        if let Some(e) = error {
            attrs.push(KeyValue::new(ERROR_TYPE, e));
            // HTTP semconv: a 4xx is the client's error, so the server span stays unset. A
            // stream that failed after its 200 is the gateway's (or the expert's) error.
            if !(400..500).contains(&status) {
                span_status = Status::error(message.unwrap_or(e).to_string());
            }
        }
        span.end(tracing, self.op.span_name(), SpanKind::Server, at, attrs, span_status);
    }
}

/// `server.address` and `server.port` of an expert's base URL.
fn server_address(base_url: &str) -> Option<(String, u16)> {
    let uri: http::Uri = base_url.parse().ok()?;
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']').to_string();
    let port = uri.port_u16().unwrap_or(if uri.scheme_str() == Some("https") { 443 } else { 80 });
    Some((host, port))
}

struct Att {
    instruments: Arc<Instruments>,
    /// Set with `span`.
    tracing: Option<Arc<Tracing>>,
    /// The client span, when sampled.
    span: Option<OpenSpan>,
    capture_content: bool,
    start: Instant,
    /// The metric attributes: operation, provider, request model, server address, expert.
    attrs: Arc<[KeyValue]>,
    op: Operation,
    /// Which call of the request this is (1 = the first expert tried).
    n: u32,
    upstream_model: Arc<str>,
    /// Input and output price per million tokens.
    price: (f64, f64),
    category: KeyValue,
    /// `triage.expert`.
    expert: KeyValue,
}

/// One call to an expert.
pub struct Attempt {
    inner: Option<Box<Att>>,
    headers: TraceHeaders,
}

/// The winning attempt and its body, read for `gen_ai.response.*` once the request ended.
#[derive(Default)]
pub struct Answer {
    won: Option<Won>,
}

struct Won {
    attempt: Box<Att>,
    at: Instant,
    body: Option<Bytes>,
    head: ReplyHead,
}

/// What telemetry reads of a reply's `choices`.
#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(borrow, default)]
    finish_reason: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    message: Option<&'a RawValue>,
    /// A text completion's output.
    #[serde(borrow, default)]
    text: Option<&'a RawValue>,
}

impl Attempt {
    /// `traceparent`/`tracestate` for the expert: the client span is their parent.
    pub fn trace_headers(&self) -> &[(HeaderName, HeaderValue)] {
        &self.headers
    }

    /// The call failed before anything reached the client.
    pub fn failed(self, e: &ExpertError) {
        let Some(a) = self.inner else { return };
        let (at, kind) = (Instant::now(), e.kind());
        let message = if a.span.is_some() { e.to_string() } else { String::new() };
        let instruments = a.instruments.clone();
        instruments.after.run(move || a.fail(at, kind, &message));
    }

    /// The call answered with a complete body (chat or embeddings), read once by the
    /// expert (`head`); the body's `choices` are read again for finish reasons only when
    /// the span is sampled.
    pub fn succeeded(self, body: Bytes, head: ReplyHead) -> Answer {
        let Some(attempt) = self.inner else { return Answer::default() };
        // The body is read again only for a sampled span's `choices`.
        let body = attempt.span.is_some().then_some(body);
        Answer { won: Some(Won { attempt, at: Instant::now(), body, head }) }
    }
}

impl Won {
    /// Ends the attempt; returns the response model and usage for the server span.
    fn end(self) -> (Option<String>, Option<Usage>) {
        let a = self.attempt;
        let ReplyHead { usage, model: response_model, id, choices } = self.head;
        let mut extra = Vec::new();
        if a.span.is_some() {
            if let Some(id) = id {
                extra.push(KeyValue::new(GEN_AI_RESPONSE_ID, id));
            }
            let choices = choices
                .and_then(|r| self.body.as_ref()?.get(r))
                .and_then(|raw| serde_json::from_slice::<Vec<Choice>>(raw).ok())
                .unwrap_or_default();
            let reasons: Vec<String> =
                choices.iter().filter_map(|c| c.finish_reason.as_deref().map(str::to_string)).collect();
            if !reasons.is_empty() {
                extra.push(KeyValue::new(GEN_AI_RESPONSE_FINISH_REASONS, strings(reasons)));
            }
            if a.capture_content {
                let out: Vec<&str> = choices.iter().filter_map(|c| c.message.or(c.text).map(RawValue::get)).collect();
                extra.push(KeyValue::new(GEN_AI_OUTPUT_MESSAGES, format!("[{}]", out.join(","))));
            }
        }
        a.succeed(self.at, response_model.clone(), usage, extra);
        (response_model, usage)
    }
}

impl Att {
    /// The client span's attributes known from the start, for its end.
    fn span_attrs(&self) -> Vec<KeyValue> {
        let mut v = self.attrs.to_vec();
        v.push(KeyValue::new(TRIAGE_ATTEMPT, i64::from(self.n)));
        v.push(self.category.clone());
        v
    }

    fn end_span(self, at: Instant, extra: Vec<KeyValue>, status: Status) {
        let (Some(tracing), Some(span)) = (&self.tracing, self.span) else { return };
        let name = format!("{} {}", self.op.name(), self.upstream_model);
        span.end(tracing, name, SpanKind::Client, at, extra, status);
    }

    fn fail(self, at: Instant, kind: &'static str, message: &str) {
        let mut attrs = self.attrs.to_vec();
        attrs.push(KeyValue::new(ERROR_TYPE, kind));
        self.instruments.client_duration.record(at.duration_since(self.start).as_secs_f64(), &attrs);
        self.instruments.attempts.add(1, &[self.expert.clone(), KeyValue::new(TRIAGE_OUTCOME, kind)]);
        if self.span.is_some() {
            let mut span_attrs = self.span_attrs();
            span_attrs.push(KeyValue::new(ERROR_TYPE, kind));
            self.end_span(at, span_attrs, Status::error(message.to_string()));
        }
    }

    fn succeed(self, at: Instant, response_model: Option<String>, usage: Option<Usage>, extra: Vec<KeyValue>) {
        let i = &self.instruments;
        let mut attrs = self.attrs.to_vec();
        if let Some(m) = &response_model {
            attrs.push(KeyValue::new(GEN_AI_RESPONSE_MODEL, m.clone()));
        }
        i.client_duration.record(at.duration_since(self.start).as_secs_f64(), &attrs);
        i.attempts.add(1, &[self.expert.clone(), KeyValue::new(TRIAGE_OUTCOME, "ok")]);
        let mut cost = None;
        if let Some(u) = usage {
            let mut with_type = attrs;
            with_type.push(KeyValue::new(GEN_AI_TOKEN_TYPE, "input"));
            i.token_usage.record(u.prompt_tokens, &with_type);
            if let Some(last) = with_type.last_mut() {
                *last = KeyValue::new(GEN_AI_TOKEN_TYPE, "output");
            }
            i.token_usage.record(u.completion_tokens, &with_type);
            let usd = (u.prompt_tokens as f64 * self.price.0 + u.completion_tokens as f64 * self.price.1)
                / TOKENS_PER_PRICE_UNIT;
            if usd > 0.0 {
                i.cost.add(usd, &[self.category.clone(), self.expert.clone()]);
            }
            cost = Some(usd);
        }
        if self.span.is_none() {
            return;
        }
        let mut span_attrs = self.span_attrs();
        span_attrs.extend(extra);
        if let Some(m) = response_model {
            span_attrs.push(KeyValue::new(GEN_AI_RESPONSE_MODEL, m));
        }
        if let Some(u) = usage {
            span_attrs.push(KeyValue::new(GEN_AI_USAGE_INPUT_TOKENS, u.prompt_tokens as i64));
            span_attrs.push(KeyValue::new(GEN_AI_USAGE_OUTPUT_TOKENS, u.completion_tokens as i64));
        }
        if let Some(c) = cost {
            span_attrs.push(KeyValue::new(TRIAGE_COST, c));
        }
        self.end_span(at, span_attrs, Status::Unset);
    }
}

/// A streamed answer's request and attempt, ended by the relay.
pub struct StreamTelemetry {
    request: Option<Box<Req>>,
    attempt: Attempt,
}

impl StreamTelemetry {
    /// The stream ended (completed, failed mid-way, or the client left).
    pub fn finish(self, o: &RelayOutcome) {
        let Some(mut r) = self.request else { return };
        let at = Instant::now();
        r.usage = o.usage;
        r.response_model.clone_from(&o.response_model);
        let attempt = self.attempt.inner;
        let o = o.clone();
        let instruments = r.instruments.clone();
        instruments.after.run(move || match (o.error, attempt) {
            (Some(kind), Some(a)) => {
                let message = format!("the stream ended early: {kind}");
                a.fail(at, kind, &message);
                // The status line said 200 long ago; the error is in the span and the metrics.
                r.end_at(at, 200, Some(kind), Some(&message), None);
            }
            (None, Some(a)) => {
                let mut extra = Vec::new();
                if a.span.is_some() {
                    if let Some(id) = o.response_id {
                        extra.push(KeyValue::new(GEN_AI_RESPONSE_ID, id));
                    }
                    if !o.finish_reasons.is_empty() {
                        extra.push(KeyValue::new(GEN_AI_RESPONSE_FINISH_REASONS, strings(o.finish_reasons)));
                    }
                }
                a.succeed(at, o.response_model, o.usage, extra);
                r.end_at(at, 200, None, None, o.first_event_at);
            }
            (error, None) => r.end_at(at, 200, error, None, o.first_event_at),
        });
    }
}
