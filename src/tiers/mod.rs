//! Memory tiering of local experts: `hot` (weights loaded on the compute device with a worker
//! thread, ready to generate), `warm` (a [`Prepared`] copy in host RAM: parsed header, built
//! tokenizer and chat template, weights in their compute format; promoted without touching
//! disk) and `cold` (on disk only).
//!
//! On the CPU a hot model built from a warm copy shares its weights (reference counts), so a
//! promotion copies nothing and an expert that is both hot and warm holds its weights once
//! while the two budgets each account them: the sum of the budgets is then an over-estimate
//! of RAM, never an under-estimate. With `cuda` the hot weights are a separate device copy.
//!
//! [`TierManager`] owns every local expert's residency and the two byte budgets. Requests
//! take a [`Lease`] with [`TierManager::acquire`]; the routing decision calls
//! [`TierManager::prefetch`] so a load starts before the request reaches the expert.
//!
//! Invariants:
//! - Accounted bytes never exceed a budget, not even during a swap: a load reserves its
//!   predicted bytes (hot and warm, from the GGUF header) before it starts, evicting first; an eviction
//!   releases its bytes only after the worker thread has exited and freed the weights.
//! - An expert with a lease (a running request or stream) is never evicted.
//! - One load per expert at a time: concurrent requests wait on the same `watch` channel.
//! - Nothing here blocks an async worker: file reads, loads and joins run in `spawn_blocking`.
//!   The state mutex is never held across an `.await`.

pub mod cli;
mod demand;
mod stats;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{watch, Notify};

use crate::config::{MinTier, TiersConfig};
use crate::local::{Footprint, LocalConfig, LocalExpert, Prepared};
use demand::Demand;
pub use stats::{ExpertTierStats, LoadStats, SwapCount, TierStats};

/// A failed load is not retried for this long: a corrupt or missing file does not fix
/// itself within seconds, and every retry would stall a request for a load attempt.
pub const FAILED_RETRY_AFTER: Duration = Duration::from_secs(30);

/// Where an expert's model is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Cold,
    Warm,
    Hot,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Cold => "cold",
            Tier::Warm => "warm",
            Tier::Hot => "hot",
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum TierError {
    #[error("local expert {0:?} is not managed by the tier manager")]
    Unknown(String),
    #[error("local expert {expert:?} is unavailable: {detail}")]
    Unavailable { expert: String, detail: String },
    #[error("local expert {expert:?} is {tier}, not hot; its promotion was started")]
    NotHot { expert: String, tier: &'static str },
    #[error("local expert {expert:?} did not become hot within {}ms", .after.as_millis())]
    Timeout { expert: String, after: Duration },
    #[error(
        "local expert {expert:?} needs {need} hot bytes but tiers.hot_bytes = {budget} leaves only {free} \
         beside the pinned experts"
    )]
    DoesNotFit { expert: String, need: u64, budget: u64, free: u64 },
}

/// How a request that finds its expert not hot behaves.
#[derive(Debug, Clone, Copy)]
pub enum Wait {
    /// Wait for the promotion up to this long.
    Upto(Duration),
    /// Start the promotion in the background and return [`TierError::NotHot`] now.
    No,
}

/// Keeps an expert hot while a request uses it. Drop it when the generation (or stream)
/// has ended.
pub struct Lease {
    // Fields drop in declaration order: the handle goes before the guard counts the lease
    // out, so an evictor that sees `leases == 0` owns the last handle and can join the worker.
    expert: LocalExpert,
    _guard: LeaseGuard,
}

impl Lease {
    pub fn expert(&self) -> &LocalExpert {
        &self.expert
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").field("expert", &self._guard.name).finish()
    }
}

struct LeaseGuard {
    name: String,
    shared: Arc<Shared>,
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        if let Some(slot) = st.slots.get_mut(&self.name) {
            slot.leases = slot.leases.saturating_sub(1);
            slot.last_use = Some(SystemTime::now());
        }
        drop(st);
        self.shared.changed.notify_waiters();
    }
}

/// Progress of one promotion, shared by everyone waiting for it.
#[derive(Debug, Clone)]
enum Progress {
    Running,
    Done,
    /// A background promotion found no room it was allowed to take; a waiter restarts it
    /// as a forced one.
    GaveUp,
    Failed(String),
}

