//! Every named crash point: a child is SIGKILLed there, then the store must verify clean
//! (after recovery), keep every acknowledged write, hold each interrupted operation either
//! entirely or not at all, and stay fully usable.

use std::collections::HashMap;
use std::time::Duration;

use kvshm::Config;
use kvshm_tests::{
    apply_batches, differing_keys, killed_by, signal, store_contents, wait_for, Contents, TestStore,
};

const CHILD: &str = env!("CARGO_BIN_EXE_kvshm-child");

/// (crash point, scenario that reaches it)
const MATRIX: &[(&str, &str)] = &[
    ("alloc.recorded", "put-insert"),
    ("alloc.tagged", "put-insert"),
    ("alloc.chunk_claimed", "fill"),
    ("alloc.chunk_zeroed", "reclass"),
    ("alloc.chunk_released", "reclass"),
    // Giving a chunk back in bounded steps (alloc/drain.rs): killed while marking, between
    // two holds of the class lock (draining chunks and no lock owner), while unlinking.
    ("alloc.drain_marked@2", "reclass"),
    ("alloc.drain_paused", "reclass"),
    ("alloc.drain_unlinked@300", "reclass"),
    // Compaction of sparse chunks: killed marking a chunk evacuating, in a record's move
    // (before its commit: rolled back), and at a move's deferred free (after it).
    ("evacuate.marked@2", "evacuate"),
    ("evacuate.moved@50", "evacuate"),
    ("txn.freeing@7400", "evacuate"),
    ("span.recorded", "big"),
    ("span.free_tagged", "big"),
    ("span.head_cleared", "big"),
    // A fresh child's cache is empty: its first allocation refills it under the class lock,
    // and the old record's deferred free goes into it; the 20 frees of remove-many overflow
    // it (half of it and the overflowing block back to the class).
    ("free.tagged", "remove-many"),
    ("cache.refilled", "put-update"),
    ("cache.given", "put-update"),
    ("cache.taken", "put-many"),
    ("cache.taken", "put-many-long"),
    ("cache.flushed@2", "remove-many"),
    ("grow.allocated", "fill"),
    // A client killed inside attach, before it claimed a slot: it leaves nothing.
    ("attach.length_read", "put-update"),
    ("reclaim.punching@3", "reclaim"),
    ("reclaim.backing@3", "reclaim"),
    ("slots.page_claimed", "many-clients"),
    ("put.prepared", "put-update"),
    ("put.locked", "put-update"),
    ("put.replaced", "put-update"),
    ("put.inserted", "put-insert"),
    ("put.unlocked", "put-update"),
    // A put whose value keeps its record's size class rewrites the record in place
    // (`index::update_in_place`: value, lengths, version and meta undo-logged first).
    ("put.locked", "put-in-place"),
    ("modify.in_place", "put-in-place"),
    ("txn.committed", "put-in-place"),
    ("put.unlocked", "put-in-place"),
    // Between a stripe's publishing (`seq` even) and its unlock (`StripeWrite::release`):
    // the lock goes to recovery, the stripe stays readable.
    ("stripe.published", "put-in-place"),
    ("stripe.published", "put-update"),
    ("stripe.published", "remove"),
    ("remove.unlinked", "remove"),
    ("remove.unlocked", "remove"),
    ("table.filled", "fill"),
    ("table.published", "fill"),
    ("txn.committed", "put-update"),
    ("txn.freeing", "put-update"),
    // A batch that gives one key twice: its first record is made and freed by one
    // transaction, killed after that free (the third of the batch's deferred frees).
    ("txn.freeing@3", "put-many-dup"),
    // A batch of long values makes its records before the locks ...
    ("put_many.prepared", "put-many-long"),
    ("put_many.applied_one@10", "put-many-long"),
    ("many.locked", "put-many-long"),
    ("many.unlocked_one@2", "put-many-long"),
    // ... one of short values is applied under them: pairs rewritten in their own blocks
    // (the 10th), inserted from blocks at hand (the 30th); one key rewritten in place twice.
    ("put_many.applied_one@10", "put-many"),
    ("put_many.applied_one@30", "put-many"),
    ("modify.in_place@5", "put-many"),
    ("put.prepared@3", "put-many"),
    ("many.locked", "put-many"),
    ("txn.committed", "put-many"),
    ("many.unlocked_one@2", "put-many"),
    ("modify.in_place@2", "put-many-dup-small"),
    ("put_many.applied_one@2", "put-many-dup-small"),
    ("txn.committed", "put-many-dup-small"),
    // The same batches in a store of one stripe ("/1"): every batch a one-stripe transaction,
    // whose stripe words are logged at their first change (`Txn::stripe_mut`: value bytes of
    // a rewrite in place, count of an insert, a rebuilt table) whatever the hash seed. With
    // four stripes that path is the seed's choice.
    ("modify.in_place@2", "put-many-dup-small/1"),
    ("put_many.applied_one@10", "put-many/1"),
    ("put_many.applied_one@30", "put-many/1"),
    ("modify.in_place@5", "put-many/1"),
    ("remove_many.applied_one@5", "remove-many"),
    // A read-modify-write: decided and applied under the stripe lock (a counter's new value
    // written into its own block: in_place).
    ("modify.locked", "incr"),
    ("modify.in_place", "incr"),
    ("modify.unlocked", "incr"),
    // A multi-key transaction (RESP's RENAME/EXEC): both keys move together or not at all.
    ("modify.locked", "transact"),
    ("txn.committed", "transact"),
    ("modify.unlocked", "transact"),
    // The expiry pass, killed between two removals of one batch.
    ("expire.removed_one@3", "expire"),
    // Eviction (volatile-ttl over a full store), killed inside an eviction transaction:
    // of a stripe sweep, and of a chunk emptied for a new value size.
    ("evict.removed_one@3", "evict"),
    ("evict.removed_one@3", "evict-chunk"),
    // A reader killed inside a lock-free read holds nothing; its slot is recovered.
    ("get_many.key_read@3", "get-many"),
];

