//! A writer's identity in the store: its client slot, and how it takes lock words.
//!
//! A [`Session`] names the slot a client (or a recoverer acting for a dead one) writes as. It
//! takes lock words in the segment with [`Session::lock_word`], and holds them as
//! [`LockGuard`]s; a stripe locked for writing is a [`StripeWrite`] (lock held, `seq` odd).
//!
//! Layering: this module sits below the allocator, the transaction log and recovery. A lock
//! wait that finds a dead owner must recover it, and recovery lives above us, so the session
//! carries the recovery entry point as a plain function ([`OnStall`]) that the client layer
//! injects; no module here imports one above it.

use std::sync::atomic::{AtomicU32, AtomicU64};

use crate::error::Result;
use crate::layout::Slot;
use crate::segment;
use crate::store::Store;
use crate::sync::{lock, seqlock};

/// What a lock wait does when the owner of the word stalled for [`lock::STALL_CHECK`]:
/// check whether `owner` is alive and recover it if not (`recovery::probe_and_recover`).
pub(crate) type OnStall = for<'x> fn(&Session<'x>, u32) -> Result<()>;

/// A client slot in use by this process (or being recovered by it).
#[derive(Clone, Copy)]
pub(crate) struct Session<'a> {
    pub st: &'a Store,
    pub me: u32,
    pub slot_off: u64,
    pub slot: &'a Slot,
    pub on_stall: OnStall,
    /// The client's block cache, for sessions of a client holding its write mutex (recoverers
    /// and sessions without the mutex allocate from the classes directly).
    pub cache: Option<&'a crate::cache::BlockCache>,
}

impl std::fmt::Debug for Session<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("me", &self.me)
            .field("slot_off", &self.slot_off)
            .finish()
    }
}

impl<'a> Session<'a> {
    /// Take a lock word in the segment as this client, recovering a dead owner if need be.
    /// Prefer [`Session::guard_word`], which unlocks on drop.
    #[inline]
    pub(crate) fn lock_word(&self, w: &AtomicU32) -> Result<()> {
        self.lock_counted(w, &self.st.lock_waits.other)
    }

    /// Take `w`; a take that does not succeed at once is counted in `waits` with the time it
    /// took (process-local: the clock is read only on that slow path).
    #[inline]
    fn lock_counted(&self, w: &AtomicU32, waits: &crate::store::WaitCounter) -> Result<()> {
        if lock::try_lock(w, self.me) {
            return Ok(());
        }
        self.lock_slow(w, waits)
    }

    #[cold]
    #[inline(never)]
    fn lock_slow(&self, w: &AtomicU32, waits: &crate::store::WaitCounter) -> Result<()> {
        let t = std::time::Instant::now();
        let r = lock::lock(w, self.me, |owner| (self.on_stall)(self, owner));
        waits.record(t.elapsed());
        r
    }

    /// [`Session::lock_word`], held until the guard drops.
    pub(crate) fn guard_word<'w>(&self, w: &'w AtomicU32) -> Result<LockGuard<'w>> {
        self.lock_word(w)?;
        Ok(LockGuard::new(w))
    }

    /// Take `w` unless its owner turns out to be dead while we wait: then `Ok(Err(owner))`,
    /// and the caller recovers `owner` itself once it holds nothing that recovery may need
    /// (verify, which holds other allocator locks, must not recover from inside the wait).
    pub(crate) fn guard_word_unless_dead<'w>(
        &self,
        w: &'w AtomicU32,
    ) -> Result<std::result::Result<LockGuard<'w>, u32>> {
        let r = lock::lock(w, self.me, |owner| {
            match segment::ofd_is_locked(&self.st.file, segment::SLOT_LOCK_BASE + owner as u64) {
                Ok(false) => Err(Ok(owner)),
                Ok(true) => Ok(()),
                Err(e) => Err(Err(e)),
            }
        });
        match r {
            Ok(()) => Ok(Ok(LockGuard::new(w))),
            Err(Ok(dead)) => Ok(Err(dead)),
            Err(Err(e)) => Err(e),
        }
    }

    /// Lock stripe `s` (recording it in the slot's `waiting_on` while we wait).
    #[inline(always)]
    pub(crate) fn lock_stripe(&self, s: usize) -> Result<LockGuard<'a>> {
        let stripe = self.st.mem.stripe(s);
        self.slot.waiting_on.store(s as u64 + 1, R);
        let r = self.lock_counted(&stripe.lock, &self.st.lock_waits.stripe);
        self.slot.waiting_on.store(0, R);
        r.map(|_| LockGuard::new(&stripe.lock))
    }

    /// Lock stripe `s` for writing: locked, then its `seq` made odd (readers will retry).
    #[inline(always)]
    pub(crate) fn write_stripe(&self, s: usize) -> Result<StripeWrite<'a>> {
        let lock = self.lock_stripe(s)?;
        stripe_write_begin(self.st, s);
        Ok(StripeWrite {
            st: self.st,
            stripe: s,
            lock,
        })
    }

    /// A word inside the segment as `&AtomicU64` (checked).
    #[inline]
    pub(crate) fn word(&self, off: u64) -> Result<&'a AtomicU64> {
        self.st.mem.word(off)
    }
}

