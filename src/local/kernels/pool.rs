//! The worker pool the matmul kernels split output rows over.
//!
//! Built for two cores shared with the async runtime and other processes, where a pool that
//! waits at a barrier for every worker collapses as soon as one worker loses its core:
//! - the calling thread works too, and work is claimed chunk by chunk from a shared counter,
//!   so a worker that is not running simply claims nothing and the others take its share;
//! - the caller never waits for a worker that has not joined: when the chunks run out it
//!   closes the job, and waits only for workers that are inside a chunk (at most one chunk
//!   of work each);
//! - an idle worker spins for a few microseconds (the next matmul of a forward pass usually
//!   comes that soon), then yields, then parks; it never busy-waits for long on a loaded
//!   machine;
//! - one job at a time: a second caller (another expert's worker thread) that finds the
//!   pool busy runs its job on its own thread instead of queueing behind the first.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// Busy-spin iterations before an idle worker starts yielding: about a microsecond, the gap
/// between two matmuls of one layer.
const SPIN_ITERS: u32 = 1_000;
/// How long an idle worker keeps polling (yielding its core to anyone who wants it) before
/// it parks: long enough to bridge the non-matmul work of one layer (norms, RoPE,
/// attention), short enough that an idle expert costs nothing.
const POLL_BEFORE_PARK: Duration = Duration::from_micros(200);

/// One parallel call, on the caller's stack. Workers reach it through [`Shared::slot`] only
/// while the caller has it published, and the caller does not return before every worker
/// that reached it has left (`active == 0`).
struct Job {
    /// The caller's closure, its lifetime erased (see [`Pool::run`]).
    f: *const (dyn Fn(usize) + Sync),
    n: usize,
    next: AtomicUsize,
    active: AtomicUsize,
    panicked: AtomicBool,
}

impl Job {
    /// Claims and runs chunks until none are left.
    fn work(&self) {
        // SAFETY: `f` outlives the job (see `Pool::run`); it is only called while the job is
        // reachable, which the caller guarantees by waiting for `active == 0`.
        let f = unsafe { &*self.f };
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= self.n {
                return;
            }
            if std::panic::catch_unwind(AssertUnwindSafe(|| f(i))).is_err() {
                self.panicked.store(true, Ordering::Relaxed);
            }
        }
    }
}

struct Shared {
    /// Address of the published [`Job`], 0 when none. Joining a job (reading the slot and
    /// incrementing `active`) happens under this lock, so once the caller has cleared the
    /// slot no new worker can join.
    slot: Mutex<usize>,
    /// Incremented on every publication, so idle workers can poll without the lock.
    generation: AtomicU64,
    /// Per worker: parked (or about to park), so the caller must unpark it.
    sleeping: Vec<AtomicBool>,
    threads: OnceLock<Vec<Thread>>,
}

pub struct Pool {
    shared: &'static Shared,
    /// Worker threads plus the caller.
    threads: usize,
}

/// The process-wide pool, sized like candle's (`CANDLE_NUM_THREADS`, see
/// `configure_cpu_threads`) when first used.
pub fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| Pool::new(candle_core::utils::get_num_threads().max(1)))
}

