//! Per-instance meters: the request count the proxy admits against, and in-flight counts per worker.
//!
//! Cost per request: one relaxed `fetch_add` on the instance's [`Meter`] (a 128-byte-aligned line of
//! its own, so two instances never share a line), plus one plain load/store pair on the worker's own
//! in-flight slot (single writer, never contended) when the request starts and when its body ends. No
//! lock, no allocation, no map lookup. The controller and `/metrics` read the same atomics.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

/// A request budget: how many requests were admitted, and the most that may be.
///
/// The limit word also carries a "held" bit: while an instance is delete-locked it keeps serving
/// past its limit (SPEC: the lock holds the kill back), but the request that reaches the limit
/// is still reported as [`Admission::Last`], so the controller can count the kill it skipped.
///
/// `count` only ever holds requests that were admitted: a request that finds the budget spent undoes
/// its increment, so `count` is exact whenever no admission is in progress. A request is admitted
/// only with `n <= limit`, where `n` (its own increment) is at least the number admitted so far,
/// so no interleaving of increments and undos admits more than `limit`.
///
/// A limited meter also has a durable `reserved` ceiling (SPEC: exact across a crash): the
/// controller has written to disk that up to `reserved` requests may have been forwarded, and the
/// proxy forwards only below it. The request that reaches `refill_at` asks the controller for the
/// next block ahead of need; one that finds the ceiling reached waits for it ([`Admission::Wait`]).
#[derive(Debug)]
#[repr(align(128))]
pub struct Meter {
    count: AtomicU64,
    limit: AtomicU64,
    reserved: AtomicU64,
    refill_at: AtomicU64,
    /// Signalled when `reserved` is raised; on the next cache line, away from the counters.
    raised: Notify,
}

impl Default for Meter {
    fn default() -> Meter {
        Meter::new(0, 0)
    }
}

/// What [`Meter::admit`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Forward the request.
    Admitted,
    /// Forward the request; it is the last one the budget allows, so the instance should drain.
    Last,
    /// The budget is spent: do not forward.
    Refused,
    /// Forward the request, and ask the controller to reserve the next block.
    Refill,
    /// The durable reservation is used up: ask for more and wait until [`Meter::reserved`] rises.
    Wait,
}

/// The "held" bit of the limit word: admit past the limit.
const HELD: u64 = 1 << 63;

/// The largest limit a meter holds: the bit above it is the "held" flag, so a larger limit would
/// be cut. The API and the configuration refuse more.
pub const MAX_LIMIT: u64 = HELD - 1;

impl Meter {
    /// A meter that has admitted `count` requests, with `limit` (0 = no limit).
    pub fn new(count: u64, limit: u64) -> Meter {
        Meter {
            count: AtomicU64::new(count),
            limit: AtomicU64::new(limit & !HELD),
            reserved: AtomicU64::new(u64::MAX),
            refill_at: AtomicU64::new(0),
            raised: Notify::new(),
        }
    }

    /// Counts one request against the budget. One relaxed `fetch_add`, then relaxed loads of the
    /// limit (and, for a limited meter, of the reservation) from the same cache line; a refused or
    /// waiting request pays one more `fetch_sub`.
    #[inline]
    pub fn admit(&self) -> Admission {
        let n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        let word = self.limit.load(Ordering::Relaxed);
        let limit = word & !HELD;
        if limit == 0 {
            return Admission::Admitted;
        }
        if n > limit {
            if word & HELD != 0 {
                return Admission::Admitted;
            }
            self.count.fetch_sub(1, Ordering::Relaxed);
            return Admission::Refused;
        }
        if n > self.reserved.load(Ordering::Acquire) {
            self.count.fetch_sub(1, Ordering::Relaxed);
            return Admission::Wait;
        }
        if n == limit {
            Admission::Last
        } else if n == self.refill_at.load(Ordering::Relaxed) {
            Admission::Refill
        } else {
            Admission::Admitted
        }
    }

