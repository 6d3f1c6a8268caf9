//! One request's spans and metrics: a server span, a `route` child, and one client span
//! per expert attempt, named and attributed by the GenAI semantic conventions.
//!
//! Each handle records its metrics and ends its span exactly once, on `finish`/`failed`/
//! `succeeded`, or, for a stream, when the relay reports the stream's end. A disabled
//! telemetry hands out empty handles that only forward the client's trace headers.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer};
use opentelemetry::{Array, Context, KeyValue, StringValue, Value};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracer;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::metrics::Instruments;
use super::semconv::*;
use super::Telemetry;
use crate::api::error::ApiError;
use crate::config::ExpertKind;
use crate::dispatch::sse::RelayOutcome;
use crate::experts::{Expert, ExpertError, Usage};
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
    Embeddings,
}

impl Operation {
    /// `gen_ai.operation.name`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Embeddings => "embeddings",
        }
    }

    fn route(self) -> &'static str {
        match self {
            Self::Chat => "/v1/chat/completions",
            Self::Embeddings => "/v1/embeddings",
        }
    }
}

struct Req {
    instruments: Arc<Instruments>,
    tracer: Option<SdkTracer>,
    capture_content: bool,
    /// Holds the server span when tracing; else the client's (remote) context, so it is
    /// still propagated to the experts.
    cx: Context,
    start: Instant,
    op: Operation,
    request_model: String,
    category: Option<String>,
    stream: bool,
    response_model: Option<String>,
    usage: Option<Usage>,
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
        let parent = extract(headers);
        let cx = match &t.tracer {
            Some(tracer) => {
                let span = tracer
                    .span_builder(format!("POST {}", op.route()))
                    .with_kind(SpanKind::Server)
                    .with_attributes([
                        KeyValue::new(HTTP_REQUEST_METHOD, "POST"),
                        KeyValue::new(HTTP_ROUTE, op.route()),
                        KeyValue::new(GEN_AI_OPERATION_NAME, op.name()),
                    ])
                    .start_with_context(tracer, &parent);
                parent.with_span(span)
            }
            None => parent,
        };
        RequestTelemetry {
            inner: Some(Box::new(Req {
                instruments: t.instruments.clone(),
                tracer: t.tracer.clone(),
                capture_content: t.capture_content,
                cx,
                start: Instant::now(),
                op,
                request_model: UNROUTED_MODEL.to_string(),
                category: None,
                stream: false,
                response_model: None,
                usage: None,
            })),
            passthrough: Vec::new(),
        }
    }
}

