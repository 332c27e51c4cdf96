//! Faults beyond a single SIGKILL, one test per behaviour: a stopped lock holder (other
//! stripes go on, its stripe's writers wait, it resumes with nothing lost), the host killed
//! under load (writers go on; restarts adopt with every acknowledged write), and a store that
//! fills up under load.

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

/// A store whose `crash-key` stripe is held by a child frozen (SIGSTOP) in the middle of a put,
/// and two keys: one on that stripe, one on another.
struct StoppedHolder {
    t: TestStore,
    holder: ChildGuard,
    same: String,
    other: String,
}

fn stopped_holder(tag: &str) -> StoppedHolder {
    let t = TestStore::new(tag, Config::default().stripes(8), CHILD);
    t.host().put(b"crash-key", b"old").unwrap();
    let (same, other) = keys_by_stripe(t.host());
    let holder = t.spawn_stopped("crash", &["put-update"], "put.replaced", &[]);
    StoppedHolder {
        t,
        holder,
        same,
        other,
    }
}

impl StoppedHolder {
    /// SIGCONT: the holder finishes its put (exit 3 from the child's crash scenario).
    fn resume(&mut self) {
        signal(&self.holder, libc::SIGCONT);
        let st = self.holder.wait_limit(Duration::from_secs(30));
        assert_eq!(
            st.code(),
            Some(3),
            "holder should finish its put after SIGCONT"
        );
    }
}

#[test]
fn a_stopped_lock_holder_does_not_block_other_stripes() {
    let mut s = stopped_holder("sigstop-other");
    let t = &s.t;
    let mut w = t.spawn("put", &[&s.other, "fine"], &[]);
    assert!(w.wait_limit(Duration::from_secs(30)).success());
    let other2 = (0..)
        .map(|i| format!("other-direct-{i}"))
        .find(|k| t.host().stripe_of_key(k.as_bytes()) != t.host().stripe_of_key(b"crash-key"))
        .unwrap();
    t.host().put(other2.as_bytes(), b"fine").unwrap();
    assert_eq!(
        t.host().get(s.other.as_bytes()).unwrap().as_deref(),
        Some(&b"fine"[..])
    );
    s.resume();
    s.t.assert_verified();
}

#[test]
fn a_writer_waits_for_a_stopped_holder_and_stats_show_it() {
    let mut s = stopped_holder("sigstop-wait");
    // A live owner is never robbed: a writer of the stopped stripe waits.
    let mut blocked = s.t.spawn("put", &[&s.same, "waited"], &[]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        blocked.child.try_wait().unwrap().is_none(),
        "writer did not wait for a live holder"
    );
    let waiting: Vec<Option<u32>> =
        s.t.host()
            .stats()
            .clients
            .iter()
            .filter_map(|c| c.waiting_on_stripe.map(Some))
            .collect();
    let stripe = s.t.host().stripe_of_key(s.same.as_bytes()) as u32;
    assert_eq!(
        waiting,
        vec![Some(stripe)],
        "stats should show the waiting client and the stripe it waits on"
    );
    s.resume();
    assert!(blocked.wait_limit(Duration::from_secs(30)).success());
    s.t.assert_verified();
}

#[test]
fn a_stopped_holder_resumes_and_nothing_is_lost() {
    let mut s = stopped_holder("sigstop-resume");
    let mut blocked = s.t.spawn("put", &[&s.same, "waited"], &[]);
    std::thread::sleep(Duration::from_millis(200));
    s.resume();
    assert!(blocked.wait_limit(Duration::from_secs(30)).success());
    let h = s.t.host();
    assert_eq!(
        h.get(b"crash-key").unwrap().as_deref(),
        Some(&b"new-value-that-is-longer"[..])
    );
    assert_eq!(
        h.get(s.same.as_bytes()).unwrap().as_deref(),
        Some(&b"waited"[..])
    );
    s.t.assert_verified();
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

/// A hosted store with two writer processes logging their acknowledged writes, and a
/// scratch directory (removed on drop).
struct UnderLoad {
    store: StoreName,
    tmp: std::path::PathBuf,
    log: std::path::PathBuf,
    host: ChildGuard,
    writers: Vec<ChildGuard>,
}

impl UnderLoad {
    fn start(tag: &str) -> UnderLoad {
        let store = StoreName::new(tag);
        let tmp = std::env::temp_dir().join(format!("kvshm-{}", store.name));
        std::fs::create_dir_all(&tmp).unwrap();
        let log = tmp.join("kvhost.log");
        let host = start_host(&store, &log);
        wait_for("host", Duration::from_secs(30), || hosted(&store));
        let writers = (0..2u64)
            .map(|w| {
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
            })
            .collect();
        UnderLoad {
            store,
            tmp,
            log,
            host,
            writers,
        }
    }

    fn acked_bytes(&self, w: usize) -> u64 {
        std::fs::metadata(self.tmp.join(format!("ack-{w}")))
            .map(|m| m.len())
            .unwrap_or(0)
    }

    fn adoptions(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .map(|t| t.matches("adopted existing store").count())
            .unwrap_or(0)
    }

    /// Restart the (dead) host and wait for the adoption itself (recovery + verify), not just
    /// the host lock.
    fn restart_host(&mut self) {
        let before = self.adoptions();
        self.host = start_host(&self.store, &self.log);
        wait_for("the new host to adopt", Duration::from_secs(30), || {
            self.adoptions() > before
        });
    }

    /// Stop the writers; check the store and every acknowledged write; stop the host.
    fn finish(mut self) {
        for w in &mut self.writers {
            w.kill();
        }
        let c = Client::open_in(&self.store.dir, &self.store.name).unwrap();
        let r = c.verify().unwrap();
        assert!(r.is_ok(), "{:#?}", r.problems);
        let mut model = HashMap::new();
        let mut acked = 0;
        for w in 0..2 {
            acked += replay(
                &std::fs::read_to_string(self.tmp.join(format!("ack-{w}"))).unwrap(),
                &mut model,
            )
            .0;
        }
        assert!(acked > 100, "too little load: {acked}");
        check_model(&c, &model);
        drop(c);
        signal(&self.host, libc::SIGTERM);
        assert!(self.host.wait_limit(Duration::from_secs(30)).success());
    }
}

impl Drop for UnderLoad {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.tmp);
    }
}

