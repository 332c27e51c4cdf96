//! Waiting for a change of a key, across processes, without polling and without lost
//! wake-ups. Two words per stripe: `waiters` (a flag) and `changes` (a futex word). Both
//! sides touch them only while holding the stripe's lock:
//!
//! - a **waiter**, holding the lock, checks the key's version; if it is still the one it
//!   knows, it sets `waiters`, reads `changes` (= `seen`), releases the lock and sleeps on
//!   `changes` while it still equals `seen` (with a timeout, at most [`MAX_SLEEP`] at a time);
//! - a **writer**, holding the lock after its commit, finds `waiters` set: it clears it, bumps
//!   `changes`, and after releasing the lock wakes everyone sleeping on `changes`.
//!
//! No lost wake-up: the lock orders the two. If the writer's critical section comes first,
//! the waiter's check (after it) sees the new version and does not sleep. If the waiter's
//! comes first, the writer sees `waiters` set and moves `changes` before the waiter can sleep
//! on the old value (a futex wait on a value that moved returns at once), or wakes it. A
//! writer never pays more than one load of a word in the stripe's line when nobody waits.
//! Several waiters on one stripe share the flag: a writer of another key wakes them all, and
//! each checks its own key again (a spurious wake-up, absorbed). A waiter that dies leaves the
//! flag set: the next writer clears it and makes one needless wake call. A writer killed
//! between the bump and the wake delays sleepers by at most [`MAX_SLEEP`].
//!
//! Generic over [`LockWord`] so that `loom` checks this very code (`loom_tests.rs`).

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::atomic::LockWord;

/// Longest single sleep: a waiter re-checks at least this often, so a wake-up lost to a writer
/// killed between its commit and its wake call costs at most this much latency.
pub const MAX_SLEEP: Duration = Duration::from_secs(1);

/// Writer, holding the stripe lock after its commit: whether waiters must be woken (then call
/// [`wake_all`] after unlocking).
#[inline]
pub fn notice_locked<W: LockWord>(waiters: &W, changes: &W) -> bool {
    if waiters.load(Ordering::Relaxed) == 0 {
        return false;
    }
    waiters.store(0, Ordering::Relaxed);
    changes.store(
        changes.load(Ordering::Relaxed).wrapping_add(1),
        Ordering::Release,
    );
    true
}

/// Wake every process sleeping on `changes`.
pub fn wake_all<W: LockWord>(changes: &W) {
    changes.wake(i32::MAX);
}

/// Waiter, holding the stripe lock, having found the version unchanged: register, and return
/// the `changes` value to sleep on once the lock is released.
pub fn register_locked<W: LockWord>(waiters: &W, changes: &W) -> u32 {
    waiters.store(1, Ordering::Relaxed);
    changes.load(Ordering::Relaxed)
}

/// Waiter, lock released: sleep while `changes` still equals `seen`, at most `timeout` (and at
/// most [`MAX_SLEEP`]). Returns at a wake-up, a change, the time limit, or spuriously: the
/// caller checks again.
pub fn sleep<W: LockWord>(changes: &W, seen: u32, timeout: Duration) {
    if changes.load(Ordering::Acquire) == seen {
        changes.wait(seen, timeout.min(MAX_SLEEP));
    }
}
