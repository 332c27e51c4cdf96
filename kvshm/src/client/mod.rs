//! `Client`: attach to a hosted store and run data operations directly on shared memory.
//!
//! - `mod.rs`: attaching, identity, counters, slot recovery, detaching;
//! - `read.rs`: the lock-free reads (`get`, `contains`, `get_many`, `scan`, ...);
//! - `write.rs`: the transactional writes (`put`, `remove`, `put_many`, `remove_many`);
//! - `versioned.rs`: versions, conditional writes, `incr`/`append`/`update`, `commit_if`,
//!   `wait_changed`;
//! - `entry.rs`: what protocol servers build on (`modify_entry`, `transact`, `watch`,
//!   `scan_stripe`, `clear`);
//! - `expiry.rs`: TTLs and the expiry pass; `evict.rs`: eviction policies, and the retry of a
//!   write that met a full store.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, MutexGuard};

use crate::alloc::Allocator;
use crate::cache::BlockCache;
use crate::config::default_dir;
use crate::error::{Error, Result};
use crate::layout::*;
use crate::recovery;
use crate::segment;
use crate::session::Session;
use crate::slots::{self, slot_list, SlotRef};
use crate::store::Store;

mod entry;
mod evacuate;
mod evict;
mod expiry;
mod read;
mod versioned;
mod write;

pub use entry::{Change, Entry, Record, Watch, Write};
pub use evict::Policy;
pub use expiry::Ttl;
pub use versioned::{format_i64, parse_i64, WaitResult};

pub(crate) use write::WriteOp;

const R: Ordering = Ordering::Relaxed;
const REL: Ordering = Ordering::Release;
const ACQ: Ordering = Ordering::Acquire;

/// A process's attachment to a store. `Send + Sync`: share it between threads (reads run
/// in parallel and lock-free; writes of one `Client` are serialised by an in-process mutex,
/// writes of different clients/processes only contend per stripe).
///
/// **fork:** a `Client` belongs to the process that opened it. In a child created by `fork`
/// (multiprocessing, preforking servers) every operation of an inherited `Client` returns
/// [`Error::Forked`](crate::Error::Forked) and dropping it touches nothing shared; open a new
/// one in the child. The parent is unaffected, and its death is seen by others as promptly as
/// without the fork.
///
/// ```no_run
/// let c = kvshm::Client::open("orders")?;
/// c.put(b"k", b"v")?;
/// assert_eq!(c.get(b"k")?.as_deref(), Some(&b"v"[..]));
/// # Ok::<(), kvshm::Error>(())
/// ```
#[derive(Debug)]
pub struct Client {
    pub(crate) st: Store,
    slot: Option<SlotRef>,
    /// The write mutex; it owns the client's block cache (`cache.rs`).
    write: Mutex<BlockCache>,
    /// `segment::fork_generation()` and pid when this client was opened: in a forked child
    /// the generation differs, and every operation returns `Error::Forked`.
    fork_generation: u64,
    pid: u64,
    /// This client applies a replication stream: it may write a replica store.
    applier: std::sync::atomic::AtomicBool,
    /// The thread that counts in the slot's `counters` with plain stores ([`thread_token`]
    /// of the first thread that counted; 0 = none yet). Other threads count with `fetch_add`
    /// in `counters_shared`.
    counting_thread: std::sync::atomic::AtomicUsize,
}

/// A number for the calling thread, unique among the threads alive (the address of a
/// thread-local; a thread started later may reuse that of one that ended, which then counts
/// no more).
#[inline]
fn thread_token() -> usize {
    thread_local! {
        static TOKEN: u8 = const { 0 };
    }
    TOKEN.with(|t| t as *const u8 as usize)
}

impl Client {
    /// Attach to store `name` in [`default_dir`] for reading and writing.
    pub fn open(name: &str) -> Result<Client> {
        Client::open_in(default_dir(), name)
    }

    /// Attach to store `name` in `dir` for reading and writing.
    pub fn open_in(dir: impl AsRef<Path>, name: &str) -> Result<Client> {
        let path = segment::store_path(dir.as_ref(), name)?;
        Client::from_store(Store::attach(&path, true)?)
    }

    /// Attach read-only: the segment is mapped without write permission and nothing is ever
    /// written to it (no client slot, no counters).
    pub fn open_read_only(name: &str) -> Result<Client> {
        Client::open_read_only_in(default_dir(), name)
    }

    /// [`Client::open_read_only`] in `dir`.
    pub fn open_read_only_in(dir: impl AsRef<Path>, name: &str) -> Result<Client> {
        let path = segment::store_path(dir.as_ref(), name)?;
        Ok(Client::new(Store::attach(&path, false)?, None))
    }

