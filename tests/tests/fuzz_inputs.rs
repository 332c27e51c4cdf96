//! Hostile input: damaged segments, damaged snapshots, and lengths at and over the limits.
//!
//! A mutation fuzzer (stable Rust has no cargo-fuzz): a seed segment and seed snapshots are
//! mutated (byte flips, words set to boundary values, truncation) with a fixed-seed PRNG.
//! Every damaged segment is opened, verified, read and written by a separate `kvshm-child
//! probe` process: an error is fine, a signal (SIGSEGV/SIGBUS), a panic or a hang is a failure,
//! and the input is saved to `target/fuzz-failures/` for replay. `KVSHM_FUZZ_ITERS` sets the
//! number of damaged segments (default 150) and snapshots (x20); `KVSHM_FUZZ_SECS`, if set,
//! runs each target for that long instead; `KVSHM_FUZZ_SEED` sets the seed.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvshm::{Client, Config, Error, Host};
use kvshm_tests::{killed_by, Rng, StoreName, TestStore};

const CHILD: &str = env!("CARGO_BIN_EXE_kvshm-child");

fn iters() -> u64 {
    std::env::var("KVSHM_FUZZ_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(150)
}

/// Whether iteration `i` (started at `start`) should run: by count, or by time with
/// `KVSHM_FUZZ_SECS`.
fn keep_going(i: u64, per_iter: u64, start: Instant) -> bool {
    match std::env::var("KVSHM_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    {
        Some(secs) => start.elapsed() < Duration::from_secs(secs),
        None => i < iters() * per_iter,
    }
}

fn seed() -> u64 {
    std::env::var("KVSHM_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_f00d)
}

fn save_failure(what: &str, bytes: &[u8]) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/fuzz-failures");
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(format!("{what}-{}.bin", std::process::id()));
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Damage `img` in place: the mutations an attacker or a bad disk could make.
fn mutate(rng: &mut Rng, img: &mut Vec<u8>, hot_len: usize) {
    let n = 1 + rng.below(8);
    for _ in 0..n {
        let len = img.len();
        // Most mutations hit the metadata (header, stripes, chunk map, slots).
        let at = if rng.below(3) > 0 {
            rng.below(hot_len.min(len) as u64)
        } else {
            rng.below(len as u64)
        } as usize;
        match rng.below(5) {
            0 => img[at] ^= 1 << rng.below(8),
            1 => img[at] = rng.next_u64() as u8,
            2 | 3 => {
                let at = at & !7;
                if at + 8 <= len {
                    let boundary = [
                        0u64,
                        1,
                        2,
                        7,
                        8,
                        u64::MAX,
                        u32::MAX as u64,
                        len as u64,
                        len as u64 - 8,
                        1 << 40,
                    ];
                    let v = if rng.below(2) == 0 {
                        boundary[rng.below(boundary.len() as u64) as usize]
                    } else {
                        rng.next_u64()
                    };
                    img[at..at + 8].copy_from_slice(&v.to_le_bytes());
                }
            }
            _ => {
                if rng.below(4) == 0 {
                    img.truncate(rng.below(len as u64) as usize);
                    return;
                }
            }
        }
    }
}

#[test]
fn damaged_segments_give_errors_never_crashes() {
    // The seed: a small store with records, a removed key, a rebuilt table and a dead client.
    let seed_store = TestStore::new(
        "fzseed",
        Config::default()
            .stripes(4)
            .max_size(4 << 20)
            .initial_size(0),
        CHILD,
    );
    for i in 0..300u32 {
        seed_store
            .host()
            .put(
                format!("key-{i}").as_bytes(),
                &vec![i as u8; (i % 90) as usize],
            )
            .unwrap();
    }
    for i in (0..300u32).step_by(3) {
        seed_store
            .host()
            .remove(format!("key-{i}").as_bytes())
            .unwrap();
    }
    let hot = seed_store.host().stats().committed_bytes as usize / 3;
    let image = std::fs::read(seed_store.path()).unwrap();
    let target = StoreName::new("fz");
    let mut rng = Rng::new(seed());
    let (mut errors_seen, mut clean) = (0u64, 0u64);
    let start = Instant::now();
    let mut i = 0u64;
    while keep_going(i, 1, start) {
        i += 1;
        let mut img = image.clone();
        mutate(&mut rng, &mut img, hot);
        std::fs::write(target.path(), &img).unwrap();
        let mut c = std::process::Command::new(CHILD);
        c.arg("probe")
            .arg(&target.dir)
            .arg(&target.name)
            .stderr(std::process::Stdio::piped());
        let mut child = kvshm_tests::ChildGuard::spawn_captured(&mut c);
        let st = child.wait_timeout(Duration::from_secs(30));
        let out = child.stdout_lines();
        let ok =
            matches!(st, Some(s) if s.success()) && out.last().map(String::as_str) == Some("done");
        if !ok {
            let p = save_failure("segment", &img);
            panic!(
                "iteration {i}: probe {} on a damaged segment (saved to {}): {out:?}",
                match st {
                    None => "hung".to_string(),
                    Some(s) => killed_by(&s).map_or(format!("exited {s:?}"), |sig| format!(
                        "died of signal {sig}"
                    )),
                },
                p.display()
            );
        }
        if out
            .iter()
            .any(|l| l.contains("Err") || l.contains("attach:"))
        {
            errors_seen += 1;
        } else {
            clean += 1;
        }
    }
    eprintln!(
        "segment fuzz: {i} damaged segments in {:?}: {errors_seen} reported errors, {clean} read back without one",
        start.elapsed()
    );
    assert!(
        errors_seen > 0,
        "the mutations never produced an error: the fuzzer is not biting"
    );
}

fn snapshot_seeds() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(|e| std::fs::read(e.ok()?.path()).ok())
                .collect()
        })
        .unwrap_or_default();
    seeds.sort();
    assert!(!seeds.is_empty(), "no snapshot seeds in {}", dir.display());
    seeds
}

