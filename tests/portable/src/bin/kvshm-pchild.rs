//! The child program of the portable cross-process tests. `kvshm-pchild MODE DIR NAME ...`:
//! - `put DIR NAME KEY VALUE`: one put (a test sets `KVSHM_CRASH_AT` to die inside it);
//! - `fill DIR NAME PREFIX N`: put `PREFIX<i>` = `v<i>` for i < N;
//! - `check DIR NAME PREFIX N`: every `PREFIX<i>` holds `v<i>` (exit 1 if not);
//! - `incr DIR NAME KEY N`: N increments of KEY;
//! - `incr-sync DIR NAME KEY N`: increments `ready`, waits for key `go`, then N increments;
//! - `workload DIR NAME`: one pass over every kind of write (growth, replacements, removes,
//!   batches, increments, expiry, a span, a reclaim pass, eviction), so that a test that sets
//!   `KVSHM_CRASH_AT` reaches most crash points;
//! - `writer DIR NAME W ACKS`: writer W puts `key(W, i)` = `value(W, i)` for i = 0, 1, ...
//!   forever, appending i to ACKS after each put returned; a restarted writer first checks
//!   its keys against its acknowledgements and continues after the last one.
#![forbid(unsafe_code)]

use std::io::Write;

use kvshm_portable_tests::{acked, key, value, KEYS};

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let (mode, dir, name) = (a[1].as_str(), &a[2], &a[3]);
    let c = kvshm::Client::open_in(dir, name).unwrap_or_else(|e| {
        eprintln!("pchild: open {dir}/{name}: {e}");
        std::process::exit(3)
    });
    match mode {
        "put" => c.put(a[4].as_bytes(), a[5].as_bytes()).expect("put"),
        "fill" => {
            for i in 0..a[5].parse::<u64>().expect("N") {
                c.put(
                    format!("{}{i}", a[4]).as_bytes(),
                    format!("v{i}").as_bytes(),
                )
                .expect("put");
            }
        }
        "check" => {
            for i in 0..a[5].parse::<u64>().expect("N") {
                let k = format!("{}{i}", a[4]);
                let got = c.get(k.as_bytes()).expect("get");
                if got.as_deref() != Some(format!("v{i}").as_bytes()) {
                    eprintln!("pchild: {k} holds {got:?}");
                    std::process::exit(1);
                }
            }
        }
        "incr" => {
            for _ in 0..a[5].parse::<u64>().expect("N") {
                c.incr(a[4].as_bytes(), 1).expect("incr");
            }
        }
        "incr-sync" => {
            // Say ready, wait for `go`, then increment: the bench times only the increments.
            c.incr(b"ready", 1).expect("incr");
            while c.get(b"go").expect("get").is_none() {
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
            for _ in 0..a[5].parse::<u64>().expect("N") {
                c.incr(a[4].as_bytes(), 1).expect("incr");
            }
        }
        "writer" => writer(&c, a[4].parse().expect("W"), &a[5]),
        "workload" => workload(&c),
        m => {
            eprintln!("pchild: unknown mode {m}");
            std::process::exit(2)
        }
    }
}

fn writer(c: &kvshm::Client, w: u64, acks: &str) {
    let done = acked(std::path::Path::new(acks));
    let next = done.last().map_or(0, |l| l + 1);
    // Every key holds the value of its last acknowledged step, or of the step in flight
    // when the previous incarnation was killed (`next`, not acknowledged: maybe applied).
    for j in 0..KEYS.min(next) {
        let last = (0..next).rev().find(|i| i % KEYS == j).expect("a step");
        let got = c.get(&key(w, j)).expect("get");
        let ok = got.as_deref() == Some(&value(w, last)[..])
            || (next % KEYS == j && got.as_deref() == Some(&value(w, next)[..]));
        if !ok {
            eprintln!("pchild: writer {w} key {j}: holds {got:?}, last acknowledged step {last}");
            std::process::exit(1);
        }
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(acks)
        .expect("acks");
    // A line cut by the kill is ended, so that the next one stands alone.
    if std::fs::read(acks).is_ok_and(|b| b.last().is_some_and(|&c| c != b'\n')) {
        writeln!(f).expect("ack");
    }
    for i in next.. {
        c.put(&key(w, i), &value(w, i)).expect("put");
        writeln!(f, "{i}").expect("ack");
    }
}

fn workload(c: &kvshm::Client) {
    let val = |i: u64, base: u64| vec![b'a' + (i % 26) as u8; (base + (i * 37) % 600) as usize];
    for i in 0..3000u64 {
        c.put(format!("k{i}").as_bytes(), &val(i, 1)).expect("put");
    }
    for i in (0..3000u64).step_by(3) {
        c.put(format!("k{i}").as_bytes(), &val(i, 700))
            .expect("replace");
    }
    for i in (0..3000u64).step_by(5) {
        c.remove(format!("k{i}").as_bytes()).expect("remove");
    }
    let batch: Vec<(Vec<u8>, Vec<u8>)> = (0..20u64)
        .map(|i| (format!("b{i}").into_bytes(), val(i, 10)))
        .collect();
    c.put_many(&batch).expect("put_many");
    let keys: Vec<&[u8]> = batch.iter().map(|(k, _)| k.as_slice()).collect();
    c.get_many(&keys).expect("get_many");
    c.remove_many(&keys).expect("remove_many");
    for _ in 0..50 {
        c.incr(b"ctr", 1).expect("incr");
    }
    for i in 0..200u64 {
        c.put_with_ttl(
            format!("t{i}").as_bytes(),
            b"x",
            std::time::Duration::from_millis(1),
        )
        .expect("put_with_ttl");
    }
    std::thread::sleep(std::time::Duration::from_millis(5));
    c.expire_pass().expect("expire_pass");
    c.put(b"span", &vec![7u8; 600 << 10]).expect("span");
    c.remove(b"span").expect("remove span");
    // A file system that cannot punch holes (Wine) reports it; the pass still ran.
    let _ = c.reclaim_pass(0);
    let _ = c.reclaim_pass(0);
    c.set_eviction(kvshm::Policy::AllKeysLru).expect("eviction");
    for i in 0..30_000u64 {
        c.put(format!("e{i}").as_bytes(), &val(i, 400))
            .expect("put under eviction");
    }
}
