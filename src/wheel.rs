//! The hierarchical timing wheel (Varghese & Lauck 1987) that holds every lifecycle timer: a plain data
//! structure with no tokio in it; [`crate::timers`] drives it on tokio's clock.
//!
//! # Shape
//!
//! Time is a `u64` count of milliseconds (one tick = 1 ms). The wheel has [`LEVELS`] levels of 64
//! slots; a slot on level `L` spans `64^L` ms, so the seven levels span `2^42` ms (about 139 years).
//! A timer sits on the lowest level whose window still contains its deadline: the level is the
//! highest bit in which the deadline differs from the wheel's current time, divided by six, and the
//! slot is the deadline's six bits at that level. Every occupied slot therefore lies strictly after
//! the current time, the levels are in deadline order (anything on level `L` is due before anything
//! on level `L + 1`), and each level keeps a 64-bit occupancy bitmap, so the next slot with work is
//! the first non-zero bitmap's trailing-zero count. When time reaches a slot on a higher level, its
//! timers are cascaded down to the levels below (a timer moves at most six times in its life).
//!
//! Deadlines whose bits above bit 42 differ from the current time go to an overflow list, which is
//! re-sorted into the wheel, at O(its length), when time reaches the `2^42` ms window of its earliest
//! deadline; it is meant for "practically never" deadlines and is not fast for many distinct far
//! windows. A deadline up to a year ahead lands in the wheel unless the current time is within a
//! year of a multiple of `2^42` ms, which never happens for a clock that starts near zero, as
//! [`crate::timers`]'s does. A deadline at or before the current time goes to a "due" list that the
//! next [`Wheel::advance`] empties first.
//!
//! # Costs
//!
//! [`Wheel::insert`], [`Wheel::cancel`] and [`Wheel::reschedule`] are O(1) (amortised: a push onto a
//! `Vec`). [`Wheel::advance`] is O(1) per occupied slot that comes due plus O(1) per timer that
//! fires or cascades; empty ticks cost nothing, so advancing a year in one call is as cheap as
//! advancing one tick. [`Wheel::next_deadline`] is at most seven bitmap tests.
//!
//! # Order
//!
//! `advance` hands out keys in deadline order. Timers due in the same 1 ms tick come out in an
//! unspecified (but deterministic) order; the property tests compare per-tick sets. A deadline in the
//! past counts as due at the current tick.
//!
//! # Memory
//!
//! Timers live in one slab (`Vec<Entry<K>>`, freed entries reused through a free list), not one `Box`
//! each, and slots hold `u32` entry indices. A pending timer costs `size_of::<Entry<K>>()` in the slab
//! plus 4 bytes in its slot: 40 + 4 = 44 bytes for an 8-byte key such as `u64` (a 16-byte key without
//! a niche, e.g. `(u64, u64)`, makes it 48 + 4). Growth slack of the `Vec`s comes on top; pages past a
//! `Vec`'s length are not touched, so it costs address space rather than resident memory.
//! The fixed part is 7 × 64 slot headers of 24 bytes (about 11 KiB). Measured peak RSS
//! (`cargo bench --bench timer_wheel -- --memory`): about 45 bytes per timer for 1M and 10M pending
//! `u64`-keyed timers.
//!
//! # Identifiers
//!
//! A [`TimerId`] is the entry's slab index plus a 32-bit generation that is bumped each time the entry
//! is freed, so a stale id (fired, cancelled) never matches the entry's next occupant. An entry whose
//! generation would wrap is retired instead of reused, so "never" holds without exception.

use std::mem;

/// Number of levels in the wheel; with 64 slots each they cover `2^42` ms.
pub const LEVELS: usize = 7;
/// Slots per level: one bit of a `u64` occupancy bitmap each.
const SLOTS: usize = 64;
const SLOT_BITS: u32 = 6;
/// Bits of time the wheel covers; deadlines differing from now above these go to the overflow list.
const WHEEL_BITS: u32 = SLOT_BITS * LEVELS as u32;
/// Bucket index of the list of timers already due (deadline at or before the current time).
const DUE: usize = LEVELS * SLOTS;
/// Bucket index of the overflow list (deadline beyond the wheel's window).
const OVERFLOW: usize = DUE + 1;
const BUCKETS: usize = OVERFLOW + 1;
/// Marks the end of the free list.
const NIL: u32 = u32::MAX;
/// A drained slot keeps its allocation up to this many indices (4 KiB) so that busy small slots do
/// not allocate on every turn; bigger ones are freed so that capacity does not pile up in slots
/// that were busy once.
const KEEP_CAPACITY: usize = 1024;

