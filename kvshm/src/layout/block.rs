//! Blocks, their tags, records, index tables and chunk-map entries.
//!
//! Every block starts with a 64-bit tag `state | owner << 2 | generation << 32`, changed only
//! under the lock of the block's class (or the span lock) or by a single CAS:
//! FREE(g) -> RESERVED(owner, g') -> LIVE(g') -> FREE(g'). Generations come from a global
//! counter, so a stale "free this block if it is still LIVE(g)" never frees a reused block.
//! All-zero is FREE(0): a freshly grown (zero-filled) chunk is a valid chunk of free blocks.

/// Tag state: on a free list (or in an uncarved, zero-filled chunk).
pub const TAG_FREE: u64 = 0;
/// Tag state: taken by client `owner`, not yet reachable from the index.
pub const TAG_RESERVED: u64 = 1;
/// Tag state: reachable from the index (a record, a table, a slot page or a log extension).
pub const TAG_LIVE: u64 = 2;

const STATE_MASK: u64 = 0b11;
/// The reference bit of a LIVE record's tag (where a RESERVED tag keeps its owner's low bit):
/// set by a reader's hit under an LRU eviction policy, with one CAS from exactly `LIVE(g)`, and
/// cleared by the eviction sweep under the stripe lock. Decoded, it reads as owner 1.
pub const TAG_REF: u64 = 1 << 2;

/// Whether a block's tag `actual` is still the `expect` a free was logged with: equal, or
/// for a LIVE `expect` also with the reference bit set by a reader since.
#[inline]
pub const fn tag_is(actual: u64, expect: u64) -> bool {
    actual == expect || (expect & STATE_MASK == TAG_LIVE && actual == expect | TAG_REF)
}

/// Whether a tag word is a LIVE tag without the reference bit.
#[inline]
pub const fn live_unreferenced(w: u64) -> bool {
    w & (STATE_MASK | TAG_REF) == TAG_LIVE
}
const OWNER_SHIFT: u32 = 2;
const OWNER_MASK: u64 = (1 << 30) - 1;
const GEN_SHIFT: u32 = 32;

/// A decoded block tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tag {
    pub state: u64,
    pub owner: u32,
    pub generation: u32,
}

impl Tag {
    /// Encode.
    pub const fn word(self) -> u64 {
        self.state
            | ((self.owner as u64 & OWNER_MASK) << OWNER_SHIFT)
            | ((self.generation as u64) << GEN_SHIFT)
    }
    /// Decode (never fails: unknown states are reported by `verify`).
    pub const fn from_word(w: u64) -> Tag {
        Tag {
            state: w & STATE_MASK,
            owner: ((w >> OWNER_SHIFT) & OWNER_MASK) as u32,
            generation: (w >> GEN_SHIFT) as u32,
        }
    }
    pub const fn free(generation: u32) -> Tag {
        Tag {
            state: TAG_FREE,
            owner: 0,
            generation,
        }
    }
    pub const fn reserved(owner: u32, generation: u32) -> Tag {
        Tag {
            state: TAG_RESERVED,
            owner,
            generation,
        }
    }
    pub const fn live(generation: u32) -> Tag {
        Tag {
            state: TAG_LIVE,
            owner: 0,
            generation,
        }
    }
}

/// Record = `[tag][key_len u32 | value_len u32 << 32][version][meta][key, padded to 8][value,
/// padded]`.
///
/// `version` is the key's version (see `Store::next_version`), set by the writer under the
/// stripe lock before the record is published. `meta` holds the key's expiry in bits 0..48
/// (Unix time in milliseconds, 0 = never; [`META_EXPIRY_MASK`]); bit 63 is kept for a
/// reference bit (eviction). A record past its expiry is absent for every reader.
pub const RECORD_HEADER_SIZE: u64 = 32;
/// Offset of the length word in a record.
pub const RECORD_LENS_OFFSET: u64 = 8;
/// Offset of the version word in a record.
pub const RECORD_VERSION_OFFSET: u64 = 16;
/// Offset of the meta word in a record.
pub const RECORD_META_OFFSET: u64 = 24;
/// Bits of the meta word holding the expiry (Unix milliseconds; 0 = none).
pub const META_EXPIRY_MASK: u64 = (1 << 48) - 1;

