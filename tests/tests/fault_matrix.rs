//! Faults beyond a single SIGKILL: a stopped lock holder, the host killed and restarted under
//! load, and a store that fills up under load.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kvshm::{Client, Config};
use kvshm_tests::{
    check_model, check_pattern, pattern, replay, signal, wait_for, workspace_bin, ChildGuard,
    StoreName, TestStore,
};

const CHILD: &str = env!("CARGO_BIN_EXE_kvshm-child");

fn process_state(pid: i32) -> char {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit(')').next().and_then(|r| r.trim().chars().next()))
        .unwrap_or('?')
}

/// Keys on the same stripe as `crash-key` and on another stripe.
fn keys_by_stripe(c: &Client) -> (String, String) {
    let target = c.stripe_of_key(b"crash-key");
    let same = (0..)
        .map(|i| format!("same-{i}"))
        .find(|k| c.stripe_of_key(k.as_bytes()) == target)
        .unwrap();
    let other = (0..)
        .map(|i| format!("other-{i}"))
        .find(|k| c.stripe_of_key(k.as_bytes()) != target)
        .unwrap();
    (same, other)
}

#[test]
fn a_stopped_lock_holder_blocks_only_its_stripe_and_resumes() {
    let t = TestStore::new("sigstop", Config::default().stripes(8), CHILD);
    t.host().put(b"crash-key", b"old").unwrap();
    let (same, other) = keys_by_stripe(t.host());
    // The child freezes (SIGSTOP) while holding crash-key's stripe lock.
    let mut holder = t.spawn(
        "crash",
        &["put-update"],
        &[
            ("KVSHM_CRASH_AT", "put.replaced"),
            ("KVSHM_CRASH_ACTION", "stop"),
        ],
    );
    wait_for("the holder to stop", Duration::from_secs(30), || {
        process_state(holder.pid()) == 'T'
    });
    // Other stripes keep working, in other processes and in this one.
    let mut w = t.spawn("put", &[&other, "fine"], &[]);
    assert!(w.wait_limit(Duration::from_secs(30)).success());
    let other2 = (0..)
        .map(|i| format!("other-direct-{i}"))
        .find(|k| t.host().stripe_of_key(k.as_bytes()) != t.host().stripe_of_key(b"crash-key"))
        .unwrap();
    t.host().put(other2.as_bytes(), b"fine").unwrap();
    // A writer of the stopped stripe waits (a live owner is never robbed; readers of that
    // stripe wait too once their optimistic retries are used up).
    let mut blocked = t.spawn("put", &[&same, "waited"], &[]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        blocked.child.try_wait().unwrap().is_none(),
        "writer did not wait for a live holder"
    );
    let waiting = t
        .host()
        .stats()
        .clients
        .iter()
        .filter(|c| c.waiting_on_stripe.is_some())
        .count();
    assert_eq!(waiting, 1, "stats should show the waiting client");
    // SIGCONT: both finish, nothing lost.
    signal(&holder, libc::SIGCONT);
    let st = holder.wait_limit(Duration::from_secs(30));
    assert_eq!(
        st.code(),
        Some(3),
        "holder should finish its put after SIGCONT"
    );
    assert!(blocked.wait_limit(Duration::from_secs(30)).success());
    assert_eq!(
        t.host().get(b"crash-key").unwrap().as_deref(),
        Some(&b"new-value-that-is-longer"[..])
    );
    assert_eq!(
        t.host().get(same.as_bytes()).unwrap().as_deref(),
        Some(&b"waited"[..])
    );
    assert_eq!(
        t.host().get(other.as_bytes()).unwrap().as_deref(),
        Some(&b"fine"[..])
    );
    t.assert_verified();
}

fn start_host(store: &StoreName, log: &Path) -> ChildGuard {
    let mut c = Command::new(workspace_bin("kvhost"));
    c.args(["--name", &store.name, "--dir"])
        .arg(&store.dir)
        .arg("--log-file")
        .arg(log);
    c.args(["--stripes", "16", "--initial-size", "1MiB"])
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    ChildGuard::new(c.spawn().unwrap())
}

