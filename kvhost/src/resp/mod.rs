//! The RESP server (issue 15): kvhost speaks Redis's protocol over TCP and Unix sockets, on
//! the same shared-memory store its local clients use.
//!
//! - `proto.rs`: the wire format (resumable parser, reply writer for RESP2 and RESP3);
//! - `net.rs`: listeners and connections on a tokio runtime (limits, timeouts, backpressure);
//! - `conn.rs`: one connection's state, command dispatch, MULTI/EXEC/WATCH;
//! - `db.rs`: the store as commands see it (directly, or through EXEC's overlay);
//! - `cmd/`: the commands; `glob.rs`: Redis's pattern matching.
//!
//! Every worker thread of the runtime has its own `kvshm::Client` (its own slot in the
//! store), and runs each command on the thread that read it, directly against shared memory:
//! no lock in the server, no copy through another thread.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub mod cmd;
pub mod conn;
pub mod db;
pub mod glob;
pub mod net;
pub mod proto;
pub mod pubsub;

pub use net::{start, Server};

/// How the server runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Store directory and name (each worker thread attaches its own client).
    pub dir: PathBuf,
    /// Store name.
    pub name: String,
    /// TCP addresses to listen on.
    pub tcp: Vec<SocketAddr>,
    /// Unix socket paths to listen on (created 0600).
    pub unix: Vec<PathBuf>,
    /// The password of the `default` user (AUTH), if any.
    pub requirepass: Option<String>,
    /// Refuse a non-loopback TCP address without a password (Redis's protected mode).
    pub protected: bool,
    /// Most connections at once (more are told `-ERR max number of clients reached`).
    pub max_clients: usize,
    /// Close a connection idle this long (`None`: never).
    pub timeout: Option<Duration>,
    /// Worker threads.
    pub threads: usize,
    /// How long a worker spins before it sleeps waiting for requests (0: never).
    pub spin: Duration,
    /// Most bytes one connection may have buffered of an unfinished command.
    pub max_query_buffer: usize,
    /// Replies are sent once this many bytes are pending, before more commands are read
    /// (bounds a connection's output memory; a client that does not read is waited for).
    pub output_chunk: usize,
    /// HTTP addresses to serve the REST API, /metrics and the dashboard on (`--http`).
    pub http: Vec<SocketAddr>,
    /// Bearer token the HTTP API requires (`--http-token`).
    pub http_token: Option<String>,
    /// The snapshot file kvhost writes, if any (SAVE, BGSAVE, LASTSAVE, CONFIG GET).
    pub snapshot: Option<PathBuf>,
    /// How often kvhost snapshots (CONFIG GET save).
    pub snapshot_every: Option<Duration>,
    /// Bytes of the replication stream kept for partial resyncs (`--repl-backlog-size`).
    pub repl_backlog: usize,
    /// Replicate this primary (`--replica-of HOST:PORT`).
    pub replica_of: Option<(String, u16)>,
    /// The primary's password (`--masterauth`).
    pub masterauth: Option<String>,
}

impl Options {
    /// Whether any listener was asked for (RESP over TCP or a Unix socket, or HTTP).
    pub fn enabled(&self) -> bool {
        !self.tcp.is_empty() || !self.unix.is_empty() || !self.http.is_empty()
    }
}

/// What the server tells kvhost.
#[derive(Debug, Default)]
pub struct Control {
    /// SHUTDOWN: stop the host.
    pub stop: Arc<AtomicBool>,
    /// SHUTDOWN NOSAVE: skip the final snapshot.
    pub nosave: AtomicBool,
}

/// One connection, as CLIENT LIST shows it and CLIENT KILL finds it.
#[derive(Debug)]
pub struct ClientHandle {
    /// CLIENT ID.
    pub id: u64,
    /// Peer address (`path:0` style for Unix sockets, as Redis: `/path:0`).
    pub addr: String,
    /// Local address.
    pub laddr: String,
    /// When it connected.
    pub created: Instant,
    /// Milliseconds since `created` of the last command.
    pub last_ms: AtomicU64,
    /// The last command run (index into `cmd::COMMANDS`, +1; 0: none yet).
    pub last_cmd: AtomicUsize,
    /// CLIENT SETNAME, lib-name, lib-ver, last command, protocol.
    pub info: Mutex<ClientInfo>,
    /// Set by CLIENT KILL; the connection closes at its next wake-up.
    pub killed: AtomicBool,
    /// Wakes the connection for CLIENT KILL.
    pub wake: tokio::sync::Notify,
}

impl ClientHandle {
    /// A new connection's entry.
    pub fn new(id: u64, addr: String, laddr: String) -> ClientHandle {
        ClientHandle {
            id,
            addr,
            laddr,
            created: Instant::now(),
            last_ms: AtomicU64::new(0),
            last_cmd: AtomicUsize::new(0),
            info: Mutex::new(ClientInfo {
                resp: 2,
                ..ClientInfo::default()
            }),
            killed: AtomicBool::new(false),
            wake: tokio::sync::Notify::new(),
        }
    }
}

