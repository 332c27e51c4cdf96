//! Cross-process behaviour with std only, so that the same tests run on Linux and on Windows
//! (cross-built, under Wine here: `ci/windows.sh`): processes share a store both ways and
//! increment one counter without losing an update; a client terminated inside a put (at every
//! crash point of the put path) is recovered by another process, which finds the old or the
//! new value and a clean store; writers terminated at random lose no acknowledged put; a host
//! that stops (or dies) and starts again keeps the data.

use std::time::Duration;

use kvshm::{Client, Config, Host};
use kvshm_portable_tests::{acked, key, killed_at_crash_point, value, Rng, TestDir, KEYS};

const CHILD: &str = env!("CARGO_BIN_EXE_kvshm-pchild");
const LIMIT: Duration = Duration::from_secs(120);

fn host(t: &TestDir) -> Host {
    Host::create(
        &t.name,
        &Config::default().dir(&t.dir).stripes(16).initial_size(0),
    )
    .expect("create store")
}

fn assert_verified(c: &Client) {
    let r = c.verify().expect("verify");
    assert!(r.is_ok(), "verify: {:#?}", r.problems);
}

#[test]
fn two_processes_share_a_store_both_ways_and_count_together() {
    let mut t = TestDir::new("share");
    let h = host(&t);
    for i in 0..500u32 {
        h.put(format!("h{i}").as_bytes(), format!("v{i}").as_bytes())
            .unwrap();
    }
    let c = t.spawn(CHILD, &["check", "h", "500"], &[]);
    assert!(
        t.wait(c, LIMIT).success(),
        "the child did not see the host's keys"
    );
    let c = t.spawn(CHILD, &["fill", "c", "500"], &[]);
    assert!(t.wait(c, LIMIT).success());
    for i in 0..500u32 {
        assert_eq!(
            h.get(format!("c{i}").as_bytes()).unwrap().as_deref(),
            Some(format!("v{i}").as_bytes()),
            "key c{i} written by the child"
        );
    }
    // Three processes increment one counter at once: every increment counts (the stripe lock
    // works across processes, also where waiting is a poll rather than a futex).
    let a = t.spawn(CHILD, &["incr", "counter", "2000"], &[]);
    let b = t.spawn(CHILD, &["incr", "counter", "2000"], &[]);
    for _ in 0..1000 {
        h.incr(b"counter", 1).unwrap();
    }
    assert!(t.wait(a, LIMIT).success() && t.wait(b, LIMIT).success());
    assert_eq!(h.get(b"counter").unwrap().as_deref(), Some(&b"5000"[..]));
    assert_verified(&h);
    h.release().unwrap();
}

/// The put path's crash points: a child is terminated there, inside a put that replaces a key
/// and inside one that inserts a new key; the host then reads the old or the new value (never
/// anything else), writes the same keys (taking over the dead child's stripe lock), and the
/// store verifies clean.
#[test]
fn a_client_terminated_inside_a_put_is_recovered_by_another_process() {
    const POINTS: &[&str] = &[
        "put.prepared",
        "alloc.recorded",
        "alloc.tagged",
        "put.locked",
        "put.replaced",
        "put.inserted",
        "txn.committed",
        "put.unlocked",
        "txn.freeing",
        "free.tagged",
    ];
    let mut t = TestDir::new("crash");
    let h = host(&t);
    let big = "n".repeat(3000); // a new size class: the allocator's locked path, not a cache
    let mut killed = 0;
    for (n, point) in POINTS.iter().enumerate() {
        for insert in [false, true] {
            let k = format!("k{n}-{insert}");
            if !insert {
                h.put(k.as_bytes(), b"old").unwrap();
            }
            let c = t.spawn(CHILD, &["put", &k, &big], &[("KVSHM_CRASH_AT", point)]);
            let st = t.wait(c, LIMIT);
            if st.success() {
                // This put did not pass the point (e.g. no block to free on an insert).
                assert!(
                    insert || !matches!(*point, "put.replaced"),
                    "{point}: not reached"
                );
            } else {
                assert!(
                    killed_at_crash_point(st),
                    "{point}: child ended with {st:?}"
                );
                killed += 1;
            }
            let got = h.get(k.as_bytes()).unwrap();
            let old: Option<&[u8]> = if insert { None } else { Some(b"old") };
            assert!(
                got.as_deref() == old || got.as_deref() == Some(big.as_bytes()),
                "{point} (insert {insert}): read {:?}",
                got.map(|v| String::from_utf8_lossy(&v[..v.len().min(20)]).into_owned())
            );
            h.put(k.as_bytes(), b"after").unwrap();
            assert_eq!(h.get(k.as_bytes()).unwrap().as_deref(), Some(&b"after"[..]));
            h.recover_dead_clients().unwrap();
            assert_verified(&h);
        }
    }
    eprintln!("{killed} children terminated at a crash point of the put path");
    assert!(
        killed >= POINTS.len(),
        "only {killed} children died at their point"
    );
    h.release().unwrap();
}

