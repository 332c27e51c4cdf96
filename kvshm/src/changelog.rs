//! The change log: an optional ring in the segment to which every committed write of every
//! process appends what it changed, in one total order (issue 18: replication, live tails).
//!
//! Region (`Header::changelog_offset`, `changelog_len`; see docs/layout.md):
//!
//! ```text
//! +0    lock u32 (sync::lock word; innermost lock: nothing is waited for while it is held)
//! +8    head      monotonic byte position where the next entry goes
//! +16   tail      monotonic position of the oldest entry still whole (head - tail <= cap)
//! +24   next_seq  sequence number of the next entry (the first is 1)
//! +32   cap       bytes of the ring (immutable)
//! +4096 ring[cap] (a power of two) entries at position p live at ring[p % cap]; an entry
//!                 never wraps
//! ```
//!
//! Entry (8-byte aligned, [`ENTRY_HEADER`] bytes, then its changes):
//! `w0` = `seq << 2 | status` (PENDING, COMMITTED, ABORTED), or `len << 2 | PAD` for the filler
//! that skips the end of the ring; `w1` = `len | changes << 32`; `w2` = owner slot | flags << 32
//! (OVERFLOW: the transaction was too big to log, a reader must start over); `w3` = 0
//! (reserved: a clock read per write measured ~10% of a put).
//! Change: `kind | item_len << 8` (SET 1, DEL 2), then the record's own words from its `lens`
//! on: `lens`, `version`, `meta`, key words and (SET) value words.
//!
//! Protocol. A writer appends after its transaction applied everything and before it
//! commits, still holding its stripe locks (so entries of one key are in commit order, and
//! the log's order is a total order consistent with it): under the log lock it moves `tail`
//! past the entries it will overwrite (then a Release fence, as a seqlock writer), writes the
//! entry with status PENDING and its owner, records position and seq in its slot
//! (`clog_pending`, `clog_seq`), and publishes it by moving `head` (Release). After its commit
//! it clears the slot word, nothing else: the entry is committed implicitly (a reader settles
//! a PENDING entry through its owner's slot, [`settled`]); a rollback CASes the status to
//! ABORTED first. A recoverer of a dead writer marks a published PENDING entry of it COMMITTED
//! if the transaction had committed, else ABORTED; an entry the writer did not publish (it
//! died under the log lock) lies beyond `head` and is overwritten, and the recoverer makes the
//! slot stop naming it before it releases the lock ([`release_lock_of`]). A reader copies an
//! entry, then (Acquire fence) re-reads `tail`: if `tail` passed the entry meanwhile the copy
//! may be torn and the reader has lost its place ([`ChangeRead::Lost`]): it must start over
//! from a full copy of the store.

use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

use crate::crash_point;
use crate::error::{Error, Result};
use crate::layout::*;
use crate::mem::Mem;
use crate::session::Session;
use crate::store::Store;

const R: Ordering = Ordering::Relaxed;
const REL: Ordering = Ordering::Release;
const ACQ: Ordering = Ordering::Acquire;

/// Bytes of an entry's header.
pub const ENTRY_HEADER: u64 = 32;
/// Bytes of a change's header (kind, lens, version, meta).
pub const CHANGE_HEADER: u64 = 32;

const PAD: u64 = 0;
const PENDING: u64 = 1;
const COMMITTED: u64 = 2;
const ABORTED: u64 = 3;

/// `w2` flag: the transaction's changes were too big to log.
const OVERFLOW: u64 = 1;

/// Change kinds (`LoggedChange` items, and what a transaction notes in `Txn::note_change`).
pub(crate) const SET: u64 = 1;
pub(crate) const DEL: u64 = 2;

pub(crate) type Region = ChangelogRegion;

/// One changed key of a logged transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedChange {
    pub key: Vec<u8>,
    /// The new value, or `None`: the key was removed (by a remove, an expiry pass or eviction).
    pub value: Option<Vec<u8>>,
    /// Absolute expiry, Unix milliseconds (0 = none).
    pub expiry_ms: u64,
    /// The key's version after the change (`Client::get_versioned`).
    pub version: u64,
}

/// One committed transaction in the change log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeBatch {
    /// Its sequence number (1, 2, ... in log order; aborted transactions leave gaps).
    pub seq: u64,
    /// Its position in the log; the next batch starts at `next`.
    pub position: u64,
    pub next: u64,
    /// Its changes in the order they were made. Empty with `overflow` set: the transaction was
    /// too big for the log (over half of it), and a reader must start over from a full copy.
    pub changes: Vec<LoggedChange>,
    pub overflow: bool,
}

/// How a [`crate::Client::read_changes`] call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeRead {
    /// Everything up to `next` (the log's head) was read.
    UpTo { next: u64 },
    /// The entry at `next` belongs to a transaction still in progress (or to a writer that
    /// died and is not recovered yet): read again later from `next`.
    Waiting { next: u64 },
    /// The position asked for is no longer in the log (overwritten; `oldest` is the oldest
    /// position still there): a reader must start over from a full copy of the store.
    Lost { oldest: u64 },
}

/// The log's control words.
struct Control<'a> {
    lock: &'a AtomicU32,
    head: &'a AtomicU64,
    tail: &'a AtomicU64,
    waiters: &'a AtomicU32,
    changes: &'a AtomicU32,
}

