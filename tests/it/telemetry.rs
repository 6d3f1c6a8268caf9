//! Telemetry as an operator sees it: spans and metrics arriving at an OTLP receiver (the
//! real protobuf, decoded with opentelemetry-proto), `/metrics` scraped by a real
//! Prometheus, and every query of the shipped Grafana dashboards answered from it.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use axum::Router;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{metric, Metric};
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode, Span};
use prost::Message;
use serde_json::{json, Value};
use triage::telemetry::{Telemetry, TelemetryConfig};

use crate::mock::{Behavior, Mock};
use crate::support::{client, Gateway};

/// An OTLP/HTTP receiver (`/v1/traces`, `/v1/metrics`, protobuf bodies).
struct Receiver {
    addr: SocketAddr,
    traces: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    metrics: Arc<Mutex<Vec<ExportMetricsServiceRequest>>>,
}

#[derive(Clone, Default)]
struct Store {
    traces: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    metrics: Arc<Mutex<Vec<ExportMetricsServiceRequest>>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let store = Store::default();
        let app = Router::new()
            .route(
                "/v1/traces",
                post(|State(s): State<Store>, body: Bytes| async move {
                    s.traces
                        .lock()
                        .unwrap()
                        .push(ExportTraceServiceRequest::decode(body).expect("OTLP trace protobuf"));
                    ([("content-type", "application/x-protobuf")], Bytes::new())
                }),
            )
            .route(
                "/v1/metrics",
                post(|State(s): State<Store>, body: Bytes| async move {
                    s.metrics
                        .lock()
                        .unwrap()
                        .push(ExportMetricsServiceRequest::decode(body).expect("OTLP metrics protobuf"));
                    ([("content-type", "application/x-protobuf")], Bytes::new())
                }),
            )
            .with_state(store.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { addr, traces: store.traces, metrics: store.metrics }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Spans of one trace, with the resource's `service.name` checked on the way.
    fn spans(&self, trace_id: &[u8]) -> Vec<Span> {
        let mut out = Vec::new();
        for req in self.traces.lock().unwrap().iter() {
            for rs in &req.resource_spans {
                let res = rs.resource.as_ref().map(|r| r.attributes.as_slice()).unwrap_or_default();
                assert_eq!(string(res, "service.name").as_deref(), Some("triage"), "resource: {res:?}");
                for ss in &rs.scope_spans {
                    out.extend(ss.spans.iter().filter(|s| s.trace_id == trace_id).cloned());
                }
            }
        }
        out
    }

    /// The latest export of the metric `name`.
    fn metric(&self, name: &str) -> Option<Metric> {
        let all = self.metrics.lock().unwrap();
        all.iter()
            .rev()
            .flat_map(|r| r.resource_metrics.iter())
            .flat_map(|rm| rm.scope_metrics.iter())
            .flat_map(|sm| sm.metrics.iter())
            .find(|m| m.name == name)
            .cloned()
    }

    fn metric_names(&self) -> Vec<String> {
        let all = self.metrics.lock().unwrap();
        let mut names: Vec<String> = all
            .iter()
            .flat_map(|r| r.resource_metrics.iter())
            .flat_map(|rm| rm.scope_metrics.iter())
            .flat_map(|sm| sm.metrics.iter())
            .map(|m| m.name.clone())
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

fn value<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref()).and_then(|v| v.value.as_ref())
}

fn string(attrs: &[KeyValue], key: &str) -> Option<String> {
    match value(attrs, key)? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

fn int(attrs: &[KeyValue], key: &str) -> Option<i64> {
    match value(attrs, key)? {
        any_value::Value::IntValue(i) => Some(*i),
        _ => None,
    }
}

fn float(attrs: &[KeyValue], key: &str) -> Option<f64> {
    match value(attrs, key)? {
        any_value::Value::DoubleValue(f) => Some(*f),
        _ => None,
    }
}

fn strings(attrs: &[KeyValue], key: &str) -> Option<Vec<String>> {
    match value(attrs, key)? {
        any_value::Value::ArrayValue(a) => Some(
            a.values
                .iter()
                .filter_map(|v| match v.value.as_ref()? {
                    any_value::Value::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .collect(),
        ),
        _ => None,
    }
}

/// Attribute sets of a metric's data points.
fn point_attrs(m: &Metric) -> Vec<Vec<KeyValue>> {
    match m.data.as_ref().expect("metric data") {
        metric::Data::Histogram(h) => h.data_points.iter().map(|p| p.attributes.clone()).collect(),
        metric::Data::Sum(s) => s.data_points.iter().map(|p| p.attributes.clone()).collect(),
        metric::Data::Gauge(g) => g.data_points.iter().map(|p| p.attributes.clone()).collect(),
        other => panic!("unexpected metric type for {}: {other:?}", m.name),
    }
}

/// Exports what was recorded. Flushing blocks until the receiver answered, and the
/// receiver runs on this test's runtime, so it must not block the runtime's thread.
async fn flush(t: &Telemetry) {
    let t = t.clone();
    tokio::task::spawn_blocking(move || t.flush()).await.unwrap();
}

fn random_trace() -> ([u8; 16], String) {
    let id = ulid::Ulid::new().0.to_be_bytes();
    (id, hex::encode(id))
}

/// Two experts with prices: `a` fails with a 500, `b` answers.
fn priced_config(a: &Mock, b: &Mock) -> String {
    let mut s = String::from("[resilience]\nbackoff_base_ms = 1\nbackoff_max_ms = 5\n");
    for (name, url) in [("a", a.url()), ("b", b.url())] {
        s.push_str(&format!(
            "[[experts]]\nname = \"{name}\"\nkind = \"openai\"\nbase_url = \"{url}\"\nmodel = \"up-{name}\"\n\
             capabilities = [\"chat\", \"embeddings\"]\nprice = {{ input_per_mtok = 3.0, output_per_mtok = 15.0 }}\n\
             timeouts = {{ connect_ms = 500, first_byte_ms = 2000, total_ms = 5000 }}\n"
        ));
    }
    s.push_str("[[models]]\nname = \"triage\"\nexperts = [\"a\", \"b\"]\n");
    s
}

fn chat(stream: bool) -> Value {
    json!({"model": "triage", "stream": stream, "messages": [{"role": "user", "content": "Say hello."}]})
}

const PARENT_SPAN: &str = "00f067aa0ba902b7";

async fn send(gw: &Gateway, trace: &str, body: &Value) -> reqwest::Response {
    client()
        .post(gw.url("/v1/chat/completions"))
        .header("traceparent", format!("00-{trace}-{PARENT_SPAN}-01"))
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_routed_request_arrives_over_otlp_as_one_trace_with_genai_attributes_and_metrics() {
    let rx = Receiver::start().await;
    let a = Mock::start("a", Behavior::ServerError).await;
    let b = Mock::start("b", Behavior::Ok).await;
    let telemetry = Telemetry::start(&TelemetryConfig::otlp(&rx.url())).unwrap();
    let gw = Gateway::start_with_telemetry(&priced_config(&a, &b), Duration::from_secs(5), telemetry.clone()).await;

    let (trace_bytes, trace) = random_trace();
    let resp = send(&gw, &trace, &chat(false)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-triage-expert"], "b");
    let (stream_bytes, stream_trace) = random_trace();
    let streamed = send(&gw, &stream_trace, &chat(true)).await.text().await.unwrap();
    assert!(streamed.contains("[DONE]"), "{streamed}");
    flush(&telemetry).await;

    let spans = rx.spans(&trace_bytes);
    let names: Vec<_> = spans.iter().map(|s| (s.name.clone(), s.kind)).collect();
    let server = spans.iter().find(|s| s.kind == SpanKind::Server as i32).unwrap_or_else(|| {
        let got = rx.traces.lock().unwrap().len();
        let text = telemetry.render_prometheus().unwrap_or_default();
        panic!("no server span in trace {trace}: {names:?}; {got} exports received; /metrics:\n{text}")
    });
    assert_eq!(server.name, "POST /v1/chat/completions");
    assert_eq!(hex::encode(&server.parent_span_id), PARENT_SPAN, "the client's traceparent is continued");
    let attrs = &server.attributes;
    assert_eq!(string(attrs, "gen_ai.operation.name").as_deref(), Some("chat"));
    assert_eq!(string(attrs, "gen_ai.request.model").as_deref(), Some("triage"));
    assert_eq!(string(attrs, "gen_ai.response.model").as_deref(), Some("up-b"));
    assert_eq!(int(attrs, "http.response.status_code"), Some(200));
    assert_eq!(int(attrs, "gen_ai.usage.input_tokens"), Some(11), "the winning reply's usage");
    assert_eq!(int(attrs, "gen_ai.usage.output_tokens"), Some(4));
    assert_eq!(string(attrs, "triage.category").as_deref(), Some("none"));
    assert!(value(attrs, "gen_ai.input.messages").is_none(), "prompts only when the operator opts in");

    let route = spans.iter().find(|s| s.name == "route").unwrap_or_else(|| panic!("{names:?}"));
    assert_eq!(route.parent_span_id, server.span_id);
    assert_eq!(strings(&route.attributes, "triage.experts"), Some(vec!["a".into(), "b".into()]));
    assert!(route.end_time_unix_nano >= route.start_time_unix_nano);

    let clients: Vec<&Span> = spans.iter().filter(|s| s.kind == SpanKind::Client as i32).collect();
    assert_eq!(clients.len(), 2, "one client span per attempt: {names:?}");
    assert!(clients.iter().all(|c| c.parent_span_id == server.span_id));
    let failed = clients.iter().find(|c| string(&c.attributes, "triage.expert").as_deref() == Some("a")).unwrap();
    assert_eq!(failed.name, "chat up-a");
    assert_eq!(string(&failed.attributes, "error.type").as_deref(), Some("upstream_5xx"));
    assert_eq!(failed.status.as_ref().map(|s| s.code), Some(StatusCode::Error as i32));
    let ok = clients.iter().find(|c| string(&c.attributes, "triage.expert").as_deref() == Some("b")).unwrap();
    let at = &ok.attributes;
    assert_eq!(ok.name, "chat up-b");
    assert_eq!(string(at, "gen_ai.operation.name").as_deref(), Some("chat"));
    assert_eq!(string(at, "gen_ai.provider.name").as_deref(), Some("openai"));
    assert_eq!(string(at, "gen_ai.request.model").as_deref(), Some("up-b"));
    assert_eq!(string(at, "gen_ai.response.model").as_deref(), Some("up-b"));
    assert_eq!(string(at, "gen_ai.response.id").as_deref(), Some("chatcmpl-mock"));
    assert_eq!(strings(at, "gen_ai.response.finish_reasons"), Some(vec!["stop".to_string()]));
    assert_eq!(int(at, "gen_ai.usage.input_tokens"), Some(11));
    assert_eq!(int(at, "gen_ai.usage.output_tokens"), Some(4));
    assert_eq!(string(at, "server.address").as_deref(), Some("127.0.0.1"));
    assert_eq!(int(at, "server.port"), Some(i64::from(b.addr.port())));
    let cost = float(at, "triage.cost.usd").unwrap();
    assert!((cost - (11.0 * 3.0 + 4.0 * 15.0) / 1e6).abs() < 1e-12, "{cost}");
    assert!(value(at, "error.type").is_none());

    // The expert saw the gateway's client span as its parent, not the client's span.
    let sent = b.headers.lock().unwrap()[0]["traceparent"].to_str().unwrap().to_string();
    assert_eq!(sent, format!("00-{trace}-{}-01", hex::encode(&ok.span_id)));

    // The stream's trace: the client span ends with the stream and carries its usage.
    let stream_spans = rx.spans(&stream_bytes);
    let stream_client = stream_spans
        .iter()
        .find(|s| s.kind == SpanKind::Client as i32 && string(&s.attributes, "triage.expert").as_deref() == Some("b"))
        .unwrap_or_else(|| panic!("{stream_spans:?}"));
    let at = &stream_client.attributes;
    assert_eq!(int(at, "gen_ai.usage.output_tokens"), Some(4));
    assert_eq!(string(at, "gen_ai.response.model").as_deref(), Some("up-b"));
    assert_eq!(string(at, "gen_ai.response.id").as_deref(), Some("chatcmpl-mock"));
    assert_eq!(strings(at, "gen_ai.response.finish_reasons"), Some(vec!["stop".to_string()]));
    let stream_server = stream_spans.iter().find(|s| s.kind == SpanKind::Server as i32).unwrap();
    assert_eq!(string(&stream_server.attributes, "gen_ai.response.model").as_deref(), Some("up-b"));

    // Embeddings continue the client's trace to the expert as well.
    let (embed_bytes, embed_trace) = random_trace();
    let resp = client()
        .post(gw.url("/v1/embeddings"))
        .header("traceparent", format!("00-{embed_trace}-{PARENT_SPAN}-01"))
        .json(&json!({"model": "b", "input": ["hello"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    flush(&telemetry).await;
    let sent = b.headers.lock().unwrap().last().unwrap()["traceparent"].to_str().unwrap().to_string();
    let embed_spans = rx.spans(&embed_bytes);
    let embed_client =
        embed_spans.iter().find(|s| s.kind == SpanKind::Client as i32).unwrap_or_else(|| panic!("{embed_spans:?}"));
    assert_eq!(sent, format!("00-{embed_trace}-{}-01", hex::encode(&embed_client.span_id)));
    assert_eq!(string(&embed_client.attributes, "gen_ai.operation.name").as_deref(), Some("embeddings"));

    let names = rx.metric_names();
    for name in [
        "gen_ai.client.operation.duration",
        "gen_ai.client.token.usage",
        "gen_ai.server.request.duration",
        "gen_ai.server.time_to_first_token",
        "gen_ai.server.time_per_output_token",
        "triage.requests",
        "triage.routing.decisions",
        "triage.expert.attempts",
        "triage.fallbacks",
        "triage.cost.usd",
    ] {
        assert!(names.iter().any(|n| n == name), "{name} missing from OTLP metrics: {names:?}");
    }
    let duration = rx.metric("gen_ai.client.operation.duration").unwrap();
    assert_eq!(duration.unit, "s");
    let Some(metric::Data::Histogram(h)) = &duration.data else { panic!("{duration:?}") };
    assert_eq!(
        h.data_points[0].explicit_bounds,
        vec![0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92],
        "the GenAI conventions' buckets"
    );
    let errors: Vec<_> = point_attrs(&duration).iter().filter_map(|a| string(a, "error.type")).collect();
    assert!(errors.contains(&"upstream_5xx".to_string()), "{errors:?}");
    let tokens = rx.metric("gen_ai.client.token.usage").unwrap();
    let mut types: Vec<_> = point_attrs(&tokens).iter().filter_map(|a| string(a, "gen_ai.token.type")).collect();
    types.sort();
    types.dedup();
    assert_eq!(types, ["input", "output"]);
    let fallbacks = rx.metric("triage.fallbacks").unwrap();
    assert!(point_attrs(&fallbacks)
        .iter()
        .any(|a| string(a, "triage.fallback.reason").as_deref() == Some("upstream_5xx")
            && string(a, "triage.expert").as_deref() == Some("a")));
    telemetry.shutdown();
}

#[tokio::test]
async fn prompts_and_completions_are_recorded_only_when_the_operator_opts_in() {
    let rx = Receiver::start().await;
    let a = Mock::start("a", Behavior::Ok).await;
    let b = Mock::start("b", Behavior::Ok).await;
    let cfg = TelemetryConfig { capture_content: true, ..TelemetryConfig::otlp(&rx.url()) };
    let telemetry = Telemetry::start(&cfg).unwrap();
    let gw = Gateway::start_with_telemetry(&priced_config(&a, &b), Duration::from_secs(5), telemetry.clone()).await;
    let (trace_bytes, trace) = random_trace();
    assert_eq!(send(&gw, &trace, &chat(false)).await.status(), 200);
    flush(&telemetry).await;
    let spans = rx.spans(&trace_bytes);
    let server = spans.iter().find(|s| s.kind == SpanKind::Server as i32).unwrap();
    assert!(string(&server.attributes, "gen_ai.input.messages").unwrap().contains("Say hello."));
    let client_span = spans.iter().find(|s| s.kind == SpanKind::Client as i32).unwrap();
    assert!(string(&client_span.attributes, "gen_ai.output.messages").unwrap().contains("Hello from the mock"));
}

#[tokio::test]
async fn sampling_follows_the_client_and_the_sampler_and_unsampled_requests_still_propagate() {
    let rx = Receiver::start().await;
    let a = Mock::start("a", Behavior::Ok).await;
    let b = Mock::start("b", Behavior::Ok).await;
    // The default sampler, parentbased_always_on, respects a client that did not sample.
    let telemetry = Telemetry::start(&TelemetryConfig::otlp(&rx.url())).unwrap();
    let gw = Gateway::start_with_telemetry(&priced_config(&a, &b), Duration::from_secs(5), telemetry.clone()).await;
    let (unsampled_bytes, unsampled) = random_trace();
    let resp = client()
        .post(gw.url("/v1/chat/completions"))
        .header("traceparent", format!("00-{unsampled}-{PARENT_SPAN}-00"))
        .json(&chat(false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // A client without a trace context starts a sampled trace of its own.
    assert_eq!(client().post(gw.url("/v1/chat/completions")).json(&chat(false)).send().await.unwrap().status(), 200);
    flush(&telemetry).await;
    assert!(rx.spans(&unsampled_bytes).is_empty(), "the client said: not sampled");
    let sent: Vec<String> =
        a.headers.lock().unwrap().iter().map(|h| h["traceparent"].to_str().unwrap().to_string()).collect();
    assert_eq!(sent.len(), 2, "{sent:?}");
    let unsampled_sent: Vec<&str> = sent[0].split('-').collect();
    assert_eq!((unsampled_sent[1], unsampled_sent[3]), (unsampled.as_str(), "00"), "{sent:?}");
    assert_ne!(unsampled_sent[2], PARENT_SPAN, "the gateway's own (unrecorded) span is the expert's parent");
    let root: Vec<&str> = sent[1].split('-').collect();
    assert_eq!(root[3], "01", "{sent:?}");
    let root_trace = hex::decode(root[1]).unwrap();
    let spans = rx.spans(&root_trace);
    let server = spans.iter().find(|s| s.kind == SpanKind::Server as i32).unwrap_or_else(|| panic!("{spans:?}"));
    assert!(server.parent_span_id.is_empty(), "a root span: {server:?}");
    let client_span = spans.iter().find(|s| s.kind == SpanKind::Client as i32).unwrap();
    assert_eq!(hex::encode(&client_span.span_id), root[2]);

    // OTEL_TRACES_SAMPLER=always_off: nothing is exported, yet the expert still gets a context.
    let off = TelemetryConfig {
        sampler: triage::telemetry::sampler_from(Some("always_off"), None).unwrap(),
        ..TelemetryConfig::otlp(&rx.url())
    };
    let telemetry = Telemetry::start(&off).unwrap();
    let c = Mock::start("c", Behavior::Ok).await;
    let gw = Gateway::start_with_telemetry(&priced_config(&c, &b), Duration::from_secs(5), telemetry.clone()).await;
    let (off_bytes, off_trace) = random_trace();
    assert_eq!(send(&gw, &off_trace, &chat(false)).await.status(), 200);
    flush(&telemetry).await;
    assert!(rx.spans(&off_bytes).is_empty());
    let sent = c.headers.lock().unwrap()[0]["traceparent"].to_str().unwrap().to_string();
    assert!(sent.starts_with(&format!("00-{off_trace}-")) && sent.ends_with("-00"), "{sent}");
}

#[tokio::test]
async fn with_telemetry_off_the_clients_trace_context_is_forwarded_verbatim_and_metrics_is_404() {
    let a = Mock::start("a", Behavior::Ok).await;
    let b = Mock::start("b", Behavior::Ok).await;
    let off = Telemetry::start(&TelemetryConfig::disabled()).unwrap();
    let gw = Gateway::start_with_telemetry(&priced_config(&a, &b), Duration::from_secs(5), off).await;
    let (_, trace) = random_trace();
    assert_eq!(send(&gw, &trace, &chat(false)).await.status(), 200);
    let sent = a.headers.lock().unwrap()[0]["traceparent"].to_str().unwrap().to_string();
    assert_eq!(sent, format!("00-{trace}-{PARENT_SPAN}-01"));
    assert_eq!(client().get(gw.url("/metrics")).send().await.unwrap().status(), 404);
}

#[tokio::test]
async fn a_dead_collector_costs_requests_nothing_and_the_loss_is_counted_on_metrics() {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let a = Mock::start("a", Behavior::Ok).await;
    let b = Mock::start("b", Behavior::Ok).await;
    let cfg = TelemetryConfig {
        export_timeout: Duration::from_millis(500),
        ..TelemetryConfig::otlp(&format!("http://{dead}"))
    };
    let telemetry = Telemetry::start(&cfg).unwrap();
    let gw = Gateway::start_with_telemetry(&priced_config(&a, &b), Duration::from_secs(5), telemetry.clone()).await;
    for _ in 0..5 {
        let (_, trace) = random_trace();
        let started = Instant::now();
        assert_eq!(send(&gw, &trace, &chat(false)).await.status(), 200);
        assert!(started.elapsed() < Duration::from_millis(400), "took {:?}", started.elapsed());
    }
    flush(&telemetry).await;
    let text = client().get(gw.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let dropped =
        sample(&text, "triage_telemetry_dropped_total{triage_reason=\"export_failed\",triage_signal=\"traces\"}");
    assert!(dropped >= 5.0 * 3.0, "5 requests x (server + route + client) spans; got {dropped}\n{text}");
}

/// The value of the sample `series` (name and labels exactly as rendered).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

/// Prometheus' `expr`s in the shipped dashboards, with Grafana's variables filled in.
fn dashboard_queries() -> Vec<(String, String)> {
    fn walk(v: &Value, title: &str, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(o) => {
                let title = o.get("title").and_then(Value::as_str).unwrap_or(title);
                if let Some(expr) = o.get("expr").and_then(Value::as_str) {
                    out.push((title.to_string(), expr.replace("$__rate_interval", "1m").replace("$__range", "5m")));
                }
                o.values().for_each(|c| walk(c, title, out));
            }
            Value::Array(a) => a.iter().for_each(|c| walk(c, title, out)),
            _ => {}
        }
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana/dashboards");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            walk(&v, "", &mut out);
        }
    }
    assert!(out.len() >= 15, "the dashboards have their queries: {out:?}");
    out
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test]
async fn every_dashboard_query_returns_data_from_a_real_prometheus_scraping_metrics() {
    let queries = dashboard_queries();
    let which = std::process::Command::new("which").arg("prometheus").output().unwrap();
    let binary = String::from_utf8_lossy(&which.stdout).trim().to_string();
    assert!(
        which.status.success() && !binary.is_empty(),
        "the `prometheus` binary is not installed; scripts/test.sh installs it (apt-get install -y prometheus)"
    );

    let a = Mock::start("a", Behavior::ServerError).await;
    let b = Mock::start("b", Behavior::Ok).await;
    let gw = Gateway::start_with_telemetry(&priced_config(&a, &b), Duration::from_secs(5), Telemetry::local()).await;
    let c = client();
    assert_eq!(c.post(gw.url("/v1/chat/completions")).json(&chat(false)).send().await.unwrap().status(), 200);
    let streamed = c.post(gw.url("/v1/chat/completions")).json(&chat(true)).send().await.unwrap().text().await.unwrap();
    assert!(streamed.contains("[DONE]"));
    let emb = json!({"model": "b", "input": ["x"]});
    assert_eq!(c.post(gw.url("/v1/embeddings")).json(&emb).send().await.unwrap().status(), 200);
    let unknown = json!({"model": "nope", "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(c.post(gw.url("/v1/chat/completions")).json(&unknown).send().await.unwrap().status(), 404);
    let metrics = c.get(gw.url("/metrics")).send().await.unwrap();
    assert!(metrics.headers()["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: triage\n    static_configs:\n      - targets: ['{}']\n",
            gw.addr
        ),
    )
    .unwrap();
    let port = free_port();
    let _prometheus = tokio::process::Command::new(&binary)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {binary}: {e}"));
    let api = format!("http://127.0.0.1:{port}/api/v1/query");

    // Each query is retried until it has data: the first scrapes take a few seconds, and
    // rate() needs two samples.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut failures = Vec::new();
    for (title, expr) in &queries {
        let mut last = Value::Null;
        let answered = loop {
            if let Ok(r) = c.get(&api).query(&[("query", expr.as_str())]).send().await {
                last = r.json().await.unwrap_or(Value::Null);
                if last["status"] == "success" && last["data"]["result"].as_array().is_some_and(|r| !r.is_empty()) {
                    break true;
                }
                if last["status"] == "error" {
                    break false;
                }
            }
            if Instant::now() > deadline {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        if !answered {
            failures.push(format!("panel {title:?}: {expr}\n  -> {last}"));
        }
    }
    let scraped = c.get(gw.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        failures.is_empty(),
        "dashboard queries without data:\n{}\n\n/metrics was:\n{scraped}",
        failures.join("\n")
    );
}
