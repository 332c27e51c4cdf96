//! The process the cross-process tests start (and kill): `kvshm-child <cmd> <dir> <name> ...`.
//!
//! Prints one line per acknowledged operation (flushed), so a parent that SIGKILLs it knows
//! exactly which writes were acknowledged before the kill.
#![deny(unsafe_code)]

use std::fs::OpenOptions;
use std::io::Write;
use std::time::{Duration, Instant};

use kvshm::Client;
use kvshm_tests::END;
use kvshm_tests::{check_pattern, fresh_seed, pattern, Rng};

fn out(line: impl std::fmt::Display) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{line}");
    let _ = o.flush();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: kvshm-child <cmd> <dir> <name> [args]");
        std::process::exit(2);
    }
    let (cmd, dir, name, rest) = (&args[1], &args[2], &args[3], &args[4..]);
    let open = || Client::open_in(dir, name).expect("attach");
    match cmd.as_str() {
        "put" => {
            open()
                .put(rest[0].as_bytes(), rest[1].as_bytes())
                .expect("put");
            out("ok");
        }
        "get" => match open().get(rest[0].as_bytes()).expect("get") {
            Some(v) => out(String::from_utf8_lossy(&v)),
            None => out("<none>"),
        },
        "remove" => out(open().remove(rest[0].as_bytes()).expect("remove")),
        "len" => out(open().len()),
        "churn-big" => churn_big(open(), &rest[0]),
        "check-keys" => check_keys(open(), &rest[0], rest[1].parse().expect("n"), &rest[2]),
        "get-many" => {
            let vals = open().get_many(rest).expect("get_many");
            for v in vals {
                out(v.map_or("<none>".into(), |v| {
                    String::from_utf8_lossy(&v).into_owned()
                }));
            }
        }
        // Create store `rest[0]` in `dir` and host it until killed.
        "create" => {
            let cfg = kvshm::Config::default().dir(dir);
            let _h = kvshm::Host::create(&rest[0], &cfg).expect("create");
            out("created");
            std::thread::sleep(Duration::from_secs(3600));
        }
        "hold" => {
            let _c = open();
            out("attached");
            std::thread::sleep(Duration::from_secs(3600));
        }
        "crash" => crash_scenario(dir, name, &rest[0]),
        "fork" => fork_child(dir, name, &rest[0]),
        "panic-put" => panic_put(open(), &rest[0]),
        "fill" => fill(open(), &rest[0]),
        "probe" => probe(dir, name),
        "probe-attached" => probe_attached(dir, name, &rest[0]),
        "attached-growth" => attached_growth(
            open(),
            Client::open_read_only_in(dir, name).expect("attach read-only"),
            &rest[0],
        ),
        "writer" => writer(open(), rest[0].parse().expect("id"), &rest[1]),
        "incrementer" => incrementer(open(), rest[0].parse().expect("id"), &rest[1]),
        "ttl-writer" => ttl_writer(
            open(),
            rest[0].parse().expect("id"),
            &rest[1],
            rest.get(2).is_some_and(|m| m == "evict"),
        ),
        "version-reader" => version_reader(open(), rest[0].parse().expect("secs")),
        "reader" => reader(
            open(),
            rest[0].parse().expect("secs"),
            rest[1].parse().expect("writers"),
        ),
        other => {
            eprintln!("unknown command {other}");
            std::process::exit(2);
        }
    }
}

