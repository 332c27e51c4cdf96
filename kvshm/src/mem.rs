//! # Safety
//! The only place where the mapping's address becomes references. Every accessor hands out
//! `&AtomicU64`/`&AtomicU32`/`&[AtomicU64]` or `&T` of a layout type made only of atomics, so
//! concurrent writes from other processes are atomic accesses, never data races. Invariants:
//! - `base` points at a mapping of `map_len` bytes that lives as long as `Mem`;
//! - fixed regions (header, stripes, chunk map, slot page 0) were checked at attach to lie
//!   inside the committed length, which never shrinks;
//! - any other offset (read from the segment, hence untrusted) is checked by [`Mem::words`]
//!   against the committed length and alignment before it is dereferenced.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::error::{Error, Result};
use crate::layout::{Header, Slot, Stripe};

/// Typed, bounds-checked view of a mapped segment.
#[derive(Debug)]
pub struct Mem {
    map: crate::segment::Mapping,
    /// Process-local copy of `Header::committed_len` (monotonic, so a stale copy is only ever
    /// too small: a failed check re-reads the header). Never more than the file's length:
    /// `committed_len` is segment data, and touching the mapping past the end of the file
    /// is SIGBUS.
    committed: AtomicU64,
    /// The store file, to check a grown `committed_len` against its length.
    file: Option<std::fs::File>,
    stripes_offset: u64,
    stripe_count: u64,
    chunk_map_offset: u64,
    chunk_count: u64,
    /// The change log's region (offset, words; 0 words: none), checked at attach.
    clog_offset: u64,
    clog_words: u64,
}

impl Mem {
    /// Wrap a mapping whose header passed `Mem::check_fixed_regions`.
    pub(crate) fn new(map: crate::segment::Mapping) -> Mem {
        Mem {
            map,
            committed: AtomicU64::new(crate::layout::HEADER_SIZE),
            file: None,
            stripes_offset: 0,
            stripe_count: 0,
            chunk_map_offset: 0,
            chunk_count: 0,
            clog_offset: 0,
            clog_words: 0,
        }
    }

    /// Address of `off` in the mapping (computing it is safe; dereferencing is not).
    #[inline]
    fn at(&self, off: u64) -> *const u8 {
        self.map.as_ptr().wrapping_add(off as usize)
    }

    /// Length of the mapping (the reserve).
    pub fn map_len(&self) -> u64 {
        self.map.len() as u64
    }

    /// The header. Sound because attach refuses files shorter than the header.
    pub fn header(&self) -> &Header {
        debug_assert!(self.map.len() >= std::mem::size_of::<Header>());
        // SAFETY: the mapping starts at a page-aligned address, is at least HEADER_SIZE long
        // (checked before `Mem` is built) and outlives `&self`; `Header` is all atomics.
        unsafe { &*(self.map.as_ptr() as *const Header) }
    }

    /// Record the fixed regions after validating them against the committed length.
    pub(crate) fn set_regions(
        &mut self,
        committed: u64,
        stripes_offset: u64,
        stripe_count: u64,
        chunk_map_offset: u64,
        chunk_count: u64,
    ) -> Result<()> {
        let end_stripes = stripes_offset + stripe_count * crate::layout::STRIPE_SIZE;
        let end_map = chunk_map_offset + chunk_count * 4;
        if committed > self.map_len()
            || end_stripes > committed
            || end_map > committed
            || stripes_offset % 128 != 0
            || chunk_map_offset % 8 != 0
        {
            return Err(Error::corrupt(
                0,
                "fixed regions lie outside the committed segment",
            ));
        }
        self.committed.store(committed, Ordering::Relaxed);
        self.stripes_offset = stripes_offset;
        self.stripe_count = stripe_count;
        self.chunk_map_offset = chunk_map_offset;
        self.chunk_count = chunk_count;
        Ok(())
    }

    /// Record the change log's region (`len` bytes at `off`) after validating it against the
    /// committed length: [`Mem::changelog_words`] then needs no check per call.
    pub(crate) fn set_changelog(&mut self, off: u64, len: u64) -> Result<()> {
        let end = off.checked_add(len);
        if off % 8 != 0 || len % 8 != 0 || end.is_none_or(|e| e > self.committed()) {
            return Err(Error::corrupt(
                off,
                "the change log lies outside the committed segment",
            ));
        }
        self.clog_offset = off;
        self.clog_words = len / 8;
        Ok(())
    }

