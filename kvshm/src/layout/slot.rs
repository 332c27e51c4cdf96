//! Client slots: one per attached writer, with its counters and its transaction log.
//!
//! A slot is owned by whoever holds the OFD byte lock on byte `SLOT_LOCK_BASE + index` of the
//! segment file (see `segment`). Only the owner writes the slot; a recoverer writes it only
//! after taking that byte lock from a dead owner. `stats()` readers sum the counters racily.
//!
//! The log (state, undo entries, new blocks, deferred frees) is written *before* the change it
//! describes, each entry before the count that makes it visible (Release stores, program
//! order survives SIGKILL), so a recoverer can roll an ACTIVE transaction back or finish a
//! COMMITTED one. See `txn.rs`.

use core::mem::size_of;
use core::sync::atomic::AtomicU64;

/// Bytes per slot.
pub const SLOT_SIZE: u64 = 8192;
/// Slots in page 0 (page `p` holds `SLOT_PAGE0_SLOTS << p`).
pub const SLOT_PAGE0_SLOTS: u64 = 16;
/// Slots in page `p`.
pub const fn slot_page_len(p: usize) -> u64 {
    SLOT_PAGE0_SLOTS << p
}

/// Index of the first slot of page `p` (pages before it hold `16 * (2^p - 1)` slots).
pub const fn slot_page_first(p: usize) -> u64 {
    SLOT_PAGE0_SLOTS * ((1u64 << p) - 1)
}

/// Which slot page holds slot `idx`, and the index of that page's first slot.
pub const fn slot_page_of(idx: u32) -> (usize, u64) {
    let q = idx as u64 / SLOT_PAGE0_SLOTS + 1;
    let page = 63 - q.leading_zeros() as usize;
    (page, slot_page_first(page))
}

/// Log entries of each kind kept inside the slot; bigger batches use an extension block.
pub const INLINE_LOG_CAP: usize = 160;
/// Entries of a slot's block cache.
pub const BLOCK_CACHE_CAP: usize = 32;
/// Number of per-client counters (see [`Counter`]).
pub const COUNTERS: usize = 8;

/// Slot state: nobody attached.
pub const SLOT_FREE: u64 = 0;
/// Slot state: attached (alive if its byte lock is held, dead otherwise).
pub const SLOT_ALIVE: u64 = 1;

/// Transaction state: nothing in progress, the log is stale.
pub const TXN_IDLE: u64 = 0;
/// Transaction state: changes may be half done; recovery rolls back with the undo entries.
pub const TXN_ACTIVE: u64 = 1;
/// Transaction state: all changes are done; recovery finishes tags, unlocks and frees.
pub const TXN_COMMITTED: u64 = 2;

/// Per-client counters, index into `Slot::counters` and `Header::folded`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Counter {
    Gets = 0,
    Hits = 1,
    Puts = 2,
    Removes = 3,
    BytesIn = 4,
    BytesOut = 5,
    Retries = 6,
    Recoveries = 7,
}

/// Undo entry: restore `old` at `target & OFFSET_MASK`, if stripe `target >> 48` is still
/// locked by the dead owner.
#[repr(C)]
#[derive(Debug)]
pub struct UndoEntry {
    pub target: AtomicU64,
    pub old: AtomicU64,
}
/// Bits of `UndoEntry::target` holding the stripe number.
pub const UNDO_STRIPE_SHIFT: u32 = 48;

/// Deferred free: free `block` if its tag still equals `expect`.
#[repr(C)]
#[derive(Debug)]
pub struct FreeEntry {
    pub block: AtomicU64,
    pub expect: AtomicU64,
}

