//! Getting telemetry out without ever holding up a request.
//!
//! - [`ExportClient`]: OTLP/HTTP requests on a one-thread Tokio runtime of their own, so a
//!   slow collector never takes a worker thread from the requests, and the SDK's export
//!   threads (which poll futures outside Tokio) still get a reactor for reqwest.
//! - [`QueueingSpanProcessor`]: a bounded queue in front of the span exporter. Ending a
//!   span is one `try_send`; a full queue drops the span and counts it in
//!   `triage.telemetry.dropped`, which the SDK's own batch processor only logs.
//! - [`CountingMetricExporter`]: counts metric exports the collector did not take.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use opentelemetry::Context;
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::Temporality;
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};

use super::metrics::{Drop, Metrics};
use super::TelemetryError;

/// How long `force_flush` and `shutdown` wait for the export thread: long enough for one
/// export with its timeout, short enough that a dead collector does not stall shutdown.
const FLUSH_WAIT: Duration = Duration::from_secs(15);

/// The runtime the OTLP requests run on; stopped when dropped.
pub(crate) struct ExportRuntime {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl ExportRuntime {
    pub(crate) fn start() -> Result<Self, TelemetryError> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(TelemetryError::Runtime)?;
        let handle = rt.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("triage-otlp-io".into())
            .spawn(move || {
                rt.block_on(async {
                    let _ = stopped.await;
                });
            })
            .map_err(TelemetryError::Runtime)?;
        Ok(Self { handle, stop: Some(stop) })
    }

    pub(crate) fn client(&self, timeout: Duration) -> Result<ExportClient, TelemetryError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| TelemetryError::Exporter(format!("building the OTLP HTTP client: {e}")))?;
        Ok(ExportClient { client, handle: self.handle.clone() })
    }
}

impl std::ops::Drop for ExportRuntime {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The project's reqwest 0.12, driven by [`ExportRuntime`].
#[derive(Debug, Clone)]
pub(crate) struct ExportClient {
    client: reqwest::Client,
    handle: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl HttpClient for ExportClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let request = reqwest::Request::try_from(request)?;
        let task = self.handle.spawn(async move {
            let resp = client.execute(request).await?;
            let mut out = Response::builder().status(resp.status());
            if let Some(h) = out.headers_mut() {
                *h = resp.headers().clone();
            }
            let body = resp.bytes().await?;
            Ok::<_, HttpError>(out.body(body)?)
        });
        task.await?
    }
}

enum Msg {
    Span(Box<SpanData>),
    Flush(SyncSender<()>),
    Shutdown(SyncSender<()>),
}

/// Batching settings, from the `OTEL_BSP_*` variables.
#[derive(Debug, Clone, Copy)]
pub struct BatchConfig {
    pub max_queue: usize,
    pub max_batch: usize,
    pub delay: Duration,
}

#[derive(Debug)]
pub(crate) struct QueueingSpanProcessor {
    tx: SyncSender<Msg>,
    metrics: Metrics,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl QueueingSpanProcessor {
    pub(crate) fn start<E: SpanExporter + 'static>(
        exporter: E,
        cfg: BatchConfig,
        metrics: Metrics,
    ) -> Result<Self, TelemetryError> {
        let (tx, rx) = mpsc::sync_channel(cfg.max_queue);
        let m = metrics.clone();
        let worker = std::thread::Builder::new()
            .name("triage-otlp-spans".into())
            .spawn(move || export_loop(rx, exporter, cfg, m))
            .map_err(TelemetryError::Runtime)?;
        Ok(Self { tx, metrics, worker: Mutex::new(Some(worker)) })
    }

    fn call(&self, msg: impl FnOnce(SyncSender<()>) -> Msg) -> OTelSdkResult {
        let (ack, done) = mpsc::sync_channel(1);
        self.tx.send(msg(ack)).map_err(|_| OTelSdkError::AlreadyShutdown)?;
        done.recv_timeout(FLUSH_WAIT).map_err(|_| OTelSdkError::Timeout(FLUSH_WAIT))
    }
}

impl SpanProcessor for QueueingSpanProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        match self.tx.try_send(Msg::Span(Box::new(span))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.metrics.dropped("traces", Drop::QueueFull, 1),
            Err(TrySendError::Disconnected(_)) => self.metrics.dropped("traces", Drop::ExportFailed, 1),
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.call(Msg::Flush)
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        let result = self.call(Msg::Shutdown);
        if let Some(worker) = self.worker.lock().ok().and_then(|mut w| w.take()) {
            if result.is_ok() {
                let _ = worker.join();
            }
        }
        result
    }
}

fn export_loop<E: SpanExporter>(rx: Receiver<Msg>, exporter: E, cfg: BatchConfig, metrics: Metrics) {
    let failing = AtomicBool::new(false);
    let mut batch: Vec<SpanData> = Vec::with_capacity(cfg.max_batch);
    let export = |batch: &mut Vec<SpanData>| {
        if batch.is_empty() {
            return;
        }
        let n = batch.len() as u64;
        match futures::executor::block_on(exporter.export(std::mem::take(batch))) {
            Ok(()) => {
                if failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("Span export works again.");
                }
            }
            Err(e) => {
                metrics.dropped("traces", Drop::ExportFailed, n);
                // Once per outage, not once per batch: a dead collector must not flood the log.
                if !failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, spans = n, "Span export failed; dropping spans until it works again.");
                }
            }
        }
    };
    let mut deadline = Instant::now() + cfg.delay;
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(Msg::Span(span)) => {
                batch.push(*span);
                if batch.len() >= cfg.max_batch {
                    export(&mut batch);
                    deadline = Instant::now() + cfg.delay;
                }
            }
            Ok(Msg::Flush(ack)) => {
                // Spans queued before the flush request are ahead of it in the channel.
                export(&mut batch);
                let _ = ack.send(());
            }
            Ok(Msg::Shutdown(ack)) => {
                export(&mut batch);
                let _ = exporter.shutdown();
                let _ = ack.send(());
                return;
            }
            Err(RecvTimeoutError::Timeout) => {
                export(&mut batch);
                deadline = Instant::now() + cfg.delay;
            }
            Err(RecvTimeoutError::Disconnected) => {
                export(&mut batch);
                return;
            }
        }
    }
}

/// A `Metrics` handle filled in after the meter provider exists: the OTLP metric exporter
/// is part of the provider, so it is built before the instruments it counts its own
/// failures in.
#[derive(Clone, Default)]
pub(crate) struct LateMetrics(Arc<OnceLock<Metrics>>);

impl LateMetrics {
    pub(crate) fn set(&self, m: Metrics) {
        let _ = self.0.set(m);
    }

    fn dropped(&self, signal: &'static str, why: Drop, n: u64) {
        if let Some(m) = self.0.get() {
            m.dropped(signal, why, n);
        }
    }
}

/// Counts failed metric exports; otherwise the OTLP exporter as is.
pub(crate) struct CountingMetricExporter<E> {
    pub inner: E,
    pub metrics: LateMetrics,
}

impl<E: PushMetricExporter> PushMetricExporter for CountingMetricExporter<E> {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let result = self.inner.export(metrics).await;
        if result.is_err() {
            self.metrics.dropped("metrics", Drop::ExportFailed, 1);
        }
        result
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        self.inner.temporality()
    }
}
