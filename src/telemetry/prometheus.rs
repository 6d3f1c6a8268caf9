//! Renders the OpenTelemetry SDK's metrics in the Prometheus text format (version 0.0.4),
//! for `GET /metrics`.
//!
//! Names follow the OpenTelemetry-to-Prometheus compatibility spec: dots become
//! underscores, the unit is appended (`s` -> `_seconds`; annotations such as `{token}` are
//! dropped) and monotonic sums end in `_total`. So `gen_ai.server.request.duration` is
//! scraped as `gen_ai_server_request_duration_seconds_bucket`, which is what the shipped
//! dashboards query (a test runs every one of their queries against a real Prometheus).

use std::collections::HashSet;
use std::fmt::Write;

use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, Metric, MetricData, ResourceMetrics};

use super::metrics::{Def, Kind, DEFS};

/// The media type Prometheus expects for the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Prometheus name of an instrument.
pub(crate) fn name(otel: &str, unit: &str, kind: Kind) -> String {
    let mut n: String =
        otel.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == ':' { c } else { '_' }).collect();
    let suffix = match unit {
        "s" => Some("seconds"),
        "ms" => Some("milliseconds"),
        "By" => Some("bytes"),
        // `1` (a ratio) and `{annotations}` carry no unit worth a suffix.
        _ => None,
    };
    if let Some(s) = suffix {
        if !n.ends_with(s) {
            n.push('_');
            n.push_str(s);
        }
    }
    if kind == Kind::Counter {
        n.push_str("_total");
    }
    n
}

fn label_name(key: &str) -> String {
    key.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect()
}