/// Run one scenario that is expected to reach the crash point named in `KVSHM_CRASH_AT`
/// and die there. Exit code 3 means it finished without reaching it.
fn crash_scenario(dir: &str, name: &str, scenario: &str) {
    let c = Client::open_in(dir, name).expect("attach");
    match scenario {
        "put-insert" => {
            c.put(b"crash-new", b"new-value").unwrap();
            out("ack");
        }
        "put-until-growth" => {
            // New small keys (each may go in place) until one needs the store to grow; each
            // key is named before its put (the test finds the one frozen in the growth).
            // KVSHM_TEST_FIRST: the first key's number (a run continuing an earlier one).
            let first: u32 = std::env::var("KVSHM_TEST_FIRST")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            for i in first..first + 1_000_000 {
                out(format!("putting grow-{i}"));
                c.put(format!("grow-{i}").as_bytes(), b"small").unwrap();
            }
            out("ack");
        }
        "append-until-growth" => {
            // One key appended to until an append's new record needs the store to grow (a
            // read-modify-write: the record is allocated under the stripe lock).
            for i in 0..1_000_000u32 {
                out(format!("appending {i}"));
                c.append(b"grow-log", &[b'x'; 100]).unwrap();
            }
            out("ack");
        }
        "put-update" => {
            c.put(b"crash-key", b"new-value-that-is-longer").unwrap();
            out("ack");
        }
        "put-in-place" => {
            // A value of the same size class: rewritten in the record's own block.
            c.put(b"crash-key", b"new").unwrap();
            out("ack");
        }
        "put-in-place-longer" => {
            // The same size class, another length: the stripe's value bytes change too.
            c.put(b"crash-key", b"newer").unwrap();
            out("ack");
        }
        "remove" => {
            c.remove(b"crash-key").unwrap();
            out("ack");
        }
        "put-two-sizes" => {
            // Replaces a big and a small record: the deferred frees are the big one's (a big
            // class) first, then the small one's (a smaller class).
            c.put_many(&[(&b"big"[..], &b"x"[..]), (&b"small"[..], &b"y"[..])])
                .unwrap();
            out("ack");
        }
        "expire" => {
            // 40 keys expire; the pass removes them (the crash point is inside it).
            for i in 0..40 {
                c.put_with_ttl(
                    format!("ttl-{i}").as_bytes(),
                    b"short",
                    Duration::from_millis(20),
                )
                .unwrap();
            }
            std::thread::sleep(Duration::from_millis(30));
            let n = c.expire_pass().unwrap();
            out(format!("ack expired {n}"));
        }
        "incr" => {
            assert_eq!(c.incr(b"crash-ctr", 1).unwrap(), 11);
            out("ack");
        }
        "transact" => {
            // RENAME crash-key crash-moved, as the RESP server runs it: one transaction
            // under both keys' stripe locks (allocation inside it, as in a modify).
            let keys: [&[u8]; 2] = [b"crash-key", b"crash-moved"];
            let none: &[(&[u8], kvshm::Watch)] = &[];
            c.transact(none, &keys, |recs| {
                let v = recs[0].clone().expect("crash-key exists");
                let put = kvshm::Write::Put {
                    value: v.value,
                    expires_at: None,
                };
                Ok((vec![(1, put), (0, kvshm::Write::Remove)], ()))
            })
            .unwrap();
            out("ack");
        }
        "cache-full" => {
            // Leaves this client's block cache full (the removed records' blocks) when the
            // process exits without detaching, as a killed one would.
            for i in 0..40 {
                c.put(format!("cf-{i}").as_bytes(), b"cached").unwrap();
            }
            for i in 0..40 {
                c.remove(format!("cf-{i}").as_bytes()).unwrap();
            }
            out("ack");
        }
        "put-many-dup" => {
            // A key given twice: the batch's first record of it is replaced, and freed, by the
            // same transaction that made it; batch-0's old record is freed after it. (Its
            // long value makes the batch's records before the locks.)
            let long = vec![b'n'; 300];
            let items: Vec<(&[u8], &[u8])> = vec![
                (b"crash-key", b"first"),
                (b"crash-key", b"second"),
                (b"batch-0", &long),
            ];
            c.put_many(&items).unwrap();
            out("ack");
        }
        "put-many-dup-small" => {
            // The same batch of short values, applied under the locks: crash-key is rewritten
            // in its own block twice by one transaction, the second time longer (one size
            // class: 56- and 64-byte records).
            let items: Vec<(&[u8], &[u8])> = vec![
                (b"crash-key", b"first"),
                (b"crash-key", b"second-value"),
                (b"batch-0", b"new"),
            ];
            c.put_many(&items).unwrap();
            out("ack");
        }
        "put-many" | "put-many-long" => {
            // Short values: applied under the locks (batch-0..19 rewritten in place, 20..39
            // inserted from blocks at hand); long ones: records made before the locks.
            let value = if scenario == "put-many" {
                b"new".to_vec()
            } else {
                vec![b'n'; 300]
            };
            let items: Vec<(Vec<u8>, Vec<u8>)> = (0..40)
                .map(|i| (format!("batch-{i}").into_bytes(), value.clone()))
                .collect();
            c.put_many(&items).unwrap();
            out("ack");
        }
        "reclaim" => {
            // Fill, empty, give the memory back (two passes), then fill again: the second
            // fill takes the punched chunks back.
            for i in 0..3000u32 {
                c.put(format!("rc-{i}").as_bytes(), &[3u8; 1000]).unwrap();
            }
            for i in 0..3000u32 {
                c.remove(format!("rc-{i}").as_bytes()).unwrap();
            }
            out("ack removed");
            c.reclaim_pass(0).unwrap();
            let p = c.reclaim_pass(0).unwrap();
            out(format!("ack punched {}", p.punched));
            for i in 0..3000u32 {
                c.put(format!("nw-{i}").as_bytes(), &vec![(i % 251) as u8; 1000])
                    .unwrap();
                out(format!("ack nw-{i}"));
            }
        }
        "evacuate" => {
            // Nine in ten of 8,000 records removed: every chunk of their class a tenth used.
            // Reclaim passes move the survivors together (`client/evacuate.rs`).
            for i in 0..8000u32 {
                c.put(format!("ev-{i}").as_bytes(), &[(i % 251) as u8; 200])
                    .unwrap();
            }
            for i in (0..8000u32).filter(|i| i % 10 != 0) {
                c.remove(format!("ev-{i}").as_bytes()).unwrap();
            }
            out("ack kept");
            for _ in 0..8 {
                let p = c.reclaim_pass(0).unwrap();
                out(format!("ack moved {}", p.moved));
            }
        }
        "get-many" => {
            let keys: Vec<Vec<u8>> = (0..20).map(|i| format!("batch-{i}").into_bytes()).collect();
            let vals = c.get_many(&keys).unwrap();
            assert!(vals.iter().all(|v| v.as_deref() == Some(&b"old"[..])));
            out("ack");
        }
        "remove-many" => {
            let keys: Vec<Vec<u8>> = (0..40).map(|i| format!("batch-{i}").into_bytes()).collect();
            c.remove_many(&keys).unwrap();
            out("ack");
        }
        "fill" => {
            for i in 0..3000u32 {
                let len = (i as usize * 37) % 3000;
                c.put(format!("fill-{i}").as_bytes(), &vec![(i % 251) as u8; len])
                    .unwrap();
                out(format!("ack fill-{i}"));
            }
        }
        "reclass" => {
            // Fill the (small) store with one record size, remove them all, then insert
            // another size: only chunks given back by the first size's class make room.
            let mut n = 0u32;
            loop {
                match c.put(format!("rc-{n}").as_bytes(), &[5u8; 200]) {
                    Ok(()) => n += 1,
                    Err(kvshm::Error::StoreFull { .. }) => break,
                    Err(e) => panic!("filling failed with {e} instead of StoreFull"),
                }
            }
            let keys: Vec<String> = (0..n).map(|i| format!("rc-{i}")).collect();
            for k in &keys {
                c.remove(k.as_bytes()).unwrap();
            }
            out(format!("ack removed {n}"));
            for i in 0..n / 8 {
                c.put(format!("nw-{i}").as_bytes(), &vec![(i % 251) as u8; 1000])
                    .unwrap();
                out(format!("ack nw-{i}"));
            }
        }
        "evict" | "evict-chunk" => {
            // A cache: keys with a TTL fill the (small) store and go on; volatile-ttl evicts
            // them (never the persistent keys of the setup). "evict": 1000-byte records, the
            // sweep evicts records of the size it needs. "evict-chunk": the store is filled
            // with 1000-byte records before eviction is on, then 3000-byte ones need whole
            // chunks emptied.
            let chunked = scenario == "evict-chunk";
            if !chunked {
                c.set_eviction(kvshm::Policy::VolatileTtl).unwrap();
            }
            let put = |i: u32, size: usize| {
                c.put_with_ttl(
                    format!("ev-{i}").as_bytes(),
                    &vec![(i % 251) as u8; size],
                    Duration::from_secs(3600 + u64::from(i % 600)),
                )
            };
            let mut i = 0u32;
            loop {
                match put(i, 1000) {
                    Ok(()) => out(format!("ack ev-{i}")),
                    Err(kvshm::Error::StoreFull { .. }) if chunked => break,
                    Err(e) => panic!("{e}"),
                }
                i += 1;
                if !chunked && i == 20_000 {
                    break;
                }
            }
            c.set_eviction(kvshm::Policy::VolatileTtl).unwrap();
            for j in 100_000..102_000u32 {
                put(j, 3000).unwrap();
                out(format!("ack ev-{j}"));
            }
        }
        "big" => {
            for i in 0..3u8 {
                c.put(b"big", &vec![i + 1; 600_000]).unwrap();
                out(format!("ack big {}", i + 1));
            }
        }
        "many-clients" => {
            let cs: Vec<Client> = (0..40)
                .map(|_| Client::open_in(dir, name).unwrap())
                .collect();
            out(format!("ack {}", cs.len()));
        }
        "recover" => {
            let n = c.recover_dead_clients().unwrap();
            out(format!("ack recovered {n}"));
        }
        other => panic!("unknown scenario {other}"),
    }
    std::process::exit(3);
}

