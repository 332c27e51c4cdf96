//! A 32-bit futex lock word that records its owner: `0` (free) or `(owner slot + 1) | WAITERS`.
//!
//! Unlike a pthread robust mutex, the owner's identity survives its death, so a waiter that
//! times out can ask whether the owner is alive (its OFD byte lock) and, if not, recover the
//! owner's transaction log before freeing the lock. A live but stopped owner is never robbed.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::atomic::LockWord;

/// Set while at least one process may be sleeping on the word.
pub const WAITERS: u32 = 1 << 31;
const OWNER_MASK: u32 = !WAITERS;

/// How long a waiter sleeps before it checks whether the owner is still alive.
pub const STALL_CHECK: Duration = Duration::from_millis(20);
/// Spins before sleeping (none under loom, where every spin is a state to explore).
#[cfg(not(kvshm_loom))]
const SPINS: u32 = 64;
#[cfg(kvshm_loom)]
const SPINS: u32 = 0;

/// Whether a process may be sleeping on a lock word holding `word`.
#[inline]
pub fn has_waiters(word: u32) -> bool {
    word & WAITERS != 0
}

/// For a thread doing a long job in bounded holds of one lock, after a hold that ended with
/// waiters on the lock: pause before the next hold, long enough for the woken waiter to take
/// the lock first (the releasing thread, still running, would win the race every time).
pub fn let_waiters_in() {
    std::thread::sleep(Duration::from_micros(20));
}

/// The slot that holds the lock, if any.
#[inline]
pub fn owner(word: u32) -> Option<u32> {
    match word & OWNER_MASK {
        0 => None,
        o => Some(o - 1),
    }
}

#[inline]
fn tag(slot: u32) -> u32 {
    debug_assert!(slot < OWNER_MASK - 1);
    slot + 1
}

/// Take the lock if it is free.
#[inline]
pub fn try_lock<W: LockWord>(word: &W, slot: u32) -> bool {
    word.compare_exchange(0, tag(slot), Ordering::Acquire, Ordering::Relaxed)
        .is_ok()
}

/// Take the lock for `slot`. `on_stall(owner)` is called each time a wait of [`STALL_CHECK`]
/// passes without progress; it checks the owner's liveness and recovers it when dead (which
/// releases the word). It returns an error only for failures of the recovery itself.
pub fn lock<W: LockWord, E>(
    word: &W,
    slot: u32,
    mut on_stall: impl FnMut(u32) -> Result<(), E>,
) -> Result<(), E> {
    if try_lock(word, slot) {
        return Ok(());
    }
    for _ in 0..SPINS {
        std::hint::spin_loop();
        if word.load(Ordering::Relaxed) == 0 && try_lock(word, slot) {
            return Ok(());
        }
    }
    loop {
        let cur = word.load(Ordering::Relaxed);
        if cur & OWNER_MASK == 0 {
            // Free. We may not be the only waiter: keep WAITERS so our unlock wakes the next
            // one. (`cur` may be WAITERS alone: no code path leaves that, but a damaged word
            // must not make every locker sleep forever, so an owner-less word is free.)
            if word
                .compare_exchange(
                    cur,
                    tag(slot) | WAITERS,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                )
                .is_ok()
            {
                return Ok(());
            }
            continue;
        }
        if cur & WAITERS == 0
            && word
                .compare_exchange(cur, cur | WAITERS, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            continue;
        }
        word.wait(cur | WAITERS, STALL_CHECK);
        let now = word.load(Ordering::Relaxed);
        if now == (cur | WAITERS) {
            // Same owner for a whole stall period: is it alive?
            // (A word naming our own slot is damage, or a bug: `on_stall` reports it; no
            // assertion here, a damaged segment must not panic a debug build.)
            if let Some(o) = owner(now) {
                on_stall(o)?;
            }
        }
    }
}

/// Release a lock held by this process (or, in recovery, by the dead owner).
#[inline]
pub fn unlock<W: LockWord>(word: &W) {
    if word.swap(0, Ordering::Release) & WAITERS != 0 {
        word.wake(1);
    }
}

/// Release a dead owner's lock and wake everybody (they re-contend).
pub fn unlock_all<W: LockWord>(word: &W) {
    word.store(0, Ordering::Release);
    word.wake(i32::MAX);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;
    use std::sync::Arc;

    #[test]
    fn owner_is_recorded() {
        let w = AtomicU32::new(0);
        assert!(try_lock(&w, 7));
        assert_eq!(owner(w.load(Ordering::Relaxed)), Some(7));
        assert!(!try_lock(&w, 8));
        unlock(&w);
        assert_eq!(owner(w.load(Ordering::Relaxed)), None);
    }

    #[test]
    fn contended_counter_is_exact() {
        let w = Arc::new(AtomicU32::new(0));
        let n = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let hs: Vec<_> = (0..4)
            .map(|t| {
                let (w, n) = (w.clone(), n.clone());
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        lock::<_, ()>(&*w, t, |_| Ok(())).unwrap();
                        // Non-atomic read-modify-write: only exact under mutual exclusion.
                        let v = n.load(Ordering::Relaxed);
                        n.store(v + 1, Ordering::Relaxed);
                        unlock(&*w);
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(n.load(Ordering::Relaxed), 80_000);
    }

    /// Regression (issue 11, item 1): a word holding only WAITERS (no owner) made every
    /// locker sleep-loop forever.
    #[test]
    fn a_word_with_waiters_but_no_owner_is_free() {
        let w = AtomicU32::new(WAITERS);
        let (tx, rx) = std::sync::mpsc::channel();
        let w = Arc::new(w);
        let w2 = w.clone();
        std::thread::spawn(move || {
            let r = lock::<_, ()>(&*w2, 5, |_| Ok(()));
            tx.send(r).unwrap();
        });
        let r = rx.recv_timeout(std::time::Duration::from_secs(10));
        assert_eq!(r, Ok(Ok(())), "locker hung on an owner-less word");
        assert_eq!(owner(w.load(Ordering::Relaxed)), Some(5));
    }

    #[test]
    fn stall_callback_can_release_a_dead_owner() {
        let w = AtomicU32::new(tag(3));
        let mut calls = 0;
        lock::<_, ()>(&w, 1, |o| {
            assert_eq!(o, 3);
            calls += 1;
            unlock_all(&w);
            Ok(())
        })
        .unwrap();
        assert_eq!(calls, 1);
        assert_eq!(owner(w.load(Ordering::Relaxed)), Some(1));
    }
}
