//! SIGKILL storm: writer processes doing puts, removes and batches on their own keys and on
//! shared keys are killed at random and respawned while reader processes check for torn
//! values, values under the wrong key and mixed batches. Every acknowledged write is checked:
//! - own keys: a writer reads each key before it writes it again and compares it with what it
//!   last acknowledged; a respawned writer first checks every own key against its log (and
//!   the batch in flight at the kill: all or nothing); the end checks the final values;
//! - shared keys (written by every writer): each write is preceded by a logged, timed read;
//!   afterwards every read is checked against the real-time order of all writers' writes (no
//!   stale read, no value from the future) and the final value too ([`check_shared`]).
//!
//! The store verifies clean afterwards (no leaked block, no dead slot).
//!
//! A writer that exits by itself (a panic, an error) fails the storm. Every 3 s the killing
//! pauses for 1.5 s: a writer that acknowledges nothing in its last second is hung (e.g. on a
//! lock nobody will release) and fails the storm with its pid and kernel wait channel; a kill
//! would otherwise hide the hang (its recovery frees the lock).
//!
//! The store keeps a change log (issue 18) that a thread of the test follows as replication
//! does: at the end, the store must be exactly what the log says (every committed write of
//! every killed writer in it, no rolled-back one, nothing left pending after recovery).
//!
//! `KVSHM_STORM_SECS` sets the duration (default 8 s; CI uses the default, long runs more).
//! `KVSHM_STORM_BATCHES_ONLY=1` makes every writer operation a `put_many` of 1-8 own keys (8 s:
//! 35 of 114 kills landed in one, the others in writers' start-up checks; a campaign knob, not
//! in CI), and `KVSHM_KEEP_FAILED=DIR` keeps a failing run's store there (`TestStore`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use kvshm::Config;
use kvshm_tests::{check_shared, wait_for, ChildGuard, Replay, Rng, SharedHistory, TestStore};

const CHILD: &str = env!("CARGO_BIN_EXE_kvshm-child");
const WRITERS: u64 = 3;

