//! Transactions: the log a writer keeps in its client slot so that a recoverer can roll an
//! unfinished change back or finish a committed one.
//!
//! Write protocol (`docs/ARCHITECTURE.md`, "Transactions"):
//! 1. [`Txn::begin`]: reset the log counts, state ACTIVE.
//! 2. reserve new blocks ([`Txn::alloc`]: each recorded in the log before it is tagged) and
//!    fill them;
//! 3. lock the stripes (ascending), make each `seq` odd, and log the stripe words
//!    ([`Txn::log_stripe`]; a one-stripe transaction logs them at their first change,
//!    [`Txn::stripe_mut`]);
//! 4. every other in-place write is preceded by an undo entry ([`Txn::set`]);
//! 5. [`Txn::commit`]: state COMMITTED, new blocks LIVE; then `seq` even and unlock (each
//!    `StripeWrite` released: `StripeWrite::release`);
//! 6. [`Txn::finish`]: deferred frees (blocks unlinked in 4, freed only after their stripe went
//!    odd), state IDLE.
//!
//! How many entries a transaction needs is computed by the `log_entries_*` functions below.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::alloc::{Allocator, Pool};
use crate::crash_point;
use crate::error::{Error, Result};
use crate::layout::*;
use crate::session::{HeldStripes, Session};
use crate::store::Store;

const R: Ordering = Ordering::Relaxed;
const REL: Ordering = Ordering::Release;
const ACQ: Ordering = Ordering::Acquire;

/// Largest log extension (entries of each kind).
pub(crate) const MAX_LOG_CAP: u64 = 1 << 24;

/// Undo entries [`Txn::log_stripe`] takes per locked stripe (its four header words; a table
/// rebuild writes only those).
const STRIPE_UNDO: usize = 4;
/// [`Txn::unlogged_stripe`] when every held stripe's words are logged.
const NO_STRIPE: usize = usize::MAX;

/// Log entries (of each kind) of a single-key put or remove: the stripe words, one table entry
/// (undo), the record and a rebuilt table (new), the old record and the old table (frees).
pub(crate) const fn log_entries_single() -> usize {
    STRIPE_UNDO + 4
}

/// Most words of key and value `index::update_in_place` rewrites in a record's own block (a
/// put or read-modify-write of a key whose record keeps its size class; the key's words are
/// logged with the value's). Longer ones take a new record: the old words are copied to the
/// undo log first, which for long values costs more than writing a new record and freeing
/// the old one.
pub(crate) const IN_PLACE_WORDS: u64 = 32;

/// Log entries of a single-key put or read-modify-write (`Client::modify`) that may rewrite a
/// value in place (`index::update_in_place`: its words, lengths, version, meta), or else
/// write a new record.
pub(crate) const fn log_entries_modify() -> usize {
    log_entries_single() + IN_PLACE_WORDS as usize + 3
}

/// Log entries of a `put_many` of `n` pairs: per pair its stripe's words, one table entry,
/// its record and a possible table rebuild; plus room for one more stripe's words.
pub(crate) const fn log_entries_put_many(n: usize) -> usize {
    (STRIPE_UNDO + 2) * n + 8
}

/// Log entries of a `put_many` applied under its locks (`Client::put_many_locked`), or
/// `None` if a pair is too long to be rewritten in place (the batch then makes its records
/// before the locks: [`log_entries_put_many`]). Per pair its undo-logged record words
/// (`index::update_in_place`: lengths, version, meta, key and value), or else one table entry
/// and a new record; per stripe its words; room for one table rebuild per pair (a new and a
/// freed table, the stripe words already counted).
pub(crate) fn log_entries_put_many_locked<K: AsRef<[u8]>, V: AsRef<[u8]>>(
    items: &[(K, V)],
    stripes: usize,
) -> Option<usize> {
    let mut need = STRIPE_UNDO * stripes + 8;
    for (k, v) in items {
        let words = pad8(k.as_ref().len() as u64) / 8 + pad8(v.as_ref().len() as u64) / 8;
        if words > IN_PLACE_WORDS {
            return None;
        }
        need += 3 + words as usize;
    }
    Some(need)
}