fn category_kv(c: &Option<String>) -> KeyValue {
    KeyValue::new(TRIAGE_CATEGORY, c.clone().unwrap_or_else(|| NO_CATEGORY.to_string()))
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
            r.cx.span().set_attribute(KeyValue::new(TRIAGE_STREAM, stream));
        }
    }

    /// Records the prompt on the server span, only if the operator opted in
    /// ([`super::ENV_CAPTURE_CONTENT`]).
    pub fn prompt(&self, messages: Option<&serde_json::Value>) {
        let Some(r) = &self.inner else { return };
        if let (true, Some(m)) = (r.capture_content && r.tracer.is_some(), messages) {
            r.cx.span().set_attribute(KeyValue::new(GEN_AI_INPUT_MESSAGES, m.to_string()));
        }
    }

    /// The routing decision, which took from `started` until now: a `route` child span and
    /// the `triage.routing.decisions` counter.
    pub fn routed(&mut self, d: &Decision, started: Instant, policy_version: Option<&str>) {
        let Some(r) = &mut self.inner else { return };
        r.request_model = d.model.clone();
        r.category = d.category.clone();
        let first = d.experts.first().map_or("", String::as_str);
        r.instruments
            .routing_decisions
            .add(1, &[category_kv(&r.category), KeyValue::new(TRIAGE_EXPERT, first.to_string())]);
        let Some(tracer) = &r.tracer else { return };
        let now = SystemTime::now();
        let mut attrs = vec![
            KeyValue::new(GEN_AI_REQUEST_MODEL, d.model.clone()),
            category_kv(&d.category),
            KeyValue::new(TRIAGE_EXPERTS, strings(d.experts.iter().cloned())),
            KeyValue::new(TRIAGE_ROUTE_REASONS, strings(d.reasons.iter().cloned())),
        ];
        if let Some(c) = d.confidence {
            attrs.push(KeyValue::new(TRIAGE_CONFIDENCE, f64::from(c)));
        }
        if let Some(v) = policy_version {
            attrs.push(KeyValue::new(TRIAGE_POLICY_VERSION, v.to_string()));
        }
        let mut span = tracer
            .span_builder("route")
            .with_kind(SpanKind::Internal)
            .with_start_time(now.checked_sub(started.elapsed()).unwrap_or(now))
            .with_attributes(attrs)
            .start_with_context(tracer, &r.cx);
        span.end_with_timestamp(now);
        let server = r.cx.span();
        server.set_attribute(KeyValue::new(GEN_AI_REQUEST_MODEL, d.model.clone()));
        server.set_attribute(category_kv(&d.category));
        if let Some(c) = d.confidence {
            server.set_attribute(KeyValue::new(TRIAGE_CONFIDENCE, f64::from(c)));
        }
    }

    /// An expert was passed over (failed, or its breaker is open) for `reason`.
    pub fn fallback(&self, expert: &str, reason: &'static str) {
        let Some(r) = &self.inner else { return };
        r.instruments.fallbacks.add(
            1,
            &[
                category_kv(&r.category),
                KeyValue::new(TRIAGE_EXPERT, expert.to_string()),
                KeyValue::new(TRIAGE_FALLBACK_REASON, reason),
            ],
        );
        if r.tracer.is_some() {
            r.cx.span().add_event(
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
        let (provider, upstream_model, address) = match &expert.config.kind {
            ExpertKind::OpenAi(remote) => (PROVIDER_OPENAI, remote.model.as_str(), server_address(&remote.base_url)),
            ExpertKind::Local(_) => (PROVIDER_LOCAL, expert.name(), None),
        };
        let mut attrs = vec![
            KeyValue::new(GEN_AI_OPERATION_NAME, r.op.name()),
            KeyValue::new(GEN_AI_PROVIDER_NAME, provider),
            KeyValue::new(GEN_AI_REQUEST_MODEL, upstream_model.to_string()),
            KeyValue::new(TRIAGE_EXPERT, expert.name().to_string()),
        ];
        if let Some((host, port)) = address {
            attrs.push(KeyValue::new(SERVER_ADDRESS, host));
            attrs.push(KeyValue::new(SERVER_PORT, i64::from(port)));
        }
        let cx = match &r.tracer {
            Some(tracer) => {
                let mut span_attrs = attrs.clone();
                span_attrs.push(KeyValue::new(TRIAGE_ATTEMPT, i64::from(n)));
                span_attrs.push(category_kv(&r.category));
                let span = tracer
                    .span_builder(format!("{} {upstream_model}", r.op.name()))
                    .with_kind(SpanKind::Client)
                    .with_attributes(span_attrs)
                    .start_with_context(tracer, &r.cx);
                r.cx.with_span(span)
            }
            None => r.cx.clone(),
        };
        let mut map = HeaderMap::new();
        TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(&mut map));
        let headers = map.into_iter().filter_map(|(k, v)| k.map(|k| (k, v))).collect();
        Attempt {
            inner: Some(Box::new(Att {
                instruments: r.instruments.clone(),
                tracing: r.tracer.is_some(),
                capture_content: r.capture_content,
                cx,
                start: Instant::now(),
                attrs,
                price: (expert.config.price.input_per_mtok, expert.config.price.output_per_mtok),
                category: r.category.clone(),
                expert: expert.name().to_string(),
            })),
            headers,
        }
    }

    /// The winning attempt answered with a complete body.
    pub fn answered(&mut self, a: Answer) {
        if let Some(r) = &mut self.inner {
            r.response_model = a.response_model;
            r.usage = a.usage;
        }
    }

    /// Hands the request and the winning attempt to the stream relay, which ends both
    /// when the stream ends; `finish` then does nothing.
    pub fn streamed(&mut self, attempt: Attempt) -> StreamTelemetry {
        StreamTelemetry { request: self.inner.take(), attempt }
    }

    /// Ends the request with `result` (unless a stream took it over).
    pub fn finish<T>(&mut self, result: &Result<T, ApiError>) {
        let Some(r) = self.inner.take() else { return };
        match result {
            Ok(_) => r.end(200, None, None),
            Err(e) => r.end(e.status().as_u16(), Some(api_error_type(e)), Some(&e.to_string())),
        }
    }
}

