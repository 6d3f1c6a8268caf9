//! The ledger: every request's cost, latency and outcome, and evidence about its quality,
//! kept in an embedded sled database.
//!
//! Writes never happen on the request path. [`Ledger::record`] puts the record on a
//! bounded channel; a dedicated writer thread batches what arrives and, every
//! `flush_interval` (default [`DEFAULT_FLUSH_INTERVAL`]), writes the batch and fsyncs.
//! When the writer falls behind the channel fills and `record(..).await` waits: callers
//! slow down, records are never dropped. [`Ledger::try_record`] is the non-waiting variant
//! that hands the record back instead.
//!
//! **Crash-loss bound.** A process crash (or `kill -9`) loses what had been accepted but
//! not yet fsynced: at most the records accepted during the last `flush_interval`, plus
//! whatever was still queued ([`Ledger::backlog`]). [`Ledger::close`] (graceful shutdown)
//! and dropping every handle write and fsync everything first.
//!
//! Layout: tree `records` maps the request id (a ULID string, so key order is time order)
//! to the record's JSON; tree `feedback` maps `request_id \0 source` to a [`Feedback`].
//! Because both are keyed by time-ordered ids, retention deletes a prefix of each.

pub mod cli;
pub mod eval;
pub mod export;
pub mod fit;
pub mod http;
pub mod record;
pub mod report;
pub mod time;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

pub use record::{cost_usd, now_ms, prompt_hash, Feedback, Origin, Record, STATUS_CLIENT_CLOSED};
pub use report::{Accuracy, GroupBy, GroupStats, Report, ReportQuery};

/// How long an accepted record may wait before it is written and fsynced, and so the most
/// a crash can lose. 200 ms is invisible to anyone reading reports and costs five fsyncs
/// a second, which any disk sustains.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_millis(200);
/// Records the channel holds before `record(..).await` waits. At 10k requests/s this is
/// most of a second of slack for a slow disk, and at ~1 KiB a record only a few MiB.
pub const CHANNEL_CAPACITY: usize = 8_192;
/// A batch is written early once it has this many records, so memory stays bounded when
/// traffic outpaces the flush interval.
pub const MAX_BATCH: usize = 1_024;
/// Retention is enforced this often; deleting old records is not urgent, scanning is not free.
pub const COMPACTION_INTERVAL: Duration = Duration::from_secs(60);
/// sled's page cache. Its default (1 GiB) is sized for a database that is the application;
/// the ledger is a side component and reads mostly sequentially.
const CACHE_CAPACITY_BYTES: u64 = 64 * 1024 * 1024;
/// Feedback sources are labels ("user", "eval", "judge:gpt-4o"), not free text.
const MAX_SOURCE_LEN: usize = 64;
const RECORDS_TREE: &str = "records";
const FEEDBACK_TREE: &str = "feedback";
const MS_PER_DAY: u64 = 86_400_000;

#[derive(Debug, Clone, PartialEq)]
pub struct LedgerConfig {
    /// The sled database directory.
    pub path: PathBuf,
    /// See the crash-loss bound in the module docs.
    pub flush_interval: Duration,
    /// Records (and their feedback) older than this are deleted.
    pub retention_days: Option<u32>,
    /// Beyond this many records the oldest are deleted.
    pub max_records: Option<u64>,
    /// Beyond this many bytes of stored records (keys + JSON values) the oldest are deleted.
    pub max_bytes: Option<u64>,
    /// Keep `Record::prompt`. Off by default: prompts are the client's data.
    pub store_prompts: bool,
}

