//! Helpers for tests that run real processes against a store.
//!
//! Every test gets its own uniquely named store; [`TestStore`] removes it, and kills every
//! child it started, even when the test fails (`Drop`).
#![forbid(unsafe_code)]

pub mod resp;

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

/// A seed no other process of a run draws: the wall clock's nanoseconds, the process id and
/// `salt`, mixed. A storm writer's versions come from its seed, and a respawned writer must
/// not repeat an earlier incarnation's (once seeded with the pid XOR a few nanoseconds, two
/// incarnations with nearby pids drew the same numbers, and a rolled-back batch that repeated
/// an acknowledged one looked applied in part: sessions 18 and 21, docs/RELIABILITY.md).
pub fn fresh_seed(salt: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    // splitmix64's finaliser over the three.
    let mut z = nanos ^ (u64::from(std::process::id()) << 40) ^ salt.rotate_left(20);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
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

    /// Start `kvshm-child <cmd> ...` (with extra environment `env`) so that it stops itself
    /// (SIGSTOP) at crash point `point`, and wait until it has: a frozen process at a chosen
    /// step, resumed with [`signal`]`(child, SIGCONT)`.
    pub fn spawn_stopped(
        &self,
        cmd: &str,
        args: &[&str],
        point: &str,
        env: &[(&str, &str)],
    ) -> ChildGuard {
        let mut all = vec![("KVSHM_CRASH_AT", point), ("KVSHM_CRASH_ACTION", "stop")];
        all.extend_from_slice(env);
        let c = self.spawn(cmd, args, &all);
        wait_for(
            &format!("kvshm-child {cmd} to stop at {point}"),
            Duration::from_secs(60),
            || process_state(c.pid()) == 'T',
        );
        c
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
        let h = self.host();
        let r = h.verify().expect("verify");
        if !r.is_ok() {
            for p in r.problems.iter().take(8) {
                eprintln!("{}", self.describe_block(h, p));
            }
        }
        assert!(r.is_ok(), "verify found problems: {:#?}", r.problems);
        r
    }

    /// A failing test's store, copied into `$KVSHM_KEEP_FAILED` (when set) before it is
    /// removed: the segment as the failure left it, for `kvcli` and a debugger (a rare failure
    /// of a long campaign is otherwise gone with its store).
    fn keep_for_post_mortem(&self) {
        let Some(dir) = std::env::var_os("KVSHM_KEEP_FAILED") else {
            return;
        };
        // Under the store's own file name: `kvcli --dir $KVSHM_KEEP_FAILED --name <name> ...`
        // opens it.
        let (dir, path) = (PathBuf::from(dir), self.path());
        let dest = dir.join(path.file_name().unwrap_or(self.name.as_ref()));
        let kept = std::fs::create_dir_all(&dir).and_then(|_| std::fs::copy(&path, &dest));
        match kept {
            Ok(_) => eprintln!("failed test's store kept as {}", dest.display()),
            Err(e) => eprintln!("failed test's store not kept ({}): {e}", dest.display()),
        }
    }

    /// For a failing verify: what the block a problem names (`at 0x...`) holds, read from
    /// the segment file as a record (tag, lengths, version, meta, key, the value's start),
    /// and what the index holds for that key now.
    fn describe_block(&self, h: &kvshm::Client, problem: &str) -> String {
        use kvshm::layout::{RECORD_HEADER_SIZE, RECORD_LENS_OFFSET};
        use std::os::unix::fs::FileExt;
        let Some(off) = problem
            .strip_prefix("at 0x")
            .and_then(|r| r.split(':').next())
            .and_then(|x| u64::from_str_radix(x, 16).ok())
        else {
            return format!("{problem}: (no block offset)");
        };
        let Ok(f) = std::fs::File::open(self.path()) else {
            return format!("{problem}: (segment file not readable)");
        };
        let mut head = [0u8; RECORD_HEADER_SIZE as usize];
        if f.read_exact_at(&mut head, off).is_err() {
            return format!("{problem}: (beyond the file)");
        }
        let word =
            |i: u64| u64::from_le_bytes(head[i as usize..i as usize + 8].try_into().unwrap());
        let lens = word(RECORD_LENS_OFFSET);
        let (klen, vlen) = (lens & 0xffff_ffff, lens >> 32);
        let mut body = vec![0u8; klen.min(256) as usize + vlen.min(32) as usize];
        let _ = f.read_exact_at(&mut body, off + RECORD_HEADER_SIZE);
        let key = &body[..klen.min(256) as usize];
        let now = h
            .get_versioned(key)
            .map(|v| v.map(|(val, ver)| (String::from_utf8_lossy(&val).into_owned(), ver)));
        format!(
            "{problem}: tag {:#x} klen {klen} vlen {vlen} version {} meta {:#x} key {:?} value starts {:?}; the index has {now:?}",
            word(0),
            word(16),
            word(24),
            String::from_utf8_lossy(key),
            String::from_utf8_lossy(&body[key.len()..]),
        )
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.keep_for_post_mortem();
        }
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

/// The last `lines` lines of the log at `path` (or why it cannot be read).
pub fn log_tail(path: &std::path::Path, lines: usize) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| format!("({e})"));
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|l| l.to_string())
        .collect()
}

