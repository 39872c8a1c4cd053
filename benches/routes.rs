//! Publishing a route table as the host count grows (issue 16): building one from scratch, as
//! every publish that touched routing did before, against editing the last one
//! ([`RouteTable::edit`]) to change one route (an instance started) and to change 500 (a batch).
//!
//! `cargo bench --bench routes`; ids `routes/{build,edit_one,edit_500}/{1000,100000}`.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

use autokill::proxy::meter::Meter;
use autokill::proxy::route::{RouteTable, Target, Upstream};

/// `n` stopped instances' hosts, one in a hundred running (with an upstream slot).
fn build(n: usize) -> RouteTable {
    let mut b = RouteTable::builder();
    for i in 0..n {
        let target = if i % 100 == 0 {
            Target::Instance(Some(b.upstream(upstream(i))))
        } else {
            Target::Instance(None)
        };
        b.route(&format!("instance-{i}.localhost"), target);
    }
    b.build()
}

fn upstream(i: usize) -> Arc<Upstream> {
    Arc::new(Upstream::new(
        uuid::Uuid::new_v4(),
        format!("instance-{i}").into(),
        ([127, 0, 0, 1], 10_000).into(),
        Arc::new(Meter::new(0, 0)),
        2,
    ))
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("routes");
    g.sample_size(20);
    for n in [1_000, 100_000] {
        g.bench_with_input(BenchmarkId::new("build", n), &n, |b, &n| {
            b.iter(|| black_box(build(n)))
        });
        let table = build(n);
        let up = upstream(1);
        g.bench_with_input(BenchmarkId::new("edit_one", n), &n, |b, _| {
            b.iter(|| {
                let mut edit = table.edit();
                edit.set_upstream(0, Some(Arc::clone(&up)));
                edit.route("instance-1.localhost", Target::Instance(Some(0)));
                black_box(edit.build())
            })
        });
        g.bench_with_input(BenchmarkId::new("edit_500", n), &n, |b, _| {
            b.iter(|| {
                let mut edit = table.edit();
                for i in 0..500 {
                    edit.route(&format!("instance-{i}.localhost"), Target::Instance(None));
                }
                black_box(edit.build())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