impl LedgerConfig {
    /// Defaults: [`DEFAULT_FLUSH_INTERVAL`], no retention limits, no prompts.
    pub fn new(path: impl Into<PathBuf>) -> LedgerConfig {
        LedgerConfig {
            path: path.into(),
            flush_interval: DEFAULT_FLUSH_INTERVAL,
            retention_days: None,
            max_records: None,
            max_bytes: None,
            store_prompts: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("cannot open the ledger at {path}: {source} (sled allows one process at a time: is a gateway using it?)")]
    Open { path: PathBuf, source: sled::Error },
    #[error("ledger storage error: {0}")]
    Storage(#[from] sled::Error),
    #[error("corrupt ledger entry {key:?}: {source}")]
    Corrupt { key: String, source: serde_json::Error },
    #[error("no request with id {0:?} is in the ledger")]
    UnknownRequest(String),
    #[error("invalid feedback: {0}")]
    InvalidFeedback(String),
    #[error("cannot start the ledger writer: {0}")]
    Spawn(std::io::Error),
    #[error("the ledger writer stopped unexpectedly")]
    WriterGone,
}

#[expect(
    clippy::large_enum_variant,
    reason = "nearly every message is a Record; boxing it would cost an allocation per request to shrink only the rare control messages"
)]
enum Msg {
    Record(Record),
    /// Write and fsync everything received so far, then answer.
    Flush(oneshot::Sender<Result<(), LedgerError>>),
    /// Like `Flush`, then stop the writer.
    Close(oneshot::Sender<Result<(), LedgerError>>),
}

/// What the writer thread and the handles share.
struct Store {
    db: sled::Db,
    records: sled::Tree,
    feedback: sled::Tree,
    /// Ids accepted but not yet written: feedback for a request answered a moment ago must
    /// not get a 404 just because its record is still in the batch.
    pending: Mutex<HashSet<String>>,
    /// Records lost to storage errors (disk full, I/O error); zero in a healthy ledger.
    lost: AtomicU64,
}

struct Inner {
    tx: mpsc::Sender<Msg>,
    store: Arc<Store>,
    store_prompts: bool,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
const LOCK_RETRY: std::time::Duration = std::time::Duration::from_millis(50);

/// sled's "could not acquire lock" (the lock file is held).
fn is_lock_busy(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(11) || e.to_string().contains("could not acquire lock")
}

/// A handle on the ledger; clones share one writer.
#[derive(Clone)]
pub struct Ledger {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger").field("backlog", &self.backlog()).finish_non_exhaustive()
    }
}

impl Ledger {
    /// Opens (or creates) the database and starts the writer thread. Needs no async runtime.
    pub fn open(cfg: LedgerConfig) -> Result<Ledger, LedgerError> {
        let sled_cfg = sled::Config::new()
            .path(&cfg.path)
            .cache_capacity(CACHE_CAPACITY_BYTES)
            // The writer fsyncs on its own schedule (the documented crash-loss bound).
            .flush_every_ms(None);
        // sled's I/O threads may hold the file for a moment after the last handle of a
        // database just closed in this process is dropped: wait that out, briefly. Another
        // process holding it is still refused after LOCK_WAIT.
        let started = std::time::Instant::now();
        let db = loop {
            match sled_cfg.open() {
                Err(sled::Error::Io(e)) if is_lock_busy(&e) && started.elapsed() < LOCK_WAIT => {
                    std::thread::sleep(LOCK_RETRY);
                }
                other => break other.map_err(|source| LedgerError::Open { path: cfg.path.clone(), source })?,
            }
        };
        let store = Arc::new(Store {
            records: db.open_tree(RECORDS_TREE)?,
            feedback: db.open_tree(FEEDBACK_TREE)?,
            db,
            pending: Mutex::new(HashSet::new()),
            lost: AtomicU64::new(0),
        });
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        // The writer's timers need a runtime of their own: `open` may run outside one, and
        // sled's blocking I/O must not stall the gateway's async workers.
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().map_err(LedgerError::Spawn)?;
        let writer_store = store.clone();
        let settings = cfg.clone();
        let handle = std::thread::Builder::new()
            .name("triage-ledger".into())
            .spawn(move || rt.block_on(writer(rx, writer_store, settings)))
            .map_err(LedgerError::Spawn)?;
        Ok(Ledger {
            inner: Arc::new(Inner { tx, store, store_prompts: cfg.store_prompts, writer: Mutex::new(Some(handle)) }),
        })
    }