/// Crash points with a test of their own instead of a kill in the matrix: `format.created`
/// (a store being created, its file still empty) in
/// `a_client_started_with_its_host_attaches_once_the_store_is_made`;
/// `recover.clog_unpublished` (a recoverer between letting go of a dead writer's unpublished
/// change-log entry and releasing the log lock) in
/// `a_dead_writers_unpublished_entry_is_not_taken_for_the_next_writers`.
const OWN_TEST: &[&str] = &["format.created", "recover.clog_unpublished"];

/// Crash points a client reaches before it has a slot (nothing to recover after a kill there).
const BEFORE_SLOT: &[&str] = &["attach.length_read"];

/// Where a point lies relative to the commit point of its operation: `Some(true)` at or after
/// the commit (recovery must complete: the new value), `Some(false)` before it (recovery must
/// roll back: the old value), `None` for scenarios judged otherwise (fill, spans, growth).
fn committed(point: &str) -> Option<bool> {
    match point.split('@').next().unwrap() {
        "txn.committed" | "put.unlocked" | "stripe.published" | "txn.freeing" | "free.tagged"
        | "remove.unlocked" | "many.unlocked_one" | "cache.given" | "cache.flushed"
        | "modify.unlocked" | "clog.marked" => Some(true),
        "alloc.recorded"
        | "alloc.tagged"
        | "cache.refilled"
        | "cache.taken"
        | "put.prepared"
        | "put.locked"
        | "put.replaced"
        | "put.inserted"
        | "remove.unlinked"
        | "put_many.prepared"
        | "put_many.applied_one"
        | "remove_many.applied_one"
        | "many.locked"
        | "modify.locked"
        | "modify.in_place"
        | "clog.locked"
        | "clog.written"
        | "clog.appended" => Some(false),
        _ => None,
    }
}

fn setup(t: &TestStore) {
    let h = t.host();
    for i in 0..300u32 {
        h.put(
            format!("pre-{i}").as_bytes(),
            format!("value-{i}").as_bytes(),
        )
        .unwrap();
    }
    h.put(b"crash-key", b"old").unwrap();
    h.put(b"crash-ctr", b"10").unwrap();
    for i in 0..20 {
        h.put(format!("batch-{i}").as_bytes(), b"old").unwrap();
    }
    h.put(b"big", &vec![9u8; 600_000]).unwrap();
}