    fn new(st: Store, slot: Option<SlotRef>) -> Client {
        let flush_seen = st.mem.header().cache_flush.load(R);
        Client {
            st,
            slot,
            write: Mutex::new(BlockCache::new(flush_seen)),
            fork_generation: segment::fork_generation(),
            pid: segment::pid(),
            applier: std::sync::atomic::AtomicBool::new(false),
            counting_thread: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// `Err(Forked)` in a child process that inherited this client through `fork`. One
    /// relaxed load: every operation starts with it.
    #[inline]
    pub(crate) fn not_forked(&self) -> Result<()> {
        if segment::fork_generation() == self.fork_generation {
            Ok(())
        } else {
            Err(Error::Forked {
                opened_by: self.pid,
            })
        }
    }

    pub(crate) fn from_store(st: Store) -> Result<Client> {
        let slot = slots::claim_slot(&st)?;
        let c = Client::new(st, Some(slot));
        let s = c.session()?;
        log::info!(
            "client {} (pid {}, slot {}) attached to {}",
            s.slot.client_id.load(R),
            std::process::id(),
            s.me,
            c.st.path.display()
        );
        Ok(c)
    }

    /// This client's session (its slot), or an error for a read-only client.
    #[inline(always)]
    pub(crate) fn session(&self) -> Result<Session<'_>> {
        self.not_forked()?;
        let r = self.slot.ok_or_else(|| {
            Error::InvalidArgument("this client is read-only (open it with Client::open)".into())
        })?;
        slots::session(&self.st, r)
    }

    /// This client's session with its block cache, for a caller holding the write mutex
    /// `g`. Flushes the cache first if the host asked for it since the last flush.
    // Always inlined: out of line it cost every write ~30 instructions (callgrind, ops_driver).
    #[inline(always)]
    pub(crate) fn session_w<'g>(&'g self, g: &'g WriteGuard<'_>) -> Result<Session<'g>> {
        if self.st.mem.header().replica.load(R) != 0 && !self.applier.load(R) {
            return Err(Error::ReadOnly);
        }
        let mut s = self.session()?;
        s.cache = Some(&*g.mutex);
        Allocator::new(&s).flush_cache_if_asked()?;
        Ok(s)
    }

    /// The in-process write mutex: one transaction log per slot, so one writer at a time.
    /// Every section of this client that takes segment locks runs under it; if such a section
    /// panics, the guard recovers the slot's own transaction and locks before it lets go (see
    /// [`WriteGuard`]).
    pub(crate) fn guard(&self) -> WriteGuard<'_> {
        WriteGuard {
            client: self,
            mutex: self.write.lock().unwrap_or_else(|p| p.into_inner()),
        }
    }

    /// Add to this client's counters; the slot is looked up once per operation. Read-only
    /// clients count nothing (they never write to the segment).
    ///
    /// One thread (the first that counts) adds with a plain load and store: a locked
    /// read-modify-write costs ~5 ns on this project's machines, and a get counted three
    /// (gets, hits, bytes out; ~10% of a cached get). Concurrent threads of the same client
    /// would lose each other's counts that way, so every other thread adds atomically, in
    /// the slot's second lane; readers add the two ([`Slot::counter`]).
    #[inline(always)]
    fn count(&self, adds: &[(Counter, u64)]) {
        let Some(r) = self.slot else { return };
        let Ok(s) = self.st.mem.slot_at(r.off) else {
            return;
        };
        let me = thread_token();
        let owner = self.counting_thread.load(R);
        let plain = owner == me
            || (owner == 0 && self.counting_thread.compare_exchange(0, me, R, R).is_ok());
        if plain {
            for &(c, n) in adds {
                if n != 0 {
                    let w = &s.counters[c as usize];
                    w.store(w.load(R).wrapping_add(n), R);
                }
            }
        } else {
            for &(c, n) in adds {
                if n != 0 {
                    s.counters_shared[c as usize].fetch_add(n, R);
                }
            }
        }
    }

    /// Per-operation trace log line naming this client (`RUST_LOG=kvshm=trace`). Nothing is
    /// computed unless trace logging is on.
    #[inline(always)]
    fn trace(&self, op: &str, key: &[u8], detail: impl std::fmt::Display) {
        if log::log_enabled!(target: "kvshm::ops", log::Level::Trace) {
            self.trace_line(op, key, &detail);
        }
    }

    #[cold]
    #[inline(never)]
    fn trace_line(&self, op: &str, key: &[u8], detail: &dyn std::fmt::Display) {
        log::trace!(
            target: "kvshm::ops",
            "client {} (pid {}): {op} {} {detail}",
            self.client_id().unwrap_or(0),
            std::process::id(),
            key.escape_ascii()
        );
    }

    /// This attachment's client id (as in logs and `stats`), `None` when read-only.
    pub fn client_id(&self) -> Option<u64> {
        self.session().ok().map(|s| s.slot.client_id.load(R))
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.st.path
    }

    /// Longest key and value the store accepts.
    pub fn limits(&self) -> (usize, usize) {
        (self.st.max_key, self.st.max_value)
    }

    /// The index stripe `key` belongs to (for tests and diagnostics).
    /// Lock takes of this client (this attachment, in this process) that did not succeed at
    /// once, and how long they waited in all: a contention profile. Counted since attach.
    pub fn lock_waits(&self) -> crate::store::LockWaitStats {
        self.st.lock_waits.stats()
    }

    #[doc(hidden)]
    pub fn stripe_of_key(&self, key: &[u8]) -> usize {
        self.st.stripe_of(self.st.hash(key))
    }

    /// Whether this client was opened read-only.
    pub fn is_read_only(&self) -> bool {
        self.slot.is_none()
    }

    /// Make the store a read-only replica (`on`), or writable again: while it is one, writes
    /// of every client but those marked with [`Client::set_replication_applier`] fail with
    /// [`Error::ReadOnly`] (a write already past its check finishes). For kvhost's
    /// `--replica-of`; other processes see the change at their next write.
    pub fn set_replica(&self, on: bool) -> Result<()> {
        self.not_forked()?;
        if self.is_read_only() {
            return Err(Error::InvalidArgument(
                "a read-only client cannot change the store".into(),
            ));
        }
        self.st
            .mem
            .header()
            .replica
            .store(u64::from(on), Ordering::Release);
        Ok(())
    }

    /// Whether the store is a read-only replica now.
    pub fn is_replica(&self) -> bool {
        self.st.mem.header().replica.load(Ordering::Acquire) != 0
    }

    /// Let this client write while the store is a replica: the client that applies the
    /// replication stream.
    pub fn set_replication_applier(&self, on: bool) {
        self.applier.store(on, R);
    }

    /// The distinct stripes of `hashes`, ascending (the order every writer locks them in).
    fn stripes_of(&self, hashes: &[u64]) -> Vec<usize> {
        let mut stripes: Vec<usize> = hashes.iter().map(|&h| self.st.stripe_of(h)).collect();
        stripes.sort_unstable();
        stripes.dedup();
        stripes
    }

    /// Recover every attached-but-dead client now (normally done lazily by whoever waits on
    /// their locks, and by the host's housekeeping). Returns how many were recovered.
    pub fn recover_dead_clients(&self) -> Result<usize> {
        let sess = self.session()?;
        let _g = self.guard();
        slots::repair_slot_pages(&self.st)?;
        let mut n = 0;
        for (idx, off) in slot_list(&self.st) {
            if idx == sess.me {
                continue;
            }
            let s = self.st.mem.slot_at(off)?;
            if s.state.load(ACQ) != SLOT_ALIVE {
                continue;
            }
            let byte = segment::SLOT_LOCK_BASE + idx as u64;
            if segment::ofd_try_lock(&self.st.file, byte)? {
                let r = recovery::recover_slot(&sess, idx);
                segment::ofd_unlock(&self.st.file, byte);
                if r? {
                    n += 1;
                }
            }
        }
        Ok(n)
    }
}

