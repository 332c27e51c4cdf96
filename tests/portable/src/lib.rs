//! Helpers of the portable cross-process tests: a store in a directory of its own that is
//! removed, with every child process, when the test ends (also when it fails).
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use kvshm;

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Tiny deterministic PRNG (xorshift64*).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

/// A directory of this test's own (the store file and the children's files go there),
/// removed with its children when dropped.
#[derive(Debug)]
pub struct TestDir {
    pub dir: PathBuf,
    pub name: String,
    children: Vec<Child>,
}

impl TestDir {
    pub fn new(tag: &str) -> TestDir {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!("p-{tag}-{}-{n}-{nanos}", std::process::id());
        let dir = std::env::temp_dir().join(format!("kvshm-{name}"));
        std::fs::create_dir_all(&dir).expect("test directory");
        TestDir {
            dir,
            name,
            children: Vec::new(),
        }
    }

    /// A file in the test's directory.
    pub fn file(&self, f: &str) -> PathBuf {
        self.dir.join(f)
    }

    /// Start the child program with `args` after the store's directory and name; `env` is
    /// added to its environment. The child is killed when the `TestDir` is dropped.
    pub fn spawn(&mut self, child: &str, args: &[&str], env: &[(&str, &str)]) -> usize {
        let mut cmd = Command::new(child);
        cmd.arg(args[0])
            .arg(&self.dir)
            .arg(&self.name)
            .args(&args[1..]);
        for (k, v) in env {
            cmd.env(k, v);
        }
        self.children.push(cmd.spawn().expect("spawn child"));
        self.children.len() - 1
    }

    /// Wait for child `i` (at most `limit`, then it is killed and the test fails).
    pub fn wait(&mut self, i: usize, limit: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(st) = self.children[i].try_wait().expect("wait") {
                return st;
            }
            if start.elapsed() > limit {
                let _ = self.children[i].kill();
                panic!("child {i} did not end within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Terminate child `i` now (SIGKILL on Unix, `TerminateProcess` on Windows) and reap it.
    pub fn kill(&mut self, i: usize) {
        let _ = self.children[i].kill();
        let _ = self.children[i].wait();
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether `st` is the end of a process killed at a crash point: SIGKILL on Unix, exit code
/// 137 from `TerminateProcess` on Windows.
pub fn killed_at_crash_point(st: ExitStatus) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        st.signal() == Some(9)
    }
    #[cfg(windows)]
    {
        st.code() == Some(137)
    }
}

/// The value writer `w` stores at step `i`: its own words, so a torn value is detected, and
/// a length that varies with `i` (records move between size classes).
pub fn value(w: u64, i: u64) -> Vec<u8> {
    format!("{w}:{i};")
        .repeat(1 + (i % 37) as usize)
        .into_bytes()
}

/// The key of writer `w` at step `i` (each writer cycles over `KEYS` keys).
pub fn key(w: u64, i: u64) -> Vec<u8> {
    format!("w{w}-{}", i % KEYS).into_bytes()
}

/// Keys per writer.
pub const KEYS: u64 = 200;

/// The steps a writer acknowledged, from its acknowledgement file (one step per line; a last
/// line without its newline was cut by a kill and does not count).
pub fn acked(path: &Path) -> Vec<u64> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let whole = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    whole
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}
