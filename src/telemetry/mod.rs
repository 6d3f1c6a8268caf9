//! Telemetry: OpenTelemetry traces and metrics named by the GenAI semantic conventions,
//! exported over OTLP/HTTP and served in the Prometheus format on `/metrics`.
//!
//! Configured by the standard `OTEL_*` environment variables ([`TelemetryConfig::from_env`]).
//! Nothing here is on a request's critical path: recording a metric is an atomic update,
//! ending a span is a push into a bounded queue, and exports run on threads of their
//! own. A collector that is down costs dropped telemetry, counted in
//! `triage_telemetry_dropped_total`, never a slower request.

pub mod metrics;
pub mod prometheus;
pub mod semconv;
pub mod spans;

mod after;
mod bound;
mod deferred;
mod export;
mod trace;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{
    InstrumentKind, ManualReader, PeriodicReader, Pipeline, SdkMeterProvider, Temporality,
};
use opentelemetry_sdk::trace::Sampler;
use opentelemetry_sdk::Resource;

pub use metrics::Metrics;
pub use spans::{Attempt, Operation, RequestTelemetry, StreamTelemetry};

pub use export::BatchConfig;
use export::{CountingMetricExporter, ExportRuntime, LateMetrics, QueueingSpanProcessor};
use metrics::Instruments;
pub use trace::sampler_from;
use trace::Tracing;

/// The service name when neither `OTEL_SERVICE_NAME` nor `OTEL_RESOURCE_ATTRIBUTES` sets
/// one; the SDK's own default, `unknown_service`, would hide the gateway in a trace store.
const DEFAULT_SERVICE_NAME: &str = "triage";
/// The OpenTelemetry spec's defaults for the batch span processor (`OTEL_BSP_*`).
const DEFAULT_BSP_MAX_QUEUE: usize = 2048;
const DEFAULT_BSP_MAX_BATCH: usize = 512;
const DEFAULT_BSP_DELAY: Duration = Duration::from_millis(5000);
/// The spec's default OTLP export timeout (`OTEL_EXPORTER_OTLP_TIMEOUT`).
const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_millis(10_000);
/// The variable OpenTelemetry's GenAI instrumentations read to record prompts and
/// completions; they hold user data, so they are off unless the operator opts in.
pub const ENV_CAPTURE_CONTENT: &str = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT";

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("{var}={value:?} is not supported: {why}")]
    Unsupported { var: &'static str, value: String, why: &'static str },
    #[error("{var}={value:?} is not a valid {what}")]
    Invalid { var: &'static str, value: String, what: &'static str },
    #[error("cannot build the OTLP exporter: {0}")]
    Exporter(String),
    #[error("cannot start the telemetry export thread: {0}")]
    Runtime(#[source] std::io::Error),
}

/// Where one signal goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Export {
    /// Nowhere (the signal is still recorded for `/metrics` where that applies).
    Off,
    /// OTLP/HTTP, endpoint from `OTEL_EXPORTER_OTLP_{SIGNAL_}ENDPOINT`.
    OtlpFromEnv,
    /// OTLP/HTTP to this full URL (`.../v1/traces`, `.../v1/metrics`).
    OtlpTo(String),
}

#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// `OTEL_SDK_DISABLED=true` turns every signal off, `/metrics` included.
    pub enabled: bool,
    pub traces: Export,
    pub metrics: Export,
    /// Record prompts and completions on spans.
    pub capture_content: bool,
    pub export_timeout: Duration,
    pub batch: BatchConfig,
    /// `None`: the SDK reads `OTEL_METRIC_EXPORT_INTERVAL` (default 60 s).
    pub metric_interval: Option<Duration>,
    /// `OTEL_TRACES_SAMPLER{,_ARG}`; default `parentbased_always_on`.
    pub sampler: Sampler,
}

impl Default for TelemetryConfig {
    /// Metrics for `/metrics`, no OTLP export.
    fn default() -> Self {
        Self {
            enabled: true,
            traces: Export::Off,
            metrics: Export::Off,
            capture_content: false,
            export_timeout: DEFAULT_EXPORT_TIMEOUT,
            batch: BatchConfig {
                max_queue: DEFAULT_BSP_MAX_QUEUE,
                max_batch: DEFAULT_BSP_MAX_BATCH,
                delay: DEFAULT_BSP_DELAY,
            },
            metric_interval: None,
            sampler: Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
        }
    }
}

