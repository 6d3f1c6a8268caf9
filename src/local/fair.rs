//! Fair queuing across tenants in front of one local expert's worker.
//!
//! Each tenant has its own FIFO; tenants with waiting jobs are served round-robin, one job
//! each per turn. So a tenant's request waits behind at most the running job and one job
//! of every other tenant with work queued, however many that tenant's neighbours flood in
//! (per request, not per token: a long generation counts as one turn). Two bounds: the
//! whole queue (`limit` waiting behind the running job) and a tenant's share of it, so one
//! tenant cannot fill the queue and lock the others out. A tenant's entry exists only while
//! it has jobs in flight: nothing about a tenant outlives its requests, and nothing is
//! shared between tenants but the two counts.

use std::collections::{HashMap, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

/// Who a job belongs to: a key's tenant, or `None` for requests without a key (one
/// anonymous tenant, so they cannot starve keyed tenants either).
pub type Tenant = Option<String>;

/// Why [`FairQueue::push`] refused a job; the job comes back with it.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// `limit` jobs are waiting already.
    Full,
    /// This tenant has its share waiting already.
    TenantFull,
    /// The worker has stopped.
    Closed,
}

#[derive(Debug)]
struct Lane<T> {
    waiting: VecDeque<T>,
    /// Waiting plus running.
    in_flight: usize,
}

#[derive(Debug)]
struct State<T> {
    lanes: HashMap<Tenant, Lane<T>>,
    /// Tenants with waiting jobs, in the order they are served next. Each appears once.
    turns: VecDeque<Tenant>,
    /// Waiting plus running, all tenants.
    in_flight: usize,
    closed: bool,
}

#[derive(Debug)]
pub struct FairQueue<T> {
    state: Mutex<State<T>>,
    ready: Condvar,
    /// Jobs in flight allowed in total: the running one plus `limit` waiting.
    capacity: usize,
    /// Jobs in flight allowed per tenant: its running one plus its share of the waiting.
    tenant_capacity: usize,
}

