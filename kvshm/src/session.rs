//! A writer's identity (its client slot) and its transaction log, plus recovery of dead
//! clients.
//!
//! Write protocol (`docs/ARCHITECTURE.md`, "Transactions"):
//! 1. `begin`: reset the log counts, state ACTIVE.
//! 2. reserve new blocks (each recorded in the log before it is tagged) and fill them;
//! 3. lock the stripes (ascending), make each `seq` odd, and log the stripe words;
//! 4. every other in-place write is preceded by an undo entry (`set`);
//! 5. `commit`: state COMMITTED, new blocks LIVE; then `seq` even and unlock;
//! 6. `finish`: deferred frees (blocks unlinked in 4, freed only after their stripe went odd),
//!    state IDLE.
//!
//! Recovery of a dead slot (`recover_slot`) is idempotent and may itself be killed: it runs
//! only while holding the dead slot's OFD byte, so exactly one recoverer works at a time.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::crash_point;
use crate::error::{Error, Result};
use crate::layout::*;
use crate::segment;
use crate::store::Store;
use crate::sync::{lock, seqlock};

const R: Ordering = Ordering::Relaxed;
const REL: Ordering = Ordering::Release;
const ACQ: Ordering = Ordering::Acquire;

/// A client slot in use by this process (or being recovered by it).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Session<'a> {
    pub st: &'a Store,
    pub me: u32,
    pub slot_off: u64,
    pub slot: &'a Slot,
}

/// Where a slot's log entries are: inline in the slot, or in an extension block.
pub(crate) struct LogView<'a> {
    // (fields are read by recovery and by verify's pending-free scan)
    undo: &'a [AtomicU64],
    new: &'a [AtomicU64],
    frees: &'a [AtomicU64],
    cap: usize,
}

/// Largest log extension (entries of each kind).
const MAX_LOG_CAP: u64 = 1 << 24;

pub(crate) fn log_view<'a>(st: &'a Store, slot: &Slot, slot_off: u64) -> Result<LogView<'a>> {
    let ext = slot.log_ext.load(ACQ);
    if ext == 0 {
        let cap = INLINE_LOG_CAP as u64;
        return Ok(LogView {
            undo: st
                .mem
                .words(slot_off + core::mem::offset_of!(Slot, undo) as u64, 2 * cap)?,
            new: st.mem.words(
                slot_off + core::mem::offset_of!(Slot, new_blocks) as u64,
                cap,
            )?,
            frees: st.mem.words(
                slot_off + core::mem::offset_of!(Slot, frees) as u64,
                2 * cap,
            )?,
            cap: INLINE_LOG_CAP,
        });
    }
    let cap = st.mem.word(ext + 8)?.load(R);
    if cap == 0 || cap > MAX_LOG_CAP {
        return Err(Error::corrupt(ext, format!("log extension capacity {cap}")));
    }
    let base = ext + LOG_EXT_HEADER_SIZE;
    Ok(LogView {
        undo: st.mem.words(base, 2 * cap)?,
        new: st.mem.words(base + 16 * cap, cap)?,
        frees: st.mem.words(base + 24 * cap, 2 * cap)?,
        cap: cap as usize,
    })
}

/// An open transaction of a session.
pub(crate) struct Txn<'s, 'a> {
    s: &'s Session<'a>,
    log: LogView<'a>,
    n_undo: Cell<usize>,
    n_new: Cell<usize>,
    n_free: Cell<usize>,
}