struct Slot {
    cfg: LocalConfig,
    pin: bool,
    min_tier: MinTier,
    /// Predicted bytes of a warm copy (`Footprint::warm_bytes`): what reading one reserves.
    /// A held copy is accounted at its own `Prepared::bytes()` (at most this).
    warm_bytes: u64,
    /// Reserved hot bytes: the prediction until loaded, then `ModelInfo::bytes`.
    hot_bytes: u64,
    params: u64,
    hot: Option<LocalExpert>,
    /// The prepared copy in RAM (accounted in the warm budget), also kept beside a hot model
    /// when the budget allows so a demotion lands in warm, not cold.
    cached: Option<Arc<Prepared>>,
    leases: usize,
    promotion: Option<watch::Receiver<Progress>>,
    /// A waiter needs this promotion: it may evict anything evictable and wait for room.
    forced: bool,
    /// Bytes reserved by a running promotion (hot, warm), released if it fails.
    reserved: (u64, u64),
    /// Which registration this is: a reload that changes the expert replaces its slot, and
    /// a promotion still running for the old one must neither reserve on nor fill the new.
    generation: u64,
    hot_since: Option<Instant>,
    tier_since: Instant,
    last_use: Option<SystemTime>,
    demand: Demand,
    error: Option<(String, Instant)>,
    last_warm_to_hot: Option<Duration>,
    last_cold_to_warm: Option<Duration>,
    last_cold_to_hot: Option<Duration>,
    residency: HashMap<Tier, Duration>,
}

impl Slot {
    /// Warm bytes accounted for the copy this slot holds (0 without one).
    fn cached_bytes(&self) -> u64 {
        self.cached.as_ref().map_or(0, |p| p.bytes() as u64)
    }

    fn tier(&self) -> Tier {
        if self.hot.is_some() {
            Tier::Hot
        } else if self.cached.is_some() {
            Tier::Warm
        } else {
            Tier::Cold
        }
    }
}

struct State {
    slots: HashMap<String, Slot>,
    hot_used: u64,
    warm_used: u64,
    swaps: HashMap<(Tier, Tier), u64>,
    loads: HashMap<(Tier, Tier), LoadStats>,
    load_failures: u64,
    peak_hot: u64,
    peak_warm: u64,
    next_generation: u64,
}

impl State {
    /// Un-accounts everything `old` (a removed or replaced slot) held or had reserved.
    fn release(&mut self, old: &Slot) {
        if old.hot.is_some() {
            self.hot_used -= old.hot_bytes;
        }
        self.warm_used -= old.cached_bytes() + old.reserved.1;
        self.hot_used -= old.reserved.0;
    }

    /// `name`'s slot if it is still registration `generation`.
    fn slot(&mut self, name: &str, generation: u64) -> Option<&mut Slot> {
        self.slots.get_mut(name).filter(|s| s.generation == generation)
    }
}

struct Shared {
    cfg: TiersConfig,
    state: Mutex<State>,
    /// Signalled when room may have appeared: a lease ended, an eviction finished.
    changed: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain counters behind: still usable.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Owns the residency of every tiered local expert. Cheap to clone.
#[derive(Clone)]
pub struct TierManager {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for TierManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TierManager").field("cfg", &self.shared.cfg).finish()
    }
}

/// What [`TierManager::register`] needs to know about one expert.
pub struct Registration {
    pub cfg: LocalConfig,
    pub pin: bool,
    pub min_tier: MinTier,
}

impl TierManager {
    pub fn new(cfg: TiersConfig) -> Self {
        Self {
            shared: Arc::new(Shared {
                cfg,
                state: Mutex::new(State {
                    slots: HashMap::new(),
                    hot_used: 0,
                    warm_used: 0,
                    swaps: HashMap::new(),
                    loads: HashMap::new(),
                    load_failures: 0,
                    peak_hot: 0,
                    peak_warm: 0,
                    next_generation: 0,
                }),
                changed: Notify::new(),
            }),
        }
    }

    /// The same manager (not just equal budgets).
    pub fn same(&self, other: &TierManager) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    pub fn config(&self) -> &TiersConfig {
        &self.shared.cfg
    }