#[test]
fn writers_keep_working_while_the_host_is_dead() {
    let mut l = UnderLoad::start("hostdead");
    std::thread::sleep(Duration::from_millis(300));
    l.host.kill(); // SIGKILL the host mid-load
    let before: Vec<u64> = (0..2).map(|w| l.acked_bytes(w)).collect();
    std::thread::sleep(Duration::from_millis(300));
    for (w, child) in l.writers.iter_mut().enumerate() {
        assert!(
            child.child.try_wait().unwrap().is_none(),
            "writer {w} died with the host"
        );
    }
    for (w, b) in before.iter().enumerate() {
        assert!(l.acked_bytes(w) > *b, "writer {w} stalled without a host");
    }
    l.restart_host();
    l.finish();
}

#[test]
fn a_host_killed_and_restarted_under_load_loses_nothing() {
    let mut l = UnderLoad::start("hostkill");
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(300));
        l.host.kill();
        l.restart_host();
    }
    assert_eq!(l.adoptions(), 3);
    l.finish();
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
    let lines = again.stdout_lines();
    let s = h.stats();
    assert!(
        lines.len() > 100,
        "no room after removes: {} puts, then {:?}; store: {} keys, {} used, {} free, {} committed of {}",
        lines.len(),
        lines.last(),
        s.keys,
        s.used_bytes,
        s.free_bytes,
        s.committed_bytes,
        s.max_bytes
    );
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
    let mut w = t.spawn_stopped("crash", &["put-update"], "txn.freeing", &[]);
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
    let mut rec = t.spawn_stopped("crash", &["recover"], "recover.stripes_released", &[]);
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

/// A writer frozen (SIGSTOP) in its first deferred free of a put replacing a big and a small
/// record: it holds the big record's class lock (a class too big for block caches, so the
/// free takes the lock), and the small record (a smaller class, which verify locks first) is
/// still to be freed. Then a verify started on another thread.
fn verify_beside_a_frozen_writer(
    tag: &str,
) -> (
    TestStore,
    ChildGuard,
    std::thread::JoinHandle<kvshm::Result<kvshm::Report>>,
) {
    let t = TestStore::new(tag, Config::default().stripes(4), CHILD);
    t.host().put(b"big", &[1u8; 6000]).unwrap();
    t.host().put(b"small", b"0123456789").unwrap();
    let writer = t.spawn_stopped("crash", &["put-two-sizes"], "free.tagged", &[]);
    let (dir, name) = (t.dir.clone(), t.name.clone());
    let verify = std::thread::spawn(move || {
        let c = Client::open_in(&dir, &name).unwrap();
        c.verify()
    });
    (t, writer, verify)
}

/// Regression (issue 11, item 9): a writer that died while verify waited on its class lock was
/// recovered *inside* verify, whose deferred frees needed a class lock verify already held:
/// `Corrupt`, so kvhost refused a healthy store at adoption.
#[test]
fn a_writer_that_dies_while_verify_waits_on_its_class_lock_is_no_damage() {
    let (t, mut writer, verify) = verify_beside_a_frozen_writer("verify-dies");
    std::thread::sleep(Duration::from_millis(500)); // verify now waits on the big class
    assert!(
        !verify.is_finished(),
        "verify did not wait for the stopped writer"
    );
    writer.kill();
    let report = verify.join().unwrap().expect("verify must not fail");
    assert!(report.is_ok(), "{:#?}", report.problems);
    assert_eq!(t.host().get(b"big").unwrap().as_deref(), Some(&b"x"[..]));
    assert_eq!(t.host().get(b"small").unwrap().as_deref(), Some(&b"y"[..]));
    t.assert_verified();
}

