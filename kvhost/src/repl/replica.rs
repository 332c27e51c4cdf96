//! Replication, replica side: `kvhost --replica-of HOST:PORT` (or RESP `REPLICAOF host port`)
//! keeps the local store a copy of a primary (a kvhost, or a Redis server serving string
//! keys), through Redis's protocol: `PING`, `REPLCONF listening-port`, `REPLCONF capa psync2`,
//! `PSYNC replid offset` (`?` `-1` the first time); then the RDB of a full resync or the rest
//! of the stream after a partial one, applied as it comes. `REPLCONF ACK offset` goes back
//! every second and whenever the primary asks (`GETACK`).
//!
//! While it replicates, the store is a read-only replica (`kvshm::Client::set_replica`):
//! local processes read it at memory speed, and every write but this link's fails with
//! `Error::ReadOnly` (RESP: `-READONLY`). `REPLICAOF NO ONE` stops the link and makes the
//! store writable: the promotion of a failover.
//!
//! A full resync applies the RDB over what the store holds (keys in batches, then the keys
//! the RDB lacks removed), so local readers see old or new values during it, never an empty
//! store; a `MULTI`/`EXEC` of the stream is applied as one transaction.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvshm::{Client, Write as KvWrite};

use crate::resp::proto::{Limits, Parsed, Parser};

/// The state of the link, as INFO replication and ROLE show it.
#[derive(Debug)]
pub struct Link {
    pub host: String,
    pub port: u16,
    stop: AtomicBool,
    /// "connect", "connecting", "sync", "connected" (Redis's words).
    state: Mutex<&'static str>,
    /// The replication id and offset this replica holds (Redis's `master_replid`,
    /// `slave_repl_offset`).
    replid: Mutex<String>,
    pub offset: AtomicU64,
    pub last_io: Mutex<Instant>,
    pub full_syncs: AtomicU64,
    pub partial_syncs: AtomicU64,
    /// Why the last attempt failed (for INFO and the log).
    pub last_error: Mutex<String>,
}

impl Link {
    fn set_state(&self, s: &'static str) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = s;
    }