/// Every crash point that a workload of every kind of write reaches (growth, replacements,
/// removes, batches, increments, expiry, a span, a reclaim pass, eviction: the child's
/// `workload`), at its first and third hit: the child is terminated there, then another
/// process recovers it, the store verifies clean and every stripe takes a write (no lock left
/// held). The Linux matrix (`tests/tests/crash_points.rs`) checks the data of each operation
/// besides; this one runs wherever std does, Windows included.
#[test]
fn a_client_terminated_at_any_crash_point_is_recovered() {
    let mut t = TestDir::new("points");
    let mut reached = Vec::new();
    for point in kvshm::crash::CRASH_POINTS {
        for hit in [1, 3] {
            let h = Host::create(
                &t.name,
                &Config::default()
                    .dir(&t.dir)
                    .stripes(16)
                    .initial_size(0)
                    .max_size(16 << 20),
            )
            .expect("create store");
            let at = format!("{point}@{hit}");
            let c = t.spawn(CHILD, &["workload"], &[("KVSHM_CRASH_AT", &at)]);
            let st = t.wait(c, LIMIT);
            if st.success() {
                h.release().unwrap();
                continue; // not reached by this workload
            }
            assert!(killed_at_crash_point(st), "{at}: child ended with {st:?}");
            reached.push(at.clone());
            h.recover_dead_clients().unwrap();
            let r = h.verify().unwrap();
            assert!(r.is_ok(), "{at}: verify: {:#?}", r.problems);
            for i in 0..256u32 {
                h.put(format!("after-{i}").as_bytes(), b"ok").unwrap();
            }
            assert_verified(&h);
            h.release().unwrap();
        }
    }
    eprintln!(
        "{} crash points reached and recovered: {reached:?}",
        reached.len()
    );
    assert!(reached.len() >= 40, "only {} points reached", reached.len());
}

/// Two writer processes are terminated at random moments (SIGKILL / `TerminateProcess`) and
/// restarted, each time checking every key it wrote against its acknowledgements; at the
/// end every key holds its last acknowledged value (or the put in flight at the last kill)
/// and the store verifies clean.
#[test]
fn writers_terminated_at_random_lose_no_acknowledged_put() {
    const WRITERS: u64 = 2;
    let kills: u64 = std::env::var("KVSHM_PORTABLE_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(16);
    let mut t = TestDir::new("storm");
    let h = host(&t);
    let acks: Vec<String> = (0..WRITERS)
        .map(|w| t.file(&format!("acks-{w}")).display().to_string())
        .collect();
    let mut rng = Rng::new(u64::from(std::process::id()));
    let mut running: Vec<usize> = (0..WRITERS)
        .map(|w| t.spawn(CHILD, &["writer", &w.to_string(), &acks[w as usize]], &[]))
        .collect();
    for _ in 0..kills {
        std::thread::sleep(Duration::from_millis(50 + rng.below(250)));
        let w = rng.below(WRITERS) as usize;
        t.kill(running[w]);
        running[w] = t.spawn(CHILD, &["writer", &w.to_string(), &acks[w]], &[]);
    }
    std::thread::sleep(Duration::from_millis(300));
    for i in running {
        t.kill(i);
    }
    // A writer that found a key it wrote changed ended with exit code 1 (it is reaped by
    // `kill`); the final check below covers the last incarnation.
    let mut acked_total = 0;
    for w in 0..WRITERS {
        let done = acked(std::path::Path::new(&acks[w as usize]));
        acked_total += done.len();
        let next = done.last().map_or(0, |l| l + 1);
        for j in 0..KEYS.min(next) {
            let last = (0..next).rev().find(|i| i % KEYS == j).unwrap();
            let got = h.get(&key(w, j)).unwrap();
            assert!(
                got.as_deref() == Some(&value(w, last)[..])
                    || (next % KEYS == j && got.as_deref() == Some(&value(w, next)[..])),
                "writer {w} key {j}: last acknowledged step {last}, store holds {:?}",
                got.map(|v| String::from_utf8_lossy(&v).into_owned())
            );
        }
    }
    assert!(acked_total > 0, "no writer acknowledged a put");
    h.recover_dead_clients().unwrap();
    assert_verified(&h);
    eprintln!("{kills} kills, {acked_total} acknowledged puts checked");
    h.release().unwrap();
}

/// A host that stops (drop without release), or whose process dies, leaves the data for the
/// next host.
#[test]
fn a_host_restart_keeps_the_data() {
    let t = TestDir::new("restart");
    let h = host(&t);
    h.put(b"kept", b"across restarts").unwrap();
    // While it lives, the host is seen, by itself too, and a second host is refused (a
    // liveness probe must not drop the lock it probes: on Windows a probe through the
    // holder's own handle did).
    for _ in 0..2 {
        assert_eq!(h.stats().host_pid, Some(u64::from(std::process::id())));
        let c = Client::open_in(&t.dir, &t.name).unwrap();
        assert_eq!(c.stats().host_pid, Some(u64::from(std::process::id())));
        assert!(
            matches!(
                Host::open_existing_in(&t.dir, &t.name),
                Err(kvshm::Error::HostRunning { .. })
            ),
            "a second host was let in"
        );
    }
    drop(h);
    let c = Client::open_in(&t.dir, &t.name).unwrap();
    assert_eq!(
        c.get(b"kept").unwrap().as_deref(),
        Some(&b"across restarts"[..])
    );
    drop(c);
    let h = Host::open_existing_in(&t.dir, &t.name).unwrap();
    assert_eq!(
        h.get(b"kept").unwrap().as_deref(),
        Some(&b"across restarts"[..])
    );
    assert_verified(&h);
    // Release frees the name at once, also while a client still maps the store (it keeps
    // its view, as after unlink); a new store of that name can be created.
    let still = Client::open_in(&t.dir, &t.name).unwrap();
    h.release().unwrap();
    assert!(
        matches!(
            Client::open_in(&t.dir, &t.name),
            Err(kvshm::Error::NotFound { .. })
        ),
        "released, yet still there"
    );
    assert_eq!(
        still.get(b"kept").unwrap().as_deref(),
        Some(&b"across restarts"[..])
    );
    let again = host(&t);
    assert_eq!(again.get(b"kept").unwrap(), None);
    drop(still);
    again.release().unwrap();
}
