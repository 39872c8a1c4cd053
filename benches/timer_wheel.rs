//! Timing wheel against `tokio_util::time::DelayQueue` and a lazily-deleting `BinaryHeap`, each
//! holding 1,000,000 pending timers with deadlines spread over an hour; every figure is per timer.
//!
//! * `*/insert_cancel`: insert one more timer and cancel it again (the common case: an instance
//!   stops, its autokill timer is armed, it starts again before the timer fires).
//! * `*/expire`: hand the timers out in deadline order the way a driver does (next deadline, advance
//!   to it, repeat), the structure being refilled to 1M outside the timed part whenever it runs dry.
//!
//! `cargo bench --bench timer_wheel -- --memory` prints the peak resident memory of 1M and 10M
//! pending timers in each structure instead of benchmarking.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::poll_fn;
use std::hint::black_box;
use std::time::Duration;

use autokill::wheel::Wheel;
use criterion::{BenchmarkGroup, Criterion, measurement::WallTime};
use tokio::runtime::Runtime;
use tokio_util::time::DelayQueue;

/// Pending timers in every benchmark.
const PENDING: usize = 1_000_000;
/// Deadlines fall in (0, HOUR] ms.
const HOUR: u64 = 3_600_000;

/// Deterministic pseudo-random deadlines in (0, HOUR] (xorshift64).
fn deadlines(n: usize, mut seed: u64) -> Vec<u64> {
    (0..n)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            1 + seed % HOUR
        })
        .collect()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// What every contender offers the benchmarks.
trait Timers {
    type Id;
    fn insert(&mut self, deadline: u64, key: u64) -> Self::Id;
    fn cancel(&mut self, id: Self::Id) -> bool;
    /// Hands out at least `n` timers (or all there are) in deadline order; returns how many.
    fn expire(&mut self, n: usize) -> usize;
}

impl Timers for Wheel<u64> {
    type Id = autokill::wheel::TimerId;

    fn insert(&mut self, deadline: u64, key: u64) -> Self::Id {
        Wheel::insert(self, deadline, key)
    }

    fn cancel(&mut self, id: Self::Id) -> bool {
        Wheel::cancel(self, id).is_some()
    }

    fn expire(&mut self, n: usize) -> usize {
        let mut out = Vec::new();
        let mut fired = 0;
        while fired < n {
            let Some(next) = self.next_deadline() else {
                break;
            };
            self.advance(next, &mut out);
            fired += out.len();
            black_box(&out);
            out.clear();
        }
        fired
    }
}

/// A `BinaryHeap` timer queue with lazy deletion, as commonly written: cancel bumps the entry's
/// generation and leaves the heap alone; stale heap entries are skipped when they surface, and the
/// heap is rebuilt once more than half of it is stale so that memory stays bounded.
struct LazyHeap {
    heap: BinaryHeap<Reverse<(u64, u32, u32)>>,
    /// Per slot: the generation and the key while pending.
    slots: Vec<(u32, Option<u64>)>,
    free: Vec<u32>,
    live: usize,
}

impl LazyHeap {
    fn new() -> Self {
        Self {
            heap: BinaryHeap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            live: 0,
        }
    }

    fn release(&mut self, slot: u32) -> Option<u64> {
        let entry = &mut self.slots[slot as usize];
        entry.0 = entry.0.wrapping_add(1);
        self.free.push(slot);
        self.live -= 1;
        entry.1.take()
    }
}

impl Timers for LazyHeap {
    type Id = (u32, u32);

    fn insert(&mut self, deadline: u64, key: u64) -> Self::Id {
        let slot = self.free.pop().unwrap_or_else(|| {
            self.slots.push((0, None));
            (self.slots.len() - 1) as u32
        });
        let entry = &mut self.slots[slot as usize];
        entry.1 = Some(key);
        self.heap.push(Reverse((deadline, slot, entry.0)));
        self.live += 1;
        (slot, entry.0)
    }

    fn cancel(&mut self, (slot, generation): Self::Id) -> bool {
        let entry = &self.slots[slot as usize];
        if entry.0 != generation || entry.1.is_none() {
            return false;
        }
        self.release(slot);
        if self.heap.len() > 2 * self.live + 1024 {
            let slots = &self.slots;
            self.heap
                .retain(|Reverse((_, s, g))| slots[*s as usize].0 == *g);
        }
        true
    }

    fn expire(&mut self, n: usize) -> usize {
        let mut fired = 0;
        while fired < n {
            let Some(&Reverse((_, slot, generation))) = self.heap.peek() else {
                break;
            };
            self.heap.pop();
            if self.slots[slot as usize].0 == generation {
                black_box(self.release(slot));
                fired += 1;
            }
        }
        fired
    }
}

/// `DelayQueue` on a current-thread runtime with a paused clock, so that expiry can be driven as
/// fast as the queue allows.
struct Delay {
    rt: Runtime,
    queue: DelayQueue<u64>,
    start: tokio::time::Instant,
}

impl Delay {
    fn new() -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("tokio runtime");
        let (queue, start) = {
            let _guard = rt.enter();
            (DelayQueue::new(), tokio::time::Instant::now())
        };
        Self { rt, queue, start }
    }

    /// Moves the paused clock past every deadline inserted so far.
    fn pass_an_hour(&mut self) {
        self.rt.block_on(tokio::time::advance(ms(HOUR + 1)));
        self.start += ms(HOUR + 1);
    }
}