    /// Redis's replica state word.
    pub fn state(&self) -> &'static str {
        *self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The replication id followed.
    pub fn replid(&self) -> String {
        self.replid
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Stop following (the thread ends at its next read, at most a second later).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Whether the link is up (streaming).
    pub fn up(&self) -> bool {
        self.state() == "connected"
    }

    /// The `# Replication` section of INFO for a replica.
    pub fn info(&self) -> String {
        let up = self.up();
        format!(
            "# Replication\r\nrole:slave\r\nmaster_host:{}\r\nmaster_port:{}\r\n\
             master_link_status:{}\r\nmaster_last_io_seconds_ago:{}\r\n\
             master_sync_in_progress:{}\r\nslave_read_repl_offset:{off}\r\n\
             slave_repl_offset:{off}\r\nslave_priority:100\r\nslave_read_only:1\r\n\
             replica_announced:1\r\nconnected_slaves:0\r\nmaster_failover_state:no-failover\r\n\
             master_replid:{}\r\nmaster_replid2:0000000000000000000000000000000000000000\r\n\
             master_repl_offset:{off}\r\nsecond_repl_offset:-1\r\nrepl_backlog_active:0\r\n",
            self.host,
            self.port,
            if up { "up" } else { "down" },
            if up {
                self.last_io
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .elapsed()
                    .as_secs() as i64
            } else {
                -1
            },
            u8::from(self.state() == "sync"),
            self.replid(),
            off = self.offset.load(Ordering::Relaxed),
        )
    }
}

/// Start following `host:port` with the store `dir`/`name`; `my_port` is announced as our
/// listening port, `auth` is the primary's password.
pub fn start(
    dir: std::path::PathBuf,
    name: String,
    host: String,
    port: u16,
    my_port: u16,
    auth: Option<String>,
) -> kvshm::Result<Arc<Link>> {
    let client = Client::open_in(&dir, &name)?;
    client.set_replication_applier(true);
    client.set_replica(true)?;
    // Where an earlier run left the store (a store with a change log records it): a partial
    // resync from there instead of a full one.
    let (replid, offset) = match client.replication_position() {
        Ok(Some((id, off))) => {
            log::info!("the store holds {id} up to offset {off}: asking to continue from there");
            (id, off)
        }
        _ => ("?".to_string(), 0),
    };
    let link = Arc::new(Link {
        host,
        port,
        stop: AtomicBool::new(false),
        state: Mutex::new("connect"),
        replid: Mutex::new(replid),
        offset: AtomicU64::new(offset),
        last_io: Mutex::new(Instant::now()),
        full_syncs: AtomicU64::new(0),
        partial_syncs: AtomicU64::new(0),
        last_error: Mutex::new(String::new()),
    });
    let l = link.clone();
    std::thread::Builder::new()
        .name("kvhost-replica".into())
        .spawn(move || run(&l, &client, my_port, auth.as_deref()))
        .map_err(kvshm::Error::Io)?;
    log::info!("replicating {}:{} into {name}", link.host, link.port);
    Ok(link)
}

fn run(link: &Link, client: &Client, my_port: u16, auth: Option<&str>) {
    let mut backoff = Duration::from_millis(100);
    while !link.stop.load(Ordering::Relaxed) {
        link.set_state("connecting");
        // A panic (a bug) must not end replication for good: it ends this connection, like
        // an error (the client recovered its own locks and transaction as the panic left it).
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            session(link, client, my_port, auth)
        }))
        .unwrap_or_else(|p| {
            let what = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(format!("panicked: {what}"))
        });
        match r {
            Ok(()) => {}
            Err(e) => {
                if !link.stop.load(Ordering::Relaxed) {
                    log::warn!("replication link to {}:{}: {e}", link.host, link.port);
                }
                *link.last_error.lock().unwrap_or_else(|e| e.into_inner()) = e.to_string();
            }
        }
        link.set_state("connect");
        let t = Instant::now();
        while t.elapsed() < backoff && !link.stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
        }
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
    link.set_state("connect");
    log::info!("replication link to {}:{} stopped", link.host, link.port);
}

type Res<T> = Result<T, String>;

fn frame(args: &[&[u8]]) -> Vec<u8> {
    let mut f = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        f.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        f.extend_from_slice(a);
        f.extend_from_slice(b"\r\n");
    }
    f
}

/// Longest reply line of the handshake (a primary's lines are short; this bounds what a
/// broken one can make us buffer).
const LINE_MAX: u64 = 64 << 10;

fn line(r: &mut BufReader<TcpStream>) -> Res<String> {
    let mut l = Vec::new();
    let n = r
        .by_ref()
        .take(LINE_MAX)
        .read_until(b'\n', &mut l)
        .map_err(|e| e.to_string())?;
    if n == 0 {
        return Err("the primary closed the connection".into());
    }
    if !l.ends_with(b"\n") {
        return Err(format!("a reply line of the primary over {LINE_MAX} bytes"));
    }
    Ok(String::from_utf8_lossy(&l).trim_end().to_string())
}

fn command(w: &mut TcpStream, r: &mut BufReader<TcpStream>, args: &[&str]) -> Res<String> {
    let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
    w.write_all(&frame(&a)).map_err(|e| e.to_string())?;
    line(r)
}

