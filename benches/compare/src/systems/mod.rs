//! The systems under test behind one small interface.
//!
//! A [`System`] is set up (and loaded) once per value size by the runner process; its
//! [`Conn`]s do the measured operations, either in threads of the runner (in-process systems)
//! or in separate worker processes that reopen the system from [`System::spec`].

use std::path::Path;

#[cfg(any(feature = "rocksdb", feature = "leveldb"))]
pub mod cdb;
pub mod inproc;
pub mod kvhost_resp;
pub mod kvshm_c;
pub mod kvshm_rs;
#[cfg(feature = "leveldb")]
pub mod leveldb;
#[cfg(feature = "lmdb")]
pub mod lmdb;
pub mod memcached;
pub mod redis;
#[cfg(feature = "rocksdb")]
pub mod rocksdb;
#[cfg(any(
    feature = "lmdb",
    feature = "sqlite",
    feature = "rocksdb",
    feature = "leveldb"
))]
pub mod scratch;
pub mod server;
#[cfg(feature = "sqlite")]
pub mod sqlite;

pub type Res<T> = Result<T, String>;

/// How P clients run against the system.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Each client is its own process (what kvshm, LMDB, SQLite files and servers allow).
    Processes,
    /// Clients are threads of the process that owns the data (in-process libraries).
    Threads,
    /// One client only; the reason is reported for P > 1.
    Single(&'static str),
}

/// One client's connection / handle.
pub trait Conn {
    /// kvshm's lock-wait counters of this connection (see `kvshm::Client::lock_waits`):
    /// [stripe waits, stripe ns, allocator waits, allocator ns]; `None` elsewhere.
    fn lock_waits(&self) -> Option<[u64; 4]> {
        None
    }
    /// Copy the value of `key` into `out`; false when absent.
    fn get(&mut self, key: &[u8], out: &mut Vec<u8>) -> Res<bool>;
    /// Insert or replace.
    fn put(&mut self, key: &[u8], value: &[u8]) -> Res<()>;
    /// Run `ops` (get when `.0`, else put of `value`) as one batch; returns the hits. Only
    /// pipelining servers override it: everyone else runs them one by one.
    fn batch(&mut self, ops: &[(bool, [u8; 16])], value: &[u8], out: &mut Vec<u8>) -> Res<u64> {
        let mut hits = 0;
        for (get, k) in ops {
            if *get {
                hits += self.get(k, out)? as u64;
            } else {
                self.put(k, value)?;
            }
        }
        Ok(hits)
    }
}

/// Copy a value a get found into `out` (every system's get copies the value out, as a
/// caller would); whether there was one.
pub fn copy_found(v: Option<&[u8]>, out: &mut Vec<u8>) -> bool {
    match v {
        Some(v) => {
            out.clear();
            out.extend_from_slice(v);
            true
        }
        None => false,
    }
}

/// A system set up for one value size.
pub trait System {
    fn mode(&self) -> Mode;
    /// Insert keys `0..keys` with `value_bytes`-byte values.
    fn load(&mut self, keys: u64, value_bytes: usize) -> Res<()>;
    /// A connection in this process (threads mode, or P = 1 of a single-client system).
    fn conn(&self) -> Res<Box<dyn Conn + Send>>;
    /// What a worker process passes to [`open_worker`] to reach the loaded data.
    fn spec(&self) -> String {
        String::new()
    }
    /// Memory the loaded data takes, in bytes (how it is measured is system-specific and
    /// said in `memory_note`).
    fn memory_bytes(&self) -> Res<u64>;
    fn memory_note(&self) -> &'static str;
    /// CPUs worker processes are pinned to (servers: keep clients off or on the server's).
    fn worker_cpus(&self) -> Option<Vec<usize>> {
        None
    }
}

/// Every system the harness knows, in report order: (name, needs).
pub const ALL: &[&str] = &[
    "kvshm",
    "kvshm-c",
    "hashmap",
    "dashmap",
    "lmdb",
    "sqlite-mem",
    "sqlite-wal",
    "rocksdb",
    "leveldb",
    "redis",
    "redis-samecore",
    "redis-pipe16",
    "kvhost-resp",
    "kvhost-resp-pipe16",
    "memcached",
    "memcached-pipe16",
];

