//! SIGKILL storm: writer processes doing puts, removes and batches on overlapping keys are
//! killed at random and respawned while reader processes check for torn values. Afterwards the
//! store verifies clean (no leaked block, no dead slot), and every key holds its last
//! acknowledged value (or the value of the one write that was in flight when its writer died).
//!
//! `KVSHM_STORM_SECS` sets the duration (default 8 s; CI uses the default, long runs more).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use kvshm::Config;
use kvshm_tests::{check_model, check_pattern, replay, ChildGuard, Rng, TestStore};

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
    let mut last_progress = Instant::now();
    let mut last_sizes = vec![0u64; WRITERS as usize];
    while start.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_millis(5 + rng.below(60)));
        let w = rng.below(WRITERS) as usize;
        writers[w].kill();
        kills += 1;
        writers[w] = spawn_writer(w as u64);
        // Watchdog: some writer must make progress within 20 s, or something is deadlocked.
        let sizes: Vec<u64> = (0..WRITERS)
            .map(|w| std::fs::metadata(ack(w)).map(|m| m.len()).unwrap_or(0))
            .collect();
        if sizes != last_sizes {
            last_sizes = sizes;
            last_progress = Instant::now();
        }
        assert!(
            last_progress.elapsed() < Duration::from_secs(20),
            "no writer progress: deadlock?"
        );
    }
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
    let mut model = HashMap::new();
    let (mut acked, mut ambiguous) = (0, 0);
    for w in 0..WRITERS {
        let (a, b) = replay(
            &std::fs::read_to_string(ack(w)).unwrap_or_default(),
            &mut model,
        );
        acked += a;
        ambiguous += b;
    }
    let h = t.host();
    check_model(h, &model);
    for i in 0..50 {
        if let Some(v) = h.get(format!("shared-{i}").as_bytes()).unwrap() {
            assert!(check_pattern(&v).is_some(), "shared-{i} torn");
        }
    }
    let s = h.stats();
    eprintln!(
        "storm: {secs}s, {kills} kills, {acked} acknowledged ops checked ({ambiguous} in flight at a \
         kill), {} keys, {} recoveries, verify recovered {}",
        s.keys, s.recoveries, report.recovered
    );
    assert!(kills > 0 && acked > 0);
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("kvshm-storm-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