impl Pool {
    fn new(threads: usize) -> Self {
        let workers = threads - 1;
        let shared: &'static Shared = Box::leak(Box::new(Shared {
            slot: Mutex::new(0),
            generation: AtomicU64::new(0),
            sleeping: (0..workers).map(|_| AtomicBool::new(false)).collect(),
            threads: OnceLock::new(),
        }));
        let mut handles = Vec::with_capacity(workers);
        for i in 0..workers {
            match std::thread::Builder::new().name(format!("triage-matmul-{i}")).spawn(move || worker(shared, i)) {
                Ok(h) => handles.push(h.thread().clone()),
                // Fewer workers is slower, not wrong: the caller does the rest.
                Err(e) => tracing::warn!(error = %e, "Cannot start a matmul worker thread."),
            }
        }
        let threads = handles.len() + 1;
        let _ = shared.threads.set(handles);
        Self { shared, threads }
    }

    /// Threads a job is split over (the caller included).
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Calls `f(i)` for every `i` in `0..n`, on the calling thread and any idle workers.
    /// Returns false if a call panicked (on a worker; a panic on the caller propagates).
    pub fn run(&self, n: usize, f: &(dyn Fn(usize) + Sync)) -> bool {
        let inline = || (0..n).for_each(f);
        if n <= 1 || self.threads == 1 {
            inline();
            return true;
        }
        // SAFETY: the erased lifetime never outlives `f`: `Published::drop` (which runs on
        // return and on unwind) clears the slot and waits until no worker is inside the job.
        let f: *const (dyn Fn(usize) + Sync + '_) = f;
        let f = unsafe {
            std::mem::transmute::<*const (dyn Fn(usize) + Sync + '_), *const (dyn Fn(usize) + Sync + 'static)>(f)
        };
        let job =
            Job { f, n, next: AtomicUsize::new(0), active: AtomicUsize::new(0), panicked: AtomicBool::new(false) };
        {
            let mut slot = self.shared.slot.lock().unwrap_or_else(PoisonError::into_inner);
            if *slot != 0 {
                // Another expert's job is running: do this one here rather than wait.
                drop(slot);
                inline();
                return true;
            }
            *slot = &job as *const Job as usize;
            self.shared.generation.fetch_add(1, Ordering::SeqCst);
        }
        let published = Published { shared: self.shared, job: &job };
        if let Some(threads) = self.shared.threads.get() {
            for (t, sleeping) in threads.iter().zip(&self.shared.sleeping) {
                if sleeping.load(Ordering::SeqCst) {
                    t.unpark();
                }
            }
        }
        job.work();
        drop(published);
        !job.panicked.load(Ordering::Relaxed)
    }
}

/// Retracts a published job and waits for the workers inside it, also on unwind.
struct Published<'a> {
    shared: &'static Shared,
    job: &'a Job,
}

impl Drop for Published<'_> {
    fn drop(&mut self) {
        *self.shared.slot.lock().unwrap_or_else(PoisonError::into_inner) = 0;
        let mut spins = 0u32;
        while self.job.active.load(Ordering::Acquire) > 0 {
            if spins < SPIN_ITERS {
                spins += 1;
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}

fn worker(shared: &'static Shared, index: usize) {
    let mut seen = 0u64;
    loop {
        wait_for_work(shared, index, seen);
        let job = {
            let slot = shared.slot.lock().unwrap_or_else(PoisonError::into_inner);
            seen = shared.generation.load(Ordering::Acquire);
            if *slot == 0 {
                continue;
            }
            // SAFETY: a published job stays alive until its caller has cleared the slot
            // (under this lock) and seen `active` drop back to 0.
            let job = unsafe { &*(*slot as *const Job) };
            job.active.fetch_add(1, Ordering::AcqRel);
            job
        };
        job.work();
        job.active.fetch_sub(1, Ordering::Release);
    }
}

/// Returns once the generation differs from `seen`: spin, then yield, then park.
fn wait_for_work(shared: &Shared, index: usize, seen: u64) {
    let fresh = || shared.generation.load(Ordering::Acquire) != seen;
    for _ in 0..SPIN_ITERS {
        if fresh() {
            return;
        }
        std::hint::spin_loop();
    }
    let idle_since = Instant::now();
    while idle_since.elapsed() < POLL_BEFORE_PARK {
        if fresh() {
            return;
        }
        std::thread::yield_now();
    }
    let sleeping = &shared.sleeping[index];
    loop {
        sleeping.store(true, Ordering::SeqCst);
        // Checked after announcing sleep: a caller that published before this load is seen
        // here, one that publishes after it sees `sleeping` and unparks (the unpark token
        // makes the following park return at once).
        if shared.generation.load(Ordering::SeqCst) != seen {
            sleeping.store(false, Ordering::SeqCst);
            return;
        }
        std::thread::park();
        sleeping.store(false, Ordering::SeqCst);
        if fresh() {
            return;
        }
    }
}