impl Region {
    /// The control words and the ring's words, with one bounds check (positions index the
    /// ring through [`Region::ix`]).
    fn parts<'a>(&self, mem: &'a Mem) -> Result<(Control<'a>, &'a [AtomicU64])> {
        // Validated once, at attach (`Mem::set_changelog`).
        let all = mem.changelog_words();
        if all.len() as u64 != (CLOG_CONTROL_SIZE + self.cap) / 8 {
            return Err(self.bad(format!("region of {} words", all.len())));
        }
        let (ctl, ring) = all.split_at((CLOG_CONTROL_SIZE / 8) as usize);
        let w = |off: u64| &ctl[(off / 8) as usize];
        Ok((
            Control {
                lock: crate::mem::low_half(w(CLOG_LOCK)),
                head: w(CLOG_HEAD),
                tail: w(CLOG_TAIL),
                waiters: crate::mem::low_half(w(CLOG_WAITERS)),
                changes: crate::mem::low_half(w(CLOG_CHANGES)),
            },
            ring,
        ))
    }

    fn control<'a>(&self, mem: &'a Mem) -> Result<Control<'a>> {
        Ok(self.parts(mem)?.0)
    }

    fn ring<'a>(&self, mem: &'a Mem) -> Result<&'a [AtomicU64]> {
        Ok(self.parts(mem)?.1)
    }

    /// The index in the ring of the word at position `pos`.
    #[inline]
    fn ix(&self, pos: u64) -> usize {
        ((pos & (self.cap - 1)) / 8) as usize
    }

    fn bad(&self, what: String) -> Error {
        Error::corrupt(self.off, format!("change log: {what}"))
    }

    /// `bytes` of the ring from position `pos`, which must not cross the ring's end.
    fn span<'a>(&self, ring: &'a [AtomicU64], pos: u64, bytes: u64) -> Result<&'a [AtomicU64]> {
        let i = self.ix(pos);
        ring.get(i..i + (bytes / 8) as usize).ok_or_else(|| {
            self.bad(format!(
                "an entry of {bytes} bytes at {pos} crosses the ring's end"
            ))
        })
    }

    /// Length of the entry at `pos` (whole, under the lock or behind `head`), checked.
    fn entry_len(&self, ring: &[AtomicU64], pos: u64) -> Result<u64> {
        let i = self.ix(pos);
        let w0 = ring[i].load(R);
        let len = if w0 & 3 == PAD {
            w0 >> 2
        } else {
            ring.get(i + 1).map_or(0, |w| w.load(R) & 0xffff_ffff)
        };
        let room = self.cap - (pos & (self.cap - 1));
        if len < 8 || len % 8 != 0 || len > room || (w0 & 3 != PAD && len < ENTRY_HEADER) {
            return Err(self.bad(format!("entry at {pos}: length {len}")));
        }
        Ok(len)
    }
}

/// A logged entry of a transaction, PENDING until [`mark`]: the index in the ring of its
/// status word and its sequence number.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pending {
    ix: usize,
    seq: u64,
}

/// Bytes a change takes in an entry: a SET of a `klen`-byte key and `vlen`-byte value, or a
/// DEL of the key.
#[inline]
pub(crate) fn change_size(kind: u64, klen: usize, vlen: usize) -> u64 {
    let value = if kind == SET { pad8(vlen as u64) } else { 0 };
    CHANGE_HEADER + pad8(klen as u64) + value
}

/// Words of the control block.
const CTL_WORDS: usize = (CLOG_CONTROL_SIZE / 8) as usize;
const W_HEAD: usize = (CLOG_HEAD / 8) as usize;
const W_TAIL: usize = (CLOG_TAIL / 8) as usize;
const W_NEXT_SEQ: usize = (CLOG_NEXT_SEQ / 8) as usize;

/// The control block and the ring of the store's change log, validated at attach
/// ([`Mem::set_changelog`], [`Region`]'s checks): the write path's view, with no check per
/// call beyond the split. The ring's length in words is a power of two.
#[inline]
fn control_and_ring(mem: &Mem) -> Result<(&[AtomicU64; CTL_WORDS], &[AtomicU64])> {
    let all = mem.changelog_words();
    match all.split_first_chunk::<CTL_WORDS>() {
        Some((ctl, ring)) if ring.len().is_power_of_two() => Ok((ctl, ring)),
        _ => Err(no_region()),
    }
}

/// Append the changes of the caller's transaction (`(kind, record)`; the records are intact
/// until the transaction finishes) as a PENDING entry. Each change is sized from its record's
/// lengths now: a record rewritten in place twice by the transaction holds its last value.
/// The caller holds the stripe locks of every changed key and has not committed yet.
/// Measured per put (callgrind, `ops_driver put` with `KVSHM_CHANGELOG`): see
/// docs/PERFORMANCE.md. Kept tight: the change log's whole cost on a put is this function and
/// [`mark`]; a single-key write (one change) takes [`append_one`], without the general
/// path's loops.
pub(crate) fn append(s: &Session<'_>, changes: &[(u64, u64)]) -> Result<Option<Pending>> {
    match *changes {
        [] => Ok(None),
        [(kind, rec)] => append_one(s, kind, rec).map(Some),
        _ => append_many(s, changes).map(Some),
    }
}

/// [`append`] of one change: sized, its record's words found, then under the log lock the
/// room made ([`make_room`]), the entry written and published ([`publish`]).
#[inline(always)]
fn append_one(s: &Session<'_>, kind: u64, rec: u64) -> Result<Pending> {
    let (ctl, ring) = control_and_ring(&s.st.mem)?;
    let cap = (ring.len() * 8) as u64;
    let item = item_size(s, kind, rec)?;
    let size = ENTRY_HEADER + item;
    if size > cap / 2 {
        return append_many(s, &[(kind, rec)]); // an OVERFLOW entry
    }
    let region = s.st.clog.ok_or_else(no_region)?;
    let src = s.st.mem.words(rec + RECORD_LENS_OFFSET, (item - 8) / 8)?;
    let lock = crate::mem::low_half(&ctl[(CLOG_LOCK / 8) as usize]);
    s.lock_word(lock)?;
    crash_point!("clog.locked");
    // Under the lock nothing returns early: damage is reported after the unlock.
    let written = write_one(s, region, ctl, ring, (kind, item, src), size);
    finish_append(ctl, lock, written)
}