/// A client slot.
#[repr(C)]
#[derive(Debug)]
pub struct Slot {
    /// [`SLOT_FREE`] or [`SLOT_ALIVE`].
    pub state: AtomicU64,
    /// Unique id of the current (or last) attachment, for logs.
    pub client_id: AtomicU64,
    /// Diagnostics only: liveness is the byte lock, never the pid.
    pub pid: AtomicU64,
    pub start_unix: AtomicU64,
    /// The owner's counters ([`Counter`]), written by one thread at a time with plain
    /// stores (`Client::count`: the thread that counted first); read with
    /// [`Slot::counter`], which adds [`Slot::counters_shared`].
    pub counters: [AtomicU64; COUNTERS],
    /// [`TXN_IDLE`], [`TXN_ACTIVE`] or [`TXN_COMMITTED`].
    pub txn_state: AtomicU64,
    pub n_undo: AtomicU64,
    pub n_new: AtomicU64,
    pub n_free: AtomicU64,
    /// Offset of a log extension block (0 = the inline arrays are in use).
    pub log_ext: AtomicU64,
    /// Stripe a waiter of this client is blocked on + 1 (diagnostics for `stats`).
    pub waiting_on: AtomicU64,
    /// Position + 1 in the change log of this client's PENDING entry (0 = none): written
    /// under the change log lock before the entry is published, cleared after it was marked
    /// COMMITTED; a recoverer marks it COMMITTED or ABORTED with the transaction's outcome.
    pub clog_pending: AtomicU64,
    /// The sequence number of that entry.
    pub clog_seq: AtomicU64,
    /// The same counters as `counters`, counted by the owner's other threads and by
    /// recovery (`fetch_add`: any number of writers). Zero in stores made before it existed.
    pub counters_shared: [AtomicU64; COUNTERS],
    pub _pad0: [AtomicU64; 4],
    pub undo: [UndoEntry; INLINE_LOG_CAP],
    pub new_blocks: [AtomicU64; INLINE_LOG_CAP],
    pub frees: [FreeEntry; INLINE_LOG_CAP],
    /// The client's block cache: offsets of blocks tagged RESERVED by this slot that no
    /// transaction uses yet (0 = empty entry). See `cache.rs`.
    pub cache: [AtomicU64; BLOCK_CACHE_CAP],
    pub _pad1: [AtomicU64; 192 - BLOCK_CACHE_CAP],
}
const _: () = assert!(size_of::<Slot>() as u64 == SLOT_SIZE);
assert_offsets!(Slot {
    state: 0,
    client_id: 8,
    pid: 16,
    start_unix: 24,
    counters: 32,
    txn_state: 96,
    n_undo: 104,
    n_new: 112,
    n_free: 120,
    log_ext: 128,
    waiting_on: 136,
    clog_pending: 144,
    clog_seq: 152,
    counters_shared: 160,
    undo: 256,
    new_blocks: 2816,
    frees: 4096,
    cache: 6656,
});

impl Slot {
    /// Counter `c` of this slot: both lanes (a racy sum, as every reader of counters).
    #[inline]
    pub fn counter(&self, c: usize) -> u64 {
        let r = std::sync::atomic::Ordering::Relaxed;
        self.counters[c]
            .load(r)
            .wrapping_add(self.counters_shared[c].load(r))
    }

    /// Take counter `c` (both lanes) and zero it: the slot's owner is gone (detach, recovery).
    pub fn take_counter(&self, c: usize) -> u64 {
        let r = std::sync::atomic::Ordering::Relaxed;
        self.counters[c]
            .swap(0, r)
            .wrapping_add(self.counters_shared[c].swap(0, r))
    }
}

/// A log extension block: `[tag][capacity]` then `undo[cap]`, `new[cap]`, `frees[cap]`.
pub const LOG_EXT_HEADER_SIZE: u64 = 16;
/// Bytes of a log extension with `cap` entries of each kind.
pub const fn log_ext_size(cap: u64) -> u64 {
    LOG_EXT_HEADER_SIZE + cap * (16 + 8 + 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_pages_are_geometric() {
        assert_eq!(slot_page_of(0), (0, 0));
        assert_eq!(slot_page_of(15), (0, 0));
        assert_eq!(slot_page_of(16), (1, 16));
        assert_eq!(slot_page_of(47), (1, 16));
        assert_eq!(slot_page_of(48), (2, 48));
        assert_eq!(slot_page_of(111), (2, 48));
        assert_eq!(slot_page_of(112), (3, 112));
        for p in 0..24 {
            let first = slot_page_first(p);
            assert_eq!(slot_page_of(first as u32), (p, first));
            assert_eq!(
                slot_page_of((first + slot_page_len(p) - 1) as u32),
                (p, first)
            );
            assert_eq!(slot_page_first(p + 1), first + slot_page_len(p));
        }
    }
}
