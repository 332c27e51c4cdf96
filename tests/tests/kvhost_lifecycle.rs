//! The `kvhost` daemon end to end, with the real binaries, one test per behaviour: start and
//! share, refuse a second host, recover a killed client by itself, stop and adopt, release and
//! restore from a snapshot, refuse a corrupt snapshot with nothing left behind.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use kvshm::Client;
use kvshm_tests::{killed_by, signal, wait_for, workspace_bin, ChildGuard, StoreName};

const CHILD: &str = env!("CARGO_BIN_EXE_kvshm-child");

fn start_host(store: &StoreName, snapshot: &Path, log: &Path) -> ChildGuard {
    start_host_with(store, snapshot, log, &[])
}

fn start_host_with(store: &StoreName, snapshot: &Path, log: &Path, extra: &[&str]) -> ChildGuard {
    let mut c = Command::new(workspace_bin("kvhost"));
    c.args(extra);
    c.args(["--name", &store.name, "--dir"])
        .arg(&store.dir)
        .arg("--snapshot")
        .arg(snapshot)
        .arg("--log-file")
        .arg(log)
        .args(["--stripes", "4", "--log-level", "debug"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    ChildGuard::new(c.spawn().expect("start kvhost"))
}

fn wait_hosted(store: &StoreName) {
    wait_for(
        "the host to serve the store",
        Duration::from_secs(30),
        || {
            Client::open_read_only_in(&store.dir, &store.name)
                .is_ok_and(|c| c.stats().host_pid.is_some())
        },
    );
}

fn child(store: &StoreName, args: &[&str], env: &[(&str, &str)]) -> ChildGuard {
    let mut c = Command::new(CHILD);
    c.args(&args[..1])
        .arg(&store.dir)
        .arg(&store.name)
        .args(&args[1..]);
    for (k, v) in env {
        c.env(k, v);
    }
    c.stdin(Stdio::null());
    ChildGuard::spawn_captured(&mut c)
}

fn binary_value(i: u32) -> Vec<u8> {
    (0..=255u8)
        .cycle()
        .skip(i as usize)
        .take(300 + i as usize)
        .collect()
}

/// A store name, a scratch directory with the snapshot and log file, removed on drop.
struct Fixture {
    store: StoreName,
    tmp: std::path::PathBuf,
    snap: std::path::PathBuf,
    log: std::path::PathBuf,
}

impl Fixture {
    fn new(tag: &str) -> Fixture {
        let store = StoreName::new(tag);
        let tmp = std::env::temp_dir().join(format!("kvhost-test-{}", store.name));
        std::fs::create_dir_all(&tmp).unwrap();
        Fixture {
            snap: tmp.join("store.snap"),
            log: tmp.join("kvhost.log"),
            store,
            tmp,
        }
    }

    /// Start a host and wait until it serves the store.
    fn host(&self) -> ChildGuard {
        let h = start_host(&self.store, &self.snap, &self.log);
        wait_hosted(&self.store);
        h
    }

    fn client(&self) -> Client {
        Client::open_in(&self.store.dir, &self.store.name).unwrap()
    }

    /// 200 binary values and one small key.
    fn fill(&self, c: &Client) {
        for i in 0..200u32 {
            c.put(format!("bin-{i}").as_bytes(), &binary_value(i))
                .unwrap();
        }
        c.put(b"crash-key", b"kept").unwrap();
    }

    fn assert_filled(&self, c: &Client) {
        assert_eq!(c.len(), 201);
        for i in 0..200u32 {
            assert_eq!(
                c.get(format!("bin-{i}").as_bytes()).unwrap().unwrap(),
                binary_value(i)
            );
        }
        assert_eq!(c.get(b"crash-key").unwrap().as_deref(), Some(&b"kept"[..]));
    }

    fn kvhost(&self, args: &[&str]) -> std::process::Output {
        Command::new(workspace_bin("kvhost"))
            .args(args)
            .arg(&self.store.name)
            .arg("--dir")
            .arg(&self.store.dir)
            .output()
            .unwrap()
    }

    /// Every needle appears in the host's log within 30 s (the host logs after the state a test
    /// can observe: e.g. "adopted existing store" after it already serves the store).
    fn assert_logged(&self, needles: &[&str]) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let missing: Vec<&&str> = needles.iter().filter(|n| !text.contains(**n)).collect();
            if missing.is_empty() {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "log lacks {missing:?}:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.tmp);
    }
}

fn stop(mut host: ChildGuard) {
    signal(&host, libc::SIGTERM);
    assert!(host.wait_limit(Duration::from_secs(30)).success());
}

#[test]
fn a_hosted_store_is_shared_by_processes() {
    let f = Fixture::new("kvh-share");
    let host = f.host();
    let me = f.client();
    f.fill(&me);
    let mut c = child(&f.store, &["get", "bin-7"], &[]);
    assert!(c.wait_limit(Duration::from_secs(30)).success());
    f.assert_logged(&["attached"]);
    drop(me);
    stop(host);
}

#[test]
fn a_second_host_is_refused_with_exit_6() {
    let f = Fixture::new("kvh-second");
    let host = f.host();
    let second = Command::new(workspace_bin("kvhost"))
        .args(["--name", &f.store.name, "--dir"])
        .arg(&f.store.dir)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(6), "{err}");
    assert!(err.contains("already hosted"), "{err}");
    stop(host);
}

#[test]
fn the_host_recovers_a_killed_client_by_itself() {
    let f = Fixture::new("kvh-recover");
    let host = f.host();
    let me = f.client();
    me.put(b"crash-key", b"old").unwrap();
    let recoveries_before = me.stats().recoveries;
    let mut victim = child(
        &f.store,
        &["crash", "put-update"],
        &[("KVSHM_CRASH_AT", "put.replaced")],
    );
    assert_eq!(
        killed_by(&victim.wait_limit(Duration::from_secs(30))),
        Some(libc::SIGKILL)
    );
    wait_for(
        "the host to recover the dead client",
        Duration::from_secs(30),
        || {
            let s = me.stats();
            s.recoveries > recoveries_before && s.clients.iter().all(|c| c.alive)
        },
    );
    let v = me.get(b"crash-key").unwrap().unwrap();
    assert!(v == b"old" || v == b"new-value-that-is-longer", "{v:?}");
    me.put(b"crash-key", b"after-recovery").unwrap();
    f.assert_logged(&["recovered dead client"]);
    drop(me);
    stop(host);
}

#[test]
fn sigterm_keeps_the_data_and_a_restarted_host_adopts_it() {
    let f = Fixture::new("kvh-adopt");
    let host = f.host();
    let me = f.client();
    f.fill(&me);
    stop(host);
    assert!(f.store.path().exists(), "SIGTERM must keep the store");
    assert!(f.snap.exists(), "SIGTERM must write the final snapshot");
    let host = f.host();
    f.assert_filled(&me);
    f.assert_logged(&["snapshot written", "adopted existing store"]);
    drop(me);
    stop(host);
}

#[test]
fn a_released_store_comes_back_from_its_snapshot() {
    let f = Fixture::new("kvh-restore");
    let host = f.host();
    let me = f.client();
    f.fill(&me);
    drop(me);
    stop(host);
    let out = f.kvhost(&["release"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!f.store.path().exists());
    let host = f.host();
    // Attach as soon as the host is seen: the store gets its name only once the snapshot is
    // loaded (a regression of session 8: CI attached before the load and found 0 keys).
    let me = f.client();
    f.assert_filled(&me);
    drop(me);
    stop(host);
    let status = f.kvhost(&["status"]);
    assert_eq!(status.status.code(), Some(1), "status of an unhosted store");
    assert!(String::from_utf8_lossy(&status.stdout).contains("keys:     201"));
    f.assert_logged(&["loaded snapshot"]);
}

#[test]
fn a_corrupt_snapshot_is_refused_and_leaves_no_store() {
    let f = Fixture::new("kvh-badsnap");
    let host = f.host();
    f.fill(&f.client());
    stop(host);
    assert!(f.kvhost(&["release"]).status.success());
    let mut bytes = std::fs::read(&f.snap).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&f.snap, &bytes).unwrap();
    let out = Command::new(workspace_bin("kvhost"))
        .args(["--name", &f.store.name, "--dir"])
        .arg(&f.store.dir)
        .arg("--snapshot")
        .arg(&f.snap)
        .args(["--stripes", "4"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(7),
        "corrupt snapshot must be refused"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad snapshot"), "{err}");
    assert!(
        !f.store.path().exists(),
        "store left behind after a refused snapshot"
    );
    let hidden: Vec<_> = std::fs::read_dir(&f.store.dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".loading-"))
        .collect();
    assert!(
        hidden.is_empty(),
        "half-loaded store left behind: {hidden:?}"
    );
}

/// Regression (issue 19): kvhost exited 0 when its final snapshot failed.
#[test]
fn a_failed_final_snapshot_is_a_non_zero_exit_and_keeps_the_store() {
    let f = Fixture::new("kvh-finalsnap");
    let dir = f.tmp.join("gone");
    std::fs::create_dir_all(&dir).unwrap();
    let snap = dir.join("store.snap");
    let mut host = start_host(&f.store, &snap, &f.log);
    wait_hosted(&f.store);
    f.client().put(b"k", b"v").unwrap();
    std::fs::remove_dir_all(&dir).unwrap(); // the snapshot cannot be written any more
    signal(&host, libc::SIGTERM);
    let st = host.wait_limit(Duration::from_secs(30));
    assert_eq!(
        st.code(),
        Some(7),
        "exit status after a failed final snapshot"
    );
    assert!(f.store.path().exists(), "the store must be kept");
    assert_eq!(f.client().get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
    let out = f.kvhost(&["release"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The pairs of a snapshot file, read with the library's reader.
fn snapshot_pairs(path: &Path) -> std::collections::BTreeMap<Vec<u8>, Vec<u8>> {
    let bytes = std::fs::read(path).unwrap();
    let mut out = std::collections::BTreeMap::new();
    kvshm::read_snapshot(
        &bytes[..],
        bytes.len() as u64,
        (1 << 16, 1 << 30),
        |k, v| {
            out.insert(k.to_vec(), v.to_vec());
            Ok(())
        },
    )
    .unwrap();
    out
}

/// SIGUSR1 and `kvcli snapshot` (a request through the store) each write a snapshot that holds
/// exactly what the store held (issue 19: only the final snapshot was checked, by count).
#[test]
fn requested_snapshots_hold_what_the_store_held() {
    let f = Fixture::new("kvh-snapreq");
    let host = f.host();
    let me = f.client();
    f.fill(&me);
    let count = || me.last_snapshot().1;
    // SIGUSR1
    let before = count();
    signal(&host, libc::SIGUSR1);
    wait_for("the SIGUSR1 snapshot", Duration::from_secs(30), || {
        count() > before
    });
    let mut want: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = (0..200u32)
        .map(|i| (format!("bin-{i}").into_bytes(), binary_value(i)))
        .collect();
    want.insert(b"crash-key".to_vec(), b"kept".to_vec());
    assert_eq!(snapshot_pairs(&f.snap), want, "SIGUSR1 snapshot content");
    // A request through the store, after a change.
    me.remove(b"bin-0").unwrap();
    me.put(b"added", b"later").unwrap();
    want.remove(&b"bin-0"[..]);
    want.insert(b"added".to_vec(), b"later".to_vec());
    let before = count();
    me.request_snapshot().unwrap();
    wait_for("the requested snapshot", Duration::from_secs(30), || {
        count() > before
    });
    assert_eq!(snapshot_pairs(&f.snap), want, "requested snapshot content");
    drop(me);
    stop(host);
    assert_eq!(snapshot_pairs(&f.snap), want, "final snapshot content");
}

/// Every value ever written to each key, from storm writers' ack logs (`P`, `M` and `S` lines;
/// whether acknowledged or not).
fn written_values(
    logs: &[String],
) -> std::collections::HashMap<String, std::collections::HashSet<u64>> {
    let mut out: std::collections::HashMap<String, std::collections::HashSet<u64>> =
        std::collections::HashMap::new();
    for log in logs {
        for line in kvshm_tests::whole_lines(log) {
            let p: Vec<&str> = line.split(' ').collect();
            let pairs: &[&str] = match p[0] {
                "P" | "M" => &p[1..],
                "S" if p.len() == 4 => &p[1..3],
                _ => continue,
            };
            for c in pairs.chunks(2) {
                if let [k, v] = c {
                    if let Ok(v) = v.parse() {
                        out.entry(k.to_string()).or_default().insert(v);
                    }
                }
            }
        }
    }
    out
}

/// `--snapshot-every` while writer processes change the store as fast as they can: each
/// periodic snapshot is a whole, valid file, and every pair in it is one a writer wrote (the
/// value whole, under its own key: no torn, mixed or invented value). The final snapshot after
/// the writers stop holds exactly the store.
#[test]
fn periodic_snapshots_under_concurrent_writes_hold_only_written_values() {
    let f = Fixture::new("kvh-snapevery");
    let host = start_host_with(&f.store, &f.snap, &f.log, &["--snapshot-every", "100ms"]);
    wait_hosted(&f.store);
    let me = f.client();
    let ack = |w: u32| f.tmp.join(format!("ack-{w}"));
    let mut writers: Vec<ChildGuard> = (0..2)
        .map(|w| {
            child(
                &f.store,
                &["writer", &w.to_string(), ack(w).to_str().unwrap()],
                &[],
            )
        })
        .collect();
    // Read the file again and again (every read must be one whole snapshot: it is replaced by
    // a rename, never written in place) until five periodic snapshots have come and gone.
    let mut snapshots: Vec<Vec<u8>> = Vec::new();
    let mut reads = 0u64;
    let first = me.last_snapshot().1;
    let start = std::time::Instant::now();
    while me.last_snapshot().1 < first + 5 || snapshots.len() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "only {} periodic snapshots in 60 s",
            me.last_snapshot().1 - first
        );
        if let Ok(bytes) = std::fs::read(&f.snap) {
            reads += 1;
            if snapshots.last() != Some(&bytes) {
                snapshots.push(bytes);
            }
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    eprintln!(
        "{reads} reads of the snapshot file, {} distinct contents",
        snapshots.len()
    );
    for w in &mut writers {
        assert!(
            w.child.try_wait().unwrap().is_none(),
            "a writer died: {:?}",
            w.stdout_lines()
        );
        w.kill();
    }
    let logs: Vec<String> = (0..2)
        .map(|w| std::fs::read_to_string(ack(w)).unwrap())
        .collect();
    let written = written_values(&logs);
    let mut pairs_checked = 0;
    for (i, bytes) in snapshots.iter().enumerate() {
        kvshm::read_snapshot(
            &bytes[..],
            bytes.len() as u64,
            (1 << 16, 1 << 30),
            |k, v| {
                let k = String::from_utf8(k.to_vec()).expect("a key no writer wrote");
                let ver = kvshm_tests::check_pattern(v)
                    .unwrap_or_else(|| panic!("snapshot {i}: {k} holds a torn value"));
                assert!(
                    written.get(&k).is_some_and(|vs| vs.contains(&ver)),
                    "snapshot {i}: {k} holds {ver:#x}, which no writer wrote to it"
                );
                pairs_checked += 1;
                Ok(())
            },
        )
        .unwrap_or_else(|e| panic!("snapshot {i} is not a valid snapshot: {e}"));
    }
    assert!(
        pairs_checked > 100,
        "snapshots were nearly empty ({pairs_checked} pairs)"
    );
    // Writers stopped: the final snapshot is exactly the store.
    let mut want = std::collections::BTreeMap::new();
    me.scan(b"", |k, v| {
        want.insert(k.to_vec(), v.to_vec());
        true
    })
    .unwrap();
    drop(me);
    stop(host);
    assert_eq!(snapshot_pairs(&f.snap), want, "final snapshot content");
}