#[test]
fn damaged_snapshots_are_refused_whole() {
    let t = TestStore::new(
        "fzsnap",
        Config::default().max_key_len(64).max_value_len(4096),
        CHILD,
    );
    t.host().put(b"marker", b"kept").unwrap();
    let seeds = snapshot_seeds();
    let mut rng = Rng::new(seed() ^ 1);
    let file = std::env::temp_dir().join(format!("kvshm-fz-{}.snap", t.name));
    let (mut refused, mut accepted) = (0u64, 0u64);
    let start = Instant::now();
    let mut n = 0u64;
    // The pairs of each seed, to compare what an accepted snapshot loaded.
    let seed_pairs: Vec<Vec<(Vec<u8>, Vec<u8>)>> = seeds
        .iter()
        .map(|s| {
            let mut pairs = Vec::new();
            kvshm::read_snapshot(&s[..], s.len() as u64, (1 << 16, 1 << 30), |k, v| {
                pairs.push((k.to_vec(), v.to_vec()));
                Ok(())
            })
            .expect("seeds are valid");
            pairs
        })
        .collect();
    // Loads run in this process: one that hangs cannot be unwound, so a watchdog thread saves
    // the input of a load running over 20 s and ends the test process with a failure.
    type Running = Option<(Instant, Vec<u8>)>;
    let current: Arc<Mutex<Running>> = Arc::new(Mutex::new(None));
    let done = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let (current, done) = (current.clone(), done.clone());
        // `exit` skips destructors: the watchdog removes the store and the input file itself.
        let (store, input) = (t.path(), file.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                if let Some((t0, img)) = &*current.lock().unwrap() {
                    if t0.elapsed() > Duration::from_secs(20) {
                        eprintln!(
                            "a snapshot load has run for 20 s: hung (input saved to {})",
                            save_failure("snapshot-hang", img).display()
                        );
                        let _ = std::fs::remove_file(&store);
                        let _ = std::fs::remove_file(&input);
                        std::process::exit(1);
                    }
                }
            }
        })
    };
    while keep_going(n, 20, start) {
        let i = n;
        n += 1;
        let seed = (i % seeds.len() as u64) as usize;
        let mut img = seeds[seed].clone();
        if i >= seeds.len() as u64 {
            mutate(&mut rng, &mut img, 64);
        }
        std::fs::write(&file, &img).unwrap();
        *current.lock().unwrap() = Some((Instant::now(), img.clone()));
        let before = t.host().len();
        let stats_before = t.host().stats();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            t.host().load_file(&file, false, |_| {})
        }));
        *current.lock().unwrap() = None;
        match r {
            Err(_) => panic!(
                "snapshot reader panicked (input saved to {})",
                save_failure("snapshot", &img).display()
            ),
            Ok(Ok(info)) => {
                accepted += 1;
                // Only an unchanged seed may be accepted (a changed one that still checks out
                // would need a CRC-32 collision), and it must load exactly the seed's pairs.
                assert!(
                    img == seeds[seed],
                    "a changed snapshot was accepted (saved to {})",
                    save_failure("snapshot-accepted", &img).display()
                );
                assert_eq!(info.keys, seed_pairs[seed].len() as u64);
                for (k, v) in &seed_pairs[seed] {
                    assert_eq!(t.host().get(k).unwrap().as_ref(), Some(v), "{k:?}");
                }
                assert!(t.host().len() >= before.min(info.keys));
            }
            Ok(Err(e)) => {
                refused += 1;
                assert!(
                    matches!(
                        e,
                        Error::BadSnapshot { .. }
                            | Error::KeyTooLong { .. }
                            | Error::ValueTooLong { .. }
                            | Error::Io(_)
                    ),
                    "unexpected error kind: {e:?}"
                );
                // Nothing was written: no key, no value byte, not a single put.
                let after = t.host().stats();
                assert_eq!(
                    (t.host().len(), after.value_bytes, after.puts),
                    (before, stats_before.value_bytes, stats_before.puts),
                    "a refused snapshot changed the store"
                );
            }
        }
        assert_eq!(
            t.host().get(b"marker").unwrap().as_deref(),
            Some(&b"kept"[..])
        );
    }
    done.store(true, Ordering::Relaxed);
    watchdog.join().unwrap();
    let _ = std::fs::remove_file(&file);
    eprintln!(
        "snapshot fuzz: {n} inputs in {:?}, {refused} refused whole, {accepted} valid",
        start.elapsed()
    );
    assert!(refused > accepted, "mutations should mostly be refused");
}