/// The mutable part of a [`ClientHandle`].
#[derive(Debug, Default, Clone)]
pub struct ClientInfo {
    /// CLIENT SETNAME.
    pub name: String,
    /// CLIENT SETINFO LIB-NAME.
    pub lib_name: String,
    /// CLIENT SETINFO LIB-VER.
    pub lib_ver: String,
    /// 2 or 3.
    pub resp: u8,
    /// In MULTI.
    pub multi: bool,
}

/// Counters for INFO stats.
#[derive(Debug, Default)]
pub struct Counters {
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Connections refused (max clients).
    pub rejected: AtomicU64,
    /// Commands run.
    pub commands: AtomicU64,
    /// Bytes read.
    pub net_in: AtomicU64,
    /// Bytes written.
    pub net_out: AtomicU64,
    /// HTTP requests served.
    pub http_requests: AtomicU64,
    /// HTTP requests answered with a 5xx status.
    pub http_errors: AtomicU64,
}

/// What all connections share.
#[derive(Debug)]
pub struct Shared {
    /// The options (the live ones are mirrored below).
    pub opts: Options,
    /// The password (CONFIG SET requirepass).
    pub requirepass: Mutex<Option<String>>,
    /// CONFIG SET maxclients.
    pub max_clients: AtomicUsize,
    /// CONFIG SET timeout (seconds; 0: never).
    pub timeout_s: AtomicU64,
    /// Counters.
    pub counters: Counters,
    /// Open connections.
    pub clients: Mutex<BTreeMap<u64, Arc<ClientHandle>>>,
    next_id: AtomicU64,
    /// When the server started.
    pub started: Instant,
    /// Host control (SHUTDOWN).
    pub control: Arc<Control>,
    /// How long the host's last snapshot took, in µs (0: none written by this host yet; set
    /// by kvhost's main loop, read by /metrics).
    pub last_snapshot_us: AtomicU64,
    /// The TCP port of the first listener (INFO server), 0 if none.
    pub port: AtomicU64,
    /// A random run id (INFO server).
    pub run_id: String,
    /// The replication stream, if the store keeps a change log (`crate::repl`).
    pub repl: std::sync::OnceLock<Arc<crate::repl::Feed>>,
    /// The link to our primary while the store is a replica (`--replica-of`, REPLICAOF).
    pub replica: Mutex<Option<Arc<crate::repl::replica::Link>>>,
    /// The primary's password (`--masterauth`).
    pub masterauth: Option<String>,
    /// Publish/subscribe channels.
    pub pubsub: Arc<pubsub::PubSub>,
}

impl Shared {
    /// A new connection's id.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The password now.
    pub fn password(&self) -> Option<String> {
        self.requirepass
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The replication link, if the store is a replica now.
    pub fn replica_link(&self) -> Option<Arc<crate::repl::replica::Link>> {
        self.replica
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Follow `primary` (stopping any link there was), or, with `None`, stop following and
    /// make the store writable (REPLICAOF NO ONE: a promotion).
    pub fn set_replica_of(&self, primary: Option<(String, u16)>) -> kvshm::Result<()> {
        let mut cur = self.replica.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = cur.take() {
            old.stop();
        }
        match primary {
            Some((host, port)) => {
                *cur = Some(crate::repl::replica::start(
                    self.opts.dir.clone(),
                    self.opts.name.clone(),
                    host,
                    port,
                    self.port.load(Ordering::Relaxed) as u16,
                    self.masterauth.clone(),
                )?);
            }
            None => {
                let c = kvshm::Client::open_in(&self.opts.dir, &self.opts.name)?;
                if c.is_replica() {
                    c.set_replica(false)?;
                    log::warn!("the store is no longer a replica: writable (a primary now)");
                }
                if c.has_changelog() {
                    // A primary now: its writes diverge from the old primary's stream.
                    c.set_replication_position(None)?;
                }
            }
        }
        Ok(())
    }

    /// The idle timeout now.
    pub fn timeout(&self) -> Option<Duration> {
        match self.timeout_s.load(Ordering::Relaxed) {
            0 => None,
            s => Some(Duration::from_secs(s)),
        }
    }

    /// The shared state of a server with `opts` (also what tests run commands with).
    pub fn new(opts: Options, control: Arc<Control>) -> Shared {
        let run_id = crate::repl::new_replid();
        Shared {
            requirepass: Mutex::new(opts.requirepass.clone()),
            max_clients: AtomicUsize::new(opts.max_clients),
            timeout_s: AtomicU64::new(opts.timeout.map_or(0, |d| d.as_secs().max(1))),
            counters: Counters::default(),
            clients: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(0),
            started: Instant::now(),
            control,
            port: AtomicU64::new(0),
            last_snapshot_us: AtomicU64::new(0),
            run_id,
            repl: std::sync::OnceLock::new(),
            replica: Mutex::new(None),
            masterauth: opts.masterauth.clone(),
            pubsub: Arc::new(pubsub::PubSub::default()),
            opts,
        }
    }
}