/// CLOCK_MONOTONIC in nanoseconds: one clock for every process on the machine.
#[allow(unsafe_code)]
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Report `problems` (one line each) and exit 1 if there are any: the storm fails on a writer
/// that exits by itself and shows its output.
fn fail_on(problems: &[String]) {
    if !problems.is_empty() {
        lost(problems);
    }
}

fn lost(problems: &[String]) -> ! {
    for p in problems {
        out(format!("LOST: {p}"));
    }
    std::process::exit(1);
}

/// A storm writer: random puts, removes and batches over its own keys, plus contended writes
/// to shared keys, logged to `ack_path` (format: [`kvshm_tests::Replay`]).
///
/// Every acknowledged write to an own key is checked: before each operation the writer reads
/// the keys it is about to write and compares them with what it last wrote; a new incarnation
/// (after a SIGKILL) first replays the log from the last checkpoint, checks every own key
/// against it (and the batch in flight at the kill: all or nothing), and writes a checkpoint
/// with the values it read. `<ack_path>.pos` holds the offset of the last checkpoint.
fn writer(c: Client, id: u64, ack_path: &str) {
    use std::io::{Read, Seek, SeekFrom};
    let pos_path = format!("{ack_path}.pos");
    let pos: u64 = std::fs::read_to_string(&pos_path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let mut ack = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(ack_path)
        .expect("ack file");
    let mut tail = String::new();
    ack.seek(SeekFrom::Start(pos)).expect("seek");
    ack.read_to_string(&mut tail).expect("read ack log");
    let mut replay = kvshm_tests::Replay::default();
    replay.resume(&tail);
    fail_on(&replay.check_store(&c));
    // What each own key holds now (checked above): the expected value before each operation.
    let mut model: std::collections::HashMap<String, Option<u64>> = replay
        .model
        .keys()
        .map(|k| {
            let v = c
                .get(k.as_bytes())
                .expect("get")
                .map(|v| check_pattern(&v).unwrap());
            (k.clone(), v)
        })
        .collect();
    let mut offset = ack.metadata().expect("ack len").len();
    if !tail.is_empty() && !tail.ends_with('\n') {
        ack.write_all(b"\n").expect("ack write"); // end a line torn by the kill
        offset += 1;
    }
    let mut ckpt = String::from("C");
    for (k, v) in &model {
        ckpt += &format!(" {k} {}", v.map_or("-".into(), |v| v.to_string()));
    }
    ack.write_all((ckpt + END).as_bytes()).expect("ack write");
    std::fs::write(format!("{pos_path}.tmp"), offset.to_string()).expect("pos");
    std::fs::rename(format!("{pos_path}.tmp"), &pos_path).expect("pos");

    let mut rng = Rng::new(fresh_seed(id));
    let mut line = |s: String| {
        ack.write_all(s.as_bytes()).expect("ack write");
    };
    // Before writing `keys`: each must still hold what this writer last wrote to it.
    let check =
        |c: &Client, model: &std::collections::HashMap<String, Option<u64>>, keys: &[&str]| {
            let vals = c.get_many(keys).expect("get_many");
            let problems: Vec<String> = keys
                .iter()
                .zip(vals)
                .filter_map(|(k, v)| {
                    let want = model.get(*k).copied().flatten();
                    match v.as_deref().map(check_pattern) {
                        Some(None) => Some(format!("{k}: torn value")),
                        have => (have.flatten() != want).then(|| {
                            format!(
                                "{k}: holds {:?}, last acknowledged {want:?}",
                                have.flatten()
                            )
                        }),
                    }
                })
                .collect();
            fail_on(&problems);
        };
    // A campaign knob (docs/RELIABILITY.md): every operation a batch of own `w` keys, so that
    // a kill that lands in an operation (and not in a writer's start-up check) lands in a
    // `put_many`, mostly over several stripes.
    let batches_only = std::env::var_os("KVSHM_STORM_BATCHES_ONLY").is_some();
    loop {
        let ver = (id << 48) | (rng.next_u64() & ((1 << 48) - 1));
        let pick = if batches_only { 5 } else { rng.below(10) };
        match pick {
            0..=3 => {
                let k = format!("w{id}-{}", rng.below(200));
                check(&c, &model, &[&k]);
                line(format!("P {k} {ver}{END}"));
                c.put(k.as_bytes(), &pattern(ver)).expect("put");
                line(format!("OK{END}"));
                model.insert(k, Some(ver));
            }
            4 => {
                let k = format!("w{id}-{}", rng.below(200));
                check(&c, &model, &[&k]);
                line(format!("D {k}{END}"));
                c.remove(k.as_bytes()).expect("remove");
                line(format!("OK{END}"));
                model.insert(k, None);
            }
            5 => {
                let items: Vec<(String, u64)> = if !batches_only && rng.below(2) == 0 {
                    // One batch over fixed keys, one version for all: readers in other
                    // processes check with get_many that they never see two batches mixed.
                    (0..BATCH_KEYS)
                        .map(|j| (format!("b{id}-{j}"), ver))
                        .collect()
                } else {
                    (0..1 + rng.below(8))
                        .map(|j| {
                            (
                                format!("w{id}-{}", rng.below(200)),
                                ver.wrapping_add(j) & !(0xffff << 48) | id << 48,
                            )
                        })
                        .collect()
                };
                let keys: Vec<&str> = items.iter().map(|(k, _)| k.as_str()).collect();
                check(&c, &model, &keys);
                put_batch(&c, &items, &mut line);
                for (k, v) in items {
                    model.insert(k, Some(v));
                }
            }
            op => {
                // A shared key: read it (checked offline against every writer's log), then
                // put or remove it.
                let k = format!("shared-{}", rng.below(50));
                let t0 = monotonic_ns();
                let seen = c.get(k.as_bytes()).expect("get shared");
                let t1 = monotonic_ns();
                let seen = match seen.as_deref().map(check_pattern) {
                    Some(None) => lost(&[format!("{k}: torn value")]),
                    Some(Some(v)) => v.to_string(),
                    None => "-".into(),
                };
                line(format!("R {k} {seen} {t0} {t1}{END}"));
                if op <= 8 {
                    line(format!("S {k} {ver} {}{END}", monotonic_ns()));
                    c.put(k.as_bytes(), &pattern(ver)).expect("put shared");
                } else {
                    line(format!("X {k} {}{END}", monotonic_ns()));
                    c.remove(k.as_bytes()).expect("remove shared");
                }
                line(format!("OK {}{END}", monotonic_ns()));
            }
        }
    }
}

/// Read shared and own keys for `secs`, failing (exit 1) on any torn value.
/// One `put_many` of `items` (key, version), logged as an `M` intent line and an `OK` ack.
fn put_batch(c: &Client, items: &[(String, u64)], line: &mut impl FnMut(String)) {
    let mut s = String::from("M");
    for (k, v) in items {
        s += &format!(" {k} {v}");
    }
    line(s + END);
    let kv: Vec<(Vec<u8>, Vec<u8>)> = items
        .iter()
        .map(|(k, v)| (k.clone().into_bytes(), pattern(*v)))
        .collect();
    c.put_many(&kv).expect("put_many");
    line(format!("OK{END}"));
}

/// Keys `b<writer>-0..BATCH_KEYS` are only ever written together, by one `put_many`.
const BATCH_KEYS: u64 = 4;

/// Reads until `secs` pass. Every value must be whole (its pattern checks out) and belong to
/// its key (a `w<id>-*` or `b<id>-*` key holds a version of writer `id`); a `get_many` of a
/// writer's batch keys must see one batch: all absent, or all with the same version.
/// Storm incrementer `id`: increments the shared counter `ctr` and its own `ctr-<id>` in turn,
/// forever (until killed), logging `<key> <result>` after each acknowledged increment. A
/// result must exceed this process's previous result for the key (counters only grow).
fn incrementer(c: Client, id: u64, ack_path: &str) {
    let mut ack = OpenOptions::new()
        .create(true)
        .append(true)
        .open(ack_path)
        .expect("ack file");
    let own = format!("ctr-{id}");
    let mut last: std::collections::HashMap<String, i64> = Default::default();
    loop {
        for key in ["ctr", own.as_str()] {
            let n = c.incr(key.as_bytes(), 1).expect("incr");
            if let Some(&prev) = last.get(key) {
                if n <= prev {
                    out(format!("{key}: incr returned {n} after {prev}"));
                    std::process::exit(1);
                }
            }
            last.insert(key.to_string(), n);
            // A line cut by a kill lacks its end mark and is not read (kvshm_tests::END).
            ack.write_all(format!("{key} {n}{END}").as_bytes())
                .expect("ack");
        }
    }
}

/// What a TTL storm writer last did to one of its keys, from its log.
#[derive(Clone, Copy, Debug)]
struct TtlState {
    /// The value (a counter), or None for a remove.
    value: Option<u64>,
    /// Expiry window of the write: not before `lo`, not after `hi` (Unix ms); 0 = persistent.
    lo: u64,
    hi: u64,
}

/// Check one key against what its writer's log says (the last acknowledged operation, and an
/// operation in flight at a kill that may or may not have happened).
/// The check's verdict on one key.
enum Verdict {
    Ok,
    /// Absent where the expiry rules want a value: allowed only in an evicting store (the test
    /// compares the count with the store's evictions).
    Absent,
    Wrong(String),
}

fn ttl_check(c: &Client, key: &str, acked: Option<TtlState>, pending: &[TtlState]) -> Verdict {
    let now_before = kvshm::now_ms();
    let got = c.get(key.as_bytes()).expect("get").map(|v| {
        // `n` or, in an evicting store, `n:` and padding.
        let v = std::str::from_utf8(&v).unwrap();
        v.split(':').next().unwrap().parse::<u64>().unwrap()
    });
    let now_after = kvshm::now_ms();
    // What each state allows the read to see: its value while surely alive, absent once surely
    // expired, either in between.
    let allows = |st: Option<TtlState>| -> bool {
        let Some(st) = st else { return got.is_none() };
        match st.value {
            None => got.is_none(),
            Some(v) if st.lo == 0 => got == Some(v),
            Some(v) => {
                if now_after < st.lo {
                    got == Some(v)
                } else if now_before > st.hi {
                    got.is_none()
                } else {
                    got == Some(v) || got.is_none()
                }
            }
        }
    };
    if allows(acked) || pending.iter().any(|&p| allows(Some(p))) {
        Verdict::Ok
    } else if got.is_none() {
        Verdict::Absent
    } else {
        Verdict::Wrong(format!(
            "{key}: read {got:?} at {now_before}..{now_after}, acknowledged {acked:?}, in flight {pending:?}"
        ))
    }
}

/// TTL storm writer `id`: puts (some with TTLs of 30-300 ms), removes and expire passes on its
/// own 50 keys, forever, logging `I key value lo ttl` before and `OK hi` after each write. At
/// start it replays its log and checks every own key against it (with the expiry rules).
/// `evicting`: 2,000 keys with 1.5 KB values, in a store that cannot hold them all: a key may
/// also be absent because it was evicted (counted and printed, `absent N`), never wrong.
fn ttl_writer(c: Client, id: u64, log_path: &str, evicting: bool) {
    let (keys, pad) = if evicting { (2000, 1500) } else { (50, 0) };
    use std::collections::HashMap;
    let log = std::fs::read_to_string(log_path).unwrap_or_default();
    let log_torn = !log.is_empty() && !log.ends_with('\n');
    let mut acked: HashMap<String, TtlState> = HashMap::new();
    // Writes that were in flight at a kill (an `I` line with no `OK`: they may or may not
    // have happened), per key, since the key's last acknowledged write.
    let mut in_flight: HashMap<String, Vec<TtlState>> = HashMap::new();
    let mut pending: Option<(String, TtlState)> = None;
    for line in kvshm_tests::whole_lines(&log) {
        let f: Vec<&str> = line.split(' ').collect();
        match f.as_slice() {
            ["I", k, v, lo, ttl] => {
                let (Ok(lo), Ok(ttl)) = (lo.parse::<u64>(), ttl.parse::<u64>()) else {
                    continue;
                };
                let value = (*v != "-").then(|| v.parse().unwrap());
                let st = TtlState {
                    value,
                    lo: if ttl == 0 { 0 } else { lo + ttl },
                    hi: u64::MAX,
                };
                if let Some((pk, pst)) = pending.replace((k.to_string(), st)) {
                    in_flight.entry(pk).or_default().push(pst);
                }
            }
            ["OK", hi, ttl] => {
                if let (Some((k, mut st)), Ok(hi), Ok(ttl)) =
                    (pending.take(), hi.parse::<u64>(), ttl.parse::<u64>())
                {
                    st.hi = if ttl == 0 { 0 } else { hi + ttl };
                    in_flight.remove(&k);
                    acked.insert(k, st);
                }
            }
            _ => {} // a line cut by a kill
        }
    }
    let mut problems = Vec::new();
    let mut absent = 0;
    for i in 0..keys {
        let key = format!("t{id}-{i}");
        let mut p = in_flight.remove(&key).unwrap_or_default();
        p.extend(
            pending
                .as_ref()
                .filter(|(k, _)| *k == key)
                .map(|(_, st)| *st),
        );
        match ttl_check(&c, &key, acked.get(&key).copied(), &p) {
            Verdict::Ok => {}
            Verdict::Absent if evicting => absent += 1,
            Verdict::Absent => problems.push(format!("{key}: absent")),
            Verdict::Wrong(e) => problems.push(e),
        }
    }
    fail_on(&problems);
    out(format!("absent {absent}"));
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .expect("log");
    if log_torn {
        f.write_all(b"\n").unwrap(); // end the line a kill cut, so ours stand alone
    }
    let mut rng = Rng::new(fresh_seed(id));
    let mut n = 0u64;
    loop {
        let key = format!("t{id}-{}", rng.below(keys));
        n += 1;
        let op = rng.below(10);
        let lo = kvshm::now_ms();
        if op == 0 {
            f.write_all(format!("I {key} - {lo} 0{END}").as_bytes())
                .unwrap();
            c.remove(key.as_bytes()).unwrap();
            f.write_all(format!("OK {} 0{END}", kvshm::now_ms()).as_bytes())
                .unwrap();
        } else {
            let ttl = if op < 6 { 30 + rng.below(270) } else { 0 };
            f.write_all(format!("I {key} {n} {lo} {ttl}{END}").as_bytes())
                .unwrap();
            let value = if evicting {
                format!("{n}:{}", "p".repeat(pad))
            } else {
                n.to_string()
            };
            if ttl == 0 {
                c.put(key.as_bytes(), value.as_bytes()).unwrap();
            } else {
                c.put_with_ttl(key.as_bytes(), value.as_bytes(), Duration::from_millis(ttl))
                    .unwrap();
            }
            f.write_all(format!("OK {} {ttl}{END}", kvshm::now_ms()).as_bytes())
                .unwrap();
        }
        if n % 200 == 0 {
            c.expire_pass().unwrap();
        }
    }
}

/// Reads `ctr` for `secs` seconds: neither its version nor its value may ever go back.
fn version_reader(c: Client, secs: u64) {
    let end = Instant::now() + Duration::from_secs(secs);
    let (mut last_v, mut last_n, mut reads) = (0u64, i64::MIN, 0u64);
    while Instant::now() < end {
        if let Some((v, ver)) = c.get_versioned(b"ctr").expect("get_versioned") {
            let n: i64 = std::str::from_utf8(&v).unwrap().parse().unwrap();
            if ver < last_v || n < last_n || (ver == last_v && n != last_n) {
                out(format!(
                    "went back: version {last_v} -> {ver}, value {last_n} -> {n}"
                ));
                std::process::exit(1);
            }
            (last_v, last_n) = (ver, n);
            reads += 1;
        }
    }
    out(format!("reads {reads}"));
}

fn reader(c: Client, secs: u64, writers: u64) {
    let mut rng = Rng::new(std::process::id() as u64);
    let end = Instant::now() + Duration::from_secs(secs);
    let (mut reads, mut hits, mut batches) = (0u64, 0u64, 0u64);
    let mut buf = Vec::new();
    let fail = |what: String| -> ! {
        out(what);
        std::process::exit(1);
    };
    let owner_ok = |k: &str, ver: u64| match k.strip_prefix(['w', 'b']) {
        Some(rest) if !k.starts_with("shared") => {
            rest.split('-').next().and_then(|id| id.parse::<u64>().ok()) == Some(ver >> 48)
        }
        _ => true,
    };
    while Instant::now() < end {
        if rng.below(4) == 0 {
            let w = rng.below(writers);
            let keys: Vec<String> = (0..BATCH_KEYS).map(|j| format!("b{w}-{j}")).collect();
            let vals = c.get_many(&keys).expect("get_many");
            reads += BATCH_KEYS;
            let vers: Vec<Option<u64>> = vals
                .iter()
                .map(|v| v.as_ref().map(|v| check_pattern(v).unwrap_or(u64::MAX)))
                .collect();
            if vers.contains(&Some(u64::MAX)) {
                fail(format!("TORN batch of writer {w}: {vers:?}"));
            }
            if vers.iter().any(|v| *v != vers[0]) {
                fail(format!("MIXED batch of writer {w}: {vers:?}"));
            }
            if let Some(v) = vers[0] {
                batches += 1;
                if v >> 48 != w {
                    fail(format!("batch of writer {w} holds version {v:#x}"));
                }
            }
            continue;
        }
        let k = if rng.below(2) == 0 {
            format!("shared-{}", rng.below(50))
        } else {
            format!("w{}-{}", rng.below(writers), rng.below(200))
        };
        reads += 1;
        if c.get_into(k.as_bytes(), &mut buf).expect("get") {
            hits += 1;
            match check_pattern(&buf) {
                None => fail(format!("TORN {k} len {}", buf.len())),
                Some(ver) if !owner_ok(&k, ver) => {
                    fail(format!("WRONG VALUE for {k}: version {ver:#x}"))
                }
                Some(_) => {}
            }
        }
    }
    out(format!("reads {reads} hits {hits} batches {batches}"));
}

/// Forever: put 300 keys `<prefix>-<j>` with 3 KB values (one `put_many` of 50 and single
/// puts), check them, remove them (one `remove_many`), pause 30 ms: whole chunks are filled
/// and emptied, so reclaim passes give them back and claims take them again. Exits 1 on a
/// wrong value.
fn churn_big(c: Client, prefix: &str) {
    let mut rng = Rng::new(fresh_seed(0));
    loop {
        let ver = rng.next_u64() >> 16;
        let keys: Vec<String> = (0..300).map(|j| format!("{prefix}-{j}")).collect();
        let val = |j: usize| {
            let mut v = pattern(ver + j as u64);
            v.resize(3000, 0xee);
            v
        };
        let batch: Vec<(Vec<u8>, Vec<u8>)> = (0..50)
            .map(|j| (keys[j].clone().into_bytes(), val(j)))
            .collect();
        c.put_many(&batch).expect("put_many");
        for (j, k) in keys.iter().enumerate().skip(50) {
            c.put(k.as_bytes(), &val(j)).expect("put");
        }
        for (j, k) in keys.iter().enumerate() {
            if c.get(k.as_bytes()).expect("get").as_deref() != Some(&val(j)[..]) {
                lost(&[format!("{k}: not the value just written")]);
            }
        }
        c.remove_many(&keys).expect("remove_many");
        std::thread::sleep(Duration::from_millis(30));
    }
}

/// Read `<prefix>-<i>` (i < n, each holding `pattern(i)`) until the file `stop` exists: every
/// get must find its key with its value, and every `get_many` of three keys all three. Prints
/// the number of reads; exits 1 at the first wrong one.
fn check_keys(c: Client, prefix: &str, n: u64, stop: &str) {
    let mut rng = Rng::new(std::process::id() as u64);
    let mut reads = 0u64;
    let mut buf = Vec::new();
    while !std::path::Path::new(stop).exists() {
        for _ in 0..1000 {
            let i = rng.below(n);
            let found = c.get_into(format!("{prefix}-{i}").as_bytes(), &mut buf);
            if !matches!(found, Ok(true)) || buf != pattern(i) {
                lost(&[format!("{prefix}-{i}: {found:?}, {} bytes", buf.len())]);
            }
            let ids = [rng.below(n), rng.below(n), rng.below(n)];
            let keys: Vec<String> = ids.iter().map(|i| format!("{prefix}-{i}")).collect();
            let vals = c.get_many(&keys).expect("get_many");
            for (i, v) in ids.iter().zip(vals) {
                if v.as_deref() != Some(&pattern(*i)[..]) {
                    lost(&[format!("get_many {prefix}-{i}: {v:?}")]);
                }
            }
            reads += 4;
        }
        if reads == 4000 {
            out("reading");
        }
    }
    out(format!("reads {reads}"));
}

/// Put `pattern(n)` values under `<prefix>-<n>` until the store is full; print each acknowledged key,
/// then `full`. Any other error fails the process.
fn fill(c: Client, prefix: &str) {
    for i in 0u64.. {
        let k = format!("{prefix}-{i}");
        match c.put(k.as_bytes(), &pattern(i)) {
            Ok(()) => out(format!("ack {k} {i}")),
            Err(kvshm::Error::StoreFull { .. }) => break,
            Err(e) => panic!("unexpected error while filling: {e}"),
        }
    }
    out("full");
}

/// Exercise a possibly damaged store: every call must return (an error is fine); a crash or a
/// hang is what the fuzz test looks for. Prints what happened.
/// Cap this process's address space: an allocation sized from damaged segment data then fails
/// (an abort the probe's parent sees) instead of quietly succeeding on a big machine.
#[allow(unsafe_code)]
fn limit_address_space(bytes: u64) {
    let lim = libc::rlimit {
        rlim_cur: bytes,
        rlim_max: bytes,
    };
    // SAFETY: a valid rlimit struct for the duration of the call.
    unsafe { libc::setrlimit(libc::RLIMIT_AS, &lim) };
}

fn probe(dir: &str, name: &str) {
    limit_address_space(2 << 30);
    run_probe(
        Client::open_read_only_in(dir, name),
        Client::open_in(dir, name),
    );
}

/// Attach first, write "attached" to `flag`, wait until it says "go" (the parent damages the
/// store meanwhile), then probe with the clients attached before the damage.
fn probe_attached(dir: &str, name: &str, flag: &str) {
    limit_address_space(2 << 30);
    let ro = Client::open_read_only_in(dir, name);
    let rw = Client::open_in(dir, name);
    std::fs::write(flag, "attached").expect("flag");
    while std::fs::read_to_string(flag).map_or(true, |s| s != "go") {
        std::thread::sleep(Duration::from_millis(5));
    }
    run_probe(ro, rw);
}

fn run_probe(ro: kvshm::Result<Client>, rw: kvshm::Result<Client>) {
    match ro {
        Ok(ro) => {
            out(format!(
                "ro verify: {:?}",
                ro.verify().map(|r| r.problems.len())
            ));
            out(format!("ro keys: {:?}", ro.keys(b"").map(|k| k.len())));
            out(format!(
                "ro get: {:?}",
                ro.get(b"key-1").map(|v| v.map(|v| v.len()))
            ));
            let _ = ro.stats();
        }
        Err(e) => out(format!("ro attach: {e}")),
    }
    match rw {
        Ok(c) => {
            out(format!(
                "verify: {:?}",
                c.verify().map(|r| r.problems.len())
            ));
            out(format!(
                "get: {:?}",
                c.get(b"key-7").map(|v| v.map(|v| v.len()))
            ));
            out(format!("put: {:?}", c.put(b"key-7", b"new")));
            out(format!("remove: {:?}", c.remove(b"key-8")));
            out(format!(
                "put_many: {:?}",
                c.put_many(&[(b"a".as_slice(), b"1".as_slice()), (b"b", b"2")])
            ));
            out(format!("scan: {:?}", c.keys(b"key-").map(|k| k.len())));
            let stripes = c.stats().stripes as usize;
            let compacted: Vec<_> = (0..stripes).map(|s| c.compact_stripe(s)).collect();
            out(format!("compact: {compacted:?}"));
            out(format!("recover: {:?}", c.recover_dead_clients()));
            let _ = c.stats();
        }
        Err(e) => out(format!("attach: {e}")),
    }
    out("done");
}

/// `fork` (one of the few `unsafe` calls of this binary: fork, waitpid, setrlimit).
#[allow(unsafe_code)]
fn fork() -> i32 {
    // SAFETY: the child only runs straight-line code of this process's own (it makes no
    // use of other threads' state: this binary is single-threaded here) and ends with `exit`.
    unsafe { libc::fork() }
}

/// Fork with a client open. `then` = "check": the child must get `Forked` from the inherited
/// client and work with a new one (exit 0 if so). `then` = "sleep-then-crash": the child
/// sleeps (keeping the inherited descriptors) while the parent prints the child's pid and
/// then runs the crash scenario put-update (expected to die at `KVSHM_CRASH_AT`).
fn fork_child(dir: &str, name: &str, then: &str) {
    let c = Client::open_in(dir, name).expect("attach");
    c.put(b"before-fork", b"1").expect("put");
    let pid = fork();
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        if then == "sleep-then-crash" {
            std::thread::sleep(Duration::from_secs(120));
            std::process::exit(0);
        }
        let forked = |r: kvshm::Result<()>| matches!(r, Err(kvshm::Error::Forked { .. }));
        let ok = forked(c.put(b"k", b"v"))
            && forked(c.get(b"before-fork").map(|_| ()))
            && forked(c.remove(b"before-fork").map(|_| ()))
            && forked(c.verify().map(|_| ()))
            && forked(c.scan(b"", |_, _| true));
        drop(c); // touches nothing shared
        let mine = Client::open_in(dir, name).expect("attach in the child");
        let ok = ok
            && mine.put(b"from-forked-child", b"2").is_ok()
            && mine.get(b"before-fork").ok().flatten().as_deref() == Some(&b"1"[..]);
        std::process::exit(if ok { 0 } else { 1 });
    }
    if then == "sleep-then-crash" {
        out(format!("child {pid}"));
        c.put(b"crash-key", b"new-value-that-is-longer").unwrap();
        out("ack");
        return;
    }
    let mut status = 0;
    #[allow(unsafe_code)]
    // SAFETY: waits for our own child; `status` is a valid out pointer.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(r, pid);
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    // The parent's client was not disturbed by the child.
    c.put(b"after-fork", b"3")
        .expect("parent put after the child");
    out(if ok { "child ok" } else { "child failed" });
}