    /// Adds an expert, reading its GGUF header to predict its hot bytes. A pinned expert is
    /// loaded now and a `min_tier = "warm"` one read into RAM now (blocking: call at start-up
    /// or from `spawn_blocking`). An unreadable file does not fail: the expert is marked
    /// unavailable (requests fall back) and shown so in `/admin/experts`. A pinned expert
    /// that cannot load, or budgets that cannot hold the pinned and warm-floor experts, are
    /// errors: the operator asked for something impossible.
    pub fn register(&self, name: &str, r: Registration) -> Result<(), TierError> {
        let (params, predicted, warm_bytes, error) = match Footprint::read(&r.cfg) {
            Ok(f) => (f.params as u64, f.hot_bytes as u64, f.warm_bytes as u64, None),
            Err(e) => (0, 0, 0, Some((e.to_string(), Instant::now()))),
        };
        let now = Instant::now();
        let slot = Slot {
            cfg: r.cfg,
            pin: r.pin,
            min_tier: r.min_tier,
            warm_bytes,
            hot_bytes: predicted,
            params,
            hot: None,
            cached: None,
            leases: 0,
            promotion: None,
            forced: false,
            reserved: (0, 0),
            generation: 0,
            hot_since: None,
            tier_since: now,
            last_use: None,
            demand: Demand::default(),
            error,
            last_warm_to_hot: None,
            last_cold_to_warm: None,
            last_cold_to_hot: None,
            residency: HashMap::new(),
        };
        if let Some((e, _)) = &slot.error {
            tracing::warn!(expert = name, error = %e, "Local expert unavailable: its model file cannot be read.");
            if slot.pin {
                return Err(TierError::Unavailable { expert: name.to_string(), detail: e.clone() });
            }
        }
        let (pin, warm_floor) = (slot.pin, slot.min_tier == MinTier::Warm && slot.error.is_none());
        {
            let mut st = self.shared.lock();
            let mut slot = slot;
            slot.generation = st.next_generation;
            st.next_generation += 1;
            // A reload changed this expert's settings: the old residency goes, and so do the
            // bytes a promotion of the old settings had reserved (it gives up when it sees the
            // slot replaced).
            if let Some(old) = st.slots.insert(name.to_string(), slot) {
                st.release(&old);
            }
        }
        if pin {
            self.load_now(name, true)?;
        } else if warm_floor {
            self.load_now(name, false)?;
        }
        Ok(())
    }

    /// Start-up loads of pinned (to hot) and warm-floor (to warm) experts. These reserve
    /// without evicting: nothing else is resident yet that could be.
    fn load_now(&self, name: &str, hot: bool) -> Result<(), TierError> {
        let cfg = &self.shared.cfg;
        let mut st = self.shared.lock();
        let (hot_used, warm_used) = (st.hot_used, st.warm_used);
        let slot = st.slots.get_mut(name).ok_or_else(|| TierError::Unknown(name.to_string()))?;
        if hot {
            if hot_used + slot.hot_bytes > cfg.hot_bytes {
                return Err(TierError::DoesNotFit {
                    expert: name.to_string(),
                    need: slot.hot_bytes,
                    budget: cfg.hot_bytes,
                    free: cfg.hot_bytes.saturating_sub(hot_used),
                });
            }
            let lcfg = slot.cfg.clone();
            let reserve = slot.hot_bytes;
            st.hot_used += reserve;
            drop(st);
            let started = Instant::now();
            let loaded = LocalExpert::spawn(name, lcfg);
            let mut st = self.shared.lock();
            let took = started.elapsed();
            match loaded {
                Ok(expert) => {
                    let actual = expert.info().bytes as u64;
                    let st = &mut *st;
                    if let Some(slot) = st.slots.get_mut(name) {
                        st.hot_used = st.hot_used - reserve + actual.min(reserve);
                        slot.hot_bytes = actual.min(reserve);
                        slot.last_cold_to_hot = Some(took);
                        slot.hot_since = Some(Instant::now());
                        slot.tier_since = Instant::now();
                        slot.hot = Some(expert);
                    }
                    st.loads.entry((Tier::Cold, Tier::Hot)).or_default().record(took);
                    st.peak_hot = st.peak_hot.max(st.hot_used);
                    Ok(())
                }
                Err(e) => {
                    st.hot_used -= reserve;
                    Err(TierError::Unavailable { expert: name.to_string(), detail: e.to_string() })
                }
            }
        } else {
            if warm_used + slot.warm_bytes > cfg.warm_bytes {
                return Err(TierError::DoesNotFit {
                    expert: name.to_string(),
                    need: slot.warm_bytes,
                    budget: cfg.warm_bytes,
                    free: cfg.warm_bytes.saturating_sub(warm_used),
                });
            }
            let lcfg = slot.cfg.clone();
            let reserve = slot.warm_bytes;
            st.warm_used += reserve;
            drop(st);
            let prepared = LocalExpert::prepare(name, &lcfg);
            let mut st = self.shared.lock();
            let st = &mut *st;
            st.warm_used -= reserve;
            match prepared {
                Ok(p) => {
                    let took = p.took();
                    if let Some(slot) = st.slots.get_mut(name) {
                        if Self::hold_warm(name, &mut st.warm_used, slot, Arc::new(p), reserve) {
                            slot.last_cold_to_warm = Some(took);
                            slot.tier_since = Instant::now();
                        }
                    }
                    st.loads.entry((Tier::Cold, Tier::Warm)).or_default().record(took);
                    st.peak_warm = st.peak_warm.max(st.warm_used);
                    Ok(())
                }
                Err(e) => {
                    if let Some(slot) = st.slots.get_mut(name) {
                        slot.error = Some((e.to_string(), Instant::now()));
                    }
                    Ok(())
                }
            }
        }
    }

