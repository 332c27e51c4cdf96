//! Writes: every one is a transaction (`txn.rs`) applied under its stripes' locks by one path,
//! [`Client::apply_locked`]. New records are written into freshly reserved blocks before any
//! lock is taken; under the locks only table entries and stripe counts change.

use super::Client;
use crate::crash_point;
use crate::error::{Error, Result};
use crate::index::{self, write_record};
use crate::layout::{pad8, record_size, Counter};
use crate::session::{HeldStripes, Session};
use crate::store::{backoff, Attempt};
use crate::sync::change;
use crate::txn::{self, Txn};

/// Which operation runs [`Client::apply_locked`]: it names the crash points on the way.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteOp {
    Put,
    Remove,
    /// `put_many`, `remove_many`, and the host's table compaction.
    Many,
    /// A conditional write or read-modify-write (`versioned.rs`), decided under the lock.
    Modify,
}

impl WriteOp {
    /// Every stripe is locked, odd and logged.
    fn locked(self) {
        match self {
            WriteOp::Put => {
                crash_point!("put.locked");
            }
            WriteOp::Remove => {}
            WriteOp::Many => {
                crash_point!("many.locked");
            }
            WriteOp::Modify => {
                crash_point!("modify.locked");
            }
        }
    }

    /// One stripe was published and unlocked after the commit.
    fn unlocked_one(self) {
        match self {
            WriteOp::Put => {
                crash_point!("put.unlocked");
            }
            WriteOp::Remove => {
                crash_point!("remove.unlocked");
            }
            WriteOp::Many => {
                crash_point!("many.unlocked_one");
            }
            WriteOp::Modify => {
                crash_point!("modify.unlocked");
            }
        }
    }
}