/// Print the last `lines` lines of the log at `path` to stderr, headed by `what` (for a
/// failing test: its servers' logs go with their temp files).
pub fn print_tail(what: &str, path: &std::path::Path, lines: usize) {
    eprintln!("--- the end of {what}'s log ({}):", path.display());
    for l in log_tail(path, lines) {
        eprintln!("{l}");
    }
}

/// Poll `f` until it returns true, failing after `limit`.
pub fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A read of a shared key: the version seen (`None`: absent) and CLOCK_MONOTONIC ns before
/// and after the get.
#[derive(Clone, Debug)]
pub struct SharedRead {
    pub seen: Option<u64>,
    pub start: u64,
    pub end: u64,
}

/// Everything done to one shared key, by every writer.
#[derive(Clone, Debug, Default)]
pub struct SharedHistory {
    pub ops: Vec<SharedOp>,
    pub reads: Vec<SharedRead>,
}

/// One write to a key that several writers share: its value (`None` for a remove) and the
/// CLOCK_MONOTONIC nanoseconds taken before it began and after it returned (`end` is `None`
/// when its writer was killed before it returned).
#[derive(Clone, Debug)]
pub struct SharedOp {
    pub value: Option<u64>,
    pub start: u64,
    pub end: Option<u64>,
}

/// One storm writer's ack log, replayed. The log holds, one per line:
/// - intent lines for the writer's own keys, `P k v` (put), `D k` (remove), `M k v ...`
///   (`put_many`), each followed by `OK` once acknowledged;
/// - intent lines for shared keys, `S k v t0` (put) and `X k t0` (remove), followed by
///   `OK t1` (t0, t1: CLOCK_MONOTONIC ns before the call and after it returned), and reads
///   of shared keys, `R k v|- t0 t1`;
/// - checkpoints `C k v|- ...`: the values of every own key that a new incarnation of the
///   writer read from the store when it started (after checking them against the log).
///
/// A line without its `OK` was in flight when the writer was killed; a torn line never began.
#[derive(Debug, Default)]
pub struct Replay {
    /// The values each own key may hold now.
    pub model: HashMap<String, HashSet<Option<u64>>>,
    /// Every write and read of shared keys, by key.
    pub shared: HashMap<String, SharedHistory>,
    /// Acknowledged operations (own and shared keys).
    pub acked: u64,
    /// Operations in flight when their writer was killed.
    pub ambiguous: u64,
    /// Checkpoints (a new incarnation of the writer checked every own key).
    pub checkpoints: u64,
    /// The own-key operation in flight at the last kill (the last value per key), until a
    /// checkpoint judges it.
    pub in_flight: Option<Vec<(String, Option<u64>)>>,
    /// What the log contradicts: a checkpoint value the log does not allow, a batch applied
    /// in part.
    pub problems: Vec<String>,
}