/// Total bytes of a record with these lengths.
pub const fn record_size(key_len: u64, value_len: u64) -> u64 {
    RECORD_HEADER_SIZE + super::pad8(key_len) + super::pad8(value_len)
}

/// Index table = `[tag][log2][capacity x entry]`, a block of exactly `2^log2` words: powers of
/// two are size classes, so a table fills its block, and a `2^15`-word table is one chunk.
pub const TABLE_HEADER_SIZE: u64 = 16;
/// Bytes per table entry (one word).
pub const TABLE_ENTRY_SIZE: u64 = 8;
/// A never-used table entry.
pub const ENTRY_EMPTY: u64 = 0;
/// The entry of a removed key (a probe path may run through it).
pub const ENTRY_TOMBSTONE: u64 = 1;
/// An entry's low bits hold the record offset / 8 (records are 8-aligned, offsets below
/// [`super::MAX_RESERVE`]); its top 21 bits hold bits 32..53 of the key's hash, so a probe
/// compares keys only when the tags agree (1 in 2 million for another key).
pub const ENTRY_OFF_BITS: u32 = 43;
const ENTRY_OFF_MASK: u64 = (1 << ENTRY_OFF_BITS) - 1;
const _: () = assert!(super::MAX_RESERVE <= 1 << (ENTRY_OFF_BITS + 3));
/// Smallest table (log2 of its words).
pub const TABLE_MIN_LOG2: u32 = 3;
/// Largest table a stripe may grow to.
pub const TABLE_MAX_LOG2: u32 = 40;

/// The entry for a record at `rec` whose key hashes to `hash`. Never EMPTY or TOMBSTONE: a
/// record lies past the segment header, so its offset / 8 is at least 2.
#[inline]
pub const fn table_entry(hash: u64, rec: u64) -> u64 {
    entry_tag(hash) | rec >> 3
}

#[inline]
const fn entry_tag(hash: u64) -> u64 {
    (hash >> 32) << ENTRY_OFF_BITS
}

/// The record offset of a live entry.
#[inline]
pub const fn entry_record(entry: u64) -> u64 {
    (entry & ENTRY_OFF_MASK) << 3
}

/// Whether a live entry's hash tag agrees with `hash`.
#[inline]
pub const fn entry_matches(entry: u64, hash: u64) -> bool {
    entry & !ENTRY_OFF_MASK == entry_tag(hash)
}

/// Entries a table of `2^log2` words holds (the header takes two words). Total over any
/// `log2` (a damaged table word may hold anything): 0 below 2 words, 0 from 2^64 on.
#[inline]
pub const fn table_capacity(log2: u32) -> u64 {
    if log2 >= 64 {
        return 0;
    }
    (1u64 << log2).saturating_sub(2)
}

/// The entry after `i` on a probe path through a table of `capacity` entries (wrapping).
#[inline]
pub const fn table_next(i: u64, capacity: u64) -> u64 {
    if i + 1 == capacity {
        0
    } else {
        i + 1
    }
}

/// Bytes of a table of `2^log2` words.
pub const fn table_size(log2: u32) -> u64 {
    8 << log2
}

/// Where a key's probe starts in a table of `capacity` entries: the low 32 bits of the hash
/// scaled to the capacity (Lemire's multiply-shift; capacities are not powers of two).
#[inline]
pub const fn table_home(hash: u64, capacity: u64) -> u64 {
    ((hash & 0xffff_ffff) * capacity) >> 32
}

