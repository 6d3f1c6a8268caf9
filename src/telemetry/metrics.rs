//! Every instrument the gateway records, and the small recording API the rest of the
//! crate (classifier, local experts, ledger, policy reload) calls.
//!
//! Instruments are declared once in [`DEFS`]; the Prometheus renderer uses the same table
//! to show an instrument that has no data yet as a zero series, so a dashboard panel for a
//! signal that has not happened (no swap yet, no reload yet) shows 0, not "No data".

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::metrics::{Counter, Gauge, Histogram, Meter};
use opentelemetry::KeyValue;

use super::bound::Bound;
use super::semconv::*;

/// Bucket boundaries from the GenAI semantic conventions (v1.37, "metrics" page): durations
/// in seconds, spanning 10 ms to ~80 s ...
const DURATION_BUCKETS: &[f64] =
    &[0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92];
/// ... token counts in powers of 4 up to 64 Mi ...
const TOKEN_BUCKETS: &[f64] = &[
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0,
    67108864.0,
];
/// ... time to first token, 1 ms to 10 s ...
const TTFT_BUCKETS: &[f64] =
    &[0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0];
/// ... and time per output token, 10 ms to 2.5 s.
const TPOT_BUCKETS: &[f64] = &[0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5];
/// Classification runs in-process in about a millisecond; the GenAI buckets start at 10 ms
/// and would put every observation in the first bucket.
const CLASSIFIER_BUCKETS: &[f64] = &[0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0];
/// Loading or moving model weights takes from a fraction of a second (a small model from
/// page cache) to minutes (a large one from disk).
const LOAD_BUCKETS: &[f64] = &[0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One instrument as declared to OpenTelemetry.
#[derive(Debug)]
pub(crate) struct Def {
    pub name: &'static str,
    pub unit: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub bounds: &'static [f64],
    /// Label sets (Prometheus names, sorted like the SDK sorts attributes) of the zero series shown before the first
    /// measurement; none means one unlabelled series. Dashboards that filter on a label
    /// (`{triage_outcome="good"}`) need it present to show 0.
    pub zero: &'static [&'static [(&'static str, &'static str)]],
}

const fn def(name: &'static str, unit: &'static str, kind: Kind, bounds: &'static [f64], help: &'static str) -> Def {
    Def { name, unit, help, kind, bounds, zero: &[] }
}

use Kind::{Counter as C, Gauge as G, Histogram as H};

pub(crate) const CLIENT_DURATION: Def =
    def("gen_ai.client.operation.duration", "s", H, DURATION_BUCKETS, "Duration of one call to an expert.");
pub(crate) const TOKEN_USAGE: Def =
    def("gen_ai.client.token.usage", "{token}", H, TOKEN_BUCKETS, "Tokens used by one call to an expert.");
pub(crate) const SERVER_DURATION: Def =
    def("gen_ai.server.request.duration", "s", H, DURATION_BUCKETS, "Duration of one request to the gateway.");
pub(crate) const TTFT: Def = def(
    "gen_ai.server.time_to_first_token",
    "s",
    H,
    TTFT_BUCKETS,
    "Time from the request to the first streamed event.",
);
pub(crate) const TPOT: Def = def(
    "gen_ai.server.time_per_output_token",
    "s",
    H,
    TPOT_BUCKETS,
    "Time per output token after the first one (streams).",
);
pub(crate) const REQUESTS: Def = def("triage.requests", "{request}", C, &[], "Requests answered, by outcome.");
pub(crate) const ROUTING_DECISIONS: Def =
    def("triage.routing.decisions", "{decision}", C, &[], "Routing decisions by category and first expert.");
pub(crate) const ATTEMPTS: Def = def("triage.expert.attempts", "{attempt}", C, &[], "Calls to experts, by outcome.");
pub(crate) const FALLBACKS: Def =
    def("triage.fallbacks", "{fallback}", C, &[], "Experts passed over, by reason (error type, breaker, uncertainty).");
pub(crate) const ERRORS: Def = def("triage.errors", "{error}", C, &[], "Requests answered with an error, by type.");
pub(crate) const COST: Def = def("triage.cost.usd", "{USD}", C, &[], "Spend from token usage and the experts' prices.");
pub(crate) const CLASSIFIER_DURATION: Def =
    def("triage.classifier.duration", "s", H, CLASSIFIER_BUCKETS, "Time to classify one prompt.");