fn hosted(store: &StoreName) -> bool {
    Client::open_read_only_in(&store.dir, &store.name).is_ok_and(|c| c.stats().host_pid.is_some())
}

#[test]
fn clients_keep_working_while_the_host_is_killed_and_restarted() {
    let store = StoreName::new("hostkill");
    let tmp = std::env::temp_dir().join(format!("kvshm-{}", store.name));
    std::fs::create_dir_all(&tmp).unwrap();
    let log = tmp.join("kvhost.log");
    let mut host = start_host(&store, &log);
    wait_for("host", Duration::from_secs(30), || hosted(&store));
    let spawn_writer = |w: u64| {
        let mut c = Command::new(CHILD);
        c.arg("writer")
            .arg(&store.dir)
            .arg(&store.name)
            .arg(w.to_string())
            .arg(tmp.join(format!("ack-{w}")));
        ChildGuard::new(
            c.stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let mut writers: Vec<ChildGuard> = (0..2).map(spawn_writer).collect();
    let size = |w: u64| {
        std::fs::metadata(tmp.join(format!("ack-{w}")))
            .map(|m| m.len())
            .unwrap_or(0)
    };
    for round in 0..3 {
        std::thread::sleep(Duration::from_millis(300));
        host.kill(); // SIGKILL the host mid-load
        let before: Vec<u64> = (0..2).map(size).collect();
        std::thread::sleep(Duration::from_millis(300));
        for (w, child) in writers.iter_mut().enumerate() {
            assert!(
                child.child.try_wait().unwrap().is_none(),
                "writer {w} died with the host (round {round})"
            );
            assert!(
                size(w as u64) > before[w],
                "writer {w} stalled without a host (round {round})"
            );
        }
        host = start_host(&store, &log);
        // Wait for the adoption itself (recovery + verify), not just the host lock: the
        // writers are killed right after the last round.
        wait_for("the new host to adopt", Duration::from_secs(30), || {
            std::fs::read_to_string(&log)
                .is_ok_and(|t| t.matches("adopted existing store").count() > round)
        });
    }
    for w in &mut writers {
        w.kill();
    }
    let c = Client::open_in(&store.dir, &store.name).unwrap();
    let r = c.verify().unwrap();
    assert!(r.is_ok(), "{:#?}", r.problems);
    let mut model = HashMap::new();
    let mut acked = 0;
    for w in 0..2 {
        acked += replay(
            &std::fs::read_to_string(tmp.join(format!("ack-{w}"))).unwrap(),
            &mut model,
        )
        .0;
    }
    assert!(acked > 100, "too little load: {acked}");
    check_model(&c, &model);
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        log_text.matches("adopted existing store").count(),
        3,
        "{log_text}"
    );
    drop(c);
    signal(&host, libc::SIGTERM);
    assert!(host.wait_limit(Duration::from_secs(30)).success());
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn a_store_filled_under_load_keeps_every_acknowledged_write_and_recovers_room() {
    let t = TestStore::new(
        "fullload",
        Config::default()
            .max_size(6 << 20)
            .initial_size(0)
            .stripes(16),
        CHILD,
    );
    let mut fillers: Vec<ChildGuard> = (0..3)
        .map(|i| t.spawn("fill", &[&format!("f{i}")], &[]))
        .collect();
    let start = Instant::now();
    let mut acked = Vec::new();
    for f in &mut fillers {
        let st = f.wait_limit(Duration::from_secs(120));
        let lines = f.stdout_lines();
        assert!(st.success(), "filler failed: {st:?}");
        assert_eq!(lines.last().map(String::as_str), Some("full"));
        acked.extend(lines.into_iter().filter(|l| l.starts_with("ack ")));
    }
    let h = t.host();
    for line in &acked {
        let mut p = line.split(' ').skip(1);
        let (k, i): (&str, u64) = (p.next().unwrap(), p.next().unwrap().parse().unwrap());
        let v = h
            .get(k.as_bytes())
            .unwrap()
            .unwrap_or_else(|| panic!("acknowledged {k} lost"));
        assert_eq!(v, pattern(i));
        assert!(check_pattern(&v).is_some());
    }
    assert!(matches!(
        h.put(b"x", &[0u8; 4000]),
        Err(kvshm::Error::StoreFull { .. })
    ));
    // Removing makes room again, for every process.
    let keys: Vec<String> = acked
        .iter()
        .map(|l| l.split(' ').nth(1).unwrap().to_string())
        .collect();
    for chunk in keys.chunks(200).step_by(2) {
        h.remove_many(chunk).unwrap();
    }
    let mut again = t.spawn("fill", &["again"], &[]);
    assert!(again.wait_limit(Duration::from_secs(120)).success());
    assert!(again.stdout_lines().len() > 100, "no room after removes");
    t.assert_verified();
    eprintln!(
        "store full under load: {} acknowledged writes checked in {:?}",
        acked.len(),
        start.elapsed()
    );
}

/// Regression (found by the host-restart test): verify reported a writer's old record as a
/// leak while the writer sat between unlocking its stripe and its deferred free, so a
/// restarted kvhost refused a healthy store.
#[test]
fn verify_is_exact_while_a_writer_is_between_unlock_and_free() {
    let t = TestStore::new("pendingfree", Config::default().stripes(8), CHILD);
    t.host().put(b"crash-key", b"old").unwrap();
    let mut w = t.spawn(
        "crash",
        &["put-update"],
        &[
            ("KVSHM_CRASH_AT", "txn.freeing"),
            ("KVSHM_CRASH_ACTION", "stop"),
        ],
    );
    wait_for(
        "the writer to stop before its free",
        Duration::from_secs(30),
        || process_state(w.pid()) == 'T',
    );
    let r = t.host().verify().unwrap();
    assert!(
        r.is_ok(),
        "verify while a free is pending: {:#?}",
        r.problems
    );
    assert_eq!(
        t.host().get(b"crash-key").unwrap().as_deref(),
        Some(&b"new-value-that-is-longer"[..])
    );
    signal(&w, libc::SIGCONT);
    assert_eq!(w.wait_limit(Duration::from_secs(30)).code(), Some(3));
    t.assert_verified();
}

/// Regression (found by the SIGKILL storm): recovery released a dead writer's stripes before
/// tagging its committed records LIVE; a writer replacing such a record in that gap could not
/// free it, and the record leaked.
#[test]
fn a_record_replaced_while_its_writer_is_being_recovered_is_freed() {
    let t = TestStore::new("recgap", Config::default().stripes(8), CHILD);
    t.host().put(b"crash-key", b"old").unwrap();
    let mut w1 = t.spawn(
        "crash",
        &["put-update"],
        &[("KVSHM_CRASH_AT", "txn.committed")],
    );
    assert_eq!(
        kvshm_tests::killed_by(&w1.wait_limit(Duration::from_secs(30))),
        Some(libc::SIGKILL)
    );
    let mut rec = t.spawn(
        "crash",
        &["recover"],
        &[
            ("KVSHM_CRASH_AT", "recover.stripes_released"),
            ("KVSHM_CRASH_ACTION", "stop"),
        ],
    );
    wait_for(
        "the recoverer to stop after releasing",
        Duration::from_secs(30),
        || process_state(rec.pid()) == 'T',
    );
    let mut w4 = t.spawn("put", &["crash-key", "replaced"], &[]);
    assert!(w4.wait_limit(Duration::from_secs(30)).success());
    signal(&rec, libc::SIGCONT);
    assert_eq!(rec.wait_limit(Duration::from_secs(30)).code(), Some(3));
    assert_eq!(
        t.host().get(b"crash-key").unwrap().as_deref(),
        Some(&b"replaced"[..])
    );
    t.assert_verified();
}