#[test]
fn sigkill_storm_loses_nothing_and_never_tears() {
    let secs: u64 = std::env::var("KVSHM_STORM_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    let t = TestStore::new(
        "storm",
        Config::default()
            .stripes(8)
            .initial_size(0)
            // The follower must never fall a whole ring behind: at 64 MiB it did once (a
            // release storm with builds running beside it, 2026-12-01: "fell behind the log").
            .changelog(256 << 20),
        CHILD,
    );
    // Sparse chunks from the start, in the size classes the writers use: 200,000 records of
    // 8-320 bytes, 9 in 10 removed. The writers' records then land in their free blocks, and
    // the compactor moves them while they are written, read and killed.
    // (In batches: the storm's mutants plant their bugs in single puts, which this setup
    // must not meet.)
    let h = t.host();
    let all: Vec<u64> = (0..200_000).collect();
    for batch in all.chunks(1000) {
        let items: Vec<(String, Vec<u8>)> = batch
            .iter()
            .map(|i| (format!("fill-{i}"), kvshm_tests::pattern(*i)))
            .collect();
        h.put_many(&items).unwrap();
    }
    // (Every size kept alike: one run of 40 sizes in ten.)
    let removed: Vec<String> = all
        .iter()
        .filter(|i| (*i / 40) % 10 != 0)
        .map(|i| format!("fill-{i}"))
        .collect();
    for batch in removed.chunks(1000) {
        h.remove_many(batch).unwrap();
    }
    let follower = Follower::start(&t);
    let compactor = Compactor::start(&t);
    let dir = tempdir("storm");
    let ack = |w: u64| dir.join(format!("ack-{w}"));
    let spawn_writer = |w: u64| t.spawn("writer", &[&w.to_string(), ack(w).to_str().unwrap()], &[]);
    let mut writers: Vec<ChildGuard> = (0..WRITERS).map(spawn_writer).collect();
    let mut readers: Vec<ChildGuard> = (0..2)
        .map(|_| t.spawn("reader", &[&secs.to_string(), &WRITERS.to_string()], &[]))
        .collect();
    let mut rng = Rng::new(0x5eed ^ std::process::id() as u64);
    let start = Instant::now();
    let mut kills = 0u64;
    let size = |w: u64| std::fs::metadata(ack(w)).map(|m| m.len()).unwrap_or(0);
    let mut next_quiet = Instant::now() + Duration::from_secs(2);
    let mut quiet_periods = 0u64;
    while start.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_millis(5 + rng.below(60)));
        // A writer that ended by itself panicked or failed: that is a lost operation.
        for (i, wr) in writers.iter_mut().enumerate() {
            if let Some(st) = wr.child.try_wait().unwrap() {
                panic!(
                    "writer {i} exited by itself ({st:?}): {:?}",
                    wr.stdout_lines()
                );
            }
        }
        if Instant::now() >= next_quiet {
            // Quiet period: no kills for a second; after the first half, every writer must
            // still acknowledge operations (its ack file grows).
            std::thread::sleep(Duration::from_millis(500));
            let before: Vec<u64> = (0..WRITERS).map(size).collect();
            std::thread::sleep(Duration::from_millis(1000));
            for w in 0..WRITERS {
                if size(w) == before[w as usize] {
                    let pid = writers[w as usize].pid();
                    let wchan =
                        std::fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
                    let stack =
                        std::fs::read_to_string(format!("/proc/{pid}/stack")).unwrap_or_default();
                    panic!(
                        "writer {w} (pid {pid}) acknowledged nothing for 1 s: hung \
                         (wchan {wchan:?}, stack {stack})"
                    );
                }
            }
            quiet_periods += 1;
            next_quiet = Instant::now() + Duration::from_secs(3);
            continue;
        }
        let w = rng.below(WRITERS) as usize;
        writers[w].kill();
        kills += 1;
        writers[w] = spawn_writer(w as u64);
    }
    assert!(quiet_periods > 0 || secs < 3, "no quiet period ran");
    for w in &mut writers {
        w.kill();
    }
    let (passes, moved) = compactor.finish();
    for r in &mut readers {
        let st = r.wait_limit(Duration::from_secs(secs + 60));
        let lines = r.stdout_lines();
        assert!(st.success(), "reader failed: {lines:?}");
        eprintln!("reader: {lines:?}");
    }
    let report = t.assert_verified();
    let h = t.host();
    let (mut acked, mut ambiguous, mut checkpoints, mut own_keys) = (0, 0, 0, 0);
    let mut shared: HashMap<String, SharedHistory> = HashMap::new();
    for w in 0..WRITERS {
        let mut r = Replay::default();
        r.feed(&std::fs::read_to_string(ack(w)).unwrap_or_default());
        let problems = r.check_store(h);
        assert!(problems.is_empty(), "writer {w}: {problems:#?}");
        acked += r.acked;
        ambiguous += r.ambiguous;
        checkpoints += r.checkpoints;
        own_keys += r.model.len();
        for (k, h) in r.shared {
            let e = shared.entry(k).or_default();
            e.ops.extend(h.ops);
            e.reads.extend(h.reads);
        }
    }
    for i in (0..200_000u64).filter(|i| (i / 40) % 10 == 0) {
        let v = h.get(format!("fill-{i}").as_bytes()).unwrap();
        assert_eq!(v, Some(kvshm_tests::pattern(i)), "fill-{i}");
    }
    let (problems, shared_reads) = check_shared(h, &shared);
    assert!(problems.is_empty(), "shared keys: {problems:#?}");
    let (batches, differ) = follower.finish(h);
    assert!(
        differ.is_empty(),
        "the change log disagrees with the store: {differ:?}"
    );
    eprintln!(
        "storm: the change log followed through {batches} committed transactions equals the store"
    );
    let s = h.stats();
    eprintln!(
        "storm: {secs}s, {kills} kills, {quiet_periods} quiet periods, {acked} acknowledged ops \
         ({ambiguous} in flight at a kill); every acknowledged write to a writer's own key \
         checked against the store ({checkpoints} writer starts checked all {own_keys} own keys), \
         {} shared keys and {shared_reads} reads of them checked against the real-time order, {} keys, {} recoveries, verify \
         recovered {}; {passes} reclaim passes moved {moved} records out of sparse chunks meanwhile",
        shared.len(),
        s.keys,
        s.recoveries,
        report.recovered
    );
    assert!(kills > 0 && acked > 0);
    // Every kill leaves a dead client that someone must recover: the survivors, the host's
    // housekeeping (none here) or the final verify.
    assert!(
        s.recoveries + report.recovered as u64 >= kills / 2,
        "{kills} kills but only {} recoveries",
        s.recoveries
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A thread following the store's change log into a model, as a replication feed does.
struct Follower {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<(Model, u64, u64)>>,
}

type Model = kvshm_tests::Contents;

/// Apply the committed batches the log has from `pos` on; returns the new position, or an
/// error if the log moved past it (the follower fell behind: the storm's log is big enough
/// for that never to happen) or it had to wait on one entry for over 10 s.
fn follow(c: &kvshm::Client, mut pos: u64, model: &mut Model, n: &mut u64) -> Result<u64, String> {
    let mut out = Vec::new();
    let mut waiting: Option<Instant> = None;
    loop {
        out.clear();
        let r = c
            .read_changes(pos, 512, &mut out)
            .map_err(|e| e.to_string())?;
        kvshm_tests::apply_batches(model, &out)?;
        *n += out.len() as u64;
        match r {
            kvshm::ChangeRead::UpTo { next } => {
                pos = next;
                if out.is_empty() {
                    return Ok(pos);
                }
            }
            kvshm::ChangeRead::Waiting { next } => {
                pos = next;
                // A writer between its append and its commit, or a killed one: recovery
                // resolves its entry.
                let since = *waiting.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_secs(10) {
                    return Err(format!("waited 10 s on the entry at {pos}"));
                }
                if since.elapsed() > Duration::from_millis(100) {
                    let _ = c.recover_dead_clients();
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            kvshm::ChangeRead::Lost { oldest } => {
                return Err(format!("fell behind the log: {pos} < {oldest}"));
            }
        }
    }
}

impl Follower {
    fn start(t: &TestStore) -> Follower {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (dir, name, s) = (t.dir.clone(), t.name.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let c = kvshm::Client::open_in(&dir, &name).expect("attach");
            let (mut model, mut n, mut pos) = (Model::new(), 0u64, c.changelog_tail().unwrap());
            assert_eq!(pos, 0);
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                pos =
                    follow(&c, pos, &mut model, &mut n).unwrap_or_else(|e| panic!("follower: {e}"));
                std::thread::sleep(Duration::from_millis(2));
            }
            (model, n, pos)
        });
        Follower {
            stop,
            thread: Some(thread),
        }
    }

    /// Stop following; read what is left (every writer is dead and recovered now) and compare
    /// with the store: the number of transactions read and the first keys that differ.
    fn finish(mut self, h: &kvshm::Client) -> (u64, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (mut model, mut n, pos) = self.thread.take().unwrap().join().expect("follower");
        let end = follow(h, pos, &mut model, &mut n).unwrap_or_else(|e| panic!("follower: {e}"));
        assert_eq!(end, h.changelog_head().unwrap(), "the log ends at its head");
        (
            n,
            kvshm_tests::differing_keys(&model, &kvshm_tests::store_contents(h)),
        )
    }
}

/// A thread running reclaim passes (as the host does, but every 20 ms) through the storm:
/// records are moved out of sparse chunks (`client/evacuate.rs`) while writers write and are
/// killed and readers check every value.
struct Compactor {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<(u64, u64)>>,
}

impl Compactor {
    fn start(t: &TestStore) -> Compactor {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (dir, name, s) = (t.dir.clone(), t.name.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let c = kvshm::Client::open_in(&dir, &name).expect("attach");
            let (mut passes, mut moved) = (0u64, 0u64);
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                moved += c.reclaim_pass(0).expect("reclaim pass").moved;
                passes += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            (passes, moved)
        });
        Compactor {
            stop,
            thread: Some(thread),
        }
    }

    /// Stop; how many passes ran and records they moved.
    fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().unwrap().join().expect("compactor")
    }
}