/// `after_commit`: what [`committed`] says of the crash point (`None`: either state).
fn check_after(t: &TestStore, scenario: &str, acked: &[String], after_commit: Option<bool>) {
    let h = t.host();
    for i in 0..300u32 {
        assert_eq!(
            h.get(format!("pre-{i}").as_bytes()).unwrap(),
            Some(format!("value-{i}").into_bytes()),
            "pre-{i} lost"
        );
    }
    let ck = h.get(b"crash-key").unwrap();
    match scenario {
        "put-insert" => {
            let n = h.get(b"crash-new").unwrap();
            assert!(
                n.is_none() || n.as_deref() == Some(b"new-value"),
                "crash-new torn: {n:?}"
            );
            if !acked.is_empty() {
                assert!(n.is_some(), "acknowledged insert lost");
            }
            if let Some(c) = after_commit {
                assert_eq!(n.is_some(), c, "insert killed (after commit: {c}): {n:?}");
            }
        }
        "put-update" => {
            assert!(
                ck.as_deref() == Some(b"old") || ck.as_deref() == Some(b"new-value-that-is-longer"),
                "crash-key torn: {ck:?}"
            );
            if !acked.is_empty() {
                assert_eq!(
                    ck.as_deref(),
                    Some(&b"new-value-that-is-longer"[..]),
                    "ack lost"
                );
            }
            if let Some(c) = after_commit {
                let want: &[u8] = if c {
                    b"new-value-that-is-longer"
                } else {
                    b"old"
                };
                assert_eq!(
                    ck.as_deref(),
                    Some(want),
                    "update killed (after commit: {c})"
                );
            }
        }
        "put-in-place" | "put-in-place-longer" => {
            let new: &[u8] = if scenario == "put-in-place" {
                b"new"
            } else {
                b"newer"
            };
            assert!(
                ck.as_deref() == Some(b"old") || ck.as_deref() == Some(new),
                "crash-key torn: {ck:?}"
            );
            if !acked.is_empty() {
                assert_eq!(ck.as_deref(), Some(new), "ack lost");
            }
            if let Some(c) = after_commit {
                let want: &[u8] = if c { new } else { b"old" };
                assert_eq!(
                    ck.as_deref(),
                    Some(want),
                    "update killed (after commit: {c})"
                );
            }
        }
        "expire" => {
            // Expired keys are absent whether or not the pass removed them; nothing else moved.
            for i in 0..40 {
                assert!(h.get(format!("ttl-{i}").as_bytes()).unwrap().is_none());
            }
            h.expire_pass().unwrap();
            assert_eq!(h.stats().expired, 40, "each expired key counted once");
        }
        "incr" => {
            let n = h.get(b"crash-ctr").unwrap();
            assert!(
                n.as_deref() == Some(b"10") || n.as_deref() == Some(b"11"),
                "counter torn: {n:?}"
            );
            if !acked.is_empty() {
                assert_eq!(n.as_deref(), Some(&b"11"[..]), "acknowledged incr lost");
            }
            if let Some(c) = after_commit {
                let want: &[u8] = if c { b"11" } else { b"10" };
                assert_eq!(n.as_deref(), Some(want), "incr killed (after commit: {c})");
            }
        }
        "transact" => {
            let moved = h.get(b"crash-moved").unwrap();
            let state = (ck.as_deref(), moved.as_deref());
            let before = state == (Some(&b"old"[..]), None);
            let after = state == (None, Some(&b"old"[..]));
            assert!(before || after, "move half applied: {state:?}");
            if !acked.is_empty() {
                assert!(after, "acknowledged move lost: {state:?}");
            }
            if let Some(c) = after_commit {
                assert_eq!(after, c, "move killed (after commit: {c}): {state:?}");
            }
        }
        "remove" => {
            assert!(ck.is_none() || ck.as_deref() == Some(b"old"), "{ck:?}");
            if let Some(c) = after_commit {
                assert_eq!(ck.is_none(), c, "remove killed (after commit: {c}): {ck:?}");
            }
        }
        "put-many-dup" | "put-many-dup-small" => {
            let state = (ck.as_deref(), h.get(b"batch-0").unwrap());
            let (second, new): (&[u8], _) = if scenario == "put-many-dup" {
                (b"second", vec![b'n'; 300])
            } else {
                (b"second-value", b"new".to_vec())
            };
            let before = state == (Some(&b"old"[..]), Some(b"old".to_vec()));
            let after = state == (Some(second), Some(new));
            assert!(before || after, "batch half applied: {state:?}");
            if !acked.is_empty() {
                assert!(after, "acknowledged batch lost: {state:?}");
            }
            if let Some(c) = after_commit {
                assert_eq!(after, c, "batch killed (after commit: {c}): {state:?}");
            }
        }
        "put-many" | "put-many-long" | "remove-many" => {
            let vals: Vec<Option<Vec<u8>>> = (0..40)
                .map(|i| h.get(format!("batch-{i}").as_bytes()).unwrap())
                .collect();
            let before = |i: usize| if i < 20 { Some(b"old".to_vec()) } else { None };
            let after = |_: usize| match scenario {
                "put-many" => Some(b"new".to_vec()),
                "put-many-long" => Some(vec![b'n'; 300]),
                _ => None,
            };
            let all_before = (0..40).all(|i| vals[i] == before(i));
            let all_after = (0..40).all(|i| vals[i] == after(i));
            assert!(all_before || all_after, "batch half applied: {vals:?}");
            if let Some(c) = after_commit {
                assert_eq!(all_after, c, "batch killed (after commit: {c}): {vals:?}");
            }
        }
        "fill" => {
            for line in acked {
                let k = line.trim_start_matches("ack ");
                let i: usize = k.trim_start_matches("fill-").parse().unwrap();
                let v = h
                    .get(k.as_bytes())
                    .unwrap()
                    .expect("acknowledged fill key lost");
                assert_eq!(v, vec![(i % 251) as u8; (i * 37) % 3000]);
            }
        }
        "reclaim" => {
            for line in acked.iter().filter(|l| l.starts_with("ack nw-")) {
                let k = line.trim_start_matches("ack ");
                let i: usize = k.trim_start_matches("nw-").parse().unwrap();
                let v = h.get(k.as_bytes()).unwrap().expect("acknowledged key lost");
                assert_eq!(v, vec![(i % 251) as u8; 1000]);
            }
            // Room for as much again: punched chunks (one left RECLAIMING by the dead
            // process included) are taken back; what is stored stays.
            for i in 0..3000u32 {
                h.put(format!("again-{i}").as_bytes(), &[5u8; 1000])
                    .unwrap();
            }
            for i in 0..3000u32 {
                assert_eq!(
                    h.get(format!("again-{i}").as_bytes()).unwrap().as_deref(),
                    Some(&[5u8; 1000][..])
                );
            }
        }
        "reclass" => {
            // The release may already run while filling (chunks of freed index tables).
            if acked.iter().any(|l| l.starts_with("ack removed")) {
                assert!(h.get(b"rc-0").unwrap().is_none(), "removed key back");
            }
            for line in acked.iter().filter(|l| l.starts_with("ack nw-")) {
                let k = line.trim_start_matches("ack ");
                let i: usize = k.trim_start_matches("nw-").parse().unwrap();
                let v = h.get(k.as_bytes()).unwrap().expect("acknowledged key lost");
                assert_eq!(v, vec![(i % 251) as u8; 1000]);
            }
        }
        "evacuate" => {
            // Records moved or not, every kept one reads back whole; the removed stay gone.
            if acked.iter().any(|l| l == "ack kept") {
                for i in 0..8000u32 {
                    let v = h.get(format!("ev-{i}").as_bytes()).unwrap();
                    if i % 10 == 0 {
                        assert_eq!(v, Some(vec![(i % 251) as u8; 200]), "ev-{i} lost or torn");
                    } else {
                        assert_eq!(v, None, "ev-{i} back");
                    }
                }
            }
            // Another pass finishes what the killed one started.
            h.reclaim_pass(0).unwrap();
        }
        "evict" | "evict-chunk" => {
            // An acknowledged key is there whole, or was evicted whole: never torn.
            let mut present = 0;
            for line in acked {
                let k = line.trim_start_matches("ack ");
                let i: usize = k.trim_start_matches("ev-").parse().unwrap();
                if let Some(v) = h.get(k.as_bytes()).unwrap() {
                    let size = if i < 100_000 { 1000 } else { 3000 };
                    assert_eq!(v, vec![(i % 251) as u8; size], "{k} torn");
                    present += 1;
                }
            }
            assert!(present > 0);
            assert_eq!(h.get(b"big").unwrap().map(|v| v.len()), Some(600_000));
            // Still a working cache: as many again, evicting.
            h.set_eviction(kvshm::Policy::VolatileTtl).unwrap();
            for i in 0..6000u32 {
                h.put_with_ttl(
                    format!("again-{i}").as_bytes(),
                    &[7u8; 2000],
                    Duration::from_secs(60),
                )
                .unwrap();
            }
            assert!(h.stats().evicted > 0);
        }
        "big" => {
            let v = h.get(b"big").unwrap().unwrap();
            assert_eq!(v.len(), 600_000);
            assert!(v.iter().all(|&b| b == v[0]), "big value torn");
            if let Some(last) = acked.last() {
                let n: u8 = last.rsplit(' ').next().unwrap().parse().unwrap();
                assert!(v[0] >= n, "acknowledged big value {n} lost (have {})", v[0]);
            }
        }
        _ => {}
    }
}

