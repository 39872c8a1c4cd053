//! The timer driver: one tokio task that sleeps until the [`Wheel`]'s next deadline on tokio's clock
//! (so tests can pause time) and hands each expired key to a sink, in deadline order.
//!
//! Ticks are milliseconds since the [`Instant`] at which the driver was spawned. Deadlines are rounded
//! up to the next tick, so a timer never fires before its deadline, and fires a millisecond or two
//! (tick rounding and tokio's own 1 ms timer granularity) plus scheduling delay after it. The wheel sits behind a `std::sync::Mutex`: timer calls are rare (a few per
//! instance lifecycle), never held across an await, and the sink runs outside the lock, so a sink
//! may call back into [`Timers`].

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

pub use crate::wheel::TimerId;
use crate::wheel::Wheel;

/// A handle to the timer task. Clones share the task; it ends when the last clone is dropped, and
/// timers still pending then are dropped without firing.
pub struct Timers<K> {
    handle: Arc<Handle<K>>,
}

/// Dropped with the last [`Timers`] clone; tells the task to stop.
struct Handle<K> {
    shared: Arc<Shared<K>>,
}

/// What the handles and the task share.
struct Shared<K> {
    wheel: Mutex<Wheel<K>>,
    /// Wakes the task when the next deadline moved earlier or the handles are gone.
    wake: Notify,
    closed: AtomicBool,
    /// Tick 0.
    origin: Instant,
}

impl<K: Send + 'static> Timers<K> {
    /// Spawns the timer task on the current tokio runtime. The task calls `sink` with each expired
    /// key, in deadline order (keys due in the same millisecond in unspecified order). A sink that
    /// owns a clone of the returned handle keeps the task alive for good.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime, like [`tokio::spawn`].
    pub fn spawn(sink: impl FnMut(K) + Send + 'static) -> Self {
        let shared = Arc::new(Shared {
            wheel: Mutex::new(Wheel::new(0)),
            wake: Notify::new(),
            closed: AtomicBool::new(false),
            origin: Instant::now(),
        });
        tokio::spawn(run(Arc::clone(&shared), sink));
        Self {
            handle: Arc::new(Handle { shared }),
        }
    }
}

impl<K> Timers<K> {
    /// Arms a timer that passes `key` to the sink at `deadline` (at once if it has passed).
    pub fn insert(&self, deadline: Instant, key: K) -> TimerId {
        let shared = self.shared();
        let tick = shared.tick_at(deadline);
        shared.update(|wheel| wheel.insert(tick, key))
    }

    /// Disarms a timer; `false` if it already fired or was cancelled.
    pub fn cancel(&self, id: TimerId) -> bool {
        // A later next deadline needs no wake-up: the task wakes at the old one and sleeps again.
        self.shared().lock().cancel(id).is_some()
    }

    /// Moves a pending timer to `deadline`; `false` if it already fired or was cancelled.
    pub fn reschedule(&self, id: TimerId, deadline: Instant) -> bool {
        let shared = self.shared();
        let tick = shared.tick_at(deadline);
        shared.update(|wheel| wheel.reschedule(id, tick))
    }

    /// Number of pending timers.
    pub fn pending(&self) -> usize {
        self.shared().lock().len()
    }

    fn shared(&self) -> &Shared<K> {
        &self.handle.shared
    }
}

impl<K> Clone for Timers<K> {
    fn clone(&self) -> Self {
        Self {
            handle: Arc::clone(&self.handle),
        }
    }
}

impl<K> fmt::Debug for Timers<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timers")
            .field("pending", &self.pending())
            .finish()
    }
}

impl<K> Drop for Handle<K> {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        // Stores a permit if the task is not waiting yet, so the stop is never missed.
        self.shared.wake.notify_one();
    }
}

impl<K> Shared<K> {
    fn lock(&self) -> MutexGuard<'_, Wheel<K>> {
        // The wheel never panics part-way through an operation on any input and the sink runs
        // outside the lock, so a poisoned lock still guards a consistent wheel.
        self.wheel.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies `change` to the wheel and wakes the task if that moved the next deadline earlier.
    fn update<T>(&self, change: impl FnOnce(&mut Wheel<K>) -> T) -> T {
        let mut wheel = self.lock();
        let before = wheel.next_deadline();
        let result = change(&mut wheel);
        let after = wheel.next_deadline();
        drop(wheel);
        if after.is_some_and(|after| before.is_none_or(|before| after < before)) {
            self.wake.notify_one();
        }
        result
    }

    /// The tick of `deadline`, rounded up so that nothing fires early.
    fn tick_at(&self, deadline: Instant) -> u64 {
        let nanos = deadline.saturating_duration_since(self.origin).as_nanos();
        u64::try_from(nanos.div_ceil(1_000_000)).unwrap_or(u64::MAX)
    }

