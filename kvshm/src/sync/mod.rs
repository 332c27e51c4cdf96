//! Cross-process synchronisation over words in the segment: the owner-tagged futex lock word
//! and the seqlock, written against small atomic traits so `loom` can check the same code.

pub mod atomic;
pub mod lock;
pub mod seqlock;

#[cfg(all(test, kvshm_loom))]
mod loom_tests;
