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
//! `KVSHM_STORM_SECS` sets the duration (default 8 s; CI uses the default, long runs more).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use kvshm::Config;
use kvshm_tests::{check_shared, ChildGuard, Replay, Rng, SharedHistory, TestStore};

const CHILD: &str = env!("CARGO_BIN_EXE_kvshm-child");
const WRITERS: u64 = 3;

#[test]
fn sigkill_storm_loses_nothing_and_never_tears() {
    let secs: u64 = std::env::var("KVSHM_STORM_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    let t = TestStore::new("storm", Config::default().stripes(8).initial_size(0), CHILD);
    let dir = tempdir();
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
    let (problems, shared_reads) = check_shared(h, &shared);
    assert!(problems.is_empty(), "shared keys: {problems:#?}");
    let s = h.stats();
    eprintln!(
        "storm: {secs}s, {kills} kills, {quiet_periods} quiet periods, {acked} acknowledged ops \
         ({ambiguous} in flight at a kill); every acknowledged write to a writer's own key \
         checked against the store ({checkpoints} writer starts checked all {own_keys} own keys), \
         {} shared keys and {shared_reads} reads of them checked against the real-time order, {} keys, {} recoveries, verify \
         recovered {}",
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

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("kvshm-storm-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
