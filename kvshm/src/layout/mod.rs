//! Every type that lives in the shared segment, and nothing else.
//!
//! All structs are `#[repr(C)]`, made only of `AtomicU64`/`AtomicU32` fields (so a `&T` over
//! bytes another process writes is sound: every access is an atomic access), and all-zero is
//! their valid initial state. Sizes and offsets are asserted at compile time; the byte diagram
//! and the per-field writer/reader ordering are in `docs/layout.md`.
//!
//! **Architecture Invariant:** only this module defines segment types; the segment holds
//! offsets, never pointers.

/// Compile-time check of field offsets, one per field `docs/layout.md` lists:
/// `assert_offsets!(Header { magic: 0, layout_version: 8 })`.
macro_rules! assert_offsets {
    ($t:ty { $($f:ident : $o:expr),* $(,)? }) => {
        $(const _: () = assert!(core::mem::offset_of!($t, $f) == $o);)*
    };
}

mod block;
mod changelog;
#[cfg(test)]
mod doc_check;
mod header;
mod slot;
mod stripe;

pub use block::*;
pub use changelog::*;
pub use header::*;
pub use slot::*;
pub use stripe::*;

/// Fixed cache-line size used for padding (never `CachePadded`, whose size varies).
pub const CACHE_LINE: usize = 128;

/// Bumped on any change to a segment type; attach refuses a different version.
pub const LAYOUT_VERSION: u32 = 6;

/// The `layout_version` of a store with a change log: the same types as [`LAYOUT_VERSION`]
/// plus the change log region. A build that knows only [`LAYOUT_VERSION`] refuses such a store,
/// so no older writer can change it without logging the change. (Versions 4 and 5 were the
/// same pair before chunk-map entries could say [`CHUNK_DRAINING`], which those builds would
/// take for a damaged free list; 7 marked every committed entry COMMITTED, where 8 leaves it
/// PENDING for readers to settle through its writer's slot, which a 7 reader would not do.)
pub const LAYOUT_VERSION_CHANGELOG: u32 = 8;

/// `b"KVSHMSEG"` read as a little-endian word. Written last when a store is formatted.
pub const MAGIC: u64 = u64::from_le_bytes(*b"KVSHMSEG");

/// Size of the area every chunk-allocated block lives in. Blocks of one size class are
/// carved from a chunk; records bigger than a chunk take a span of whole chunks.
pub const CHUNK_SIZE: u64 = 256 * 1024;
/// log2 of [`CHUNK_SIZE`].
pub const CHUNK_SHIFT: u32 = 18;
const _: () = assert!(1 << CHUNK_SHIFT == CHUNK_SIZE);

/// Largest offset the segment may use (offsets are packed into 48 bits in a few words).
pub const MAX_RESERVE: u64 = 1 << 46;

/// Smallest block handed out by the allocator.
pub const MIN_CLASS_SIZE: u32 = 64;

/// Classes are 16 bytes apart up to this size (small records fit a class exactly or waste
/// under 16 bytes), then about 12.5% apart.
pub const FINE_CLASS_LIMIT: u32 = 512;

/// Next size class: 16 bytes more up to [`FINE_CLASS_LIMIT`], then about 12.5% bigger rounded
/// up to 8 bytes, never skipping a power of two (index tables are powers of two in size).
const fn next_class(s: u32) -> u32 {
    if s < FINE_CLASS_LIMIT {
        return s + 16;
    }
    let grown = (s + s / 8 + 7) & !7;
    let pow2 = (s + 1).next_power_of_two();
    if grown < pow2 {
        grown
    } else {
        pow2
    }
}

const fn count_classes() -> usize {
    let mut n = 1;
    let mut s = MIN_CLASS_SIZE;
    while (s as u64) < CHUNK_SIZE {
        s = next_class(s);
        n += 1;
    }
    n
}

/// Number of size classes; the last one is exactly [`CHUNK_SIZE`].
pub const NUM_CLASSES: usize = count_classes();

