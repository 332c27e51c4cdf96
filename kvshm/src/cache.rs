//! Per-client block caches (the process-local side; the allocator's side is `alloc/cache.rs`): a few blocks per size class that a writer keeps RESERVED for
//! itself, so that most puts take and give back blocks without the class lock.
//!
//! Measured (docs/PERFORMANCE.md, issue 12 part 2): two writer processes of one value size
//! met on the class lock twice per put (allocate the new record, free the old one after the
//! commit), 6-11% of their operations waited for it, and in the slow runs the lock's line and
//! the free-list head bounced between the cores. With a cache a put allocates from the
//! client's own entries and its deferred free refills them; the class lock is taken once per
//! [`REFILL`] allocations or [`PER_CLASS`]`/2` frees.
//!
//! **Where the blocks are.** Entries live in the client slot (`Slot::cache`), so a recoverer
//! finds them: every block tagged RESERVED by a slot is, at every instant, either in that
//! slot's transaction log (`new_blocks`) or in its cache entries:
//! - *refill* (under the class lock): entry written, then the block tagged RESERVED, then
//!   popped off the free list;
//! - *take* (into a transaction): logged in `new_blocks` (the `record` of `alloc`), then the
//!   entry cleared;
//! - *give* (a deferred free): entry written, then the tag CAS'd from what the log expects
//!   (LIVE, or RESERVED for an aborted new block) to RESERVED with a fresh generation; a CAS
//!   that fails (the block was freed meanwhile) clears the entry again;
//! - *flush* (under the class lock): tag RESERVED -> FREE, pushed, then the entry cleared.
//!
//! Recovery runs the dead client's transaction first (a block both logged and still in an
//! entry ends LIVE or FREE), then frees every entry whose block is still RESERVED by the dead
//! slot ([`release_slot_cache`]); an entry naming a FREE block or someone else's is stale and
//! only cleared. Tags change FREE <-> non-FREE only under the class lock, as everywhere.
//!
//! **Memory.** Cached blocks are not free: a chunk holding one is not given back (part 1 of
//! issue 12). A cache holds at most [`PER_CLASS`] blocks of a class and [`BLOCK_CACHE_CAP`] in
//! all, of classes up to [`CACHE_MAX_BLOCK`] bytes; it is flushed when the client detaches,
//! before the store would grow or report `StoreFull`, and at the first write after the host's
//! reclaim pass asks for it (`Header::cache_flush`). Once the store has grown to its maximum
//! size, frees and refills bypass caches (what one process frees is usable by every other at
//! once). Below that, an idle attached writer keeps its cache: at most 32 blocks, worst case 32
//! chunks pinned (docs/ARCHITECTURE.md).

use std::cell::Cell;
use std::sync::atomic::Ordering;

use crate::layout::*;

const R: Ordering = Ordering::Relaxed;

/// Largest block a cache keeps (bigger records are rarer and pin more).
pub(crate) const CACHE_MAX_BLOCK: u32 = 4096;
/// Most blocks of one class in a cache; a give that finds it full flushes half.
pub(crate) const PER_CLASS: usize = 8;
/// Blocks a class-lock take hands out when the cache has none of the class: one for the
/// caller, the rest cached.
pub(crate) const REFILL: usize = 4;
/// Generations a cache takes from the store-wide counter at a time (one shared `fetch_add`
/// per batch instead of per tag).
const GEN_BATCH: u64 = 256;
const EMPTY: u8 = u8::MAX;
const _: () = assert!(NUM_CLASSES < EMPTY as usize);

/// Whether blocks of class `c` are cached.
pub(crate) fn cacheable(c: usize) -> bool {
    CLASS_SIZES[c] <= CACHE_MAX_BLOCK
}

