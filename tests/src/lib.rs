//! Helpers for tests that run real processes against a store.
//!
//! Every test gets its own uniquely named store; [`TestStore`] removes it, and kills every
//! child it started, even when the test fails (`Drop`).
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub use kvshm;
use kvshm::{Config, Host};
use std::collections::{HashMap, HashSet};

/// Tiny deterministic PRNG (xorshift64*), so tests need no extra crate.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// The value a writer stores for version `ver`: the word `ver` repeated `1 + ver % 40` times.
/// A reader that sees words that differ has seen a torn value.
pub fn pattern(ver: u64) -> Vec<u8> {
    ver.to_le_bytes().repeat(1 + (ver % 40) as usize)
}

/// Whether `v` is a whole `pattern(..)`; returns its version.
pub fn check_pattern(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() % 8 != 0 {
        return None;
    }
    let w = u64::from_le_bytes(v[..8].try_into().ok()?);
    (pattern(w) == v).then_some(w)
}

/// A child process that is killed and reaped when dropped. Its stdout, when captured, goes to
/// a file (a pipe nobody reads until exit would block a chatty child).
#[derive(Debug)]
pub struct ChildGuard {
    pub child: Child,
    pub stdout_file: Option<PathBuf>,
}

impl ChildGuard {
    /// Wrap a child whose stdout is not captured.
    pub fn new(child: Child) -> ChildGuard {
        ChildGuard {
            child,
            stdout_file: None,
        }
    }

    /// Spawn `cmd` with stdout captured to a temporary file.
    pub fn spawn_captured(cmd: &mut Command) -> ChildGuard {
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("kvshm-child-out-{}-{n}", std::process::id()));
        let f = std::fs::File::create(&path).expect("stdout file");
        let child = cmd.stdout(Stdio::from(f)).spawn().expect("spawn child");
        ChildGuard {
            child,
            stdout_file: Some(path),
        }
    }
}

impl ChildGuard {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
    /// SIGKILL and reap.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        let _ = self.child.kill();
        self.child.wait().ok()
    }
    /// Wait for the child to end, failing the test after `limit` (a hang is a bug).
    pub fn wait_limit(&mut self, limit: Duration) -> ExitStatus {
        match self.wait_timeout(limit) {
            Some(st) => st,
            None => {
                self.kill();
                panic!(
                    "child {} still running after {limit:?} (deadlock?)",
                    self.child.id()
                );
            }
        }
    }
    /// Wait for the child to end, at most `limit`: `None` if it is still running (a hang, for
    /// the caller to report; the guard kills it on drop).
    pub fn wait_timeout(&mut self, limit: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                return Some(st);
            }
            if start.elapsed() > limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    /// Lines the child printed (after it ended).
    pub fn stdout_lines(&mut self) -> Vec<String> {
        if let Some(p) = &self.stdout_file {
            return std::fs::read_to_string(p)
                .unwrap_or_default()
                .lines()
                .map(String::from)
                .collect();
        }
        match self.child.stdout.take() {
            Some(out) => BufReader::new(out).lines().map_while(Result::ok).collect(),
            None => Vec::new(),
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
        if let Some(p) = &self.stdout_file {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Signal that ended a process, if a signal did.
pub fn killed_by(st: &ExitStatus) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    st.signal()
}

/// A uniquely named store hosted by this test process, removed on drop.
#[derive(Debug)]
pub struct TestStore {
    pub name: String,
    pub dir: PathBuf,
    pub host: Option<Host>,
    pub child_bin: PathBuf,
}

static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl TestStore {
    /// Create a store for test `tag`; `child_bin` is `env!("CARGO_BIN_EXE_kvshm-child")`.
    pub fn new(tag: &str, cfg: Config, child_bin: &str) -> TestStore {
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("t-{tag}-{}-{n}", std::process::id());
        let dir = kvshm::default_dir();
        let _ = std::fs::remove_file(dir.join(format!("kvshm.{name}")));
        let host = Host::create(&name, &cfg.dir(&dir)).expect("create test store");
        TestStore {
            name,
            dir,
            host: Some(host),
            child_bin: PathBuf::from(child_bin),
        }
    }

    pub fn host(&self) -> &Host {
        self.host.as_ref().expect("host")
    }

    /// Start `kvshm-child <cmd> <dir> <name> args...` with extra environment.
    pub fn spawn(&self, cmd: &str, args: &[&str], env: &[(&str, &str)]) -> ChildGuard {
        let mut c = Command::new(&self.child_bin);
        c.arg(cmd).arg(&self.dir).arg(&self.name).args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        c.stdin(Stdio::null()).stderr(Stdio::inherit());
        ChildGuard::spawn_captured(&mut c)
    }

    /// Run a child to completion and return its stdout lines (panics on failure).
    pub fn run(&self, cmd: &str, args: &[&str]) -> Vec<String> {
        let mut c = self.spawn(cmd, args, &[]);
        let st = c.wait_limit(Duration::from_secs(60));
        let lines = c.stdout_lines();
        assert!(
            st.success(),
            "kvshm-child {cmd} {args:?} failed: {st:?} {lines:?}"
        );
        lines
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(format!("kvshm.{}", self.name))
    }

    /// Assert the store verifies clean (recovering dead clients first); returns the report.
    pub fn assert_verified(&self) -> kvshm::Report {
        let r = self.host().verify().expect("verify");
        assert!(r.is_ok(), "verify found problems: {:#?}", r.problems);
        r
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        if let Some(h) = self.host.take() {
            let _ = h.release();
        }
        let _ = std::fs::remove_file(self.path());
    }
}

/// Path of a workspace binary (`kvhost`, `kvcli`), built next to the test executables with
/// the same profile. `cargo build` runs once per test process (a no-op when up to date), so a
/// single-package test run never uses a stale binary.
pub fn workspace_bin(name: &str) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile dir");
    let bin = profile_dir.join(name);
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if !built.iter().any(|b| b == name) {
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut c = Command::new(cargo);
        c.args(["build", "--quiet", "-p", name]);
        if release {
            c.arg("--release");
        }
        let st = c.status().expect("run cargo build");
        assert!(st.success() && bin.exists(), "could not build {name}");
        built.push(name.to_string());
    }
    bin
}

/// A unique store name for a test that does not use [`TestStore`]; the guard removes the
/// store file on drop.
#[derive(Debug)]
pub struct StoreName {
    pub name: String,
    pub dir: PathBuf,
}

impl StoreName {
    pub fn new(tag: &str) -> StoreName {
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        StoreName {
            name: format!("t-{tag}-{}-{n}", std::process::id()),
            dir: kvshm::default_dir(),
        }
    }
    pub fn path(&self) -> PathBuf {
        self.dir.join(format!("kvshm.{}", self.name))
    }
}

impl Drop for StoreName {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.path());
    }
}