impl Req {
    fn end(self, status: u16, error: Option<&'static str>, message: Option<&str>) {
        self.end_at(status, error, message, None);
    }

    fn end_at(self, status: u16, error: Option<&'static str>, message: Option<&str>, first_event: Option<Instant>) {
        let elapsed = self.start.elapsed();
        let mut attrs = vec![
            KeyValue::new(GEN_AI_OPERATION_NAME, self.op.name()),
            KeyValue::new(GEN_AI_REQUEST_MODEL, self.request_model.clone()),
        ];
        if let Some(m) = &self.response_model {
            attrs.push(KeyValue::new(GEN_AI_RESPONSE_MODEL, m.clone()));
        }
        if let Some(e) = error {
            attrs.push(KeyValue::new(ERROR_TYPE, e));
        }
        let i = &self.instruments;
        i.server_duration.record(elapsed.as_secs_f64(), &attrs);
        let outcome = KeyValue::new(TRIAGE_OUTCOME, error.unwrap_or("ok"));
        i.requests.add(1, &[attrs[0].clone(), attrs[1].clone(), category_kv(&self.category), outcome]);
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
        if self.tracer.is_none() {
            return;
        }
        let span = self.cx.span();
        span.set_attribute(KeyValue::new(HTTP_RESPONSE_STATUS_CODE, i64::from(status)));
        if let Some(m) = &self.response_model {
            span.set_attribute(KeyValue::new(GEN_AI_RESPONSE_MODEL, m.clone()));
        }
        if let Some(u) = self.usage {
            span.set_attribute(KeyValue::new(GEN_AI_USAGE_INPUT_TOKENS, u.prompt_tokens as i64));
            span.set_attribute(KeyValue::new(GEN_AI_USAGE_OUTPUT_TOKENS, u.completion_tokens as i64));
        }
        if let Some(e) = error {
            span.set_attribute(KeyValue::new(ERROR_TYPE, e));
            // HTTP semconv: a 4xx is the client's error, so the server span stays unset. A
            // stream that failed after its 200 is the gateway's (or the expert's) error.
            if !(400..500).contains(&status) {
                span.set_status(Status::error(message.unwrap_or(e).to_string()));
            }
        }
        span.end();
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
    tracing: bool,
    capture_content: bool,
    cx: Context,
    start: Instant,
    /// The metric attributes: operation, provider, request model, server address, expert.
    attrs: Vec<KeyValue>,
    /// Input and output price per million tokens.
    price: (f64, f64),
    category: Option<String>,
    expert: String,
}

/// One call to an expert.
pub struct Attempt {
    inner: Option<Box<Att>>,
    headers: TraceHeaders,
}

/// What the server span needs from the winning attempt.
#[derive(Debug, Default)]
pub struct Answer {
    response_model: Option<String>,
    usage: Option<Usage>,
}

/// The parts of an OpenAI response body that telemetry reports.
#[derive(Deserialize)]
struct ResponseHead<'a> {
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    choices: Vec<Choice<'a>>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(borrow, default)]
    finish_reason: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    message: Option<&'a RawValue>,
}

impl Attempt {
    /// `traceparent`/`tracestate` for the expert: the client span is their parent.
    pub fn trace_headers(&self) -> &[(HeaderName, HeaderValue)] {
        &self.headers
    }

    /// The call failed before anything reached the client.
    pub fn failed(self, e: &ExpertError) {
        let Some(a) = self.inner else { return };
        a.fail(e.kind(), &e.to_string());
    }

    /// The call answered with a complete body (chat or embeddings).
    pub fn succeeded(self, body: Option<&[u8]>, usage: Option<Usage>) -> Answer {
        let Some(a) = self.inner else { return Answer::default() };
        let head = body.and_then(|b| serde_json::from_slice::<ResponseHead>(b).ok());
        let response_model = head.as_ref().and_then(|h| h.model.as_deref()).map(str::to_string);
        if a.tracing {
            let span = a.cx.span();
            if let Some(h) = &head {
                if let Some(id) = &h.id {
                    span.set_attribute(KeyValue::new(GEN_AI_RESPONSE_ID, id.to_string()));
                }
                let reasons: Vec<String> =
                    h.choices.iter().filter_map(|c| c.finish_reason.as_deref().map(str::to_string)).collect();
                if !reasons.is_empty() {
                    span.set_attribute(KeyValue::new(GEN_AI_RESPONSE_FINISH_REASONS, strings(reasons)));
                }
                if a.capture_content {
                    let out: Vec<&str> = h.choices.iter().filter_map(|c| c.message.map(RawValue::get)).collect();
                    span.set_attribute(KeyValue::new(GEN_AI_OUTPUT_MESSAGES, format!("[{}]", out.join(","))));
                }
            }
        }
        a.succeed(response_model.clone(), usage);
        Answer { response_model, usage }
    }
}