/// The process-local mirror of a slot's cache entries (class, offset and tag word of each),
/// owned by the client's write mutex. The slot's entries are the truth for recovery; this
/// mirror only saves reading the chunk map and tags to find a block of a class. Each class
/// has a bitmask of its entries, so finding, counting and placing are a few bit operations.
#[derive(Debug)]
pub(crate) struct BlockCache {
    class: [Cell<u8>; BLOCK_CACHE_CAP],
    block: [Cell<u64>; BLOCK_CACHE_CAP],
    tag: [Cell<u64>; BLOCK_CACHE_CAP],
    /// Entries holding a block of class `c`: bit `e` of `of_class[c]`.
    of_class: [Cell<u32>; NUM_CLASSES],
    /// Entries holding a block (the union of `of_class`).
    used: Cell<u32>,
    gen_next: Cell<u64>,
    gen_end: Cell<u64>,
    /// `Header::cache_flush` when this cache was last flushed (or created).
    flush_seen: Cell<u64>,
}
const _: () = assert!(BLOCK_CACHE_CAP <= 32);

impl BlockCache {
    pub(crate) fn new(flush_seen: u64) -> BlockCache {
        BlockCache {
            class: std::array::from_fn(|_| Cell::new(EMPTY)),
            block: std::array::from_fn(|_| Cell::new(0)),
            tag: std::array::from_fn(|_| Cell::new(0)),
            of_class: std::array::from_fn(|_| Cell::new(0)),
            used: Cell::new(0),
            gen_next: Cell::new(0),
            gen_end: Cell::new(0),
            flush_seen: Cell::new(flush_seen),
        }
    }

    /// Forget every entry (after recovery of the own slot released them).
    pub(crate) fn reset(&self) {
        for e in 0..BLOCK_CACHE_CAP {
            self.clear(e);
        }
    }

    /// An entry holding a block of class `c`.
    #[inline]
    pub(crate) fn find(&self, c: usize) -> Option<usize> {
        let m = self.of_class[c].get();
        (m != 0).then(|| m.trailing_zeros() as usize)
    }

    /// Blocks of class `c` held.
    #[inline]
    pub(crate) fn count(&self, c: usize) -> usize {
        self.of_class[c].get().count_ones() as usize
    }

    /// An entry holding nothing.
    #[inline]
    pub(crate) fn empty_entry(&self) -> Option<usize> {
        let e = (!self.used.get()).trailing_zeros() as usize;
        (e < BLOCK_CACHE_CAP).then_some(e)
    }

    /// Cached blocks (entry index, offset, tag word).
    pub(crate) fn entries(&self) -> impl Iterator<Item = (usize, u64, u64)> + '_ {
        (0..BLOCK_CACHE_CAP)
            .filter(|&e| self.used.get() & (1 << e) != 0)
            .map(|e| (e, self.block[e].get(), self.tag[e].get()))
    }

    pub(crate) fn class(&self, e: usize) -> usize {
        self.class[e].get() as usize
    }

    pub(crate) fn block(&self, e: usize) -> u64 {
        self.block[e].get()
    }

    pub(crate) fn tag(&self, e: usize) -> u64 {
        self.tag[e].get()
    }

    pub(crate) fn flush_seen(&self) -> u64 {
        self.flush_seen.get()
    }

    pub(crate) fn set_flush_seen(&self, v: u64) {
        self.flush_seen.set(v)
    }

    pub(crate) fn set(&self, e: usize, c: usize, block: u64, tag: u64) {
        self.clear(e);
        self.class[e].set(c as u8);
        self.block[e].set(block);
        self.tag[e].set(tag);
        self.of_class[c].set(self.of_class[c].get() | 1 << e);
        self.used.set(self.used.get() | 1 << e);
    }

    pub(crate) fn clear(&self, e: usize) {
        let c = self.class[e].replace(EMPTY);
        if c != EMPTY {
            let m = &self.of_class[c as usize];
            m.set(m.get() & !(1 << e));
            self.used.set(self.used.get() & !(1 << e));
        }
    }

    /// A fresh generation (unique store-wide until the 32-bit tag field wraps).
    pub(crate) fn next_gen(&self, h: &Header) -> u32 {
        if self.gen_next.get() == self.gen_end.get() {
            let start = h.gen_counter.fetch_add(GEN_BATCH, R);
            self.gen_next.set(start);
            self.gen_end.set(start + GEN_BATCH);
        }
        let g = self.gen_next.get();
        self.gen_next.set(g + 1);
        g as u32
    }
}