    /// Queues a record. Returns at once unless the writer is [`CHANNEL_CAPACITY`] records
    /// behind; then it waits for room (backpressure, never loss).
    pub async fn record(&self, rec: Record) {
        let rec = self.accept(rec);
        let id = rec.id.clone();
        if self.inner.tx.send(Msg::Record(rec)).await.is_err() {
            self.unpend(&id);
            tracing::warn!(request_id = %id, "Ledger is closed; request not recorded.");
        }
    }

    /// Queues a record without waiting; hands it back when the channel is full or closed.
    #[expect(
        clippy::result_large_err,
        reason = "the record itself comes back so the caller can await `record` with it; boxing would allocate on every refusal"
    )]
    pub fn try_record(&self, rec: Record) -> Result<(), Record> {
        let rec = self.accept(rec);
        match self.inner.tx.try_send(Msg::Record(rec)) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(msg) | mpsc::error::TrySendError::Closed(msg)) => match msg {
                Msg::Record(rec) => {
                    self.unpend(&rec.id);
                    Err(rec)
                }
                // Only records are sent here.
                Msg::Flush(_) | Msg::Close(_) => Ok(()),
            },
        }
    }

    /// Writes and fsyncs everything queued so far.
    pub async fn flush(&self) -> Result<(), LedgerError> {
        self.ask(Msg::Flush).await
    }

    /// Writes and fsyncs everything queued, then stops the writer. Records sent afterwards
    /// are logged and dropped. Closing twice is fine.
    pub async fn close(&self) -> Result<(), LedgerError> {
        let result = self.ask(Msg::Close).await;
        let handle = self.inner.writer.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(h) = handle {
            // The writer answers just before it returns; joining makes sure it has let go of
            // the database, so the path can be reopened at once.
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
        match result {
            Err(LedgerError::WriterGone) => Ok(()),
            other => other,
        }
    }

    async fn ask(&self, msg: fn(oneshot::Sender<Result<(), LedgerError>>) -> Msg) -> Result<(), LedgerError> {
        let (tx, rx) = oneshot::channel();
        self.inner.tx.send(msg(tx)).await.map_err(|_| LedgerError::WriterGone)?;
        rx.await.map_err(|_| LedgerError::WriterGone)?
    }

    /// Records accepted but not yet written to the store.
    pub fn backlog(&self) -> usize {
        self.inner.store.pending.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Records lost to storage errors since open (zero unless the disk failed).
    pub fn lost(&self) -> u64 {
        self.inner.store.lost.load(Ordering::Relaxed)
    }

    /// A written record (records still in the backlog are not visible yet).
    pub fn get(&self, id: &str) -> Result<Option<Record>, LedgerError> {
        match self.inner.store.records.get(id.as_bytes())? {
            Some(v) => Ok(Some(decode(id.as_bytes(), &v)?)),
            None => Ok(None),
        }
    }

    /// Stores feedback for a recorded request, replacing earlier feedback from the same
    /// source. `UnknownRequest` if no such request was recorded.
    pub fn feedback(&self, mut fb: Feedback) -> Result<(), LedgerError> {
        if !(0.0..=1.0).contains(&fb.score) {
            return Err(LedgerError::InvalidFeedback(format!("score must be between 0 and 1, got {}", fb.score)));
        }
        if fb.source.is_empty() || fb.source.len() > MAX_SOURCE_LEN || fb.source.contains('\0') {
            return Err(LedgerError::InvalidFeedback(format!(
                "source must be 1 to {MAX_SOURCE_LEN} characters without NUL, got {:?}",
                fb.source
            )));
        }
        let store = &self.inner.store;
        let known = store.records.contains_key(fb.request_id.as_bytes())?
            || store.pending.lock().unwrap_or_else(PoisonError::into_inner).contains(&fb.request_id);
        if !known {
            return Err(LedgerError::UnknownRequest(fb.request_id));
        }
        if fb.ts_ms == 0 {
            fb.ts_ms = now_ms();
        }
        let value =
            serde_json::to_vec(&fb).map_err(|source| LedgerError::Corrupt { key: fb.request_id.clone(), source })?;
        store.feedback.insert(feedback_key(&fb.request_id, &fb.source), value)?;
        Ok(())
    }

    /// Aggregates records (and their feedback) per group.
    pub fn report(&self, q: &ReportQuery) -> Result<Report, LedgerError> {
        report::build(&self.inner.store.records, &self.inner.store.feedback, q)
    }

    /// Applies retention now (the writer also does it every [`COMPACTION_INTERVAL`]).
    pub fn compact(&self, cfg: &LedgerConfig, now_ms: u64) -> Result<u64, LedgerError> {
        compact(&self.inner.store, cfg, now_ms)
    }

    /// Every record with `ts_ms >= since_ms`, oldest first.
    pub fn scan(&self, since_ms: u64) -> impl Iterator<Item = Result<Record, LedgerError>> + '_ {
        self.inner.store.records.range(lower_bound_key(since_ms)..).map(|kv| {
            let (k, v) = kv?;
            decode(&k, &v)
        })
    }

    /// Every stored feedback entry, ordered by request id.
    pub fn feedback_entries(&self) -> impl Iterator<Item = Result<Feedback, LedgerError>> + '_ {
        self.inner.store.feedback.iter().map(|kv| {
            let (k, v) = kv?;
            decode(&k, &v)
        })
    }

    fn accept(&self, mut rec: Record) -> Record {
        if !self.inner.store_prompts {
            rec.prompt = None;
        }
        self.inner.store.pending.lock().unwrap_or_else(PoisonError::into_inner).insert(rec.id.clone());
        rec
    }

    fn unpend(&self, id: &str) {
        self.inner.store.pending.lock().unwrap_or_else(PoisonError::into_inner).remove(id);
    }
}