/// Names one pending timer: its slab index and the entry's generation when it was inserted.
///
/// Copy it freely; once the timer has fired or been cancelled, every operation on the id is a no-op.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerId {
    index: u32,
    generation: u32,
}

/// One slab entry: a pending timer, or a vacant entry on the free list when `key` is `None`.
struct Entry<K> {
    deadline: u64,
    key: Option<K>,
    /// Bumped when the entry is freed; see [`TimerId`].
    generation: u32,
    /// Position in `buckets[bucket]` while pending; the next free entry (or [`NIL`]) while vacant.
    pos: u32,
    bucket: u16,
}

/// A hierarchical timing wheel of timers carrying keys of type `K`, with 1 ms ticks.
pub struct Wheel<K> {
    /// The current time: every timer with a deadline at or before it has been handed out or is in
    /// the due list.
    now: u64,
    entries: Vec<Entry<K>>,
    free: u32,
    /// 64 slots per level, then the due list, then the overflow list; each holds entry indices.
    buckets: Vec<Vec<u32>>,
    /// Bit `s` of `occupied[L]` is set when slot `s` of level `L` is non-empty.
    occupied: [u64; LEVELS],
    /// At or before the earliest deadline in the overflow list (stale after a cancel, never late).
    overflow_min: u64,
    len: usize,
}

impl<K> Wheel<K> {
    /// An empty wheel whose current time is `start_ms`.
    pub fn new(start_ms: u64) -> Self {
        Self {
            now: start_ms,
            entries: Vec::new(),
            free: NIL,
            buckets: (0..BUCKETS).map(|_| Vec::new()).collect(),
            occupied: [0; LEVELS],
            overflow_min: u64::MAX,
            len: 0,
        }
    }

    /// The wheel's current time: the `now_ms` of the latest [`Wheel::advance`] (or `start_ms`).
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Number of pending timers.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no timer is pending.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Arms a timer that hands `key` out from the first [`Wheel::advance`] whose `now_ms` reaches
    /// `deadline_ms`; a deadline at or before the current time fires on the next `advance`.
    ///
    /// # Panics
    ///
    /// If `u32::MAX - 1` entries are already in use (160 GiB of timers).
    pub fn insert(&mut self, deadline_ms: u64, key: K) -> TimerId {
        let index = if self.free != NIL {
            let index = self.free;
            let entry = &mut self.entries[index as usize];
            self.free = entry.pos;
            entry.deadline = deadline_ms;
            entry.key = Some(key);
            index
        } else {
            let index = u32::try_from(self.entries.len())
                .ok()
                .filter(|&i| i != NIL)
                .unwrap_or_else(|| panic!("timing wheel: more than {} timers", NIL - 1));
            self.entries.push(Entry {
                deadline: deadline_ms,
                key: Some(key),
                generation: 0,
                pos: 0,
                bucket: 0,
            });
            index
        };
        self.place(index);
        self.len += 1;
        TimerId {
            index,
            generation: self.entries[index as usize].generation,
        }
    }

    /// Disarms a pending timer and returns its key; `None` if the timer already fired or was
    /// cancelled (a no-op then, even if its entry now holds a newer timer).
    pub fn cancel(&mut self, id: TimerId) -> Option<K> {
        let index = self.live(id)?;
        self.unlink(index);
        let key = self.release(index);
        self.len -= 1;
        key
    }

    /// Moves a pending timer to `deadline_ms`; `false` (and no change) if it already fired or was
    /// cancelled.
    pub fn reschedule(&mut self, id: TimerId, deadline_ms: u64) -> bool {
        let Some(index) = self.live(id) else {
            return false;
        };
        self.unlink(index);
        self.entries[index as usize].deadline = deadline_ms;
        self.place(index);
        true
    }

    /// The deadline of a pending timer, `None` if it already fired or was cancelled.
    pub fn deadline(&self, id: TimerId) -> Option<u64> {
        self.live(id)
            .map(|index| self.entries[index as usize].deadline)
    }