/// One connection: handshake, sync, stream until it breaks or we are stopped.
fn session(link: &Link, client: &Client, my_port: u16, auth: Option<&str>) -> Res<()> {
    let addr = (link.host.as_str(), link.port);
    let s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    let _ = s.set_nodelay(true);
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    let mut w = s.try_clone().map_err(|e| e.to_string())?;
    let mut r = BufReader::with_capacity(1 << 16, s);
    let pong = command(&mut w, &mut r, &["PING"])?;
    if pong.starts_with("-NOAUTH") && auth.is_none() {
        return Err("the primary wants a password (--masterauth)".into());
    }
    if let Some(p) = auth {
        let ok = command(&mut w, &mut r, &["AUTH", p])?;
        if !ok.starts_with('+') {
            return Err(format!("AUTH: {ok}"));
        }
    }
    let ok = command(
        &mut w,
        &mut r,
        &["REPLCONF", "listening-port", &my_port.to_string()],
    )?;
    if !ok.starts_with('+') {
        return Err(format!("REPLCONF listening-port: {ok}"));
    }
    let ok = command(&mut w, &mut r, &["REPLCONF", "capa", "psync2"])?;
    if !ok.starts_with('+') {
        return Err(format!("REPLCONF capa: {ok}"));
    }
    let replid = link.replid();
    let offset = link.offset.load(Ordering::Relaxed);
    let (id, from) = if replid == "?" {
        ("?".to_string(), "-1".to_string())
    } else {
        (replid, (offset + 1).to_string())
    };
    link.set_state("sync");
    let reply = command(&mut w, &mut r, &["PSYNC", &id, &from])?;
    let words: Vec<&str> = reply.split_whitespace().collect();
    match words.first().copied() {
        Some("+FULLRESYNC") if words.len() == 3 => {
            let off: u64 = words[2].parse().map_err(|_| format!("bad reply {reply}"))?;
            let t = Instant::now();
            if client.has_changelog() {
                // Rebuilding: a restart in the middle must not resume from the old position.
                client
                    .set_replication_position(None)
                    .map_err(|e| e.to_string())?;
            }
            let keys = full_sync(&mut r, client)?;
            *link.replid.lock().unwrap_or_else(|e| e.into_inner()) = words[1].to_string();
            link.offset.store(off, Ordering::Relaxed);
            remember(client, words[1], off);
            link.full_syncs.fetch_add(1, Ordering::Relaxed);
            log::info!(
                "full resync from {}:{}: {keys} keys in {:?}, offset {off}",
                link.host,
                link.port,
                t.elapsed()
            );
        }
        Some("+CONTINUE") => {
            if let Some(id) = words.get(1) {
                *link.replid.lock().unwrap_or_else(|e| e.into_inner()) = id.to_string();
                remember(client, id, offset);
            }
            link.partial_syncs.fetch_add(1, Ordering::Relaxed);
            log::info!(
                "partial resync from {}:{} at offset {offset}",
                link.host,
                link.port
            );
        }
        _ => return Err(format!("PSYNC: {reply}")),
    }
    link.set_state("connected");
    *link.last_io.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    stream(link, client, &mut r, &mut w)
}

/// Record the position in the store (one with a change log), so that a restart resumes.
fn remember(client: &Client, id: &str, offset: u64) {
    if client.has_changelog() {
        if let Err(e) = client.set_replication_position(Some((id, offset))) {
            log::warn!("cannot record the replication position: {e}");
        }
    }
}

