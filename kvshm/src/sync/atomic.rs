//! The few atomic operations the cross-process protocols need, as traits, so the same protocol
//! code runs on `std` atomics in the segment and on `loom` atomics in model tests
//! (`RUSTFLAGS="--cfg kvshm_loom"`).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// A 32-bit lock word that can be slept on.
pub trait LockWord {
    fn load(&self, o: Ordering) -> u32;
    fn compare_exchange(&self, cur: u32, new: u32, ok: Ordering, err: Ordering)
        -> Result<u32, u32>;
    fn swap(&self, v: u32, o: Ordering) -> u32;
    fn store(&self, v: u32, o: Ordering);
    /// Sleep while the word equals `expected`, at most `timeout` (may return early).
    fn wait(&self, expected: u32, timeout: Duration);
    /// Wake up to `n` sleepers.
    fn wake(&self, n: i32);
}

/// A 64-bit word of a seqlock.
pub trait SeqWord {
    fn load(&self, o: Ordering) -> u64;
    fn store(&self, v: u64, o: Ordering);
    /// The matching memory fence.
    fn fence(o: Ordering);
}

impl LockWord for AtomicU32 {
    #[inline]
    fn load(&self, o: Ordering) -> u32 {
        AtomicU32::load(self, o)
    }
    #[inline]
    fn compare_exchange(
        &self,
        cur: u32,
        new: u32,
        ok: Ordering,
        err: Ordering,
    ) -> Result<u32, u32> {
        AtomicU32::compare_exchange(self, cur, new, ok, err)
    }
    #[inline]
    fn swap(&self, v: u32, o: Ordering) -> u32 {
        AtomicU32::swap(self, v, o)
    }
    #[inline]
    fn store(&self, v: u32, o: Ordering) {
        AtomicU32::store(self, v, o)
    }
    fn wait(&self, expected: u32, timeout: Duration) {
        crate::segment::futex_wait(self, expected, timeout)
    }
    fn wake(&self, n: i32) {
        crate::segment::futex_wake(self, n)
    }
}

impl SeqWord for AtomicU64 {
    #[inline]
    fn load(&self, o: Ordering) -> u64 {
        AtomicU64::load(self, o)
    }
    #[inline]
    fn store(&self, v: u64, o: Ordering) {
        AtomicU64::store(self, v, o)
    }
    #[inline]
    fn fence(o: Ordering) {
        std::sync::atomic::fence(o)
    }
}

#[cfg(kvshm_loom)]
mod loom_impls {
    use super::*;

    impl LockWord for loom::sync::atomic::AtomicU32 {
        fn load(&self, o: Ordering) -> u32 {
            loom::sync::atomic::AtomicU32::load(self, o)
        }
        fn compare_exchange(
            &self,
            cur: u32,
            new: u32,
            ok: Ordering,
            err: Ordering,
        ) -> Result<u32, u32> {
            loom::sync::atomic::AtomicU32::compare_exchange(self, cur, new, ok, err)
        }
        fn swap(&self, v: u32, o: Ordering) -> u32 {
            loom::sync::atomic::AtomicU32::swap(self, v, o)
        }
        fn store(&self, v: u32, o: Ordering) {
            loom::sync::atomic::AtomicU32::store(self, v, o)
        }
        fn wait(&self, _expected: u32, _timeout: Duration) {
            loom::thread::yield_now();
        }
        fn wake(&self, _n: i32) {}
    }

    impl SeqWord for loom::sync::atomic::AtomicU64 {
        fn load(&self, o: Ordering) -> u64 {
            loom::sync::atomic::AtomicU64::load(self, o)
        }
        fn store(&self, v: u64, o: Ordering) {
            loom::sync::atomic::AtomicU64::store(self, v, o)
        }
        fn fence(o: Ordering) {
            loom::sync::atomic::fence(o)
        }
    }
}