/// [`append_one`]'s work under the log lock: make room, write the entry, publish it.
#[inline(always)]
fn write_one(
    s: &Session<'_>,
    region: Region,
    ctl: &[AtomicU64; CTL_WORDS],
    ring: &[AtomicU64],
    (kind, item, src): (u64, u64, &[AtomicU64]),
    size: u64,
) -> Result<(Pending, bool)> {
    let head = make_room(region, ctl, ring, size)?;
    let (ix, w0, rest) = start_entry(s, region, ring, head, size, 1, 0)?;
    let [d0, d @ ..] = rest else {
        return Err(region.bad("a short entry".into()));
    };
    write_change(d0, d, kind, item, src);
    Ok(publish(s, ctl, w0, ix, head, size))
}

/// [`append`] of any number of changes (or of one too big for the log: an OVERFLOW entry).
#[inline(never)]
fn append_many(s: &Session<'_>, changes: &[(u64, u64)]) -> Result<Pending> {
    let mem = &s.st.mem;
    let region = s.st.clog.ok_or_else(no_region)?;
    let (ctl, ring) = control_and_ring(mem)?;
    let cap = (ring.len() * 8) as u64;
    let mut size = ENTRY_HEADER;
    for &(kind, rec) in changes {
        size = size.saturating_add(item_size(s, kind, rec)?);
    }
    let overflow = size > cap / 2 || changes.len() as u64 > u32::MAX as u64;
    if overflow {
        size = ENTRY_HEADER;
    }
    let lock = crate::mem::low_half(&ctl[(CLOG_LOCK / 8) as usize]);
    s.lock_word(lock)?;
    crash_point!("clog.locked");
    // Under the lock nothing returns early: `write_entry` reports damage after the unlock.
    let written = write_entry(s, region, ctl, ring, changes, size, overflow);
    finish_append(ctl, lock, written)
}

fn no_region() -> Error {
    Error::corrupt(0, "change log: no region")
}

/// The end of an append: unlock the log, wake a reader asleep for new entries.
#[inline(always)]
fn finish_append(
    ctl: &[AtomicU64; CTL_WORDS],
    lock: &AtomicU32,
    written: Result<(Pending, bool)>,
) -> Result<Pending> {
    let wake = written.as_ref().is_ok_and(|&(_, wake)| wake);
    crate::sync::lock::unlock(lock);
    if wake {
        let changed = crate::mem::low_half(&ctl[(CLOG_CHANGES / 8) as usize]);
        crate::sync::change::wake_all(changed);
    }
    crash_point!("clog.appended");
    Ok(written?.0)
}

/// Bytes the change `(kind, record)` takes in an entry, from the record's lengths now.
#[inline(always)]
fn item_size(s: &Session<'_>, kind: u64, rec: u64) -> Result<u64> {
    let (klen, vlen) = s.st.record_lens(rec)?;
    Ok(change_size(kind, klen, vlen))
}

/// Under the log lock: make room for an entry of `size` bytes at the head (the tail moved past
/// the entries it overwrites, a filler at the ring's end if the entry would cross it). Returns
/// the position the entry goes to.
#[inline(always)]
fn make_room(
    region: Region,
    ctl: &[AtomicU64; CTL_WORDS],
    ring: &[AtomicU64],
    size: u64,
) -> Result<u64> {
    let cap = (ring.len() * 8) as u64;
    let mask = cap - 1;
    let mut head = ctl[W_HEAD].load(R);
    let mut tail = ctl[W_TAIL].load(R);
    if tail > head || head - tail > cap || head % 8 != 0 {
        // Damaged control words: start the log afresh (readers find themselves lost).
        log::error!("change log control words damaged (head {head}, tail {tail}); reset");
        tail = head.next_multiple_of(8);
        head = tail;
    }
    let phys = head & mask;
    let pad = if phys + size > cap { cap - phys } else { 0 };
    let end = head + pad + size;
    if end - tail > cap {
        while end - tail > cap {
            tail += region.entry_len(ring, tail)?;
        }
        // As a seqlock writer: the new tail is visible before any byte of what it gave up is
        // overwritten (a reader that copied such bytes then sees the tail past its entry).
        ctl[W_TAIL].store(tail, R);
        fence(REL);
    }
    if pad > 0 {
        ring[((head & mask) / 8) as usize].store(pad << 2 | PAD, R);
        head += pad;
    }
    Ok(head)
}

/// Under the log lock: the words of the entry of `size` bytes at `head` (made room for), its
/// header but the status word written (`count` changes, the writer's slot, `flags`). Returns
/// its ring index, its status word and the words after the header.
#[inline(always)]
fn start_entry<'r>(
    s: &Session<'_>,
    region: Region,
    ring: &'r [AtomicU64],
    head: u64,
    size: u64,
    count: u64,
    flags: u64,
) -> Result<(usize, &'r AtomicU64, &'r [AtomicU64])> {
    let ix = ((head & ((ring.len() * 8) as u64 - 1)) / 8) as usize;
    let w = ring
        .get(ix..ix + (size / 8) as usize)
        .ok_or_else(|| region.bad("an entry crosses the ring's end".into()))?;
    let [w0, w1, w2, w3, rest @ ..] = w else {
        return Err(region.bad("a short entry".into()));
    };
    w1.store(size | count << 32, R);
    w2.store(s.me as u64 | flags << 32, R);
    w3.store(0, R);
    Ok((ix, w0, rest))
}