    /// Gives back the count of an admitted request that was provably never forwarded.
    pub fn unadmit(&self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
    }

    /// The durable ceiling of forwarded requests (`u64::MAX` when none applies).
    pub fn reserved(&self) -> u64 {
        self.reserved.load(Ordering::Acquire)
    }

    /// Raises the ceiling once it is durable, and when to ask for the next one; wakes waiters.
    pub fn set_reserved(&self, reserved: u64, refill_at: u64) {
        self.refill_at.store(refill_at, Ordering::Relaxed);
        self.reserved.store(reserved, Ordering::Release);
        self.raised.notify_waiters();
    }

    /// Waits until the ceiling rises above `seen` (or returns at once if it already has).
    pub async fn wait_raised(&self, seen: u64) {
        let raised = self.raised.notified();
        tokio::pin!(raised);
        raised.as_mut().enable();
        if self.reserved() > seen {
            return;
        }
        raised.await;
    }

    /// Requests admitted so far.
    #[inline]
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The current limit; 0 = none.
    pub fn limit(&self) -> u64 {
        self.limit.load(Ordering::Relaxed) & !HELD
    }

    /// Sets the limit and whether it is held (the controller does this on PATCH and for delete
    /// locks). Only the controller writes the limit, so a plain store is enough.
    pub fn set_limit(&self, limit: u64, held: bool) {
        self.limit.store(
            (limit & !HELD) | if held { HELD } else { 0 },
            Ordering::Relaxed,
        );
    }

    /// True when the count has reached a non-zero limit (held or not).
    pub fn exhausted(&self) -> bool {
        let limit = self.limit();
        limit != 0 && self.count() >= limit
    }
}

/// One worker's in-flight count for one instance, alone on its cache line.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct InflightSlot(AtomicU64);

/// In-flight requests of one instance, one slot per proxy worker.
///
/// Each slot has a single writer (its worker thread), so it is updated with a plain load and store
/// rather than a read-modify-write, and workers never contend. Readers (the balancer, the controller
/// waiting for a drain) sum the slots.
#[derive(Debug)]
pub struct Inflight {
    slots: Box<[InflightSlot]>,
}

impl Inflight {
    /// Slots for `workers` workers (at least one).
    pub fn new(workers: usize) -> Inflight {
        Inflight {
            slots: (0..workers.max(1))
                .map(|_| InflightSlot::default())
                .collect(),
        }
    }

    /// Called by worker `worker` only: one more request in flight.
    #[inline]
    pub fn enter(&self, worker: usize) {
        let slot = &self.slots[worker].0;
        slot.store(slot.load(Ordering::Relaxed) + 1, Ordering::Release);
    }

    /// Called by worker `worker` only: a request finished.
    #[inline]
    pub fn leave(&self, worker: usize) {
        let slot = &self.slots[worker].0;
        slot.store(
            slot.load(Ordering::Relaxed).saturating_sub(1),
            Ordering::Release,
        );
    }

