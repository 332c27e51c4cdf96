//! The 4 KiB segment header: identity, configuration, growth, allocator roots, totals.
//!
//! Identity and configuration words (the first cache line) are written once by the creating
//! host before `magic` is published with `Release`; an attacher reads `magic` with `Acquire`
//! and may then read them with `Relaxed`. Everything else is either under one of the lock words
//! here (see each field) or a monotonic counter whose racy read only ever yields a stale value.

use core::mem::{offset_of, size_of};
use core::sync::atomic::{AtomicU32, AtomicU64};

use super::{CACHE_LINE, NUM_CLASSES};

/// Size of the header region.
pub const HEADER_SIZE: u64 = 4096;
/// Geometric client-slot pages: page `p` holds `SLOT_PAGE0_SLOTS << p` slots.
pub const MAX_SLOT_PAGES: usize = 24;

/// `Header::eviction` codes of the policies whose readers set reference bits (allkeys-lru,
/// volatile-lru; the others are in `client::evict::Policy`).
pub const EVICTION_LRU_CODES: [u64; 2] = [1, 2];

/// Whether readers keep reference bits under the eviction policy stored as `code`.
#[inline]
pub const fn eviction_is_lru(code: u64) -> bool {
    code == EVICTION_LRU_CODES[0] || code == EVICTION_LRU_CODES[1]
}

/// Per size class allocator root, guarded by `lock`.
///
/// `head` is the first free block (0 = empty); each free block keeps the next one in its second
/// word. The list and counts are hints: a recoverer that finds `lock` owned by a dead client
/// rebuilds them from the block tags (`docs/ARCHITECTURE.md`, "Allocator").
#[repr(C)]
#[derive(Debug)]
pub struct ClassHeader {
    /// Lock word (see `sync::lock`).
    pub lock: AtomicU32,
    pub _pad: AtomicU32,
    /// Offset of the first free block, 0 when empty.
    pub head: AtomicU64,
    /// Number of blocks on the free list.
    pub free_count: AtomicU64,
    /// Number of chunks carved into this class.
    pub chunks: AtomicU64,
}
const _: () = assert!(size_of::<ClassHeader>() == 32);

/// The segment header at offset 0.
#[repr(C)]
#[derive(Debug)]
pub struct Header {
    // ---- line 0: identity and configuration, immutable after format ----
    /// [`super::MAGIC`], stored last (Release) when formatting completes.
    pub magic: AtomicU64,
    /// [`super::LAYOUT_VERSION`].
    pub layout_version: AtomicU32,
    /// Size of this header, a cheap extra compatibility check.
    pub header_size: AtomicU32,
    /// [`super::layout_signature`].
    pub layout_signature: AtomicU64,
    /// Seed of the XXH3 key hash, random per store.
    pub hash_seed: AtomicU64,
    pub max_key_len: AtomicU32,
    pub max_value_len: AtomicU32,
    pub stripe_count: AtomicU32,
    /// log2 of `stripe_count`.
    pub stripe_shift: AtomicU32,
    /// Maximum length of the file and of every mapping (max store size).
    pub reserve_len: AtomicU64,
    pub stripes_offset: AtomicU64,
    pub chunk_map_offset: AtomicU64,
    /// Number of chunk-map entries (chunks that fit in the reserve).
    pub chunk_count: AtomicU64,
    pub slot_page0_offset: AtomicU64,
    /// Offset of chunk 0; chunk `i` starts at `chunk_base + i * CHUNK_SIZE`.
    pub chunk_base: AtomicU64,
    pub created_unix: AtomicU64,
    /// Offset of the change log region (`changelog.rs`; 0 = none: a store without a change
    /// log, [`super::LAYOUT_VERSION`]). Set only in stores of
    /// [`super::LAYOUT_VERSION_CHANGELOG`].
    pub changelog_offset: AtomicU64,
    /// Bytes of the change log region (control block and ring).
    pub changelog_len: AtomicU64,
    pub _pad0: [AtomicU64; 1],

