//! Recovery of a dead client's slot: finish or roll back its transaction and release what it
//! held. One function per step of the list in `docs/ARCHITECTURE.md` ("Recovery"):
//!
//! 1. [`rebuild_allocator`]: class and span locks the dead client held; lists are rebuilt
//!    from the block tags.
//! 2. [`roll_back`]: an ACTIVE transaction's undo entries, newest first, on the stripes it
//!    still holds (made odd first, so readers retry).
//! 3. [`settle_new_blocks`]: a COMMITTED transaction's new blocks become LIVE *before* its
//!    stripes are released, as in `Txn::commit` (once unlocked, another writer may replace such
//!    a record, and its deferred free expects LIVE); an ACTIVE one's are collected.
//! 4. [`release_stripes`]: `seq` even and unlock.
//! 5. [`free_blocks`]: an ACTIVE transaction's new blocks (unreachable since the undo) go back;
//!    a COMMITTED one's deferred frees are done.
//! 6. [`release_slot_cache`]: blocks still in the client's block cache go back.
//! 7. [`retire_slot`]: state IDLE, log extension freed, counters folded into the store
//!    totals, slot FREE.
//!
//! Recovery of slot `d` runs only while holding `d`'s OFD byte, so exactly one recoverer works
//! at a time; every step is idempotent, so a recoverer killed anywhere leaves work the next one
//! redoes.
//!
//! **Re-entrancy.** Recovery takes locks (step 5 frees blocks under their class or span lock),
//! and any lock wait may find *another* dead owner and recover it in turn, which frees blocks,
//! which may wait on a lock again. Each level holds a different dead slot's OFD byte (a byte we
//! hold is never taken again, so the same slot is never recovered twice in one stack), so the
//! nesting is bounded by the number of dead slots. Steps 1-4 take no lock. A caller that holds
//! an allocator lock itself (verify holds them all) and then recovers a client whose frees need
//! that lock finds its own slot named owner: `Corrupt`. Such callers recover first and lock
//! after (`Client::verify`).

use std::sync::atomic::Ordering;

use crate::alloc::{release_slot_cache, Allocator};
use crate::crash_point;
use crate::error::{Error, Result};
use crate::layout::*;
use crate::segment;
use crate::session::{stripe_write_begin, stripe_write_end, Session};
use crate::sync::lock;
use crate::txn::{release_log_ext, LogView};

const R: Ordering = Ordering::Relaxed;
const REL: Ordering = Ordering::Release;
const ACQ: Ordering = Ordering::Acquire;

/// Recover `owner` if it is dead (we can take its liveness byte). A live owner, or one that
/// another process is already recovering, is left alone. This is the [`Session::on_stall`]
/// of every client session.
pub(crate) fn probe_and_recover(s: &Session<'_>, owner: u32) -> Result<()> {
    if owner == s.me {
        return Err(Error::corrupt(
            0,
            "a lock word names this client as its owner",
        ));
    }
    let byte = segment::SLOT_LOCK_BASE + owner as u64;
    if !segment::ofd_try_lock(&s.st.file, byte)? {
        return Ok(());
    }
    let r = recover_slot(s, owner);
    segment::ofd_unlock(&s.st.file, byte);
    r.map(|_| ())
}

/// Recover slot `dead`, whose liveness byte the caller holds. Returns whether it was attached.
pub(crate) fn recover_slot(s: &Session<'_>, dead: u32) -> Result<bool> {
    recover(s, dead, Retire::Free)
}

/// Recover this session's own slot after a panic interrupted one of its operations: what it
/// held (stripe and allocator locks, an open transaction) is rolled back or finished exactly
/// as for a dead client, and the slot stays attached. A panic is a stop at one instruction,
/// like a kill, so the log describes the state; without this, the locks would stay with a
/// live owner (this process, e.g. kept alive by a caller's `catch_unwind`) and every other
/// process would wait on them forever. The caller holds the client's write mutex.
pub(crate) fn recover_own(s: &Session<'_>) -> Result<()> {
    recover(s, s.me, Retire::Keep).map(|_| ())
}

/// What happens to the recovered slot at the end.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Retire {
    /// A dead client's: counters folded, slot FREE.
    Free,
    /// Our own, after a panic: slot stays ALIVE.
    Keep,
}

fn recover(s: &Session<'_>, dead: u32, retire: Retire) -> Result<bool> {
    rebuild_allocator(s, dead)?;
    let stripes: Vec<usize> = (0..s.st.mem.stripe_count())
        .filter(|&i| lock::owner(s.st.mem.stripe(i).lock.load(ACQ)) == Some(dead))
        .collect();
    let Some(off) = s.st.slot_offset(dead) else {
        // A lock word names a slot that does not exist: release what it holds.
        release_stripes(s, &stripes);
        return Err(Error::corrupt(
            0,
            format!("lock held by non-existent slot {dead}"),
        ));
    };
    let ds = s.st.mem.slot_at(off)?;
    if ds.state.load(ACQ) != SLOT_ALIVE {
        release_stripes(s, &stripes);
        return Ok(false);
    }
    let state = ds.txn_state.load(ACQ);
    match (LogView::of(s.st, ds, off), state) {
        (Ok(log), state) if state != TXN_IDLE => {
            let n = |c: &std::sync::atomic::AtomicU64| (c.load(ACQ) as usize).min(log.cap);
            let (n_undo, n_new, n_free) = (n(&ds.n_undo), n(&ds.n_new), n(&ds.n_free));
            if state == TXN_ACTIVE {
                roll_back(s, &log, n_undo, &stripes)?;
            }
            let reserved = settle_new_blocks(s, &log, n_new, dead, state);
            release_stripes(s, &stripes);
            crash_point!("recover.stripes_released");
            free_blocks(s, &log, &reserved, n_free, state)?;
        }
        (log, _) => {
            if let Err(e) = log {
                log::error!(
                    "client {} (slot {dead}): unreadable log, not replayed: {e}",
                    ds.client_id.load(R)
                );
            }
            release_stripes(s, &stripes);
        }
    }
    // Its change log entry follows the transaction's outcome.
    crate::changelog::resolve_dead(s.st, ds, state == TXN_COMMITTED)?;
    // After the transaction: a block both logged and still in an entry is LIVE or FREE now.
    release_slot_cache(s, ds, dead)?;
    match retire {
        Retire::Free => retire_slot(s, ds, dead, state)?,
        Retire::Keep => {
            ds.txn_state.store(TXN_IDLE, REL);
            release_log_ext(s, ds, dead)?;
            log::error!(
                "client {} (slot {dead}): an operation panicked; its locks were released and \
                 its transaction {}",
                ds.client_id.load(R),
                if state == TXN_COMMITTED {
                    "completed"
                } else {
                    "rolled back"
                }
            );
        }
    }
    Ok(true)
}

