//! Local experts: GGUF models run in-process with candle.
//!
//! Each [`LocalExpert`] owns one model on its own OS thread, fed by a bounded queue; the async
//! side only enqueues a [`GenRequest`] and reads [`GenEvent`]s from a tokio channel. Nothing
//! here runs model code on tokio worker threads.
//!
//! Codemap: `engine.rs` (load + generation loop), `prepared.rs` (the warm tier's ready-to-promote
//! copy and the header-only size prediction), `models/` (one file per architecture),
//! `tokenizer.rs` (GGUF vocabularies, streaming detokenization), `template.rs` (chat
//! templates), `sampling.rs` (sampling, penalties, stop strings).

mod engine;
mod error;
pub mod fair;
mod kernels;
pub mod models;
mod prepared;
mod sampling;
pub mod template;
mod tokenizer;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use fair::{FairQueue, Refused};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

pub use engine::DEFAULT_MAX_CONTEXT;
pub use error::LocalError;
pub use prepared::{Footprint, Prepared};
pub use template::{CHATML_CHAT_TEMPLATE, COMPLETION_TEMPLATE, GEMMA_CHAT_TEMPLATE};

/// Requests allowed to wait behind the running one. Small models answer in ~1-3 s on two
/// cores, so 16 queued is already ~30 s of wait; past that a fallback expert serves better.
pub const DEFAULT_QUEUE_LIMIT: usize = 16;
/// Events buffered between the worker and the consumer. Large enough that a normal consumer
/// never stalls the worker; a stalled one applies backpressure instead of growing memory.
const EVENT_BUFFER: usize = 64;
/// How errors name the tenant of requests made without an API key.
pub const ANONYMOUS_TENANT: &str = "anonymous";
/// Default device: CPU, so a build without GPU features works everywhere.
const DEFAULT_DEVICE: &str = "cpu";

/// Model architecture, normally read from the GGUF's `general.architecture`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// Llama 1/2/3, Mistral, SmolLM and other llama-architecture GGUFs.
    Llama,
    Qwen2,
    Gemma3,
}

impl Arch {
    fn from_gguf(name: &str) -> Option<Self> {
        match name {
            // llama.cpp writes Mistral 7B as "llama"; newer converters may say "mistral".
            "llama" | "mistral" => Some(Self::Llama),
            "qwen2" => Some(Self::Qwen2),
            "gemma3" => Some(Self::Gemma3),
            _ => None,
        }
    }

    fn metadata_prefix(self) -> Option<&'static str> {
        Some(match self {
            Self::Llama => "llama",
            Self::Qwen2 => "qwen2",
            Self::Gemma3 => "gemma3",
        })
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.metadata_prefix().unwrap_or("unknown"))
    }
}

/// How weight matrices are held in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightFormat {
    /// As stored in the GGUF (e.g. Q4_1, Q4_K); smallest, candle's quantized kernels.
    #[default]
    Quantized,
    /// Dequantized at load to f16: half the memory of f32, f16 GEMM.
    F16,
    /// Dequantized at load to f32: most accurate for low-bit files (SmolLM2 Q4_1 answers
    /// "Paris" only when dequantized), 4 bytes per weight.
    F32,
}