fn env(var: &str) -> Option<String> {
    std::env::var(var).ok().map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

fn env_bool(var: &'static str) -> Result<bool, TelemetryError> {
    match env(var).map(|v| v.to_ascii_lowercase()) {
        None => Ok(false),
        Some(v) if v == "true" => Ok(true),
        Some(v) if v == "false" => Ok(false),
        Some(value) => Err(TelemetryError::Invalid { var, value, what: "boolean (true or false)" }),
    }
}

fn env_number<T: std::str::FromStr>(var: &'static str, default: T) -> Result<T, TelemetryError> {
    match env(var) {
        None => Ok(default),
        Some(value) => value.parse().map_err(|_| TelemetryError::Invalid { var, value, what: "number" }),
    }
}

/// `OTEL_{SIGNAL}_EXPORTER`: `otlp` or `none`. Unset means OTLP exactly when an endpoint
/// is configured: a gateway without a collector should not retry `localhost:4318`
/// forever and count every export as dropped.
fn signal_export(exporter_var: &'static str, endpoint_var: &str) -> Result<Export, TelemetryError> {
    match env(exporter_var).as_deref() {
        Some("none") => Ok(Export::Off),
        Some("otlp") => Ok(Export::OtlpFromEnv),
        Some(other) => Err(TelemetryError::Unsupported {
            var: exporter_var,
            value: other.to_string(),
            why: "use otlp or none (Prometheus is always served on /metrics)",
        }),
        None if env(endpoint_var).is_some() || env("OTEL_EXPORTER_OTLP_ENDPOINT").is_some() => Ok(Export::OtlpFromEnv),
        None => Ok(Export::Off),
    }
}

impl TelemetryConfig {
    /// Reads the standard variables: `OTEL_SDK_DISABLED`, `OTEL_TRACES_EXPORTER`,
    /// `OTEL_METRICS_EXPORTER`, `OTEL_EXPORTER_OTLP_{,TRACES_,METRICS_}ENDPOINT`,
    /// `OTEL_EXPORTER_OTLP_PROTOCOL` (`http/protobuf` only), `OTEL_EXPORTER_OTLP_TIMEOUT`,
    /// `OTEL_BSP_{MAX_QUEUE_SIZE,MAX_EXPORT_BATCH_SIZE,SCHEDULE_DELAY}`,
    /// `OTEL_TRACES_SAMPLER{,_ARG}`; the SDK itself reads `OTEL_SERVICE_NAME`,
    /// `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_METRIC_EXPORT_INTERVAL` and
    /// `OTEL_EXPORTER_OTLP_HEADERS`.
    pub fn from_env() -> Result<Self, TelemetryError> {
        for var in
            ["OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL"]
        {
            if let Some(p) = env(var).filter(|p| p != "http/protobuf") {
                return Err(TelemetryError::Unsupported {
                    var: if var.contains("TRACES") {
                        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
                    } else if var.contains("METRICS") {
                        "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL"
                    } else {
                        "OTEL_EXPORTER_OTLP_PROTOCOL"
                    },
                    value: p,
                    why: "this build exports http/protobuf (a collector's port 4318)",
                });
            }
        }
        Ok(Self {
            enabled: !env_bool("OTEL_SDK_DISABLED")?,
            traces: signal_export("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")?,
            metrics: signal_export("OTEL_METRICS_EXPORTER", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")?,
            capture_content: env_bool(ENV_CAPTURE_CONTENT)?,
            export_timeout: Duration::from_millis(env_number(
                "OTEL_EXPORTER_OTLP_TIMEOUT",
                DEFAULT_EXPORT_TIMEOUT.as_millis() as u64,
            )?),
            batch: BatchConfig {
                max_queue: env_number("OTEL_BSP_MAX_QUEUE_SIZE", DEFAULT_BSP_MAX_QUEUE)?.max(1),
                max_batch: env_number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", DEFAULT_BSP_MAX_BATCH)?.max(1),
                delay: Duration::from_millis(env_number(
                    "OTEL_BSP_SCHEDULE_DELAY",
                    DEFAULT_BSP_DELAY.as_millis() as u64,
                )?),
            },
            metric_interval: None,
            sampler: trace::sampler_from(
                env("OTEL_TRACES_SAMPLER").as_deref(),
                env("OTEL_TRACES_SAMPLER_ARG").as_deref(),
            )?,
        })
    }

    /// Both signals to an OTLP/HTTP receiver at `base` (e.g. `http://127.0.0.1:4318`).
    pub fn otlp(base: &str) -> Self {
        let base = base.trim_end_matches('/');
        Self {
            traces: Export::OtlpTo(format!("{base}/v1/traces")),
            metrics: Export::OtlpTo(format!("{base}/v1/metrics")),
            ..Self::default()
        }
    }

    pub fn disabled() -> Self {
        Self { enabled: false, ..Self::default() }
    }
}

/// The ManualReader that `/metrics` collects from, shared with the meter provider.
#[derive(Debug, Clone)]
pub(crate) struct SharedReader(pub(crate) Arc<ManualReader>);

impl MetricReader for SharedReader {
    fn register_pipeline(&self, pipeline: std::sync::Weak<Pipeline>) {
        self.0.register_pipeline(pipeline);
    }
    fn collect(&self, rm: &mut ResourceMetrics) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.collect(rm)
    }
    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.0.temporality(kind)
    }
}