/// A read-only client cannot take a lock: on a stripe a stopped writer holds it gives up with
/// `Busy` (after its patience), reads other stripes meanwhile, and reads the new value once the
/// writer resumes (issue 19: read-only clients had no such test).
#[test]
fn a_read_only_client_says_busy_on_a_stopped_writers_stripe_and_reads_on_after() {
    let mut s = stopped_holder("sigstop-ro");
    let ro = Client::open_read_only_in(&s.t.dir, &s.t.name).unwrap();
    s.t.host().put(s.other.as_bytes(), b"elsewhere").unwrap();
    assert_eq!(
        ro.get(s.other.as_bytes()).unwrap().as_deref(),
        Some(&b"elsewhere"[..])
    );
    assert!(
        matches!(ro.get(b"crash-key"), Err(kvshm::Error::Busy)),
        "a read-only get on a stopped writer's stripe must give up with Busy"
    );
    assert!(matches!(
        ro.put(b"x", b"y"),
        Err(kvshm::Error::InvalidArgument(_))
    ));
    s.resume();
    assert_eq!(
        ro.get(b"crash-key").unwrap().as_deref(),
        Some(&b"new-value-that-is-longer"[..])
    );
    s.t.assert_verified();
}

/// A live writer frozen while it holds an allocator lock is waited for, not taken for dead:
/// verify must not recover it (its liveness lock is held), and once resumed the writer
/// finishes its put and verify reports a clean store with nothing recovered.
#[test]
fn verify_waits_for_a_live_allocator_lock_holder_and_never_recovers_it() {
    let (t, mut writer, verify) = verify_beside_a_frozen_writer("verify-live");
    // Many stall periods: each one probes the holder's liveness.
    std::thread::sleep(Duration::from_millis(600));
    assert!(
        !verify.is_finished(),
        "verify did not wait for the stopped (live) writer"
    );
    signal(&writer, libc::SIGCONT);
    let st = writer.wait_limit(Duration::from_secs(30));
    assert_eq!(st.code(), Some(3), "the writer should finish its put");
    let report = verify.join().unwrap().expect("verify must not fail");
    assert!(report.is_ok(), "{:#?}", report.problems);
    assert_eq!(report.recovered, 0, "a live writer was recovered");
    assert_eq!(t.host().get(b"big").unwrap().as_deref(), Some(&b"x"[..]));
    assert_eq!(t.host().get(b"small").unwrap().as_deref(), Some(&b"y"[..]));
    t.assert_verified();
}

/// Memory given back and taken again under load (issue 12): writer processes fill and empty
/// whole chunks (and are SIGKILLed now and then), readers in other processes read stable
/// keys, and reclaim passes run every 50 ms with nothing kept ready (the host waits a whole
/// second between marking and punching; this is the harshest schedule). Every reader read
/// holds, every writer finds what it wrote, and the store verifies clean afterwards.
#[test]
fn memory_given_back_and_taken_again_under_load_loses_nothing() {
    const STABLE: u64 = 300;
    let t = TestStore::new(
        "reclaim-load",
        Config::default().stripes(8).initial_size(0),
        CHILD,
    );
    let h = t.host();
    for i in 0..STABLE {
        h.put(format!("stable-{i}").as_bytes(), &pattern(i))
            .unwrap();
    }
    let stop = std::env::temp_dir().join(format!("kvshm-reclaim-stop-{}", t.name));
    let _ = std::fs::remove_file(&stop);
    let n = STABLE.to_string();
    let mut readers: Vec<ChildGuard> = (0..2)
        .map(|_| t.spawn("check-keys", &["stable", &n, stop.to_str().unwrap()], &[]))
        .collect();
    let spawn = |w: usize| t.spawn("churn-big", &[&format!("big{w}")], &[]);
    let mut writers: Vec<ChildGuard> = (0..2).map(spawn).collect();
    let start = Instant::now();
    let (mut punched, mut kills, mut passes) = (0, 0, 0);
    let mut rng = kvshm_tests::Rng::new(std::process::id() as u64);
    while start.elapsed() < Duration::from_secs(4) {
        std::thread::sleep(Duration::from_millis(50));
        let p = h.reclaim_pass(0).unwrap();
        punched += p.punched;
        passes += 1;
        for w in writers.iter_mut() {
            if let Some(st) = w.child.try_wait().unwrap() {
                panic!("a writer exited by itself ({st:?}): {:?}", w.stdout_lines());
            }
        }
        if rng.below(4) == 0 {
            let w = rng.below(2) as usize;
            writers[w].kill();
            kills += 1;
            writers[w] = spawn(w);
        }
    }
    for w in &mut writers {
        w.kill();
    }
    std::fs::write(&stop, b"stop").unwrap();
    for r in &mut readers {
        let st = r.wait_limit(Duration::from_secs(60));
        assert!(st.success(), "a reader failed: {:?}", r.stdout_lines());
    }
    let _ = std::fs::remove_file(&stop);
    eprintln!("{passes} reclaim passes, {punched} chunks punched, {kills} writers killed");
    assert!(punched > 0, "no chunk was punched: the test proves nothing");
    let report = t.assert_verified();
    assert!(report.recovered as u64 + h.stats().recoveries >= 1);
    for i in 0..STABLE {
        assert_eq!(
            h.get(format!("stable-{i}").as_bytes()).unwrap(),
            Some(pattern(i))
        );
    }
}