impl Client {
    /// Store `value` under `key` (insert or replace). When this returns `Ok`, every process
    /// sees the new value; on `Err` nothing changed. A TTL the key had is cleared (Redis's
    /// SET); see [`Client::put_with_ttl`].
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.put_meta(key, value, 0)
    }

    /// Store `value` under `key`, expiring `ttl` from now: from then on the key is absent for
    /// every process (whether or not a host runs), and a host's expiry pass frees its memory.
    /// A zero `ttl` is `InvalidArgument` (as Redis refuses `EX 0`).
    pub fn put_with_ttl(&self, key: &[u8], value: &[u8], ttl: std::time::Duration) -> Result<()> {
        self.put_meta(key, value, expiry_of(ttl)?)
    }

    #[inline(always)]
    fn put_meta(&self, key: &[u8], value: &[u8], meta: u64) -> Result<()> {
        self.st.check_limits(key, Some(value))?;
        self.with_room(|| self.put_meta_once(key, value, meta))
    }

    // What a put in place runs (transaction, stripe lock, probe, undo range, copy, commit,
    // release) is `#[inline(always)]` down to the bounds-checked accessors: as ~25 calls it
    // cost ~500 of a put's ~1,500 instructions in prologues, epilogues and results passed
    // through memory (callgrind, `ops_driver put`: 1,509 -> 1,015; docs/PERFORMANCE.md).
    fn put_meta_once(&self, key: &[u8], value: &[u8], meta: u64) -> Result<()> {
        // Before the mutex: in a forked child another thread may have held it at the fork.
        self.not_forked()?;
        let g = self.guard();
        let sess = self.session_w(&g)?;
        let hash = self.st.hash(key);
        let s = self.st.stripe_of(hash);
        let size = record_size(key.len() as u64, value.len() as u64);
        if pad8(key.len() as u64) + pad8(value.len() as u64) <= txn::IN_PLACE_WORDS * 8 {
            // The key's record may take the value in place (`index::put_value`): decided
            // under the stripe lock, where a new record is written if it does not, from a
            // block at hand. If there is none (the store would grow), nothing changed, and
            // the put goes the way below: the block found before the lock is taken.
            let txn = Txn::begin(&sess, txn::log_entries_modify())?;
            let mut done = false;
            self.apply_locked(&sess, txn, &[s], WriteOp::Put, |txn| {
                let r = index::put_value(txn, s, hash, key, value, meta, || txn.alloc_quick(size))?;
                done = r.is_some();
                Ok(())
            })?;
            if done {
                self.count(&[(Counter::Puts, 1), (Counter::BytesIn, value.len() as u64)]);
                self.trace("put", key, format_args!("{} bytes", value.len()));
                return Ok(());
            }
        }
        let txn = Txn::begin(&sess, txn::log_entries_single())?;
        let rec = match txn.alloc(size) {
            Ok(r) => r,
            Err(e) => {
                txn.cancel()?;
                return Err(e);
            }
        };
        write_record(&self.st, rec, key, value, meta)?;
        crash_point!("put.prepared");
        self.apply_locked(&sess, txn, &[s], WriteOp::Put, |txn| {
            index::put(txn, s, hash, key, rec, value.len()).map(|_| ())
        })?;
        self.count(&[(Counter::Puts, 1), (Counter::BytesIn, value.len() as u64)]);
        self.trace("put", key, format_args!("{} bytes", value.len()));
        Ok(())
    }

    /// Remove `key`; returns whether it was present.
    pub fn remove(&self, key: &[u8]) -> Result<bool> {
        self.st.check_limits(key, None)?;
        self.session()?;
        let hash = self.st.hash(key);
        let s = self.st.stripe_of(hash);
        // A consistent view that shows no record of the key is a valid linearisation point
        // (an expired record is still removed below, and reported absent).
        for i in 0..4 {
            let tw = &self.st.mem.stripe(s).table;
            match self.st.attempt(s, || {
                self.st
                    .probe_raw(tw.load(std::sync::atomic::Ordering::Relaxed), hash, key)
            }) {
                Attempt::Done(Ok(None)) => return Ok(false),
                Attempt::Done(_) => break,
                Attempt::Retry => backoff(i),
            }
        }
        let g = self.guard();
        let sess = self.session_w(&g)?;
        let txn = Txn::begin(&sess, txn::log_entries_single())?;
        let mut existed = false;
        self.apply_locked(&sess, txn, &[s], WriteOp::Remove, |txn| {
            existed = index::remove(txn, s, hash, key)?;
            Ok(())
        })?;
        self.count(&[(Counter::Removes, u64::from(existed))]);
        self.trace("remove", key, existed);
        Ok(existed)
    }

    /// Store all pairs, all or nothing: either every pair is visible (at one instant, to
    /// every reader) or, on `Err`, none is. A key given twice takes its last value.
    pub fn put_many<K: AsRef<[u8]>, V: AsRef<[u8]>>(&self, items: &[(K, V)]) -> Result<()> {
        self.put_many_meta(items, |_| 0)
    }

    /// [`Client::put_many`] with each pair's meta word (its expiry, Unix ms; 0 = none).
    pub(crate) fn put_many_meta<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        &self,
        items: &[(K, V)],
        meta: impl Fn(usize) -> u64,
    ) -> Result<()> {
        for (k, v) in items {
            self.st.check_limits(k.as_ref(), Some(v.as_ref()))?;
        }
        if items.is_empty() {
            return Ok(());
        }
        self.with_room(|| self.put_many_once(items, &meta))
    }

    fn put_many_once<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        &self,
        items: &[(K, V)],
        meta: &impl Fn(usize) -> u64,
    ) -> Result<()> {
        // Before the mutex: in a forked child another thread may have held it at the fork.
        self.not_forked()?;
        let g = self.guard();
        let sess = self.session_w(&g)?;
        let hashes: Vec<u64> = items
            .iter()
            .map(|(k, _)| self.st.hash(k.as_ref()))
            .collect();
        let stripes = self.stripes_of(&hashes);
        if let Some(need) = txn::log_entries_put_many_locked(items, stripes.len()) {
            if self.put_many_locked(&sess, items, meta, &hashes, &stripes, need)? {
                self.count_put_many(items);
                return Ok(());
            }
        }
        let txn = Txn::begin(&sess, txn::log_entries_put_many(items.len()))?;
        let (txn, recs) = self.new_records(txn, items, meta)?;
        crash_point!("put_many.prepared");
        self.apply_locked(&sess, txn, &stripes, WriteOp::Many, |txn| {
            for &s in &stripes {
                let adds = hashes
                    .iter()
                    .filter(|&&h| self.st.stripe_of(h) == s)
                    .count();
                index::ensure_room(txn, s, adds as u64)?;
            }
            for (i, (k, v)) in items.iter().enumerate() {
                let s = self.st.stripe_of(hashes[i]);
                index::put(txn, s, hashes[i], k.as_ref(), recs[i], v.as_ref().len())?;
                crash_point!("put_many.applied_one");
            }
            Ok(())
        })?;
        self.count_put_many(items);
        Ok(())
    }

    /// A batch of small pairs (`txn::log_entries_put_many_locked`) done the way a single
    /// put of a small value is, under the batch's stripe locks: a pair whose record keeps its
    /// size class is rewritten in its own block (`index::update_in_place`), any other one
    /// written into a block at hand. No record is made before the locks, none freed after.
    /// Returns false, with nothing changed (the transaction rolled back), when a pair found
    /// no block at hand (the store would grow): the caller then makes the records outside
    /// the locks.
    fn put_many_locked<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        &self,
        sess: &Session<'_>,
        items: &[(K, V)],
        meta: &impl Fn(usize) -> u64,
        hashes: &[u64],
        stripes: &[usize],
        need: usize,
    ) -> Result<bool> {
        let txn = Txn::begin(sess, need)?;
        let mut short = false;
        let r = self.apply_locked(sess, txn, stripes, WriteOp::Many, |txn| {
            for (i, (k, v)) in items.iter().enumerate() {
                let (k, v) = (k.as_ref(), v.as_ref());
                let s = self.st.stripe_of(hashes[i]);
                let size = record_size(k.len() as u64, v.len() as u64);
                let put =
                    index::put_value(txn, s, hashes[i], k, v, meta(i), || txn.alloc_quick(size))?;
                if put.is_none() {
                    short = true;
                    return Err(Error::StoreFull {
                        hint: "no block at hand under the lock",
                    });
                }
                crash_point!("put_many.applied_one");
            }
            Ok(())
        });
        match r {
            Ok(()) => Ok(true),
            Err(_) if short => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn count_put_many<K: AsRef<[u8]>, V: AsRef<[u8]>>(&self, items: &[(K, V)]) {
        let bytes: usize = items.iter().map(|(_, v)| v.as_ref().len()).sum();
        self.count(&[
            (Counter::Puts, items.len() as u64),
            (Counter::BytesIn, bytes as u64),
        ]);
        self.trace("put_many", b"", format_args!("{} pairs", items.len()));
    }

    /// Reserve and fill one new record per pair of a batch (before any stripe lock), with
    /// `meta(i)` as pair `i`'s meta word; on a failure the transaction is cancelled.
    pub(crate) fn new_records<'s, 'a, K: AsRef<[u8]>, V: AsRef<[u8]>>(
        &self,
        txn: Txn<'s, 'a>,
        items: &[(K, V)],
        meta: impl Fn(usize) -> u64,
    ) -> Result<(Txn<'s, 'a>, Vec<u64>)> {
        let mut recs = Vec::with_capacity(items.len());
        for (i, (k, v)) in items.iter().enumerate() {
            let (k, v) = (k.as_ref(), v.as_ref());
            let rec = match txn.alloc(record_size(k.len() as u64, v.len() as u64)) {
                Ok(r) => r,
                Err(e) => {
                    txn.cancel()?;
                    return Err(e);
                }
            };
            write_record(&self.st, rec, k, v, meta(i))?;
            recs.push(rec);
        }
        Ok((txn, recs))
    }

    /// Remove all `keys` atomically; returns how many existed.
    pub fn remove_many<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<usize> {
        for k in keys {
            self.st.check_limits(k.as_ref(), None)?;
        }
        if keys.is_empty() {
            return Ok(0);
        }
        // Before the mutex: in a forked child another thread may have held it at the fork.
        self.not_forked()?;
        let g = self.guard();
        let sess = self.session_w(&g)?;
        let hashes: Vec<u64> = keys.iter().map(|k| self.st.hash(k.as_ref())).collect();
        let stripes = self.stripes_of(&hashes);
        let txn = Txn::begin(&sess, txn::log_entries_remove_many(keys.len()))?;
        let mut removed = 0;
        self.apply_locked(&sess, txn, &stripes, WriteOp::Many, |txn| {
            for (k, &h) in keys.iter().zip(&hashes) {
                if index::remove(txn, self.st.stripe_of(h), h, k.as_ref())? {
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

    /// Run `f(txn, stripe, hash, key)` in a one-key transaction if block `off` holds a record
    /// of the index: its key is read without a lock (the block may be anything; a key that
    /// cannot be read is no record), and only if the key's index entry points at `off` under
    /// the stripe lock does `f` run (eviction and compaction act on blocks, not keys). Returns
    /// what `f` returned, false when it did not run.
    pub(crate) fn with_record_at(
        &self,
        off: u64,
        f: impl FnOnce(&Txn<'_, '_>, usize, u64, &[u8]) -> Result<bool>,
    ) -> Result<bool> {
        let mut key = Vec::new();
        if self.st.read_key(off, &mut key).is_err() || key.len() > self.st.max_key {
            return Ok(false);
        }
        let hash = self.st.hash(&key);
        let s = self.st.stripe_of(hash);
        let g = self.guard();
        let sess = self.session_w(&g)?;
        let txn = Txn::begin(&sess, txn::log_entries_single())?;
        let mut done = false;
        self.apply_locked(&sess, txn, &[s], WriteOp::Many, |txn| {
            if index::find_record(txn, s, hash, &key)? == Some(off) {
                done = f(txn, s, hash, &key)?;
            }
            Ok(())
        })?;
        Ok(done)
    }

    /// Lock `stripes` (ascending) for writing and log their words, run `apply`, and commit;
    /// or, on any error, roll everything back. Then publish and unlock each stripe, and do the
    /// deferred frees. The caller holds the write mutex and opened `txn`.
    pub(crate) fn apply_locked<'s, 'a>(
        &self,
        sess: &'s Session<'a>,
        txn: Txn<'s, 'a>,
        stripes: &[usize],
        op: WriteOp,
        apply: impl FnOnce(&Txn<'s, 'a>) -> Result<()>,
    ) -> Result<()> {
        let mut held = HeldStripes::with_capacity(stripes.len());
        let r = (|| {
            if let [s] = *stripes {
                // One stripe: its words are logged only if the write changes them (a value
                // rewritten in place at its length does not: `Txn::stripe_mut`).
                held.push(sess.write_stripe(s)?);
                txn.log_stripe_later(s)?;
            } else {
                for &s in stripes {
                    held.push(sess.write_stripe(s)?);
                    txn.log_stripe(s)?;
                }
            }
            op.locked();
            apply(&txn)?;
            txn.log_changes()
        })();
        if let Err(e) = r {
            txn.abort(held)?;
            return Err(e);
        }
        txn.commit();
        // Waiters for a change in these stripes (`client/wait.rs`): told under the lock, so a
        // waiter either saw this write before it slept or finds `changes` moved.
        let mut wake = 0u64;
        for (i, &s) in stripes.iter().enumerate() {
            let stripe = self.st.mem.stripe(s);
            if change::notice_locked(&stripe.waiters, &stripe.changes) {
                wake |= 1 << i.min(63);
            }
        }
        held.release_each(|| op.unlocked_one());
        if wake != 0 {
            for (i, &s) in stripes.iter().enumerate() {
                if wake & 1 << i.min(63) != 0 {
                    change::wake_all(&self.st.mem.stripe(s).changes);
                }
            }
        }
        txn.finish()
    }
}

/// The meta word of a key expiring `ttl` from now (Unix ms), or `InvalidArgument` for a zero
/// or unrepresentable TTL.
pub(crate) fn expiry_of(ttl: std::time::Duration) -> Result<u64> {
    let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    let at = crate::store::now_ms().saturating_add(ms);
    if ms == 0 || at > crate::layout::META_EXPIRY_MASK {
        return Err(crate::Error::InvalidArgument(format!(
            "invalid TTL {ttl:?} (at least 1 ms, at most ~8900 years)"
        )));
    }
    Ok(at)
}
