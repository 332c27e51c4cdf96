#![allow(unsafe_code)]
//! `loom` model checks of the lock word, the seqlock and the transaction-state transitions,
//! with threads standing in for processes and loom atomics standing in for segment words.
//! The lock word and seqlock are the library's own generic code; the transaction is a model
//! of `session.rs` (same step order, same recovery rules) over a tiny heap "segment".
//!
//! Run: `RUSTFLAGS="--cfg kvshm_loom" cargo test -p kvshm --release --lib loom`.

use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
use loom::sync::Arc;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};

use super::{change, lock, seqlock};

#[test]
fn lock_word_gives_mutual_exclusion() {
    loom::model(|| {
        let word = Arc::new(AtomicU32::new(0));
        let data = Arc::new(UnsafeCell::new(0u32));
        let ts: Vec<_> = (0..2)
            .map(|slot| {
                let (word, data) = (word.clone(), data.clone());
                loom::thread::spawn(move || {
                    lock::lock::<_, ()>(&*word, slot, |_| Ok(())).unwrap();
                    // Loom reports a data race here unless the lock orders the accesses.
                    data.with_mut(|p| unsafe_free_increment(p));
                    lock::unlock(&*word);
                })
            })
            .collect();
        for t in ts {
            t.join().unwrap();
        }
        assert_eq!(data.with(|p| read(p)), 2);
        assert_eq!(word.load(Relaxed), 0);
    });
}

#[test]
fn a_dead_owner_is_recovered_once_and_the_lock_moves_on() {
    loom::model(|| {
        const DEAD: u32 = 5;
        let word = Arc::new(AtomicU32::new(DEAD + 1));
        // Stands in for the dead owner's OFD byte: only one recoverer gets it.
        let recovered = Arc::new(AtomicBool::new(false));
        let data = Arc::new(UnsafeCell::new(0u32));
        let ts: Vec<_> = (0..2)
            .map(|slot| {
                let (word, recovered, data) = (word.clone(), recovered.clone(), data.clone());
                loom::thread::spawn(move || {
                    lock::lock::<_, ()>(&*word, slot, |owner| {
                        assert_eq!(owner, DEAD, "a live owner was probed as dead");
                        if !recovered.swap(true, Relaxed) {
                            lock::unlock_all(&*word);
                        }
                        Ok(())
                    })
                    .unwrap();
                    data.with_mut(|p| unsafe_free_increment(p));
                    lock::unlock(&*word);
                })
            })
            .collect();
        for t in ts {
            t.join().unwrap();
        }
        assert_eq!(data.with(|p| read(p)), 2);
    });
}

#[test]
fn seqlock_readers_never_accept_a_torn_pair() {
    loom::model(|| {
        let seq = Arc::new(AtomicU64::new(0));
        let a = Arc::new(AtomicU64::new(0));
        let b = Arc::new(AtomicU64::new(0));
        let reader = {
            let (seq, a, b) = (seq.clone(), a.clone(), b.clone());
            loom::thread::spawn(move || {
                for _ in 0..2 {
                    let Some(s) = seqlock::read_begin(&*seq) else {
                        continue;
                    };
                    let (x, y) = (a.load(Relaxed), b.load(Relaxed));
                    if seqlock::read_validate(&*seq, s) {
                        assert_eq!(x, y, "validated a torn read");
                        return;
                    }
                }
            })
        };
        for v in 1..=2 {
            seqlock::write_begin(&*seq);
            a.store(v, Relaxed);
            b.store(v, Relaxed);
            seqlock::write_end(&*seq);
        }
        reader.join().unwrap();
    });
}

const OLD: u64 = 10;
const NEW: u64 = 20;
const IDLE: u64 = 0;
const ACTIVE: u64 = 1;
const COMMITTED: u64 = 2;
const WRITER: u32 = 0;

/// One stripe with two data words (think: slot word and count) and one client slot's log.
struct Heap {
    lock: AtomicU32,
    seq: AtomicU64,
    data: [AtomicU64; 2],
    state: AtomicU64,
    n_undo: AtomicU64,
    undo: [AtomicU64; 4], // (word index, old value) x 2
}

impl Heap {
    fn new() -> Heap {
        Heap {
            lock: AtomicU32::new(0),
            seq: AtomicU64::new(0),
            data: [AtomicU64::new(OLD), AtomicU64::new(OLD)],
            state: AtomicU64::new(IDLE),
            n_undo: AtomicU64::new(0),
            undo: [
                AtomicU64::new(0),
                AtomicU64::new(0),
                AtomicU64::new(0),
                AtomicU64::new(0),
            ],
        }
    }