impl Att {
    fn fail(self, kind: &'static str, message: &str) {
        let mut attrs = self.attrs;
        attrs.push(KeyValue::new(ERROR_TYPE, kind));
        self.instruments.client_duration.record(self.start.elapsed().as_secs_f64(), &attrs);
        self.instruments
            .attempts
            .add(1, &[KeyValue::new(TRIAGE_EXPERT, self.expert), KeyValue::new(TRIAGE_OUTCOME, kind)]);
        if self.tracing {
            let span = self.cx.span();
            span.set_attribute(KeyValue::new(ERROR_TYPE, kind));
            span.set_status(Status::error(message.to_string()));
            span.end();
        }
    }

    fn succeed(self, response_model: Option<String>, usage: Option<Usage>) {
        let i = &self.instruments;
        let mut attrs = self.attrs;
        if let Some(m) = &response_model {
            attrs.push(KeyValue::new(GEN_AI_RESPONSE_MODEL, m.clone()));
        }
        i.client_duration.record(self.start.elapsed().as_secs_f64(), &attrs);
        i.attempts.add(1, &[KeyValue::new(TRIAGE_EXPERT, self.expert.clone()), KeyValue::new(TRIAGE_OUTCOME, "ok")]);
        let mut cost = None;
        if let Some(u) = usage {
            let mut with_type = attrs.clone();
            with_type.push(KeyValue::new(GEN_AI_TOKEN_TYPE, "input"));
            i.token_usage.record(u.prompt_tokens, &with_type);
            if let Some(last) = with_type.last_mut() {
                *last = KeyValue::new(GEN_AI_TOKEN_TYPE, "output");
            }
            i.token_usage.record(u.completion_tokens, &with_type);
            let usd = (u.prompt_tokens as f64 * self.price.0 + u.completion_tokens as f64 * self.price.1)
                / TOKENS_PER_PRICE_UNIT;
            if usd > 0.0 {
                i.cost.add(usd, &[category_kv(&self.category), KeyValue::new(TRIAGE_EXPERT, self.expert.clone())]);
            }
            cost = Some(usd);
        }
        if self.tracing {
            let span = self.cx.span();
            if let Some(m) = response_model {
                span.set_attribute(KeyValue::new(GEN_AI_RESPONSE_MODEL, m));
            }
            if let Some(u) = usage {
                span.set_attribute(KeyValue::new(GEN_AI_USAGE_INPUT_TOKENS, u.prompt_tokens as i64));
                span.set_attribute(KeyValue::new(GEN_AI_USAGE_OUTPUT_TOKENS, u.completion_tokens as i64));
            }
            if let Some(c) = cost {
                span.set_attribute(KeyValue::new(TRIAGE_COST, c));
            }
            span.end();
        }
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
        r.usage = o.usage;
        match (o.error, self.attempt.inner) {
            (Some(kind), Some(a)) => {
                let message = format!("the stream ended early: {kind}");
                a.fail(kind, &message);
                // The status line said 200 long ago; the error is in the span and the metrics.
                r.end_at(200, Some(kind), Some(&message), None);
            }
            (None, Some(a)) => {
                if a.tracing {
                    let span = a.cx.span();
                    if let Some(id) = &o.response_id {
                        span.set_attribute(KeyValue::new(GEN_AI_RESPONSE_ID, id.clone()));
                    }
                    if !o.finish_reasons.is_empty() {
                        span.set_attribute(KeyValue::new(
                            GEN_AI_RESPONSE_FINISH_REASONS,
                            strings(o.finish_reasons.clone()),
                        ));
                    }
                }
                r.response_model.clone_from(&o.response_model);
                a.succeed(o.response_model.clone(), o.usage);
                r.end_at(200, None, None, o.first_event_at);
            }
            (error, None) => {
                r.response_model.clone_from(&o.response_model);
                r.end_at(200, error, None, o.first_event_at)
            }
        }
    }
}