    /// The earliest time at which [`Wheel::advance`] can have work to do, `None` if no timer is
    /// pending.
    ///
    /// Never later than the earliest pending deadline, and equal to it when that deadline is within
    /// the current 64 ms window; otherwise it is the start of the higher-level slot that must be
    /// cascaded first. A driver sleeps until this time, advances, and asks again. When a timer is
    /// already due this is the current time.
    pub fn next_deadline(&self) -> Option<u64> {
        if !self.buckets[DUE].is_empty() {
            return Some(self.now);
        }
        self.next_bucket().map(|(_, start)| start)
    }

    /// Moves the current time to `now_ms` (an earlier `now_ms` leaves it where it is) and appends to
    /// `out` the key of every timer whose deadline is at or before it, in deadline order.
    pub fn advance(&mut self, now_ms: u64, out: &mut Vec<K>) {
        self.fire(DUE, out);
        while let Some((bucket, start)) = self.next_bucket() {
            if start > now_ms {
                break;
            }
            // Moving the current time to the slot's start keeps every other slot strictly ahead of
            // it: the slot is the earliest with work, and later slots share its higher bits.
            self.now = start;
            if bucket < SLOTS {
                // A level-0 slot spans one tick: everything in it is due now.
                self.fire(bucket, out);
            } else {
                self.cascade(bucket, out);
            }
        }
        self.now = self.now.max(now_ms);
    }

    /// The index of a live timer's entry.
    fn live(&self, id: TimerId) -> Option<u32> {
        let entry = self.entries.get(id.index as usize)?;
        (entry.generation == id.generation && entry.key.is_some()).then_some(id.index)
    }

    /// Which bucket a deadline belongs in, given the current time.
    fn bucket_for(&self, deadline: u64) -> usize {
        if deadline <= self.now {
            return DUE;
        }
        let differing = deadline ^ self.now;
        if differing >> WHEEL_BITS != 0 {
            return OVERFLOW;
        }
        // `| 63` puts anything differing only in the low six bits on level 0.
        let level = (63 - (differing | 63).leading_zeros()) / SLOT_BITS;
        let slot = (deadline >> (level * SLOT_BITS)) as usize & (SLOTS - 1);
        level as usize * SLOTS + slot
    }

    /// Adds the entry at `index` to the bucket its deadline belongs in.
    fn place(&mut self, index: u32) {
        let bucket = self.bucket_for(self.entries[index as usize].deadline);
        let entry = &mut self.entries[index as usize];
        let list = &mut self.buckets[bucket];
        // Fits: a bucket holds at most one index per entry, and entry indices are below `NIL`.
        entry.pos = list.len() as u32;
        entry.bucket = bucket as u16;
        list.push(index);
        if bucket < DUE {
            self.occupied[bucket / SLOTS] |= 1 << (bucket % SLOTS);
        } else if bucket == OVERFLOW {
            self.overflow_min = self.overflow_min.min(entry.deadline);
        }
    }

    /// Removes the entry at `index` from its bucket.
    fn unlink(&mut self, index: u32) {
        let entry = &self.entries[index as usize];
        let (bucket, pos) = (entry.bucket as usize, entry.pos as usize);
        let list = &mut self.buckets[bucket];
        list.swap_remove(pos);
        if let Some(&moved) = list.get(pos) {
            self.entries[moved as usize].pos = pos as u32;
        } else if list.is_empty() && bucket < DUE {
            self.occupied[bucket / SLOTS] &= !(1 << (bucket % SLOTS));
        } else if list.is_empty() && bucket == OVERFLOW {
            // A stale minimum is harmless only while `advance` still visits the list.
            self.overflow_min = u64::MAX;
        }
    }

    /// Takes the key out of an unlinked entry and puts the entry on the free list.
    fn release(&mut self, index: u32) -> Option<K> {
        let entry = &mut self.entries[index as usize];
        let key = entry.key.take();
        entry.generation = entry.generation.wrapping_add(1);
        // Retire an entry whose generation is exhausted: reusing it would let a stale id with the
        // wrapped generation cancel a newer timer.
        if entry.generation != u32::MAX {
            entry.pos = self.free;
            self.free = index;
        }
        key
    }

