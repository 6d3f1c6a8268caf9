//! The classification service: classification never runs on async worker threads.
//! Requests go through a bounded queue to a stage-1 thread; what it cannot decide goes
//! through a second bounded queue to encoder workers that micro-batch concurrent
//! requests (sequences are packed, each attending only to itself, so batching never
//! changes a result). Each worker runs its passes on one core: with two workers two
//! batches run at once, and a lone request does not pay for waking a thread pool.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::warn;

use super::encoder::EncoderError;
use super::{Classification, ClassifyError};

/// Requests waiting for stage 1; it drains ~100k/s, so this only fills when the
/// process is overloaded, and then the fallback expert is the better answer.
pub const DEFAULT_QUEUE_CAPACITY: usize = 4096;
/// Requests waiting for the encoder: at ~25 ms per 16-batch, 256 waiting requests
/// already mean ~0.4 s of queueing, past which routing to the fallback beats waiting.
pub const DEFAULT_ENCODER_QUEUE_CAPACITY: usize = 256;
/// At most this many encoder workers by default (one per core up to it): more workers
/// split the same requests into smaller batches, and the cores also serve local experts.
pub const MAX_DEFAULT_ENCODER_WORKERS: usize = 4;
/// Batch size cap: beyond 16 the per-item cost on 2 cores stops falling while the
/// batch's latency keeps growing.
pub const DEFAULT_MAX_BATCH: usize = 16;
/// How long the encoder thread waits for company after the first request, when the
/// previous batch had company (see `encoder_loop`). Measured at concurrency 16 on 2
/// shared cores: 0 ms 132/s, 1 ms 136/s, 4 ms 219/s (mean batch 5.3 / 6.8 / 8.9): a pass
/// costs ~8 ms whatever its size, so waiting a few ms to fill it pays.
pub const DEFAULT_BATCH_WINDOW: Duration = Duration::from_millis(4);

/// What the service needs from a router (trained cascade or centroid).
pub trait Router: Send + Sync + 'static {
    /// Labels aligned with `Classification::probs`.
    fn labels(&self) -> &[String];
    /// Stage 1: `Some` when confident enough to decide alone.
    fn classify_fast(&self, text: &str) -> Option<Classification>;
    /// The encoder stage for a batch on `threads` cores (`None`: by the batch's size);
    /// row i must equal what text i alone would get.
    fn classify_encoder(&self, texts: &[&str], threads: Option<usize>) -> Result<Vec<Classification>, EncoderError>;
}

impl Router for super::Classifier {
    fn labels(&self) -> &[String] {
        super::Classifier::labels(self)
    }
    fn classify_fast(&self, text: &str) -> Option<Classification> {
        super::Classifier::classify_fast(self, text)
    }
    fn classify_encoder(&self, texts: &[&str], threads: Option<usize>) -> Result<Vec<Classification>, EncoderError> {
        super::Classifier::classify_encoder_on(self, texts, threads)
    }
}

/// Queue sizes and batching.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub queue_capacity: usize,
    pub encoder_queue_capacity: usize,
    pub max_batch: usize,
    pub batch_window: Duration,
    /// Encoder worker threads, each running its passes on one core.
    pub encoder_workers: usize,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            encoder_queue_capacity: DEFAULT_ENCODER_QUEUE_CAPACITY,
            max_batch: DEFAULT_MAX_BATCH,
            batch_window: DEFAULT_BATCH_WINDOW,
            encoder_workers: candle_core::utils::get_num_threads().clamp(1, MAX_DEFAULT_ENCODER_WORKERS),
        }
    }
}

type Reply = tokio::sync::oneshot::Sender<Result<Classification, ClassifyError>>;

struct Job {
    text: String,
    reply: Reply,
    start: Instant,
}

/// Counters since start: what each stage did and how well batching worked.
#[derive(Debug, Default)]
struct Counters {
    fast: AtomicU64,
    encoder_items: AtomicU64,
    encoder_batches: AtomicU64,
    queue_full: AtomicU64,
}

/// A snapshot of [`ClassifierService::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ServiceStats {
    /// Requests stage 1 decided.
    pub fast: u64,
    /// Requests the encoder stage decided.
    pub encoder_items: u64,
    /// Encoder micro-batches run (`encoder_items / encoder_batches` = mean batch size).
    pub encoder_batches: u64,
    /// Requests refused because a queue was full (sent to the fallback).
    pub queue_full: u64,
}

/// Owns the classifier threads; cheap to share behind an `Arc`.
pub struct ClassifierService {
    tx: SyncSender<Job>,
    labels: Vec<String>,
    counters: Arc<Counters>,
    _threads: Vec<JoinHandle<()>>,
}