/// How the storm children end every line of their logs. A SIGKILL can cut a write(2) to a
/// regular file short where it crosses a page of the file (the kernel checks for a fatal
/// signal between pages), also a 30-byte line: a cut line that still has its fields (a number
/// cut to its first digits) would be read as something the writer never wrote. A line counts
/// only with its end mark ([`whole_lines`]).
pub const END: &str = " .\n";

/// The lines of a log that a kill did not cut, without their end mark.
pub fn whole_lines(log: &str) -> impl Iterator<Item = &str> {
    log.lines().filter_map(|l| l.strip_suffix(" ."))
}

fn parse_ver(s: &str) -> Option<Option<u64>> {
    if s == "-" {
        Some(None)
    } else {
        s.parse().ok().map(Some)
    }
}

impl Replay {
    /// Replay `log` (a whole log, or the part from a checkpoint on).
    pub fn feed(&mut self, log: &str) {
        let lines: Vec<&str> = whole_lines(log).collect();
        let mut i = 0;
        while i < lines.len() {
            let intent = lines[i];
            i += 1;
            let parts: Vec<&str> = intent.split(' ').collect();
            let ack = lines.get(i).filter(|l| l.starts_with("OK"));
            match parts[0] {
                "C" if parts.len() % 2 == 1 => {
                    let vals: Option<Vec<(String, Option<u64>)>> = parts[1..]
                        .chunks(2)
                        .map(|c| parse_ver(c[1]).map(|v| (c[0].to_string(), v)))
                        .collect();
                    if let Some(vals) = vals {
                        self.checkpoint(&vals);
                    }
                }
                "R" if parts.len() == 5 => {
                    let read = parse_ver(parts[2])
                        .zip(parts[3].parse().ok())
                        .zip(parts[4].parse().ok());
                    if let Some(((seen, start), end)) = read {
                        self.shared
                            .entry(parts[1].to_string())
                            .or_default()
                            .reads
                            .push(SharedRead { seen, start, end });
                    }
                }
                "S" | "X" => {
                    let parsed = match (parts[0], parts.len()) {
                        ("S", 4) => parts[2].parse().ok().map(Some).zip(parts[3].parse().ok()),
                        ("X", 3) => Some(None).zip(parts[2].parse().ok()),
                        _ => None,
                    };
                    let Some((value, start)) = parsed else {
                        continue; // torn: never began
                    };
                    let end = ack.and_then(|l| l.strip_prefix("OK ")?.parse().ok());
                    if end.is_some() {
                        self.acked += 1;
                        i += 1;
                    } else {
                        self.ambiguous += 1;
                    }
                    self.shared
                        .entry(parts[1].to_string())
                        .or_default()
                        .ops
                        .push(SharedOp { value, start, end });
                }
                "P" | "D" | "M" => {
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
                    let Some(changes) = parsed else {
                        continue; // torn: never began
                    };
                    // Within a batch the last value of a key wins.
                    let mut last: Vec<(String, Option<u64>)> = Vec::new();
                    for (k, v) in changes {
                        last.retain(|(o, _)| *o != k);
                        last.push((k, v));
                    }
                    let ok = ack.is_some();
                    // A pair whose key may already hold its value (an earlier incarnation of
                    // the writer wrote that very version) cannot tell whether the batch
                    // landed: the judge of a batch in flight leaves it out.
                    let telling: Vec<(String, Option<u64>)> = last
                        .iter()
                        .filter(|(k, v)| !self.model.get(k).map_or(v.is_none(), |e| e.contains(v)))
                        .cloned()
                        .collect();
                    for (k, v) in &last {
                        let e = self
                            .model
                            .entry(k.clone())
                            .or_insert_with(|| HashSet::from([None]));
                        if ok {
                            e.clear();
                        }
                        e.insert(*v);
                    }
                    if ok {
                        self.acked += 1;
                        i += 1;
                    } else {
                        self.ambiguous += 1;
                        self.in_flight = Some(telling);
                    }
                }
                _ => {} // an `OK` without its intent, an empty or torn line
            }
        }
    }