    /// The earliest non-empty wheel slot (or the overflow list) and the time it comes due.
    fn next_bucket(&self) -> Option<(usize, u64)> {
        for (level, &bits) in self.occupied.iter().enumerate() {
            if bits != 0 {
                let slot = bits.trailing_zeros();
                let shift = level as u32 * SLOT_BITS;
                // The start of the current time's window on this level, plus the slot's offset.
                let window = self.now & !((1u64 << (shift + SLOT_BITS)) - 1);
                return Some((
                    level * SLOTS + slot as usize,
                    window + (u64::from(slot) << shift),
                ));
            }
        }
        if self.buckets[OVERFLOW].is_empty() {
            return None;
        }
        // Nothing in the overflow list is due before the start of the 2^42 ms window holding its
        // earliest deadline; jumping straight there (rather than to the next window) keeps a
        // far-future timer from costing one pass per window on the way. That window starts after
        // now: overflow deadlines differ from now above the wheel's bits and are later than it.
        Some((OVERFLOW, self.overflow_min & !((1u64 << WHEEL_BITS) - 1)))
    }

    /// Empties `bucket`, handing its keys out in order; its timers are all due.
    fn fire(&mut self, bucket: usize, out: &mut Vec<K>) {
        let list = self.take_bucket(bucket);
        out.reserve(list.len());
        for &index in &list {
            if let Some(key) = self.release(index) {
                out.push(key);
            }
        }
        self.len -= list.len();
        self.return_bucket(bucket, list);
    }

    /// Empties a higher-level slot (or the overflow list) that has come due, re-placing each timer
    /// relative to the new current time: a level lower down, or out now if its deadline is the
    /// slot's first tick.
    fn cascade(&mut self, bucket: usize, out: &mut Vec<K>) {
        if bucket == OVERFLOW {
            self.overflow_min = u64::MAX;
        }
        let list = self.take_bucket(bucket);
        for &index in &list {
            if self.entries[index as usize].deadline <= self.now {
                if let Some(key) = self.release(index) {
                    out.push(key);
                }
                self.len -= 1;
            } else {
                self.place(index);
            }
        }
        self.return_bucket(bucket, list);
    }

    fn take_bucket(&mut self, bucket: usize) -> Vec<u32> {
        if bucket < DUE {
            self.occupied[bucket / SLOTS] &= !(1 << (bucket % SLOTS));
        }
        mem::take(&mut self.buckets[bucket])
    }

    /// Gives a drained bucket its allocation back when that is small and the bucket is still empty
    /// (overflow timers may have been put straight back into the overflow list).
    fn return_bucket(&mut self, bucket: usize, mut list: Vec<u32>) {
        if list.capacity() <= KEEP_CAPACITY && self.buckets[bucket].is_empty() {
            list.clear();
            self.buckets[bucket] = list;
        }
    }
}