    /// Gives `slot` the prepared copy `p`, read under a reservation of `reserved` warm bytes
    /// (already released from `warm_used` by the caller), and accounts it. A copy larger than
    /// its reservation (the prediction is an upper bound by construction, so a bug or a file
    /// replaced mid-read) is not kept: holding it could exceed the budget.
    fn hold_warm(name: &str, warm_used: &mut u64, slot: &mut Slot, p: Arc<Prepared>, reserved: u64) -> bool {
        let actual = p.bytes() as u64;
        if actual > reserved {
            tracing::error!(expert = %name, predicted = reserved, actual, "Warm bytes exceed the prediction; copy dropped.");
            return false;
        }
        *warm_used += actual;
        slot.cached = Some(p);
        true
    }

    /// Forgets experts not in `keep` (a reload removed them) that no request uses.
    pub fn retain(&self, keep: &[&str]) {
        let mut st = self.shared.lock();
        let gone: Vec<String> = st
            .slots
            .iter()
            .filter(|(n, s)| !keep.contains(&n.as_str()) && s.leases == 0)
            .map(|(n, _)| n.clone())
            .collect();
        for n in gone {
            if let Some(s) = st.slots.remove(&n) {
                st.release(&s);
            }
        }
    }

    /// Parameters of the expert's model (from the GGUF header), for the ledger.
    pub fn params(&self, name: &str) -> Option<u64> {
        self.shared.lock().slots.get(name).map(|s| s.params)
    }

    /// The routing decision chose `name`: start its promotion now, in the background, so the
    /// load overlaps the rest of the request's way to the expert. A prefetch only evicts
    /// experts with less demand than `name` (so a fallback request does not push out the
    /// expert it falls back to), and never waits for room.
    pub fn prefetch(&self, name: &str) {
        let mut st = self.shared.lock();
        if let Some(slot) = st.slots.get(name) {
            if slot.hot.is_none() && slot.promotion.is_none() && !self.failed_recently(slot) {
                drop(self.start_promotion(&mut st, name, false));
            }
        }
    }

    fn failed_recently(&self, slot: &Slot) -> bool {
        slot.error.as_ref().is_some_and(|(_, at)| at.elapsed() < FAILED_RETRY_AFTER)
    }

    /// A lease on `name`'s loaded model, promoting it first if needed (see [`Wait`]).
    /// Counts one unit of demand for `name`.
    pub async fn acquire(&self, name: &str, wait: Wait) -> Result<Lease, TierError> {
        let deadline = match wait {
            Wait::Upto(d) => Some((tokio::time::Instant::now() + d, d)),
            Wait::No => None,
        };
        let mut counted = false;
        loop {
            let mut rx = {
                let mut st = self.shared.lock();
                let half_life = self.shared.cfg.demand_half_life;
                let failed = st.slots.get(name).map(|s| self.failed_recently(s));
                let slot = st.slots.get_mut(name).ok_or_else(|| TierError::Unknown(name.to_string()))?;
                if !counted {
                    slot.demand.record(Instant::now(), half_life);
                    counted = true;
                }
                if let Some(expert) = &slot.hot {
                    slot.leases += 1;
                    slot.last_use = Some(SystemTime::now());
                    return Ok(Lease {
                        expert: expert.clone(),
                        _guard: LeaseGuard { name: name.to_string(), shared: self.shared.clone() },
                    });
                }
                if failed == Some(true) {
                    let detail = slot.error.as_ref().map(|(e, _)| e.clone()).unwrap_or_default();
                    return Err(TierError::Unavailable { expert: name.to_string(), detail });
                }
                let tier = slot.tier().as_str();
                let forced = deadline.is_some();
                if forced {
                    slot.forced = true;
                }
                let rx = match slot.promotion.clone() {
                    Some(rx) => rx,
                    None => self.start_promotion(&mut st, name, forced),
                };
                if deadline.is_none() {
                    return Err(TierError::NotHot { expert: name.to_string(), tier });
                }
                rx
            };
            let Some((at, after)) = deadline else { unreachable!("returned above") };
            let outcome = tokio::time::timeout_at(at, async {
                loop {
                    let p = rx.borrow_and_update().clone();
                    if !matches!(p, Progress::Running) {
                        return p;
                    }
                    if rx.changed().await.is_err() {
                        return Progress::GaveUp;
                    }
                }
            })
            .await;
            match outcome {
                Err(_) => return Err(TierError::Timeout { expert: name.to_string(), after }),
                Ok(Progress::Failed(detail)) => {
                    return Err(TierError::Unavailable { expert: name.to_string(), detail })
                }
                // Done: take the lease on the next turn (unless already evicted again);
                // GaveUp: restart as a forced promotion.
                Ok(_) => continue,
            }
        }
    }