    /// Requests in flight across all workers.
    pub fn total(&self) -> u64 {
        self.slots.iter().map(|s| s.0.load(Ordering::Acquire)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn admits_exactly_the_limit() {
        let m = Meter::new(0, 3);
        assert_eq!(m.admit(), Admission::Admitted);
        assert_eq!(m.admit(), Admission::Admitted);
        assert_eq!(m.admit(), Admission::Last);
        assert_eq!(m.admit(), Admission::Refused);
        assert_eq!(m.admit(), Admission::Refused);
        assert_eq!(m.count(), 3);
        assert!(m.exhausted());
    }

    #[test]
    fn zero_limit_never_refuses() {
        let m = Meter::new(0, 0);
        for _ in 0..1000 {
            assert_eq!(m.admit(), Admission::Admitted);
        }
        assert_eq!(m.count(), 1000);
        assert!(!m.exhausted());
    }

    #[test]
    fn raising_the_limit_admits_again() {
        let m = Meter::new(0, 1);
        assert_eq!(m.admit(), Admission::Last);
        assert_eq!(m.admit(), Admission::Refused);
        m.set_limit(2, false);
        assert_eq!(m.admit(), Admission::Last);
        assert_eq!(m.count(), 2);
    }

    #[test]
    fn a_held_limit_reports_the_last_request_and_keeps_admitting() {
        let m = Meter::new(0, 2);
        m.set_limit(2, true);
        assert_eq!(m.admit(), Admission::Admitted);
        assert_eq!(m.admit(), Admission::Last);
        assert_eq!(m.admit(), Admission::Admitted);
        assert_eq!(m.count(), 3);
        assert_eq!(m.limit(), 2);
        m.set_limit(2, false);
        assert_eq!(m.admit(), Admission::Refused);
        assert!(m.exhausted());
    }

    #[test]
    fn reservation_gates_admission_and_asks_ahead() {
        let m = Meter::new(0, 10);
        m.set_reserved(4, 2);
        assert_eq!(m.admit(), Admission::Admitted);
        assert_eq!(
            m.admit(),
            Admission::Refill,
            "half the block used: ask for the next"
        );
        assert_eq!(m.admit(), Admission::Admitted);
        assert_eq!(m.admit(), Admission::Admitted);
        assert_eq!(
            m.admit(),
            Admission::Wait,
            "the ceiling is durable: never passed"
        );
        assert_eq!(m.count(), 4);
        m.set_reserved(10, 7);
        for _ in 0..5 {
            assert_ne!(m.admit(), Admission::Wait);
        }
        assert_eq!(m.admit(), Admission::Last);
        assert_eq!(m.admit(), Admission::Refused);
        assert_eq!(m.count(), 10);
    }

    #[tokio::test]
    async fn waiters_wake_when_the_ceiling_rises() {
        let m = Arc::new(Meter::new(0, 10));
        m.set_reserved(1, 1);
        let waiter = {
            let m = Arc::clone(&m);
            tokio::spawn(async move { m.wait_raised(1).await })
        };
        tokio::task::yield_now().await;
        m.set_reserved(5, 3);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_else(|| panic!("waiter not woken"));
        // Already raised: returns at once.
        tokio::time::timeout(std::time::Duration::from_secs(5), m.wait_raised(1))
            .await
            .unwrap_or_else(|_| panic!("not immediate"));
    }

    #[test]
    fn inflight_sums_worker_slots() {
        let f = Inflight::new(3);
        f.enter(0);
        f.enter(2);
        f.enter(2);
        f.leave(2);
        assert_eq!(f.total(), 2);
    }

    proptest::proptest! {
        /// Under any number of threads and attempts, exactly min(limit, attempts) are admitted and
        /// exactly one admission is the last.
        #[test]
        fn concurrent_admission_is_exact(limit in 1u64..500, threads in 1usize..8, per_thread in 1u64..200) {
            let m = Arc::new(Meter::new(0, limit));
            let results: Vec<(u64, u64)> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..threads)
                    .map(|_| {
                        let m = Arc::clone(&m);
                        s.spawn(move || {
                            let (mut admitted, mut last) = (0, 0);
                            for _ in 0..per_thread {
                                match m.admit() {
                                    Admission::Admitted | Admission::Refill => admitted += 1,
                                    Admission::Wait => {}
                                    Admission::Last => { admitted += 1; last += 1 }
                                    Admission::Refused => {}
                                }
                            }
                            (admitted, last)
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap_or((u64::MAX, 0))).collect()
            });
            let admitted: u64 = results.iter().map(|r| r.0).sum();
            let last: u64 = results.iter().map(|r| r.1).sum();
            let attempts = threads as u64 * per_thread;
            proptest::prop_assert_eq!(admitted, limit.min(attempts));
            proptest::prop_assert_eq!(last, u64::from(attempts >= limit));
            proptest::prop_assert_eq!(m.count(), limit.min(attempts));
        }
    }
}