const fn make_classes() -> [u32; NUM_CLASSES] {
    let mut out = [0u32; NUM_CLASSES];
    let mut s = MIN_CLASS_SIZE;
    let mut i = 0;
    while i < NUM_CLASSES {
        out[i] = if (s as u64) > CHUNK_SIZE {
            CHUNK_SIZE as u32
        } else {
            s
        };
        s = next_class(s);
        i += 1;
    }
    out
}

/// Block size of every size class, ascending.
pub const CLASS_SIZES: [u32; NUM_CLASSES] = make_classes();
const _: () = assert!(CLASS_SIZES[NUM_CLASSES - 1] as u64 == CHUNK_SIZE);
const _: () = assert!(NUM_CLASSES <= 96);

/// The size class for a block of `size` bytes, or `None` when it needs a span.
pub fn class_for(size: u64) -> Option<usize> {
    if size > CHUNK_SIZE {
        return None;
    }
    Some(CLASS_SIZES.partition_point(|&c| (c as u64) < size))
}

/// Round up to a multiple of 8.
pub const fn pad8(n: u64) -> u64 {
    (n + 7) & !7
}

/// A number that changes whenever the size or field offsets of a segment type change, so that
/// two builds that disagree on the layout refuse to share a segment even with equal versions.
pub const fn layout_signature() -> u64 {
    let parts: [u64; 18] = [
        core::mem::size_of::<Header>() as u64,
        core::mem::offset_of!(Header, committed_len) as u64,
        core::mem::offset_of!(Header, classes) as u64,
        core::mem::offset_of!(Header, slot_pages) as u64,
        core::mem::size_of::<ClassHeader>() as u64,
        core::mem::size_of::<Stripe>() as u64,
        core::mem::offset_of!(Stripe, table) as u64,
        core::mem::offset_of!(Stripe, revision) as u64,
        core::mem::size_of::<Slot>() as u64,
        core::mem::offset_of!(Slot, undo) as u64,
        core::mem::offset_of!(Slot, new_blocks) as u64,
        core::mem::offset_of!(Slot, frees) as u64,
        core::mem::offset_of!(Slot, cache) as u64,
        RECORD_HEADER_SIZE,
        TABLE_HEADER_SIZE | TABLE_ENTRY_SIZE << 8,
        CHUNK_SIZE,
        NUM_CLASSES as u64,
        CLASS_SIZES[1] as u64,
    ];
    // FNV-1a over the parts: stable across builds and compilers.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < parts.len() {
        let mut b = 0;
        while b < 8 {
            h ^= (parts[i] >> (b * 8)) & 0xff;
            h = h.wrapping_mul(0x0100_0000_01b3);
            b += 1;
        }
        i += 1;
    }
    h
}

/// The layout signature of LAYOUT_VERSION 6 (the same types as 4; see the test
/// `signature_is_pinned`).
#[cfg(test)]
const PINNED_SIGNATURE: u64 = 0x91cf_3953_bbbe_6abf;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_ascend_and_cover_a_chunk() {
        for w in CLASS_SIZES.windows(2) {
            assert!(w[0] < w[1]);
            assert_eq!(w[0] % 8, 0);
        }
        assert_eq!(class_for(1), Some(0));
        assert_eq!(class_for(64), Some(0));
        assert_eq!(class_for(65), Some(1));
        assert_eq!(class_for(CHUNK_SIZE), Some(NUM_CLASSES - 1));
        assert_eq!(class_for(CHUNK_SIZE + 1), None);
        for s in [64u64, 100, 152, 1000, 4097, 100_000] {
            let c = class_for(s).unwrap();
            assert!(CLASS_SIZES[c] as u64 >= s);
            // Worst-case internal waste stays near the 12.5% class step.
            assert!(
                (CLASS_SIZES[c] as u64) < s + s / 8 + 16,
                "{s} -> {}",
                CLASS_SIZES[c]
            );
        }
    }

    /// The signature is pinned: a change of any size or offset it covers changes it, and then
    /// this test fails until the change is made on purpose (new value here, and
    /// `LAYOUT_VERSION` bumped if stores of the old layout exist).
    #[test]
    fn signature_is_pinned() {
        assert_eq!(
            layout_signature(),
            PINNED_SIGNATURE,
            "{:#x}",
            layout_signature()
        );
    }
}