/// One local expert's configuration, embeddable in the gateway's TOML.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalConfig {
    /// The GGUF file.
    pub path: PathBuf,
    /// Overrides `general.architecture` from the GGUF.
    #[serde(default)]
    pub arch: Option<Arch>,
    /// `cpu` or `cuda:N` (the latter needs the `cuda` cargo feature).
    #[serde(default = "default_device")]
    pub device: String,
    /// Context window in tokens; default: the GGUF's, capped at [`DEFAULT_MAX_CONTEXT`].
    #[serde(default)]
    pub context_length: Option<usize>,
    /// CPU threads for candle. Process-wide: candle sizes one pool at first use, so the first
    /// expert loaded with `threads` set decides it (see [`configure_cpu_threads`]).
    #[serde(default)]
    pub threads: Option<usize>,
    /// Requests allowed to wait behind the running one before `submit` returns `QueueFull`.
    #[serde(default = "default_queue_limit")]
    pub queue_limit: usize,
    /// Of those, how many one tenant may hold (`TenantQueueFull` beyond); default: half
    /// of `queue_limit`, rounded up (see [`default_tenant_queue_limit`]).
    #[serde(default)]
    pub tenant_queue_limit: Option<usize>,
    /// `quantized` (as stored), `f16` or `f32` (dequantized at load).
    #[serde(default)]
    pub weights: WeightFormat,
    /// A `tokenizer.json` to use instead of the GGUF's own vocabulary.
    #[serde(default)]
    pub tokenizer: Option<PathBuf>,
    /// A Jinja chat template, or a built-in name: `gemma`, `chatml`, `completion`.
    #[serde(default)]
    pub chat_template: Option<String>,
}

fn default_device() -> String {
    DEFAULT_DEVICE.to_string()
}

fn default_queue_limit() -> usize {
    DEFAULT_QUEUE_LIMIT
}

/// Half the queue, rounded up: one tenant can never fill it alone, and two flooding
/// tenants still leave the queue as deep as configured. With one tenant (no keys), set
/// `tenant_queue_limit = queue_limit` to give it the whole queue.
pub fn default_tenant_queue_limit(queue_limit: usize) -> usize {
    queue_limit.div_ceil(2).max(1)
}

impl LocalConfig {
    /// A config with every default, for `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            arch: None,
            device: default_device(),
            context_length: None,
            threads: None,
            queue_limit: DEFAULT_QUEUE_LIMIT,
            tenant_queue_limit: None,
            weights: WeightFormat::default(),
            tokenizer: None,
            chat_template: None,
        }
    }

    fn validate(&self) -> Result<(), LocalError> {
        if self.queue_limit == 0 {
            return Err(LocalError::Config { key: "queue_limit", reason: "must be at least 1 (got 0)".into() });
        }
        if let Some(t) = self.tenant_queue_limit.filter(|t| *t == 0 || *t > self.queue_limit) {
            return Err(LocalError::Config {
                key: "tenant_queue_limit",
                reason: format!("must be between 1 and queue_limit ({}), got {t}", self.queue_limit),
            });
        }
        if self.context_length == Some(0) {
            return Err(LocalError::Config { key: "context_length", reason: "must be at least 1 (got 0)".into() });
        }
        if self.threads == Some(0) {
            return Err(LocalError::Config { key: "threads", reason: "must be at least 1 (got 0)".into() });
        }
        Ok(())
    }
}

/// The thread count applied by the first call to [`configure_cpu_threads`].
static CPU_THREADS: OnceLock<usize> = OnceLock::new();

/// Sets candle's CPU thread count for the whole process. candle 0.11 reads
/// `CANDLE_NUM_THREADS`/`RAYON_NUM_THREADS` once, when its pools are first used, so this must
/// run before any model is loaded; later calls with another value only log a warning. The
/// gateway calls it at start-up, before the async runtime spawns threads that could read the
/// environment concurrently.
pub fn configure_cpu_threads(n: usize) -> usize {
    let applied = *CPU_THREADS.get_or_init(|| {
        // Safe in edition 2021; see the function comment for why the timing is sound.
        std::env::set_var("CANDLE_NUM_THREADS", n.to_string());
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        n
    });
    if applied != n {
        tracing::warn!(
            requested = n,
            applied,
            "CPU thread count is process-wide and already set; ignoring the new value."
        );
    }
    applied
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self { role: role.into(), content: content.into() }
    }
}

#[derive(Debug, Clone, Default)]
pub struct GenRequest {
    pub messages: Vec<ChatMessage>,
    /// A text completion's prompt, tokenized as it is (no chat template); when set,
    /// `messages` is empty.
    pub prompt: Option<String>,
    /// Default: until the context is full.
    pub max_tokens: Option<u32>,
    /// None or 0: greedy.
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<usize>,
    /// Same seed, same request, same model: same output. Default: random.
    pub seed: Option<u64>,
    pub stop: Vec<String>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub repetition_penalty: Option<f32>,
}

