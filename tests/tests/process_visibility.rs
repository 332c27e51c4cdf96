//! Visibility, updates, removal and reuse across real processes.

use std::time::Duration;

use kvshm::Config;
use kvshm_tests::{pattern, signal, wait_for, ChildGuard, TestStore};

const CHILD: &str = env!("CARGO_BIN_EXE_kvshm-child");

#[test]
fn a_put_in_one_process_is_seen_by_others_at_once() {
    let t = TestStore::new("vis", Config::default(), CHILD);
    t.run("put", &["color", "blue"]);
    assert_eq!(
        t.host().get(b"color").unwrap().as_deref(),
        Some(&b"blue"[..])
    );
    assert_eq!(t.run("get", &["color"]), vec!["blue"]);
    t.host().put(b"color", b"green").unwrap();
    assert_eq!(t.run("get", &["color"]), vec!["green"]);
}

#[test]
fn updates_from_many_processes_never_duplicate_a_key() {
    let t = TestStore::new("dup", Config::default(), CHILD);
    for i in 0..10 {
        t.run("put", &["same", &format!("value-{i}")]);
    }
    assert_eq!(t.run("len", &[]), vec!["1"]);
    assert_eq!(t.host().len(), 1);
    assert_eq!(t.run("get", &["same"]), vec!["value-9"]);
    t.assert_verified();
}

#[test]
fn a_removed_key_is_gone_everywhere_and_its_slot_is_reused() {
    let t = TestStore::new("rm", Config::default(), CHILD);
    t.host().put(b"gone", b"soon").unwrap();
    assert_eq!(t.run("remove", &["gone"]), vec!["true"]);
    assert_eq!(t.host().get(b"gone").unwrap(), None);
    assert_eq!(t.run("get", &["gone"]), vec!["<none>"]);
    assert_eq!(t.run("remove", &["gone"]), vec!["false"]);
    // A new key on the reused block/slot is visible in another process.
    t.host().put(b"fresh", b"soon").unwrap();
    assert_eq!(t.run("get", &["fresh"]), vec!["soon"]);
    t.assert_verified();
}

#[test]
fn growth_is_seen_by_attached_processes_without_reattaching() {
    let t = TestStore::new("growvis", Config::default().initial_size(0), CHILD);
    let mut holder = t.spawn("hold", &[], &[]);
    let early = t.host().stats().committed_bytes;
    for i in 0..30_000u32 {
        t.host()
            .put(format!("k{i}").as_bytes(), &[b'x'; 200])
            .unwrap();
    }
    assert!(t.host().stats().committed_bytes > early);
    assert_eq!(t.run("get", &["k29999"]), vec!["x".repeat(200)]);
    assert_eq!(t.run("len", &[]), vec!["30000"]);
    holder.kill();
    t.assert_verified();
}

#[test]
fn attaching_to_missing_foreign_or_truncated_segments_fails_cleanly() {
    use kvshm::{Client, Error};
    let dir = kvshm::default_dir();
    let name = format!("t-foreign-{}", std::process::id());
    let path = dir.join(format!("kvshm.{name}"));
    assert!(matches!(
        Client::open_in(&dir, &name),
        Err(Error::NotFound { .. })
    ));
    std::fs::write(&path, vec![0xabu8; 8192]).unwrap();
    let r = Client::open_in(&dir, &name);
    assert!(matches!(r, Err(Error::Incompatible { .. })), "{r:?}");
    std::fs::write(&path, b"short").unwrap();
    assert!(matches!(
        Client::open_in(&dir, &name),
        Err(Error::Incompatible { .. })
    ));
    std::fs::remove_file(&path).unwrap();
    // A real store, truncated: refused, never a SIGBUS.
    let t = TestStore::new("trunc", Config::default(), CHILD);
    t.host().put(b"a", b"b").unwrap();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(t.path())
        .unwrap();
    f.set_len(600 << 10).unwrap();
    let r = Client::open_in(&dir, &t.name);
    assert!(matches!(r, Err(Error::Corrupt { .. })), "{r:?}");
    // Another layout version: refused as incompatible.
    {
        use std::os::unix::fs::FileExt;
        let v2 = TestStore::new("version", Config::default(), CHILD);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(v2.path())
            .unwrap();
        f.write_all_at(&99u32.to_le_bytes(), 8).unwrap();
        let r = Client::open_in(&dir, &v2.name);
        assert!(
            matches!(&r, Err(Error::Incompatible { what }) if what.contains("version 99")),
            "{r:?}"
        );
    }
    // A symlink planted at a store path is refused.
    let link = format!("t-link-{}", std::process::id());
    std::os::unix::fs::symlink(t.path(), dir.join(format!("kvshm.{link}"))).unwrap();
    let r = Client::open_in(&dir, &link);
    std::fs::remove_file(dir.join(format!("kvshm.{link}"))).unwrap();
    assert!(matches!(r, Err(Error::PermissionDenied { .. })), "{r:?}");
}