/// A put that panics at the crash point (`KVSHM_CRASH_ACTION=panic`), caught; then write the
/// flag file and stay alive (the lock holder is alive: nobody may rob it), until killed.
fn panic_put(c: Client, flag: &str) {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        c.put(b"crash-key", b"new-value-that-is-longer")
    }));
    assert!(r.is_err(), "the crash point did not panic");
    std::fs::write(flag, "panicked").expect("flag");
    // The client stays usable after its own recovery.
    c.put(b"after-panic", b"ok").expect("put after the panic");
    std::fs::write(flag, "continued").expect("flag");
    std::thread::sleep(Duration::from_secs(120));
}

/// Attach, say so in `flag`, wait for "go" (the parent grows the store meanwhile), then read
/// every key the parent wrote (in memory committed after we attached), and write 3000 more,
/// growing the store ourselves. Prints "ok <keys read>".
fn attached_growth(c: Client, ro: Client, flag: &str) {
    std::fs::write(flag, "attached").expect("flag");
    while std::fs::read_to_string(flag).map_or(true, |s| s != "go") {
        std::thread::sleep(Duration::from_millis(5));
    }
    let n: u32 = std::fs::read_to_string(format!("{flag}.n"))
        .expect("key count")
        .trim()
        .parse()
        .expect("number");
    for i in 0..n {
        for (client, kind) in [(&c, "writable"), (&ro, "read-only")] {
            let v = client
                .get(format!("g-{i}").as_bytes())
                .expect("get")
                .unwrap_or_else(|| {
                    panic!("g-{i}, written after attach, not seen by the {kind} client")
                });
            assert_eq!(v, vec![(i % 251) as u8; 1000], "g-{i} ({kind})");
        }
    }
    assert!(
        matches!(ro.put(b"ro", b"x"), Err(kvshm::Error::InvalidArgument(_))),
        "a read-only client must refuse writes"
    );
    for i in 0..3000u32 {
        c.put(format!("c-{i}").as_bytes(), &vec![(i % 13) as u8; 1000])
            .expect("put");
    }
    out(format!("ok {n}"));
}