/// Send a signal to a child.
pub fn signal(child: &ChildGuard, sig: i32) {
    let st = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.pid().to_string())
        .status();
    assert!(st.is_ok_and(|s| s.success()), "kill -{sig} failed");
}

/// The state letter of process `pid` from /proc (`T` when stopped), `?` when it is gone.
pub fn process_state(pid: i32) -> char {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit(')').next().and_then(|r| r.trim().chars().next()))
        .unwrap_or('?')
}

/// Poll `f` until it returns true, failing after `limit`.
pub fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Replay a storm writer's ack log (intent lines `P k v` / `D k` / `M k v ...`, each followed
/// by `OK` once acknowledged) into the set of values each key may hold now. Returns
/// (acknowledged ops, ops in flight at a kill).
pub fn replay(log: &str, model: &mut HashMap<String, HashSet<Option<u64>>>) -> (u64, u64) {
    let lines: Vec<&str> = log.lines().collect();
    let (mut acked, mut ambiguous) = (0, 0);
    let mut i = 0;
    while i < lines.len() {
        let intent = lines[i];
        if intent == "OK" || intent.is_empty() {
            i += 1;
            continue;
        }
        let ok = lines.get(i + 1) == Some(&"OK");
        let parts: Vec<&str> = intent.split(' ').collect();
        let parsed: Option<Vec<(String, Option<u64>)>> = match parts[0] {
            "P" if parts.len() == 3 => parts[2]
                .parse()
                .ok()
                .map(|v| vec![(parts[1].to_string(), Some(v))]),
            "D" if parts.len() == 2 => Some(vec![(parts[1].to_string(), None)]),
            "M" if parts.len() % 2 == 1 => parts[1..]
                .chunks(2)
                .map(|c| c[1].parse().ok().map(|v| (c[0].to_string(), Some(v))))
                .collect(),
            _ => None,
        };
        // A torn line (writer killed inside write()): that operation never started.
        let Some(changes) = parsed else {
            i += 1;
            continue;
        };
        // Within a batch the last value of a key wins.
        let mut last: HashMap<String, Option<u64>> = HashMap::new();
        for (k, v) in changes {
            last.insert(k, v);
        }
        for (k, v) in last {
            let e = model.entry(k).or_insert_with(|| HashSet::from([None]));
            if ok {
                e.clear();
            }
            e.insert(v);
        }
        if ok {
            acked += 1;
            i += 2;
        } else {
            ambiguous += 1;
            i += 1;
        }
    }
    (acked, ambiguous)
}

/// Check the store against a replayed model: every key holds one of its allowed values.
/// Returns the number of keys checked.
pub fn check_model(c: &kvshm::Client, model: &HashMap<String, HashSet<Option<u64>>>) -> usize {
    for (k, allowed) in model {
        let got = c
            .get(k.as_bytes())
            .unwrap()
            .map(|v| check_pattern(&v).expect("torn value"));
        assert!(
            allowed.contains(&got),
            "{k}: have {got:?}, allowed {allowed:?}"
        );
    }
    model.len()
}