impl GenRequest {
    fn validate(&self) -> Result<(), LocalError> {
        let bad = |param, reason: String| Err(LocalError::InvalidRequest { param, reason });
        match &self.prompt {
            Some(p) if p.is_empty() => return bad("prompt", "must not be empty".into()),
            None if self.messages.is_empty() => return bad("messages", "must not be empty".into()),
            _ => {}
        }
        if let Some(t) = self.temperature.filter(|t| !(0.0..=2.0).contains(t)) {
            return bad("temperature", format!("must be in [0, 2], got {t}"));
        }
        if let Some(p) = self.top_p.filter(|p| !(*p > 0.0 && *p <= 1.0)) {
            return bad("top_p", format!("must be in (0, 1], got {p}"));
        }
        for (param, v) in [("presence_penalty", self.presence_penalty), ("frequency_penalty", self.frequency_penalty)] {
            if let Some(v) = v.filter(|v| !(-2.0..=2.0).contains(v)) {
                return bad(param, format!("must be in [-2, 2], got {v}"));
            }
        }
        if let Some(r) = self.repetition_penalty.filter(|r| !(*r > 0.0 && r.is_finite())) {
            return bad("repetition_penalty", format!("must be > 0, got {r}"));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// End-of-sequence token or a stop string.
    Stop,
    /// `max_tokens` or the context window reached.
    Length,
}

#[derive(Debug, Clone, PartialEq)]
pub enum GenEvent {
    /// Valid UTF-8 text; never contains (part of) a stop string.
    Delta(String),
    /// Last event of a successful generation. `completion_tokens` counts every sampled token,
    /// including the end-of-sequence token when that is what stopped generation.
    Done { finish_reason: FinishReason, prompt_tokens: u32, completion_tokens: u32 },
    /// Last event of a failed generation.
    Error(String),
    /// The only event of a request the worker refused before generating: the rendered
    /// prompt leaves no room in the context window.
    TooLong { prompt_tokens: usize, context_length: usize },
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    pub arch: Arch,
    /// Parameters (weights + norms) read from the file.
    pub params: usize,
    /// Bytes the weights take in memory in the configured format.
    pub bytes: usize,
    /// Size of the GGUF.
    pub file_bytes: usize,
    pub context_length: usize,
    pub weights: WeightFormat,
    pub vocab_size: usize,
    pub load_time: Duration,
}

/// Where a worker builds its model from.
enum Origin {
    File,
    Bytes(Arc<Vec<u8>>),
    Prepared(Arc<Prepared>),
}

struct Job {
    req: GenRequest,
    events: mpsc::Sender<GenEvent>,
}

struct Inner {
    /// Joined by [`LocalExpert::shutdown`] so callers know when the weights are freed.
    worker: Option<std::thread::JoinHandle<()>>,
    name: String,
    info: ModelInfo,
    /// Per-tenant FIFOs served round-robin; also counts jobs waiting and running.
    jobs: Arc<FairQueue<Job>>,
    queue_limit: usize,
    tenant_queue_limit: usize,
}

impl Drop for Inner {
    /// The last handle is gone: the worker finishes what is queued, then exits.
    fn drop(&mut self) {
        self.jobs.close();
    }
}

/// Handle to one local model and its worker thread. Cheap to clone; the worker stops when the
/// last handle is dropped and its queue drains.
#[derive(Clone)]
pub struct LocalExpert {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for LocalExpert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalExpert").field("name", &self.inner.name).field("info", &self.inner.info).finish()
    }
}

impl LocalExpert {
    /// Loads the model (blocking the caller until it is loaded or failed), then starts the
    /// worker thread that owns it and serves the queue. Call from `spawn_blocking` or at
    /// start-up, never directly on an async worker.
    pub fn spawn(name: &str, cfg: LocalConfig) -> Result<LocalExpert, LocalError> {
        Self::start(name, cfg, Origin::File)
    }