/// Let a child run `scenario` of the crash child until it is SIGKILLed at `point` (it must
/// be: a point the scenario stops reaching is a failure too).
fn kill_child_at(t: &TestStore, scenario: &str, point: &str) {
    let mut c = t.spawn("crash", &[scenario], &[("KVSHM_CRASH_AT", point)]);
    let st = c.wait_limit(Duration::from_secs(60));
    assert_eq!(
        killed_by(&st),
        Some(libc::SIGKILL),
        "{scenario} should die at {point}: {st:?}"
    );
}

/// A store with a change log that holds everything a crash-point test writes.
fn logged_store(tag: &str) -> TestStore {
    let cfg = Config::default()
        .stripes(4)
        .initial_size(0)
        .changelog(4 << 20);
    TestStore::new(tag, cfg, CHILD)
}

/// Set the store up, let a child run `scenario` until it is SIGKILLed at `point`, then
/// verify (recovering it) and check what the scenario promises ([`check_after`]).
fn kill_at(t: &TestStore, point: &str, scenario: &str) {
    setup(t);
    let mut c = t.spawn("crash", &[scenario], &[("KVSHM_CRASH_AT", point)]);
    let st = c.wait_limit(Duration::from_secs(60));
    let acked = c.stdout_lines();
    assert_eq!(
        killed_by(&st),
        Some(libc::SIGKILL),
        "{point}: scenario {scenario} did not reach it ({st:?})"
    );
    let report = t.assert_verified();
    if BEFORE_SLOT.contains(&point.split('@').next().unwrap()) {
        assert_eq!(
            report.recovered, 0,
            "{point}: a child killed in attach left a slot"
        );
    } else {
        assert!(report.recovered >= 1, "{point}: dead child not recovered");
    }
    check_after(t, scenario, &acked, committed(point));
}

