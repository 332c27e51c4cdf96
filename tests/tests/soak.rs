//! Soak: a long mixed workload checked against a model. Writer threads (each its own
//! attachment) run puts, removes, batches and large values over their own keys; a storm writer
//! process is killed now and then (so recoveries happen); a checker verifies stripes and reads
//! all along. At the end every key must match the model and the store must verify clean.
//!
//! `KVSHM_SOAK_SECS` sets the duration (default 6 s in CI; hours for a real soak).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kvshm::{Client, Config};
use kvshm_tests::{Rng, TestStore};

const CHILD: &str = env!("CARGO_BIN_EXE_kvshm-child");

/// A value unique to (writer, put number, key): its first bytes are the writer and put number,
/// the rest a stream seeded by all three, so a value returned under the wrong key, or an older
/// value of the same length, never equals the model's.
fn soak_value(w: u64, seq: u64, key: &[u8], len: usize) -> Vec<u8> {
    let seed = key
        .iter()
        .fold(seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ w, |h, &b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        });
    let mut head = (w << 56 | seq).to_le_bytes().to_vec();
    head.truncate(len);
    let mut rng = Rng::new(seed);
    let mut v = head;
    while v.len() < len {
        let word = rng.next_u64().to_le_bytes();
        v.extend_from_slice(&word[..(len - v.len()).min(8)]);
    }
    v
}

#[test]
fn soak_mixed_workload_matches_the_model() {
    let secs: u64 = std::env::var("KVSHM_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    let t = TestStore::new(
        "soak",
        Config::default()
            .stripes(64)
            .initial_size(0)
            .max_value_len(300_000),
        CHILD,
    );
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let dir = t.dir.clone();
    let name = t.name.clone();
    let writers: Vec<_> = (0..3u64)
        .map(|w| {
            let (stop, ops, dir, name) = (stop.clone(), ops.clone(), dir.clone(), name.clone());
            std::thread::spawn(move || {
                let c = Client::open_in(&dir, &name).unwrap();
                let mut model: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
                let mut rng = Rng::new(w + 1);
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("s{w}-{}", rng.below(2000)).into_bytes();
                    match rng.below(20) {
                        0..=9 => {
                            let len = if rng.below(200) == 0 {
                                100_000 + rng.below(150_000)
                            } else {
                                rng.below(300)
                            };
                            seq += 1;
                            let v = soak_value(w, seq, &key, len as usize);
                            c.put(&key, &v).unwrap();
                            model.insert(key, v);
                        }
                        10..=13 => {
                            assert_eq!(c.remove(&key).unwrap(), model.remove(&key).is_some());
                        }
                        14 | 15 => {
                            let batch: Vec<(Vec<u8>, Vec<u8>)> = (0..1 + rng.below(50))
                                .map(|_| {
                                    (
                                        format!("s{w}-{}", rng.below(2000)).into_bytes(),
                                        rng.next_u64().to_le_bytes().to_vec(),
                                    )
                                })
                                .collect();
                            c.put_many(&batch).unwrap();
                            for (k, v) in batch {
                                model.insert(k, v);
                            }
                        }
                        16 => {
                            let keys: Vec<Vec<u8>> = (0..1 + rng.below(50))
                                .map(|_| format!("s{w}-{}", rng.below(2000)).into_bytes())
                                .collect();
                            let mut uniq = keys.clone();
                            uniq.sort();
                            uniq.dedup();
                            let want = uniq.iter().filter(|k| model.remove(*k).is_some()).count();
                            assert_eq!(c.remove_many(&keys).unwrap(), want);
                        }
                        _ => assert_eq!(c.get(&key).unwrap(), model.get(&key).cloned()),
                    }
                    ops.fetch_add(1, Ordering::Relaxed);
                }
                (c, model)
            })
        })
        .collect();
    // A storm writer process, killed now and then, so recoveries run during the soak.
    let ack = std::env::temp_dir().join(format!("kvshm-soak-ack-{}", t.name));
    let mut killer_rng = Rng::new(99);
    let mut kills = 0u64;
    let mut problems = 0usize;
    let start = Instant::now();
    let mut cursor = 0usize;
    while start.elapsed() < Duration::from_secs(secs) {
        let mut victim = t.spawn("writer", &["7", ack.to_str().unwrap()], &[]);
        std::thread::sleep(Duration::from_millis(50 + killer_rng.below(200)));
        victim.kill();
        kills += 1;
        for _ in 0..8 {
            problems += t.host().verify_stripe(cursor % 64).unwrap().problems.len();
            cursor += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut keys = 0;
    for (w, handle) in writers.into_iter().enumerate() {
        let (c, model) = handle.join().expect("writer thread failed");
        let mut have = c.keys(format!("s{w}-").as_bytes()).unwrap();
        have.sort();
        let mut want: Vec<Vec<u8>> = model.keys().cloned().collect();
        want.sort();
        assert!(
            have == want,
            "writer {w}: the store's key set differs from the model"
        );
        for (k, v) in &model {
            assert_eq!(
                c.get(k).unwrap().as_ref(),
                Some(v),
                "soak: {} lost or wrong",
                String::from_utf8_lossy(k)
            );
        }
        keys += model.len();
    }
    let r = t.assert_verified();
    let s = t.host().stats();
    eprintln!(
        "soak: {secs}s, {} ops by 3 writer threads, {kills} writer processes killed, {} recoveries, \
         {keys} model keys checked, {} keys in store, {} growths, {problems} stripe-check problems, verify recovered {}",
        ops.load(Ordering::Relaxed),
        s.recoveries,
        s.keys,
        s.growths,
        r.recovered
    );
    assert_eq!(problems, 0);
    let _ = std::fs::remove_file(&ack);
}