/// One change of an entry: its header word `d0`, then its record's words from the lengths on
/// (`src`, as many as `d` holds: for a DEL the key's, and its lengths say so).
#[inline(always)]
fn write_change(d0: &AtomicU64, d: &[AtomicU64], kind: u64, item: u64, src: &[AtomicU64]) {
    d0.store(kind | item << 8, R);
    for (d, w) in d.iter().zip(src) {
        d.store(w.load(R), R);
    }
    if kind == DEL {
        // Only the key was copied: the lens say so.
        if let Some(l) = d.first() {
            l.store(l.load(R) & 0xffff_ffff, R);
        }
    }
}

/// Under the log lock, the entry at `head` (ring index `ix`, status word `w0`) written but for
/// its status: give it its sequence number, PENDING, record it in the slot, publish it.
/// Returns it and whether a reader sleeps for new entries.
#[inline(always)]
fn publish(
    s: &Session<'_>,
    ctl: &[AtomicU64; CTL_WORDS],
    w0: &AtomicU64,
    ix: usize,
    head: u64,
    size: u64,
) -> (Pending, bool) {
    let seq = ctl[W_NEXT_SEQ].load(R);
    w0.store(seq << 2 | PENDING, R);
    s.slot.clog_seq.store(seq, R);
    s.slot.clog_pending.store(head + 1, REL);
    crash_point!("clog.written");
    ctl[W_NEXT_SEQ].store(seq + 1, R);
    ctl[W_HEAD].store(head + size, REL);
    // A reader asleep for new entries (one load when none is).
    let waiters = crate::mem::low_half(&ctl[(CLOG_WAITERS / 8) as usize]);
    let changed = crate::mem::low_half(&ctl[(CLOG_CHANGES / 8) as usize]);
    let wake = crate::sync::change::notice_locked(waiters, changed);
    (Pending { ix, seq }, wake)
}

/// [`append_many`]'s work under the log lock: make room, write the entry, publish it.
fn write_entry(
    s: &Session<'_>,
    region: Region,
    ctl: &[AtomicU64; CTL_WORDS],
    ring: &[AtomicU64],
    changes: &[(u64, u64)],
    size: u64,
    overflow: bool,
) -> Result<(Pending, bool)> {
    let mem = &s.st.mem;
    let head = make_room(region, ctl, ring, size)?;
    let flags = if overflow { OVERFLOW } else { 0 };
    let (ix, w0, rest) = start_entry(s, region, ring, head, size, changes.len() as u64, flags)?;
    if !overflow {
        let mut dst = rest;
        for &(kind, rec) in changes {
            let item = item_size(s, kind, rec)?;
            let n = ((item - 8) / 8) as usize;
            let src = mem.words(rec + RECORD_LENS_OFFSET, n as u64)?;
            let Some(([d0], d)) = dst.split_first_chunk::<1>() else {
                return Err(region.bad("a change past its entry".into()));
            };
            let (d, next) = d.split_at(n.min(d.len()));
            if d.len() != n {
                return Err(region.bad("a change past its entry".into()));
            }
            write_change(d0, d, kind, item, src);
            dst = next;
        }
    }
    Ok(publish(s, ctl, w0, ix, head, size))
}

/// After the commit (or a rollback): the entry is settled. A committed one stays PENDING in
/// the ring and is COMMITTED implicitly once the slot no longer names it (readers ask the
/// slot: [`settled`]), which saves a locked instruction per logged write; an aborted one is
/// marked ABORTED first (unless the ring already overwrote it).
pub(crate) fn mark(s: &Session<'_>, p: Pending, committed: bool) {
    if !committed {
        if let Ok((_, ring)) = control_and_ring(&s.st.mem) {
            if let Some(w) = ring.get(p.ix) {
                let _ = w.compare_exchange(p.seq << 2 | PENDING, p.seq << 2 | ABORTED, REL, R);
            }
        }
    }
    crash_point!("clog.marked");
    s.slot.clog_pending.store(0, REL);
}

/// Recovery of dead slot `dead`: release the log lock if it held it. What it wrote under the
/// lock and did not publish lies at or beyond `head`, and the next writer takes that position
/// and sequence number: the slot stops naming it before the lock goes (else [`resolve_dead`],
/// later in the same recovery, would take the next writer's entry for the dead one's and mark
/// it ABORTED - a committed write gone from the log).
pub(crate) fn release_lock_of(st: &Store, dead: u32) -> Result<()> {
    let Some(region) = st.clog else {
        return Ok(());
    };
    let c = region.control(&st.mem)?;
    if crate::sync::lock::owner(c.lock.load(ACQ)) == Some(dead) {
        if let Some(ds) = st.slot_offset(dead).and_then(|o| st.mem.slot_at(o).ok()) {
            // `clog_pending` is position + 1: an entry at or beyond `head`.
            if ds.clog_pending.load(ACQ) > c.head.load(ACQ) {
                ds.clog_pending.store(0, REL);
            }
        }
        crash_point!("recover.clog_unpublished");
        crate::sync::lock::unlock_all(c.lock);
    }
    Ok(())
}