    /// The current tick, rounded down: every deadline at or before it has passed.
    fn now_tick(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// When the task must next look at the wheel; `None` means only a wake-up can give it work.
    fn instant_of(&self, tick: u64) -> Option<Instant> {
        self.origin.checked_add(Duration::from_millis(tick))
    }
}

/// The timer task: advance the wheel to now, hand out what expired, sleep until the next deadline or
/// a wake-up.
async fn run<K>(shared: Arc<Shared<K>>, mut sink: impl FnMut(K)) {
    let mut expired = Vec::new();
    while !shared.closed.load(Ordering::Acquire) {
        let next = {
            let mut wheel = shared.lock();
            wheel.advance(shared.now_tick(), &mut expired);
            wheel.next_deadline()
        };
        for key in expired.drain(..) {
            sink(key);
        }
        // A wake-up sent since the lock was released is kept as a permit, so none is lost here.
        let woken = shared.wake.notified();
        match next.and_then(|tick| shared.instant_of(tick)) {
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = woken => {}
                }
            }
            None => woken.await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;

    /// A driver whose sink records each key with the time it was handed out.
    fn recording() -> (
        Timers<&'static str>,
        mpsc::UnboundedReceiver<(&'static str, Instant)>,
    ) {
        let (tx, rx) = mpsc::unbounded_channel();
        let timers = Timers::spawn(move |key| {
            let _ = tx.send((key, Instant::now()));
        });
        (timers, rx)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// The next key handed out, or `None` once the task has ended; fails the test instead of
    /// hanging if nothing comes within a (paused-clock) day.
    async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> Option<T> {
        let got = tokio::time::timeout(ms(86_400_000), rx.recv()).await;
        got.unwrap_or_else(|_| panic!("nothing fired within a day"))
    }

    #[tokio::test(start_paused = true)]
    async fn fires_in_deadline_order_at_the_deadline() {
        let start = Instant::now();
        let (timers, mut rx) = recording();
        timers.insert(start + ms(10_000), "c");
        timers.insert(start + ms(5_000), "a");
        timers.insert(start + ms(7_500), "b");
        assert_eq!(timers.pending(), 3);
        for (key, at) in [("a", 5_000), ("b", 7_500), ("c", 10_000)] {
            assert_eq!(next(&mut rx).await, Some((key, start + ms(at))));
        }
        assert_eq!(timers.pending(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_deadline_wakes_the_sleeping_task() {
        let start = Instant::now();
        let (timers, mut rx) = recording();
        timers.insert(start + ms(3_600_000), "late");
        // Let the task go to sleep until the late deadline first.
        tokio::time::sleep(ms(1_000)).await;
        timers.insert(Instant::now() + ms(1_000), "early");
        assert_eq!(next(&mut rx).await, Some(("early", start + ms(2_000))));
        assert_eq!(next(&mut rx).await, Some(("late", start + ms(3_600_000))));
    }

    #[tokio::test(start_paused = true)]
    async fn cancel_and_reschedule() {
        let start = Instant::now();
        let (timers, mut rx) = recording();
        let gone = timers.insert(start + ms(100), "gone");
        let moved = timers.insert(start + ms(200), "moved");
        timers.insert(start + ms(300), "kept");
        assert!(timers.cancel(gone));
        assert!(!timers.cancel(gone));
        assert!(timers.reschedule(moved, start + ms(400)));
        assert_eq!(next(&mut rx).await, Some(("kept", start + ms(300))));
        assert_eq!(next(&mut rx).await, Some(("moved", start + ms(400))));
        assert!(!timers.reschedule(moved, start + ms(500)), "already fired");
    }

    #[tokio::test(start_paused = true)]
    async fn rounds_deadlines_up_and_fires_past_ones_at_once() {
        let start = Instant::now();
        let (timers, mut rx) = recording();
        tokio::time::sleep(ms(50)).await;
        timers.insert(start + ms(10), "past");
        assert_eq!(next(&mut rx).await, Some(("past", start + ms(50))));
        timers.insert(start + Duration::from_micros(60_500), "fraction");
        assert_eq!(next(&mut rx).await, Some(("fraction", start + ms(61))));
    }

    #[tokio::test(start_paused = true)]
    async fn task_ends_when_every_handle_is_dropped() {
        let start = Instant::now();
        let (timers, mut rx) = recording();
        let clone = timers.clone();
        timers.insert(start + ms(1_000), "never");
        drop(timers);
        // A live clone keeps the task running.
        clone.insert(start + ms(10), "fires");
        assert_eq!(next(&mut rx).await, Some(("fires", start + ms(10))));
        drop(clone);
        // The task dropped its sink (and the sender in it) without firing the pending timer.
        assert_eq!(next(&mut rx).await, None);
        assert_eq!(Instant::now(), start + ms(10));
    }
}