fn run_point(point: &str, scenario: &str) {
    eprintln!("crash point {point} (scenario {scenario})");
    // `scenario/N`: the scenario in a store of N stripes (else 4).
    let (scenario, stripes) = match scenario.split_once('/') {
        Some((s, n)) => (s, n.parse().expect("stripes after '/'")),
        None => (scenario, 4),
    };
    let mut cfg = Config::default().stripes(stripes).initial_size(0);
    if ["reclass", "evict", "evict-chunk"].contains(&scenario) {
        cfg = cfg.max_size(6 << 20); // a store it can fill
    }
    let t = TestStore::new("crash", cfg, CHILD);
    kill_at(&t, point, scenario);
    // Fully usable afterwards, from this process and a new one.
    t.host().put(b"crash-key", b"after").unwrap();
    assert_eq!(t.run("get", &["crash-key"]), vec!["after"]);
    t.host()
        .remove_many(&(0..40).map(|i| format!("batch-{i}")).collect::<Vec<_>>())
        .unwrap();
    t.assert_verified();
}

#[test]
fn every_crash_point_is_survived() {
    let listed: Vec<&str> = MATRIX
        .iter()
        .map(|(p, _)| p.split('@').next().unwrap())
        .collect();
    let mut missing: Vec<&str> = kvshm::crash::CRASH_POINTS
        .iter()
        .copied()
        .filter(|p| !listed.contains(p) && !RECOVERY_STAGES.contains(p) && !OWN_TEST.contains(p))
        .filter(|p| !LOGGED.iter().any(|(l, _)| l.split('@').next() == Some(p)))
        .collect();
    missing.sort();
    assert!(
        missing.is_empty(),
        "crash points without a test: {missing:?}"
    );
    for (point, scenario) in MATRIX {
        run_point(point, scenario);
    }
}

/// Crash points of a write in a store with a change log (issue 18), with scenarios that reach
/// them: every step of the append, and points before and after the commit around it.
const LOGGED: &[(&str, &str)] = &[
    ("clog.locked", "put-update"),
    ("clog.written", "put-update"),
    ("clog.appended", "put-update"),
    ("clog.marked", "put-update"),
    ("put.locked", "put-update"),
    ("txn.committed", "put-update"),
    ("put.unlocked", "put-update"),
    ("clog.written", "put-many"),
    ("clog.marked", "put-many"),
    ("clog.appended", "remove-many"),
    ("clog.written", "transact"),
    ("clog.marked", "incr"),
    ("clog.appended", "remove"),
    // A batch that rewrites one key in place twice, the second time longer: the entry
    // copies the record as it is at the append.
    ("clog.written", "put-many-dup-small"),
    ("clog.marked", "put-many-dup-small"),
    // A put rewritten in place: the entry copies the record the rollback restores.
    ("clog.appended", "put-in-place"),
    ("clog.marked", "put-in-place"),
    // The same at another length of the same size class: the stripe's value bytes changed
    // before the commit, and roll back with the record (a one-stripe transaction logs them at
    // that change, `Txn::stripe_mut`; verify compares them with the records).
    ("clog.appended", "put-in-place-longer"),
    // After the stripe's words changed, before the commit (they are logged at their first
    // change, `Txn::stripe_mut`): an insert's count, tombstones and value bytes roll back.
    ("clog.appended", "put-insert"),
];

/// What the change log says the store holds: every committed batch from the start, replayed.
/// Fails if a batch is still waiting (a dead writer's entry left unresolved by recovery).
fn replay_log(c: &kvshm::Client) -> Contents {
    let mut m = Contents::new();
    let mut p = c.changelog_tail().unwrap();
    assert_eq!(p, 0, "the test's log must still hold everything");
    loop {
        let mut out = Vec::new();
        let r = c.read_changes(p, 1000, &mut out).unwrap();
        apply_batches(&mut m, &out).unwrap();
        match r {
            kvshm::ChangeRead::UpTo { next } if next == p && out.is_empty() => return m,
            kvshm::ChangeRead::UpTo { next } => p = next,
            other => panic!("change log after recovery: {other:?}"),
        }
    }
}

/// The log's replay equals the store; else the first keys that differ (log vs store).
fn assert_same(log: &Contents, store: &Contents, what: &str) {
    let differ = differing_keys(log, store);
    assert!(
        differ.is_empty(),
        "{what}: the change log disagrees with the store (log vs store): {differ:?}"
    );
}

