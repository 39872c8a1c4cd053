//! The per-request cost of routing and counting: a route-table lookup by `Host` plus the meter's
//! admission, uncontended (1 thread) and with 2 threads counting on the same instance.
//!
//! `cargo bench --bench meter`. Targets: under 10 ns per request on one thread, under 25 ns with two.
//! `route_and_count` is a request on a new connection (hash lookup), for one host and for each
//! of 1,000 in turn; `memo_and_count` one on a keep-alive connection after its first request
//! (the connection's [`RouteMemo`]).

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};

use autokill::config::Balance;
use autokill::proxy::meter::{Admission, Meter};
use autokill::proxy::route::{GroupRoute, Route, RouteMemo, RouteTable, Target, Upstream};

/// A table shaped like a real one: 1,000 instances, each with its own host, and 10 groups.
fn table() -> RouteTable {
    let mut b = RouteTable::builder();
    let mut members = Vec::new();
    for i in 0..1000 {
        let up = Arc::new(Upstream::new(
            uuid::Uuid::new_v4(),
            format!("instance-{i}").into(),
            ([127, 0, 0, 1], 10_000 + i as u16).into(),
            Arc::new(Meter::new(0, 0)),
            2,
        ));
        let idx = b.upstream(up);
        b.route(
            &format!("instance-{i}.localhost"),
            Target::Instance(Some(idx)),
        );
        members.push(idx);
    }
    for g in 0..10 {
        let m: Vec<usize> = members.iter().copied().skip(g * 100).take(100).collect();
        b.route(
            &format!("group-{g}.example.com"),
            Target::Group(GroupRoute {
                members: m.into(),
                balance: Balance::RoundRobin,
            }),
        );
    }
    b.build()
}

/// What the worker does per request before forwarding: look up the host, count on the meter.
/// Inlined into the measured loop as the baseline's `fetch_add` is (and as the worker's own
/// code is into its request path): a call of the bench's own would add its frame to the figure.
#[inline(always)]
fn route_and_count(table: &RouteTable, host: &[u8]) -> bool {
    match table.lookup(host) {
        Some(Route::Instance(Some(running))) => counted(running.meter),
        _ => false,
    }
}

/// The same through a connection's [`RouteMemo`].
#[inline(always)]
fn memo_and_count(memo: &mut RouteMemo, table: &RouteTable, host: &[u8]) -> bool {
    match memo.resolve(table, host) {
        Ok(Some(Route::Instance(Some(running)))) => counted(running.meter),
        _ => false,
    }
}

/// Counts a request on an instance's meter, as the worker does: whether it may go on.
#[inline(always)]
fn counted(meter: &Meter) -> bool {
    !matches!(meter.admit(), Admission::Refused | Admission::Wait(_))
}

fn bench(c: &mut Criterion) {
    let table = Arc::new(table());
    let host: &[u8] = b"instance-517.localhost:8080";
    assert!(route_and_count(&table, host));

    // The floor every figure below is read against: one relaxed `fetch_add` on a padded atomic.
    let mut base = c.benchmark_group("baseline");
    base.measurement_time(Duration::from_secs(3));
    base.bench_function("fetch_add/1_thread", |b| {
        let counter = Padded::default();
        b.iter(|| black_box(counter.0.fetch_add(1, Ordering::Relaxed)))
    });
    base.bench_function("fetch_add/2_threads", |b| {
        let counter = Arc::new(Padded::default());
        b.iter_custom(|iters| {
            two_threads(iters, || {
                let counter = Arc::clone(&counter);
                move || {
                    black_box(counter.0.fetch_add(1, Ordering::Relaxed));
                }
            })
        })
    });
    base.finish();

    let mut g = c.benchmark_group("meter");
    g.measurement_time(Duration::from_secs(3));
    g.bench_function("admit/1_thread", |b| {
        let meter = Meter::new(0, 0);
        // What the proxy reads of an admission, as the request paths below do: a whole
        // `Admission` through `black_box` would be written to the stack in two halves and read
        // back in one, a store-forwarding stall the proxy never has.
        b.iter(|| black_box(meter.admit() == Admission::Admitted))
    });
    g.bench_function("lookup/1_thread", |b| {
        b.iter(|| black_box(table.lookup(black_box(host)).is_some()))
    });
    g.bench_function("route_and_count/1_thread", |b| {
        b.iter(|| black_box(route_and_count(&table, black_box(host))))
    });
    // The same for each of the 1,000 instances in turn: the figure above is one host's, and
    // depends on where that host falls in its part of the table (its first place to look, or a
    // later one); this one averages over all of them, with the branches a mix of hosts takes.
    g.bench_function("route_and_count_each_host/1_thread", |b| {
        let hosts: Vec<Vec<u8>> = (0..1000)
            .map(|i| format!("instance-{i}.localhost:8080").into_bytes())
            .collect();
        assert!(hosts.iter().all(|host| route_and_count(&table, host)));
        let mut i = 0;
        b.iter(|| {
            i += 1;
            if i == hosts.len() {
                i = 0;
            }
            black_box(route_and_count(&table, black_box(&hosts[i])))
        })
    });
    // What a keep-alive connection pays per request after its first: the connection's memo.
    g.bench_function("memo_and_count/1_thread", |b| {
        let mut memo = RouteMemo::default();
        b.iter(|| black_box(memo_and_count(&mut memo, &table, black_box(host))))
    });
    // Two threads on the same instance: each thread does `iters` requests; the figure is the wall
    // time per request per thread, i.e. what one request costs while the other core counts too.
    g.bench_function("route_and_count/2_threads", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, || {
                let table = Arc::clone(&table);
                move || {
                    black_box(route_and_count(&table, black_box(host)));
                }
            })
        })
    });
    // The same with each thread's connection memo.
    g.bench_function("memo_and_count/2_threads", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, || {
                let (table, mut memo) = (Arc::clone(&table), RouteMemo::default());
                move || {
                    black_box(memo_and_count(&mut memo, &table, black_box(host)));
                }
            })
        })
    });
    g.finish();
}

/// A counter alone on its cache line, as the meter's is.
#[derive(Default)]
#[repr(align(128))]
struct Padded(AtomicU64);

/// Runs an operation `make` builds `iters` times on this thread while a second thread runs its own
/// as often, and returns this thread's wall time: what one operation costs while the other core
/// does the same.
fn two_threads<F: FnMut() + Send + 'static>(iters: u64, make: impl Fn() -> F) -> Duration {
    let barrier = Arc::new(Barrier::new(2));
    let other = {
        let (barrier, mut op) = (Arc::clone(&barrier), make());
        std::thread::spawn(move || {
            barrier.wait();
            for _ in 0..iters {
                op();
            }
        })
    };
    let mut op = make();
    barrier.wait();
    let start = Instant::now();
    for _ in 0..iters {
        op();
    }
    let elapsed = start.elapsed();
    let _ = other.join();
    elapsed
}

criterion_group!(benches, bench);
criterion_main!(benches);