    // ---- line 1: growth and global locks ----
    /// Bytes of the file that are allocated and may be touched. Monotonic; Release after the
    /// `fallocate` that backs it, Acquire by readers that bounds-check against it.
    pub committed_len: AtomicU64,
    /// Completed growth steps.
    pub growth_count: AtomicU64,
    /// Unused (growth is serialised by an OFD byte lock, see `segment::GROW_LOCK_BYTE`).
    pub _unused0: AtomicU32,
    /// Serialises span allocation/free and the chunk map entries of spans.
    pub span_lock: AtomicU32,
    /// Unused (slot pages are created under `segment::SLOT_PAGE_LOCK_BYTE`).
    pub _unused1: AtomicU32,
    pub _pad1: AtomicU32,
    /// Where the next free chunk search starts (hint, any value is safe).
    pub chunk_hint: AtomicU64,
    /// Chunks currently held by spans.
    pub span_chunks: AtomicU64,
    /// Source of block generations. Tags keep its low 32 bits, which wrap after 2^32
    /// allocations (see `alloc.rs`, `free_block`, for why a wrapped generation is tolerated).
    pub gen_counter: AtomicU64,
    /// Source of client ids (for logs and stats).
    pub next_client_id: AtomicU64,
    /// Dead clients recovered so far.
    pub recoveries: AtomicU64,
    /// Pid of the hosting process (diagnostics only; liveness is the host OFD lock).
    pub host_pid: AtomicU64,
    pub host_start_unix: AtomicU64,
    pub cache_flush: AtomicU64,
    /// Set by a client that asks the host for a snapshot; cleared by the host.
    pub snapshot_request: AtomicU64,
    /// Nonzero while a kvhost keeps the store a replica of a primary: writes of every
    /// client but the replication's own fail with `Error::ReadOnly`.
    pub replica: AtomicU64,
    pub _pad2: [AtomicU64; 2],

    // ---- line 2: totals ----
    /// Counters of the `Stats` totals that belong to no live client any more.
    pub folded: [AtomicU64; super::COUNTERS],
    pub _pad3: [AtomicU64; 16 - super::COUNTERS],

    // ---- client slot pages ----
    /// Offset of each slot page (page 0 is fixed at format time), 0 when not yet created.
    pub slot_pages: [AtomicU64; MAX_SLOT_PAGES],
    /// When the host last wrote a snapshot (0 = never).
    pub last_snapshot_unix: AtomicU64,
    /// Snapshots written by hosts of this store.
    pub snapshot_count: AtomicU64,
    /// Keys removed because they expired (by expiry passes), since creation.
    pub expired: AtomicU64,
    /// The eviction policy (`client::evict::Policy` as a number; 0 = noeviction), set by the
    /// host or any client, read by every writer that meets a full store and by readers (who
    /// set reference bits only under an LRU policy).
    pub eviction: AtomicU64,
    /// Keys removed by eviction, since creation.
    pub evicted: AtomicU64,
    /// The CLOCK hand: the stripe where the next eviction sweep starts (a hint, any value is
    /// safe).
    pub evict_hand: AtomicU64,
    /// Room for the future (metrics roots); zero.
    pub _reserved: [AtomicU64; 2],

    // ---- allocator roots ----
    pub classes: [ClassHeader; NUM_CLASSES],
}

assert_offsets!(ClassHeader {
    lock: 0,
    head: 8,
    free_count: 16,
    chunks: 24,
});

assert_offsets!(Header {
    magic: 0,
    layout_version: 8,
    header_size: 12,
    layout_signature: 16,
    hash_seed: 24,
    max_key_len: 32,
    max_value_len: 36,
    stripe_count: 40,
    stripe_shift: 44,
    reserve_len: 48,
    stripes_offset: 56,
    chunk_map_offset: 64,
    chunk_count: 72,
    slot_page0_offset: 80,
    chunk_base: 88,
    created_unix: 96,
    changelog_offset: 104,
    changelog_len: 112,
    committed_len: 128,
    growth_count: 136,
    _unused0: 144,
    span_lock: 148,
    _unused1: 152,
    chunk_hint: 160,
    span_chunks: 168,
    gen_counter: 176,
    next_client_id: 184,
    recoveries: 192,
    host_pid: 200,
    host_start_unix: 208,
    cache_flush: 216,
    snapshot_request: 224,
    replica: 232,
    folded: 256,
    slot_pages: 384,
    last_snapshot_unix: 576,
    snapshot_count: 584,
    expired: 592,
    eviction: 600,
    evicted: 608,
    evict_hand: 616,
    _reserved: 624,
    classes: 640,
});
const _: () = assert!(offset_of!(Header, committed_len) == CACHE_LINE);
const _: () = assert!(offset_of!(Header, folded) == 2 * CACHE_LINE);
const _: () = assert!(offset_of!(Header, slot_pages) == 3 * CACHE_LINE);
const _: () = assert!(offset_of!(Header, classes) % CACHE_LINE == 0);
const _: () = assert!(size_of::<Header>() as u64 <= HEADER_SIZE);
