//! Bad bytes in a live store, written where a buggy or hostile process of the same user can
//! write them (issue 11, items 1-6 and 12). Each test damages one field of a real store file,
//! then a `kvshm-child probe` process (address space capped at 2 GiB) runs every public
//! operation on it: errors are fine; a hang (60 s), a signal, an abort or a panic fails.

use std::os::unix::fs::FileExt;
use std::time::Duration;

use kvshm::layout::*;
use kvshm::Config;
use kvshm_tests::{killed_by, ChildGuard, TestStore};

const CHILD: &str = env!("CARGO_BIN_EXE_kvshm-child");

/// A store with `keys` small records (names `key-<i>`), some removed, one 1 MiB record.
fn seed(tag: &str, stripes: u32, keys: u32) -> TestStore {
    let t = TestStore::new(
        tag,
        Config::default()
            .stripes(stripes)
            .max_size(16 << 20)
            .initial_size(0),
        CHILD,
    );
    for i in 0..keys {
        t.host()
            .put(
                format!("key-{i}").as_bytes(),
                &vec![i as u8; (i % 90) as usize],
            )
            .unwrap();
    }
    for i in (0..keys).step_by(7) {
        t.host().remove(format!("key-{i}").as_bytes()).unwrap();
    }
    t.host().put(b"big", &vec![7u8; 1 << 20]).unwrap();
    t
}

fn read_u64(t: &TestStore, off: u64) -> u64 {
    let f = std::fs::File::open(t.path()).unwrap();
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, off).unwrap();
    u64::from_le_bytes(b)
}

fn write_u64(t: &TestStore, off: u64, v: u64) {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(t.path())
        .unwrap();
    f.write_all_at(&v.to_le_bytes(), off).unwrap();
}

fn write_u32(t: &TestStore, off: u64, v: u32) {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(t.path())
        .unwrap();
    f.write_all_at(&v.to_le_bytes(), off).unwrap();
}

fn header_field(off: usize) -> u64 {
    off as u64
}

fn stripe_off(t: &TestStore, s: u64) -> u64 {
    read_u64(
        t,
        header_field(core::mem::offset_of!(Header, stripes_offset)),
    ) + s * STRIPE_SIZE
}

/// Every live entry of every stripe's table: (entry offset, entry word).
fn entries(t: &TestStore) -> Vec<(u64, u64)> {
    let n = read_u64(t, header_field(core::mem::offset_of!(Header, stripe_count))) & 0xffff_ffff;
    let mut out = Vec::new();
    for s in 0..n {
        let tw = read_u64(
            t,
            stripe_off(t, s) + core::mem::offset_of!(Stripe, table) as u64,
        );
        if tw == 0 {
            continue;
        }
        let off = tw & TABLE_OFFSET_MASK;
        let cap = table_capacity((tw >> TABLE_LOG2_SHIFT) as u32);
        for i in 0..cap {
            let at = off + TABLE_HEADER_SIZE + i * TABLE_ENTRY_SIZE;
            out.push((at, read_u64(t, at)));
        }
    }
    out
}

/// Run the probe on the (damaged) store: it must finish by itself, without a signal.
fn probe(t: &TestStore) -> Vec<String> {
    let mut c = std::process::Command::new(CHILD);
    c.arg("probe").arg(&t.dir).arg(&t.name);
    finish(ChildGuard::spawn_captured(&mut c))
}

/// Like `damage_then_probe`, but the probe's clients attach *before* the damage (a value
/// checked only at attach must be checked again).
fn probe_attached_then_damage(t: &mut TestStore, damage: impl FnOnce(&TestStore)) -> Vec<String> {
    drop(t.host.take());
    let flag = std::env::temp_dir().join(format!("kvshm-probe-flag-{}", t.name));
    let _ = std::fs::remove_file(&flag);
    let mut c = std::process::Command::new(CHILD);
    c.arg("probe-attached").arg(&t.dir).arg(&t.name).arg(&flag);
    let mut child = ChildGuard::spawn_captured(&mut c);
    kvshm_tests::wait_for("the probe to attach", Duration::from_secs(60), || {
        std::fs::read_to_string(&flag).is_ok_and(|s| s == "attached")
            || child.child.try_wait().ok().flatten().is_some()
    });
    damage(t);
    std::fs::write(&flag, "go").unwrap();
    let lines = finish(child);
    let _ = std::fs::remove_file(&flag);
    lines
}

fn finish(mut child: ChildGuard) -> Vec<String> {
    let st = child.wait_timeout(Duration::from_secs(60));
    let lines = child.stdout_lines();
    match st {
        None => panic!("probe hung on the damaged store: {lines:?}"),
        Some(s) if !s.success() => panic!(
            "probe {} on the damaged store: {lines:?}",
            killed_by(&s).map_or(format!("exited {s:?}"), |sig| format!(
                "died of signal {sig}"
            ))
        ),
        Some(_) => {}
    }
    assert_eq!(lines.last().map(String::as_str), Some("done"), "{lines:?}");
    lines
}

