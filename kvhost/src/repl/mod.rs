//! Replication through Redis's protocol (issue 18), primary side.
//!
//! Writes reach a store from every local process straight through shared memory, so kvhost
//! learns of them from the store's change log (`kvshm::Client::read_changes`, a store made
//! with `--changelog SIZE`). A feeder thread turns each committed transaction into the
//! commands a Redis primary would propagate (`SET key value [PXAT ms]`, `DEL key`, wrapped in
//! `MULTI`/`EXEC` when a transaction changed several keys) and appends them to the
//! replication backlog, an in-memory window of the stream (`--repl-backlog-size`) addressed
//! by byte offsets as Redis's is.
//!
//! A replica (a kvhost or a stock `redis-server --replicaof`) connects as a client, sends
//! `REPLCONF`s and `PSYNC replid offset`. If it asks for our replication id and an offset
//! still in the backlog it gets `+CONTINUE` and the stream from there (partial resync);
//! otherwise `+FULLRESYNC replid offset`, an RDB of the store (`rdb.rs`) and the stream from
//! that offset. Values in the stream are absolute (a SET carries the whole value and its
//! absolute expiry), so a write that lands while the RDB is being made and appears in both
//! is applied twice harmlessly. Replicas acknowledge with `REPLCONF ACK offset`, which
//! `WAIT` and `INFO replication` read.
//!
//! If the change log moves past the feeder (it fell more than the log's size behind), or a
//! transaction was too big for the log, the stream has a gap: the feeder takes a new
//! replication id and every replica starts over with a full resync.

pub mod rdb;
pub mod replica;

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvshm::{ChangeBatch, ChangeRead, Client};

/// How often the stream carries a PING when nothing else happens (Redis's
/// `repl-ping-replica-period`): replicas time out without traffic.
const PING_PERIOD: Duration = Duration::from_secs(10);

/// A new random id of 40 hex characters, as Redis's replication and run ids are (also the
/// server's INFO `run_id`).
pub fn new_replid() -> String {
    let mut s = String::with_capacity(40);
    for _ in 0..5 {
        let _ = write!(s, "{:08x}", random_u32());
    }
    s
}

fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish() as u32
}

/// The window of the replication stream kept in memory.
#[derive(Debug)]
struct Backlog {
    buf: VecDeque<u8>,
    /// `master_repl_offset`: bytes of the stream so far (the offset after the last byte).
    end: u64,
    cap: usize,
}

impl Backlog {
    fn start(&self) -> u64 {
        self.end - self.buf.len() as u64
    }

    fn push(&mut self, bytes: &[u8]) {
        self.buf.extend(bytes);
        self.end += bytes.len() as u64;
        let over = self.buf.len().saturating_sub(self.cap);
        self.buf.drain(..over);
    }
}

/// A connected replica, as INFO and WAIT see it.
#[derive(Debug, Clone)]
pub struct ReplicaInfo {
    pub ip: String,
    pub port: u16,
    /// The last offset it acknowledged.
    pub ack: u64,
    /// "wait_bgsave" while its full sync is being prepared, "online" once streaming.
    pub state: &'static str,
    pub last_ack: Instant,
}

/// The replication stream of one store: what every replica connection reads from.
#[derive(Debug)]
pub struct Feed {
    replid: Mutex<String>,
    backlog: Mutex<Backlog>,
    /// The backlog's end offset, for replica tasks to wait on.
    pub offset_tx: tokio::sync::watch::Sender<u64>,
    /// Bumped when the stream restarts with a new replication id.
    pub generation: AtomicU64,
    /// The change log position the feeder has consumed up to.
    pub clog_pos: AtomicU64,
    /// Full and partial resyncs served, stream restarts.
    pub full_syncs: AtomicU64,
    pub partial_syncs: AtomicU64,
    pub restarts: AtomicU64,
    replicas: Mutex<BTreeMap<u64, ReplicaInfo>>,
    stop: AtomicBool,
}

/// What a PSYNC asked for.
#[derive(Debug, Clone)]
pub struct Psync {
    pub replid: String,
    /// The first byte wanted (Redis's `reploff + 1`), -1 for none.
    pub offset: i64,
}