/// Recovery of a dead writer's slot `ds`, after its transaction was rolled back or completed:
/// its published PENDING entry becomes COMMITTED or ABORTED accordingly.
pub(crate) fn resolve_dead(st: &Store, ds: &Slot, committed: bool) -> Result<()> {
    let pending = ds.clog_pending.load(ACQ);
    let Some(region) = st.clog else {
        return Ok(());
    };
    if pending == 0 {
        return Ok(());
    }
    let (pos, seq) = (pending - 1, ds.clog_seq.load(R));
    let c = region.control(&st.mem)?;
    if pos < c.head.load(ACQ) && pos % 8 == 0 {
        let status = if committed { COMMITTED } else { ABORTED };
        let w = &region.ring(&st.mem)?[region.ix(pos)];
        let _ = w.compare_exchange(seq << 2 | PENDING, seq << 2 | status, REL, R);
    }
    ds.clog_pending.store(0, REL);
    Ok(())
}

/// The position the next entry will take.
pub(crate) fn head(st: &Store, region: Region) -> Result<u64> {
    Ok(region.control(&st.mem)?.head.load(ACQ))
}

/// Read committed batches from `from` into `out` (at most `max`).
pub(crate) fn read(
    st: &Store,
    region: Region,
    from: u64,
    max: usize,
    out: &mut Vec<ChangeBatch>,
) -> Result<ChangeRead> {
    let mem = &st.mem;
    let c = region.control(mem)?;
    let ring = region.ring(mem)?;
    let mut p = from;
    let mut words: Vec<u64> = Vec::new();
    for _ in 0..max.max(1) * 2 {
        let head = c.head.load(ACQ);
        let tail = c.tail.load(ACQ);
        if p < tail || p > head || p % 8 != 0 {
            return Ok(ChangeRead::Lost { oldest: tail });
        }
        if p == head {
            return Ok(ChangeRead::UpTo { next: p });
        }
        let mut w0 = ring[region.ix(p)].load(ACQ);
        let mut status = w0 & 3;
        if status == PENDING {
            match settled(st, ring, region, p, w0) {
                Some(now) => (w0, status) = (now, now & 3),
                None => {
                    fence(ACQ);
                    if c.tail.load(R) > p {
                        return Ok(ChangeRead::Lost { oldest: tail });
                    }
                    return Ok(ChangeRead::Waiting { next: p });
                }
            }
        }
        let len = region.entry_len(ring, p);
        // Copy first, check afterwards: bytes read while the ring overwrote them are torn.
        let copied = len.and_then(|len| {
            let w = region.span(ring, p, len)?;
            words.clear();
            words.extend(w.iter().map(|x| x.load(R)));
            Ok(len)
        });
        fence(ACQ);
        if c.tail.load(R) > p || ring[region.ix(p)].load(R) != w0 {
            return Ok(ChangeRead::Lost {
                oldest: c.tail.load(R),
            });
        }
        let len = copied?;
        if status == COMMITTED || status == PENDING {
            out.push(parse(st, p, p + len, &words)?);
            if out.len() >= max {
                return Ok(ChangeRead::UpTo { next: p + len });
            }
        }
        p += len;
    }
    Ok(ChangeRead::UpTo { next: p })
}

/// Whether the PENDING entry at `p` (status word `w0`) is settled: `None` while its writer's
/// slot still names it (the transaction is in progress, or its writer died and is not
/// recovered yet); else its status word now, which is COMMITTED (explicitly, or implicitly:
/// still PENDING) or ABORTED. The slot is read after `head` (Acquire), and a writer names the
/// entry in its slot before publishing it: a slot that does not name it is done with it. An
/// ABORTED mark is made before the slot lets go of the entry, so it is seen here. An owner
/// that is no slot (a torn read of an entry being overwritten, or damage) reads as settled:
/// the caller's checks after the copy tell the two apart.
fn settled(st: &Store, ring: &[AtomicU64], region: Region, p: u64, w0: u64) -> Option<u64> {
    let i = region.ix(p);
    let owner = ring.get(i + 2)?.load(R) & 0xffff_ffff;
    let slot = u32::try_from(owner)
        .ok()
        .and_then(|o| st.slot_offset(o))
        .and_then(|off| st.mem.slot_at(off).ok());
    if slot.is_some_and(|sl| sl.clog_pending.load(ACQ) == p + 1) {
        return None;
    }
    let now = ring[i].load(ACQ);
    Some(if now & 3 == PAD { w0 } else { now })
}

/// Decode a copied COMMITTED entry (its words, checked: they are segment data).
fn parse(st: &Store, pos: u64, next: u64, w: &[u64]) -> Result<ChangeBatch> {
    let bad = |what: String| Error::corrupt(pos, format!("change log entry: {what}"));
    let n = (w[1] >> 32) as usize;
    let overflow = (w[2] >> 32) & OVERFLOW != 0;
    let mut batch = ChangeBatch {
        seq: w[0] >> 2,
        position: pos,
        next,
        changes: Vec::with_capacity(if overflow { 0 } else { n.min(w.len()) }),
        overflow,
    };
    if overflow {
        return Ok(batch);
    }
    let mut at = (ENTRY_HEADER / 8) as usize;
    for _ in 0..n {
        let head = w
            .get(at..at + 4)
            .ok_or_else(|| bad("a change past its end".into()))?;
        let (kind, item) = (head[0] & 0xff, head[0] >> 8);
        let (klen, vlen) = ((head[1] & 0xffff_ffff) as usize, (head[1] >> 32) as usize);
        let value_words = if kind == SET { pad8(vlen as u64) } else { 0 };
        if (kind != SET && kind != DEL)
            || klen > st.max_key
            || vlen > st.max_value
            || item != CHANGE_HEADER + pad8(klen as u64) + value_words
            || at + (item / 8) as usize > w.len()
        {
            return Err(bad(format!("change of kind {kind}, {klen}/{vlen} bytes")));
        }
        let bytes = |from: usize, len: usize| -> Vec<u8> {
            w[from..from + len.div_ceil(8)]
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .take(len)
                .collect()
        };
        let kw = (pad8(klen as u64) / 8) as usize;
        batch.changes.push(LoggedChange {
            key: bytes(at + 4, klen),
            value: (kind == SET).then(|| bytes(at + 4 + kw, vlen)),
            expiry_ms: head[3] & META_EXPIRY_MASK,
            version: head[2],
        });
        at += (item / 8) as usize;
    }
    Ok(batch)
}