/// The host of a test store must not fight the probe: drop it first (the store stays; the
/// TestStore removes the file at the end).
fn damage_then_probe(t: &mut TestStore, damage: impl FnOnce(&TestStore)) -> Vec<String> {
    drop(t.host.take());
    damage(t);
    probe(t)
}

#[test]
fn lock_words_with_only_the_waiters_bit_are_taken() {
    let mut t = seed("hs-waiters", 4, 200);
    let lines = damage_then_probe(&mut t, |t| {
        for s in 0..4 {
            write_u32(t, stripe_off(t, s), 1 << 31);
        }
        write_u32(
            t,
            header_field(core::mem::offset_of!(Header, classes)),
            1 << 31,
        );
    });
    assert!(lines.iter().any(|l| l == "put: Ok(())"), "{lines:?}");
}

#[test]
fn a_lowered_stripe_count_does_not_hang_compaction() {
    let mut t = seed("hs-count", 4, 400);
    let lines = damage_then_probe(&mut t, |t| {
        for s in 0..4 {
            let st = stripe_off(t, s);
            write_u64(t, st + core::mem::offset_of!(Stripe, count) as u64, 0);
            write_u64(
                t,
                st + core::mem::offset_of!(Stripe, tombstones) as u64,
                100,
            );
        }
    });
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("compact:") && l.contains("Corrupt")),
        "{lines:?}"
    );
}

#[test]
fn a_self_linked_free_list_does_not_hang_verify() {
    let mut t = seed("hs-freelist", 4, 400);
    let lines = damage_then_probe(&mut t, |t| {
        let classes = core::mem::offset_of!(Header, classes) as u64;
        let size = core::mem::size_of::<ClassHeader>() as u64;
        let mut damaged = 0;
        for c in 0..NUM_CLASSES as u64 {
            let head = read_u64(t, classes + c * size + 8);
            if head != 0 {
                write_u64(t, head + 8, head); // next = itself
                write_u64(t, classes + c * size + 16, u64::MAX); // free_count
                damaged += 1;
            }
        }
        assert!(damaged > 0, "no free list to damage");
    });
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("verify: Ok(") && !l.contains("Ok(0)")),
        "verify should report the damage: {lines:?}"
    );
}

#[test]
fn a_raised_committed_len_gives_errors_not_sigbus() {
    let mut t = seed("hs-committed", 4, 200);
    let file_len = std::fs::metadata(t.path()).unwrap().len();
    probe_attached_then_damage(&mut t, |t| {
        let reserve = read_u64(t, header_field(core::mem::offset_of!(Header, reserve_len)));
        write_u64(
            t,
            header_field(core::mem::offset_of!(Header, committed_len)),
            reserve,
        );
        // Every table entry points past the end of the file (inside the raised length).
        for (at, e) in entries(t) {
            if e > 1 {
                write_u64(t, at, table_entry(0, file_len + (1 << 20)));
            }
        }
    });
}

#[test]
fn all_slot_page_words_set_cost_no_memory() {
    let mut t = seed("hs-slotpages", 4, 100);
    let lines = damage_then_probe(&mut t, |t| {
        let base = header_field(core::mem::offset_of!(Header, slot_pages));
        let chunk_base = read_u64(t, header_field(core::mem::offset_of!(Header, chunk_base)));
        for p in 1..MAX_SLOT_PAGES as u64 {
            write_u64(t, base + 8 * p, chunk_base);
        }
    });
    assert!(lines.iter().any(|l| l == "put: Ok(())"), "{lines:?}");
}

#[test]
fn table_entries_all_pointing_at_one_big_record_do_not_exhaust_memory() {
    let mut t = seed("hs-bigrec", 1, 3000);
    damage_then_probe(&mut t, |t| {
        let all = entries(t);
        // The entry of the 1 MiB record: the one whose record's value length is 1 MiB.
        let big_entry = all
            .iter()
            .map(|&(_, e)| e)
            .filter(|&e| e > 1)
            .find(|&e| {
                let rec = entry_record(e);
                read_u64(t, rec + RECORD_LENS_OFFSET) >> 32 == 1 << 20
            })
            .expect("the big record's entry");
        for (at, _) in all {
            write_u64(t, at, big_entry);
        }
    });
}

#[test]
fn damaged_stripe_totals_are_reported_not_panicked_on() {
    // Debug builds panic on integer overflow: under the stripe lock, with the FFI's
    // catch_unwind keeping the process alive, that wedged every other process.
    let mut t = seed("hs-totals", 4, 200);
    let lines = damage_then_probe(&mut t, |t| {
        for s in 0..4 {
            let st = stripe_off(t, s);
            write_u64(t, st + core::mem::offset_of!(Stripe, value_bytes) as u64, 0);
            write_u64(
                t,
                st + core::mem::offset_of!(Stripe, count) as u64,
                u64::MAX,
            );
        }
    });
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("remove:") && l.contains("Corrupt")),
        "{lines:?}"
    );
}
