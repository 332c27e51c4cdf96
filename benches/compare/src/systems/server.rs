//! Starting a peer server on 127.0.0.1 for the duration of a run, pinned to a known core.

use super::{Conn, Mode, Res, System};
use crate::workload::{key, load_value};
use std::marker::PhantomData;
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

fn cpu_set(cpus: &[usize]) -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is plain data; zeroed is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        if c < libc::CPU_SETSIZE as usize {
            // SAFETY: CPU_SET on a valid set with an index below CPU_SETSIZE (checked).
            unsafe { libc::CPU_SET(c, &mut set) };
        }
    }
    set
}

/// Set the calling thread's affinity (and so what it later spawns). Allocates nothing, so it
/// may run between fork and exec.
fn set_affinity(set: &libc::cpu_set_t) -> std::io::Result<()> {
    // SAFETY: pid 0 is the calling thread; `set` is a valid cpu_set_t of the size passed.
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Pin the calling thread (and what it later spawns) to `cpus`.
pub fn pin(cpus: &[usize]) -> Res<()> {
    set_affinity(&cpu_set(cpus)).map_err(|e| format!("sched_setaffinity: {e}"))
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
        let set = cpu_set(&[cpu]); // built before the fork: the child must not allocate
                                   // SAFETY: the closure only calls sched_setaffinity (async-signal-safe) on a set built
                                   // before the fork, and allocates nothing (an OS error is a plain code).
        unsafe {
            cmd.pre_exec(move || set_affinity(&set));
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

/// A server's request/response protocol over one connection, whose requests may be queued
/// (pipelined) before their replies are read.
pub trait Wire: Sized + Send + 'static {
    fn connect(port: u16) -> Res<Self>;
    /// Queue a get of `key`.
    fn send_get(&mut self, key: &[u8]) -> Res<()>;
    /// Queue a set of `key` to `value`.
    fn send_set(&mut self, key: &[u8], value: &[u8]) -> Res<()>;
    /// Read the next reply (sending what is queued first): a get's value into `out` (true) or
    /// a miss (false); a set's acknowledgement (true).
    fn reply(&mut self, out: &mut Vec<u8>) -> Res<bool>;
}

/// A [`Wire`] connection as a [`Conn`]: one round trip per op, or one per batch.
pub struct Pipelined<W>(pub W);

impl<W: Wire> Conn for Pipelined<W> {
    fn get(&mut self, key: &[u8], out: &mut Vec<u8>) -> Res<bool> {
        self.0.send_get(key)?;
        self.0.reply(out)
    }
    fn put(&mut self, key: &[u8], value: &[u8]) -> Res<()> {
        self.0.send_set(key, value)?;
        self.0.reply(&mut Vec::new()).map(|_| ())
    }
    fn batch(&mut self, ops: &[(bool, [u8; 16])], value: &[u8], out: &mut Vec<u8>) -> Res<u64> {
        for (get, k) in ops {
            if *get {
                self.0.send_get(k)?;
            } else {
                self.0.send_set(k, value)?;
            }
        }
        let mut hits = 0;
        for (get, _) in ops {
            let found = self.0.reply(out)?;
            hits += (*get && found) as u64;
        }
        Ok(hits)
    }
}

/// A peer server started for the run and the connections to it.
#[derive(Debug)]
pub struct Served<W> {
    server: Server,
    placement: Placement,
    rss_before: u64,
    wire: PhantomData<W>,
}

impl<W: Wire> Served<W> {
    pub fn start(program: &str, args: &[&str], placement: Placement) -> Res<Served<W>> {
        let server = Server::start(program, args, placement.server_cpu())?;
        let rss_before = server.rss();
        Ok(Served {
            server,
            placement,
            rss_before,
            wire: PhantomData,
        })
    }
}

/// A worker's connection from [`System::spec`] (the port).
pub fn open<W: Wire>(spec: &str) -> Res<Box<dyn Conn + Send>> {
    let port = spec
        .parse()
        .map_err(|_| format!("bad server spec {spec}"))?;
    Ok(Box::new(Pipelined(W::connect(port)?)))
}

impl<W: Wire> System for Served<W> {
    fn mode(&self) -> Mode {
        match self.placement {
            Placement::SameCore => Mode::Single("same-core placement is measured with 1 client"),
            Placement::SeparateCores => Mode::Processes,
        }
    }
    /// Sets with 256 requests in flight.
    fn load(&mut self, keys: u64, value_bytes: usize) -> Res<()> {
        let mut c = W::connect(self.server.port)?;
        let (mut k, mut v) = ([0u8; 16], Vec::new());
        let mut i = 0;
        while i < keys {
            let n = (keys - i).min(256);
            for j in i..i + n {
                key(j, &mut k);
                load_value(&mut v, value_bytes, j);
                c.send_set(&k, &v)?;
            }
            for _ in 0..n {
                c.reply(&mut Vec::new())?;
            }
            i += n;
        }
        Ok(())
    }
    fn conn(&self) -> Res<Box<dyn Conn + Send>> {
        open::<W>(&self.spec())
    }
    fn spec(&self) -> String {
        self.server.port.to_string()
    }
    fn memory_bytes(&self) -> Res<u64> {
        Ok(self.server.rss().saturating_sub(self.rss_before))
    }
    fn memory_note(&self) -> &'static str {
        match self.placement {
            Placement::SeparateCores => {
                "server's resident growth; server and clients pinned to different cores"
            }
            Placement::SameCore => "server's resident growth; server and client pinned to core 0",
        }
    }
    fn worker_cpus(&self) -> Option<Vec<usize>> {
        Some(self.placement.client_cpus())
    }
}