    /// Replay the part of a log from its last checkpoint on (`<log>.pos` gives the offset):
    /// the checkpoint it starts with is the base, taken as it is (the incarnation that wrote
    /// it checked it; the whole-log replay checks it again).
    pub fn resume(&mut self, tail: &str) {
        let (first, rest) = tail.split_once('\n').unwrap_or((tail, ""));
        if let Some(base) = first.strip_prefix("C").and_then(|b| b.strip_suffix(" .")) {
            let parts: Vec<&str> = base.split(' ').skip(1).collect();
            if parts.len() % 2 == 0 {
                for c in parts.chunks(2) {
                    if let Some(v) = parse_ver(c[1]) {
                        self.model.insert(c[0].to_string(), HashSet::from([v]));
                    }
                }
                self.feed(rest);
                return;
            }
        }
        self.feed(tail);
    }

    /// A checkpoint: the values its writer read; each must be one the log allows, and a batch
    /// in flight before it must show entirely or not at all.
    fn checkpoint(&mut self, vals: &[(String, Option<u64>)]) {
        let now: HashMap<&str, Option<u64>> = vals.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        if let Some(batch) = self.in_flight.take() {
            self.judge_batch(&batch, |k| now.get(k).copied().flatten());
        }
        for (k, v) in vals {
            let e = self
                .model
                .entry(k.clone())
                .or_insert_with(|| HashSet::from([None]));
            if !e.contains(v) {
                self.problems
                    .push(format!("checkpoint: {k} holds {v:?}, the log allows {e:?}"));
            }
            e.clear();
            e.insert(*v);
        }
        self.checkpoints += 1;
    }

    fn judge_batch(&mut self, batch: &[(String, Option<u64>)], now: impl Fn(&str) -> Option<u64>) {
        if batch.len() < 2 {
            return;
        }
        let applied: Vec<bool> = batch.iter().map(|(k, v)| now(k) == *v).collect();
        if applied.iter().any(|a| *a) && !applied.iter().all(|a| *a) {
            self.problems.push(format!(
                "batch in flight at a kill applied in part: {:?}",
                batch
                    .iter()
                    .zip(&applied)
                    .map(|((k, _), a)| format!("{k}:{}", if *a { "new" } else { "old" }))
                    .collect::<Vec<_>>()
            ));
        }
    }

    /// Check the store against this writer's own keys: every key holds a value the log allows,
    /// a batch in flight at the last kill shows entirely or not at all, and the batch keys
    /// `b<id>-*` (only ever written together) hold one version. Returns the problems (those
    /// of the log itself included).
    pub fn check_store(&mut self, c: &kvshm::Client) -> Vec<String> {
        let mut now: HashMap<String, Option<u64>> = HashMap::new();
        for (k, allowed) in &self.model {
            let got = match c.get(k.as_bytes()) {
                Ok(v) => v,
                Err(e) => {
                    self.problems.push(format!("{k}: get failed: {e}"));
                    continue;
                }
            };
            let ver = match got.as_deref().map(check_pattern) {
                Some(None) => {
                    self.problems.push(format!("{k}: torn value"));
                    continue;
                }
                Some(Some(v)) => Some(v),
                None => None,
            };
            if !allowed.contains(&ver) {
                self.problems
                    .push(format!("{k}: holds {ver:?}, the log allows {allowed:?}"));
            }
            now.insert(k.clone(), ver);
        }
        if let Some(batch) = self.in_flight.clone() {
            self.judge_batch(&batch, |k| now.get(k).copied().flatten());
        }
        let batch_vers: HashSet<Option<u64>> = now
            .iter()
            .filter(|(k, _)| k.starts_with('b'))
            .map(|(_, v)| *v)
            .collect();
        if batch_vers.len() > 1 {
            self.problems
                .push(format!("batch keys hold different batches: {batch_vers:?}"));
        }
        self.problems.clone()
    }
}