/// A writer killed at any step of appending to the change log, or around its commit: after
/// recovery the log holds every committed change and no rolled-back one (replaying it gives
/// exactly the store), nothing in it stays PENDING, and later writes are logged as before.
#[test]
fn the_change_log_holds_exactly_the_committed_writes_after_a_kill_anywhere() {
    for (point, scenario) in LOGGED {
        eprintln!("crash point {point} (scenario {scenario}, change log on)");
        let t = logged_store("clog-crash");
        kill_at(&t, point, scenario);
        let h = t.host();
        assert_same(
            &replay_log(h),
            &store_contents(h),
            &format!("{point}/{scenario}"),
        );
        // The log lock and the log itself work on: from this process and a new one.
        h.put(b"crash-key", b"after").unwrap();
        assert_eq!(t.run("get", &["crash-key"]), vec!["after"]);
        assert_same(
            &replay_log(h),
            &store_contents(h),
            &format!("{point}/{scenario}, after"),
        );
    }
}

/// A writer killed after writing its change-log entry but before publishing it
/// (`clog.written`: it holds the log lock), then its recoverer killed after the log lock went
/// back but before the entry was resolved, then a write by another client: that write takes
/// the dead writer's position and sequence number. The last recovery must not take it for the
/// dead writer's entry: since writers leave committed entries PENDING (session 16), it would
/// have marked a committed write ABORTED, gone from the log, had the first recoverer not let
/// go of the unpublished entry before releasing the lock (checked: without that, this test
/// fails with the key missing from the log).
#[test]
fn a_dead_writers_unpublished_entry_is_not_taken_for_the_next_writers() {
    for stage in ["recover.clog_unpublished", "recover.stripes_released"] {
        let t = logged_store("clog-rec");
        setup(&t);
        kill_child_at(&t, "put-update", "clog.written");
        kill_child_at(&t, "recover", stage);
        let h = t.host();
        h.put(b"after-both", b"logged").unwrap();
        t.assert_verified();
        let log = replay_log(h);
        assert_eq!(
            log.get(b"after-both".as_slice()).map(|v| &v[..]),
            Some(&b"logged"[..]),
            "{stage}: a committed write is missing from the change log"
        );
        assert_same(&log, &store_contents(h), stage);
    }
}

/// A writer killed after publishing its change-log entry and before letting go of it (its
/// transaction open, or committed and the slot still naming the entry): until recovery
/// settles the entry, a reader waits at it - it must not take it for committed (the commit
/// is implicit since session 16: a reader asks the writer's slot), nor skip it.
#[test]
fn a_dead_writers_published_entry_waits_for_its_recovery() {
    for point in ["clog.appended", "txn.committed", "clog.marked"] {
        let t = logged_store("clog-wait");
        setup(&t);
        kill_child_at(&t, "put-update", point);
        let h = t.host();
        let (mut p, mut out) = (0, Vec::new());
        let end = loop {
            match h.read_changes(p, 1000, &mut out).unwrap() {
                kvshm::ChangeRead::UpTo { next } if next != p => p = next,
                other => break other,
            }
        };
        assert!(
            matches!(end, kvshm::ChangeRead::Waiting { .. }),
            "{point}: before recovery the log read {end:?}"
        );
        t.assert_verified();
        assert_same(&replay_log(h), &store_contents(h), point);
    }
}

/// Every crash point inside recovery, each a target of the recoverer-kill test.
const RECOVERY_STAGES: [&str; 4] = [
    "recover.class_rebuilt",
    "recover.undone",
    "recover.stripes_released",
    "recover.blocks_done",
];

/// Which victims leave a recovery that reaches `stage`: a class lock held (class_rebuilt), an
/// ACTIVE transaction (undone), any open transaction (stripes_released, blocks_done).
fn reaches(stage: &str, victim: &str) -> bool {
    let active = committed(victim) == Some(false);
    match stage {
        "recover.class_rebuilt" => victim == "alloc.tagged",
        "recover.undone" => active,
        _ => true,
    }
}