impl Timers for Delay {
    type Id = tokio_util::time::delay_queue::Key;

    fn insert(&mut self, deadline: u64, key: u64) -> Self::Id {
        let _guard = self.rt.enter();
        self.queue.insert_at(key, self.start + ms(deadline))
    }

    fn cancel(&mut self, id: Self::Id) -> bool {
        self.queue.try_remove(&id).is_some()
    }

    fn expire(&mut self, n: usize) -> usize {
        let queue = &mut self.queue;
        self.rt.block_on(async {
            let mut fired = 0;
            while fired < n {
                match poll_fn(|cx| queue.poll_expired(cx)).await {
                    Some(expired) => black_box(expired),
                    None => break,
                };
                fired += 1;
            }
            fired
        })
    }
}

fn fill(timers: &mut impl Timers, seed: u64) {
    for (key, deadline) in deadlines(PENDING, seed).into_iter().enumerate() {
        timers.insert(deadline, key as u64);
    }
}

fn insert_cancel<T: Timers>(group: &mut BenchmarkGroup<'_, WallTime>, mut timers: T) {
    fill(&mut timers, 0x9E37_79B9_7F4A_7C15);
    let extra = deadlines(4096, 42);
    let mut i = 0usize;
    group.bench_function("insert_cancel", |b| {
        b.iter(|| {
            let id = timers.insert(extra[i % extra.len()], i as u64);
            black_box(timers.cancel(id));
            i += 1;
        });
    });
}

/// Times the expiry of `iters` timers, refilling to 1M (untimed) whenever the structure runs dry;
/// `prepare` runs after each fill (the `DelayQueue` clock must be moved past the deadlines).
fn expire<T: Timers>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    mut timers: T,
    prepare: impl Fn(&mut T),
) {
    let mut remaining = 0usize;
    let mut seed = 1u64;
    group.bench_function("expire", |b| {
        b.iter_custom(|iters| {
            let wanted = usize::try_from(iters).unwrap_or(usize::MAX);
            let (mut fired, mut spent) = (0usize, Duration::ZERO);
            while fired < wanted {
                if remaining == 0 {
                    fill(&mut timers, seed);
                    prepare(&mut timers);
                    seed += 1;
                    remaining = PENDING;
                }
                let start = std::time::Instant::now();
                let n = timers.expire((wanted - fired).min(remaining));
                spent += start.elapsed();
                assert!(n > 0, "a full structure handed nothing out");
                fired += n;
                remaining = remaining.saturating_sub(n);
            }
            // Ties in one tick can hand out a few more than asked: scale to exactly `iters`.
            spent.mul_f64(iters as f64 / fired as f64)
        });
    });
}

fn benches(c: &mut Criterion) {
    let configure = |group: &mut BenchmarkGroup<'_, WallTime>| {
        group
            .sample_size(20)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3));
    };

    let mut group = c.benchmark_group("wheel");
    configure(&mut group);
    insert_cancel(&mut group, Wheel::new(0));
    expire(&mut group, Wheel::new(0), |_| {});
    group.finish();

    let mut group = c.benchmark_group("delay_queue");
    configure(&mut group);
    insert_cancel(&mut group, Delay::new());
    expire(&mut group, Delay::new(), Delay::pass_an_hour);
    group.finish();

    let mut group = c.benchmark_group("binary_heap");
    configure(&mut group);
    insert_cancel(&mut group, LazyHeap::new());
    expire(&mut group, LazyHeap::new(), |_| {});
    group.finish();
}

/// Peak resident memory of 1M and 10M pending timers in each structure.
fn memory() {
    fn status(field: &str) -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map_or(0, |kb| kb * 1024)
    }
    fn measure<T: Timers>(name: &str, n: usize, make: impl FnOnce() -> T) {
        let keys = deadlines(n, 7);
        // Writing 5 resets VmHWM to the current RSS (Linux 4.0+).
        if std::fs::write("/proc/self/clear_refs", "5").is_err() {
            println!("cannot reset VmHWM; figures below include earlier peaks");
        }
        let before = status("VmRSS:");
        let mut timers = make();
        for (key, &deadline) in keys.iter().enumerate() {
            timers.insert(deadline, key as u64);
        }
        let peak = status("VmHWM:").saturating_sub(before);
        println!(
            "{name:12} {n:>10} pending: peak RSS +{:>5} MiB = {:5.1} bytes per timer",
            peak >> 20,
            peak as f64 / n as f64
        );
        drop(timers);
    }
    println!(
        "size_of: wheel TimerId {} B; DelayQueue Key {} B",
        size_of::<autokill::wheel::TimerId>(),
        size_of::<tokio_util::time::delay_queue::Key>()
    );
    for n in [1_000_000, 10_000_000] {
        measure("wheel", n, || Wheel::<u64>::new(0));
        measure("delay_queue", n, Delay::new);
        measure("binary_heap", n, LazyHeap::new);
    }
}

fn main() {
    if std::env::args().any(|arg| arg == "--memory") {
        memory();
        return;
    }
    let mut criterion = Criterion::default().configure_from_args();
    benches(&mut criterion);
    criterion.final_summary();
}