impl crate::Client {
    /// Whether this store keeps a change log ([`crate::Config::changelog`]).
    pub fn has_changelog(&self) -> bool {
        self.st.clog.is_some()
    }

    /// The change log's head: the position the next committed write will take. A reader that
    /// starts here sees every write committed from now on. `InvalidArgument` if the store has
    /// no change log.
    pub fn changelog_head(&self) -> Result<u64> {
        head(&self.st, self.region()?)
    }

    /// Bytes of the change log's ring (`None`: the store has none).
    pub fn changelog_capacity(&self) -> Option<u64> {
        self.st.clog.map(|r| r.cap)
    }

    /// The oldest position still in the change log.
    pub fn changelog_tail(&self) -> Result<u64> {
        let region = self.region()?;
        Ok(region.control(&self.st.mem)?.tail.load(ACQ))
    }

    /// Append to `out` the committed transactions of the change log from position `from` on
    /// (at most `max` of them), in the log's order: one total order of every process's
    /// writes, consistent with each key's commit order. Aborted transactions are skipped.
    /// Reads only (lock-free); a reader that keeps up never misses a committed write.
    pub fn read_changes(
        &self,
        from: u64,
        max: usize,
        out: &mut Vec<ChangeBatch>,
    ) -> Result<ChangeRead> {
        read(&self.st, self.region()?, from, max, out)
    }

    /// Sleep until the change log's head moves past `from` (returns at once if it has), at
    /// most `timeout` (and spuriously: check again). No polling: a writer that appends wakes
    /// the sleeper (`sync::change`'s protocol, under the log lock). A writable client only.
    pub fn wait_changes(&self, from: u64, timeout: std::time::Duration) -> Result<()> {
        let region = self.region()?;
        let sess = self.session()?;
        let c = region.control(&self.st.mem)?;
        let seen = {
            let _g = sess.guard_word(c.lock)?;
            if c.head.load(ACQ) != from {
                return Ok(());
            }
            crate::sync::change::register_locked(c.waiters, c.changes)
        };
        crate::sync::change::sleep(c.changes, seen, timeout);
        Ok(())
    }

    /// Where this store stands as a replica, if recorded ([`Client::set_replication_position`]):
    /// the primary's replication id and the offset of the stream the store holds everything
    /// up to. A replica restarted from it resumes with a partial resync. Stores with a change
    /// log only (the position lives in its control page).
    pub fn replication_position(&self) -> Result<Option<(String, u64)>> {
        let region = self.region()?;
        let w = self
            .st
            .mem
            .words(region.off + CLOG_REPL_VALID, 2 + CLOG_REPL_ID_LEN / 8)?;
        if w[0].load(ACQ) != 1 {
            return Ok(None);
        }
        let offset = w[1].load(R);
        let id: Vec<u8> = w[2..]
            .iter()
            .flat_map(|x| x.load(R).to_le_bytes())
            .collect();
        // Checked again: a writer may have cleared it meanwhile.
        fence(ACQ);
        if w[0].load(R) != 1 || !id.iter().all(|b| b.is_ascii_alphanumeric()) {
            return Ok(None);
        }
        Ok(Some((String::from_utf8_lossy(&id).into_owned(), offset)))
    }

    /// Record where this store stands as a replica (`None`: nowhere, e.g. while a full
    /// resynchronisation rebuilds it, or after a promotion). The id must be 40 ASCII
    /// alphanumerics. Only the replication's applier writes it.
    pub fn set_replication_position(&self, pos: Option<(&str, u64)>) -> Result<()> {
        self.not_forked()?;
        let region = self.region()?;
        let w = self
            .st
            .mem
            .words(region.off + CLOG_REPL_VALID, 2 + CLOG_REPL_ID_LEN / 8)?;
        w[0].store(0, REL);
        let Some((id, offset)) = pos else {
            return Ok(());
        };
        let b = id.as_bytes();
        if b.len() != CLOG_REPL_ID_LEN as usize || !b.iter().all(|c| c.is_ascii_alphanumeric()) {
            return Err(Error::InvalidArgument(format!(
                "replication id {id:?}: 40 ASCII letters and digits"
            )));
        }
        for (x, chunk) in w[2..].iter().zip(b.chunks(8)) {
            x.store(u64::from_le_bytes(chunk.try_into().expect("8 bytes")), R);
        }
        w[1].store(offset, R);
        w[0].store(1, REL);
        Ok(())
    }

    /// Move the recorded replica offset (after applying the stream up to it); nothing if no
    /// position is recorded.
    pub fn set_replication_offset(&self, offset: u64) -> Result<()> {
        let region = self.region()?;
        self.st
            .mem
            .word(region.off + CLOG_REPL_OFFSET)?
            .store(offset, REL);
        Ok(())
    }

