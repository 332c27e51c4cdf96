//! One index stripe: lock word, sequence counter, table word and per-stripe totals.
//!
//! `seq` is a seqlock counter: odd while a writer (holding `lock`) changes the table or any
//! record reachable from it. Readers never write here. `table`, `count`, `tombstones`,
//! `value_bytes` are written only under `lock` and only while `seq` is odd.

use core::mem::{offset_of, size_of};
use core::sync::atomic::{AtomicU32, AtomicU64};

use super::CACHE_LINE;

/// Bytes per stripe.
pub const STRIPE_SIZE: u64 = 128;
/// Most stripes a store may have (the undo log packs a stripe number into 16 bits).
pub const MAX_STRIPES: u32 = 1 << 16;

/// Bits of the table word holding log2(capacity).
pub const TABLE_LOG2_SHIFT: u32 = 56;
/// Mask of the offset part of a table word.
pub const TABLE_OFFSET_MASK: u64 = (1 << 48) - 1;

/// A stripe of the index.
#[repr(C)]
#[derive(Debug)]
pub struct Stripe {
    /// Lock word (see `sync::lock`).
    pub lock: AtomicU32,
    /// Set (1) by a client waiting for a change of a key in this stripe, under `lock`; the
    /// next writer clears it under `lock` and wakes `changes` (see `client/wait.rs`).
    pub waiters: AtomicU32,
    /// Seqlock counter.
    pub seq: AtomicU64,
    /// `table offset | log2(capacity) << 56`; 0 = no table yet (empty stripe).
    pub table: AtomicU64,
    /// Live keys.
    pub count: AtomicU64,
    /// Tombstone slots in the table.
    pub tombstones: AtomicU64,
    /// Sum of value lengths of live keys.
    pub value_bytes: AtomicU64,
    /// Writes committed to this stripe (monotonic, never undone: a rolled-back write leaves a
    /// gap). Versions are `revision << 16 | stripe` (`Store::next_version`).
    pub revision: AtomicU64,
    /// Futex word of the waiters for a change: bumped (under `lock`) by a writer that found
    /// `waiters` set, which then wakes everyone sleeping on it.
    pub changes: AtomicU32,
    pub _pad1: AtomicU32,
    /// A hint, never later than the earliest expiry of a record in this stripe (Unix ms; 0 =
    /// no record with an expiry): lowered under `lock` by writers of records with a TTL, set
    /// exactly by the expiry pass. Lets the pass skip stripes with nothing due.
    pub next_expiry: AtomicU64,
    /// The stripe's CLOCK hand: the table entry where the next eviction sweep of this stripe
    /// goes on (a hint written under `lock`; any value is safe).
    pub clock: AtomicU64,
    pub _pad: [AtomicU64; 6],
}
assert_offsets!(Stripe {
    lock: 0,
    seq: 8,
    table: 16,
    count: 24,
    tombstones: 32,
    value_bytes: 40,
    revision: 48,
    changes: 56,
    next_expiry: 64,
    clock: 72,
});
const _: () = assert!(size_of::<Stripe>() as u64 == STRIPE_SIZE);
const _: () = assert!(size_of::<Stripe>() == CACHE_LINE);
const _: () = assert!(offset_of!(Stripe, seq) == 8);
const _: () = assert!(offset_of!(Stripe, table) == 16);