/// Read `$len\r\n` + payload (after any keepalive newlines) and apply it.
fn full_sync(r: &mut BufReader<TcpStream>, client: &Client) -> Res<u64> {
    let header = loop {
        let l = line(r)?;
        if !l.is_empty() {
            break l;
        }
    };
    let len: usize = header
        .strip_prefix('$')
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("expected the RDB's length, got {header:?}"))?;
    // Checked before it sizes anything: an RDB longer than the store can ever be is refused.
    let limit = client.stats().max_bytes;
    if len as u64 > limit {
        return Err(format!(
            "an RDB of {len} bytes: more than this store can hold ({limit} bytes)"
        ));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)
        .map_err(|e| format!("reading the RDB: {e}"))?;
    let (max_key, max_value) = client.limits();
    let mut keep = std::collections::HashSet::new();
    let mut batch: Vec<(Vec<u8>, KvWrite)> = Vec::new();
    let mut err = None;
    let n = super::rdb::read(&payload, max_key, max_value, |e| {
        keep.insert(e.key.clone());
        batch.push((
            e.key,
            KvWrite::Put {
                value: e.value,
                expires_at: (e.expiry_ms != 0).then_some(e.expiry_ms),
            },
        ));
        if batch.len() >= 256 && err.is_none() {
            err = apply(client, std::mem::take(&mut batch)).err();
        }
    })
    .map_err(|e| e.to_string())?;
    if let Some(e) = err {
        return Err(e);
    }
    apply(client, batch)?;
    // Keys the primary does not have go.
    let mut gone = Vec::new();
    for s in 0..client.stripes() {
        client
            .scan_stripe(s, |k, _, _| {
                if !keep.contains(k) {
                    gone.push(k.to_vec());
                }
            })
            .map_err(|e| e.to_string())?;
    }
    for chunk in gone.chunks(256) {
        client.remove_many(chunk).map_err(|e| e.to_string())?;
    }
    Ok(n)
}

/// Apply writes as one transaction.
fn apply(client: &Client, writes: Vec<(Vec<u8>, KvWrite)>) -> Res<()> {
    if writes.is_empty() {
        return Ok(());
    }
    if let [(
        k,
        KvWrite::Put {
            value,
            expires_at: None,
        },
    )] = &writes[..]
    {
        return client
            .put(k, value)
            .map_err(|e| format!("applying the primary's write: {e}"));
    }
    let keys: Vec<&[u8]> = writes.iter().map(|(k, _)| k.as_slice()).collect();
    let none: &[(&[u8], kvshm::Watch)] = &[];
    client
        .transact(none, &keys, |_| {
            Ok((
                writes.iter().map(|(_, w)| w.clone()).enumerate().collect(),
                (),
            ))
        })
        .map_err(|e| format!("applying the primary's writes: {e}"))
}

/// A command of the stream as a write (`None`: nothing to apply).
fn as_write(args: &[Vec<u8>]) -> Res<Vec<(Vec<u8>, KvWrite)>> {
    let name = String::from_utf8_lossy(&args[0]).to_ascii_lowercase();
    let num = |b: &[u8]| -> Res<u64> {
        std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad number in {name}"))
    };
    Ok(match name.as_str() {
        "set" if args.len() >= 3 => {
            let mut expires_at = None;
            let mut i = 3;
            while i < args.len() {
                let opt = String::from_utf8_lossy(&args[i]).to_ascii_lowercase();
                match opt.as_str() {
                    "pxat" if i + 1 < args.len() => expires_at = Some(num(&args[i + 1])?),
                    // From the network: saturating, an absurd time is refused by the store.
                    "exat" if i + 1 < args.len() => {
                        expires_at = Some(num(&args[i + 1])?.saturating_mul(1000))
                    }
                    "px" if i + 1 < args.len() => {
                        expires_at = Some(kvshm::now_ms().saturating_add(num(&args[i + 1])?))
                    }
                    "ex" if i + 1 < args.len() => {
                        expires_at = Some(
                            kvshm::now_ms().saturating_add(num(&args[i + 1])?.saturating_mul(1000)),
                        )
                    }
                    _ => return Err(format!("SET option {opt} in the stream is not supported")),
                }
                i += 2;
            }
            vec![(
                args[1].clone(),
                KvWrite::Put {
                    value: args[2].clone(),
                    expires_at,
                },
            )]
        }
        "del" | "unlink" => args[1..]
            .iter()
            .map(|k| (k.clone(), KvWrite::Remove))
            .collect(),
        _ => return Err(format!("command {name} in the stream is not supported")),
    })
}