    fn region(&self) -> Result<Region> {
        self.st.clog.ok_or_else(|| {
            Error::InvalidArgument("this store has no change log (kvhost --changelog SIZE)".into())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::TestStore;
    use crate::Config;

    fn logged(c: &crate::Client, from: u64) -> (Vec<ChangeBatch>, ChangeRead) {
        let mut out = Vec::new();
        let mut p = from;
        loop {
            match c.read_changes(p, 1000, &mut out).unwrap() {
                ChangeRead::UpTo { next } if next == p => return (out, ChangeRead::UpTo { next }),
                ChangeRead::UpTo { next } => p = next,
                other => return (out, other),
            }
        }
    }

    /// The store's contents as the log tells them (replayed from the start).
    fn replay(batches: &[ChangeBatch]) -> std::collections::BTreeMap<Vec<u8>, Vec<u8>> {
        let mut m = std::collections::BTreeMap::new();
        for b in batches {
            assert!(!b.overflow);
            for ch in &b.changes {
                match &ch.value {
                    Some(v) => m.insert(ch.key.clone(), v.clone()),
                    None => m.remove(&ch.key),
                };
            }
        }
        m
    }

    fn contents(c: &crate::Client) -> std::collections::BTreeMap<Vec<u8>, Vec<u8>> {
        let mut m = std::collections::BTreeMap::new();
        for s in 0..c.stripes() {
            c.scan_stripe(s, |k, v, _| {
                m.insert(k.to_vec(), v.to_vec());
            })
            .unwrap();
        }
        m
    }

    /// One transaction that rewrites a key's record in place twice, the second time with a
    /// value of another length (a batch giving the key twice; EXEC's SET, SET): the log copies
    /// the record as it is at the append, so each change is sized from it, not from what the
    /// record held when the change was made (the storm's follower once met such an entry:
    /// "change of kind 1, 6/168 bytes").
    #[test]
    fn a_record_rewritten_twice_in_one_transaction_is_logged_whole() {
        let t = TestStore::new("clog-twice", Config::default().changelog(1 << 20));
        let c = t.client();
        for len in 90..200usize {
            let key = format!("k{len}").into_bytes();
            c.put(&key, &[1u8; 100]).unwrap();
            let start = c.changelog_head().unwrap();
            let (a, b) = (vec![2u8; 100], vec![3u8; len]);
            c.put_many(&[(&key[..], &a[..]), (&key[..], &b[..])])
                .unwrap();
            let (batches, end) = logged(&c, start);
            assert!(matches!(end, ChangeRead::UpTo { .. }), "{len}: {end:?}");
            assert_eq!(batches.len(), 1);
            let last = batches[0].changes.last().unwrap();
            assert_eq!(last.value.as_deref(), Some(&b[..]), "{len}");
            assert_eq!(replay(&batches).get(&key), Some(&b), "{len}");
        }
    }

    #[test]
    fn every_kind_of_write_is_logged_in_order() {
        let t = TestStore::new(
            "clog-kinds",
            Config::default().stripes(4).changelog(1 << 20),
        );
        let c = t.client();
        assert!(c.has_changelog());
        let start = c.changelog_head().unwrap();
        c.put(b"a", b"1").unwrap();
        c.put_with_ttl(b"b", b"2", std::time::Duration::from_secs(100))
            .unwrap();
        c.put_many(&[(&b"c"[..], &b"3"[..]), (b"d", b"4")]).unwrap();
        assert_eq!(c.incr(b"n", 5).unwrap(), 5);
        assert_eq!(c.incr(b"n", 2).unwrap(), 7);
        assert!(c.remove(b"a").unwrap());
        assert!(
            !c.remove(b"zz").unwrap(),
            "a remove of nothing logs nothing"
        );
        c.remove_many(&[&b"c"[..], b"d"]).unwrap();
        c.expire(b"n", std::time::Duration::from_secs(50)).unwrap();
        let (batches, end) = logged(&c, start);
        assert_eq!(
            end,
            ChangeRead::UpTo {
                next: c.changelog_head().unwrap()
            }
        );
        let seqs: Vec<u64> = batches.iter().map(|b| b.seq).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
        let flat: Vec<(Vec<u8>, Option<Vec<u8>>)> = batches
            .iter()
            .flat_map(|b| b.changes.iter().map(|c| (c.key.clone(), c.value.clone())))
            .collect();
        let v = |s: &str| Some(s.as_bytes().to_vec());
        let k = |s: &str| s.as_bytes().to_vec();
        assert_eq!(
            flat,
            vec![
                (k("a"), v("1")),
                (k("b"), v("2")),
                (k("c"), v("3")),
                (k("d"), v("4")),
                (k("n"), v("5")),
                (k("n"), v("7")),
                (k("a"), None),
                (k("c"), None),
                (k("d"), None),
                (k("n"), v("7")),
            ]
        );
        // One batch per transaction: put_many and remove_many are one each.
        assert_eq!(batches.len(), 8);
        assert_eq!(batches[2].changes.len(), 2);
        let b = &batches[1].changes[0];
        assert!(b.expiry_ms > crate::store::now_ms() + 90_000);
        assert!(
            batches[7].changes[0].expiry_ms > 0,
            "expire is logged with its time"
        );
        assert_eq!(
            batches[7].changes[0].version,
            c.get_versioned(b"n").unwrap().unwrap().1
        );
        assert_eq!(replay(&batches), contents(&c));
        assert!(t.host().verify().unwrap().is_ok());
    }

    #[test]
    fn a_removal_is_logged_with_the_whole_version_of_the_removed_record() {
        // Versions are `revision << 16 | stripe`: past 65,536 writes to a stripe they need more
        // than 32 bits (a DEL entry once kept only the low 32 bits of its version).
        let t = TestStore::new(
            "clog-del-version",
            Config::default().stripes(1).changelog(1 << 20),
        );
        let c = t.client();
        let batch: Vec<(Vec<u8>, Vec<u8>)> = (0..1024u32)
            .map(|i| (i.to_le_bytes().to_vec(), b"v".to_vec()))
            .collect();
        let pairs: Vec<(&[u8], &[u8])> = batch.iter().map(|(k, v)| (&k[..], &v[..])).collect();
        for _ in 0..65 {
            c.put_many(&pairs).unwrap();
        }
        c.put(b"gone", b"value").unwrap();
        let version = c.get_versioned(b"gone").unwrap().unwrap().1;
        assert!(version > u32::MAX as u64, "{version:#x}");
        let start = c.changelog_head().unwrap();
        assert!(c.remove(b"gone").unwrap());
        let (batches, _) = logged(&c, start);
        assert_eq!(batches.len(), 1);
        let del = &batches[0].changes[0];
        assert_eq!((&del.key[..], del.value.as_ref()), (&b"gone"[..], None));
        assert_eq!(del.version, version);
        // The same through the general path (a transaction of several changes).
        c.put(b"gone 2", b"value").unwrap();
        c.put(b"gone 3", b"value").unwrap();
        let v2 = c.get_versioned(b"gone 2").unwrap().unwrap().1;
        let v3 = c.get_versioned(b"gone 3").unwrap().unwrap().1;
        let start = c.changelog_head().unwrap();
        assert_eq!(c.remove_many(&[&b"gone 2"[..], &b"gone 3"[..]]).unwrap(), 2);
        let (batches, _) = logged(&c, start);
        assert_eq!(batches.len(), 1);
        let mut dels: Vec<(Vec<u8>, Option<Vec<u8>>, u64)> = batches[0]
            .changes
            .iter()
            .map(|d| (d.key.clone(), d.value.clone(), d.version))
            .collect();
        dels.sort();
        assert_eq!(
            dels,
            [
                (b"gone 2".to_vec(), None, v2),
                (b"gone 3".to_vec(), None, v3)
            ]
        );
    }

    #[test]
    fn a_reader_left_behind_is_told_it_lost_its_place() {
        let t = TestStore::new(
            "clog-wrap",
            Config::default().stripes(4).changelog(64 << 10),
        );
        let c = t.client();
        let value = vec![7u8; 1000];
        for i in 0..40u32 {
            c.put(format!("k{i}").as_bytes(), &value).unwrap();
        }
        let (first, end) = logged(&c, 0);
        assert_eq!(first.len(), 40);
        assert!(matches!(end, ChangeRead::UpTo { .. }));
        // 64 KiB hold ~60 of these: after 200 more, position 0 is gone.
        for i in 0..200u32 {
            c.put(format!("k{}", i % 50).as_bytes(), &value).unwrap();
        }
        let mut out = Vec::new();
        let tail = c.changelog_tail().unwrap();
        assert!(tail > 0);
        assert_eq!(
            c.read_changes(0, 10, &mut out).unwrap(),
            ChangeRead::Lost { oldest: tail }
        );
        // From the tail on, everything there is whole and in order.
        let (rest, end) = logged(&c, tail);
        assert!(matches!(end, ChangeRead::UpTo { .. }));
        assert!(rest.len() > 40);
        assert!(rest.windows(2).all(|w| w[0].seq + 1 == w[1].seq));
        assert_eq!(rest.last().unwrap().seq, 240);
        // A transaction over half the log is logged as an overflow mark.
        let big: Vec<(Vec<u8>, Vec<u8>)> = (0..40)
            .map(|i| (format!("big{i}").into_bytes(), value.clone()))
            .collect();
        let head = c.changelog_head().unwrap();
        c.put_many(&big).unwrap();
        let (b, _) = logged(&c, head);
        assert_eq!(b.len(), 1);
        assert!(b[0].overflow && b[0].changes.is_empty());
        assert!(t.host().verify().unwrap().is_ok());
    }

    #[test]
    fn a_replica_position_is_recorded_whole_or_not_at_all() {
        let t = TestStore::new("clog-pos", Config::default().stripes(4).changelog(1 << 20));
        let c = t.client();
        assert_eq!(c.replication_position().unwrap(), None);
        let id = "0123456789abcdef0123456789abcdef01234567";
        c.set_replication_position(Some((id, 77))).unwrap();
        assert_eq!(
            c.replication_position().unwrap(),
            Some((id.to_string(), 77))
        );
        c.set_replication_offset(1234).unwrap();
        assert_eq!(
            t.client().replication_position().unwrap(),
            Some((id.to_string(), 1234))
        );
        assert!(c.set_replication_position(Some(("short", 1))).is_err());
        assert_eq!(
            c.replication_position().unwrap(),
            None,
            "a refused id clears it"
        );
        c.set_replication_position(Some((id, 5))).unwrap();
        c.set_replication_position(None).unwrap();
        assert_eq!(c.replication_position().unwrap(), None);
    }

    #[test]
    fn a_store_without_a_log_says_so_and_older_layouts_are_unchanged() {
        let t = TestStore::new("clog-none", Config::default().stripes(4));
        let c = t.client();
        assert!(!c.has_changelog());
        assert!(matches!(c.changelog_head(), Err(Error::InvalidArgument(_))));
        assert_eq!(
            c.st.mem.header().layout_version.load(R),
            crate::layout::LAYOUT_VERSION
        );
        let t2 = TestStore::new("clog-v5", Config::default().stripes(4).changelog(1 << 20));
        assert_eq!(
            t2.client().st.mem.header().layout_version.load(R),
            crate::layout::LAYOUT_VERSION_CHANGELOG
        );
        assert!(Config::default().changelog(1000).validate().is_err());
    }
}