fn decode<T: serde::de::DeserializeOwned>(key: &[u8], value: &[u8]) -> Result<T, LedgerError> {
    serde_json::from_slice(value)
        .map_err(|source| LedgerError::Corrupt { key: String::from_utf8_lossy(key).into_owned(), source })
}

fn feedback_key(request_id: &str, source: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(request_id.len() + 1 + source.len());
    k.extend_from_slice(request_id.as_bytes());
    k.push(0);
    k.extend_from_slice(source.as_bytes());
    k
}

/// The smallest id a request arriving at `ms` can have: every earlier request sorts below.
pub(crate) fn lower_bound_key(ms: u64) -> Vec<u8> {
    ulid::Ulid::from_parts(ms, 0).to_string().into_bytes()
}

/// The writer: batches records, writes a batch when it is full or the interval ends, and
/// fsyncs every interval in which something was written.
async fn writer(mut rx: mpsc::Receiver<Msg>, store: Arc<Store>, cfg: LedgerConfig) {
    let mut batch: Vec<Record> = Vec::with_capacity(MAX_BATCH);
    let mut dirty = false;
    let mut flush_tick = tokio::time::interval(cfg.flush_interval);
    flush_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut compact_tick = tokio::time::interval(COMPACTION_INTERVAL);
    compact_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            // Draining the channel first keeps backpressure short when both are ready.
            biased;
            msg = rx.recv() => match msg {
                Some(Msg::Record(rec)) => {
                    batch.push(rec);
                    if batch.len() >= MAX_BATCH {
                        write_batch(&store, &mut batch);
                        dirty = true;
                    }
                }
                Some(Msg::Flush(reply)) => {
                    let _ = reply.send(sync(&store, &mut batch, &mut dirty));
                }
                Some(Msg::Close(reply)) => {
                    let result = sync(&store, &mut batch, &mut dirty);
                    // Records sent after this point are refused (the receiver is dropped).
                    rx.close();
                    while let Ok(msg) = rx.try_recv() {
                        if let Msg::Record(rec) = msg {
                            batch.push(rec);
                        }
                    }
                    let result = result.and(sync(&store, &mut batch, &mut dirty));
                    let _ = reply.send(result);
                    return;
                }
                None => {
                    // Every handle is gone without `close`: still keep what was sent.
                    if let Err(e) = sync(&store, &mut batch, &mut dirty) {
                        tracing::error!(error = %e, "Ledger flush at shutdown failed.");
                    }
                    return;
                }
            },
            _ = flush_tick.tick() => {
                if let Err(e) = sync(&store, &mut batch, &mut dirty) {
                    tracing::error!(error = %e, "Ledger flush failed.");
                }
            }
            _ = compact_tick.tick() => {
                match compact(&store, &cfg, now_ms()) {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(removed = n, "Ledger retention removed old records."),
                    Err(e) => tracing::error!(error = %e, "Ledger retention failed."),
                }
            }
        }
    }
}