    /// The writer's protocol (as in `Client::put`), stopping dead after `steps` steps.
    fn write(&self, steps: u32) {
        let mut step = 0;
        let mut go = || {
            step += 1;
            step <= steps
        };
        if !go() {
            return;
        }
        self.n_undo.store(0, Relaxed);
        self.state.store(ACTIVE, Release);
        if !go() {
            return;
        }
        lock::lock::<_, ()>(&self.lock, WRITER, |_| Ok(())).unwrap();
        if !go() {
            return;
        }
        seqlock::write_begin(&self.seq);
        for i in 0..2 {
            if !go() {
                return;
            }
            self.undo[2 * i].store(i as u64, Relaxed);
            self.undo[2 * i + 1].store(self.data[i].load(Relaxed), Relaxed);
            self.n_undo.store(i as u64 + 1, Release);
            self.data[i].store(NEW, Release);
        }
        if !go() {
            return;
        }
        self.state.store(COMMITTED, Release);
        if !go() {
            return;
        }
        seqlock::write_end(&self.seq);
        if !go() {
            return;
        }
        lock::unlock(&self.lock);
        if !go() {
            return;
        }
        self.state.store(IDLE, Release);
    }

    /// Recovery of the dead writer (as in `Session::recover_slot`).
    fn recover(&self) {
        let owned = lock::owner(self.lock.load(Acquire)) == Some(WRITER);
        let state = self.state.load(Acquire);
        if owned && state == ACTIVE {
            seqlock::write_begin(&self.seq);
            for i in (0..self.n_undo.load(Acquire) as usize).rev() {
                let w = self.undo[2 * i].load(Relaxed) as usize;
                self.data[w].store(self.undo[2 * i + 1].load(Relaxed), Relaxed);
            }
        }
        if owned {
            if self.seq.load(Relaxed) & 1 == 1 {
                seqlock::write_end(&self.seq);
            }
            lock::unlock_all(&self.lock);
        }
        self.state.store(IDLE, Release);
    }
}

#[test]
fn a_transaction_killed_at_any_step_is_all_or_nothing_for_readers() {
    for steps in 0..=10 {
        loom::model(move || {
            let heap = Arc::new(Heap::new());
            let reader = {
                let heap = heap.clone();
                loom::thread::spawn(move || {
                    for _ in 0..2 {
                        let Some(s) = seqlock::read_begin(&heap.seq) else {
                            loom::thread::yield_now();
                            continue;
                        };
                        let (x, y) = (heap.data[0].load(Relaxed), heap.data[1].load(Relaxed));
                        if seqlock::read_validate(&heap.seq, s) {
                            assert!(x == y && (x == OLD || x == NEW), "reader saw ({x}, {y})");
                        }
                    }
                })
            };
            heap.write(steps);
            // The writer is dead (or done); the recoverer runs, readers still running.
            heap.recover();
            reader.join().unwrap();
            let (x, y) = (heap.data[0].load(Relaxed), heap.data[1].load(Relaxed));
            assert_eq!(x, y);
            // Step 6 stores COMMITTED: from there on the new value must survive.
            assert_eq!(x, if steps >= 6 { NEW } else { OLD }, "steps {steps}");
            assert_eq!(heap.seq.load(Relaxed) & 1, 0);
            assert_eq!(heap.lock.load(Relaxed), 0);
        });
    }
}

fn unsafe_free_increment(p: *mut u32) {
    // SAFETY: loom hands out the cell's pointer for the duration of `with_mut`; the lock under
    // test is what makes this access exclusive (loom checks that it is).
    unsafe { *p += 1 };
}

fn read(p: *const u32) -> u32 {
    // SAFETY: as above, inside `with`, after all writers joined.
    unsafe { *p }
}

/// The wait-for-change protocol (`change.rs`) has no lost wake-up: a waiter that registered
/// while the key was unchanged is always released by the writer that changes it. The futex is
/// modelled strictly (a sleeper wakes only when `changes` moves), so an interleaving in which
/// the writer neither is seen by the waiter's check nor moves `changes` would spin the waiter
/// forever, which loom reports.
#[test]
fn a_change_always_releases_a_registered_waiter() {
    loom::model(|| {
        let lock_word = Arc::new(AtomicU32::new(0));
        let waiters = Arc::new(AtomicU32::new(0));
        let changes = Arc::new(AtomicU32::new(0));
        let version = Arc::new(AtomicU64::new(0));
        let writer = {
            let (l, w, c, v) = (
                lock_word.clone(),
                waiters.clone(),
                changes.clone(),
                version.clone(),
            );
            loom::thread::spawn(move || {
                lock::lock::<_, ()>(&*l, 1, |_| Ok(())).unwrap();
                v.store(1, Relaxed);
                let wake = change::notice_locked(&*w, &*c);
                lock::unlock(&*l);
                if wake {
                    change::wake_all(&*c);
                }
            })
        };
        // The waiter knows version 0 and waits for another.
        loop {
            lock::lock::<_, ()>(&*lock_word, 0, |_| Ok(())).unwrap();
            if version.load(Relaxed) != 0 {
                lock::unlock(&*lock_word);
                break;
            }
            let seen = change::register_locked(&*waiters, &*changes);
            lock::unlock(&*lock_word);
            while changes.load(Acquire) == seen {
                loom::thread::yield_now();
            }
        }
        writer.join().unwrap();
    });
}