/// Regression (issue 19): growth was only ever read by freshly attached processes. Here a
/// reader attached *before* the store grew reads what was written after, and then grows the
/// store itself as a writer; this process, attached all along, reads that back.
#[test]
fn growth_is_seen_by_clients_attached_before_it() {
    let t = kvshm_tests::TestStore::new(
        "growth-attached",
        kvshm::Config::default().initial_size(0).stripes(8),
        CHILD,
    );
    let flag = std::env::temp_dir().join(format!("kvshm-growth-flag-{}", t.name));
    let _ = std::fs::remove_file(&flag);
    let mut child = t.spawn("attached-growth", &[flag.to_str().unwrap()], &[]);
    kvshm_tests::wait_for(
        "the child to attach",
        std::time::Duration::from_secs(30),
        || std::fs::read_to_string(&flag).is_ok_and(|s| s == "attached"),
    );
    let before = t.host().stats();
    let n = 3000u32;
    for i in 0..n {
        t.host()
            .put(format!("g-{i}").as_bytes(), &vec![(i % 251) as u8; 1000])
            .unwrap();
    }
    let grown = t.host().stats();
    assert!(
        grown.committed_bytes > before.committed_bytes,
        "the store did not grow: the test proves nothing"
    );
    std::fs::write(format!("{}.n", flag.display()), n.to_string()).unwrap();
    std::fs::write(&flag, "go").unwrap();
    let st = child.wait_limit(std::time::Duration::from_secs(120));
    let lines = child.stdout_lines();
    assert!(st.success(), "{st:?} {lines:?}");
    assert_eq!(lines.last().map(String::as_str), Some("ok 3000"));
    assert!(
        t.host().stats().committed_bytes > grown.committed_bytes,
        "child did not grow it"
    );
    for i in 0..3000u32 {
        assert_eq!(
            t.host().get(format!("c-{i}").as_bytes()).unwrap(),
            Some(vec![(i % 13) as u8; 1000]),
            "c-{i}"
        );
    }
    let _ = std::fs::remove_file(&flag);
    let _ = std::fs::remove_file(format!("{}.n", flag.display()));
    t.assert_verified();
}

/// A `get_many` is one snapshot even when a `put_many` from another process lands between two
/// of its keys. The reader is frozen (SIGSTOP at a test point) after reading the second of
/// three keys on three stripes; a writer changes the second and third keys together; the
/// resumed reader must not return the old second value beside the new third one. The first
/// key sits on the lowest stripe and does not change, so a reader that validates only some of
/// its stripes returns the mixed batch.
#[test]
fn get_many_is_one_snapshot_when_a_put_many_lands_between_its_keys() {
    let t = TestStore::new("many-snap", Config::default().stripes(8), CHILD);
    let h = t.host();
    // Keys on three distinct stripes, the first on the lowest of them.
    let mut keys: Vec<String> = Vec::new();
    for i in 0.. {
        let k = format!("k{i}");
        let s = h.stripe_of_key(k.as_bytes());
        if keys.iter().all(|o| h.stripe_of_key(o.as_bytes()) != s) {
            keys.push(k);
        }
        if keys.len() == 3 {
            break;
        }
    }
    keys.sort_by_key(|k| h.stripe_of_key(k.as_bytes()));
    for k in &keys {
        h.put(k.as_bytes(), b"A").unwrap();
    }
    let args: Vec<&str> = keys.iter().map(|k| k.as_str()).collect();
    let mut reader = t.spawn_stopped("get-many", &args, "get_many.key_read@2", &[]);
    h.put_many(&[
        (keys[1].as_bytes(), &b"B"[..]),
        (keys[2].as_bytes(), &b"B"[..]),
    ])
    .unwrap();
    signal(&reader, libc::SIGCONT);
    assert!(reader.wait_limit(Duration::from_secs(30)).success());
    assert_eq!(reader.stdout_lines(), vec!["A", "B", "B"]);
}

/// Index tables double (a stripe's table outgrows its block) and are compacted (tombstones
/// dropped) while readers in other processes read stable keys: every get and `get_many` finds
/// every key with its value throughout.
#[test]
fn readers_elsewhere_see_every_key_while_tables_double_and_compact() {
    const STABLE: u64 = 500;
    const CHURN: u64 = 20_000;
    let t = TestStore::new(
        "double",
        Config::default().stripes(2).initial_size(0),
        CHILD,
    );
    let h = t.host();
    for i in 0..STABLE {
        h.put(format!("stable-{i}").as_bytes(), &pattern(i))
            .unwrap();
    }
    let stop = std::env::temp_dir().join(format!("kvshm-double-stop-{}", std::process::id()));
    let _ = std::fs::remove_file(&stop);
    let n = STABLE.to_string();
    let mut readers: Vec<ChildGuard> = (0..2)
        .map(|_| t.spawn("check-keys", &["stable", &n, stop.to_str().unwrap()], &[]))
        .collect();
    for r in &mut readers {
        wait_for("a reader to read", Duration::from_secs(30), || {
            !r.stdout_lines().is_empty()
        });
    }
    let mut compacted = 0;
    for round in 0..10 {
        for j in 0..CHURN {
            h.put(format!("churn-{round}-{j}").as_bytes(), b"x")
                .unwrap();
        }
        for j in 0..CHURN {
            assert!(h.remove(format!("churn-{round}-{j}").as_bytes()).unwrap());
        }
        for s in 0..2 {
            compacted += h.compact_stripe(s).unwrap() as usize;
        }
    }
    std::fs::write(&stop, b"stop").unwrap();
    for r in &mut readers {
        let st = r.wait_limit(Duration::from_secs(60));
        let lines = r.stdout_lines();
        assert!(st.success(), "a reader failed: {lines:?}");
        let reads: u64 = lines[1].trim_start_matches("reads ").parse().unwrap();
        assert!(reads > 0, "{lines:?}");
    }
    let _ = std::fs::remove_file(&stop);
    assert!(
        compacted >= 10,
        "tables were compacted only {compacted} times"
    );
    assert_eq!(h.len(), STABLE);
    t.assert_verified();
}