/// Check shared keys against the real-time order of the operations on them (from every
/// writer's log), as a linearizable register must behave:
/// - a read sees no write that had not begun when the read returned, and no value nobody
///   wrote;
/// - a read is not stale: it sees no write W when another acknowledged write began after W
///   returned and returned before the read began (a lost or reordered write shows up here at
///   the next read of its key);
/// - the store's final value is that of a write after which no acknowledged write began.
///
/// Returns the problems and the number of reads checked.
pub fn check_shared(
    c: &kvshm::Client,
    shared: &HashMap<String, SharedHistory>,
) -> (Vec<String>, u64) {
    let mut problems = Vec::new();
    let mut reads_checked = 0;
    for (k, h) in shared {
        // Acknowledged writes by start time, and the least end among those starting at or
        // after each position: `overwritten_by(t)` = when the first acknowledged write that
        // began after t had returned (u64::MAX: none).
        let mut acked: Vec<(u64, u64)> = h
            .ops
            .iter()
            .filter_map(|o| o.end.map(|e| (o.start, e)))
            .collect();
        acked.sort_unstable();
        let mut suffix_min_end = vec![u64::MAX; acked.len() + 1];
        for i in (0..acked.len()).rev() {
            suffix_min_end[i] = suffix_min_end[i + 1].min(acked[i].1);
        }
        let overwritten_by = |t: u64| suffix_min_end[acked.partition_point(|&(s, _)| s <= t)];
        // The writes of each value (the initial absence counts as a remove that ended at time
        // 0), by start time, with the latest end among those that began by each position
        // (u64::MAX while in flight). The read of a value is fine if one of its writes began
        // before the read returned and was not overwritten before the read began; the write
        // with the latest end is the best witness (`overwritten_by` only grows with time).
        let mut by_value: HashMap<Option<u64>, Vec<(u64, u64)>> = HashMap::new();
        by_value.entry(None).or_default().push((0, 0));
        for o in &h.ops {
            let end = o.end.unwrap_or(u64::MAX);
            by_value.entry(o.value).or_default().push((o.start, end));
        }
        for w in by_value.values_mut() {
            w.sort_unstable();
            for i in 1..w.len() {
                w[i].1 = w[i].1.max(w[i - 1].1);
            }
        }
        for r in &h.reads {
            reads_checked += 1;
            let w = by_value.get(&r.seen).map(Vec::as_slice).unwrap_or(&[]);
            let begun = w.partition_point(|&(s, _)| s <= r.end);
            if begun == 0 {
                problems.push(format!(
                    "{k}: a read saw {:?}, which no write had begun by then",
                    r.seen
                ));
            } else if overwritten_by(w[begun - 1].1) < r.start {
                problems.push(format!(
                    "{k}: stale read: saw {:?} at {}, overwritten by an acknowledged write \
                     that returned before",
                    r.seen, r.start
                ));
            }
        }
        let last_start = acked.last().map(|a| a.0);
        let mut allowed: HashSet<Option<u64>> = h
            .ops
            .iter()
            .filter(|o| match (o.end, last_start) {
                (Some(end), Some(s)) => end >= s,
                _ => true,
            })
            .map(|o| o.value)
            .collect();
        if last_start.is_none() {
            allowed.insert(None);
        }
        let got = c.get(k.as_bytes()).unwrap();
        let ver = got.as_deref().map(check_pattern);
        if ver == Some(None) {
            problems.push(format!("{k}: torn value"));
        } else if !allowed.contains(&ver.flatten()) {
            problems.push(format!(
                "{k}: holds {:?}, but only {allowed:?} may be last ({} writes)",
                ver.flatten(),
                h.ops.len()
            ));
        }
    }
    (problems, reads_checked)
}