impl<K> std::fmt::Debug for Wheel<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wheel")
            .field("now", &self.now)
            .field("len", &self.len)
            .field("next_deadline", &self.next_deadline())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeSet, HashMap};

    fn advance(wheel: &mut Wheel<u64>, now: u64) -> Vec<u64> {
        let mut out = Vec::new();
        wheel.advance(now, &mut out);
        out
    }

    /// Steps through time one tick at a time and records the tick at which each key fires.
    fn fire_times(wheel: &mut Wheel<u64>, from: u64, to: u64) -> Vec<(u64, u64)> {
        let mut fired = Vec::new();
        for now in from..=to {
            for key in advance(wheel, now) {
                fired.push((now, key));
            }
        }
        fired
    }

    #[test]
    fn entry_is_40_bytes_for_a_u64_key() {
        // The module doc's memory figure; at most 64 bytes per pending timer is the target.
        assert_eq!(mem::size_of::<Entry<u64>>(), 40);
        assert_eq!(mem::size_of::<TimerId>(), 8);
    }

    #[test]
    fn fires_at_the_deadline_and_not_a_tick_before() {
        let mut wheel = Wheel::new(0);
        wheel.insert(5, 1);
        wheel.insert(3, 2);
        assert_eq!(fire_times(&mut wheel, 0, 10), vec![(3, 2), (5, 1)]);
        assert!(wheel.is_empty());
    }

    #[test]
    fn deadline_in_the_past_fires_on_the_next_advance() {
        let mut wheel = Wheel::new(1_000);
        wheel.insert(10, 1);
        wheel.insert(1_000, 2);
        assert_eq!(wheel.next_deadline(), Some(1_000));
        // Advancing to the same time (or an earlier one) still hands them out.
        let mut fired = advance(&mut wheel, 999);
        fired.sort_unstable();
        assert_eq!(fired, vec![1, 2]);
        assert!(advance(&mut wheel, 2_000).is_empty());
    }

    #[test]
    fn deadline_exactly_on_a_level_boundary() {
        for start in [0, 1, 63, 4_095, 1 << 36, (1 << 42) - 3] {
            for level in 1..=LEVELS as u32 {
                let span = 1u64 << (level * SLOT_BITS);
                // The next multiple of 64^level, and the one after it.
                let boundary = (start / span + 1) * span;
                for deadline in [boundary - 1, boundary, boundary + 1, boundary + span] {
                    if deadline <= start {
                        continue;
                    }
                    let mut wheel = Wheel::new(start);
                    wheel.insert(deadline, deadline);
                    assert!(wheel.next_deadline().is_some_and(|t| t <= deadline));
                    assert!(
                        advance(&mut wheel, deadline - 1).is_empty(),
                        "start {start} deadline {deadline} fired early"
                    );
                    assert_eq!(advance(&mut wheel, deadline), vec![deadline]);
                    assert_eq!(wheel.next_deadline(), None);
                }
            }
        }
    }

    #[test]
    fn next_deadline_is_exact_within_the_current_window() {
        let mut wheel = Wheel::new(100);
        assert_eq!(wheel.next_deadline(), None);
        wheel.insert(120, 1);
        assert_eq!(wheel.next_deadline(), Some(120));
        // Far timer: a lower bound, the start of its slot on level 1.
        let mut wheel = Wheel::new(0);
        wheel.insert(200, 1);
        assert_eq!(wheel.next_deadline(), Some(192));
        assert!(advance(&mut wheel, 192).is_empty());
        assert_eq!(wheel.next_deadline(), Some(200));
    }

    #[test]
    fn cancel_after_expiry_is_a_no_op() {
        let mut wheel = Wheel::new(0);
        let old = wheel.insert(5, 1);
        assert_eq!(advance(&mut wheel, 5), vec![1]);
        assert_eq!(wheel.cancel(old), None);
        assert!(!wheel.reschedule(old, 50));
        // The entry is reused for a newer timer: the stale id must not touch it.
        let new = wheel.insert(10, 2);
        assert_eq!(new.index, old.index);
        assert_eq!(wheel.cancel(old), None);
        assert!(!wheel.reschedule(old, 50));
        assert_eq!(wheel.deadline(new), Some(10));
        assert_eq!(advance(&mut wheel, 10), vec![2]);
    }

    #[test]
    fn cancel_and_reschedule() {
        let mut wheel = Wheel::new(0);
        let a = wheel.insert(100, 1);
        let b = wheel.insert(100_000, 2);
        let c = wheel.insert(7, 3);
        assert_eq!(wheel.cancel(c), Some(3));
        assert_eq!(wheel.cancel(c), None);
        assert!(wheel.reschedule(b, 50));
        assert!(wheel.reschedule(a, 1 << 40));
        assert_eq!(wheel.len(), 2);
        assert_eq!(fire_times(&mut wheel, 0, 200), vec![(50, 2)]);
        assert_eq!(advance(&mut wheel, (1 << 40) - 1), Vec::<u64>::new());
        assert_eq!(advance(&mut wheel, 1 << 40), vec![1]);
    }

    #[test]
    fn retired_generation_is_never_reused() {
        let mut wheel = Wheel::new(0);
        let id = wheel.insert(5, 1);
        wheel.entries[id.index as usize].generation = u32::MAX - 1;
        let id = TimerId {
            index: id.index,
            generation: u32::MAX - 1,
        };
        assert_eq!(wheel.cancel(id), Some(1));
        let next = wheel.insert(5, 2);
        assert_ne!(next.index, id.index, "an exhausted entry must be retired");
    }

    #[test]
    fn advancing_a_year_in_one_call() {
        const YEAR: u64 = 365 * 24 * 3_600 * 1_000;
        let mut wheel = Wheel::new(0);
        let mut deadlines: Vec<u64> = (1..=10_000u64)
            .map(|i| i * 7_919 * 397 % YEAR + 1)
            .collect();
        deadlines.push(YEAR);
        for &d in &deadlines {
            wheel.insert(d, d);
        }
        wheel.insert(YEAR + 1, 0);
        deadlines.sort_unstable();
        deadlines.dedup();
        let fired = advance(&mut wheel, YEAR);
        let mut sorted = fired.clone();
        sorted.sort_unstable();
        assert_eq!(fired, sorted, "keys (= deadlines) must come out in order");
        assert_eq!(sorted.len(), 10_001);
        assert_eq!(wheel.len(), 1);
        assert_eq!(advance(&mut wheel, YEAR + 1), vec![0]);
    }

    #[test]
    fn overflow_list_beyond_the_wheel() {
        let mut wheel = Wheel::new(0);
        wheel.insert(u64::MAX, 1);
        wheel.insert((1 << 42) + 5, 2);
        wheel.insert(1 << 50, 3);
        assert_eq!(wheel.buckets[OVERFLOW].len(), 3);
        assert_eq!(wheel.next_deadline(), Some(1 << 42));
        assert!(advance(&mut wheel, (1 << 42) + 4).is_empty());
        assert_eq!(advance(&mut wheel, (1 << 42) + 5), vec![2]);
        assert!(advance(&mut wheel, (1 << 50) - 1).is_empty());
        assert_eq!(advance(&mut wheel, u64::MAX - 1), vec![3]);
        assert_eq!(advance(&mut wheel, u64::MAX), vec![1]);
        assert!(wheel.is_empty());
    }

    /// A deadline relative to the current time, shaped to hit the wheel's edges.
    #[derive(Debug, Clone)]
    enum When {
        Past(u64),
        Near(u64),
        /// Next multiple of `64^level`, plus an offset in -2..=2.
        Boundary(u32, i8),
        Far(u64),
        Max(u64),
    }

    impl When {
        fn at(&self, now: u64) -> u64 {
            match *self {
                When::Past(d) => now.saturating_sub(d),
                When::Near(d) | When::Far(d) => now.saturating_add(d),
                When::Boundary(level, offset) => {
                    let span = 1u64 << (level * SLOT_BITS).min(63);
                    let boundary = (now / span).saturating_add(1).saturating_mul(span);
                    boundary.saturating_add_signed(i64::from(offset))
                }
                When::Max(d) => u64::MAX - d,
            }
        }
    }

    fn when() -> impl Strategy<Value = When> {
        prop_oneof![
            1 => (0..3_000u64).prop_map(When::Past),
            6 => (0..300u64).prop_map(When::Near),
            4 => (1..=8u32, -2..=2i8).prop_map(|(l, o)| When::Boundary(l, o)),
            3 => (0..1u64 << 45).prop_map(When::Far),
            1 => (0..3u64).prop_map(When::Max),
        ]
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(When),
        Cancel(usize),
        Reschedule(usize, When),
        Advance(When),
        /// Advance to `next_deadline()` plus an offset in -1..=1.
        AdvanceToNext(i8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            5 => when().prop_map(Op::Insert),
            2 => any::<usize>().prop_map(Op::Cancel),
            2 => (any::<usize>(), when()).prop_map(|(i, w)| Op::Reschedule(i, w)),
            2 => when().prop_map(Op::Advance),
            2 => (-1..=1i8).prop_map(Op::AdvanceToNext),
        ]
    }

    fn start() -> impl Strategy<Value = u64> {
        prop_oneof![
            Just(0u64),
            any::<u64>().prop_map(|s| s >> 14),
            // Just before the wheel's own span, the top level's slots, and the end of time.
            (1..5_000u64).prop_map(|d| (1 << 42) - d),
            (1..5_000u64, 1..64u64).prop_map(|(d, k)| k * (1 << 36) - d),
            (1..1u64 << 20).prop_map(|d| u64::MAX - d),
        ]
    }

    /// The model: pending timers in a `BTreeSet` ordered by (effective deadline, key). Keys are
    /// numbered in insertion order, so the model names a timer by its key and never by the wheel's
    /// `TimerId` (which would hide a generation bug).
    #[derive(Default)]
    struct Model {
        now: u64,
        by_deadline: BTreeSet<(u64, u64)>,
        by_key: HashMap<u64, u64>,
    }

    impl Model {
        fn arm(&mut self, key: u64, deadline: u64) {
            // A past deadline is due at the current tick.
            let due = deadline.max(self.now);
            self.by_deadline.insert((due, key));
            self.by_key.insert(key, due);
        }

        fn disarm(&mut self, key: u64) -> bool {
            let Some(due) = self.by_key.remove(&key) else {
                return false;
            };
            self.by_deadline.remove(&(due, key))
        }

        /// Keys due at or before `now`, each with its deadline, in (deadline, key) order.
        fn advance(&mut self, now: u64) -> Vec<(u64, u64)> {
            self.now = self.now.max(now);
            let later = self.by_deadline.split_off(&(self.now, u64::MAX));
            let due = mem::replace(&mut self.by_deadline, later);
            for (_, key) in &due {
                self.by_key.remove(key);
            }
            due.into_iter().collect()
        }
    }

    fn run(start: u64, ops: Vec<Op>) -> Result<(), TestCaseError> {
        let mut wheel = Wheel::new(start);
        let mut model = Model {
            now: start,
            ..Model::default()
        };
        let mut ids: Vec<TimerId> = Vec::new();
        for op in ops {
            match op {
                Op::Insert(when) => {
                    let deadline = when.at(model.now);
                    let key = ids.len() as u64;
                    ids.push(wheel.insert(deadline, key));
                    model.arm(key, deadline);
                }
                Op::Cancel(i) if !ids.is_empty() => {
                    let key = (i % ids.len()) as u64;
                    let expected = model.disarm(key).then_some(key);
                    prop_assert_eq!(wheel.cancel(ids[key as usize]), expected);
                }
                Op::Reschedule(i, when) if !ids.is_empty() => {
                    let key = (i % ids.len()) as u64;
                    let deadline = when.at(model.now);
                    let pending = model.disarm(key);
                    if pending {
                        model.arm(key, deadline);
                    }
                    prop_assert_eq!(wheel.reschedule(ids[key as usize], deadline), pending);
                }
                Op::Cancel(_) | Op::Reschedule(..) => {}
                Op::Advance(when) => {
                    let now = when.at(model.now);
                    check_advance(&mut wheel, &mut model, now)?;
                }
                Op::AdvanceToNext(offset) => {
                    let Some(next) = wheel.next_deadline() else {
                        continue;
                    };
                    let now = next.saturating_add_signed(i64::from(offset));
                    check_advance(&mut wheel, &mut model, now)?;
                }
            }
            prop_assert_eq!(wheel.len(), model.by_key.len());
            let earliest = model.by_deadline.first().map(|&(due, _)| due);
            match (wheel.next_deadline(), earliest) {
                (None, None) => {}
                (Some(next), Some(earliest)) => {
                    prop_assert!(next <= earliest, "next_deadline {next} after {earliest}");
                    prop_assert!(next >= model.now, "next_deadline {next} before now");
                }
                (next, earliest) => prop_assert!(false, "next {next:?} vs model {earliest:?}"),
            }
        }
        // Drain everything: nothing may be lost.
        check_advance(&mut wheel, &mut model, u64::MAX)?;
        prop_assert!(wheel.is_empty());
        Ok(())
    }

    fn check_advance(
        wheel: &mut Wheel<u64>,
        model: &mut Model,
        now: u64,
    ) -> Result<(), TestCaseError> {
        let expected = model.advance(now);
        let deadline_of: HashMap<u64, u64> =
            expected.iter().map(|&(due, key)| (key, due)).collect();
        let mut fired = Vec::new();
        for key in advance(wheel, now) {
            let due = deadline_of.get(&key).copied();
            prop_assert!(due.is_some(), "key {key} fired at {now} but is not due");
            fired.push((due.unwrap_or_default(), key));
        }
        prop_assert!(
            fired.windows(2).all(|pair| pair[0].0 <= pair[1].0),
            "out of deadline order: {fired:?}"
        );
        // Ties within a tick may come out in any order: compare per-tick sets.
        fired.sort_unstable();
        prop_assert_eq!(fired, expected);
        prop_assert_eq!(wheel.now(), model.now);
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn matches_a_btree_model(start in start(), ops in prop::collection::vec(op(), 1..300)) {
            run(start, ops)?;
        }
    }
}