const R: std::sync::atomic::Ordering = std::sync::atomic::Ordering::Relaxed;

/// Make stripe `s`'s `seq` odd (the caller holds its lock).
#[inline]
pub(crate) fn stripe_write_begin(st: &Store, s: usize) {
    seqlock::write_begin(&st.mem.stripe(s).seq);
}

/// Make stripe `s`'s `seq` even again, publishing everything written meanwhile.
#[inline]
pub(crate) fn stripe_write_end(st: &Store, s: usize) {
    seqlock::write_end(&st.mem.stripe(s).seq);
}

/// A lock word held by this process. Dropping it unlocks, unless a panic began while it was
/// held: then the lock stays with our slot, and the recovery of that slot releases it (what
/// was half written under it is rolled back from the log): `client::WriteGuard` runs that
/// recovery before the panic leaves the client. Locks taken *during* unwinding (by that very
/// recovery) are released normally.
#[must_use = "the lock is released when the guard drops"]
pub(crate) struct LockGuard<'w> {
    word: &'w AtomicU32,
    /// `std::thread::panicking()` when the lock was taken.
    taken_panicking: bool,
}

impl<'w> LockGuard<'w> {
    fn new(word: &'w AtomicU32) -> LockGuard<'w> {
        LockGuard {
            word,
            taken_panicking: std::thread::panicking(),
        }
    }

    /// Whether a panic began while the lock was held.
    fn panicked_while_held(&self) -> bool {
        std::thread::panicking() && !self.taken_panicking
    }
}

impl Drop for LockGuard<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        if !self.panicked_while_held() {
            lock::unlock(self.word);
        }
    }
}

/// A stripe locked for writing (`seq` odd). Dropping it makes `seq` even (publishing the
/// writes) and unlocks, unless a panic began while it was held (see [`LockGuard`]).
#[must_use = "the stripe is published and unlocked when the guard drops"]
pub(crate) struct StripeWrite<'a> {
    st: &'a Store,
    pub stripe: usize,
    lock: LockGuard<'a>,
}

impl Drop for StripeWrite<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        if !self.lock.panicked_while_held() {
            stripe_write_end(self.st, self.stripe);
        }
        // `self.lock` drops after this body: unlock comes after the even `seq`.
        let _ = &self.lock;
    }
}

impl StripeWrite<'_> {
    /// What dropping it does (publish, then unlock), inline: the drop glue was an out-of-line
    /// call on every write's path (~37 instructions per put, callgrind).
    #[inline(always)]
    pub(crate) fn release(self) {
        if !self.lock.panicked_while_held() {
            stripe_write_end(self.st, self.stripe);
            // Published, still locked: a writer killed here leaves its lock to recovery and
            // an even `seq` (the other order would leave readers an odd one and no holder).
            crate::crash_point!("stripe.published");
            lock::unlock(self.lock.word);
        }
        // Done by hand above: the guards must not run again.
        std::mem::forget(self);
    }
}

/// The stripes one write holds, in locking (ascending) order. The first is kept inline: a
/// single-key write (every `put` and `remove`) allocates nothing for it (measured: a `Vec`
/// here cost ~110 instructions of malloc/free per put under callgrind).
pub(crate) struct HeldStripes<'a> {
    first: Option<StripeWrite<'a>>,
    rest: Vec<StripeWrite<'a>>,
}

impl<'a> HeldStripes<'a> {
    /// Room for `n` stripes without a reallocation (a batch's locks).
    pub(crate) fn with_capacity(n: usize) -> HeldStripes<'a> {
        HeldStripes {
            first: None,
            rest: Vec::with_capacity(n.saturating_sub(1)),
        }
    }

    #[inline(always)]
    pub(crate) fn push(&mut self, s: StripeWrite<'a>) {
        if self.first.is_none() {
            self.first = Some(s);
        } else {
            self.rest.push(s);
        }
    }
}

impl HeldStripes<'_> {
    /// Publish and unlock each stripe in locking order, calling `after_one` after each (no
    /// iterator adapter: its drop glue cost every write ~40 instructions, callgrind).
    #[inline(always)]
    pub(crate) fn release_each(self, mut after_one: impl FnMut()) {
        let HeldStripes { first, rest } = self;
        if let Some(s) = first {
            s.release();
            after_one();
        }
        // A single-key write holds no more: no iterator made and dropped for nothing
        // (callgrind: ~25 instructions per put), and no call to drop a `Vec` that never
        // allocated (capacity 0: forgetting it leaks nothing; ~18 instructions per put).
        if rest.capacity() == 0 {
            std::mem::forget(rest);
            return;
        }
        for s in rest {
            s.release();
            after_one();
        }
    }
}
