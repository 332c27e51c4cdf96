//! Processes that fork with a client open, and operations that panic inside a locked section
//! (issue 11, items 7 and 12). Real processes: `kvshm-child` forks and panics.

use std::time::{Duration, Instant};

use kvshm::Config;
use kvshm_tests::{killed_by, wait_for, TestStore};

const CHILD: &str = env!("CARGO_BIN_EXE_kvshm-child");

/// Kills a process on drop (a grandchild the test learns about by its pid).
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: signalling a pid this test started (through its child); harmless if gone.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(self.0, libc::SIGKILL);
        }
    }
}

fn alive(pid: i32) -> bool {
    !matches!(kvshm_tests::process_state(pid), 'Z' | 'X' | '?')
}

/// Run `f` on another thread; `None` if it has not finished by `limit` (it is left running:
/// a hang is what the test reports).
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).ok()
}

#[test]
fn a_forked_child_gets_forked_from_the_inherited_client_and_works_with_its_own() {
    let t = TestStore::new("fork-check", Config::default().stripes(8), CHILD);
    let mut c = t.spawn("fork", &["check"], &[]);
    let st = c.wait_limit(Duration::from_secs(60));
    let lines = c.stdout_lines();
    assert!(st.success(), "{st:?} {lines:?}");
    assert_eq!(
        lines.last().map(String::as_str),
        Some("child ok"),
        "{lines:?}"
    );
    let h = t.host();
    assert_eq!(
        h.get(b"from-forked-child").unwrap().as_deref(),
        Some(&b"2"[..])
    );
    assert_eq!(h.get(b"after-fork").unwrap().as_deref(), Some(&b"3"[..]));
    t.assert_verified();
}

/// Regression: the liveness lock is an OFD lock, shared by a forked child, so a client killed
/// holding a stripe lock looked alive for as long as its child lived (a put waited 8 s).
#[test]
fn a_client_killed_holding_a_lock_is_recovered_while_its_forked_child_lives() {
    let t = TestStore::new("fork-crash", Config::default().stripes(8), CHILD);
    t.host().put(b"crash-key", b"old").unwrap();
    let mut victim = t.spawn(
        "fork",
        &["sleep-then-crash"],
        &[("KVSHM_CRASH_AT", "put.replaced")],
    );
    let st = victim.wait_limit(Duration::from_secs(60));
    assert_eq!(killed_by(&st), Some(libc::SIGKILL), "{st:?}");
    let lines = victim.stdout_lines();
    let pid: i32 = lines
        .iter()
        .find_map(|l| l.strip_prefix("child "))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no child pid in {lines:?}"));
    let _grandchild = KillOnDrop(pid);
    assert!(alive(pid), "the forked child should still be alive");
    // Another process's put on the dead client's stripe: it must recover the dead owner while
    // the forked child (which inherited the store descriptors) still lives.
    let (dir, name) = (t.dir.clone(), t.name.clone());
    let started = Instant::now();
    let r = within(Duration::from_secs(60), move || {
        kvshm::Client::open_in(&dir, &name)
            .and_then(|c| c.put(b"crash-key", b"after").map(|_| c))
            .map(|c| c.get(b"crash-key"))
    });
    let waited = started.elapsed();
    assert!(
        alive(pid),
        "the forked child ended before the put: the test proves nothing"
    );
    let got = r.expect("put hung: the dead client looked alive through its forked child");
    assert_eq!(got.unwrap().unwrap().as_deref(), Some(&b"after"[..]));
    eprintln!(
        "put on the dead client's stripe completed in {waited:?} with its forked child alive"
    );
    t.assert_verified();
}

/// Regression (item 12): a panic inside a locked section left the lock with a live owner
/// (the process, kept alive by `catch_unwind`), and every other process waited forever.
#[test]
fn a_panic_inside_a_locked_section_does_not_wedge_other_processes() {
    let t = TestStore::new("panic", Config::default().stripes(8), CHILD);
    t.host().put(b"crash-key", b"old").unwrap();
    let flag = std::env::temp_dir().join(format!("kvshm-panic-flag-{}", t.name));
    let _ = std::fs::remove_file(&flag);
    let mut holder = t.spawn(
        "panic-put",
        &[flag.to_str().unwrap()],
        &[
            ("KVSHM_CRASH_AT", "put.replaced"),
            ("KVSHM_CRASH_ACTION", "panic"),
        ],
    );
    wait_for("the put to panic", Duration::from_secs(60), || {
        std::fs::read_to_string(&flag).is_ok_and(|s| s == "continued")
            || holder.child.try_wait().ok().flatten().is_some()
    });
    assert!(
        holder.child.try_wait().unwrap().is_none(),
        "the panicking process should live on: {:?}",
        holder.stdout_lines()
    );
    let (dir, name) = (t.dir.clone(), t.name.clone());
    let r = within(Duration::from_secs(60), move || {
        kvshm::Client::open_in(&dir, &name).and_then(|c| c.put(b"crash-key", b"after"))
    });
    assert!(
        matches!(r, Some(Ok(()))),
        "a put on the panicked stripe hung or failed: {r:?}"
    );
    let h = t.host();
    assert_eq!(h.get(b"crash-key").unwrap().as_deref(), Some(&b"after"[..]));
    assert_eq!(h.get(b"after-panic").unwrap().as_deref(), Some(&b"ok"[..]));
    holder.kill();
    let _ = std::fs::remove_file(&flag);
    t.assert_verified();
}