/// Chunk-map entry of a free (and zero-filled) chunk.
pub const CHUNK_FREE: u32 = 0;
/// Chunk-map entries `1..=NUM_CLASSES` mean "carved into class `entry - 1`".
pub const CHUNK_CLASS_BASE: u32 = 1;
/// Chunk-map entry of the first chunk of a span: `CHUNK_SPAN_HEAD | length in chunks`.
pub const CHUNK_SPAN_HEAD: u32 = 0x8000_0000;
/// Chunk-map entry of a following chunk of a span.
pub const CHUNK_SPAN_CONT: u32 = 0x4000_0000;
/// Chunk-map entry of every chunk of client-slot page `p`: `CHUNK_SLOT_PAGE | p`.
pub const CHUNK_SLOT_PAGE: u32 = 0x2000_0000;
/// Chunk-map entry of a free chunk (backed, zero-filled) that the host will give back to the
/// OS unless somebody claims it first (claimers take it as they take a FREE one). Marking
/// and punching are at least one reclaim period apart: a reader still holding an offset into
/// the chunk from before it was freed has long retried.
pub const CHUNK_COOLING: u32 = 0x1000_0000;
/// Chunk-map entry of a free chunk whose pages went back to the OS (a hole in the file: it
/// reads as zeros and backs nothing). It is allocated again (made FREE) before it is claimed.
pub const CHUNK_PUNCHED: u32 = 0x1000_0001;
/// Chunk-map entry while the grow-lock holder punches the chunk or allocates it again. One
/// left behind by a holder that died (its OFD lock went with it) is punched again and made
/// PUNCHED by the next holder.
pub const CHUNK_RECLAIMING: u32 = 0x1000_0002;
/// Chunk-map entry of a class chunk being given back (`CHUNK_DRAINING | class << 16 | n`):
/// every block is FREE, `n` (>= 1) of them are still on the class's free list. No block of it
/// is handed out again; each one unlinked from the list lowers `n`, and the last one makes the
/// chunk zero and FREE (`alloc/drain.rs`). Only changed under the class's lock.
pub const CHUNK_DRAINING: u32 = 0x0800_0000;
/// Mask of the count of a [`CHUNK_DRAINING`] entry.
pub const CHUNK_DRAINING_COUNT: u32 = 0xffff;
const _: () =
    assert!(super::CHUNK_SIZE / super::MIN_CLASS_SIZE as u64 <= CHUNK_DRAINING_COUNT as u64);
const _: () = assert!(super::NUM_CLASSES < 0x80);

/// Flag of a [`CHUNK_DRAINING`] entry whose chunk still holds blocks in use, being moved out
/// (EVACUATING, `client/evacuate.rs`): its blocks freed meanwhile are not linked to the list.
/// Its `n` counts the blocks in use plus the free ones still on the list; each unlink and
/// each free lowers it, and at 0 the chunk goes back. A rebuild of the class (recovery) makes
/// it an ordinary chunk of the class again.
pub const CHUNK_EVACUATING: u32 = 1 << 23;

/// The [`CHUNK_DRAINING`] entry of class `c` with `n` blocks on the free list.
#[inline]
pub const fn chunk_draining(c: usize, n: u32) -> u32 {
    CHUNK_DRAINING | (c as u32) << 16 | n
}

/// The class of a [`CHUNK_DRAINING`] entry (evacuating or not), `None` for any other entry.
#[inline]
pub const fn draining_class(e: u32) -> Option<usize> {
    if e & 0xf800_0000 == CHUNK_DRAINING {
        Some(((e >> 16) & 0x7f) as usize)
    } else {
        None
    }
}

/// Whether a chunk-map entry is an evacuating chunk's.
#[inline]
pub const fn is_evacuating(e: u32) -> bool {
    draining_class(e).is_some() && e & CHUNK_EVACUATING != 0
}

/// Mask of the length of a span head entry.
pub const CHUNK_SPAN_LEN_MASK: u32 = 0x3fff_ffff;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_round_trips() {
        for t in [
            Tag::free(0),
            Tag::reserved(5, 77),
            Tag::live(u32::MAX),
            Tag::reserved((1 << 30) - 1, 1),
        ] {
            assert_eq!(Tag::from_word(t.word()), t);
        }
        assert_eq!(Tag::from_word(0), Tag::free(0));
    }

    #[test]
    fn the_reference_bit_matches_only_live_tags() {
        let live = Tag::live(7).word();
        assert!(tag_is(live, live));
        assert!(tag_is(live | TAG_REF, live));
        assert!(live_unreferenced(live));
        assert!(!live_unreferenced(live | TAG_REF));
        // A reserved tag's bit 2 is its owner's: owner 4 is not owner 5.
        let r4 = Tag::reserved(4, 7).word();
        assert!(!tag_is(r4 | TAG_REF, r4));
        assert!(!tag_is(Tag::live(8).word() | TAG_REF, live));
        assert!(!tag_is(Tag::free(7).word(), live));
    }
}