impl Drop for Compactor {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A directory of this test's own: the tests of this file run in parallel in one process, and
/// each removes its directory when it ends.
fn tempdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("kvshm-storm-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Issue 13: incrementer processes (`incr` of one shared counter and one own counter each) are
/// SIGKILLed at random and respawned while a reader checks that the shared counter's version
/// and value never go back. At the end each counter holds exactly its acknowledged increments
/// plus at most one unacknowledged increment per kill of a process that incremented it, and
/// the results acknowledged for the shared counter are all distinct (each incr saw its own
/// value: no lost update).
#[test]
fn incrementers_killed_at_random_lose_no_acknowledged_increment() {
    const INCS: u64 = 3;
    let secs: u64 = std::env::var("KVSHM_STORM_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let t = TestStore::new(
        "incstorm",
        Config::default().stripes(8).initial_size(0),
        CHILD,
    );
    let dir = tempdir("incr");
    let ack = |w: u64| dir.join(format!("ack-{w}"));
    let spawn = |w: u64| {
        t.spawn(
            "incrementer",
            &[&w.to_string(), ack(w).to_str().unwrap()],
            &[],
        )
    };
    let mut incs: Vec<ChildGuard> = (0..INCS).map(spawn).collect();
    let mut reader = t.spawn("version-reader", &[&secs.to_string()], &[]);
    let mut rng = Rng::new(0x1ec ^ std::process::id() as u64);
    let mut kills = vec![0u64; INCS as usize];
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_millis(5 + rng.below(40)));
        for (i, p) in incs.iter_mut().enumerate() {
            if let Some(st) = p.child.try_wait().unwrap() {
                panic!(
                    "incrementer {i} exited by itself ({st:?}): {:?}",
                    p.stdout_lines()
                );
            }
        }
        let w = rng.below(INCS) as usize;
        incs[w].kill();
        kills[w] += 1;
        incs[w] = spawn(w as u64);
    }
    for (w, p) in incs.iter_mut().enumerate() {
        p.kill();
        kills[w] += 1;
    }
    let st = reader.wait_limit(Duration::from_secs(secs + 60));
    let lines = reader.stdout_lines();
    assert!(st.success(), "version reader: {lines:?}");
    t.assert_verified();
    let h = t.host();
    let counter = |k: &str| -> u64 {
        h.get(k.as_bytes())
            .unwrap()
            .map_or(0, |v| std::str::from_utf8(&v).unwrap().parse().unwrap())
    };
    let mut shared_results = Vec::new();
    let mut shared_acked = 0u64;
    for w in 0..INCS {
        let log = std::fs::read_to_string(ack(w)).unwrap_or_default();
        let own = format!("ctr-{w}");
        let mut own_acked = 0u64;
        for line in kvshm_tests::whole_lines(&log) {
            let Some((k, n)) = line.split_once(' ') else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            if k == "ctr" {
                shared_acked += 1;
                shared_results.push(n);
            } else if k == own {
                own_acked += 1;
            }
        }
        let have = counter(&own);
        assert!(
            have >= own_acked && have <= own_acked + kills[w as usize],
            "{own}: {have}, acknowledged {own_acked}, kills {}",
            kills[w as usize]
        );
    }
    let total_kills: u64 = kills.iter().sum();
    let have = counter("ctr");
    assert!(
        have >= shared_acked && have <= shared_acked + total_kills,
        "ctr: {have}, acknowledged {shared_acked}, kills {total_kills}"
    );
    let n = shared_results.len();
    shared_results.sort_unstable();
    shared_results.dedup();
    assert_eq!(
        shared_results.len(),
        n,
        "two increments returned the same value"
    );
    eprintln!(
        "incr storm: {secs}s, {total_kills} kills, ctr = {have} ({shared_acked} acknowledged), \
         reader: {lines:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 14: writers put keys with short TTLs (30-300 ms) and without, remove them and run
/// expiry passes, and are SIGKILLed at random. Each respawned writer first checks every own key
/// against its log with the expiry rules: the last acknowledged value while it is surely alive,
/// absent once it surely expired, either while its expiry window is open (and the same for an
/// operation in flight at the kill). At the end each writer checks once more; verify is clean.
///
/// Then the same in a store that cannot hold the writers' keys, under allkeys-lru: every write
/// evicts, writers are SIGKILLed inside evictions too. A key is never torn or stale (a value
/// it had before its last acknowledged write); it may be absent where the expiry rules want
/// it only because it was evicted, so at the end the absent keys are at most the evictions.
/// (One after the other, not as a fourth storm in parallel: see the note in `ttl_storm`.)
#[test]
fn ttl_writers_killed_at_random_follow_the_expiry_rules() {
    ttl_storm(false);
    ttl_storm(true);
}

/// Run as a fourth storm in parallel with the other three, the storms failed now and then
/// (session 7: stale reads of one shared key and a leaked block in the main storm, a TTL
/// writer's key absent or resurrected). Session 8 reproduced two of them (2 runs in 25 under
/// CPU load) and found the checkers at fault: a SIGKILL can cut a log line short (a write
/// crossing a page of the file), and a cut line whose number lost its last digits still
/// parsed (a checkpoint holding `822698` for `822698065699378`; a TTL writer's cut line merged
/// with the next incarnation's first line, losing a remove). Log lines now end with a mark
/// (`kvshm_tests::END`) and count only with it.
fn ttl_storm(evicting: bool) {
    const WRITERS: u64 = 3;
    let secs: u64 = std::env::var("KVSHM_STORM_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let mut cfg = Config::default().stripes(8).initial_size(0);
    if evicting {
        cfg = cfg.max_size(4 << 20); // ~2,000 of the writers' 6,000 keys
    }
    let t = TestStore::new(if evicting { "evictstorm" } else { "ttlstorm" }, cfg, CHILD);
    if evicting {
        t.host().set_eviction(kvshm::Policy::AllKeysLru).unwrap();
    }
    let dir = tempdir(if evicting { "evict" } else { "ttl" });
    let log = |w: u64| dir.join(format!("log-{w}"));
    let spawn = |w: u64| {
        let mode = if evicting { "evict" } else { "plain" };
        t.spawn(
            "ttl-writer",
            &[&w.to_string(), log(w).to_str().unwrap(), mode],
            &[],
        )
    };
    let mut ws: Vec<ChildGuard> = (0..WRITERS).map(spawn).collect();
    let mut rng = Rng::new(0x771 ^ std::process::id() as u64);
    let (mut kills, mut passes) = (0u64, 0u64);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_millis(10 + rng.below(80)));
        for (i, p) in ws.iter_mut().enumerate() {
            if let Some(st) = p.child.try_wait().unwrap() {
                panic!(
                    "ttl writer {i} exited by itself ({st:?}): {:?}",
                    p.stdout_lines()
                );
            }
        }
        // The host's pass runs too, between the writers' own.
        t.host().expire_pass().unwrap();
        passes += 1;
        let w = rng.below(WRITERS) as usize;
        ws[w].kill();
        kills += 1;
        ws[w] = spawn(w as u64);
    }
    // A last round: each writer checks its keys at start; give it the time, then stop it.
    for p in &mut ws {
        p.kill();
    }
    let mut absent = 0u64;
    for w in 0..WRITERS {
        let mut p = spawn(w);
        wait_for("the final check", Duration::from_secs(30), || {
            p.stdout_lines().iter().any(|l| l.starts_with("absent "))
                || p.child.try_wait().ok().flatten().is_some()
        });
        if let Some(st) = p.child.try_wait().unwrap() {
            panic!(
                "final check of ttl writer {w} failed ({st:?}): {:?}",
                p.stdout_lines()
            );
        }
        let lines = p.stdout_lines();
        let line = lines.iter().find(|l| l.starts_with("absent ")).unwrap();
        absent += line["absent ".len()..].parse::<u64>().unwrap();
        p.kill();
    }
    t.assert_verified();
    let s = t.host().stats();
    eprintln!(
        "ttl storm (evicting: {evicting}): {secs}s, {kills} kills, {passes} host passes, {} keys expired by passes, {} evicted, {absent} absent by eviction, {} keys left",
        s.expired, s.evicted, s.keys
    );
    assert!(kills > 0 && s.expired > 0);
    if evicting {
        assert!(s.evicted > 0, "the store never evicted");
        assert!(
            absent <= s.evicted,
            "{absent} keys missing, {} evicted",
            s.evicted
        );
    } else {
        assert_eq!(absent, 0);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
