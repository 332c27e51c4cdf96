//! `Client`: attach to a hosted store and run data operations directly on shared memory.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::crash_point;
use crate::error::{Error, Result};
use crate::index::write_record;
use crate::layout::*;
use crate::segment;
use crate::session::Session;
use crate::store::{Attempt, Store, OPTIMISTIC_READS};
use crate::sync::{lock, seqlock};

const R: Ordering = Ordering::Relaxed;
const REL: Ordering = Ordering::Release;
const ACQ: Ordering = Ordering::Acquire;

/// How long a read-only client keeps retrying a stripe a writer holds before `Error::Busy`.
const READ_ONLY_PATIENCE: Duration = Duration::from_secs(2);

/// The directory stores live in unless told otherwise: `$KVSHM_DIR`, else `/dev/shm`.
pub fn default_dir() -> PathBuf {
    std::env::var_os("KVSHM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(segment::DEFAULT_DIR))
}

#[derive(Debug, Clone, Copy)]
struct SlotRef {
    idx: u32,
    off: u64,
}

/// A process's attachment to a store. `Send + Sync`: share it between threads (reads run
/// in parallel and lock-free; writes of one `Client` are serialised by an in-process mutex,
/// writes of different clients/processes only contend per stripe).
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
    write: Mutex<()>,
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
        Ok(Client {
            st: Store::attach(&path, false)?,
            slot: None,
            write: Mutex::new(()),
        })
    }

    pub(crate) fn from_store(st: Store) -> Result<Client> {
        let slot = claim_slot(&st)?;
        let c = Client {
            st,
            slot: Some(slot),
            write: Mutex::new(()),
        };
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

    pub(crate) fn session(&self) -> Result<Session<'_>> {
        let r = self.slot.ok_or_else(|| {
            Error::InvalidArgument("this client is read-only (open it with Client::open)".into())
        })?;
        Ok(Session {
            st: &self.st,
            me: r.idx,
            slot_off: r.off,
            slot: self.st.mem.slot_at(r.off)?,
        })
    }

    pub(crate) fn guard(&self) -> MutexGuard<'_, ()> {
        self.write.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Add to this client's counters; the slot is looked up once per operation. Read-only
    /// clients count nothing (they never write to the segment).
    #[inline]
    fn count(&self, adds: &[(Counter, u64)]) {
        let Some(r) = self.slot else { return };
        let Ok(s) = self.st.mem.slot_at(r.off) else {
            return;
        };
        for &(c, n) in adds {
            if n != 0 {
                s.counters[c as usize].fetch_add(n, R);
            }
        }
    }

    /// Per-operation trace log line naming this client (`RUST_LOG=kvshm=trace`). Nothing is
    /// computed unless trace logging is on.
    #[inline]
    fn trace(&self, op: &str, key: &[u8], detail: impl std::fmt::Display) {
        if log::log_enabled!(target: "kvshm::ops", log::Level::Trace) {
            log::trace!(
                target: "kvshm::ops",
                "client {} (pid {}): {op} {} {detail}",
                self.client_id().unwrap_or(0),
                std::process::id(),
                key.escape_ascii()
            );
        }
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
    #[doc(hidden)]
    pub fn stripe_of_key(&self, key: &[u8]) -> usize {
        self.st.stripe_of(self.st.hash(key))
    }

    /// Whether this client was opened read-only.
    pub fn is_read_only(&self) -> bool {
        self.slot.is_none()
    }

    // ---- reads ----

    /// The value of `key`, if present. Lock-free; never writes to shared stripes.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let mut out = Vec::new();
        Ok(self.get_into(key, &mut out)?.then_some(out))
    }

    /// Copy the value of `key` into `out` (replacing its contents); returns whether the key was
    /// present. Allocates nothing once `out` has the capacity.
    pub fn get_into(&self, key: &[u8], out: &mut Vec<u8>) -> Result<bool> {
        self.st.check_limits(key, None)?;
        let hash = self.st.hash(key);
        let s = self.st.stripe_of(hash);
        let found = match self.st.read_optimistic(s, hash, key, out, OPTIMISTIC_READS) {
            Some(r) => r?,
            None => self.read_slow(&[s], || {
                let tw = self.st.mem.stripe(s).table.load(R);
                match self.st.probe(tw, hash, key)? {
                    Some(rec) => self.st.read_value(rec, out).map(|_| true),
                    None => Ok(false),
                }
            })?,
        };
        let hit = u64::from(found);
        self.count(&[
            (Counter::Gets, 1),
            (Counter::Hits, hit),
            (Counter::BytesOut, hit * out.len() as u64),
        ]);
        self.trace("get", key, if found { "hit" } else { "miss" });
        Ok(found)
    }

    /// Whether `key` is present.
    pub fn contains(&self, key: &[u8]) -> Result<bool> {
        self.st.check_limits(key, None)?;
        let hash = self.st.hash(key);
        let s = self.st.stripe_of(hash);
        let probe = || {
            let tw = self.st.mem.stripe(s).table.load(R);
            Ok(self.st.probe(tw, hash, key)?.is_some())
        };
        for _ in 0..OPTIMISTIC_READS {
            if let Attempt::Done(r) = self.st.attempt(s, probe) {
                return r;
            }
            std::hint::spin_loop();
        }
        self.read_slow(&[s], probe)
    }

    /// Run `f` with a consistent view of `stripes` (sorted, distinct) when optimistic reads
    /// keep failing: writable clients take the stripe locks; read-only ones wait and retry.
    fn read_slow<T>(&self, stripes: &[usize], mut f: impl FnMut() -> Result<T>) -> Result<T> {
        self.count(&[(Counter::Retries, 1)]);
        if let Ok(sess) = self.session() {
            let _g = self.guard();
            let mut locked = 0;
            let r = (|| {
                for &s in stripes {
                    sess.lock_stripe(s)?;
                    locked += 1;
                }
                f()
            })();
            for &s in &stripes[..locked] {
                lock::unlock(&self.st.mem.stripe(s).lock);
            }
            return r;
        }
        let start = Instant::now();
        while start.elapsed() < READ_ONLY_PATIENCE {
            if let Some(seqs) = self.read_begin_all(stripes) {
                let r = f();
                if self.read_validate_all(stripes, &seqs) {
                    return r;
                }
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        Err(Error::Busy)
    }

    /// Values of all `keys`, as one consistent snapshot (no write lands between them).
    pub fn get_many<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<Vec<Option<Vec<u8>>>> {
        for k in keys {
            self.st.check_limits(k.as_ref(), None)?;
        }
        let hashes: Vec<u64> = keys.iter().map(|k| self.st.hash(k.as_ref())).collect();
        let mut stripes: Vec<usize> = hashes.iter().map(|&h| self.st.stripe_of(h)).collect();
        stripes.sort_unstable();
        stripes.dedup();
        let read_all = || -> Result<Vec<Option<Vec<u8>>>> {
            keys.iter()
                .zip(&hashes)
                .map(|(k, &h)| {
                    let tw = self.st.mem.stripe(self.st.stripe_of(h)).table.load(R);
                    match self.st.probe(tw, h, k.as_ref())? {
                        Some(rec) => {
                            let mut v = Vec::new();
                            self.st.read_value(rec, &mut v)?;
                            Ok(Some(v))
                        }
                        None => Ok(None),
                    }
                })
                .collect()
        };
        let mut result = None;
        for _ in 0..OPTIMISTIC_READS {
            let Some(seqs) = self.read_begin_all(&stripes) else {
                std::thread::yield_now();
                continue;
            };
            let r = read_all();
            if self.read_validate_all(&stripes, &seqs) {
                result = Some(r?);
                break;
            }
        }
        let out = match result {
            Some(v) => v,
            None => self.read_slow(&stripes, read_all)?,
        };
        let hits = out.iter().filter(|v| v.is_some()).count() as u64;
        self.count(&[(Counter::Gets, keys.len() as u64), (Counter::Hits, hits)]);
        Ok(out)
    }

    /// Seqlock snapshot of several stripes (all even), or `None`.
    fn read_begin_all(&self, stripes: &[usize]) -> Option<Vec<u64>> {
        stripes
            .iter()
            .map(|&s| seqlock::read_begin(&self.st.mem.stripe(s).seq))
            .collect()
    }

    fn read_validate_all(&self, stripes: &[usize], seqs: &[u64]) -> bool {
        stripes
            .iter()
            .zip(seqs)
            .all(|(&s, &q)| seqlock::read_validate(&self.st.mem.stripe(s).seq, q))
    }

    /// Number of keys (sum of the stripes' counts; exact when no write is in flight).
    pub fn len(&self) -> u64 {
        (0..self.st.mem.stripe_count())
            .map(|s| self.st.mem.stripe(s).count.load(R))
            .sum()
    }

    /// Whether the store holds no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Call `f(key, value)` for every key starting with `prefix`, stripe by stripe (each stripe
    /// is a consistent view; the whole scan is not a snapshot). `f` returns false to stop.
    pub fn scan(&self, prefix: &[u8], mut f: impl FnMut(&[u8], &[u8]) -> bool) -> Result<()> {
        for s in 0..self.st.mem.stripe_count() {
            let collect = || -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
                let mut out = Vec::new();
                for rec in self.st.stripe_records(s)? {
                    let mut k = Vec::new();
                    self.st.read_key(rec, &mut k)?;
                    if k.starts_with(prefix) {
                        let mut v = Vec::new();
                        self.st.read_value(rec, &mut v)?;
                        out.push((k, v));
                    }
                }
                Ok(out)
            };
            let mut items = None;
            for _ in 0..OPTIMISTIC_READS {
                if let Attempt::Done(r) = self.st.attempt(s, collect) {
                    items = Some(r?);
                    break;
                }
                std::thread::yield_now();
            }
            let items = match items {
                Some(i) => i,
                None => self.read_slow(&[s], collect)?,
            };
            for (k, v) in &items {
                if !f(k, v) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// All keys starting with `prefix` (unordered).
    pub fn keys(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        self.scan(prefix, |k, _| {
            out.push(k.to_vec());
            true
        })?;
        Ok(out)
    }

    // ---- writes ----

    /// Store `value` under `key` (insert or replace). When this returns `Ok`, every process
    /// sees the new value; on `Err` nothing changed.
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.st.check_limits(key, Some(value))?;
        let sess = self.session()?;
        let _g = self.guard();
        let hash = self.st.hash(key);
        let s = self.st.stripe_of(hash);
        let txn = sess.begin(8)?;
        let rec = match txn.alloc(record_size(key.len() as u64, value.len() as u64)) {
            Ok(r) => r,
            Err(e) => {
                txn.cancel()?;
                return Err(e);
            }
        };
        write_record(&self.st, rec, key, value)?;
        crash_point!("put.prepared");
        if let Err(e) = sess.lock_stripe(s) {
            txn.cancel()?;
            return Err(e);
        }
        sess.seq_odd(s);
        crash_point!("put.locked");
        let r = txn
            .log_stripe(s)
            .and_then(|_| txn.index_put(s, hash, key, rec, value.len()));
        if let Err(e) = r {
            txn.abort(&[s])?;
            return Err(e);
        }
        txn.commit();
        sess.seq_even(s);
        lock::unlock(&self.st.mem.stripe(s).lock);
        crash_point!("put.unlocked");
        txn.finish()?;
        self.count(&[(Counter::Puts, 1), (Counter::BytesIn, value.len() as u64)]);
        self.trace("put", key, format_args!("{} bytes", value.len()));
        Ok(())
    }

    /// Remove `key`; returns whether it was present.
    pub fn remove(&self, key: &[u8]) -> Result<bool> {
        self.st.check_limits(key, None)?;
        let sess = self.session()?;
        let hash = self.st.hash(key);
        let s = self.st.stripe_of(hash);
        // A consistent view that shows the key absent is a valid linearisation point.
        let mut scratch = Vec::new();
        if let Some(Ok(false)) = self.st.read_optimistic(s, hash, key, &mut scratch, 4) {
            return Ok(false);
        }
        let _g = self.guard();
        let txn = sess.begin(8)?;
        if let Err(e) = sess.lock_stripe(s) {
            txn.cancel()?;
            return Err(e);
        }
        sess.seq_odd(s);
        let r = txn
            .log_stripe(s)
            .and_then(|_| txn.index_remove(s, hash, key));
        let existed = match r {
            Ok(e) => e,
            Err(e) => {
                txn.abort(&[s])?;
                return Err(e);
            }
        };
        txn.commit();
        sess.seq_even(s);
        lock::unlock(&self.st.mem.stripe(s).lock);
        crash_point!("remove.unlocked");
        txn.finish()?;
        self.count(&[(Counter::Removes, u64::from(existed))]);
        self.trace("remove", key, existed);
        Ok(existed)
    }

    /// Store all pairs, all or nothing: either every pair is visible (at one instant, to
    /// every reader) or, on `Err`, none is. A key given twice takes its last value.
    pub fn put_many<K: AsRef<[u8]>, V: AsRef<[u8]>>(&self, items: &[(K, V)]) -> Result<()> {
        for (k, v) in items {
            self.st.check_limits(k.as_ref(), Some(v.as_ref()))?;
        }
        if items.is_empty() {
            return Ok(());
        }
        let sess = self.session()?;
        let _g = self.guard();
        let hashes: Vec<u64> = items
            .iter()
            .map(|(k, _)| self.st.hash(k.as_ref()))
            .collect();
        let mut stripes: Vec<usize> = hashes.iter().map(|&h| self.st.stripe_of(h)).collect();
        stripes.sort_unstable();
        stripes.dedup();
        let txn = sess.begin(6 * items.len() + 8)?;
        let mut recs = Vec::with_capacity(items.len());
        for (k, v) in items {
            let (k, v) = (k.as_ref(), v.as_ref());
            let rec = match txn.alloc(record_size(k.len() as u64, v.len() as u64)) {
                Ok(r) => r,
                Err(e) => {
                    txn.cancel()?;
                    return Err(e);
                }
            };
            write_record(&self.st, rec, k, v)?;
            recs.push(rec);
        }
        crash_point!("put_many.prepared");
        self.apply_locked(&sess, txn, &stripes, |txn| {
            for &s in &stripes {
                let adds = hashes
                    .iter()
                    .filter(|&&h| self.st.stripe_of(h) == s)
                    .count();
                txn.ensure_room(s, adds as u64)?;
            }
            for (i, (k, v)) in items.iter().enumerate() {
                let s = self.st.stripe_of(hashes[i]);
                txn.index_put(s, hashes[i], k.as_ref(), recs[i], v.as_ref().len())?;
                crash_point!("put_many.applied_one");
            }
            Ok(())
        })?;
        let bytes: usize = items.iter().map(|(_, v)| v.as_ref().len()).sum();
        self.count(&[
            (Counter::Puts, items.len() as u64),
            (Counter::BytesIn, bytes as u64),
        ]);
        self.trace("put_many", b"", format_args!("{} pairs", items.len()));
        Ok(())
    }

    /// Remove all `keys` atomically; returns how many existed.
    pub fn remove_many<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<usize> {
        for k in keys {
            self.st.check_limits(k.as_ref(), None)?;
        }
        if keys.is_empty() {
            return Ok(0);
        }
        let sess = self.session()?;
        let _g = self.guard();
        let hashes: Vec<u64> = keys.iter().map(|k| self.st.hash(k.as_ref())).collect();
        let mut stripes: Vec<usize> = hashes.iter().map(|&h| self.st.stripe_of(h)).collect();
        stripes.sort_unstable();
        stripes.dedup();
        let txn = sess.begin(5 * keys.len() + 8)?;
        let mut removed = 0;
        self.apply_locked(&sess, txn, &stripes, |txn| {
            for (k, &h) in keys.iter().zip(&hashes) {
                if txn.index_remove(self.st.stripe_of(h), h, k.as_ref())? {
                    removed += 1;
                }
                crash_point!("remove_many.applied_one");
            }
            Ok(())
        })?;
        self.count(&[(Counter::Removes, removed as u64)]);
        self.trace(
            "remove_many",
            b"",
            format_args!("{removed} of {} removed", keys.len()),
        );
        Ok(removed)
    }

    /// Lock `stripes` (ascending), run `apply`, and commit, or roll everything back.
    pub(crate) fn apply_locked<'s, 'a>(
        &self,
        sess: &'s Session<'a>,
        txn: crate::session::Txn<'s, 'a>,
        stripes: &[usize],
        apply: impl FnOnce(&crate::session::Txn<'s, 'a>) -> Result<()>,
    ) -> Result<()> {
        let mut locked = 0;
        let r = (|| {
            for &s in stripes {
                sess.lock_stripe(s)?;
                sess.seq_odd(s);
                locked += 1;
                txn.log_stripe(s)?;
            }
            crash_point!("many.locked");
            apply(&txn)
        })();
        if let Err(e) = r {
            txn.abort(&stripes[..locked])?;
            return Err(e);
        }
        txn.commit();
        for &s in stripes {
            sess.seq_even(s);
            lock::unlock(&self.st.mem.stripe(s).lock);
            crash_point!("many.unlocked_one");
        }
        txn.finish()
    }

    /// Recover every attached-but-dead client now (normally done lazily by whoever waits on
    /// their locks, and by the host's housekeeping). Returns how many were recovered.
    pub fn recover_dead_clients(&self) -> Result<usize> {
        let sess = self.session()?;
        let _g = self.guard();
        repair_slot_pages(&self.st)?;
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
                let r = sess.recover_slot(idx);
                segment::ofd_unlock(&self.st.file, byte);
                if r? {
                    n += 1;
                }
            }
        }
        Ok(n)
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let Ok(sess) = self.session() else { return };
        let s = sess.slot;
        let h = self.st.mem.header();
        if s.txn_state.load(R) != TXN_IDLE {
            // Only possible after a panic mid-operation: leave the slot to recovery, which
            // will roll back or complete it once our byte lock goes with the descriptor.
            log::error!("client slot {} detached with an open transaction", sess.me);
            return;
        }
        for (i, c) in s.counters.iter().enumerate() {
            h.folded[i].fetch_add(c.swap(0, R), R);
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

/// Every existing slot: (index, offset).
pub(crate) fn slot_list(st: &Store) -> Vec<(u32, u64)> {
    let mut out = Vec::new();
    for (p, base) in st.mem.header().slot_pages.iter().enumerate() {
        let base = base.load(ACQ);
        if base == 0 {
            break;
        }
        let first = SLOT_PAGE0_SLOTS * ((1u64 << p) - 1);
        for j in 0..(SLOT_PAGE0_SLOTS << p) {
            out.push(((first + j) as u32, base + j * SLOT_SIZE));
        }
    }
    out
}

/// Find a free slot (or a dead client's, recovering it), creating a slot page if all are taken.
fn claim_slot(st: &Store) -> Result<SlotRef> {
    loop {
        for pass in 0..2 {
            for (idx, off) in slot_list(st) {
                let slot = st.mem.slot_at(off)?;
                if pass == 0 && slot.state.load(ACQ) != SLOT_FREE {
                    continue;
                }
                if !segment::ofd_try_lock(&st.file, segment::SLOT_LOCK_BASE + idx as u64)? {
                    continue;
                }
                let sess = Session {
                    st,
                    me: idx,
                    slot_off: off,
                    slot,
                };
                if slot.state.load(ACQ) == SLOT_ALIVE {
                    // Its owner died: we hold its byte, so we are its recoverer.
                    sess.recover_slot(idx)?;
                }
                let h = st.mem.header();
                for c in &slot.counters {
                    c.store(0, R);
                }
                slot.txn_state.store(TXN_IDLE, R);
                slot.log_ext.store(0, R);
                slot.waiting_on.store(0, R);
                slot.client_id
                    .store(h.next_client_id.fetch_add(1, R) + 1, R);
                slot.pid.store(segment::pid(), R);
                slot.start_unix.store(crate::store::now_unix(), R);
                slot.state.store(SLOT_ALIVE, REL);
                return Ok(SlotRef { idx, off });
            }
        }
        grow_slot_pages(st)?;
    }
}

/// Add the next client-slot page (or publish one whose creator died; see
/// [`repair_slot_pages`]).
fn grow_slot_pages(st: &Store) -> Result<()> {
    with_slot_page_lock(st, |h| {
        if publish_orphan_pages(st)? {
            return Ok(());
        }
        let Some(p) = (1..MAX_SLOT_PAGES).find(|&p| h.slot_pages[p].load(ACQ) == 0) else {
            return Err(Error::InvalidArgument(
                "all client slot pages are in use".into(),
            ));
        };
        let entry = CHUNK_SLOT_PAGE | p as u32;
        let k = ((SLOT_PAGE0_SLOTS << p) * SLOT_SIZE).div_ceil(CHUNK_SIZE);
        let idx = st.claim_chunks(k, entry, entry, crate::alloc::Pool::Data)?;
        crash_point!("slots.page_claimed");
        h.slot_pages[p].store(st.chunk_base + idx * CHUNK_SIZE, REL);
        log::debug!(
            "client slot page {p} added ({} slots)",
            SLOT_PAGE0_SLOTS << p
        );
        Ok(())
    })
}

/// Publish slot pages whose creator died after claiming their chunks. Slot pages are created
/// under an OFD byte lock (no client identity needed); the chunk map entries name the page.
pub(crate) fn repair_slot_pages(st: &Store) -> Result<bool> {
    with_slot_page_lock(st, |_| publish_orphan_pages(st))
}

fn with_slot_page_lock<T>(st: &Store, f: impl FnOnce(&Header) -> Result<T>) -> Result<T> {
    let _local = st.slot_page_mutex.lock().unwrap_or_else(|p| p.into_inner());
    segment::ofd_lock_wait(&st.file, segment::SLOT_PAGE_LOCK_BYTE)?;
    let r = f(st.mem.header());
    segment::ofd_unlock(&st.file, segment::SLOT_PAGE_LOCK_BYTE);
    r
}

/// Caller holds the slot-page lock. Returns whether a page was published.
fn publish_orphan_pages(st: &Store) -> Result<bool> {
    let h = st.mem.header();
    let Some(p) = (1..MAX_SLOT_PAGES).find(|&p| h.slot_pages[p].load(ACQ) == 0) else {
        return Ok(false);
    };
    let entry = CHUNK_SLOT_PAGE | p as u32;
    match st.mem.chunk_map().iter().position(|e| e.load(ACQ) == entry) {
        Some(i) => {
            h.slot_pages[p].store(st.chunk_base + i as u64 * CHUNK_SIZE, REL);
            log::warn!("published client slot page {p} left behind by a dead client");
            Ok(true)
        }
        None => Ok(false),
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