pub(crate) const CLASSIFIER_QUEUE: Def =
    def("triage.classifier.queue_depth", "{job}", G, &[], "Prompts waiting for the classifier.");
pub(crate) const TIER_RESIDENCY: Def =
    def("triage.local.tier_residency", "{expert}", G, &[], "1 where a local expert's weights live now, else 0.");
pub(crate) const SWAPS: Def = def("triage.local.swaps", "{swap}", C, &[], "Local experts moved between tiers.");
pub(crate) const SWAP_DURATION: Def =
    def("triage.local.swap.duration", "s", H, LOAD_BUCKETS, "Time to move a local expert between tiers.");
pub(crate) const LOAD_DURATION: Def =
    def("triage.local.load.duration", "s", H, LOAD_BUCKETS, "Time to load a local expert's weights.");
pub(crate) const LEDGER_BACKLOG: Def =
    def("triage.ledger.backlog", "{record}", G, &[], "Ledger records waiting to be written.");
pub(crate) const POLICY_RELOADS: Def = Def {
    zero: &[&[("triage_outcome", "ok")], &[("triage_outcome", "error")]],
    ..def("triage.policy.reloads", "{reload}", C, &[], "Policy reloads, by outcome (ok or error).")
};
pub(crate) const FEEDBACK: Def = Def {
    zero: &[&[("triage_outcome", "good")], &[("triage_outcome", "bad")]],
    ..def("triage.feedback", "{feedback}", C, &[], "Answers judged by users or evals, by outcome (good or bad).")
};
pub(crate) const ACCURACY: Def =
    def("triage.accuracy", "1", G, &[], "Accuracy of an expert on a category from the latest evaluation.");
pub(crate) const DROPPED: Def = Def {
    zero: &[
        &[("triage_reason", "queue_full"), ("triage_signal", "traces")],
        &[("triage_reason", "export_failed"), ("triage_signal", "traces")],
        &[("triage_reason", "export_failed"), ("triage_signal", "metrics")],
    ],
    ..def("triage.telemetry.dropped", "{item}", C, &[], "Spans or metric exports lost (queue full, export failed).")
};

/// Every instrument, in the order `/metrics` shows them.
pub(crate) const DEFS: &[&Def] = &[
    &REQUESTS,
    &ERRORS,
    &SERVER_DURATION,
    &TTFT,
    &TPOT,
    &CLIENT_DURATION,
    &TOKEN_USAGE,
    &ATTEMPTS,
    &FALLBACKS,
    &ROUTING_DECISIONS,
    &COST,
    &CLASSIFIER_DURATION,
    &CLASSIFIER_QUEUE,
    &TIER_RESIDENCY,
    &SWAPS,
    &SWAP_DURATION,
    &LOAD_DURATION,
    &LEDGER_BACKLOG,
    &POLICY_RELOADS,
    &FEEDBACK,
    &ACCURACY,
    &DROPPED,
];

/// What went wrong with telemetry itself.
#[derive(Debug, Clone, Copy)]
pub enum Drop {
    /// The export queue was full: the collector is slower than the traffic.
    QueueFull,
    /// The collector refused the batch or could not be reached.
    ExportFailed,
}

impl Drop {
    fn label(self) -> &'static str {
        match self {
            Self::QueueFull => "queue_full",
            Self::ExportFailed => "export_failed",
        }
    }
}

pub(crate) struct Instruments {
    // Measured on every request: bound per attribute set (see `bound`).
    pub client_duration: Bound<Histogram<f64>, f64>,
    pub token_usage: Bound<Histogram<u64>, u64>,
    pub server_duration: Bound<Histogram<f64>, f64>,
    pub ttft: Bound<Histogram<f64>, f64>,
    pub tpot: Bound<Histogram<f64>, f64>,
    pub requests: Bound<Counter<u64>, u64>,
    pub routing_decisions: Bound<Counter<u64>, u64>,
    pub attempts: Bound<Counter<u64>, u64>,
    pub fallbacks: Bound<Counter<u64>, u64>,
    pub errors: Bound<Counter<u64>, u64>,
    pub cost: Bound<Counter<f64>, f64>,
    classifier_duration: Histogram<f64>,
    classifier_queue: Gauge<i64>,
    tier_residency: Gauge<i64>,
    swaps: Counter<u64>,
    swap_duration: Histogram<f64>,
    load_duration: Histogram<f64>,
    ledger_backlog: Gauge<i64>,
    policy_reloads: Counter<u64>,
    feedback: Counter<u64>,
    accuracy: Gauge<f64>,
    dropped: Counter<u64>,
    /// The tier each local expert was last reported in, so moving it zeroes the old one.
    tiers: Mutex<HashMap<String, String>>,
    /// Where requests hand the recording of their end (see `after`).
    pub(crate) after: super::after::AfterResponse,
}