    /// Registers a promotion of `name` to hot and spawns it. Call with the lock held.
    fn start_promotion(&self, st: &mut State, name: &str, forced: bool) -> watch::Receiver<Progress> {
        let (tx, rx) = watch::channel(Progress::Running);
        // A slot that is gone gets a generation no slot has: the promotion gives up at once.
        let mut generation = u64::MAX;
        if let Some(slot) = st.slots.get_mut(name) {
            slot.promotion = Some(rx.clone());
            slot.forced = forced;
            generation = slot.generation;
        }
        let me = self.clone();
        let name = name.to_string();
        tokio::spawn(async move {
            let p = me.promote(&name, generation).await;
            me.finish_promotion(&name, generation, &p);
            let _ = tx.send(p);
            me.shared.changed.notify_waiters();
        });
        rx
    }

    fn finish_promotion(&self, name: &str, generation: u64, p: &Progress) {
        {
            let mut st = self.shared.lock();
            let st = &mut *st;
            if let Some(slot) = st.slots.get_mut(name).filter(|s| s.generation == generation) {
                slot.promotion = None;
                slot.forced = false;
                // Release whatever the failed or abandoned attempt had reserved.
                st.hot_used -= slot.reserved.0;
                st.warm_used -= slot.reserved.1;
                slot.reserved = (0, 0);
                if let Progress::Failed(e) = p {
                    slot.error = Some((e.clone(), Instant::now()));
                    st.load_failures += 1;
                    tracing::warn!(expert = %name, error = %e, "Local expert failed to load; it is unavailable.");
                }
            }
        }
    }

    /// The promotion itself: make room (evicting), reserve, load. Bytes reserved are kept
    /// in `slot.reserved` until they are owned by a loaded model or prepared copy.
    async fn promote(&self, name: &str, generation: u64) -> Progress {
        // Re-read the header: a file fixed on disk since an earlier failure is picked up.
        let (need, cached, lcfg) = {
            let mut st = self.shared.lock();
            let Some(slot) = st.slot(name, generation) else { return Progress::GaveUp };
            (slot.hot_bytes, slot.cached.clone(), slot.cfg.clone())
        };
        let need = if need == 0 || cached.is_none() {
            let c = lcfg.clone();
            match tokio::task::spawn_blocking(move || Footprint::read(&c)).await {
                Ok(Ok(f)) => {
                    let mut st = self.shared.lock();
                    if let Some(slot) = st.slot(name, generation) {
                        slot.params = f.params as u64;
                        slot.warm_bytes = f.warm_bytes as u64;
                        if slot.hot.is_none() {
                            slot.hot_bytes = f.hot_bytes as u64;
                        }
                    }
                    f.hot_bytes as u64
                }
                Ok(Err(e)) => return Progress::Failed(e.to_string()),
                Err(e) => return Progress::Failed(format!("header read task failed: {e}")),
            }
        } else {
            need
        };
        if let Err(p) = self.make_room_hot(name, generation, need).await {
            return p;
        }
        // Hot bytes are reserved. Prepare a warm copy if the warm budget allows.
        let prepared = match cached {
            Some(p) => Some(p),
            None => match self.prepare_warm(name, generation, &lcfg).await {
                Ok(p) => p,
                Err(e) => return Progress::Failed(e),
            },
        };
        let from = if prepared.is_some() { Tier::Warm } else { Tier::Cold };
        let started = Instant::now();
        let (n, c, p) = (name.to_string(), lcfg.clone(), prepared.clone());
        let loaded = tokio::task::spawn_blocking(move || match p {
            Some(p) => LocalExpert::spawn_prepared(&n, c, p),
            None => LocalExpert::spawn(&n, c),
        })
        .await;
        let took = started.elapsed();
        let expert = match loaded {
            Ok(Ok(e)) => e,
            Ok(Err(e)) => return Progress::Failed(e.to_string()),
            Err(e) => return Progress::Failed(format!("load task failed: {e}")),
        };
        let actual = expert.info().bytes as u64;
        let mut st = self.shared.lock();
        let st = &mut *st;
        // Replaced by a reload while loading: this model has the old settings; it is dropped.
        let Some(slot) = st.slots.get_mut(name).filter(|s| s.generation == generation) else {
            return Progress::GaveUp;
        };
        let reserved = slot.reserved.0;
        if actual > reserved {
            // The prediction is an upper bound by construction; this is a bug, made loud.
            tracing::error!(expert = %name, predicted = reserved, actual, "Hot bytes exceed the prediction.");
        }
        st.hot_used = st.hot_used - reserved + actual;
        slot.hot_bytes = actual;
        slot.reserved.0 = 0;
        if let (Some(p), None, true) = (prepared, &slot.cached, slot.reserved.1 > 0) {
            // A copy read by this promotion (reserved in `prepare_warm`): the slot owns it now.
            let reserved = slot.reserved.1;
            st.warm_used -= reserved;
            slot.reserved.1 = 0;
            Self::hold_warm(name, &mut st.warm_used, slot, p, reserved);
        }
        if slot.pin && slot.min_tier == MinTier::Cold {
            // Never demoted: a RAM copy would be dead weight.
            st.warm_used -= slot.cached_bytes();
            slot.cached = None;
        }
        let prev = slot.tier();
        let now = Instant::now();
        *slot.residency.entry(prev).or_default() += now.duration_since(slot.tier_since);
        slot.tier_since = now;
        slot.hot_since = Some(now);
        slot.hot = Some(expert);
        slot.error = None;
        match from {
            Tier::Warm => slot.last_warm_to_hot = Some(took),
            _ => slot.last_cold_to_hot = Some(took),
        }
        *st.swaps.entry((prev, Tier::Hot)).or_default() += 1;
        st.loads.entry((from, Tier::Hot)).or_default().record(took);
        st.peak_hot = st.peak_hot.max(st.hot_used);
        tracing::info!(expert = %name, from = from.as_str(), ms = took.as_millis() as u64, bytes = actual, "Local expert promoted to hot.");
        Progress::Done
    }

