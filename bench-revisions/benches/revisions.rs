//! Wall time of each case at both revisions, interleaved in one criterion run.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion};

fn revisions(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("revisions");
    for case in bench_revisions::cases() {
        runtime.block_on(case.run());
        group.bench_function(case.name, |b| b.to_async(&runtime).iter(|| case.run()));
    }
    group.finish();
}

criterion_group!(benches, revisions);
criterion_main!(benches);