    /// The change log's region (empty if the store has none).
    #[inline]
    pub fn changelog_words(&self) -> &[AtomicU64] {
        // SAFETY: checked by `set_changelog` to lie in the committed segment (which never
        // shrinks), 8-aligned; lives as long as `&self`. Zero words: an empty slice at a
        // valid, aligned address (the mapping's start).
        unsafe {
            std::slice::from_raw_parts(
                self.at(self.clog_offset) as *const AtomicU64,
                self.clog_words as usize,
            )
        }
    }

    /// Address and length of the mapping (for the fork handler, `segment::register_fork_fd`).
    pub(crate) fn map_range(&self) -> (usize, usize) {
        (self.map.as_ptr() as usize, self.map.len())
    }

    /// The store file given to [`Mem::set_file`].
    pub(crate) fn file(&self) -> Option<&std::fs::File> {
        self.file.as_ref()
    }

    /// Check every later growth of `committed_len` against the length of `file` (a clone of
    /// the store's descriptor).
    pub(crate) fn set_file(&mut self, file: std::fs::File) {
        self.file = Some(file);
    }

    /// Current committed length (refreshed from the header). A grown value is accepted only as
    /// far as the file backs it (one `fstat` per growth seen): a raised `committed_len` in a
    /// damaged segment makes offsets past the file fail the bounds check, never SIGBUS.
    pub fn committed(&self) -> u64 {
        let c = self
            .header()
            .committed_len
            .load(Ordering::Acquire)
            .min(self.map_len());
        let local = self.committed.load(Ordering::Relaxed);
        if c > local {
            let backed = match &self.file {
                Some(f) => f.metadata().map_or(local, |m| c.min(m.len())),
                None => c,
            };
            self.committed.fetch_max(backed, Ordering::Relaxed);
        }
        self.committed.load(Ordering::Relaxed)
    }

    #[inline]
    fn in_bounds(&self, off: u64, len: u64) -> bool {
        let end = match off.checked_add(len) {
            Some(e) => e,
            None => return false,
        };
        end <= self.committed.load(Ordering::Relaxed) || end <= self.committed()
    }

    /// `n` words at `off`, bounds- and alignment-checked. The only way to reach bytes at an
    /// offset that was read from the segment.
    #[inline(always)]
    pub fn words(&self, off: u64, n: u64) -> Result<&[AtomicU64]> {
        let len = n
            .checked_mul(8)
            .ok_or_else(|| Error::corrupt(off, "length overflow"))?;
        if off % 8 != 0 || off < crate::layout::HEADER_SIZE || !self.in_bounds(off, len) {
            return Err(Error::corrupt(
                off,
                format!("range of {len} bytes outside the segment"),
            ));
        }
        // SAFETY: `off..off+len` lies inside the committed part of the mapping (checked above;
        // committed <= map_len), is 8-aligned (the mapping is page aligned), and the slice of
        // atomics lives no longer than `&self`, i.e. the mapping.
        Ok(unsafe { std::slice::from_raw_parts(self.at(off) as *const AtomicU64, n as usize) })
    }

    /// One word at `off` (checked).
    #[inline]
    pub fn word(&self, off: u64) -> Result<&AtomicU64> {
        Ok(&self.words(off, 1)?[0])
    }

    /// Stripe `i` (`i < stripe_count`, checked by the caller's masking; asserted here).
    #[inline]
    pub fn stripe(&self, i: usize) -> &Stripe {
        assert!((i as u64) < self.stripe_count, "stripe {i} out of range");
        let off = self.stripes_offset + i as u64 * crate::layout::STRIPE_SIZE;
        // SAFETY: the stripe array was checked to lie in the committed segment at attach;
        // `i` is in range (asserted); 128-byte aligned; `Stripe` is all atomics.
        unsafe { &*(self.at(off) as *const Stripe) }
    }

    /// Number of stripes.
    pub fn stripe_count(&self) -> usize {
        self.stripe_count as usize
    }

    /// The chunk map.
    pub fn chunk_map(&self) -> &[AtomicU32] {
        // SAFETY: checked at attach to lie in the committed segment, 8-aligned; lives as long
        // as `&self`.
        unsafe {
            std::slice::from_raw_parts(
                self.at(self.chunk_map_offset) as *const AtomicU32,
                self.chunk_count as usize,
            )
        }
    }

    /// Hint that the word at `off` will be read soon (a walk over many records: their cache
    /// misses overlap instead of queueing). Out of bounds: nothing. No access happens.
    #[inline]
    pub fn prefetch(&self, off: u64) {
        #[cfg(target_arch = "x86_64")]
        if off % 8 == 0 && off < self.committed.load(Ordering::Relaxed) {
            // SAFETY: a prefetch is a hint that never faults and reads nothing into the
            // program; the address is inside the mapping (checked above) in any case.
            unsafe {
                core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
                    self.at(off) as *const i8,
                )
            };
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = off;
    }

