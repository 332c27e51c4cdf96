//! Listeners and connections on a tokio multi-thread runtime.
//!
//! A connection reads into its buffer, parses every complete command in it (pipelining),
//! runs each on the worker thread that read it against that thread's own `kvshm::Client`,
//! and writes the replies once. Memory per connection is bounded: the unparsed part of the
//! buffer by `max_query_buffer` (and the parser's limits), the replies by `output_chunk`
//! (replies are flushed before more commands run; a client that does not read its replies
//! is waited for, not buffered for). Idle connections close after `timeout`, excess ones are
//! refused with Redis's error, CLIENT KILL wakes the connection it kills.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kvshm::Client;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

use super::conn::{self, Blocked, Conn};
use super::proto::{Limits, Out, Parsed, Parser, Proto};
use super::{ClientHandle, Control, Options, Shared};

thread_local! {
    /// This worker thread's client of the store.
    static CLIENT: RefCell<Option<Rc<Client>>> = const { RefCell::new(None) };
}

/// The running server; dropping it (or [`Server::stop`]) closes every listener and
/// connection.
#[derive(Debug)]
pub struct Server {
    runner: Option<Runner>,
    shared: Arc<Shared>,
    unix_paths: Vec<PathBuf>,
    /// Where it listens (TCP, resolved: port 0 becomes the real port).
    pub tcp_addrs: Vec<SocketAddr>,
    /// Where the HTTP API listens (resolved).
    pub http_addrs: Vec<SocketAddr>,
}

impl Server {
    /// What all connections share (counters, clients).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Close the listeners and connections.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(f) = self.shared.repl.get() {
            f.stop();
        }
        match self.runner.take() {
            Some(Runner::Multi(rt)) => rt.shutdown_timeout(Duration::from_secs(1)),
            Some(Runner::Single(thread, stop)) => {
                let _ = stop.send(());
                let _ = thread.join();
            }
            None => {}
        }
        for p in &self.unix_paths {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The runtime: tokio's multi-thread scheduler for several workers; for one, a current-thread
/// runtime on its own thread (no work-stealing machinery: measured faster per request).
#[derive(Debug)]
enum Runner {
    Multi(tokio::runtime::Runtime),
    Single(
        std::thread::JoinHandle<()>,
        tokio::sync::oneshot::Sender<()>,
    ),
}

fn is_loopback(a: &SocketAddr) -> bool {
    a.ip().is_loopback()
}

/// How long a worker spins before it sleeps in epoll_wait (`--resp-spin`), in µs.
static PARK_SPIN_US: AtomicU64 = AtomicU64::new(0);

/// Called by tokio right before a worker sleeps: spin for `--resp-spin` first, so that a
/// request arriving meanwhile finds the worker awake. Measured (docs/PERFORMANCE.md): without
/// it kvhost's worker slept 0.40 times per non-pipelined request against Redis's 0.16, and
/// every sleep is a context switch for the server and a costlier wake-up for the client.
fn park_spin() {
    let us = PARK_SPIN_US.load(Ordering::Relaxed);
    if us > 0 {
        let t = std::time::Instant::now();
        let limit = Duration::from_micros(us);
        while t.elapsed() < limit {
            std::hint::spin_loop();
        }
    }
}

/// Pending connections the kernel queues per TCP listener (Redis's `tcp-backlog` default; the
/// kernel caps it at `net.core.somaxconn`).
const TCP_BACKLOG: u32 = 511;

/// Raise this process's open-file limit so that `max_clients` connections fit (Redis does the
/// same): the soft limit up to the hard one. Returns the limit in effect.
#[cfg(windows)]
fn raise_fd_limit(_max_clients: usize) -> u64 {
    0 // sockets are handles on Windows: no descriptor limit to raise
}

#[cfg(unix)]
fn raise_fd_limit(max_clients: usize) -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let want = max_clients as u64 + 128;
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 0;
    };
    if soft >= want {
        return soft;
    }
    let new = want.min(hard);
    match setrlimit(Resource::RLIMIT_NOFILE, new, hard) {
        Ok(()) => new,
        Err(_) => soft,
    }
}