fn write_labels<'a>(out: &mut String, attrs: impl Iterator<Item = &'a KeyValue>, extra: Option<(&str, &str)>) {
    let mut first = true;
    let mut open = |out: &mut String| {
        out.push(if first { '{' } else { ',' });
        first = false;
    };
    // The SDK keeps the attribute order of the first measurement; sorting makes a series'
    // label order stable, as Prometheus client libraries do.
    let mut attrs: Vec<&KeyValue> = attrs.collect();
    attrs.sort_by(|a, b| a.key.as_str().cmp(b.key.as_str()));
    for kv in attrs {
        open(out);
        let value = match &kv.value {
            Value::String(s) => s.as_str().to_string(),
            v => v.as_str().into_owned(),
        };
        let _ = write!(out, "{}=\"{}\"", label_name(kv.key.as_str()), escape(&value));
    }
    if let Some((k, v)) = extra {
        open(out);
        let _ = write!(out, "{k}=\"{v}\"");
    }
    if !first {
        out.push('}');
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn float(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else {
        v.to_string()
    }
}

trait Num: Copy {
    fn text(self) -> String;
}
impl Num for u64 {
    fn text(self) -> String {
        self.to_string()
    }
}
impl Num for i64 {
    fn text(self) -> String {
        self.to_string()
    }
}
impl Num for f64 {
    fn text(self) -> String {
        float(self)
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {}", help.replace('\\', "\\\\").replace('\n', "\\n"));
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Writes one metric; returns false when it has no data points (nothing written).
fn write_metric<T: Num>(out: &mut String, m: &Metric, data: &MetricData<T>) -> bool {
    match data {
        MetricData::Sum(sum) => {
            if sum.data_points().next().is_none() {
                return false;
            }
            let kind = if sum.is_monotonic() { Kind::Counter } else { Kind::Gauge };
            let n = name(m.name(), m.unit(), kind);
            header(out, &n, m.description(), if kind == Kind::Counter { "counter" } else { "gauge" });
            for p in sum.data_points() {
                out.push_str(&n);
                write_labels(out, p.attributes(), None);
                let _ = writeln!(out, " {}", p.value().text());
            }
        }
        MetricData::Gauge(g) => {
            if g.data_points().next().is_none() {
                return false;
            }
            let n = name(m.name(), m.unit(), Kind::Gauge);
            header(out, &n, m.description(), "gauge");
            for p in g.data_points() {
                out.push_str(&n);
                write_labels(out, p.attributes(), None);
                let _ = writeln!(out, " {}", p.value().text());
            }
        }
        MetricData::Histogram(h) => {
            if h.data_points().next().is_none() {
                return false;
            }
            let n = name(m.name(), m.unit(), Kind::Histogram);
            header(out, &n, m.description(), "histogram");
            for p in h.data_points() {
                let mut cumulative = 0u64;
                let bounds: Vec<f64> = p.bounds().collect();
                for (i, count) in p.bucket_counts().enumerate() {
                    cumulative += count;
                    let le = bounds.get(i).map_or_else(|| "+Inf".to_string(), |b| float(*b));
                    let _ = write!(out, "{n}_bucket");
                    write_labels(out, p.attributes(), Some(("le", &le)));
                    let _ = writeln!(out, " {cumulative}");
                }
                let _ = write!(out, "{n}_sum");
                write_labels(out, p.attributes(), None);
                let _ = writeln!(out, " {}", p.sum().text());
                let _ = write!(out, "{n}_count");
                write_labels(out, p.attributes(), None);
                let _ = writeln!(out, " {}", p.count());
            }
        }
        // Only views configure exponential histograms, and the gateway defines none.
        MetricData::ExponentialHistogram(_) => return false,
    }
    true
}

/// A declared instrument without data yet, as zero series (see [`Def::zero`]).
fn write_zero(out: &mut String, d: &Def) {
    let n = name(d.name, d.unit, d.kind);
    let kind = match d.kind {
        Kind::Counter => "counter",
        Kind::Gauge => "gauge",
        Kind::Histogram => "histogram",
    };
    header(out, &n, d.help, kind);
    let unlabelled: &[&[(&str, &str)]] = &[&[]];
    for labels in if d.zero.is_empty() { unlabelled } else { d.zero } {
        let with = |extra: Option<(&str, &str)>| {
            let all: Vec<String> = labels.iter().chain(extra.iter()).map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            if all.is_empty() {
                String::new()
            } else {
                format!("{{{}}}", all.join(","))
            }
        };
        if d.kind != Kind::Histogram {
            let _ = writeln!(out, "{n}{} 0", with(None));
            continue;
        }
        for b in d.bounds.iter().map(|b| float(*b)).chain(std::iter::once("+Inf".to_string())) {
            let _ = writeln!(out, "{n}_bucket{} 0", with(Some(("le", &b))));
        }
        let _ = writeln!(out, "{n}_sum{} 0\n{n}_count{} 0", with(None), with(None));
    }
}

/// The whole exposition.
pub(crate) fn render(rm: &ResourceMetrics) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let mut seen = HashSet::new();
    for scope in rm.scope_metrics() {
        for m in scope.metrics() {
            let wrote = match m.data() {
                AggregatedMetrics::F64(d) => write_metric(&mut out, m, d),
                AggregatedMetrics::U64(d) => write_metric(&mut out, m, d),
                AggregatedMetrics::I64(d) => write_metric(&mut out, m, d),
            };
            if wrote {
                seen.insert(m.name().to_string());
            }
        }
    }
    for d in DEFS.iter().filter(|d| !seen.contains(d.name)) {
        write_zero(&mut out, d);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_otel_to_prometheus_rules() {
        assert_eq!(
            name("gen_ai.server.request.duration", "s", Kind::Histogram),
            "gen_ai_server_request_duration_seconds"
        );
        assert_eq!(name("gen_ai.client.token.usage", "{token}", Kind::Histogram), "gen_ai_client_token_usage");
        assert_eq!(name("triage.requests", "{request}", Kind::Counter), "triage_requests_total");
        assert_eq!(name("triage.accuracy", "1", Kind::Gauge), "triage_accuracy");
    }
}

#[cfg(test)]
mod recording_tests {
    use std::time::Duration;

    use crate::telemetry::Telemetry;

    fn line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(prefix))
    }

    #[test]
    fn the_component_api_shows_up_on_metrics_and_a_move_zeroes_the_old_tier() {
        let t = Telemetry::local();
        let m = t.metrics();
        let before = t.render_prometheus().unwrap_or_default();
        assert!(before.contains("\ntriage_local_swaps_total 0\n"), "zero series before any swap:\n{before}");
        assert!(before.contains("triage_local_swap_duration_seconds_bucket{le=\"+Inf\"} 0"), "{before}");
        m.tier_residency("qwen", "cpu");
        m.swap("qwen", "cpu", "gpu", Duration::from_millis(1500));
        m.classifier_latency(Duration::from_micros(800));
        m.ledger_backlog(7);
        m.policy_reload(false);
        m.feedback(Some("code"), "qwen", true);
        let text = t.render_prometheus().unwrap_or_default();
        let residency = "triage_local_tier_residency{triage_expert=\"qwen\",";
        assert_eq!(line(&text, &format!("{residency}triage_tier=\"gpu\"}}")).map(|l| l.ends_with(" 1")), Some(true));
        assert_eq!(line(&text, &format!("{residency}triage_tier=\"cpu\"}}")).map(|l| l.ends_with(" 0")), Some(true));
        assert!(
            text.contains(
                "triage_local_swaps_total{triage_expert=\"qwen\",triage_tier_from=\"cpu\",triage_tier_to=\"gpu\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("triage_local_swap_duration_seconds_bucket{triage_expert=\"qwen\",le=\"2.5\"} 1"),
            "{text}"
        );
        assert!(text.contains("triage_classifier_duration_seconds_bucket{le=\"0.001\"} 1"), "{text}");
        assert!(text.contains("\ntriage_ledger_backlog 7\n"), "{text}");
        assert!(text.contains("triage_policy_reloads_total{triage_outcome=\"error\"} 1"), "{text}");
        assert!(
            text.contains(
                "triage_feedback_total{triage_category=\"code\",triage_expert=\"qwen\",triage_outcome=\"good\"} 1"
            ),
            "{text}"
        );
    }

    #[test]
    fn disabled_telemetry_renders_nothing_and_records_nothing() {
        let t = Telemetry::default();
        t.metrics().ledger_backlog(3);
        assert!(t.render_prometheus().is_none());
    }
}
