//! Criterion micro-benchmarks: get hit/miss, put update/insert, remove at 10k and 1M keys with
//! 100-byte values. `cargo bench -p kvshm-benches`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use kvshm_benches::{key, print_machine, BenchStore};

const VALUE: usize = 100;

fn ops(c: &mut Criterion) {
    print_machine();
    for n in [10_000u64, 1_000_000] {
        let store = BenchStore::loaded(&format!("ops{n}"), n, VALUE);
        let h = store.host();
        // KVSHM_BENCH_EVICTION=allkeys-lru: the same under an LRU policy (hits check, and
        // set when clear, the reference bit).
        if let Ok(p) = std::env::var("KVSHM_BENCH_EVICTION") {
            h.set_eviction(p.parse().expect("policy"))
                .expect("set_eviction");
        }
        let mut g = c.benchmark_group(format!("{n}_keys"));
        let mut i = 0u64;
        let mut buf = Vec::with_capacity(VALUE);
        g.bench_function("get_hit", |b| {
            b.iter(|| {
                i = (i + 7919) % n;
                black_box(h.get_into(&key(i), &mut buf).unwrap())
            })
        });
        g.bench_function("get_miss", |b| {
            b.iter(|| {
                i += 1;
                black_box(h.get_into(&key(n + i), &mut buf).unwrap())
            })
        });
        let v = vec![0x33u8; VALUE];
        g.bench_function("put_update", |b| {
            b.iter(|| {
                i = (i + 7919) % n;
                h.put(&key(i), &v).unwrap()
            })
        });
        let mut next = n;
        g.bench_function("put_insert", |b| {
            b.iter(|| {
                next += 1;
                h.put(&key(next), &v).unwrap()
            })
        });
        // Remove an existing key; the set-up (not timed) inserts a fresh one per iteration.
        let mut fresh = 1u64 << 40;
        g.bench_function("remove", |b| {
            b.iter_batched(
                || {
                    fresh += 1;
                    h.put(&key(fresh), &v).unwrap();
                    key(fresh)
                },
                |k| assert!(h.remove(&k).unwrap()),
                BatchSize::SmallInput,
            )
        });
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3)).sample_size(30);
    targets = ops
}
criterion_main!(benches);