struct Inner {
    metrics: Metrics,
    instruments: Arc<Instruments>,
    /// Set when traces are exported.
    tracing: Option<Arc<Tracing>>,
    meter_provider: SdkMeterProvider,
    prometheus: SharedReader,
    capture_content: bool,
    /// Declared last: dropped after the providers, whose shutdown still exports.
    _runtime: Option<ExportRuntime>,
}

/// The gateway's telemetry; cheap to clone. `Telemetry::default()` is off.
#[derive(Clone, Default)]
pub struct Telemetry(Option<Arc<Inner>>);

fn resource() -> Resource {
    let mut b = Resource::builder();
    let named = env("OTEL_SERVICE_NAME").is_some()
        || env("OTEL_RESOURCE_ATTRIBUTES")
            .is_some_and(|a| a.split(',').any(|kv| kv.trim().starts_with("service.name=")));
    if !named {
        b = b.with_service_name(DEFAULT_SERVICE_NAME);
    }
    b.with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION"))).build()
}

fn scope() -> InstrumentationScope {
    InstrumentationScope::builder("triage").with_version(env!("CARGO_PKG_VERSION")).build()
}

impl Telemetry {
    /// Metrics for `/metrics` only: what a gateway without `OTEL_*` settings records.
    pub fn local() -> Self {
        // Only OTLP export can fail to start; this config has none.
        Self::start(&TelemetryConfig::default()).unwrap_or_default()
    }