fn histogram(m: &Meter, d: &Def) -> Histogram<f64> {
    m.f64_histogram(d.name).with_unit(d.unit).with_description(d.help).with_boundaries(d.bounds.to_vec()).build()
}

impl Instruments {
    pub(crate) fn new(m: &Meter) -> Self {
        let counter = |d: &Def| m.u64_counter(d.name).with_unit(d.unit).with_description(d.help).build();
        let gauge = |d: &Def| m.i64_gauge(d.name).with_unit(d.unit).with_description(d.help).build();
        Self {
            client_duration: Bound::new(histogram(m, &CLIENT_DURATION)),
            token_usage: Bound::new(
                m.u64_histogram(TOKEN_USAGE.name)
                    .with_unit(TOKEN_USAGE.unit)
                    .with_description(TOKEN_USAGE.help)
                    .with_boundaries(TOKEN_USAGE.bounds.to_vec())
                    .build(),
            ),
            server_duration: Bound::new(histogram(m, &SERVER_DURATION)),
            ttft: Bound::new(histogram(m, &TTFT)),
            tpot: Bound::new(histogram(m, &TPOT)),
            requests: Bound::new(counter(&REQUESTS)),
            routing_decisions: Bound::new(counter(&ROUTING_DECISIONS)),
            attempts: Bound::new(counter(&ATTEMPTS)),
            fallbacks: Bound::new(counter(&FALLBACKS)),
            errors: Bound::new(counter(&ERRORS)),
            cost: Bound::new(m.f64_counter(COST.name).with_unit(COST.unit).with_description(COST.help).build()),
            classifier_duration: histogram(m, &CLASSIFIER_DURATION),
            classifier_queue: gauge(&CLASSIFIER_QUEUE),
            tier_residency: gauge(&TIER_RESIDENCY),
            swaps: counter(&SWAPS),
            swap_duration: histogram(m, &SWAP_DURATION),
            load_duration: histogram(m, &LOAD_DURATION),
            ledger_backlog: gauge(&LEDGER_BACKLOG),
            policy_reloads: counter(&POLICY_RELOADS),
            feedback: counter(&FEEDBACK),
            accuracy: m.f64_gauge(ACCURACY.name).with_unit(ACCURACY.unit).with_description(ACCURACY.help).build(),
            dropped: counter(&DROPPED),
            tiers: Mutex::new(HashMap::new()),
            after: super::after::AfterResponse::new(),
        }
    }
}

/// The recording API. Cheap to clone; a disabled one (`Metrics::default()`, or telemetry
/// turned off with `OTEL_SDK_DISABLED=true`) records nothing.
///
/// Components get theirs from `AppState::telemetry.metrics()` or, where no state is at
/// hand, from [`super::metrics()`].
#[derive(Clone, Default)]
pub struct Metrics(pub(crate) Option<Arc<Instruments>>);

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").field("enabled", &self.is_enabled()).finish()
    }
}

fn category(c: Option<&str>) -> KeyValue {
    KeyValue::new(TRIAGE_CATEGORY, c.unwrap_or(NO_CATEGORY).to_string())
}

impl Metrics {
    pub fn is_enabled(&self) -> bool {
        self.0.is_some()
    }

    /// The router chose `expert` (the first in the list) for a prompt of `category`.
    pub fn routing_decision(&self, category_: Option<&str>, expert: &str) {
        if let Some(i) = &self.0 {
            i.routing_decisions.add(1, &[category(category_), KeyValue::new(TRIAGE_EXPERT, expert.to_string())]);
        }
    }

    /// The classifier was not confident enough; the policy's fallback `expert` applies.
    pub fn uncertainty_fallback(&self, category_: Option<&str>, expert: &str) {
        if let Some(i) = &self.0 {
            i.fallbacks.add(
                1,
                &[
                    category(category_),
                    KeyValue::new(TRIAGE_EXPERT, expert.to_string()),
                    KeyValue::new(TRIAGE_FALLBACK_REASON, "uncertainty"),
                ],
            );
        }
    }