    /// The slot at `off` (an offset computed from the slot-page table; checked).
    #[inline]
    pub fn slot_at(&self, off: u64) -> Result<&Slot> {
        let w = self.words(off, crate::layout::SLOT_SIZE / 8)?;
        // SAFETY: `w` covers SLOT_SIZE bytes inside the mapping, 8-aligned; `Slot` is all
        // atomics with alignment 8.
        Ok(unsafe { &*(w.as_ptr() as *const Slot) })
    }
}

/// The low half of a word of the mapping as the `AtomicU32` a lock or futex word is (for a
/// word already looked up, e.g. in a slice of control words).
#[inline]
pub(crate) fn low_half(w: &AtomicU64) -> &AtomicU32 {
    // SAFETY: `w` is an 8-aligned word (an `AtomicU64` of the mapping, so inside it); its first
    // 4 bytes are 4-aligned and live as long as `w`; `AtomicU32` has no invalid values and the
    // layout gives these 4 bytes to a 32-bit word that is only accessed atomically.
    unsafe { &*(w.as_ptr() as *const AtomicU32) }
}

/// Copies at least this long use one `rep movsb` (x86-64); shorter ones a loop of word loads
/// (`rep movsb` has a start-up cost of tens of cycles).
const BULK_COPY_MIN: usize = 1024;

/// Copy the first `len` bytes of `words` (at most all of them) into `out`, replacing its
/// contents. The words may be written concurrently by another process: the bytes are then
/// torn, and the caller's seqlock validation throws them away.
///
/// Word loads are atomic (`Relaxed`), as everywhere. A long copy is one `rep movsb` in an
/// `asm!` block: the compiler knows nothing of what the block reads, so a concurrent write is
/// not a data race in the Rust abstract machine (the same reasoning as the "atomic memcpy" of
/// RFC 3301, whose proposed implementation is inline assembly); the CPU's own semantics for a
/// racing `movs` are defined (each byte is some value that was written). Measured: a 16 KiB
/// get spent most of its time zero-filling the output and then copying it word by word
/// (docs/PERFORMANCE.md, issue 12 part 4).
#[inline(always)]
pub(crate) fn copy_words_out(words: &[AtomicU64], len: usize, out: &mut Vec<u8>) {
    let len = len.min(words.len() * 8);
    out.clear();
    // Room for whole words: the last one is stored whole too (its bytes past `len` stay
    // beyond the vector's length).
    out.reserve(len.next_multiple_of(8));
    let dst = out.spare_capacity_mut();
    #[cfg(target_arch = "x86_64")]
    if len >= BULK_COPY_MIN {
        // SAFETY: `words` is a live, in-bounds slice of the mapping of at least `len` bytes
        // (`len` was clamped to it), `dst` has room for `len` bytes (reserved above) and does
        // not overlap the mapping; `rep movsb` copies exactly `rcx` bytes forward (the ABI
        // guarantees the direction flag is clear), touches no stack and no flags we rely on.
        unsafe {
            core::arch::asm!(
                "rep movsb",
                inout("rcx") len => _,
                inout("rsi") words.as_ptr() as *const u8 => _,
                inout("rdi") dst.as_mut_ptr() as *mut u8 => _,
                options(nostack, preserves_flags)
            );
        }
        // SAFETY: the copy above initialised the first `len` bytes of the spare capacity, and
        // `len <= capacity`.
        unsafe { out.set_len(len) };
        return;
    }
    let full = len / 8;
    for (w, d) in words[..full].iter().zip(dst.chunks_exact_mut(8)) {
        let bytes = w.load(Ordering::Relaxed).to_le_bytes();
        // SAFETY: `d` is 8 bytes of `out`'s spare capacity (`chunks_exact_mut(8)`), writable
        // and disjoint from the mapping; one unaligned 8-byte store initialises exactly them
        // (a byte loop here cost ~8 instructions per byte).
        unsafe { d.as_mut_ptr().cast::<[u8; 8]>().write_unaligned(bytes) };
    }
    if len % 8 != 0 {
        let last = words[full].load(Ordering::Relaxed).to_le_bytes();
        let d = &mut dst[full * 8..full * 8 + 8];
        // SAFETY: as in the loop: 8 bytes of spare capacity (reserved as whole words above),
        // disjoint from the mapping (a byte loop here cost up to ~50 instructions).
        unsafe { d.as_mut_ptr().cast::<[u8; 8]>().write_unaligned(last) };
    }
    // SAFETY: the stores above initialised at least the first `len` bytes of the spare
    // capacity (`full` whole words, then the next whole word if `len` ends inside it), and
    // `len <= capacity`.
    unsafe { out.set_len(len) };
}

