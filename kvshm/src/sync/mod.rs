//! Cross-process synchronisation over words in the segment: the owner-tagged futex lock word
//! the seqlock and the change notification of waiting clients (`change.rs`), written against small atomic traits so `loom` can check the same code.

pub mod atomic;
pub mod change;
pub mod lock;
pub mod seqlock;

#[cfg(all(test, kvshm_loom))]
mod loom_tests;