impl Feed {
    /// Start feeding from the change log of the store `client` is attached to (from its head
    /// now: what was written before is sent by a full resync).
    pub fn start(
        dir: std::path::PathBuf,
        name: String,
        backlog_size: usize,
    ) -> kvshm::Result<Arc<Feed>> {
        let client = Client::open_in(&dir, &name)?;
        let pos = client.changelog_head()?;
        let (offset_tx, _) = tokio::sync::watch::channel(0);
        let feed = Arc::new(Feed {
            replid: Mutex::new(new_replid()),
            backlog: Mutex::new(Backlog {
                buf: VecDeque::new(),
                end: 0,
                cap: backlog_size.max(1 << 16),
            }),
            offset_tx,
            generation: AtomicU64::new(0),
            clog_pos: AtomicU64::new(pos),
            full_syncs: AtomicU64::new(0),
            partial_syncs: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            replicas: Mutex::new(BTreeMap::new()),
            stop: AtomicBool::new(false),
        });
        let f = feed.clone();
        std::thread::Builder::new()
            .name("kvhost-repl-feed".into())
            .spawn(move || f.run(client, pos))
            .map_err(kvshm::Error::Io)?;
        Ok(feed)
    }

    /// Stop the feeder thread.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// The current replication id.
    pub fn replid(&self) -> String {
        self.replid
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// `master_repl_offset`.
    pub fn offset(&self) -> u64 {
        self.backlog.lock().unwrap_or_else(|e| e.into_inner()).end
    }

    /// (first byte offset, bytes held, capacity) of the backlog.
    pub fn backlog_info(&self) -> (u64, u64, u64) {
        let b = self.backlog.lock().unwrap_or_else(|e| e.into_inner());
        (b.start(), b.buf.len() as u64, b.cap as u64)
    }

    /// The connected replicas.
    pub fn replicas(&self) -> Vec<ReplicaInfo> {
        self.replicas
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    fn append(&self, bytes: &[u8]) {
        let end = {
            let mut b = self.backlog.lock().unwrap_or_else(|e| e.into_inner());
            b.push(bytes);
            b.end
        };
        self.offset_tx.send_replace(end);
    }

    /// Bytes of the stream from `from` on (at most `max`); `None` if `from` is no longer (or
    /// not yet) in the backlog.
    pub fn read_from(&self, from: u64, max: usize) -> Option<Vec<u8>> {
        let b = self.backlog.lock().unwrap_or_else(|e| e.into_inner());
        if from < b.start() || from > b.end {
            return None;
        }
        let skip = (from - b.start()) as usize;
        let n = (b.buf.len() - skip).min(max);
        let (x, y) = b.buf.as_slices();
        let mut out = Vec::with_capacity(n);
        if skip < x.len() {
            let take = n.min(x.len() - skip);
            out.extend_from_slice(&x[skip..skip + take]);
            out.extend_from_slice(&y[..n - take]);
        } else {
            let s = skip - x.len();
            out.extend_from_slice(&y[s..s + n]);
        }
        Some(out)
    }

    /// Ask every replica to acknowledge now (`REPLCONF GETACK *` in the stream).
    pub fn request_acks(&self) {
        self.append(b"*3\r\n$8\r\nREPLCONF\r\n$6\r\nGETACK\r\n$1\r\n*\r\n");
    }

    /// The stream has a gap: a new replication id, replicas start over.
    fn restart(&self, why: &str) {
        let id = new_replid();
        log::error!("replication stream restarts with id {id}: {why}; replicas resync in full");
        *self.replid.lock().unwrap_or_else(|e| e.into_inner()) = id;
        self.restarts.fetch_add(1, Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::Relaxed);
        let end = self.offset();
        self.offset_tx.send_replace(end);
    }

    fn run(self: Arc<Self>, client: Client, mut pos: u64) {
        let mut batches: Vec<ChangeBatch> = Vec::new();
        let mut enc = Vec::with_capacity(1 << 16);
        let mut last_traffic = Instant::now();
        let mut waiting_since: Option<Instant> = None;
        while !self.stop.load(Ordering::Relaxed) {
            batches.clear();
            let r = match client.read_changes(pos, 512, &mut batches) {
                Ok(r) => r,
                Err(e) => {
                    log::error!("replication feed: reading the change log: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            enc.clear();
            let mut gap = None;
            for b in &batches {
                if b.overflow {
                    gap = Some(format!(
                        "transaction {} was too big for the change log",
                        b.seq
                    ));
                    break;
                }
                encode(b, &mut enc);
            }
            if !enc.is_empty() {
                self.append(&enc);
                last_traffic = Instant::now();
            }
            if let Some(last) = batches.last() {
                pos = last.next;
            }
            match r {
                ChangeRead::UpTo { next } => {
                    pos = next;
                    waiting_since = None;
                }
                ChangeRead::Waiting { next } => {
                    pos = next;
                    // A writer between its append and its commit (microseconds), or a stopped
                    // or dead one: recovery (the host's, or ours after a while) resolves a
                    // dead one's entry.
                    let since = *waiting_since.get_or_insert_with(Instant::now);
                    if since.elapsed() < Duration::from_millis(1) {
                        std::thread::yield_now();
                    } else {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    if since.elapsed() > Duration::from_millis(100) {
                        let _ = client.recover_dead_clients();
                        waiting_since = Some(Instant::now());
                    }
                }
                ChangeRead::Lost { oldest } => {
                    gap = Some(format!("the change log moved past position {pos}"));
                    pos = oldest;
                }
            }
            if let Some(why) = gap {
                pos = client.changelog_head().unwrap_or(pos);
                self.restart(&why);
            }
            self.clog_pos.store(pos, Ordering::Release);
            if last_traffic.elapsed() >= PING_PERIOD {
                self.append(b"*1\r\n$4\r\nPING\r\n");
                last_traffic = Instant::now();
            }
            if batches.is_empty() && waiting_since.is_none() {
                // Asleep until a writer appends (woken by it), at most until the next PING.
                let left = PING_PERIOD.saturating_sub(last_traffic.elapsed());
                if let Err(e) = client.wait_changes(pos, left.max(Duration::from_millis(10))) {
                    log::error!("replication feed: waiting for changes: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }

    /// Register replica connection `id` (before its sync starts).
    pub fn add_replica(&self, id: u64, ip: String, port: u16) {
        self.replicas
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                id,
                ReplicaInfo {
                    ip,
                    port,
                    ack: 0,
                    state: "wait_bgsave",
                    last_ack: Instant::now(),
                },
            );
    }

    fn update_replica(&self, id: u64, f: impl FnOnce(&mut ReplicaInfo)) {
        if let Some(r) = self
            .replicas
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&id)
        {
            f(r)
        }
    }

    /// Forget replica connection `id`.
    pub fn remove_replica(&self, id: u64) {
        self.replicas
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    /// How many replicas acknowledged at least `offset`.
    pub fn acked(&self, offset: u64) -> usize {
        self.replicas
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|r| r.ack >= offset)
            .count()
    }

    /// The `# Replication` section of INFO for a primary.
    pub fn info(&self) -> String {
        let (first, hist, cap) = self.backlog_info();
        let reps = self.replicas();
        let mut s = String::from("# Replication\r\nrole:master\r\n");
        let _ = write!(s, "connected_slaves:{}\r\n", reps.len());
        for (i, r) in reps.iter().enumerate() {
            let _ = write!(
                s,
                "slave{i}:ip={},port={},state={},offset={},lag={}\r\n",
                r.ip,
                r.port,
                r.state,
                r.ack,
                r.last_ack.elapsed().as_secs()
            );
        }
        let _ = write!(
            s,
            "master_failover_state:no-failover\r\nmaster_replid:{}\r\n\
             master_replid2:0000000000000000000000000000000000000000\r\n\
             master_repl_offset:{}\r\nsecond_repl_offset:-1\r\nrepl_backlog_active:1\r\n\
             repl_backlog_size:{cap}\r\nrepl_backlog_first_byte_offset:{}\r\n\
             repl_backlog_histlen:{hist}\r\n",
            self.replid(),
            first + hist,
            first + 1,
        );
        s
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.stop();
    }
}

fn bulk(out: &mut Vec<u8>, b: &[u8]) {
    out.push(b'$');
    out.extend_from_slice(kvshm::format_i64(b.len() as i64, &mut [0; 20]));
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(b);
    out.extend_from_slice(b"\r\n");
}

fn array(out: &mut Vec<u8>, n: usize) {
    out.push(b'*');
    out.extend_from_slice(kvshm::format_i64(n as i64, &mut [0; 20]));
    out.extend_from_slice(b"\r\n");
}

/// One committed transaction as the commands a Redis primary propagates.
pub fn encode(b: &ChangeBatch, out: &mut Vec<u8>) {
    let multi = b.changes.len() > 1;
    if multi {
        out.extend_from_slice(b"*1\r\n$5\r\nMULTI\r\n");
    }
    for c in &b.changes {
        match &c.value {
            Some(v) if c.expiry_ms != 0 => {
                array(out, 5);
                bulk(out, b"SET");
                bulk(out, &c.key);
                bulk(out, v);
                bulk(out, b"PXAT");
                bulk(out, kvshm::format_i64(c.expiry_ms as i64, &mut [0; 20]));
            }
            Some(v) => {
                array(out, 3);
                bulk(out, b"SET");
                bulk(out, &c.key);
                bulk(out, v);
            }
            None => {
                array(out, 2);
                bulk(out, b"DEL");
                bulk(out, &c.key);
            }
        }
    }
    if multi {
        out.extend_from_slice(b"*1\r\n$4\r\nEXEC\r\n");
    }
}

/// An RDB of the store as it is now (keys that expire are written with their expiry; keys
/// already expired are left out).
pub fn make_rdb(client: &Client) -> kvshm::Result<Vec<u8>> {
    let mut w = rdb::Writer::new();
    let now = kvshm::now_ms();
    for s in 0..client.stripes() {
        client.scan_stripe(s, |k, v, exp| {
            if exp == 0 || exp > now {
                w.string(k, v, exp);
            }
        })?;
    }
    Ok(w.finish())
}

/// Serve a replica connection from its PSYNC on: the sync, then the stream, reading its
/// acknowledgements. Returns when it disconnects, is killed, or the stream restarts.
pub async fn serve_replica<S>(
    shared: &crate::resp::Shared,
    feed: &Arc<Feed>,
    handle: &Arc<crate::resp::ClientHandle>,
    stream: &mut S,
    req: Psync,
    ip: String,
    port: u16,
) -> std::io::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let id = handle.id;
    feed.add_replica(id, ip.clone(), port);
    struct Forget<'a>(&'a Feed, u64);
    impl Drop for Forget<'_> {
        fn drop(&mut self) {
            self.0.remove_replica(self.1);
        }
    }
    let _forget = Forget(feed, id);
    let generation = feed.generation.load(Ordering::Relaxed);
    let replid = feed.replid();
    let (first, hist, _) = feed.backlog_info();
    // From the network: any i64 (i64::MIN must not overflow).
    let want = req.offset.saturating_sub(1).max(0) as u64;
    let mut cursor;
    if req.replid == replid && req.offset >= 1 && want >= first && want <= first + hist {
        cursor = want;
        feed.partial_syncs.fetch_add(1, Ordering::Relaxed);
        log::info!("replica {ip}:{port} (client {id}): partial resync from offset {want}");
        stream
            .write_all(format!("+CONTINUE {replid}\r\n").as_bytes())
            .await?;
    } else {
        cursor = feed.offset();
        feed.full_syncs.fetch_add(1, Ordering::Relaxed);
        log::info!("replica {ip}:{port} (client {id}): full resync at offset {cursor}");
        stream
            .write_all(format!("+FULLRESYNC {replid} {cursor}\r\n").as_bytes())
            .await?;
        // The RDB is made on a blocking thread; meanwhile the stream after `cursor` is kept
        // here (the backlog may move on), and a newline every second keeps the replica's
        // link alive (Redis does the same while it prepares a sync).
        let dir = shared.opts.dir.clone();
        let name = shared.opts.name.clone();
        let mut rdb_task = tokio::task::spawn_blocking(move || {
            let c = Client::open_in(&dir, &name)?;
            make_rdb(&c)
        });
        let mut held: Vec<u8> = Vec::new();
        let limit = 256 << 20;
        let t = Instant::now();
        let rdb = loop {
            tokio::select! {
                r = &mut rdb_task => break r.map_err(std::io::Error::other)?.map_err(std::io::Error::other)?,
                () = tokio::time::sleep(Duration::from_secs(1)) => {
                    stream.write_all(b"\n").await?;
                }
            }
            if let Some(b) = feed.read_from(cursor, usize::MAX) {
                cursor += b.len() as u64;
                held.extend_from_slice(&b);
            }
            if held.len() > limit {
                return Err(std::io::Error::other(
                    "replica output over 256 MB during its sync",
                ));
            }
        };
        if let Some(b) = feed.read_from(cursor, usize::MAX) {
            cursor += b.len() as u64;
            held.extend_from_slice(&b);
        }
        log::info!(
            "replica {ip}:{port}: RDB of {} made in {:?}, sending",
            kvshm::human_bytes(rdb.len() as u64),
            t.elapsed()
        );
        stream
            .write_all(format!("${}\r\n", rdb.len()).as_bytes())
            .await?;
        stream.write_all(&rdb).await?;
        stream.write_all(&held).await?;
        shared
            .counters
            .net_out
            .fetch_add((rdb.len() + held.len()) as u64, Ordering::Relaxed);
    }
    feed.update_replica(id, |r| r.state = "online");
    let mut rx = feed.offset_tx.subscribe();
    let mut inbuf: Vec<u8> = Vec::with_capacity(4096);
    let killed = handle.wake.notified();
    let mut killed = std::pin::pin!(killed);
    loop {
        if handle.killed.load(Ordering::Relaxed)
            || feed.generation.load(Ordering::Relaxed) != generation
        {
            return Ok(());
        }
        match feed.read_from(cursor, 256 << 10) {
            None => {
                log::warn!("replica {ip}:{port} fell behind the backlog; it will resync");
                return Ok(());
            }
            Some(b) if !b.is_empty() => {
                stream.write_all(&b).await?;
                cursor += b.len() as u64;
                shared
                    .counters
                    .net_out
                    .fetch_add(b.len() as u64, Ordering::Relaxed);
                continue;
            }
            Some(_) => {}
        }
        tokio::select! {
            r = rx.changed() => { if r.is_err() { return Ok(()); } }
            r = stream.read_buf(&mut inbuf) => {
                if r? == 0 {
                    return Ok(());
                }
                for ack in parse_acks(&mut inbuf) {
                    feed.update_replica(id, |r| {
                        r.ack = r.ack.max(ack);
                        r.last_ack = Instant::now();
                    });
                }
                if inbuf.len() > 1 << 20 {
                    return Err(std::io::Error::other("replica sent over 1 MB that is not REPLCONF ACK"));
                }
            }
            () = &mut killed => return Ok(()),
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// The offsets of every complete `REPLCONF ACK <offset>` (RESP array or inline) at the start
/// of `buf`, which loses them; other complete commands are skipped.
pub fn parse_acks(buf: &mut Vec<u8>) -> Vec<u64> {
    let mut acks = Vec::new();
    loop {
        let mut parser = crate::resp::proto::Parser::default();
        let limits = crate::resp::proto::Limits { max_bulk: 1 << 20 };
        match parser.parse(buf, &limits) {
            Ok(crate::resp::proto::Parsed::Command { .. }) => {
                let args = parser.take_args(buf);
                if args.len() >= 3
                    && args[0].eq_ignore_ascii_case(b"replconf")
                    && args[1].eq_ignore_ascii_case(b"ack")
                {
                    if let Some(n) = std::str::from_utf8(&args[2])
                        .ok()
                        .and_then(|s| s.parse().ok())
                    {
                        acks.push(n);
                    }
                }
                let done = parser.frame_start();
                buf.drain(..done);
            }
            Ok(crate::resp::proto::Parsed::Empty { .. }) => {
                let done = parser.frame_start();
                if done == 0 {
                    return acks;
                }
                buf.drain(..done);
            }
            _ => return acks,
        }
    }
}

/// WAIT numreplicas timeout: wait until every write committed to the store before the call
/// (by any process) is in the stream, then until `n` replicas acknowledged it or `timeout`
/// passed (`None`: no limit). Returns how many acknowledged.
pub async fn wait(feed: &Feed, client_head: u64, n: usize, timeout: Option<Duration>) -> usize {
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let past =
        |d: Option<tokio::time::Instant>| d.is_some_and(|d| tokio::time::Instant::now() >= d);
    while feed.clog_pos.load(Ordering::Acquire) < client_head && !past(deadline) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let target = feed.offset();
    if feed.acked(target) >= n {
        return feed.acked(target);
    }
    feed.request_acks();
    let mut asked = tokio::time::Instant::now();
    loop {
        let got = feed.acked(target);
        if got >= n || past(deadline) {
            return got;
        }
        if asked.elapsed() > Duration::from_millis(500) {
            feed.request_acks();
            asked = tokio::time::Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