    /// Same as [`spawn`](Self::spawn), from GGUF bytes already in host memory.
    pub fn spawn_from_bytes(name: &str, cfg: LocalConfig, bytes: Arc<Vec<u8>>) -> Result<LocalExpert, LocalError> {
        Self::start(name, cfg, Origin::Bytes(bytes))
    }

    /// Same as [`spawn`](Self::spawn), from a [`Prepared`] copy (the warm tier): only the
    /// device copy of the weights is made (none on the CPU, where they are shared with `p`).
    /// `cfg` must be the config `p` was read with.
    pub fn spawn_prepared(name: &str, cfg: LocalConfig, p: Arc<Prepared>) -> Result<LocalExpert, LocalError> {
        Self::start(name, cfg, Origin::Prepared(p))
    }

    fn start(name: &str, cfg: LocalConfig, origin: Origin) -> Result<LocalExpert, LocalError> {
        cfg.validate()?;
        if let Some(n) = cfg.threads {
            configure_cpu_threads(n);
        }
        // Built on the calling thread (already a blocking one), so the caller gets the result
        // without waiting for the new worker thread to be scheduled: on a loaded machine each
        // thread hand-off costs milliseconds, a large share of a promotion from a warm copy.
        let mut engine = match &origin {
            Origin::File => engine::Engine::load(name, &cfg, engine::Source::File(&cfg.path)),
            Origin::Bytes(b) => engine::Engine::load(name, &cfg, engine::Source::Bytes(b.as_slice())),
            Origin::Prepared(p) => engine::Engine::from_prepared(name, &cfg, p),
        }?;
        // The engine holds what it needs (on the CPU, shared with the warm copy).
        drop(origin);
        let info = engine.info.clone();
        let queue_limit = cfg.queue_limit;
        let tenant_queue_limit = cfg.tenant_queue_limit.unwrap_or_else(|| default_tenant_queue_limit(queue_limit));
        let jobs = Arc::new(FairQueue::<Job>::new(queue_limit, tenant_queue_limit));
        let queue = Arc::clone(&jobs);
        let model_name = name.to_string();
        let worker = std::thread::Builder::new()
            .name(format!("local-{name}"))
            .spawn(move || {
                while let Some((tenant, job)) = queue.pop() {
                    let events = job.events.clone();
                    let last = run_job(&model_name, &mut engine, job);
                    // Free the slot before the final event, so a consumer that has seen `Done`
                    // also sees the expert as idle.
                    queue.finished(&tenant);
                    if let Some(last) = last {
                        // Blocking send is fine: this is the expert's own thread.
                        let _ = events.blocking_send(last);
                    }
                }
            })
            .map_err(|e| LocalError::WorkerGone { model: format!("{name} (cannot start thread: {e})") })?;
        tracing::info!(
            expert = name,
            arch = %info.arch,
            weights = ?info.weights,
            params = info.params,
            bytes = info.bytes,
            load_ms = info.load_time.as_millis() as u64,
            "Local expert loaded."
        );
        Ok(LocalExpert {
            inner: Arc::new(Inner {
                worker: Some(worker),
                name: name.to_string(),
                info,
                jobs,
                queue_limit,
                tenant_queue_limit,
            }),
        })
    }

    /// Enqueues a generation for the anonymous tenant; see [`submit_as`](Self::submit_as).
    pub fn submit(&self, req: GenRequest) -> Result<mpsc::Receiver<GenEvent>, LocalError> {
        self.submit_as(None, req)
    }

