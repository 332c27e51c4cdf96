//! Criterion figures of issue 13: a versioned get against a plain get, a conditional put
//! against a plain put, and `incr`, on 10k keys with 100-byte values.
//! `cargo bench -p kvshm-benches --bench versions`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use kvshm_benches::{key, print_machine, BenchStore};

const N: u64 = 10_000;
const VALUE: usize = 100;

fn versions(c: &mut Criterion) {
    print_machine();
    let store = BenchStore::loaded("versions", N, VALUE);
    let h = store.host();
    let mut g = c.benchmark_group("10000_keys");
    let mut i = 0u64;
    let mut buf = Vec::with_capacity(VALUE);
    g.bench_function("get_hit", |b| {
        b.iter(|| {
            i = (i + 7919) % N;
            black_box(h.get_into(&key(i), &mut buf).unwrap())
        })
    });
    g.bench_function("get_versioned_hit", |b| {
        b.iter(|| {
            i = (i + 7919) % N;
            black_box(h.get_versioned(&key(i)).unwrap())
        })
    });
    let v = vec![0x33u8; VALUE];
    g.bench_function("put_update", |b| {
        b.iter(|| {
            i = (i + 7919) % N;
            h.put(&key(i), &v).unwrap()
        })
    });
    // Each key's version is tracked, so every conditional put succeeds (the common case).
    let mut versions: Vec<u64> = (0..N)
        .map(|k| h.version(&key(k)).unwrap().unwrap())
        .collect();
    g.bench_function("put_if_version", |b| {
        b.iter(|| {
            i = (i + 7919) % N;
            versions[i as usize] = h
                .put_if_version(&key(i), &v, Some(versions[i as usize]))
                .unwrap();
        })
    });
    let counters: Vec<Vec<u8>> = (0..N).map(|k| format!("ctr-{k}").into_bytes()).collect();
    g.bench_function("incr", |b| {
        b.iter(|| {
            i = (i + 7919) % N;
            black_box(h.incr(&counters[i as usize], 1).unwrap())
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3)).sample_size(30);
    targets = versions
}
criterion_main!(benches);