fn stream(
    link: &Link,
    client: &Client,
    r: &mut BufReader<TcpStream>,
    w: &mut TcpStream,
) -> Res<()> {
    r.get_ref()
        .set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| e.to_string())?;
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 16);
    // What BufReader already holds belongs to the stream.
    buf.extend_from_slice(r.buffer());
    let held = r.buffer().len();
    r.consume(held);
    // No argument longer than the store's longest key or value can be applied: a longer bulk
    // is refused by the parser before it is buffered.
    let (max_key, max_value) = client.limits();
    let limits = Limits {
        max_bulk: max_key.max(max_value),
    };
    let mut multi: Option<Vec<(Vec<u8>, KvWrite)>> = None;
    // Bytes of a MULTI block read but not applied yet: the offset moves past them only when
    // its EXEC applied them (a link lost in between resumes before the MULTI).
    let mut in_multi = 0u64;
    let persist = client.has_changelog();
    let mut last_ack = Instant::now();
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        if link.stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        // Every complete command in the buffer.
        let mut consumed = 0;
        loop {
            let mut parser = Parser::default();
            match parser.parse(&buf[consumed..], &limits) {
                Ok(Parsed::Command { .. }) => {
                    let args = parser.take_args(&buf[consumed..]);
                    let len = parser.frame_start();
                    consumed += len;
                    let name = String::from_utf8_lossy(&args[0]).to_ascii_lowercase();
                    match name.as_str() {
                        "ping" | "select" => {}
                        "replconf" => {
                            if args.len() >= 2 && args[1].eq_ignore_ascii_case(b"getack") {
                                // The offset acknowledged includes this very command (Redis
                                // counts it before replying).
                                link.offset.fetch_add(len as u64, Ordering::Relaxed);
                                ack(link, w)?;
                                last_ack = Instant::now();
                                continue;
                            }
                        }
                        "multi" => {
                            multi = Some(Vec::new());
                            in_multi = len as u64;
                            continue;
                        }
                        "exec" => {
                            apply(client, multi.take().unwrap_or_default())?;
                            link.offset.fetch_add(in_multi, Ordering::Relaxed);
                            in_multi = 0;
                        }
                        "flushall" | "flushdb" => {
                            client.clear().map_err(|e| e.to_string())?;
                        }
                        _ => {
                            let writes = as_write(&args)?;
                            if let Some(m) = multi.as_mut() {
                                m.extend(writes);
                                in_multi += len as u64;
                                continue;
                            }
                            apply(client, writes)?;
                        }
                    }
                    link.offset.fetch_add(len as u64, Ordering::Relaxed);
                }
                Ok(Parsed::Empty { .. }) => {
                    let len = parser.frame_start();
                    if len == 0 {
                        break;
                    }
                    consumed += len;
                    link.offset.fetch_add(len as u64, Ordering::Relaxed);
                }
                Ok(Parsed::Incomplete) => break,
                Err(e) => return Err(format!("bad stream from the primary: {}", e.0)),
            }
        }
        buf.drain(..consumed);
        if persist && consumed > 0 {
            // Where the store stands, for a restart to resume from (after what it applied:
            // replaying a little twice is harmless, the stream's writes are absolute).
            client
                .set_replication_offset(link.offset.load(Ordering::Relaxed))
                .map_err(|e| e.to_string())?;
        }
        if last_ack.elapsed() >= Duration::from_secs(1) {
            ack(link, w)?;
            last_ack = Instant::now();
        }
        match r.get_mut().read(&mut chunk) {
            Ok(0) => return Err("the primary closed the connection".into()),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                *link.last_io.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                if link
                    .last_io
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .elapsed()
                    > Duration::from_secs(60)
                {
                    return Err("no data from the primary for 60 s".into());
                }
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn ack(link: &Link, w: &mut TcpStream) -> Res<()> {
    let off = link.offset.load(Ordering::Relaxed).to_string();
    w.write_all(&frame(&[b"REPLCONF", b"ACK", off.as_bytes()]))
        .map_err(|e| format!("sending ACK: {e}"))
}