    /// One prompt classified, measured from enqueue to result.
    pub fn classifier_latency(&self, d: Duration) {
        if let Some(i) = &self.0 {
            i.classifier_duration.record(d.as_secs_f64(), &[]);
        }
    }

    pub fn classifier_queue_depth(&self, n: usize) {
        if let Some(i) = &self.0 {
            i.classifier_queue.record(saturating_i64(n), &[]);
        }
    }

    /// `expert`'s weights now live in `tier` (e.g. "gpu", "cpu", "disk"); the tier it was
    /// reported in before drops to 0.
    pub fn tier_residency(&self, expert: &str, tier: &str) {
        let Some(i) = &self.0 else { return };
        let previous = match i.tiers.lock() {
            Ok(mut tiers) => tiers.insert(expert.to_string(), tier.to_string()),
            // A panic elsewhere while holding this lock only loses the zeroing of one series.
            Err(_) => None,
        };
        if let Some(old) = previous.filter(|old| old != tier) {
            i.tier_residency
                .record(0, &[KeyValue::new(TRIAGE_EXPERT, expert.to_string()), KeyValue::new(TRIAGE_TIER, old)]);
        }
        i.tier_residency.record(
            1,
            &[KeyValue::new(TRIAGE_EXPERT, expert.to_string()), KeyValue::new(TRIAGE_TIER, tier.to_string())],
        );
    }

    /// `expert` moved from tier `from` to `to`, which took `d`.
    pub fn swap(&self, expert: &str, from: &str, to: &str, d: Duration) {
        let Some(i) = &self.0 else { return };
        i.swaps.add(
            1,
            &[
                KeyValue::new(TRIAGE_EXPERT, expert.to_string()),
                KeyValue::new(TRIAGE_FROM_TIER, from.to_string()),
                KeyValue::new(TRIAGE_TO_TIER, to.to_string()),
            ],
        );
        i.swap_duration.record(d.as_secs_f64(), &[KeyValue::new(TRIAGE_EXPERT, expert.to_string())]);
        self.tier_residency(expert, to);
    }

    /// `expert`'s weights were loaded from disk, which took `d`.
    pub fn model_load(&self, expert: &str, d: Duration) {
        if let Some(i) = &self.0 {
            i.load_duration.record(d.as_secs_f64(), &[KeyValue::new(TRIAGE_EXPERT, expert.to_string())]);
        }
    }

    pub fn ledger_backlog(&self, n: usize) {
        if let Some(i) = &self.0 {
            i.ledger_backlog.record(saturating_i64(n), &[]);
        }
    }

    pub fn policy_reload(&self, ok: bool) {
        if let Some(i) = &self.0 {
            i.policy_reloads.add(1, &[KeyValue::new(TRIAGE_OUTCOME, if ok { "ok" } else { "error" })]);
        }
    }

    /// A user or an eval judged an answer `expert` gave to a prompt of `category`.
    pub fn feedback(&self, category_: Option<&str>, expert: &str, good: bool) {
        if let Some(i) = &self.0 {
            i.feedback.add(
                1,
                &[
                    category(category_),
                    KeyValue::new(TRIAGE_EXPERT, expert.to_string()),
                    KeyValue::new(TRIAGE_OUTCOME, if good { "good" } else { "bad" }),
                ],
            );
        }
    }

    /// The latest evaluation's accuracy (0..=1) of `expert` on `category`.
    pub fn accuracy(&self, category_: &str, expert: &str, ratio: f64) {
        if let Some(i) = &self.0 {
            i.accuracy.record(
                ratio,
                &[
                    KeyValue::new(TRIAGE_CATEGORY, category_.to_string()),
                    KeyValue::new(TRIAGE_EXPERT, expert.to_string()),
                ],
            );
        }
    }

    /// Spend in USD attributed to `expert` for a prompt of `category`.
    pub fn cost(&self, category_: Option<&str>, expert: &str, usd: f64) {
        if let Some(i) = &self.0 {
            if usd > 0.0 {
                i.cost.add(usd, &[category(category_), KeyValue::new(TRIAGE_EXPERT, expert.to_string())]);
            }
        }
    }

    pub(crate) fn dropped(&self, signal: &'static str, why: Drop, n: u64) {
        if let Some(i) = &self.0 {
            i.dropped.add(n, &[KeyValue::new(TRIAGE_SIGNAL, signal), KeyValue::new(TRIAGE_REASON, why.label())]);
        }
    }
}

fn saturating_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