/// Errors starting the service.
#[derive(Debug, thiserror::Error)]
#[error("cannot start classifier thread: {0}")]
pub struct SpawnError(#[from] std::io::Error);

impl ClassifierService {
    /// Starts the stage-1 thread and the encoder workers for `router`. They stop when
    /// the service is dropped (the queues disconnect).
    pub fn start(router: Arc<dyn Router>, cfg: ServiceConfig) -> Result<Self, SpawnError> {
        let (tx, rx) = sync_channel::<Job>(cfg.queue_capacity.max(1));
        let (enc_tx, enc_rx) = sync_channel::<Job>(cfg.encoder_queue_capacity.max(1));
        let labels = router.labels().to_vec();
        let counters = Arc::new(Counters::default());
        let r1 = Arc::clone(&router);
        let c1 = Arc::clone(&counters);
        let fast = std::thread::Builder::new()
            .name("triage-classify-fast".into())
            .spawn(move || fast_loop(&*r1, &rx, &enc_tx, &c1))?;
        let mut threads = vec![fast];
        // Workers take turns gathering a batch from the shared queue; the one holding the
        // lock waits out the batching window while the others compute.
        let enc_rx = Arc::new(Mutex::new(enc_rx));
        for i in 0..cfg.encoder_workers.max(1) {
            let (router, rx, cfg, counters) =
                (Arc::clone(&router), Arc::clone(&enc_rx), cfg.clone(), Arc::clone(&counters));
            threads.push(
                std::thread::Builder::new()
                    .name(format!("triage-classify-encoder-{i}"))
                    .spawn(move || encoder_loop(&*router, &rx, &cfg, &counters))?,
            );
        }
        Ok(Self { tx, labels, counters, _threads: threads })
    }

    /// Counters since start.
    pub fn stats(&self) -> ServiceStats {
        let c = &self.counters;
        ServiceStats {
            fast: c.fast.load(Ordering::Relaxed),
            encoder_items: c.encoder_items.load(Ordering::Relaxed),
            encoder_batches: c.encoder_batches.load(Ordering::Relaxed),
            queue_full: c.queue_full.load(Ordering::Relaxed),
        }
    }

    /// The router's labels, aligned with `Classification::probs`.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// Classifies `text`. `QueueFull` means the caller should use its fallback.
    pub async fn classify(&self, text: String) -> Result<Classification, ClassifyError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.tx.try_send(Job { text, reply, start: Instant::now() }).map_err(|e| match e {
            TrySendError::Full(_) => {
                self.counters.queue_full.fetch_add(1, Ordering::Relaxed);
                ClassifyError::QueueFull
            }
            TrySendError::Disconnected(_) => ClassifyError::ShutDown,
        })?;
        rx.await.map_err(|_| ClassifyError::ShutDown)?
    }
}

fn fast_loop(router: &dyn Router, rx: &Receiver<Job>, enc_tx: &SyncSender<Job>, counters: &Counters) {
    while let Ok(job) = rx.recv() {
        if let Some(mut c) = router.classify_fast(&job.text) {
            counters.fast.fetch_add(1, Ordering::Relaxed);
            c.elapsed = job.start.elapsed();
            let _ = job.reply.send(Ok(c)); // the caller may have gone away; fine
            continue;
        }
        match enc_tx.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(job)) => {
                counters.queue_full.fetch_add(1, Ordering::Relaxed);
                let _ = job.reply.send(Err(ClassifyError::QueueFull));
            }
            Err(TrySendError::Disconnected(job)) => {
                let _ = job.reply.send(Err(ClassifyError::ShutDown));
            }
        }
    }
}

/// Takes the next batch: blocks for a first job, then waits up to the batching window
/// for company. `None` when the queue has closed.
fn next_batch(rx: &Mutex<Receiver<Job>>, cfg: &ServiceConfig, last_batch: usize) -> Option<Vec<Job>> {
    // A receiver has no invariant a panic could break, so a poisoned lock is still usable
    // (no router code runs under it anyway).
    let rx = rx.lock().unwrap_or_else(PoisonError::into_inner);
    let mut jobs = vec![rx.recv().ok()?];
    // Wait for company only when the last batch had some: a lone request (concurrency
    // 1) never pays the window, a loaded encoder fills its passes. What is waited for
    // never changes a result, only when it arrives.
    let window = if last_batch > 1 { cfg.batch_window } else { Duration::ZERO };
    let deadline = Instant::now() + window;
    while jobs.len() < cfg.max_batch.max(1) {
        let wait = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok(job) => jobs.push(job),
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
        }
    }
    Some(jobs)
}

fn encoder_loop(router: &dyn Router, rx: &Mutex<Receiver<Job>>, cfg: &ServiceConfig, counters: &Counters) {
    let mut last_batch = 0usize;
    // One worker may use every core for a large batch; several share them, one each.
    let threads = if cfg.encoder_workers > 1 { Some(1) } else { None };
    while let Some(jobs) = next_batch(rx, cfg, last_batch) {
        last_batch = jobs.len();
        let texts: Vec<&str> = jobs.iter().map(|j| j.text.as_str()).collect();
        match router.classify_encoder(&texts, threads) {
            Ok(results) => {
                counters.encoder_batches.fetch_add(1, Ordering::Relaxed);
                counters.encoder_items.fetch_add(jobs.len() as u64, Ordering::Relaxed);
                for (job, mut c) in jobs.into_iter().zip(results) {
                    c.elapsed = job.start.elapsed();
                    let _ = job.reply.send(Ok(c));
                }
            }
            Err(e) => {
                warn!(error = %e, batch = jobs.len(), "Encoder batch failed.");
                let msg = e.to_string();
                for job in jobs {
                    let _ = job.reply.send(Err(ClassifyError::Encoder(EncoderError::Tokenizer(msg.clone()))));
                }
            }
        }
    }
}