/// The write mutex, held. Dropped while the thread panics (a bug, or a debug assertion, inside
/// a section that holds segment locks), it first recovers this client's own slot
/// (`recovery::recover_own`): lock guards leave their locks held during a panic, and a live
/// owner is never robbed, so without this every other process would wait forever.
pub(crate) struct WriteGuard<'c> {
    client: &'c Client,
    mutex: MutexGuard<'c, BlockCache>,
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        if let Ok(s) = self.client.session() {
            if let Err(e) = recovery::recover_own(&s) {
                log::error!("recovery after a panic failed: {e}");
            }
        }
        // Recovery gave the slot's cached blocks back (or left them to the next recovery).
        self.mutex.reset();
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // In a forked child (`session` fails): the slot is the parent's, leave it alone.
        let Ok(sess) = self.session() else { return };
        let s = sess.slot;
        let h = self.st.mem.header();
        if s.txn_state.load(R) != TXN_IDLE {
            // Only possible after a panic mid-operation: leave the slot to recovery, which
            // will roll back or complete it once our byte lock goes with the descriptor.
            log::error!("client slot {} detached with an open transaction", sess.me);
            return;
        }
        let cache = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let flushed = Allocator::new(&Session {
            cache: Some(&*cache),
            ..sess
        })
        .flush_cache();
        drop(cache);
        if let Err(e) = flushed {
            // Left to recovery, which frees what the cache still holds once our byte lock
            // goes with the descriptor.
            log::error!("client slot {}: block cache not flushed: {e}", sess.me);
            return;
        }
        for (i, f) in h.folded.iter().enumerate() {
            f.fetch_add(s.take_counter(i), R);
        }
        log::info!(
            "client {} (pid {}, slot {}) detached",
            s.client_id.load(R),
            s.pid.load(R),
            sess.me
        );
        s.state.store(SLOT_FREE, REL);
        // The byte lock is released when `self.st.file` is closed.
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn client_is_send_and_sync() {
        fn f<T: Send + Sync>() {}
        f::<super::Client>();
    }
}
