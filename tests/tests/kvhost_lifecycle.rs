//! The `kvhost` daemon end to end, with the real binaries: start, share, refuse a second host,
//! recover a killed client by itself, stop and adopt, release, restore from a snapshot, and
//! refuse a corrupt snapshot with nothing changed.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use kvshm::Client;
use kvshm_tests::{killed_by, signal, wait_for, workspace_bin, ChildGuard, StoreName};

const CHILD: &str = env!("CARGO_BIN_EXE_kvshm-child");

fn start_host(store: &StoreName, snapshot: &Path, log: &Path) -> ChildGuard {
    let mut c = Command::new(workspace_bin("kvhost"));
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

#[test]
fn kvhost_lifecycle() {
    let store = StoreName::new("kvhost");
    let tmp = std::env::temp_dir().join(format!("kvhost-test-{}", store.name));
    std::fs::create_dir_all(&tmp).unwrap();
    let snap = tmp.join("store.snap");
    let log = tmp.join("kvhost.log");

    // start -> a client in another process (this one) and a child share the store
    let mut host = start_host(&store, &snap, &log);
    wait_hosted(&store);
    let me = Client::open_in(&store.dir, &store.name).unwrap();
    for i in 0..200u32 {
        me.put(format!("bin-{i}").as_bytes(), &binary_value(i))
            .unwrap();
    }
    me.put(b"crash-key", b"old").unwrap();
    let mut c = child(&store, &["get", "bin-7"], &[]);
    assert!(c.wait_limit(Duration::from_secs(30)).success());

    // a second host for the same store is refused with its own exit code
    let second = Command::new(workspace_bin("kvhost"))
        .args(["--name", &store.name, "--dir"])
        .arg(&store.dir)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(
        second.status.code(),
        Some(6),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert!(String::from_utf8_lossy(&second.stderr).contains("already hosted"));

    // a client SIGKILLed while holding a stripe lock is recovered by the host alone
    let recoveries_before = me.stats().recoveries;
    let mut victim = child(
        &store,
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

    // SIGTERM: final snapshot, exit 0, data left in place
    signal(&host, libc::SIGTERM);
    assert!(host.wait_limit(Duration::from_secs(30)).success());
    assert!(store.path().exists());
    assert!(snap.exists());

    // restart adopts the store with all data
    let mut host = start_host(&store, &snap, &log);
    wait_hosted(&store);
    assert_eq!(me.get(b"bin-199").unwrap().unwrap(), binary_value(199));
    assert_eq!(
        me.get(b"crash-key").unwrap().as_deref(),
        Some(&b"after-recovery"[..])
    );
    signal(&host, libc::SIGTERM);
    assert!(host.wait_limit(Duration::from_secs(30)).success());

    // release -> store gone
    let out = Command::new(workspace_bin("kvhost"))
        .args(["release", &store.name, "--dir"])
        .arg(&store.dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!store.path().exists());
    drop(me);

    // restart with the snapshot -> all data back, binary values intact
    let mut host = start_host(&store, &snap, &log);
    wait_hosted(&store);
    let me = Client::open_in(&store.dir, &store.name).unwrap();
    assert_eq!(me.len(), 201);
    for i in 0..200u32 {
        assert_eq!(
            me.get(format!("bin-{i}").as_bytes()).unwrap().unwrap(),
            binary_value(i)
        );
    }
    assert_eq!(
        me.get(b"crash-key").unwrap().as_deref(),
        Some(&b"after-recovery"[..])
    );
    drop(me);
    signal(&host, libc::SIGTERM);
    assert!(host.wait_limit(Duration::from_secs(30)).success());
    let status = Command::new(workspace_bin("kvhost"))
        .args(["status", &store.name, "--dir"])
        .arg(&store.dir)
        .output()
        .unwrap();
    assert_eq!(status.status.code(), Some(1), "status of an unhosted store");
    assert!(String::from_utf8_lossy(&status.stdout).contains("keys:     201"));
    let out = Command::new(workspace_bin("kvhost"))
        .args(["release", &store.name, "--dir"])
        .arg(&store.dir)
        .output()
        .unwrap();
    assert!(out.status.success());

    // a corrupt snapshot is refused, and no store is left behind
    let mut bytes = std::fs::read(&snap).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&snap, &bytes).unwrap();
    let mut host = start_host(&store, &snap, &log);
    let st = host.wait_limit(Duration::from_secs(30));
    assert_eq!(st.code(), Some(7), "corrupt snapshot must be refused");
    assert!(
        !store.path().exists(),
        "store left behind after a refused snapshot"
    );

    let log_text = std::fs::read_to_string(&log).unwrap();
    for needle in [
        "attached",
        "recovered dead client",
        "snapshot written",
        "adopted existing store",
        "loaded snapshot",
        "bad snapshot",
    ] {
        assert!(
            log_text.contains(needle),
            "log lacks {needle:?}:\n{log_text}"
        );
    }
    let _ = std::fs::remove_dir_all(&tmp);
}