impl<T> FairQueue<T> {
    /// `limit` jobs may wait behind the running one, at most `tenant_limit` of them from
    /// one tenant. Both are at least 1 (validated by the config).
    pub fn new(limit: usize, tenant_limit: usize) -> Self {
        FairQueue {
            state: Mutex::new(State { lanes: HashMap::new(), turns: VecDeque::new(), in_flight: 0, closed: false }),
            ready: Condvar::new(),
            capacity: limit.saturating_add(1),
            tenant_capacity: tenant_limit.clamp(1, limit.max(1)).saturating_add(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic while holding the lock cannot leave the counts half-updated (every update
        // is a single statement after the checks), so the state is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Enqueues `job` for `tenant`. When a bound is reached, waiting jobs for which
    /// `abandoned` holds (their client went away) are dropped first to make room.
    pub fn push(&self, tenant: Tenant, job: T, abandoned: impl Fn(&T) -> bool) -> Result<(), (Refused, T)> {
        let mut s = self.lock();
        if s.closed {
            return Err((Refused::Closed, job));
        }
        let tenant_full = |s: &State<T>| s.lanes.get(&tenant).is_some_and(|l| l.in_flight >= self.tenant_capacity);
        if s.in_flight >= self.capacity || tenant_full(&s) {
            sweep(&mut s, &abandoned);
        }
        if s.in_flight >= self.capacity {
            return Err((Refused::Full, job));
        }
        if tenant_full(&s) {
            return Err((Refused::TenantFull, job));
        }
        let st = &mut *s;
        let lane = st.lanes.entry(tenant.clone()).or_insert_with(|| Lane { waiting: VecDeque::new(), in_flight: 0 });
        let was_idle = lane.waiting.is_empty();
        lane.waiting.push_back(job);
        lane.in_flight += 1;
        st.in_flight += 1;
        if was_idle {
            st.turns.push_back(tenant);
        }
        drop(s);
        self.ready.notify_one();
        Ok(())
    }

    /// The next job by round-robin over tenants; blocks while none is waiting. `None` once
    /// the queue is closed and empty. Call [`finished`](Self::finished) when the job is done.
    pub fn pop(&self) -> Option<(Tenant, T)> {
        let mut s = self.lock();
        loop {
            let st = &mut *s;
            if let Some(tenant) = st.turns.pop_front() {
                let Some(lane) = st.lanes.get_mut(&tenant) else { continue };
                let Some(job) = lane.waiting.pop_front() else { continue };
                if !lane.waiting.is_empty() {
                    // Back of the line: every other waiting tenant goes first.
                    st.turns.push_back(tenant.clone());
                }
                return Some((tenant, job));
            }
            if st.closed {
                return None;
            }
            s = self.ready.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// A popped job has finished: frees its slots.
    pub fn finished(&self, tenant: &Tenant) {
        let mut s = self.lock();
        s.in_flight = s.in_flight.saturating_sub(1);
        release(&mut s.lanes, tenant, 1);
    }

    /// Refuses new jobs; [`pop`](Self::pop) drains what is waiting, then returns `None`.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    /// Jobs waiting or running.
    pub fn depth(&self) -> usize {
        self.lock().in_flight
    }
}

/// Takes `n` jobs off a tenant's count; forgets the tenant when it has none left.
fn release<T>(lanes: &mut HashMap<Tenant, Lane<T>>, tenant: &Tenant, n: usize) {
    if let Some(lane) = lanes.get_mut(tenant) {
        lane.in_flight = lane.in_flight.saturating_sub(n);
        if lane.in_flight == 0 {
            lanes.remove(tenant);
        }
    }
}

/// Drops waiting jobs nobody will read; a tenant left with none waiting leaves the turns.
fn sweep<T>(s: &mut State<T>, abandoned: &impl Fn(&T) -> bool) {
    let mut dropped = 0;
    let mut emptied = Vec::new();
    for (tenant, lane) in &mut s.lanes {
        let before = lane.waiting.len();
        lane.waiting.retain(|j| !abandoned(j));
        let n = before - lane.waiting.len();
        if n > 0 {
            dropped += n;
            emptied.push((tenant.clone(), n));
        }
    }
    for (tenant, n) in emptied {
        release(&mut s.lanes, &tenant, n);
        if s.lanes.get(&tenant).is_none_or(|l| l.waiting.is_empty()) {
            s.turns.retain(|t| *t != tenant);
        }
    }
    s.in_flight = s.in_flight.saturating_sub(dropped);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str) -> Tenant {
        Some(name.to_string())
    }

    fn never(_: &u32) -> bool {
        false
    }

    /// Pops everything waiting, finishing each job at once; returns the jobs in order.
    fn drain(q: &FairQueue<u32>) -> Vec<u32> {
        let mut out = Vec::new();
        while q.lock().turns.front().is_some() {
            let Some((tenant, job)) = q.pop() else { break };
            q.finished(&tenant);
            out.push(job);
        }
        out
    }

    #[test]
    fn a_flooding_tenant_waits_its_turn() {
        let q = FairQueue::new(16, 16);
        for j in 0..8 {
            q.push(t("a"), j, never).unwrap();
        }
        q.push(t("b"), 100, never).unwrap();
        q.push(None, 200, never).unwrap();
        // Round-robin: a, b, anonymous, then a's backlog. Plain FIFO would serve b ninth.
        assert_eq!(drain(&q), [0, 100, 200, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(q.depth(), 0);
        assert!(q.lock().lanes.is_empty(), "no state outlives a tenant's requests");
    }

    #[test]
    fn one_tenant_cannot_fill_the_queue() {
        // 4 waiting behind the running job, at most 2 of them from one tenant.
        let q = FairQueue::new(4, 2);
        q.push(t("a"), 0, never).unwrap();
        let (tenant, running) = q.pop().unwrap();
        assert_eq!(running, 0);
        q.push(t("a"), 1, never).unwrap();
        q.push(t("a"), 2, never).unwrap();
        assert_eq!(q.push(t("a"), 3, never), Err((Refused::TenantFull, 3)));
        q.push(t("b"), 10, never).unwrap();
        q.push(t("c"), 20, never).unwrap();
        assert_eq!(q.push(t("d"), 30, never), Err((Refused::Full, 30)), "the total bound holds");
        q.finished(&tenant);
        q.push(t("d"), 30, never).unwrap();
        assert_eq!(drain(&q), [1, 10, 20, 30, 2]);
    }

    #[test]
    fn abandoned_jobs_make_room() {
        let q = FairQueue::new(2, 2);
        q.push(t("a"), 1, never).unwrap();
        q.push(t("a"), 2, never).unwrap();
        q.push(t("a"), 3, never).unwrap();
        assert_eq!(q.push(t("b"), 4, never).unwrap_err().0, Refused::Full);
        q.push(t("b"), 4, |j| *j == 2).unwrap();
        assert_eq!(q.depth(), 3);
        assert_eq!(drain(&q), [1, 4, 3]);
    }

    #[test]
    fn close_drains_then_stops_and_refuses() {
        let q = std::sync::Arc::new(FairQueue::new(4, 4));
        q.push(None, 1, never).unwrap();
        q.close();
        assert_eq!(q.push(None, 2, never).unwrap_err().0, Refused::Closed);
        assert_eq!(q.pop().map(|(_, j)| j), Some(1));
        assert_eq!(q.pop(), None);
        // A worker blocked in pop is woken by close.
        let q2 = std::sync::Arc::new(FairQueue::<u32>::new(1, 1));
        let waiter = {
            let q2 = q2.clone();
            std::thread::spawn(move || q2.pop())
        };
        std::thread::sleep(std::time::Duration::from_millis(20));
        q2.close();
        assert_eq!(waiter.join().ok().flatten(), None);
    }
}