/// Bind every listener (errors here are configuration errors: reported, nothing started)
/// and start serving.
pub fn start(opts: Options, control: Arc<Control>) -> io::Result<Server> {
    let fds = raise_fd_limit(opts.max_clients);
    if fds > 0 && (fds as usize) < opts.max_clients + 32 {
        log::warn!(
            "open-file limit {fds} is below --max-clients {} (+32): connections past it are refused by accept; raise the hard limit (ulimit -Hn)",
            opts.max_clients
        );
    }
    if opts.protected && opts.requirepass.is_none() {
        if let Some(a) = opts.tcp.iter().find(|a| !is_loopback(a)) {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "refusing to serve RESP on non-loopback address {a} without a password \
                     (protected mode): set --requirepass, or --protected-mode no if the network is trusted"
                ),
            ));
        }
    }
    if opts.protected && opts.http_token.is_none() {
        if let Some(a) = opts.http.iter().find(|a| !is_loopback(a)) {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "refusing to serve HTTP on non-loopback address {a} without a token \
                     (protected mode): set --http-token, or --protected-mode no if the network is trusted"
                ),
            ));
        }
    }
    let mut http_listeners = Vec::new();
    let mut http_addrs = Vec::new();
    for a in &opts.http {
        let l = std::net::TcpListener::bind(a)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {a} (HTTP): {e}")))?;
        l.set_nonblocking(true)?;
        http_addrs.push(l.local_addr()?);
        http_listeners.push(l);
    }
    let mut std_tcp = Vec::new();
    let mut tcp_addrs = Vec::new();
    for a in &opts.tcp {
        // tokio's socket rather than std's listener: std listens with a backlog of 128, and
        // a burst of connects past it waits out SYN retransmits (1 s and more each).
        let sock = if a.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        sock.set_reuseaddr(true)?;
        sock.bind(*a)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {a}: {e}")))?;
        tcp_addrs.push(sock.local_addr()?);
        std_tcp.push(sock);
    }
    let mut std_unix = Vec::new();
    for p in &opts.unix {
        std_unix.push(bind_unix(p)?);
    }
    let threads = opts.threads.max(1);
    PARK_SPIN_US.store(opts.spin.as_micros() as u64, Ordering::Relaxed);
    let dir = opts.dir.clone();
    let name = opts.name.clone();
    let runtime = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .on_thread_park(park_spin)
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("kvhost-resp")
            .enable_io()
            .enable_time()
            .on_thread_stop(|| {
                CLIENT.with(|c| c.borrow_mut().take());
            })
            .on_thread_park(park_spin)
            .build()?
    };
    // Attach on the worker threads up front, so a store that cannot be opened is an error
    // now, not a failure of every command later.
    let probe = Client::open_in(&dir, &name).map_err(|e| {
        io::Error::other(format!("the RESP server cannot attach to the store: {e}"))
    })?;
    // The query buffer (and a MULTI queue) never below what one SET of the longest key and
    // value needs, with its framing.
    let (max_key, max_value) = probe.limits();
    let changelog = probe.has_changelog();
    drop(probe);
    let mut opts = opts;
    opts.max_query_buffer = opts
        .max_query_buffer
        .max(2 * max_key.max(max_value) + 64 * 1024);
    let unix_paths = opts.unix.clone();
    let shared = Arc::new(Shared::new(opts, control));
    if changelog {
        let feed = crate::repl::Feed::start(
            shared.opts.dir.clone(),
            shared.opts.name.clone(),
            shared.opts.repl_backlog,
        )
        .map_err(|e| io::Error::other(format!("replication feed: {e}")))?;
        let _ = shared.repl.set(feed);
    }
    if let Some(a) = tcp_addrs.first() {
        shared.port.store(u64::from(a.port()), Ordering::Relaxed);
    }
    let _guard = runtime.enter();
    for l in std_tcp {
        let l: TcpListener = l.listen(TCP_BACKLOG)?;
        let sh = shared.clone();
        runtime.spawn(async move {
            loop {
                match l.accept().await {
                    Ok((s, peer)) => {
                        let _ = s.set_nodelay(true);
                        let local = s.local_addr().map_or(String::new(), |a| a.to_string());
                        accept(sh.clone(), s, peer.to_string(), local);
                    }
                    Err(e) => {
                        // EMFILE and friends: wait a little rather than spin.
                        log::warn!("RESP accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        });
    }
    #[cfg(unix)]
    for (l, p) in std_unix.into_iter().zip(&unix_paths) {
        let l = tokio::net::UnixListener::from_std(l)?;
        let sh = shared.clone();
        let path = p.display().to_string();
        runtime.spawn(async move {
            loop {
                match l.accept().await {
                    Ok((s, _)) => accept(sh.clone(), s, format!("{path}:0"), path.clone()),
                    Err(e) => {
                        log::warn!("RESP accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        });
    }
    #[cfg(windows)]
    drop(std_unix);
    for l in http_listeners {
        let l = TcpListener::from_std(l)?;
        let app = crate::http::router(shared.clone());
        runtime.spawn(crate::http::serve(l, app, shared.clone()));
    }
    drop(_guard);
    let runner = if threads == 1 {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("kvhost-resp".into())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = rx.await;
                });
                runtime.shutdown_timeout(Duration::from_secs(1));
                CLIENT.with(|c| c.borrow_mut().take());
            })?;
        Runner::Single(thread, tx)
    } else {
        Runner::Multi(runtime)
    };
    Ok(Server {
        runner: Some(runner),
        shared,
        unix_paths,
        tcp_addrs,
        http_addrs,
    })
}

/// Bind a Unix socket (mode 0600), replacing a stale socket of an earlier run (only if it is
/// a socket).
#[cfg(unix)]
fn bind_unix(p: &std::path::Path) -> io::Result<std::os::unix::net::UnixListener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if let Ok(m) = std::fs::symlink_metadata(p) {
        if m.file_type().is_socket() {
            let _ = std::fs::remove_file(p);
        }
    }
    let l = std::os::unix::net::UnixListener::bind(p)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {}: {e}", p.display())))?;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600))?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Unix sockets are not offered on Windows (use `--resp 127.0.0.1:PORT`).
#[cfg(windows)]
fn bind_unix(p: &std::path::Path) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        format!(
            "cannot listen on {}: --resp-unix is not available on Windows (use --resp 127.0.0.1:PORT)",
            p.display()
        ),
    ))
}

/// Registers a connection and removes it when dropped.
struct Registered {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.shared
            .clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

fn accept<S>(shared: Arc<Shared>, mut stream: S, addr: String, laddr: String)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    shared.counters.connections.fetch_add(1, Ordering::Relaxed);
    let id = shared.next_id();
    let handle = Arc::new(ClientHandle::new(id, addr, laddr));
    let over = {
        let mut clients = shared.clients.lock().unwrap_or_else(|e| e.into_inner());
        if clients.len() >= shared.max_clients.load(Ordering::Relaxed) {
            true
        } else {
            clients.insert(id, handle.clone());
            false
        }
    };
    tokio::spawn(async move {
        if over {
            shared.counters.rejected.fetch_add(1, Ordering::Relaxed);
            log::warn!(
                "RESP connection from {} refused: --max-clients {} reached",
                handle.addr,
                shared.max_clients.load(Ordering::Relaxed)
            );
            let _ = stream
                .write_all(b"-ERR max number of clients reached\r\n")
                .await;
            return;
        }
        let reg = Registered {
            shared: shared.clone(),
            id,
        };
        let addr = handle.addr.clone();
        log::debug!("RESP client {id} connected from {addr}");
        match serve(&shared, handle, &mut stream).await {
            Ok(()) => log::debug!("RESP client {id} ({addr}) closed"),
            Err(e) => log::debug!("RESP client {id} ({addr}) closed: {e}"),
        }
        drop(reg);
    });
}

/// This thread's client, attached on first use.
pub(crate) fn thread_client(shared: &Shared) -> kvshm::Result<Rc<Client>> {
    CLIENT.with(|c| {
        let mut c = c.borrow_mut();
        if let Some(cl) = c.as_ref() {
            return Ok(cl.clone());
        }
        let cl = Rc::new(Client::open_in(&shared.opts.dir, &shared.opts.name)?);
        *c = Some(cl.clone());
        Ok(cl)
    })
}

async fn serve<S>(shared: &Shared, handle: Arc<ClientHandle>, stream: &mut S) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut conn = Conn::new(handle.clone(), shared.password().is_none());
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut parser = Parser::default();
    let mut out = Out::new(Proto::V2);
    let max_bulk = {
        let c = thread_client(shared).map_err(io::Error::other)?;
        let (k, v) = c.limits();
        k.max(v)
    };
    let limits = Limits { max_bulk };
    let query_limit = shared.opts.max_query_buffer;
    let killed = handle.wake.notified();
    let mut killed = std::pin::pin!(killed);
    let idle = tokio::time::sleep(Duration::from_secs(3600));
    let mut idle = std::pin::pin!(idle);
    let mut sub_rx: Option<tokio::sync::broadcast::Receiver<super::pubsub::Message>> = None;
    loop {
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(16 * 1024);
        }
        // The idle deadline moves with each read; the kill notification is registered once
        // (both reused across iterations: no allocation or lock per request).
        if let Some(t) = shared.timeout() {
            idle.as_mut().reset(tokio::time::Instant::now() + t);
        }
        // A subscribed connection (SUBSCRIBE) also waits for published messages; it is not
        // idle while subscribed (Redis does not time out subscribers either).
        if conn.subs.active() != sub_rx.is_some() {
            sub_rx = conn.subs.active().then(|| shared.pubsub.receiver());
        }
        let timed = shared.timeout().is_some() && sub_rx.is_none();
        let read = stream.read_buf(&mut buf);
        let message = async {
            match sub_rx.as_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        let n = tokio::select! {
            biased;
            r = read => r?,
            m = message => {
                match m {
                    Ok(m) => {
                        if conn.subs.deliver(&m, &mut out) {
                            flush(shared, stream, &mut out).await?;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        log::warn!("RESP client {}: {n} published messages dropped (a slow subscriber)", conn.id);
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return Ok(()),
                }
                continue;
            }
            () = &mut killed => 0,
            () = &mut idle, if timed => {
                log::debug!("RESP client {}: idle timeout", conn.id);
                0
            }
        };
        if n == 0 || handle.killed.load(Ordering::Relaxed) {
            return Ok(());
        }
        shared
            .counters
            .net_in
            .fetch_add(n as u64, Ordering::Relaxed);
        handle.last_ms.store(
            handle.created.elapsed().as_millis() as u64,
            Ordering::Relaxed,
        );
        // Every complete command in the buffer, replies batched (sent early when they pass
        // `output_chunk`, before more commands run).
        let mut commands = 0u64;
        loop {
            let step = process(&mut conn, shared, &mut parser, &buf, &limits, &mut out);
            commands += step.commands;
            match conn.blocked.take() {
                // A command that waits (WAIT) or takes the connection over (PSYNC).
                Some(Blocked::Wait { n, timeout }) => {
                    flush(shared, stream, &mut out).await?;
                    let head = thread_client(shared).and_then(|c| c.changelog_head());
                    let got = match (shared.repl.get(), head) {
                        (Some(feed), Ok(head)) => crate::repl::wait(feed, head, n, timeout).await,
                        _ => 0,
                    };
                    out.int(got as i64);
                    continue;
                }
                Some(Blocked::Psync(req)) => {
                    flush(shared, stream, &mut out).await?;
                    let Some(feed) = shared.repl.get() else {
                        return Ok(());
                    };
                    let ip = handle
                        .addr
                        .rsplit_once(':')
                        .map_or(handle.addr.as_str(), |(h, _)| h)
                        .trim_matches(|c| c == '[' || c == ']')
                        .to_string();
                    shared
                        .counters
                        .commands
                        .fetch_add(commands, Ordering::Relaxed);
                    return crate::repl::serve_replica(
                        shared,
                        feed,
                        &handle,
                        stream,
                        req,
                        ip,
                        conn.repl_port,
                    )
                    .await;
                }
                None => {}
            }
            if step.more {
                flush(shared, stream, &mut out).await?;
            } else {
                break;
            }
        }
        shared
            .counters
            .commands
            .fetch_add(commands, Ordering::Relaxed);
        // Let the other connections whose requests are ready run theirs first, then send:
        // reads, then writes, as Redis's event loop does (its replies go out in
        // `beforeSleep`). Sending each reply between reads cost kvhost twice Redis's kernel
        // time on pipelined MSET over TCP (measured: +30% requests/s, half the system time
        // with this; a lone connection pays nothing measurable: docs/PERFORMANCE.md).
        tokio::task::yield_now().await;
        flush(shared, stream, &mut out).await?;
        if conn.close {
            let _ = stream.shutdown().await;
            return Ok(());
        }
        let done = parser.frame_start();
        if done > 0 {
            parser.rebase(done);
            buf.drain(..done);
        }
        if buf.len() > query_limit {
            log::warn!(
                "RESP client {} ({}): closed, query buffer over {query_limit} bytes",
                conn.id,
                handle.addr,
            );
            return Ok(());
        }
        // Do not keep a big buffer around for an idle connection.
        if buf.is_empty() && buf.capacity() > 1 << 20 {
            buf = Vec::with_capacity(16 * 1024);
        }
    }
}

/// What [`process`] did.
struct Step {
    commands: u64,
    /// It stopped because the replies reached `output_chunk`: flush, then call again.
    more: bool,
}

/// Run every complete command in `buf` on this thread's client (fetched once; not held across
/// an await, since it is the thread's), until the buffer has no complete command, the
/// connection is to close, or the replies reach `output_chunk`.
fn process(
    conn: &mut Conn,
    shared: &Shared,
    parser: &mut Parser,
    buf: &[u8],
    limits: &Limits,
    out: &mut Out,
) -> Step {
    let mut step = Step {
        commands: 0,
        more: false,
    };
    let client = match thread_client(shared) {
        Ok(c) => Some(c),
        Err(e) => {
            log::error!("the RESP server cannot attach to the store: {e}");
            None
        }
    };
    loop {
        match parser.parse(buf, limits) {
            Ok(Parsed::Command { .. }) => {
                step.commands += 1;
                match &client {
                    Some(c) => {
                        parser.with_args(buf, |args| conn::execute(conn, shared, c, out, args))
                    }
                    None => {
                        out.error("ERR the server cannot attach to the store (see kvhost's log)")
                    }
                }
                if conn.close || conn.blocked.is_some() {
                    return step;
                }
                if out.buf.len() >= shared.opts.output_chunk {
                    step.more = true;
                    return step;
                }
            }
            Ok(Parsed::Empty { .. }) => {}
            Ok(Parsed::Incomplete) => return step,
            Err(e) => {
                out.error(&format!("ERR Protocol error: {}", e.0));
                conn.close = true;
                log::debug!("RESP client {}: protocol error: {}", conn.id, e.0);
                return step;
            }
        }
    }
}

async fn flush<S: AsyncWrite + Unpin>(shared: &Shared, s: &mut S, out: &mut Out) -> io::Result<()> {
    if out.buf.is_empty() {
        return Ok(());
    }
    s.write_all(&out.buf).await?;
    shared
        .counters
        .net_out
        .fetch_add(out.buf.len() as u64, Ordering::Relaxed);
    out.buf.clear();
    if out.buf.capacity() > 1 << 20 {
        out.buf.shrink_to(16 * 1024);
    }
    Ok(())
}