    /// Evicts hot experts until `need` bytes fit, then reserves them for `name`.
    /// A forced promotion waits for leases to end and residencies to expire; a background
    /// one gives up when that would be needed, or when the only victims have more demand.
    async fn make_room_hot(&self, name: &str, generation: u64, need: u64) -> Result<(), Progress> {
        let budget = self.shared.cfg.hot_bytes;
        loop {
            let changed = self.shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let (victim, wake_at) = {
                let mut st = self.shared.lock();
                let pinned: u64 = st.slots.values().filter(|s| s.pin && s.hot.is_some()).map(|s| s.hot_bytes).sum();
                if need > budget.saturating_sub(pinned) {
                    let free = budget.saturating_sub(pinned);
                    return Err(Progress::Failed(
                        TierError::DoesNotFit { expert: name.to_string(), need, budget, free }.to_string(),
                    ));
                }
                if st.hot_used + need <= budget {
                    let Some(slot) = st.slot(name, generation) else { return Err(Progress::GaveUp) };
                    slot.reserved.0 += need;
                    st.hot_used += need;
                    st.peak_hot = st.peak_hot.max(st.hot_used);
                    return Ok(());
                }
                let now = Instant::now();
                let Some(me) = st.slot(name, generation) else { return Err(Progress::GaveUp) };
                let forced = me.forced;
                let my_score = me.demand.score(now, self.shared.cfg.demand_half_life);
                let min_res = self.shared.cfg.min_residency;
                let mut best: Option<(&String, f64, Option<SystemTime>)> = None;
                let mut wake_at: Option<Instant> = None;
                for (n, s) in &st.slots {
                    if n == name || s.hot.is_none() || s.pin {
                        continue;
                    }
                    if s.leases > 0 {
                        continue;
                    }
                    let since = s.hot_since.unwrap_or(now);
                    if now.duration_since(since) < min_res {
                        let at = since + min_res;
                        wake_at = Some(wake_at.map_or(at, |w| w.min(at)));
                        continue;
                    }
                    let score = s.demand.score(now, self.shared.cfg.demand_half_life);
                    let better = match &best {
                        None => true,
                        Some((_, bs, bl)) => score < *bs || (score == *bs && s.last_use < *bl),
                    };
                    if better {
                        best = Some((n, score, s.last_use));
                    }
                }
                let victim = match best {
                    Some((n, score, _)) if forced || score < my_score => Some(n.clone()),
                    _ => None,
                };
                if victim.is_none() && !forced {
                    return Err(Progress::GaveUp);
                }
                let victim = victim.and_then(|v| {
                    let slot = st.slots.get_mut(&v)?;
                    let handle = slot.hot.take()?;
                    let now = Instant::now();
                    *slot.residency.entry(Tier::Hot).or_default() += now.duration_since(slot.tier_since);
                    slot.tier_since = now;
                    slot.hot_since = None;
                    let to = slot.tier();
                    Some((v, handle, slot.hot_bytes, to))
                });
                (victim, wake_at)
            };
            match victim {
                Some((v, handle, bytes, to)) => {
                    // Join the worker so the weights are gone before their bytes are released.
                    let joined = tokio::task::spawn_blocking(move || handle.shutdown().is_ok()).await.unwrap_or(false);
                    if !joined {
                        tracing::warn!(expert = %v, "Evicted expert still had a handle; its memory is freed when that ends.");
                    }
                    let mut st = self.shared.lock();
                    st.hot_used -= bytes;
                    *st.swaps.entry((Tier::Hot, to)).or_default() += 1;
                    tracing::info!(expert = %v, to = to.as_str(), bytes, for_expert = %name, "Local expert evicted from hot.");
                }
                None => {
                    // Forced with nothing evictable now: wait for a lease to end or a residency to expire.
                    let sleep =
                        wake_at.map(|w| w.saturating_duration_since(Instant::now())).unwrap_or(Duration::from_secs(1));
                    let _ = tokio::time::timeout(sleep, changed).await;
                }
            }
        }
    }