impl<'a> Session<'a> {
    /// Open a transaction whose log must hold `need` entries of each kind.
    pub(crate) fn begin<'s>(&'s self, need: usize) -> Result<Txn<'s, 'a>> {
        debug_assert_eq!(self.slot.txn_state.load(R), TXN_IDLE);
        if need > INLINE_LOG_CAP {
            if need as u64 > MAX_LOG_CAP {
                return Err(Error::InvalidArgument(format!(
                    "batch needs {need} log entries, at most {MAX_LOG_CAP} are supported"
                )));
            }
            self.alloc(
                log_ext_size(need as u64),
                crate::alloc::Pool::Emergency,
                |b| self.slot.log_ext.store(b, REL),
            )?;
            let ext = self.slot.log_ext.load(R);
            self.st.mem.word(ext + 8)?.store(need as u64, REL);
        }
        let log = log_view(self.st, self.slot, self.slot_off)?;
        self.slot.n_undo.store(0, R);
        self.slot.n_new.store(0, R);
        self.slot.n_free.store(0, R);
        self.slot.txn_state.store(TXN_ACTIVE, REL);
        Ok(Txn {
            s: self,
            log,
            n_undo: Cell::new(0),
            n_new: Cell::new(0),
            n_free: Cell::new(0),
        })
    }

    /// Lock stripe `s` for writing.
    pub(crate) fn lock_stripe(&self, s: usize) -> Result<()> {
        let st = self.st.mem.stripe(s);
        self.slot.waiting_on.store(s as u64 + 1, R);
        let r = self.lock_word(&st.lock);
        self.slot.waiting_on.store(0, R);
        r
    }

    /// Recover `owner` if it is dead (we can take its liveness byte). A live owner, or one
    /// that another process is already recovering, is left alone.
    pub(crate) fn probe_and_recover(&self, owner: u32) -> Result<()> {
        if owner == self.me {
            return Err(Error::corrupt(
                0,
                "a lock word names this client as its owner",
            ));
        }
        let byte = segment::SLOT_LOCK_BASE + owner as u64;
        if !segment::ofd_try_lock(&self.st.file, byte)? {
            return Ok(());
        }
        let r = self.recover_slot(owner);
        segment::ofd_unlock(&self.st.file, byte);
        r.map(|_| ())
    }

    /// Recover slot `dead`, whose liveness byte we hold. Returns whether it was attached.
    pub(crate) fn recover_slot(&self, dead: u32) -> Result<bool> {
        let h = self.st.mem.header();
        // 1. Allocator locks the dead client held: lists are rebuilt from the tags.
        for (c, cls) in h.classes.iter().enumerate() {
            if lock::owner(cls.lock.load(ACQ)) == Some(dead) {
                self.rebuild_class(c)?;
                crash_point!("recover.class_rebuilt");
                lock::unlock_all(&cls.lock);
            }
        }
        if lock::owner(h.span_lock.load(ACQ)) == Some(dead) {
            self.rebuild_spans()?;
            lock::unlock_all(&h.span_lock);
        }
        let stripes: Vec<usize> = (0..self.st.mem.stripe_count())
            .filter(|&s| lock::owner(self.st.mem.stripe(s).lock.load(ACQ)) == Some(dead))
            .collect();
        let Some(off) = self.st.slot_offset(dead) else {
            // A lock word names a slot that does not exist: release what it holds.
            self.release_stripes(&stripes);
            return Err(Error::corrupt(
                0,
                format!("lock held by non-existent slot {dead}"),
            ));
        };
        let ds = self.st.mem.slot_at(off)?;
        let attached = ds.state.load(ACQ) == SLOT_ALIVE;
        if !attached {
            self.release_stripes(&stripes);
            return Ok(false);
        }
        let id = ds.client_id.load(R);
        let pid = ds.pid.load(R);
        let state = ds.txn_state.load(ACQ);
        let log = log_view(self.st, ds, off);
        if let (Ok(log), true) = (&log, state != TXN_IDLE) {
            let n_undo = (ds.n_undo.load(ACQ) as usize).min(log.cap);
            let n_new = (ds.n_new.load(ACQ) as usize).min(log.cap);
            let n_free = (ds.n_free.load(ACQ) as usize).min(log.cap);
            // 2. Stripes: roll an ACTIVE transaction back, then make seq even and unlock.
            if state == TXN_ACTIVE {
                for &s in &stripes {
                    self.seq_odd(s);
                }
                for i in (0..n_undo).rev() {
                    let target = log.undo[2 * i].load(R);
                    let stripe = (target >> UNDO_STRIPE_SHIFT) as usize;
                    if stripes.binary_search(&stripe).is_ok() {
                        let old = log.undo[2 * i + 1].load(R);
                        self.word(target & TABLE_OFFSET_MASK)?.store(old, R);
                    }
                }
                crash_point!("recover.undone");
            }
            // 3. A COMMITTED transaction's new blocks become LIVE *before* its stripes are
            //    released (as in `commit`): once unlocked, another writer may replace such a
            //    record, and its deferred free expects LIVE.
            let mut reserved = Vec::new();
            for i in 0..n_new {
                let b = log.new[i].load(R);
                let Ok(tagw) = self.word(b) else { continue };
                let t = Tag::from_word(tagw.load(R));
                if t.state == TAG_RESERVED && t.owner == dead {
                    if state == TXN_COMMITTED {
                        let _ =
                            tagw.compare_exchange(t.word(), Tag::live(t.generation).word(), REL, R);
                    } else {
                        reserved.push((b, t.word()));
                    }
                }
            }
            self.release_stripes(&stripes);
            crash_point!("recover.stripes_released");
            // 4. Then an ACTIVE transaction's new blocks (unreachable since the undo) go back,
            //    and a COMMITTED one's deferred frees are done.
            for (b, tag) in reserved {
                self.free_block(b, tag)?;
            }
            if state == TXN_COMMITTED {
                for i in 0..n_free {
                    let (b, expect) = (log.frees[2 * i].load(R), log.frees[2 * i + 1].load(R));
                    self.free_block(b, expect)?;
                }
            }
            crash_point!("recover.blocks_done");
        } else {
            if let Err(e) = &log {
                log::error!("client {id} (slot {dead}): unreadable log, not replayed: {e}");
            }
            self.release_stripes(&stripes);
        }
        ds.txn_state.store(TXN_IDLE, REL);
        self.release_log_ext(ds, dead)?;
        // 5. Fold the counters into the store totals and free the slot.
        for (i, c) in ds.counters.iter().enumerate() {
            h.folded[i].fetch_add(c.swap(0, R), R);
        }
        ds.state.store(SLOT_FREE, REL);
        h.recoveries.fetch_add(1, R);
        self.slot.counters[Counter::Recoveries as usize].fetch_add(1, R);
        log::warn!(
            "recovered dead client {id} (pid {pid}, slot {dead}): transaction {}",
            match state {
                TXN_ACTIVE => "rolled back",
                TXN_COMMITTED => "completed",
                _ => "none",
            }
        );
        Ok(true)
    }

    fn release_stripes(&self, stripes: &[usize]) {
        for &s in stripes {
            let st = self.st.mem.stripe(s);
            if st.seq.load(R) & 1 == 1 {
                self.seq_even(s);
            }
            lock::unlock_all(&st.lock);
        }
    }

    /// Free the log extension of `slot` (owned by `owner`) if it still holds one.
    pub(crate) fn release_log_ext(&self, slot: &Slot, owner: u32) -> Result<()> {
        let ext = slot.log_ext.load(ACQ);
        if ext != 0 {
            if let Ok(w) = self.word(ext) {
                let t = Tag::from_word(w.load(R));
                if t.state == TAG_RESERVED && t.owner == owner {
                    self.free_block(ext, t.word())?;
                }
            }
            slot.log_ext.store(0, REL);
        }
        Ok(())
    }

    /// Make the stripe's seq odd (caller holds its lock): readers will retry.
    #[inline]
    pub(crate) fn seq_odd(&self, s: usize) {
        seqlock::write_begin(&self.st.mem.stripe(s).seq);
    }

    /// Make the stripe's seq even again, publishing everything written meanwhile.
    #[inline]
    pub(crate) fn seq_even(&self, s: usize) {
        seqlock::write_end(&self.st.mem.stripe(s).seq);
    }
}