/// Replay one writer's ack log into the set of values each of its keys may hold now. Returns
/// (acknowledged ops, ops in flight at a kill).
pub fn replay(log: &str, model: &mut HashMap<String, HashSet<Option<u64>>>) -> (u64, u64) {
    let mut r = Replay::default();
    r.feed(log);
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    for (k, v) in r.model {
        model.insert(k, v);
    }
    (r.acked, r.ambiguous)
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

/// A store's keys and values (or what a change log says they are).
pub type Contents = std::collections::BTreeMap<Vec<u8>, Vec<u8>>;

/// Every live key of the store with its value, one consistent view per stripe.
pub fn store_contents(c: &kvshm::Client) -> Contents {
    let mut m = Contents::new();
    for s in 0..c.stripes() {
        c.scan_stripe(s, |k, v, _| {
            m.insert(k.to_vec(), v.to_vec());
        })
        .expect("scan");
    }
    m
}

/// Apply committed change log batches to `model` in order; an overflow mark is an error.
pub fn apply_batches(model: &mut Contents, batches: &[kvshm::ChangeBatch]) -> Result<(), String> {
    for b in batches {
        if b.overflow {
            return Err(format!("transaction {} overflowed the log", b.seq));
        }
        for ch in &b.changes {
            match &ch.value {
                Some(v) => model.insert(ch.key.clone(), v.clone()),
                None => model.remove(&ch.key),
            };
        }
    }
    Ok(())
}

/// The first (at most 5) keys whose values differ between `a` and `b`, with both values
/// shortened: a failure message that does not print whole stores.
pub fn differing_keys(a: &Contents, b: &Contents) -> Vec<String> {
    let keys: std::collections::BTreeSet<&Vec<u8>> = a.keys().chain(b.keys()).collect();
    let show = |v: Option<&Vec<u8>>| {
        v.map(|v| String::from_utf8_lossy(&v[..v.len().min(40)]).into_owned())
    };
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .take(5)
        .map(|k| {
            format!(
                "{}: {:?} vs {:?}",
                String::from_utf8_lossy(k),
                show(a.get(k)),
                show(b.get(k))
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A log line cut by a kill (here a checkpoint whose last number lost its last digits, as
    /// session 8 saw) is not read; the writer's next incarnation ends it with a newline.
    #[test]
    fn a_line_cut_by_a_kill_is_not_read() {
        let whole = format!("P w0-1 822698065699378{END}OK{END}");
        let cut = format!("{whole}C w0-1 822698\nC w0-1 822698065699378{END}");
        let mut r = Replay::default();
        r.feed(&cut);
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!(r.checkpoints, 1);
        let mut r = Replay::default();
        r.resume(&format!("C w0-1 822698\n{whole}"));
        assert_eq!(r.model["w0-1"], HashSet::from([Some(822698065699378)]));
        assert!(r.problems.is_empty(), "{:?}", r.problems);
    }

    /// A batch in flight at a kill that repeats the versions of an earlier acknowledged one
    /// (two incarnations of a writer that drew the same random numbers, as the SIGKILL storm
    /// of sessions 18 and 21 had): rolled back, it leaves the keys nothing wrote since holding
    /// its values. That is no batch applied in part; a batch that did land in part still is.
    #[test]
    fn a_batch_in_flight_with_the_versions_of_an_earlier_one_is_judged_by_the_other_keys() {
        let m = format!("M w0-1 5 w0-2 6 w0-3 7{END}");
        let log = format!("{m}OK{END}P w0-2 8{END}OK{END}P w0-3 9{END}OK{END}{m}");
        let mut r = Replay::default();
        r.feed(&format!("{log}C w0-1 5 w0-2 8 w0-3 9{END}"));
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        let mut r = Replay::default();
        r.feed(&format!("{log}C w0-1 5 w0-2 6 w0-3 9{END}"));
        assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
        assert!(
            r.problems[0].contains("applied in part"),
            "{:?}",
            r.problems
        );
    }
}