    /// Enqueues a generation in `tenant`'s queue (`None`: requests without a key). Events
    /// arrive on the returned receiver; dropping it cancels the generation within one token.
    pub fn submit_as(&self, tenant: Option<&str>, req: GenRequest) -> Result<mpsc::Receiver<GenEvent>, LocalError> {
        req.validate()?;
        let inner = &self.inner;
        let (events, rx) = mpsc::channel(EVENT_BUFFER);
        match inner.jobs.push(tenant.map(str::to_string), Job { req, events }, |j| j.events.is_closed()) {
            Ok(()) => Ok(rx),
            Err((refused, _)) => Err(match refused {
                Refused::Full => LocalError::QueueFull { model: inner.name.clone(), limit: inner.queue_limit },
                Refused::TenantFull => LocalError::TenantQueueFull {
                    model: inner.name.clone(),
                    tenant: tenant.unwrap_or(ANONYMOUS_TENANT).to_string(),
                    limit: inner.tenant_queue_limit,
                },
                Refused::Closed => LocalError::WorkerGone { model: inner.name.clone() },
            }),
        }
    }

    /// Reads only the GGUF header of `cfg.path` (milliseconds, no tensor data) and predicts
    /// `(params, bytes)`: the parameter count and an upper bound of [`ModelInfo::bytes`],
    /// so a memory budget can be reserved before the load starts. Blocking file I/O.
    pub fn predict(cfg: &LocalConfig) -> Result<(usize, usize), LocalError> {
        Footprint::read(cfg).map(|f| (f.params, f.hot_bytes))
    }

    /// Reads the GGUF and builds everything a promotion needs but the device copy of the
    /// weights (see [`Prepared`]). Blocking: call from `spawn_blocking` or at start-up.
    pub fn prepare(name: &str, cfg: &LocalConfig) -> Result<Prepared, LocalError> {
        Prepared::read(name, cfg)
    }

    /// Stops the worker and waits until it has exited, so its weights are freed when this
    /// returns. Only the last handle can do that: with other handles alive (a running
    /// request), `self` comes back unchanged. Blocks: call from `spawn_blocking`.
    pub fn shutdown(self) -> Result<(), LocalExpert> {
        let mut inner = Arc::try_unwrap(self.inner).map_err(|inner| LocalExpert { inner })?;
        let worker = inner.worker.take();
        // Dropping it closes the queue: the worker's `pop` loop ends once the queue is empty.
        drop(inner);
        if let Some(w) = worker {
            let _ = w.join();
        }
        Ok(())
    }

    /// Requests waiting or running.
    pub fn queue_depth(&self) -> usize {
        self.inner.jobs.depth()
    }

    pub fn model_id(&self) -> &str {
        &self.inner.name
    }

    pub fn info(&self) -> ModelInfo {
        self.inner.info.clone()
    }
}

/// Runs one job, streaming deltas; returns its final event (none when it was abandoned).
fn run_job(name: &str, engine: &mut engine::Engine, job: Job) -> Option<GenEvent> {
    let Job { req, events } = job;
    if events.is_closed() {
        return None; // Abandoned while queued.
    }
    let started = Instant::now();
    let result = engine.generate(
        &req,
        // Blocking send is fine: this is the expert's own thread, never a tokio worker.
        |text| events.blocking_send(GenEvent::Delta(text.to_string())).is_ok(),
        || !events.is_closed(),
    );
    match result {
        Ok(out) => {
            let secs = started.elapsed().as_secs_f64();
            tracing::debug!(
                expert = name,
                prompt_tokens = out.prompt_tokens,
                completion_tokens = out.completion_tokens,
                tokens_per_s = out.completion_tokens as f64 / secs.max(1e-9),
                "Local generation finished."
            );
            Some(GenEvent::Done {
                finish_reason: out.finish_reason,
                prompt_tokens: out.prompt_tokens,
                completion_tokens: out.completion_tokens,
            })
        }
        Err(engine::Abort::Cancelled) => {
            tracing::debug!(expert = name, "Local generation cancelled by its consumer.");
            None
        }
        Err(engine::Abort::Failed(LocalError::PromptTooLong { prompt_tokens, context_length })) => {
            tracing::debug!(expert = name, prompt_tokens, context_length, "Prompt does not fit the context.");
            Some(GenEvent::TooLong { prompt_tokens, context_length })
        }
        Err(engine::Abort::Failed(e)) => {
            tracing::warn!(expert = name, error = %e, "Local generation failed.");
            Some(GenEvent::Error(e.to_string()))
        }
    }
}