impl LogView<'_> {
    /// Blocks a COMMITTED transaction still has to free (`n` entries are valid).
    pub(crate) fn pending_frees(&self, n: usize) -> impl Iterator<Item = u64> + '_ {
        (0..n.min(self.cap)).map(|i| self.frees[2 * i].load(R))
    }
}

impl<'s, 'a> Txn<'s, 'a> {
    pub(crate) fn session(&self) -> &'s Session<'a> {
        self.s
    }

    /// Reserve a new block for this transaction (rolled back unless committed).
    pub(crate) fn alloc(&self, size: u64) -> Result<u64> {
        let i = self.n_new.get();
        if i >= self.log.cap {
            return Err(Error::InvalidArgument("transaction log full".into()));
        }
        let b = self.s.alloc(size, crate::alloc::Pool::Data, |b| {
            self.log.new[i].store(b, R);
            self.s.slot.n_new.store(i as u64 + 1, REL);
        })?;
        self.n_new.set(i + 1);
        Ok(b)
    }

    /// Log the current value of the word at `off` (in stripe `stripe`'s data) for undo.
    #[inline]
    pub(crate) fn log_undo(&self, stripe: usize, off: u64, word: &AtomicU64) -> Result<()> {
        let i = self.n_undo.get();
        if i >= self.log.cap {
            return Err(Error::InvalidArgument("transaction log full".into()));
        }
        self.log.undo[2 * i].store(off | (stripe as u64) << UNDO_STRIPE_SHIFT, R);
        self.log.undo[2 * i + 1].store(word.load(R), R);
        self.s.slot.n_undo.store(i as u64 + 1, REL);
        self.n_undo.set(i + 1);
        Ok(())
    }