/// Log entries of a `remove_many` of `n` keys: per key its stripe's words and one table entry
/// (undo) or one freed record.
pub(crate) const fn log_entries_remove_many(n: usize) -> usize {
    (STRIPE_UNDO + 1) * n + 8
}

/// Log entries of a table rebuild on its own (compaction): the stripe words, the new table,
/// the old table.
pub(crate) const fn log_entries_compact() -> usize {
    16
}

/// Where a slot's log entries are: inline in the slot, or in an extension block.
pub(crate) struct LogView<'a> {
    pub(crate) undo: &'a [AtomicU64],
    pub(crate) new: &'a [AtomicU64],
    pub(crate) frees: &'a [AtomicU64],
    pub(crate) cap: usize,
}

// The inline log's arrays are contiguous: undo (2 words per entry), new blocks (1), frees (2).
const _: () = {
    use core::mem::offset_of;
    assert!(offset_of!(Slot, new_blocks) == offset_of!(Slot, undo) + 16 * INLINE_LOG_CAP);
    assert!(offset_of!(Slot, frees) == offset_of!(Slot, new_blocks) + 8 * INLINE_LOG_CAP);
};

impl<'a> LogView<'a> {
    /// The log of the slot at `slot_off`, read through its extension word.
    #[inline(always)]
    pub(crate) fn of(st: &'a Store, slot: &Slot, slot_off: u64) -> Result<LogView<'a>> {
        let ext = slot.log_ext.load(ACQ);
        if ext == 0 {
            // The three arrays lie back to back in the slot (asserted below): one checked
            // range, split (three checks cost every transaction ~40 instructions, callgrind).
            let cap = INLINE_LOG_CAP;
            let all = st.mem.words(
                slot_off + core::mem::offset_of!(Slot, undo) as u64,
                5 * cap as u64,
            )?;
            let (undo, rest) = all.split_at(2 * cap);
            let (new, frees) = rest.split_at(cap);
            return Ok(LogView {
                undo,
                new,
                frees,
                cap,
            });
        }
        // `ext` is segment data: keep the arithmetic on it checked (no panic in debug builds).
        if ext > MAX_RESERVE {
            return Err(Error::corrupt(
                slot_off,
                format!("log extension at {ext:#x}"),
            ));
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

    /// Blocks a COMMITTED transaction still has to free (`n` entries are valid).
    pub(crate) fn pending_frees(&self, n: usize) -> impl Iterator<Item = u64> + '_ {
        (0..n.min(self.cap)).map(|i| self.frees[2 * i].load(R))
    }
}

/// What a transaction of a store with a change log keeps for it: its `(kind, record, size)`
/// changes (a single-key write's one or two inline) and, once appended, its entry. Boxed in
/// the `Txn` and made only for such a store: a store without a log pays nothing for it
/// (measured: kept inline, the bigger `Txn` cost every put ~110 instructions of moves). The
/// box is reused through a per-thread spare (no allocation per transaction).
#[derive(Default)]
pub(crate) struct Changes {
    inline: [(u64, u64); 2],
    n: usize,
    more: Vec<(u64, u64)>,
    logged: Option<crate::changelog::Pending>,
}

thread_local! {
    /// A `Changes` box of an earlier transaction of this thread, cleared, for the next one.
    static SPARE: Cell<Option<Box<std::cell::RefCell<Changes>>>> = const { Cell::new(None) };
}

#[inline(always)]
fn take_changes() -> Box<std::cell::RefCell<Changes>> {
    SPARE.with(|s| s.take()).unwrap_or_default()
}

#[inline(always)]
fn give_back_changes(b: Box<std::cell::RefCell<Changes>>) {
    {
        let mut c = b.borrow_mut();
        c.n = 0;
        c.more.clear();
        c.logged = None;
    }
    SPARE.with(|s| s.set(Some(b)));
}

impl Changes {
    fn push(&mut self, kind: u64, rec: u64) {
        if self.n < self.inline.len() {
            self.inline[self.n] = (kind, rec);
            self.n += 1;
        } else {
            if self.more.is_empty() {
                self.more.extend_from_slice(&self.inline);
            }
            self.more.push((kind, rec));
        }
    }

    fn as_slice(&self) -> &[(u64, u64)] {
        if self.more.is_empty() {
            &self.inline[..self.n]
        } else {
            &self.more
        }
    }
}

/// An open transaction of a session.
pub(crate) struct Txn<'s, 'a> {
    s: &'s Session<'a>,
    log: LogView<'a>,
    /// Entries of each kind this transaction reserved (`need`, at most the log's capacity):
    /// using more is a sizing bug, reported as [`Error::TxnLogFull`] even where the inline
    /// log would have room, so a wrong `log_entries_*` shows in every test and not only once
    /// a batch needs a log extension.
    limit: usize,
    n_undo: Cell<usize>,
    n_new: Cell<usize>,
    n_free: Cell<usize>,
    /// A stripe this transaction holds whose words ([`Txn::log_stripe`]) are not undo-logged
    /// yet ([`NO_STRIPE`] if none): logged by [`Txn::stripe_mut`] before the first change of
    /// one of them, so a write that changes none (a value rewritten in place at its length)
    /// logs none.
    unlogged_stripe: Cell<usize>,
    /// What this transaction changed, for the change log (`(kind, record)`; only collected in
    /// a store that has one).
    changes: Option<Box<std::cell::RefCell<Changes>>>,
}

impl<'s, 'a> Txn<'s, 'a> {
    /// Open a transaction of `s` whose log must hold `need` entries of each kind.
    #[inline(always)]
    pub(crate) fn begin(s: &'s Session<'a>, need: usize) -> Result<Txn<'s, 'a>> {
        let state = s.slot.txn_state.load(R);
        if state != TXN_IDLE {
            // Our own slot, between our own transactions, can only be IDLE: somebody else
            // wrote it. Report it (no panic, even in debug builds); the next one starts clean.
            s.slot.txn_state.store(TXN_IDLE, REL);
            return Err(Error::corrupt(
                s.slot_off,
                format!("own transaction state {state} between transactions"),
            ));
        }
        if need > INLINE_LOG_CAP {
            if need as u64 > MAX_LOG_CAP {
                return Err(Error::BatchTooLarge {
                    entries: need,
                    max: MAX_LOG_CAP as usize,
                });
            }
            Allocator::new(s).alloc(log_ext_size(need as u64), Pool::Emergency, |b| {
                s.slot.log_ext.store(b, REL)
            })?;
            let ext = s.slot.log_ext.load(R);
            s.st.mem.word(ext + 8)?.store(need as u64, REL);
        }
        let log = LogView::of(s.st, s.slot, s.slot_off)?;
        s.slot.n_undo.store(0, R);
        s.slot.n_new.store(0, R);
        s.slot.n_free.store(0, R);
        s.slot.txn_state.store(TXN_ACTIVE, REL);
        let limit = need.min(log.cap);
        Ok(Txn {
            s,
            log,
            limit,
            n_undo: Cell::new(0),
            n_new: Cell::new(0),
            n_free: Cell::new(0),
            unlogged_stripe: Cell::new(NO_STRIPE),
            changes: s.st.clog.map(|_| take_changes()),
        })
    }

    pub(crate) fn session(&self) -> &'s Session<'a> {
        self.s
    }

    fn full(&self) -> Error {
        Error::TxnLogFull {
            capacity: self.limit,
        }
    }

    /// Reserve a new block for this transaction (rolled back unless committed).
    pub(crate) fn alloc(&self, size: u64) -> Result<u64> {
        let (i, record) = self.new_entry()?;
        let b = Allocator::new(self.s).alloc(size, Pool::Data, record)?;
        self.n_new.set(i + 1);
        Ok(b)
    }

    /// [`Txn::alloc`] for a caller holding a stripe lock ([`Allocator::alloc_quick`]): `None`
    /// when the block would take growth or reclaim (allocate outside the lock instead).
    pub(crate) fn alloc_quick(&self, size: u64) -> Result<Option<u64>> {
        let (i, record) = self.new_entry()?;
        let b = Allocator::new(self.s).alloc_quick(size, Pool::Data, record)?;
        if b.is_some() {
            self.n_new.set(i + 1);
        }
        Ok(b)
    }

    /// The next entry of the log's list of new blocks, and what records a block there: the
    /// allocator calls it before it hands the block out, so a recovery of this slot frees a
    /// block the transaction got but never used. The caller counts the entry as used
    /// (`n_new`) once it has the block.
    #[inline(always)]
    fn new_entry(&self) -> Result<(usize, impl FnOnce(u64) + '_)> {
        let i = self.n_new.get();
        if i >= self.limit {
            return Err(self.full());
        }
        Ok((i, move |b| {
            self.log.new[i].store(b, R);
            self.s.slot.n_new.store(i as u64 + 1, REL);
        }))
    }

    /// A block for a write that holds stripe locks, inside `Client::with_room`: one at hand
    /// ([`Txn::alloc_quick`]), or, if only growth would give one, `StoreFull { hint:
    /// GROW_FIRST }` (the write changes nothing, and its loop grows the store outside every
    /// lock and runs it again); growing here only when that loop says so (its last attempt).
    pub(crate) fn alloc_locked(&self, size: u64) -> Result<u64> {
        if !crate::alloc::grow_outside() {
            return self.alloc(size);
        }
        match self.alloc_quick(size)? {
            Some(b) => Ok(b),
            None => {
                crate::alloc::note_full(size);
                Err(Error::StoreFull {
                    hint: crate::alloc::GROW_FIRST,
                })
            }
        }
    }

    /// Log the current value of the word at `off` (in stripe `stripe`'s data) for undo.
    #[inline]
    pub(crate) fn log_undo(&self, stripe: usize, off: u64, word: &AtomicU64) -> Result<()> {
        let i = self.n_undo.get();
        if i >= self.limit {
            return Err(self.full());
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

    /// Undo-log the `n` words at `off` (in stripe `stripe`'s keeping), published by one count
    /// store, and return them for the caller to overwrite: a value rewritten in place. The
    /// same as `n` calls of [`Txn::set`] for recovery, at a fraction of the cost.
    #[inline(always)]
    pub(crate) fn log_range(
        &self,
        stripe: usize,
        off: u64,
        n: usize,
    ) -> Result<&'a [std::sync::atomic::AtomicU64]> {
        let words = self.s.st.mem.words(off, n as u64)?;
        let i = self.n_undo.get();
        if i + n > self.limit {
            return Err(self.full());
        }
        let undo = self
            .log
            .undo
            .get(2 * i..2 * (i + n))
            .ok_or_else(|| self.full())?;
        let tag = (stripe as u64) << UNDO_STRIPE_SHIFT;
        let mut target = off | tag;
        for (u, w) in undo.chunks_exact(2).zip(words) {
            u[0].store(target, R);
            u[1].store(w.load(R), R);
            target += 8;
        }
        self.s.slot.n_undo.store((i + n) as u64, REL);
        self.n_undo.set(i + n);
        // The caller's stores into `words` may be relaxed (a copy): none of them may be moved
        // before the count that publishes their undo entries (a kill in between would leave
        // a changed word that recovery does not restore). A release fence keeps every later
        // store after the stores above (no instruction on x86, a compiler barrier).
        std::sync::atomic::fence(REL);
        Ok(words)
    }

    /// The words of stripe `s` (held, `seq` odd) are logged when first changed, by
    /// [`Txn::stripe_mut`], instead of now ([`Txn::log_stripe`]). One stripe at a time.
    pub(crate) fn log_stripe_later(&self, s: usize) -> Result<()> {
        if self.unlogged_stripe.get() != NO_STRIPE {
            return self.log_stripe(s);
        }
        self.unlogged_stripe.set(s);
        Ok(())
    }

    /// Stripe `s`, held by this transaction, whose words (table, count, tombstones, value
    /// bytes) the caller is about to change: undo-logged first if [`Txn::log_stripe_later`]
    /// left them unlogged. Every store to those words under a transaction goes through here.
    #[inline]
    pub(crate) fn stripe_mut(&self, s: usize) -> Result<&'a Stripe> {
        if self.unlogged_stripe.get() == s {
            self.log_stripe(s)?;
            self.unlogged_stripe.set(NO_STRIPE);
        }
        Ok(self.s.st.mem.stripe(s))
    }

    /// Log the stripe words that writes under its lock may change (right after its `seq`
    /// went odd): four entries, published by one count store.
    pub(crate) fn log_stripe(&self, s: usize) -> Result<()> {
        use core::mem::offset_of;
        let st = self.s.st.mem.stripe(s);
        let i = self.n_undo.get();
        if i + STRIPE_UNDO > self.limit {
            return Err(self.full());
        }
        let base = self.s.st.stripe_field_offset(s, &st.table) - offset_of!(Stripe, table) as u64;
        let words: [(&AtomicU64, usize); STRIPE_UNDO] = [
            (&st.table, offset_of!(Stripe, table)),
            (&st.count, offset_of!(Stripe, count)),
            (&st.tombstones, offset_of!(Stripe, tombstones)),
            (&st.value_bytes, offset_of!(Stripe, value_bytes)),
        ];
        for (j, (w, field)) in words.into_iter().enumerate() {
            let target = (base + field as u64) | (s as u64) << UNDO_STRIPE_SHIFT;
            self.log.undo[2 * (i + j)].store(target, R);
            self.log.undo[2 * (i + j) + 1].store(w.load(R), R);
        }
        self.s.slot.n_undo.store((i + STRIPE_UNDO) as u64, REL);
        self.n_undo.set(i + STRIPE_UNDO);
        Ok(())
    }

    /// Free `block` after commit, if its tag is then `LIVE` with the generation it has now.
    pub(crate) fn defer_free(&self, block: u64) -> Result<()> {
        let i = self.n_free.get();
        if i >= self.limit {
            return Err(self.full());
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

    /// Note that the key of record `rec` now has that record's value (`changelog::SET`), or
    /// was removed (`changelog::DEL`, `rec` the old record): for the change log, if the store
    /// keeps one (a no-op otherwise). What is logged is the record as it is at the append
    /// (one rewritten in place again later in the transaction is logged with its last value,
    /// sized from its lengths then).
    #[inline(always)]
    pub(crate) fn note_change(&self, kind: u64, rec: u64) {
        if let Some(c) = &self.changes {
            c.borrow_mut().push(kind, rec);
        }
    }

    /// Append what this transaction changed to the change log (if the store has one): the
    /// last step before [`Txn::commit`], under the stripe locks.
    #[inline]
    pub(crate) fn log_changes(&self) -> Result<()> {
        if let Some(c) = &self.changes {
            let mut c = c.borrow_mut();
            c.logged = crate::changelog::append(self.s, c.as_slice())?;
        }
        Ok(())
    }

    /// The commit point: from here on, recovery completes instead of rolling back. The caller
    /// then releases its `StripeWrite`s (publish, then unlock) and calls [`Txn::finish`].
    #[inline(always)]
    pub(crate) fn commit(&self) {
        self.s.slot.txn_state.store(TXN_COMMITTED, REL);
        crash_point!("txn.committed");
        if let Some(p) = self
            .changes
            .as_ref()
            .and_then(|c| c.borrow_mut().logged.take())
        {
            crate::changelog::mark(self.s, p, true);
        }
        // Under an LRU eviction policy a new record starts referenced, as a read would leave
        // it: a write is a use, and CLOCK then keeps it for one turn of the hand.
        let referenced = if eviction_is_lru(self.s.st.mem.header().eviction.load(R)) {
            TAG_REF
        } else {
            0
        };
        for i in 0..self.n_new.get() {
            let b = self.log.new[i].load(R);
            if let Ok(w) = self.s.word(b) {
                let t = Tag::from_word(w.load(R));
                if t.state == TAG_RESERVED && t.owner == self.s.me {
                    w.store(Tag::live(t.generation).word() | referenced, REL);
                }
            }
        }
        // Every new block is LIVE now: a recovery of this slot must not settle them again.
        // `finish` may free one of them (a batch's record of a key the same batch gave again)
        // into this client's block cache, RESERVED by this slot once more; a recovery that
        // then read the list would make it LIVE with nothing pointing at it (a leak; crash
        // point `txn.freeing@3` of scenario `put-many-dup`).
        self.s.slot.n_new.store(0, REL);
    }

    /// After commit and unlock: the deferred frees, then IDLE.
    #[inline(always)]
    pub(crate) fn finish(self) -> Result<()> {
        let mut first_err = None;
        let alloc = Allocator::new(self.s);
        for i in 0..self.n_free.get() {
            let (b, expect) = (
                self.log.frees[2 * i].load(R),
                self.log.frees[2 * i + 1].load(R),
            );
            crash_point!("txn.freeing");
            if let Err(e) = alloc.free_block_cached(b, expect) {
                log::error!("deferred free of {b:#x} failed: {e}");
                first_err.get_or_insert(e);
            }
        }
        self.end()?;
        first_err.map_or(Ok(()), Err)
    }

    /// Roll back while still holding `stripes` (seq odd): restore every logged word, then
    /// publish and unlock them, return the new blocks, and end the transaction.
    pub(crate) fn abort(self, stripes: HeldStripes<'a>) -> Result<()> {
        if let Some(p) = self
            .changes
            .as_ref()
            .and_then(|c| c.borrow_mut().logged.take())
        {
            crate::changelog::mark(self.s, p, false);
        }
        for i in (0..self.n_undo.get()).rev() {
            let target = self.log.undo[2 * i].load(R);
            let old = self.log.undo[2 * i + 1].load(R);
            self.s.word(target & TABLE_OFFSET_MASK)?.store(old, R);
        }
        drop(stripes);
        self.drop_new_blocks()?;
        self.end()
    }

    /// Give back new blocks before any stripe was touched (caller holds no stripe lock).
    fn drop_new_blocks(&self) -> Result<()> {
        let alloc = Allocator::new(self.s);
        for i in 0..self.n_new.get() {
            let b = self.log.new[i].load(R);
            let t = Tag::from_word(self.s.word(b)?.load(R));
            if t.state == TAG_RESERVED && t.owner == self.s.me {
                alloc.free_block_cached(b, t.word())?;
            }
        }
        Ok(())
    }

    fn end(&self) -> Result<()> {
        self.s.slot.txn_state.store(TXN_IDLE, REL);
        release_log_ext(self.s, self.s.slot, self.s.me)
    }

    /// Abort a transaction that never locked a stripe.
    pub(crate) fn cancel(self) -> Result<()> {
        self.drop_new_blocks()?;
        self.end()
    }
}

impl Drop for Txn<'_, '_> {
    #[inline(always)]
    fn drop(&mut self) {
        if let Some(b) = self.changes.take() {
            give_back_changes(b);
        }
    }
}

/// Free the log extension of `slot` (owned by `owner`) if it still holds one. Inline: every
/// transaction ends here, and few have an extension (the freeing path is out of line).
#[inline]
pub(crate) fn release_log_ext(s: &Session<'_>, slot: &Slot, owner: u32) -> Result<()> {
    let ext = slot.log_ext.load(ACQ);
    if ext != 0 {
        return free_log_ext(s, slot, owner, ext);
    }
    Ok(())
}

#[cold]
#[inline(never)]
fn free_log_ext(s: &Session<'_>, slot: &Slot, owner: u32, ext: u64) -> Result<()> {
    if let Ok(w) = s.word(ext) {
        let t = Tag::from_word(w.load(R));
        if t.state == TAG_RESERVED && t.owner == owner {
            Allocator::new(s).free_block(ext, t.word())?;
        }
    }
    slot.log_ext.store(0, REL);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{log_ext_size, LOG_EXT_HEADER_SIZE, MAX_RESERVE};

    fn addr(w: &[AtomicU64]) -> (usize, usize) {
        (w.as_ptr() as usize, std::mem::size_of_val(w))
    }

    /// The log views are exactly the slot's own arrays (inline) or the three consecutive
    /// arrays of the extension block, inside that block: a view shifted or sized wrong would
    /// write one log over another, or over a neighbour (cargo-mutants survivors: recovery reads
    /// through the same view, so crash tests alone cannot tell).
    #[test]
    fn log_views_are_the_slot_arrays_or_lie_inside_the_extension() {
        let t = crate::tests::TestStore::new("logview", crate::Config::default());
        let c = t.client();
        let s = c.session().unwrap();
        let log = LogView::of(s.st, s.slot, s.slot_off).unwrap();
        assert_eq!(log.cap, INLINE_LOG_CAP);
        let words = |p: *const u8, bytes: usize| (p as usize, bytes);
        assert_eq!(
            addr(log.undo),
            words(
                s.slot.undo.as_ptr().cast(),
                std::mem::size_of_val(&s.slot.undo)
            )
        );
        assert_eq!(
            addr(log.new),
            words(
                s.slot.new_blocks.as_ptr().cast(),
                std::mem::size_of_val(&s.slot.new_blocks)
            )
        );
        assert_eq!(
            addr(log.frees),
            words(
                s.slot.frees.as_ptr().cast(),
                std::mem::size_of_val(&s.slot.frees)
            )
        );
        // As many entries as the slot holds: no extension.
        let txn = Txn::begin(&s, INLINE_LOG_CAP).unwrap();
        assert_eq!(s.slot.log_ext.load(R), 0);
        txn.cancel().unwrap();
        // Beyond the largest extension: refused before anything is allocated.
        assert!(matches!(
            Txn::begin(&s, MAX_LOG_CAP as usize + 1).err(),
            Some(Error::BatchTooLarge { .. })
        ));
        assert_eq!(s.slot.txn_state.load(R), TXN_IDLE);
        // An extension for one entry more than the slot holds.
        let need = INLINE_LOG_CAP + 1;
        let txn = Txn::begin(&s, need).unwrap();
        let ext = s.slot.log_ext.load(R);
        assert_ne!(ext, 0);
        let block = s.st.mem.words(ext, log_ext_size(need as u64) / 8).unwrap();
        let (start, len) = addr(block);
        let base = start + LOG_EXT_HEADER_SIZE as usize;
        assert_eq!(txn.log.cap, need);
        assert_eq!(addr(txn.log.undo), (base, 16 * need));
        assert_eq!(addr(txn.log.new), (base + 16 * need, 8 * need));
        assert_eq!(addr(txn.log.frees), (base + 24 * need, 16 * need));
        assert_eq!(
            base + 40 * need,
            start + len,
            "the views fill the block exactly"
        );
        txn.cancel().unwrap();
        assert_eq!(s.slot.log_ext.load(R), 0, "the extension was given back");
    }

    /// A log-extension word or capacity damaged by another process is reported, never
    /// followed (and no arithmetic on it overflows: no panic in debug builds).
    #[test]
    fn a_damaged_log_extension_is_reported_not_followed() {
        let t = crate::tests::TestStore::new("logdamage", crate::Config::default());
        let c = t.client();
        let s = c.session().unwrap();
        let corrupt = |s: &Session<'_>| {
            matches!(
                LogView::of(s.st, s.slot, s.slot_off).err(),
                Some(Error::Corrupt { .. })
            )
        };
        for bad in [u64::MAX - 4, MAX_RESERVE + 8] {
            s.slot.log_ext.store(bad, R);
            assert!(corrupt(&s), "log extension at {bad:#x} was followed");
        }
        s.slot.log_ext.store(0, R);
        let txn = Txn::begin(&s, INLINE_LOG_CAP + 1).unwrap();
        let cap = s.st.mem.word(s.slot.log_ext.load(R) + 8).unwrap();
        let good = cap.load(R);
        for bad in [0, MAX_LOG_CAP + 1, u64::MAX] {
            cap.store(bad, R);
            assert!(corrupt(&s), "log extension capacity {bad} was taken");
        }
        cap.store(good, R);
        assert!(!corrupt(&s));
        txn.cancel().unwrap();
    }
}