/// Step 1: allocator locks the dead client held. Their lists are hints: rebuild them from the
/// tags, then release the lock.
fn rebuild_allocator(s: &Session<'_>, dead: u32) -> Result<()> {
    let h = s.st.mem.header();
    let alloc = Allocator::new(s);
    for (c, cls) in h.classes.iter().enumerate() {
        if lock::owner(cls.lock.load(ACQ)) == Some(dead) {
            alloc.rebuild_class(c)?;
            crash_point!("recover.class_rebuilt");
            lock::unlock_all(&cls.lock);
        }
    }
    if lock::owner(h.span_lock.load(ACQ)) == Some(dead) {
        alloc.rebuild_spans()?;
        lock::unlock_all(&h.span_lock);
    }
    crate::changelog::release_lock_of(s.st, dead)?;
    Ok(())
}

/// Step 2: undo an ACTIVE transaction's in-place writes on the stripes it still holds (the
/// others were never written under its log, or were already released by an earlier recoverer).
fn roll_back(s: &Session<'_>, log: &LogView<'_>, n_undo: usize, stripes: &[usize]) -> Result<()> {
    for &i in stripes {
        stripe_write_begin(s.st, i);
    }
    for i in (0..n_undo).rev() {
        let target = log.undo[2 * i].load(R);
        let stripe = (target >> UNDO_STRIPE_SHIFT) as usize;
        if stripes.binary_search(&stripe).is_ok() {
            let old = log.undo[2 * i + 1].load(R);
            s.word(target & TABLE_OFFSET_MASK)?.store(old, R);
        }
    }
    crash_point!("recover.undone");
    Ok(())
}

/// Step 3: a COMMITTED transaction's new blocks still RESERVED by `dead` become LIVE; an ACTIVE
/// one's are returned (with their tag word) for step 5.
fn settle_new_blocks(
    s: &Session<'_>,
    log: &LogView<'_>,
    n_new: usize,
    dead: u32,
    state: u64,
) -> Vec<(u64, u64)> {
    let mut reserved = Vec::new();
    for i in 0..n_new {
        let b = log.new[i].load(R);
        let Ok(tagw) = s.word(b) else { continue };
        let t = Tag::from_word(tagw.load(R));
        if t.state == TAG_RESERVED && t.owner == dead {
            if state == TXN_COMMITTED {
                let _ = tagw.compare_exchange(t.word(), Tag::live(t.generation).word(), REL, R);
            } else {
                reserved.push((b, t.word()));
            }
        }
    }
    reserved
}

/// Step 4: publish and unlock stripes a dead owner held.
fn release_stripes(s: &Session<'_>, stripes: &[usize]) {
    for &i in stripes {
        let stripe = s.st.mem.stripe(i);
        if stripe.seq.load(R) & 1 == 1 {
            stripe_write_end(s.st, i);
        }
        lock::unlock_all(&stripe.lock);
    }
}

/// Step 5: free an ACTIVE transaction's new blocks, or do a COMMITTED one's deferred frees.
fn free_blocks(
    s: &Session<'_>,
    log: &LogView<'_>,
    reserved: &[(u64, u64)],
    n_free: usize,
    state: u64,
) -> Result<()> {
    let alloc = Allocator::new(s);
    for &(b, tag) in reserved {
        alloc.free_block(b, tag)?;
    }
    if state == TXN_COMMITTED {
        for i in 0..n_free {
            let (b, expect) = (log.frees[2 * i].load(R), log.frees[2 * i + 1].load(R));
            alloc.free_block(b, expect)?;
        }
    }
    crash_point!("recover.blocks_done");
    Ok(())
}

/// Step 7: end the dead client's transaction and give its slot back.
fn retire_slot(s: &Session<'_>, ds: &Slot, dead: u32, state: u64) -> Result<()> {
    let h = s.st.mem.header();
    ds.txn_state.store(TXN_IDLE, REL);
    release_log_ext(s, ds, dead)?;
    for (i, f) in h.folded.iter().enumerate() {
        f.fetch_add(ds.take_counter(i), R);
    }
    ds.state.store(SLOT_FREE, REL);
    h.recoveries.fetch_add(1, R);
    // The shared lane: the recoverer may be any thread of its client (`Client::count`).
    s.slot.counters_shared[Counter::Recoveries as usize].fetch_add(1, R);
    log::warn!(
        "recovered dead client {} (pid {}, slot {dead}): transaction {}",
        ds.client_id.load(R),
        ds.pid.load(R),
        match state {
            TXN_ACTIVE => "rolled back",
            TXN_COMMITTED => "completed",
            _ => "none",
        }
    );
    Ok(())
}
