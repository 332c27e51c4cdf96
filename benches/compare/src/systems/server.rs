//! Starting a peer server on 127.0.0.1 for the duration of a run, pinned to a known core.

use super::Res;
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the server runs relative to its clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Server on the last CPU, clients on the others: every request is a cross-core wake-up.
    SeparateCores,
    /// Server and client on CPU 0: requests hand over on one core (cheaper on this VM).
    SameCore,
}

pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl Placement {
    pub fn server_cpu(self) -> usize {
        match self {
            Placement::SeparateCores => cpus() - 1,
            Placement::SameCore => 0,
        }
    }
    pub fn client_cpus(self) -> Vec<usize> {
        match self {
            Placement::SeparateCores if cpus() > 1 => (0..cpus() - 1).collect(),
            _ => vec![0],
        }
    }
}

/// Pin the calling thread (and what it later spawns) to `cpus`.
pub fn pin(cpus: &[usize]) -> Res<()> {
    // SAFETY: cpu_set_t is plain data; zeroed is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        if c < libc::CPU_SETSIZE as usize {
            // SAFETY: CPU_SET on a valid set with an index below CPU_SETSIZE (checked).
            unsafe { libc::CPU_SET(c, &mut set) };
        }
    }
    // SAFETY: pid 0 is the calling thread; `set` is a valid cpu_set_t of the size passed.
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if r != 0 {
        return Err(format!(
            "sched_setaffinity: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// A server child process, killed on drop.
#[derive(Debug)]
pub struct Server {
    pub child: Child,
    pub port: u16,
}

impl Server {
    /// Start `program` with `args` (where `{port}` is replaced) pinned to `cpu`, and wait until
    /// it accepts connections.
    pub fn start(program: &str, args: &[&str], cpu: usize) -> Res<Server> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let mut cmd = Command::new(program);
        cmd.args(args.iter().map(|a| a.replace("{port}", &port.to_string())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: the closure only calls async-signal-safe sched_setaffinity on the child.
        unsafe {
            cmd.pre_exec(move || pin(&[cpu]).map_err(std::io::Error::other));
        }
        let child = cmd.spawn().map_err(|e| {
            format!("{program} not available ({e}); run scripts/install-bench-deps.sh")
        })?;
        let mut s = Server { child, port };
        let t0 = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(st)) = s.child.try_wait() {
                return Err(format!("{program} exited at start: {st}"));
            }
            if t0.elapsed() > Duration::from_secs(20) {
                return Err(format!("{program} did not listen on {port}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(s)
    }

    pub fn rss(&self) -> u64 {
        super::rss_of(&self.child.id().to_string())
    }

    pub fn connect(port: u16) -> Res<TcpStream> {
        let s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
        s.set_nodelay(true).map_err(|e| e.to_string())?;
        Ok(s)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