    /// Prepares a warm copy of `name` if the warm budget can hold it (evicting warm copies
    /// with less demand), else returns `Ok(None)` and the load goes straight from disk. The
    /// copy's predicted bytes stay reserved in `slot.reserved.1` for the caller to settle.
    async fn prepare_warm(
        &self,
        name: &str,
        generation: u64,
        lcfg: &LocalConfig,
    ) -> Result<Option<Arc<Prepared>>, String> {
        let budget = self.shared.cfg.warm_bytes;
        {
            let mut st = self.shared.lock();
            let now = Instant::now();
            let half_life = self.shared.cfg.demand_half_life;
            let Some(me) = st.slot(name, generation) else { return Ok(None) };
            let need = me.warm_bytes;
            if need == 0 || need > budget {
                return Ok(None);
            }
            let my_score = me.demand.score(now, half_life);
            while st.warm_used + need > budget {
                // Cheapest first: copies beside hot models (only a faster demotion is lost),
                // then warm-only copies with the least demand. Never a warm floor.
                let victim = st
                    .slots
                    .iter()
                    .filter(|(n, s)| {
                        n.as_str() != name && s.cached.is_some() && s.min_tier != MinTier::Warm && s.promotion.is_none()
                    })
                    .map(|(n, s)| (n.clone(), s.hot.is_none(), s.demand.score(now, half_life)))
                    .filter(|(_, warm_only, score)| !warm_only || *score < my_score)
                    .min_by(|a, b| a.1.cmp(&b.1).then(a.2.total_cmp(&b.2)));
                let Some(victim) = victim else { return Ok(None) };
                let Some(slot) = st.slots.get_mut(&victim.0) else { return Ok(None) };
                let bytes = slot.cached_bytes();
                slot.cached = None;
                if slot.hot.is_none() {
                    *slot.residency.entry(Tier::Warm).or_default() += now.duration_since(slot.tier_since);
                    slot.tier_since = now;
                    *st.swaps.entry((Tier::Warm, Tier::Cold)).or_default() += 1;
                }
                // The bytes are freed when the last `Arc` drops them: no load of that copy runs
                // (`promotion.is_none()`), so that is now, or, on the CPU, when the hot model
                // sharing them is evicted (its bytes are accounted in the hot budget till then).
                st.warm_used -= bytes;
            }
            let Some(me) = st.slot(name, generation) else { return Ok(None) };
            me.reserved.1 += need;
            st.warm_used += need;
            st.peak_warm = st.peak_warm.max(st.warm_used);
        }
        let (n, c) = (name.to_string(), lcfg.clone());
        let started = Instant::now();
        let read = tokio::task::spawn_blocking(move || LocalExpert::prepare(&n, &c)).await;
        let took = started.elapsed();
        let mut st = self.shared.lock();
        match read {
            Ok(Ok(p)) => {
                st.loads.entry((Tier::Cold, Tier::Warm)).or_default().record(took);
                if let Some(slot) = st.slot(name, generation) {
                    slot.last_cold_to_warm = Some(took);
                }
                Ok(Some(Arc::new(p)))
            }
            // The reservation is released by `finish_promotion`.
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(format!("prepare task failed: {e}")),
        }
    }

    /// Accounted bytes right now: `(hot, warm)`.
    pub fn used(&self) -> (u64, u64) {
        let st = self.shared.lock();
        (st.hot_used, st.warm_used)
    }