    pub fn start(cfg: &TelemetryConfig) -> Result<Self, TelemetryError> {
        if !cfg.enabled {
            return Ok(Self(None));
        }
        let resource = resource();
        let runtime =
            if cfg.traces != Export::Off || cfg.metrics != Export::Off { Some(ExportRuntime::start()?) } else { None };
        let prometheus = SharedReader(Arc::new(ManualReader::builder().build()));
        let mut meters = SdkMeterProvider::builder().with_resource(resource.clone()).with_reader(prometheus.clone());
        let metrics_export = match (&cfg.metrics, &runtime) {
            (Export::Off, _) | (_, None) => None,
            (target, Some(rt)) => {
                let mut b = opentelemetry_otlp::MetricExporter::builder()
                    .with_http()
                    .with_http_client(rt.client(cfg.export_timeout)?)
                    .with_timeout(cfg.export_timeout);
                if let Export::OtlpTo(url) = target {
                    b = b.with_endpoint(url.clone());
                }
                Some(b.build().map_err(|e| TelemetryError::Exporter(e.to_string()))?)
            }
        };
        let late = LateMetrics::default();
        if let Some(exporter) = metrics_export {
            let exporter = CountingMetricExporter { inner: exporter, metrics: late.clone() };
            let mut reader = PeriodicReader::builder(exporter);
            if let Some(every) = cfg.metric_interval {
                reader = reader.with_interval(every);
            }
            meters = meters.with_reader(reader.build());
        }
        let meter_provider = meters.build();
        let meter = opentelemetry::metrics::MeterProvider::meter_with_scope(&meter_provider, scope());
        let instruments = Arc::new(Instruments::new(&meter));
        let metrics = Metrics(Some(instruments.clone()));
        late.set(metrics.clone());

        let tracing = match (&cfg.traces, &runtime) {
            (Export::Off, _) | (_, None) => None,
            (target, Some(rt)) => {
                let mut b = opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_http_client(rt.client(cfg.export_timeout)?)
                    .with_timeout(cfg.export_timeout);
                if let Export::OtlpTo(url) = target {
                    b = b.with_endpoint(url.clone());
                }
                let mut exporter = b.build().map_err(|e| TelemetryError::Exporter(e.to_string()))?;
                opentelemetry_sdk::trace::SpanExporter::set_resource(&mut exporter, &resource);
                let processor = QueueingSpanProcessor::start(exporter, cfg.batch, metrics.clone())?;
                Some(Arc::new(Tracing::new(cfg.sampler.clone(), processor, scope())))
            }
        };
        Ok(Self(Some(Arc::new(Inner {
            metrics,
            instruments,
            tracing,
            meter_provider,
            prometheus,
            capture_content: cfg.capture_content,
            _runtime: runtime,
        }))))
    }

    pub fn is_enabled(&self) -> bool {
        self.0.is_some()
    }

    /// The recording API for components (classifier, local experts, ledger, reloads).
    pub fn metrics(&self) -> Metrics {
        self.0.as_ref().map(|i| i.metrics.clone()).unwrap_or_default()
    }

    /// The Prometheus text exposition; `None` when telemetry is off.
    pub fn render_prometheus(&self) -> Option<String> {
        let inner = self.0.as_ref()?;
        let mut rm = ResourceMetrics::default();
        if let Err(e) = inner.prometheus.collect(&mut rm) {
            tracing::warn!(error = %e, "Collecting metrics for /metrics failed.");
            return None;
        }
        Some(prometheus::render(&rm))
    }

    /// Waits until the requests answered so far are recorded (see `after`); a scrape
    /// calls it before rendering.
    pub async fn settled(&self) {
        if let Some(inner) = &self.0 {
            inner.instruments.after.settled().await;
        }
    }

    /// Exports everything recorded so far (tests; shutdown). Call outside the runtime's
    /// workers (`spawn_blocking`).
    pub fn flush(&self) {
        let Some(inner) = &self.0 else { return };
        inner.instruments.after.settle_blocking();
        if let Some(t) = &inner.tracing {
            if let Err(e) = t.force_flush() {
                tracing::debug!(error = %e, "Flushing spans failed.");
            }
        }
        if let Err(e) = inner.meter_provider.force_flush() {
            tracing::debug!(error = %e, "Flushing metrics failed.");
        }
    }

    /// Flushes and stops the exporters; call once, at the end of `main`.
    pub fn shutdown(&self) {
        let Some(inner) = &self.0 else { return };
        inner.instruments.after.settle_blocking();
        if let Some(t) = &inner.tracing {
            let _ = t.shutdown();
        }
        let _ = inner.meter_provider.shutdown();
    }
}

static GLOBAL: OnceLock<Metrics> = OnceLock::new();
static DISABLED: Metrics = Metrics(None);

/// Makes `t`'s metrics the ones [`metrics()`] returns. `main` calls it once; later calls
/// are ignored, so the first gateway of a test process wins.
pub fn set_global(t: &Telemetry) {
    let _ = GLOBAL.set(t.metrics());
}

/// The process-wide recording API, for code with no `AppState` at hand. Records nothing
/// until [`set_global`] ran.
pub fn metrics() -> &'static Metrics {
    GLOBAL.get().unwrap_or(&DISABLED)
}