/// Writes the batch and fsyncs if anything was written since the last fsync.
fn sync(store: &Store, batch: &mut Vec<Record>, dirty: &mut bool) -> Result<(), LedgerError> {
    if !batch.is_empty() {
        write_batch(store, batch);
        *dirty = true;
    }
    if *dirty {
        store.db.flush()?;
        *dirty = false;
    }
    Ok(())
}

/// Writes one batch atomically. A storage error loses the batch (counted in `lost` and
/// logged): holding it would stall every request behind a failing disk.
fn write_batch(store: &Store, batch: &mut Vec<Record>) {
    let mut b = sled::Batch::default();
    for rec in batch.iter() {
        match serde_json::to_vec(rec) {
            Ok(v) => b.insert(rec.id.as_bytes(), v),
            // Only a non-finite float can fail here; skip that one record, loudly.
            Err(e) => {
                store.lost.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, request_id = %rec.id, "Ledger record could not be encoded.");
            }
        }
    }
    if let Err(e) = store.records.apply_batch(b) {
        store.lost.fetch_add(batch.len() as u64, Ordering::Relaxed);
        tracing::error!(error = %e, records = batch.len(), "Ledger write failed; records lost.");
    }
    let mut pending = store.pending.lock().unwrap_or_else(PoisonError::into_inner);
    for rec in batch.drain(..) {
        pending.remove(&rec.id);
    }
}

/// Deletes, oldest first, records older than `retention_days` and records beyond
/// `max_records` / `max_bytes`, with their feedback. Returns how many records went.
fn compact(store: &Store, cfg: &LedgerConfig, now_ms: u64) -> Result<u64, LedgerError> {
    // Every rule removes a prefix of the time-ordered key space, so one cut-off key (the
    // smallest key kept) describes them all.
    let mut cut: Option<Vec<u8>> = None;
    if let Some(days) = cfg.retention_days {
        cut = Some(lower_bound_key(now_ms.saturating_sub(u64::from(days) * MS_PER_DAY)));
    }
    if cfg.max_records.is_some() || cfg.max_bytes.is_some() {
        let (max_n, max_b) = (cfg.max_records.unwrap_or(u64::MAX), cfg.max_bytes.unwrap_or(u64::MAX));
        let (mut n, mut bytes) = (0u64, 0u64);
        for kv in store.records.iter().rev() {
            let (k, v) = kv?;
            n += 1;
            bytes += (k.len() + v.len()) as u64;
            if n > max_n || bytes > max_b {
                // Ids are fixed-length ASCII, so `k` followed by 0xFF sorts after `k` and
                // its feedback keys (`k\0source`) and before every newer id.
                let mut after = k.to_vec();
                after.push(0xFF);
                if cut.as_ref().is_none_or(|c| after > *c) {
                    cut = Some(after);
                }
                break;
            }
        }
    }
    let Some(cut) = cut else { return Ok(0) };
    let removed = remove_below(&store.records, &cut)?;
    remove_below(&store.feedback, &cut)?;
    Ok(removed)
}

/// Removes every key below `cut`, in bounded batches.
fn remove_below(tree: &sled::Tree, cut: &[u8]) -> Result<u64, LedgerError> {
    /// Bounds the memory one deletion pass holds.
    const DELETE_CHUNK: usize = 10_000;
    let mut removed = 0u64;
    loop {
        let keys: Vec<sled::IVec> = tree.range(..cut).keys().take(DELETE_CHUNK).collect::<Result<_, sled::Error>>()?;
        if keys.is_empty() {
            return Ok(removed);
        }
        let mut b = sled::Batch::default();
        for k in &keys {
            b.remove(k.clone());
        }
        tree.apply_batch(b)?;
        removed += keys.len() as u64;
    }
}

#[cfg(test)]
mod tests;