#[test]
fn a_recoverer_killed_mid_recovery_is_recovered_in_turn() {
    let mut killed = 0;
    for stage in RECOVERY_STAGES {
        for victim in [
            "put.locked",
            "put.replaced",
            "txn.committed",
            "alloc.tagged",
            "many.unlocked_one@2",
        ] {
            let t = TestStore::new("rec", Config::default().stripes(4), CHILD);
            setup(&t);
            let scenario = if victim.starts_with("many") {
                "put-many"
            } else {
                "put-update"
            };
            kill_child_at(&t, scenario, victim);
            let mut r = t.spawn("crash", &["recover"], &[("KVSHM_CRASH_AT", stage)]);
            let st = r.wait_limit(Duration::from_secs(60));
            let lines = r.stdout_lines();
            // Each combination either must kill the recoverer at `stage` or must not reach it:
            // a stage that stops being reached is a bug too.
            if reaches(stage, victim) {
                assert_eq!(
                    killed_by(&st),
                    Some(libc::SIGKILL),
                    "{victim} -> recoverer should die at {stage}: {st:?} {lines:?}"
                );
                killed += 1;
            } else {
                assert_eq!(st.code(), Some(3), "{victim}/{stage}: {st:?} {lines:?}");
            }
            t.assert_verified();
            check_after(&t, scenario, &[], committed(victim));
        }
    }
    assert_eq!(killed, 1 + 3 + 5 + 5, "recoverers killed");
}

#[test]
fn a_killed_lock_holder_does_not_block_others() {
    // The child dies holding the stripe lock of crash-key; a writer in another process that
    // needs the same stripe must recover it and go on.
    let t = TestStore::new("lockheld", Config::default().stripes(1), CHILD);
    setup(&t);
    kill_child_at(&t, "put-update", "put.replaced");
    let mut w = t.spawn("put", &["crash-key", "from-another-process"], &[]);
    assert!(w.wait_limit(Duration::from_secs(30)).success());
    assert_eq!(
        t.host().get(b"crash-key").unwrap().as_deref(),
        Some(&b"from-another-process"[..])
    );
    let mut tally: HashMap<&str, u64> = HashMap::new();
    *tally.entry("recoveries").or_default() += t.host().stats().recoveries;
    assert!(tally["recoveries"] >= 1);
    t.assert_verified();
}

/// A recoverer killed after it freed a dead writer's new record leaves that writer's log
/// naming the block; another writer then reserves the same block (frozen there, live). The
/// next recovery of the dead writer must leave the block alone (it is reserved by someone
/// else now): the frozen writer resumes, commits its record in that block, and the store
/// verifies clean.
#[test]
fn a_block_freed_by_a_killed_recoverer_and_reserved_again_is_not_freed_twice() {
    let t = TestStore::new("rec-reuse", Config::default().stripes(4), CHILD);
    setup(&t);
    kill_child_at(&t, "put-update", "put.replaced");
    // The recoverer dies after freeing the dead writer's new block.
    kill_child_at(&t, "recover", "recover.blocks_done");
    // Same key and value size: it takes the block just freed (the free list's head).
    let mut x = t.spawn_stopped("crash", &["put-update"], "put.prepared", &[]);
    let n = t.host().recover_dead_clients().unwrap();
    assert_eq!(n, 2, "the dead writer and the dead recoverer");
    signal(&x, libc::SIGCONT);
    assert_eq!(
        x.wait_limit(Duration::from_secs(30)).code(),
        Some(3),
        "the frozen writer should finish its put"
    );
    assert_eq!(
        t.host().get(b"crash-key").unwrap().as_deref(),
        Some(&b"new-value-that-is-longer"[..])
    );
    t.assert_verified();
}

/// Issue 12 part 2: a writer that dies with a full block cache (blocks reserved by it outside
/// any transaction) is recovered like any other: every cached block goes back to its class
/// (verify finds none reserved by a recovered slot, and lists, counts and tags agree).
#[test]
fn a_dead_writers_cached_blocks_come_back() {
    let t = TestStore::new("cachedead", Config::default().stripes(4), CHILD);
    setup(&t);
    let mut c = t.spawn("crash", &["cache-full"], &[]);
    assert_eq!(c.wait_limit(Duration::from_secs(60)).code(), Some(3));
    assert_eq!(c.stdout_lines(), vec!["ack"]);
    let report = t.assert_verified();
    assert_eq!(report.recovered, 1, "the writer left without detaching");
    for i in 0..40 {
        assert!(t
            .host()
            .get(format!("cf-{i}").as_bytes())
            .unwrap()
            .is_none());
    }
}