    pub fn tier(&self, name: &str) -> Option<Tier> {
        self.shared.lock().slots.get(name).map(Slot::tier)
    }

    /// Everything the admin endpoint and telemetry show: budgets, usage, per-expert state,
    /// swap counts and load durations.
    pub fn snapshot(&self) -> TierStats {
        let st = self.shared.lock();
        let now = Instant::now();
        let sys_now = SystemTime::now();
        let cfg = &self.shared.cfg;
        let mut experts: Vec<ExpertTierStats> = st
            .slots
            .iter()
            .map(|(n, s)| {
                let tier = s.tier();
                let mut residency = s.residency.clone();
                *residency.entry(tier).or_default() += now.duration_since(s.tier_since);
                ExpertTierStats {
                    name: n.clone(),
                    tier,
                    loading: s.promotion.is_some(),
                    pinned: s.pin,
                    min_tier: s.min_tier,
                    hot_bytes: s.hot_bytes,
                    warm_bytes: s.cached.as_ref().map_or(s.warm_bytes, |p| p.bytes() as u64),
                    holds_warm_copy: s.cached.is_some(),
                    leases: s.leases,
                    queue_depth: s.hot.as_ref().map_or(0, LocalExpert::queue_depth),
                    last_use_unix_ms: s
                        .last_use
                        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                        .map(|d| d.as_millis() as u64),
                    idle_ms: s.last_use.and_then(|t| sys_now.duration_since(t).ok()).map(|d| d.as_millis() as u64),
                    demand_per_min: s.demand.rate_per_min(now, cfg.demand_half_life),
                    warm_to_hot_ms: s.last_warm_to_hot.map(stats::ms),
                    cold_to_warm_ms: s.last_cold_to_warm.map(stats::ms),
                    cold_to_hot_ms: s.last_cold_to_hot.map(stats::ms),
                    residency_ms: residency
                        .into_iter()
                        .map(|(t, d)| (t.as_str().to_string(), d.as_millis() as u64))
                        .collect(),
                    error: s.error.as_ref().map(|(e, _)| e.clone()),
                }
            })
            .collect();
        experts.sort_by(|a, b| a.name.cmp(&b.name));
        let mut swaps: Vec<SwapCount> =
            st.swaps.iter().map(|(&(from, to), &count)| SwapCount { from, to, count }).collect();
        swaps.sort_by_key(|s| (s.from, s.to));
        let mut loads: Vec<(String, LoadStats)> =
            st.loads.iter().map(|(&(f, t), l)| (format!("{}->{}", f.as_str(), t.as_str()), l.clone())).collect();
        loads.sort_by(|a, b| a.0.cmp(&b.0));
        TierStats {
            hot_budget: cfg.hot_bytes,
            warm_budget: cfg.warm_bytes,
            hot_used: st.hot_used,
            warm_used: st.warm_used,
            peak_hot: st.peak_hot,
            peak_warm: st.peak_warm,
            min_residency_ms: cfg.min_residency.as_millis() as u64,
            experts,
            swaps,
            loads: loads.into_iter().collect(),
            load_failures: st.load_failures,
        }
    }
}

/// The `/admin/experts` body: the tier manager's view of local experts (or, without
/// `[tiers]`, their fixed hot state), plus remote experts by name.
pub fn report(snapshot: &crate::routing::Snapshot) -> serde_json::Value {
    use crate::experts::Backend;
    let stats = snapshot.tiers().map(TierManager::snapshot);
    let experts: Vec<serde_json::Value> = snapshot
        .experts()
        .iter()
        .map(|e| match &e.backend {
            Backend::Remote(_) => serde_json::json!({"name": e.name(), "kind": "openai"}),
            Backend::Local(l) => {
                let tiered = stats.as_ref().and_then(|s| s.experts.iter().find(|x| x.name == e.name()));
                match (tiered, l.fixed()) {
                    (Some(t), _) => {
                        let mut v = serde_json::to_value(t).unwrap_or_default();
                        v["kind"] = "local".into();
                        v
                    }
                    (None, Some(f)) => {
                        let info = f.info();
                        serde_json::json!({
                            "name": e.name(), "kind": "local", "tier": "hot", "pinned": true,
                            "hot_bytes": info.bytes, "warm_bytes": info.file_bytes,
                            "queue_depth": f.queue_depth(),
                            "cold_to_hot_ms": stats::ms(info.load_time),
                        })
                    }
                    (None, None) => serde_json::json!({"name": e.name(), "kind": "local"}),
                }
            }
        })
        .collect();
    serde_json::json!({"tiers": stats.map(|mut s| { s.experts.clear(); s }), "experts": experts})
}

#[cfg(test)]
mod tests;