/// Operations per batch for this system (servers' pipelined variants).
pub fn batch_of(name: &str) -> usize {
    if name.ends_with("-pipe16") {
        16
    } else {
        1
    }
}

/// Bytes the files at or under `p` occupy (allocated blocks, not apparent sizes).
pub fn allocated_under(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(m) = std::fs::symlink_metadata(p) else {
        return 0;
    };
    if m.is_dir() {
        std::fs::read_dir(p)
            .map(|rd| {
                rd.flatten()
                    .map(|e| allocated_under(&e.path()))
                    .sum::<u64>()
            })
            .unwrap_or(0)
    } else {
        m.blocks() * 512
    }
}

/// Resident set size of a process (`self` or a pid), bytes.
pub fn rss_of(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .map_or(0, |kb: u64| kb * 1024)
}

/// Set up system `name` (not yet loaded). `Err` means skipped, with the reason.
pub fn create(name: &str) -> Res<Box<dyn System>> {
    Ok(match name {
        "kvshm" => Box::new(kvshm_rs::KvShm::new(false)?),
        "kvshm-c" => Box::new(kvshm_rs::KvShm::new(true)?),
        "hashmap" => Box::new(inproc::StdMap::default()),
        "dashmap" => Box::new(inproc::Dash::default()),
        #[cfg(feature = "lmdb")]
        "lmdb" => Box::new(lmdb::Lmdb::new()?),
        #[cfg(feature = "sqlite")]
        "sqlite-mem" => Box::new(sqlite::Sqlite::memory()?),
        #[cfg(feature = "sqlite")]
        "sqlite-wal" => Box::new(sqlite::Sqlite::wal()?),
        #[cfg(feature = "rocksdb")]
        "rocksdb" => Box::new(rocksdb::new()?),
        #[cfg(feature = "leveldb")]
        "leveldb" => Box::new(leveldb::new()?),
        "redis" | "redis-pipe16" => Box::new(redis::start(server::Placement::SeparateCores)?),
        "redis-samecore" => Box::new(redis::start(server::Placement::SameCore)?),
        "kvhost-resp" | "kvhost-resp-pipe16" => {
            Box::new(kvhost_resp::start(server::Placement::SeparateCores)?)
        }
        "memcached" | "memcached-pipe16" => Box::new(memcached::start()?),
        #[cfg(not(feature = "lmdb"))]
        "lmdb" => return Err(not_built()),
        #[cfg(not(feature = "sqlite"))]
        "sqlite-mem" | "sqlite-wal" => return Err(not_built()),
        #[cfg(not(feature = "rocksdb"))]
        "rocksdb" => return Err(not_built()),
        #[cfg(not(feature = "leveldb"))]
        "leveldb" => return Err(not_built()),
        other => return Err(format!("unknown system {other}")),
    })
}

#[allow(dead_code)] // unused when every peer is built in
fn not_built() -> String {
    "not built in: run scripts/bench-compare.sh (installs the peers, builds with --features peers)"
        .into()
}

/// Open a connection in a worker process from [`System::spec`].
pub fn open_worker(name: &str, spec: &str) -> Res<Box<dyn Conn + Send>> {
    Ok(match name {
        "kvshm" => kvshm_rs::open(spec)?,
        "kvshm-c" => kvshm_c::open(spec)?,
        #[cfg(feature = "lmdb")]
        "lmdb" => lmdb::open(spec)?,
        #[cfg(feature = "sqlite")]
        "sqlite-wal" => sqlite::open(spec)?,
        "redis" | "redis-samecore" | "redis-pipe16" | "kvhost-resp" | "kvhost-resp-pipe16" => {
            server::open::<redis::RespConn>(spec)?
        }
        "memcached" | "memcached-pipe16" => server::open::<memcached::McConn>(spec)?,
        other => return Err(format!("{other} has no worker processes")),
    })
}