/// A small put of a new key whose record or index table needs the store to grow takes that
/// block *before* it locks the key's stripe (growth zeroes megabytes of pages: every reader of
/// the stripe would wait for it, and for as long as the writer is descheduled). A writer is
/// frozen inside each of the store's first eight growths in turn (one stripe: its table doubles
/// between them, and some growths are the table's); a get of the key it is putting, from
/// another process, must answer at once every time.
#[test]
fn a_put_that_grows_the_store_holds_no_stripe_lock_meanwhile() {
    let t = TestStore::new(
        "growlock",
        Config::default().initial_size(0).stripes(1),
        CHILD,
    );
    let h = t.host();
    let mut first = 0u32;
    for round in 1..=8 {
        let from = first.to_string();
        let mut x = t.spawn_stopped(
            "crash",
            &["put-until-growth"],
            "grow.allocated",
            &[("KVSHM_TEST_FIRST", &from)],
        );
        let key = x
            .stdout_lines()
            .last()
            .and_then(|l| l.strip_prefix("putting ").map(str::to_string))
            .expect("the writer names its key");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|sc| {
            sc.spawn(|| {
                let _ = tx.send(h.get(key.as_bytes()).map_err(|e| e.to_string()));
            });
            let got = rx.recv_timeout(Duration::from_secs(20));
            // Unfreeze the writer whatever happened (a get blocked behind it then finishes).
            signal(&x, libc::SIGCONT);
            assert_eq!(
                got.unwrap_or_else(|_| panic!(
                    "growth {round}: a get of {key} waited for its frozen writer"
                )),
                Ok(None)
            );
        });
        // The writer finishes that put; stop it there (its later keys are not needed).
        wait_for("the frozen put to finish", Duration::from_secs(30), || {
            h.get(key.as_bytes()).unwrap().is_some()
        });
        x.kill();
        assert_eq!(
            h.get(key.as_bytes()).unwrap().as_deref(),
            Some(&b"small"[..])
        );
        first = key["grow-".len()..].parse::<u32>().unwrap() + 1;
    }
    t.assert_verified();
}

/// The same for a read-modify-write (APPEND): its new record is allocated under the stripe
/// lock (the value depends on what is there), but never by growing there: frozen inside the
/// growth, the writer holds no stripe, and a get of the key answers with the value before.
#[test]
fn an_append_that_grows_the_store_holds_no_stripe_lock_meanwhile() {
    let t = TestStore::new("growappend", Config::default().initial_size(0), CHILD);
    let mut x = t.spawn_stopped("crash", &["append-until-growth"], "grow.allocated", &[]);
    let done: usize = x
        .stdout_lines()
        .last()
        .and_then(|l| l.strip_prefix("appending ")?.parse().ok())
        .expect("the writer names its append");
    let h = t.host();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|sc| {
        sc.spawn(|| {
            let _ = tx.send(
                h.get(b"grow-log")
                    .map(|v| v.map(|v| v.len()))
                    .map_err(|e| e.to_string()),
            );
        });
        let got = rx.recv_timeout(Duration::from_secs(20));
        signal(&x, libc::SIGCONT);
        let want = if done == 0 { None } else { Some(done * 100) };
        assert_eq!(
            got.expect("a get waited for an appender frozen while the store grew"),
            Ok(want)
        );
    });
    wait_for(
        "the frozen append to finish",
        Duration::from_secs(30),
        || h.get(b"grow-log").unwrap().map(|v| v.len()) > Some(done * 100),
    );
    x.kill();
    t.assert_verified();
}

/// A client that attaches while the store grows attaches (session 14: a TTL storm writer's
/// `Client::open` failed once with "committed length beyond ... the file (truncated?)").
/// Frozen after reading the file's length, the child attaches once the store has grown
/// meanwhile: attach must read the length again after the header.
#[test]
fn a_client_attaching_while_the_store_grows_attaches() {
    let t = TestStore::new("attachgrow", Config::default().initial_size(0), CHILD);
    let h = t.host();
    let mut x = t.spawn_stopped("put", &["late", "joiner"], "attach.length_read", &[]);
    let grown = h.stats().growths;
    let mut i = 0u32;
    while h.stats().growths < grown + 2 {
        h.put(&i.to_le_bytes(), &[1u8; 1000]).unwrap();
        i += 1;
    }
    signal(&x, libc::SIGCONT);
    let st = x.wait_limit(Duration::from_secs(30));
    assert!(
        st.success(),
        "the child failed to attach to a store that grew: {:?}",
        x.stdout_lines()
    );
    assert_eq!(h.get(b"late").unwrap().as_deref(), Some(&b"joiner"[..]));
    t.assert_verified();
}

/// A client started together with its host may open the store file while the host is still
/// creating it (the file exists, empty, before its header is written). It waits for the
/// creation instead of calling the store broken ("file is 0 bytes, shorter than a header").
#[test]
fn a_client_started_with_its_host_attaches_once_the_store_is_made() {
    let t = TestStore::new("creating", Config::default(), CHILD);
    let name = format!("{}-made", t.name);
    struct Remove(std::path::PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _made = Remove(t.dir.join(format!("kvshm.{name}")));
    let mut creator = t.spawn_stopped("create", &[&name], "format.created", &[]);
    std::thread::scope(|s| {
        let attach = s.spawn(|| kvshm::Client::open_in(&t.dir, &name).map(|c| c.len()));
        std::thread::sleep(Duration::from_millis(100));
        signal(&creator, libc::SIGCONT);
        match attach.join().unwrap() {
            Ok(len) => assert_eq!(len, 0),
            Err(e) => panic!("a client opening a store under creation failed: {e}"),
        }
    });
    creator.kill();
}
