//! Cross-process synchronisation over words in the segment: the owner-tagged futex lock word.
//! The seqlock protocol itself is spelled out where it is used (`index.rs`, `client.rs`).

pub mod lock;