/// Regenerate the checked-in snapshot seeds (`KVSHM_WRITE_SEEDS=1`); otherwise check they
/// still load.
#[test]
fn snapshot_seeds_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    if std::env::var_os("KVSHM_WRITE_SEEDS").is_some() {
        let t = TestStore::new("seedgen", Config::default(), CHILD);
        t.host().dump_file(&dir.join("empty.snap"), |_| {}).unwrap();
        for i in 0..20u32 {
            t.host()
                .put(format!("k{i}").as_bytes(), &vec![i as u8; i as usize * 3])
                .unwrap();
        }
        t.host().put(b"", b"empty key").unwrap();
        t.host().put(b"bin\x00\xff", b"").unwrap();
        t.host().dump_file(&dir.join("small.snap"), |_| {}).unwrap();
    }
    let t = TestStore::new("seedchk", Config::default(), CHILD);
    for entry in std::fs::read_dir(&dir).unwrap() {
        let p = entry.unwrap().path();
        t.host()
            .check_snapshot(&p)
            .unwrap_or_else(|e| panic!("seed {} invalid: {e}", p.display()));
    }
}

#[test]
fn lengths_at_and_over_the_limits() {
    for (max_key, max_value) in [(1usize, 0usize), (8, 1), (1024, 100), (65_536, 70_000)] {
        let name = format!("t-limits-{}-{max_key}", std::process::id());
        let h = Host::create(
            &name,
            &Config::default()
                .max_key_len(max_key)
                .max_value_len(max_value),
        )
        .unwrap();
        let c: &Client = &h;
        let key = |n: usize| vec![b'k'; n];
        let val = |n: usize| vec![b'v'; n];
        c.put(&key(max_key), &val(max_value)).unwrap();
        c.put(&key(max_key - 1), &val(max_value.saturating_sub(1)))
            .unwrap();
        c.put(b"", &val(0)).unwrap();
        assert!(
            matches!(c.put(&key(max_key + 1), b""), Err(Error::KeyTooLong { len, max }) if len == max_key + 1 && max == max_key)
        );
        assert!(
            matches!(c.put(b"", &val(max_value + 1)), Err(Error::ValueTooLong { len, max }) if len == max_value + 1 && max == max_value)
        );
        assert!(matches!(
            c.get(&key(max_key + 1)),
            Err(Error::KeyTooLong { .. })
        ));
        assert!(matches!(
            c.remove(&key(max_key + 1)),
            Err(Error::KeyTooLong { .. })
        ));
        assert!(matches!(
            c.contains(&key(max_key + 1)),
            Err(Error::KeyTooLong { .. })
        ));
        assert!(matches!(
            c.put_many(&[(key(1), val(0)), (key(max_key + 1), val(0))]),
            Err(Error::KeyTooLong { .. })
        ));
        assert_eq!(c.get(&key(max_key)).unwrap(), Some(val(max_value)));
        assert!(c.verify().unwrap().is_ok());
        h.release().unwrap();
    }
    assert!(
        Config::default()
            .max_key_len(kvshm::MAX_KEY_LIMIT + 1)
            .max_size(1 << 30)
            .dir("/nonexistent")
            .stripes(4)
            .max_value_len(1)
            .initial_size(0)
            .mode(0o600)
            .get_stripes()
            == 4
    );
    assert!(matches!(
        Host::create("t-bad-limits", &Config::default().max_key_len(0)),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        Host::create(
            "t-bad-limits",
            &Config::default().max_value_len(kvshm::MAX_VALUE_LIMIT + 1)
        ),
        Err(Error::InvalidArgument(_))
    ));
}
