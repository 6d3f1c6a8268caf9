//! Getting telemetry out without ever holding up a request.
//!
//! - [`ExportClient`]: OTLP/HTTP requests on a one-thread Tokio runtime of their own, so a
//!   slow collector never takes a worker thread from the requests, and the SDK's export
//!   threads (which poll futures outside Tokio) still get a reactor for reqwest.
//! - [`QueueingSpanProcessor`]: a bounded queue in front of the span exporter. Ending a
//!   span is one push under a short lock; a full queue drops the span and counts it in
//!   `triage.telemetry.dropped`, which the SDK's own batch processor only logs.
//! - [`CountingMetricExporter`]: counts metric exports the collector did not take.

use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

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

enum Control {
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

/// Ended spans wait in a plain locked `Vec` and the export thread sleeps until a batch is
/// full or the delay passed. A channel would wake that thread for every span, and those
/// wake-ups competed with the request threads for the CPU (measured: bench/telemetry).
#[derive(Debug)]
pub(crate) struct QueueingSpanProcessor {
    queue: Arc<Mutex<Vec<SpanData>>>,
    cfg: BatchConfig,
    control: SyncSender<Control>,
    thread: std::thread::Thread,
    metrics: Metrics,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl QueueingSpanProcessor {
    pub(crate) fn start<E: SpanExporter + 'static>(
        exporter: E,
        cfg: BatchConfig,
        metrics: Metrics,
    ) -> Result<Self, TelemetryError> {
        let queue = Arc::new(Mutex::new(Vec::with_capacity(cfg.max_batch)));
        let (control, rx) = mpsc::sync_channel(1);
        let (m, q) = (metrics.clone(), queue.clone());
        let worker = std::thread::Builder::new()
            .name("triage-otlp-spans".into())
            .spawn(move || export_loop(&q, &rx, exporter, cfg, &m))
            .map_err(TelemetryError::Runtime)?;
        Ok(Self { queue, cfg, control, thread: worker.thread().clone(), metrics, worker: Mutex::new(Some(worker)) })
    }

    fn call(&self, msg: impl FnOnce(SyncSender<()>) -> Control) -> OTelSdkResult {
        let (ack, done) = mpsc::sync_channel(1);
        self.control.send(msg(ack)).map_err(|_| OTelSdkError::AlreadyShutdown)?;
        self.thread.unpark();
        done.recv_timeout(FLUSH_WAIT).map_err(|_| OTelSdkError::Timeout(FLUSH_WAIT))
    }
}

impl SpanProcessor for QueueingSpanProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        let full_batch = match self.queue.lock() {
            Ok(mut q) if q.len() < self.cfg.max_queue => {
                q.push(span);
                q.len() == self.cfg.max_batch
            }
            Ok(_) => {
                self.metrics.dropped("traces", Drop::QueueFull, 1);
                false
            }
            // Only a panic while holding the lock poisons it; the span is lost, and counted.
            Err(_) => {
                self.metrics.dropped("traces", Drop::ExportFailed, 1);
                false
            }
        };
        if full_batch {
            self.thread.unpark();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.call(Control::Flush)
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        let result = self.call(Control::Shutdown);
        if let Some(worker) = self.worker.lock().ok().and_then(|mut w| w.take()) {
            if result.is_ok() {
                let _ = worker.join();
            }
        }
        result
    }
}

fn export_loop<E: SpanExporter>(
    queue: &Mutex<Vec<SpanData>>,
    control: &Receiver<Control>,
    exporter: E,
    cfg: BatchConfig,
    metrics: &Metrics,
) {
    let mut failing = false;
    let mut export = |mut spans: Vec<SpanData>| {
        while !spans.is_empty() {
            let rest = spans.split_off(spans.len().min(cfg.max_batch));
            let n = spans.len() as u64;
            match futures::executor::block_on(exporter.export(spans)) {
                Ok(()) => {
                    if std::mem::take(&mut failing) {
                        tracing::info!("Span export works again.");
                    }
                }
                Err(e) => {
                    metrics.dropped("traces", Drop::ExportFailed, n);
                    // Once per outage, not once per batch: a dead collector must not flood the log.
                    if !std::mem::replace(&mut failing, true) {
                        tracing::warn!(error = %e, spans = n, "Span export failed; dropping spans until it works again.");
                    }
                }
            }
            spans = rest;
        }
    };
    loop {
        // Woken early by a full batch, a flush or a shutdown; spurious wake-ups only export early.
        std::thread::park_timeout(cfg.delay);
        // Read the request before draining: spans ended before a flush are in the queue by now.
        let request = control.try_recv();
        let spans = queue.lock().map(|mut q| std::mem::take(&mut *q)).unwrap_or_default();
        export(spans);
        match request {
            Ok(Control::Flush(ack)) => {
                let _ = ack.send(());
            }
            Ok(Control::Shutdown(ack)) => {
                let _ = exporter.shutdown();
                let _ = ack.send(());
                return;
            }
            Err(TryRecvError::Empty) => {}
            Err(TryRecvError::Disconnected) => return,
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