    /// Undo-logged store.
    #[inline]
    pub(crate) fn set(&self, stripe: usize, off: u64, value: u64) -> Result<()> {
        let w = self.s.word(off)?;
        self.log_undo(stripe, off, w)?;
        w.store(value, REL);
        Ok(())
    }

    /// Log the stripe words that writes under its lock may change (call right after `seq_odd`).
    pub(crate) fn log_stripe(&self, s: usize) -> Result<()> {
        let st = self.s.st.mem.stripe(s);
        for w in [&st.table, &st.count, &st.tombstones, &st.value_bytes] {
            self.log_undo(s, self.s.st.stripe_field_offset(s, w), w)?;
        }
        Ok(())
    }

    /// Free `block` after commit, if its tag is then `LIVE` with the generation it has now.
    pub(crate) fn defer_free(&self, block: u64) -> Result<()> {
        let i = self.n_free.get();
        if i >= self.log.cap {
            return Err(Error::InvalidArgument("transaction log full".into()));
        }
        let t = Tag::from_word(self.s.word(block)?.load(R));
        if t.state == TAG_FREE {
            return Err(Error::corrupt(block, "unlinking a block that is free"));
        }
        self.log.frees[2 * i].store(block, R);
        self.log.frees[2 * i + 1].store(Tag::live(t.generation).word(), R);
        self.s.slot.n_free.store(i as u64 + 1, REL);
        self.n_free.set(i + 1);
        Ok(())
    }

    /// The commit point: from here on, recovery completes instead of rolling back.
    pub(crate) fn commit(&self) {
        self.s.slot.txn_state.store(TXN_COMMITTED, REL);
        crash_point!("txn.committed");
        for i in 0..self.n_new.get() {
            let b = self.log.new[i].load(R);
            if let Ok(w) = self.s.word(b) {
                let t = Tag::from_word(w.load(R));
                if t.state == TAG_RESERVED && t.owner == self.s.me {
                    w.store(Tag::live(t.generation).word(), REL);
                }
            }
        }
    }

    /// After commit and unlock: the deferred frees, then IDLE.
    pub(crate) fn finish(self) -> Result<()> {
        let mut first_err = None;
        for i in 0..self.n_free.get() {
            let (b, expect) = (
                self.log.frees[2 * i].load(R),
                self.log.frees[2 * i + 1].load(R),
            );
            crash_point!("txn.freeing");
            if let Err(e) = self.s.free_block(b, expect) {
                log::error!("deferred free of {b:#x} failed: {e}");
                first_err.get_or_insert(e);
            }
        }
        self.end()?;
        first_err.map_or(Ok(()), Err)
    }

    /// Roll back: the caller still holds `stripes` (seq odd). Restores every logged word,
    /// unlocks, returns the new blocks, and ends the transaction.
    pub(crate) fn abort(self, stripes: &[usize]) -> Result<()> {
        for i in (0..self.n_undo.get()).rev() {
            let target = self.log.undo[2 * i].load(R);
            let old = self.log.undo[2 * i + 1].load(R);
            self.s.word(target & TABLE_OFFSET_MASK)?.store(old, R);
        }
        for &s in stripes {
            self.s.seq_even(s);
            lock::unlock(&self.s.st.mem.stripe(s).lock);
        }
        self.drop_new_blocks()?;
        self.end()
    }

    /// Give back new blocks before any stripe was touched (caller holds no stripe lock).
    pub(crate) fn drop_new_blocks(&self) -> Result<()> {
        for i in 0..self.n_new.get() {
            let b = self.log.new[i].load(R);
            let t = Tag::from_word(self.s.word(b)?.load(R));
            if t.state == TAG_RESERVED && t.owner == self.s.me {
                self.s.free_block(b, t.word())?;
            }
        }
        Ok(())
    }

    fn end(&self) -> Result<()> {
        self.s.slot.txn_state.store(TXN_IDLE, REL);
        self.s.release_log_ext(self.s.slot, self.s.me)
    }

    /// Abort a transaction that never locked a stripe.
    pub(crate) fn cancel(self) -> Result<()> {
        self.drop_new_blocks()?;
        self.end()
    }
}