/// Store `bytes` into `words`, zero-padding the last word (at most `words.len() * 8` bytes are
/// stored). The words belong to a block this writer reserved, but a reader that still holds an
/// older offset into it may read them meanwhile (its seqlock will retry): long copies are one
/// `rep movsb` for the same reasons as [`copy_words_out`].
#[inline(always)]
pub(crate) fn copy_words_in(words: &[AtomicU64], bytes: &[u8]) {
    let bytes = &bytes[..bytes.len().min(words.len() * 8)];
    let full = bytes.len() / 8;
    #[cfg(target_arch = "x86_64")]
    let done = if full * 8 >= BULK_COPY_MIN {
        // SAFETY: `words` is a live, in-bounds slice of the mapping of at least `full * 8`
        // bytes, `bytes` has at least that many and does not overlap the mapping; `rep movsb`
        // copies exactly `rcx` bytes forward (direction flag clear per the ABI).
        unsafe {
            core::arch::asm!(
                "rep movsb",
                inout("rcx") full * 8 => _,
                inout("rsi") bytes.as_ptr() => _,
                inout("rdi") words.as_ptr() as *mut u8 => _,
                options(nostack, preserves_flags)
            );
        }
        true
    } else {
        false
    };
    #[cfg(not(target_arch = "x86_64"))]
    let done = false;
    if !done {
        for (w, c) in words.iter().zip(bytes.chunks_exact(8)) {
            w.store(
                u64::from_le_bytes(c.try_into().expect("8 bytes")),
                Ordering::Relaxed,
            );
        }
    }
    let rest = &bytes[full * 8..];
    if !rest.is_empty() {
        words[full].store(tail_word(rest), Ordering::Relaxed);
    }
}

/// The 1-7 bytes `rest` as a little-endian word, zero-padded: two overlapping loads of 4, 2
/// or 1 bytes, no call (a `copy_from_slice` into a zeroed `[u8; 8]` called `memcpy`: ~30
/// instructions per put of a value whose length is not a multiple of 8, callgrind).
#[inline]
fn tail_word(rest: &[u8]) -> u64 {
    let n = rest.len();
    debug_assert!((1..8).contains(&n));
    if n >= 4 {
        let lo = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as u64;
        let hi = u32::from_le_bytes([rest[n - 4], rest[n - 3], rest[n - 2], rest[n - 1]]) as u64;
        // The bytes both loads hold sit at the same places in both: OR keeps them.
        lo | hi << (8 * (n - 4))
    } else if n >= 2 {
        let lo = u16::from_le_bytes([rest[0], rest[1]]) as u64;
        let hi = u16::from_le_bytes([rest[n - 2], rest[n - 1]]) as u64;
        lo | hi << (8 * (n - 2))
    } else {
        rest[0] as u64
    }
}

#[cfg(test)]
mod copy_tests {
    use super::*;

    /// Both copies, on both sides of the bulk threshold and at every tail length: the bytes
    /// round-trip, the padding of the last word is zero, and nothing past `len` is touched.
    #[test]
    fn copies_round_trip_at_every_length_and_pad_with_zeros() {
        let words: Vec<AtomicU64> = (0..700).map(|_| AtomicU64::new(u64::MAX)).collect();
        let mut out = vec![7u8; 3];
        for len in (0..80)
            .chain(BULK_COPY_MIN - 20..BULK_COPY_MIN + 20)
            .chain([4000, 4799])
        {
            for w in &words {
                w.store(u64::MAX, Ordering::Relaxed);
            }
            let src: Vec<u8> = (0..len).map(|i| (i * 7 + 1) as u8).collect();
            copy_words_in(&words, &src);
            let used = len.div_ceil(8);
            if len % 8 != 0 {
                let last = words[used - 1].load(Ordering::Relaxed).to_le_bytes();
                assert!(last[len % 8..].iter().all(|&b| b == 0), "padding at {len}");
            }
            assert_eq!(words[used].load(Ordering::Relaxed), u64::MAX, "past {len}");
            copy_words_out(&words, len, &mut out);
            assert_eq!(out, src, "len {len}");
            // A shorter length than the words hold: only `len` bytes come out.
            copy_words_out(&words[..used], len.saturating_sub(3), &mut out);
            assert_eq!(out, src[..len.saturating_sub(3)], "len {len} - 3");
        }
    }
}
