//! `kvcli` end to end: every command against a store hosted in this test, binary values via
//! stdin, JSON output parsed, exit codes, atomic `mset`, and a dump -> release -> load round
//! trip that brings back every byte.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Output, Stdio};

use kvshm::{Config, Host};
use kvshm_tests::{workspace_bin, TestStore};

const CHILD: &str = env!("CARGO_BIN_EXE_kvshm-child");

fn kvcli(t: &TestStore, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut c = Command::new(workspace_bin("kvcli"));
    c.args(["--name", &t.name, "--dir"]).arg(&t.dir).args(args);
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("run kvcli");
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

fn ok(t: &TestStore, args: &[&str]) -> String {
    let o = kvcli(t, args, None);
    assert!(
        o.status.success(),
        "kvcli {args:?}: {:?} {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn code(t: &TestStore, args: &[&str]) -> i32 {
    kvcli(t, args, None).status.code().unwrap_or(-1)
}

#[test]
fn every_command_works_and_exit_codes_are_distinct() {
    let t = TestStore::new(
        "cli",
        Config::default().max_value_len(1000).max_key_len(64),
        CHILD,
    );
    assert_eq!(ok(&t, &["set", "user:1", "alice"]), "OK\n");
    assert_eq!(ok(&t, &["get", "user:1"]), "alice"); // no newline when not a terminal
    assert_eq!(
        t.host().get(b"user:1").unwrap().as_deref(),
        Some(&b"alice"[..])
    );

    // binary values through stdin, read back byte for byte and as hex
    let bin: Vec<u8> = (0..=255u8).collect();
    let o = kvcli(&t, &["set", "blob", "-"], Some(&bin));
    assert!(o.status.success());
    assert_eq!(kvcli(&t, &["get", "blob"], None).stdout, bin);
    assert_eq!(ok(&t, &["get", "--hex", "blob"]).trim().len(), 512);
    let file = std::env::temp_dir().join(format!("kvcli-value-{}", t.name));
    std::fs::write(&file, b"from a file").unwrap();
    ok(&t, &["set", "filed", "--file", file.to_str().unwrap()]);
    assert_eq!(
        t.host().get(b"filed").unwrap().as_deref(),
        Some(&b"from a file"[..])
    );

    // exists, mget, mset, del/mdel
    assert_eq!(ok(&t, &["exists", "user:1"]), "true\n");
    assert_eq!(code(&t, &["exists", "nope"]), 1);
    assert_eq!(code(&t, &["get", "nope"]), 1);
    assert_eq!(ok(&t, &["mset", "a", "1", "b", "2"]), "OK\n");
    assert_eq!(ok(&t, &["mget", "a", "b", "zz"]), "1\n2\n(nil)\n");
    let long = "x".repeat(1001);
    assert_eq!(
        code(&t, &["mset", "c", "3", "d", &long]),
        3,
        "value over the limit"
    );
    assert_eq!(
        t.host().get(b"c").unwrap(),
        None,
        "failed mset left a key behind"
    );
    assert_eq!(
        code(&t, &["set", &"k".repeat(65), "v"]),
        3,
        "key over the limit"
    );
    assert_eq!(ok(&t, &["del", "a", "b", "never"]), "2\n");
    assert_eq!(ok(&t, &["mdel", "a"]), "0\n");

    // keys (glob, escaped binary keys), scan
    t.host().put(b"bin\x01key", b"v").unwrap();
    let mut keys: Vec<String> = ok(&t, &["keys"]).lines().map(String::from).collect();
    keys.sort();
    assert_eq!(keys, vec!["bin\\x01key", "blob", "filed", "user:1"]);
    assert_eq!(ok(&t, &["keys", "user:*"]), "user:1\n");
    assert_eq!(ok(&t, &["keys", "b[i]n*"]), "bin\\x01key\n");
    assert_eq!(
        kvcli(&t, &["--raw", "keys", "bin*"], None).stdout,
        b"bin\x01key\n"
    );
    assert_eq!(
        ok(&t, &["scan", "--prefix", "user", "--values"]),
        "user:1\talice\n"
    );
    assert_eq!(ok(&t, &["scan", "--limit", "2"]).lines().count(), 2);

    // stats: table and JSON
    let table = ok(&t, &["stats"]);
    assert!(
        table.contains("keys") && table.contains("clients"),
        "{table}"
    );
    let j: serde_json::Value = serde_json::from_str(&ok(&t, &["stats", "--json"])).unwrap();
    assert_eq!(j["keys"], 4);
    assert_eq!(j["host_pid"], std::process::id());
    assert!(j["committed_bytes"].as_u64().unwrap() >= j["used_bytes"].as_u64().unwrap());
    assert!(j["puts"].as_u64().unwrap() >= 5);
    assert_eq!(j["clients"].as_array().unwrap().len(), 1);
    assert_eq!(j["max_value_len"], 1000);

    // watch (two refreshes), verify
    let w = ok(&t, &["watch", "--count", "2", "--interval", "0.1"]);
    assert_eq!(w.matches("gets/s").count(), 2);
    assert!(ok(&t, &["verify"]).starts_with("ok: 4 keys"));

    // error exit codes: store missing (2), release needs --yes
    let mut c = Command::new(workspace_bin("kvcli"));
    let o = c
        .args(["--name", "no-such-store-here", "get", "k"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("store not found"));
    assert_eq!(code(&t, &["release"]), 5);
    let _ = std::fs::remove_file(&file);
}

#[test]
fn a_full_store_gives_exit_code_4() {
    let t = TestStore::new(
        "clifull",
        Config::default()
            .max_size(4 << 20)
            .initial_size(0)
            .stripes(4),
        CHILD,
    );
    let v = vec![7u8; 100_000];
    let mut i = 0;
    loop {
        match t.host().put(format!("k{i}").as_bytes(), &v) {
            Ok(()) => i += 1,
            Err(kvshm::Error::StoreFull { .. }) => break,
            Err(e) => panic!("filling failed with {e} instead of StoreFull"),
        }
    }
    // The same put again, from kvcli. (Not just any key: "full" is per operation - a key whose
    // stripe's table has room can still take the record block the failed put gave back.)
    let o = kvcli(&t, &["set", &format!("k{i}"), "-"], Some(&v));
    assert_eq!(
        o.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Issue 14: the same full store as a cache. `kvcli eviction` sets the policy for every
    // process; the set that failed succeeds, and so do as many more as the store holds.
    assert_eq!(ok(&t, &["eviction"]), "noeviction (0 evicted)\n");
    assert_eq!(code(&t, &["eviction", "allkeys-lfu"]), 2);
    assert_eq!(ok(&t, &["eviction", "allkeys-lru"]), "OK\n");
    assert_eq!(t.host().eviction(), kvshm::Policy::AllKeysLru);
    let mut fewest = u64::MAX;
    for j in i..2 * i + 5 {
        let o = kvcli(&t, &["set", &format!("k{j}"), "-"], Some(&v));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        fewest = fewest.min(t.host().len());
    }
    let evicted = t.host().evicted();
    assert!(evicted >= i as u64, "{evicted}");
    // Each round evicts about a chunk's worth, not a fixed count of these 100 KB values.
    assert!(
        fewest + 3 >= i as u64,
        "{fewest} keys left of {i} at one point"
    );
    assert!(ok(&t, &["stats"]).contains(&format!("{evicted} (policy allkeys-lru)")));
}

#[test]
fn dump_release_load_round_trips_every_byte() {
    let t = TestStore::new("clidump", Config::default(), CHILD);
    let mut want = BTreeMap::new();
    for i in 0..3000u32 {
        let k = [b"k".as_slice(), &i.to_le_bytes()].concat();
        let v: Vec<u8> = (0..(i % 700))
            .map(|j| (i.wrapping_mul(31) + j) as u8)
            .collect();
        t.host().put(&k, &v).unwrap();
        want.insert(k, v);
    }
    let snap = std::env::temp_dir().join(format!("kvcli-{}.snap", t.name));
    ok(&t, &["dump", snap.to_str().unwrap()]);
    // Release the store and load the dump into a fresh one.
    let host = Host::create(&format!("{}-2", t.name), &Config::default().dir(&t.dir)).unwrap();
    let t2 = TestStore {
        name: format!("{}-2", t.name),
        dir: t.dir.clone(),
        host: Some(host),
        child_bin: t.child_bin.clone(),
    };
    let o = kvcli(&t, &["release", "--yes"], None);
    assert_eq!(
        o.status.code(),
        Some(5),
        "release must refuse while a host serves the store"
    );
    let msg = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(
        msg.contains(&format!("hosted by pid {}", std::process::id())),
        "{msg}"
    );
    let mut t = t;
    drop(t.host.take()); // stop hosting (the data stays)
    assert_eq!(
        ok(&t, &["release", "--yes"]).trim(),
        format!("released {}", t.name)
    );
    assert!(!t.path().exists());
    ok(&t2, &["load", snap.to_str().unwrap()]);
    let mut got = BTreeMap::new();
    t2.host()
        .scan(b"", |k, v| {
            got.insert(k.to_vec(), v.to_vec());
            true
        })
        .unwrap();
    assert!(got == want, "loaded data differs");
    // load --replace drops keys that are not in the snapshot
    t2.host().put(b"extra", b"x").unwrap();
    ok(&t2, &["load", "--replace", snap.to_str().unwrap()]);
    assert_eq!(t2.host().get(b"extra").unwrap(), None);
    assert_eq!(t2.host().len(), 3000);
    // a damaged snapshot is refused and changes nothing
    let mut bytes = std::fs::read(&snap).unwrap();
    let n = bytes.len();
    bytes[n - 30] ^= 1;
    std::fs::write(&snap, &bytes).unwrap();
    t2.host().put(b"marker", b"kept").unwrap();
    assert_eq!(code(&t2, &["load", "--replace", snap.to_str().unwrap()]), 5);
    assert_eq!(
        t2.host().get(b"marker").unwrap().as_deref(),
        Some(&b"kept"[..])
    );
    let _ = std::fs::remove_file(&snap);
}

/// Issue 13 from the shell: `incr`, `append`, `get --version`, `set --if-version` /
/// `--if-absent` (exit 6 on a conflict, nothing changed), and `wait` in one process woken by a
/// `set` in another (exit 7 on its timeout).
#[test]
fn versions_counters_and_waiting_from_the_shell() {
    let t = TestStore::new("cli13", Config::default(), CHILD);
    assert_eq!(ok(&t, &["incr", "hits"]), "1\n");
    assert_eq!(ok(&t, &["incr", "hits", "41"]), "42\n");
    assert_eq!(ok(&t, &["incr", "hits", "-50"]), "-8\n");
    assert_eq!(ok(&t, &["get", "hits"]), "-8");
    assert_eq!(ok(&t, &["append", "log", "-a"]), "2\n");
    assert_eq!(ok(&t, &["append", "log", "bc"]), "4\n");
    assert_eq!(code(&t, &["incr", "log"]), 5, "incr of a non-integer");
    assert_eq!(ok(&t, &["get", "log"]), "-abc");
    let v: u64 = ok(&t, &["get", "--version", "hits"])
        .trim()
        .parse()
        .unwrap();
    assert_eq!(Some(v), t.host().version(b"hits").unwrap());
    assert_eq!(code(&t, &["get", "--version", "nope"]), 1);
    assert_eq!(
        code(
            &t,
            &["set", "hits", "0", "--if-version", &(v + 1).to_string()]
        ),
        6
    );
    assert_eq!(code(&t, &["set", "hits", "0", "--if-absent"]), 6);
    assert_eq!(ok(&t, &["get", "hits"]), "-8", "a conflict changed the key");
    assert_eq!(
        ok(&t, &["set", "hits", "0", "--if-version", &v.to_string()]),
        "OK\n"
    );
    assert_eq!(ok(&t, &["set", "new", "1", "--if-absent"]), "OK\n");
    // A waiter in one kvcli process, a writer in another.
    // (A guard: killed and reaped even if an assertion fails before it exits.)
    let mut w = Command::new(workspace_bin("kvcli"));
    w.args(["--name", &t.name, "--dir"])
        .arg(&t.dir)
        .args(["wait", "hits", "--timeout", "30s"]);
    let mut waiter = kvshm_tests::ChildGuard::spawn_captured(&mut w);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(ok(&t, &["set", "hits", "7"]), "OK\n");
    let st = waiter.wait_limit(std::time::Duration::from_secs(30));
    assert!(st.success(), "{st:?}");
    let nv: u64 = waiter.stdout_lines()[0].trim().parse().unwrap();
    assert_eq!(Some(nv), t.host().version(b"hits").unwrap());
    assert_eq!(code(&t, &["wait", "hits", "--timeout", "200ms"]), 7);
    // The store's revision counts every committed write: 3 incr, 2 append, 3 set (failed ones
    // and conflicts change nothing).
    let j: serde_json::Value = serde_json::from_str(&ok(&t, &["stats", "--json"])).unwrap();
    assert_eq!(j["revision"], 8, "{j}");
    assert!(t.host().verify().unwrap().is_ok());
}

/// Issue 14 (expiry) from the shell: `set --ttl`, `ttl`, `expire`, `persist`, and an expired
/// key gone for `get` in another process; stats count what the host's pass freed.
#[test]
fn keys_expire_from_the_shell() {
    let t = TestStore::new("cli14", Config::default(), CHILD);
    assert_eq!(ok(&t, &["set", "s", "v", "--ttl", "150ms"]), "OK\n");
    let left: f64 = ok(&t, &["ttl", "s"]).trim().parse().unwrap();
    assert!(left > 0.0 && left <= 0.15, "{left}");
    assert_eq!(ok(&t, &["set", "p", "v"]), "OK\n");
    assert_eq!(ok(&t, &["ttl", "p"]), "persistent\n");
    assert_eq!(ok(&t, &["expire", "p", "1h"]), "OK\n");
    let left: f64 = ok(&t, &["ttl", "p"]).trim().parse().unwrap();
    assert!(left > 3500.0, "{left}");
    assert_eq!(ok(&t, &["persist", "p"]), "true\n");
    assert_eq!(ok(&t, &["persist", "p"]), "false\n");
    assert_eq!(code(&t, &["expire", "missing", "1s"]), 1);
    assert_eq!(code(&t, &["ttl", "missing"]), 1);
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(
        code(&t, &["get", "s"]),
        1,
        "an expired key is gone for every process"
    );
    assert_eq!(code(&t, &["ttl", "s"]), 1);
    t.host().expire_pass().unwrap();
    let j: serde_json::Value = serde_json::from_str(&ok(&t, &["stats", "--json"])).unwrap();
    assert_eq!(j["expired"], 1, "{j}");
}

/// `kvcli changes` follows the change log live: writes of other processes, one line each,
/// in order, with removes and expiry times; a store without a log is a clear error.
#[test]
fn changes_follows_every_write_as_it_happens() {
    let t = TestStore::new("cli-changes", Config::default().changelog(1 << 20), CHILD);
    t.host().put(b"before", b"not shown").unwrap();
    let mut c = Command::new(workspace_bin("kvcli"));
    c.args(["--name", &t.name, "--dir"])
        .arg(&t.dir)
        .args(["changes", "--from-oldest", "--count", "5"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = c.spawn().expect("run kvcli changes");
    // From the oldest write on: the one before it started, then these as they come.
    let h = t.host();
    h.put(b"a", b"1").unwrap();
    h.put_with_ttl(b"b\x01", b"2", std::time::Duration::from_secs(100))
        .unwrap();
    h.remove(b"a").unwrap();
    h.incr(b"n", 5).unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    let lines: Vec<Vec<&str>> = text
        .lines()
        .skip(1)
        .map(|l| l.split(' ').skip(1).collect())
        .collect();
    assert!(text.starts_with("1 set before not shown\n"), "{text}");
    assert_eq!(lines.len(), 4, "{text}");
    assert_eq!(lines[0], ["set", "a", "1"]);
    assert_eq!(&lines[1][..3], ["set", "b\\x01", "2"]);
    assert_eq!(lines[1][3], "expires");
    assert_eq!(lines[2], ["del", "a"]);
    assert_eq!(lines[3], ["set", "n", "5"]);
    let none = TestStore::new("cli-nochanges", Config::default(), CHILD);
    let o = kvcli(&none, &["changes", "--count", "1"], None);
    assert_eq!(o.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--changelog"));
}
