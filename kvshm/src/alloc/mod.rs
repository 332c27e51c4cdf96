//! The allocator: size-class blocks carved from chunks, multi-chunk spans, and growth.
//!
//! Ground truth is the block tags and the chunk map; free lists and counts are hints that are
//! rebuilt from them when a lock owner dies (`rebuild_class`, `rebuild_spans`). Rules that make
//! that work:
//! - a tag changes FREE <-> non-FREE only under the class lock (or the span lock for spans);
//! - whoever reserves a block records it in its log (`record`) *before* tagging it, so a
//!   reserved block is always findable from a log;
//! - a free chunk (map entry 0) is all zeroes; freeing a span writes it back to
//!   zero before its map entries are cleared.
//!
//! Lock order: stripe -> class -> span -> grow (an OFD byte lock, see `Store::grow`).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::crash_point;
use crate::error::{Error, Result};
use crate::layout::*;
use crate::session::Session;
use crate::store::Store;

mod cache;
mod drain;
pub(crate) use cache::release_slot_cache;

const R: Ordering = Ordering::Relaxed;
const REL: Ordering = Ordering::Release;

thread_local! {
    /// Size of the last allocation that failed with `StoreFull` on this thread: what the write
    /// that failed needed room for (`client/evict.rs` makes that room).
    static FULL_AT: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// The size of the last allocation on this thread that found the store full (0: none since
/// the last call), and forget it.
pub(crate) fn take_full() -> u64 {
    FULL_AT.with(|c| c.replace(0))
}

/// The `StoreFull` hint of a claim that would have grown the store but was asked not to.
pub(crate) const WOULD_GROW: &str = "the store would have to grow";

/// The `StoreFull` hint of a write that needed a block the store must grow for while it held
/// a stripe lock: nothing changed, and [`crate::Client`]'s write loop (`with_room`) grows the
/// store outside any lock and runs the write again. Never reaches a caller.
pub(crate) const GROW_FIRST: &str = "the store must grow before this write (outside its locks)";

thread_local! {
    /// Whether a write may ask for growth outside its locks (`GROW_FIRST`) instead of growing
    /// under them: off for the last attempt of a write whose growth lost races (progress).
    static GROW_OUTSIDE: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
}

/// Whether writes on this thread grow the store outside their locks ([`GROW_FIRST`]).
pub(crate) fn grow_outside() -> bool {
    GROW_OUTSIDE.with(std::cell::Cell::get)
}

/// Run `f` with [`grow_outside`] set to `on` (restored afterwards, also if `f` panics: a
/// caller may catch the panic and keep using the thread).
pub(crate) fn with_grow_outside<T>(on: bool, f: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            GROW_OUTSIDE.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(GROW_OUTSIDE.with(|c| c.replace(on)));
    f()
}

/// Note that a write on this thread needs a block of `size` (read by [`take_full`]).
pub(crate) fn note_full(size: u64) {
    FULL_AT.with(|c| c.set(size));
}

/// The allocator, acting as one session (whose slot tags what it reserves and whose lock
/// waits recover dead lock owners).
#[derive(Clone, Copy)]
pub(crate) struct Allocator<'a> {
    pub(crate) s: Session<'a>,
}

impl<'a> Allocator<'a> {
    pub(crate) fn new(s: &Session<'a>) -> Allocator<'a> {
        Allocator { s: *s }
    }

    fn next_gen(&self) -> u32 {
        self.s.st.mem.header().gen_counter.fetch_add(1, R) as u32
    }

    /// The class of the class-chunk block at `off` (checked: inside a class chunk, on a block
    /// boundary), or `None` for the head of a span.
    pub(crate) fn class_block(&self, off: u64) -> Result<Option<usize>> {
        Ok(self.class_block_entry(off)?.0)
    }

    /// [`Allocator::class_block`], and the chunk-map entry it read.
    pub(super) fn class_block_entry(&self, off: u64) -> Result<(Option<usize>, u32)> {
        let idx = self
            .chunk_of(off)
            .ok_or_else(|| Error::corrupt(off, "block outside chunks"))?;
        let e = self.s.st.mem.chunk_map()[idx as usize].load(R);
        if e & CHUNK_SPAN_HEAD != 0 {
            if self.chunk_offset(idx) != off {
                return Err(Error::corrupt(off, "a span at a non-chunk offset"));
            }
            return Ok((None, e));
        }
        // A draining chunk's class too: an evacuating chunk's blocks in use get freed.
        let Some(c) = entry_class(e).or(draining_class(e)) else {
            return Err(Error::corrupt(
                off,
                format!("block in a chunk with map entry {e:#x}"),
            ));
        };
        if c >= NUM_CLASSES {
            return Err(Error::corrupt(off, format!("chunk map entry {e:#x}")));
        }
        if (off - self.chunk_offset(idx)) % CLASS_SIZES[c] as u64 != 0 {
            return Err(Error::corrupt(off, "misaligned block"));
        }
        Ok((Some(c), e))
    }

    fn chunk_offset(&self, idx: u64) -> u64 {
        self.s.st.chunk_base + idx * CHUNK_SIZE
    }

    /// Chunk index of a block offset, if inside the chunk area.
    pub(crate) fn chunk_of(&self, off: u64) -> Option<u64> {
        let idx = off.checked_sub(self.s.st.chunk_base)? >> CHUNK_SHIFT;
        (idx < self.s.st.mem.chunk_map().len() as u64).then_some(idx)
    }

    /// Reserve a block of at least `size` bytes. `record(offset)` is called before the block
    /// is tagged RESERVED by this client, under the allocator lock. `pool` says whether the
    /// emergency reserve may be used (transaction logs only, see [`Pool`]).
    ///
    /// When the store is full, a block of a bigger class (at most twice `size`) freed earlier
    /// is used: freed blocks stay in their class, and a full store must still take a record
    /// a little bigger or smaller than the ones it just removed.
    pub(crate) fn alloc(&self, size: u64, pool: Pool, record: impl FnOnce(u64)) -> Result<u64> {
        let r = self.alloc_any(size, pool, record);
        if matches!(r, Err(Error::StoreFull { .. })) {
            FULL_AT.with(|c| c.set(size));
        }
        r
    }

    /// A block of `size` for a caller holding a stripe lock: from this client's block cache or
    /// its class's free list (a refill from a free chunk included), never by growing the
    /// store, reclaiming other classes' chunks or evicting. `None`: not to be had that way
    /// (the caller allocates outside its lock instead: growth zeroes pages for milliseconds,
    /// and every reader of the stripe would wait for it).
    pub(crate) fn alloc_quick(
        &self,
        size: u64,
        pool: Pool,
        record: impl FnOnce(u64),
    ) -> Result<Option<u64>> {
        let Some(c) = class_for(size) else {
            let k = size.div_ceil(CHUNK_SIZE);
            return match self.alloc_span_grow(k, pool, false, record) {
                Ok(b) => Ok(Some(b)),
                Err(Error::StoreFull { .. }) => Ok(None),
                Err(e) => Err(e),
            };
        };
        let mut record = Some(record);
        let mut once = |off| {
            if let Some(f) = record.take() {
                f(off)
            }
        };
        if pool == Pool::Data {
            if let Some(b) = self.cache_take(c, &mut once)? {
                return Ok(Some(b));
            }
        }
        match self.alloc_class(c, pool, false, &mut once) {
            Ok(b) => Ok(Some(b)),
            Err(Error::StoreFull { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn alloc_any(&self, size: u64, pool: Pool, record: impl FnOnce(u64)) -> Result<u64> {
        let mut record = Some(record);
        let mut once = |off| {
            if let Some(f) = record.take() {
                f(off)
            }
        };
        let Some(c) = class_for(size) else {
            let k = size.div_ceil(CHUNK_SIZE);
            let r = self.alloc_span(k, pool, &mut once);
            // A full store: class chunks whose blocks are all free (after removes or an
            // eviction) go back to the chunk pool, and the span is tried once more.
            if matches!(r, Err(Error::StoreFull { .. }))
                && self.flush_cache()? as u64 + self.release_free_class_chunks(NUM_CLASSES)? > 0
            {
                return self.alloc_span(k, pool, &mut once);
            }
            return r;
        };
        if pool == Pool::Data {
            if let Some(b) = self.cache_take(c, &mut once)? {
                return Ok(b);
            }
        }
        // Before the store grows for this class, chunks of other classes whose blocks are all
        // free come back to the chunk pool (without a host's reclaim passes, too); this
        // client's cached blocks go back first, so that their chunks can.
        let mut r = self.alloc_class(c, pool, false, &mut once);
        if matches!(r, Err(Error::StoreFull { hint }) if hint == WOULD_GROW)
            && self.flush_cache()? > 0
        {
            r = self.alloc_class(c, pool, false, &mut once);
        }
        if matches!(r, Err(Error::StoreFull { hint }) if hint == WOULD_GROW) {
            if self.release_free_class_chunks(c)? > 0 {
                r = self.alloc_class(c, pool, false, &mut once);
            }
            if matches!(r, Err(Error::StoreFull { hint }) if hint == WOULD_GROW) {
                r = self.alloc_class(c, pool, true, &mut once);
            }
        }
        match r {
            Err(Error::StoreFull { hint }) => {
                if self.flush_cache()? > 0 {
                    if let r @ Ok(_) = self.alloc_class(c, pool, true, &mut once) {
                        return r;
                    }
                }
                for (bigger, &bytes) in CLASS_SIZES.iter().enumerate().skip(c + 1) {
                    if bytes as u64 > 2 * size {
                        break;
                    }
                    if self.s.st.mem.header().classes[bigger].head.load(R) == 0 {
                        continue;
                    }
                    match self.alloc_class(bigger, pool, true, &mut once) {
                        Err(Error::StoreFull { .. }) => continue,
                        r => return r,
                    }
                }
                // Last resort: chunks of other classes whose blocks are all free go back to
                // the chunk pool.
                if self.release_free_class_chunks(c)? > 0 {
                    return self.alloc_class(c, pool, true, &mut once);
                }
                Err(Error::StoreFull { hint })
            }
            r => r,
        }
    }

    /// After an eviction emptied chunks: class chunks whose blocks are all free go back to the
    /// chunk pool, and class `c` (if given, and its free list is empty) carves one of them.
    pub(crate) fn reclaim_chunks_for(&self, c: Option<usize>) -> Result<()> {
        self.flush_cache()?;
        self.release_free_class_chunks(c.unwrap_or(NUM_CLASSES))?;
        if let Some(c) = c {
            let cls = &self.s.st.mem.header().classes[c];
            let _g = self.s.guard_word(&cls.lock)?;
            if cls.head.load(R) == 0 {
                match self.refill_class(c, Pool::Data, false) {
                    Ok(_) | Err(Error::StoreFull { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// Give class chunks whose blocks are all free back to the chunk pool (zeroed), so a full
    /// store can reuse the room for another size. Returns how many chunks were released.
    /// Takes one class lock at a time (never two), like every allocator path.
    pub(crate) fn release_free_class_chunks(&self, except: usize) -> Result<u64> {
        self.release_free_class_chunks_above(except, 1)
    }

    /// [`Allocator::release_free_class_chunks`] for classes holding at least `min_chunks`
    /// chunks' worth of free blocks (the host's reclaim passes ask for 2: a class with one
    /// chunk of slack keeps it, so steady churn does not give back and re-carve chunks).
    pub(crate) fn release_free_class_chunks_above(
        &self,
        except: usize,
        min_chunks: u64,
    ) -> Result<u64> {
        let h = self.s.st.mem.header();
        let pending = drain::classes_draining(self.s.st.mem.chunk_map());
        let mut released = 0;
        for d in 0..NUM_CLASSES {
            if d == except {
                // Its own free blocks are about to be used: only what a walker that died left
                // draining is finished.
                if pending[d] {
                    released += self.drain_walk(d)?;
                }
                continue;
            }
            let cls = &h.classes[d];
            if !pending[d]
                && cls.free_count.load(R) < min_chunks * (CHUNK_SIZE / CLASS_SIZES[d] as u64)
            {
                continue; // not enough free blocks to empty a chunk
            }
            released += self.release_class_chunks(d, pending[d])?;
        }
        if released > 0 {
            log::debug!("store full: {released} all-free class chunk(s) returned to the pool");
        }
        Ok(released)
    }

    /// A block of class `c`. Without `grow`, a refill that would need the store to grow
    /// fails with `StoreFull { hint: WOULD_GROW }` instead.
    fn alloc_class(
        &self,
        c: usize,
        pool: Pool,
        grow: bool,
        record: impl FnOnce(u64),
    ) -> Result<u64> {
        let cls = &self.s.st.mem.header().classes[c];
        let _g = self.s.guard_word(&cls.lock)?;
        let b = self.alloc_class_locked(c, pool, grow, record)?;
        if pool == Pool::Data {
            self.cache_refill_locked(c)?;
        }
        Ok(b)
    }

    fn alloc_class_locked(
        &self,
        c: usize,
        pool: Pool,
        grow: bool,
        record: impl FnOnce(u64),
    ) -> Result<u64> {
        let cls = &self.s.st.mem.header().classes[c];
        // Blocks of a chunk being given back are unlinked, not handed out (`drain.rs`); after
        // DISCARD_MAX of them a fresh chunk goes in front, if one is free without growing.
        let (mut head, draining) = self.skip_draining_head(c, drain::DISCARD_MAX)?;
        if draining {
            match self.refill_class(c, pool, false) {
                Ok(h) => head = h,
                Err(Error::StoreFull { .. }) => head = self.skip_draining_head(c, u32::MAX)?.0,
                Err(e) => return Err(e),
            }
        }
        if head == 0 {
            head = self.refill_class(c, pool, grow)?;
        }
        let words = self.s.st.mem.words(head, 2)?;
        let tag = Tag::from_word(words[0].load(R));
        if tag.state != TAG_FREE || self.chunk_class(head) != Some(c) {
            // A free list that points at a non-free block: rebuild from the tags and retry.
            log::error!("free list of class {c} is damaged at {head:#x}; rebuilding it");
            self.rebuild_class(c)?;
            return self.alloc_class_locked(c, pool, grow, record);
        }
        let next = words[1].load(R);
        record(head);
        crash_point!("alloc.recorded");
        words[0].store(Tag::reserved(self.s.me, self.next_gen()).word(), REL);
        crash_point!("alloc.tagged");
        cls.head.store(next, REL);
        cls.free_count.fetch_sub(1, R);
        Ok(head)
    }

    /// Class of the chunk holding `off`, if it is a class chunk.
    fn chunk_class(&self, off: u64) -> Option<usize> {
        entry_class(self.s.st.mem.chunk_map()[self.chunk_of(off)? as usize].load(R))
    }

    /// Claim a free chunk for class `c` and carve it onto the front of its free list.
    fn refill_class(&self, c: usize, pool: Pool, grow: bool) -> Result<u64> {
        let e = CHUNK_CLASS_BASE + c as u32;
        let idx = self.s.st.claim_chunks(1, e, e, pool, grow)?;
        crash_point!("alloc.chunk_claimed");
        let size = CLASS_SIZES[c] as u64;
        let base = self.chunk_offset(idx);
        let n = CHUNK_SIZE / size;
        // The chunk is zero: every block is already FREE(0). Link them in address order, in
        // front of what the list holds.
        let cls = &self.s.st.mem.header().classes[c];
        let mut head = cls.head.load(R);
        for b in (0..n).rev() {
            let off = base + b * size;
            self.s.st.mem.word(off + 8)?.store(head, R);
            head = off;
        }
        cls.head.store(head, REL);
        cls.free_count.fetch_add(n, R);
        cls.chunks.fetch_add(1, R);
        Ok(head)
    }

    fn alloc_span(&self, k: u64, pool: Pool, record: impl FnOnce(u64)) -> Result<u64> {
        self.alloc_span_grow(k, pool, true, record)
    }

    /// [`Allocator::alloc_span`]; without `grow`, a span that needs growth fails with
    /// `StoreFull { hint: WOULD_GROW }`.
    fn alloc_span_grow(
        &self,
        k: u64,
        pool: Pool,
        grow: bool,
        record: impl FnOnce(u64),
    ) -> Result<u64> {
        if k > CHUNK_SPAN_LEN_MASK as u64 {
            return Err(Error::StoreFull {
                hint: "allocation larger than the store",
            });
        }
        let h = self.s.st.mem.header();
        let _g = self.s.guard_word(&h.span_lock)?;
        let idx =
            self.s
                .st
                .claim_chunks(k, CHUNK_SPAN_HEAD | k as u32, CHUNK_SPAN_CONT, pool, grow)?;
        let off = self.chunk_offset(idx);
        record(off);
        crash_point!("span.recorded");
        self.s
            .st
            .mem
            .word(off)?
            .store(Tag::reserved(self.s.me, self.next_gen()).word(), REL);
        h.span_chunks.fetch_add(k, R);
        Ok(off)
    }

    /// Free `block` if its tag still equals `expect`. Returns whether it was freed.
    pub(crate) fn free_block(&self, block: u64, expect: u64) -> Result<bool> {
        // A tag that differs now means the block was already freed (e.g. by a recoverer's
        // rebuild), nothing to do. Generations are 32 bits and wrap: a stale `expect` could
        // match again only if this very block were reallocated with exactly that generation,
        // 2^32 allocations later, while the free that logged it still waits to be re-run by
        // an interrupted recovery. We accept that window (docs/ARCHITECTURE.md, "Tags").
        if !tag_is(self.word(block)?.load(R), expect) {
            return Ok(false);
        }
        let Some(c) = self.class_block(block)? else {
            let idx = self.chunk_of(block).unwrap_or(0);
            return self.free_span(idx, expect);
        };
        let cls = &self.s.st.mem.header().classes[c];
        let _g = self.s.guard_word(&cls.lock)?;
        self.free_class_locked(c, block, expect)
    }

    /// Caller holds class `c`'s lock: free `block` (of class `c`) if its tag is `expect`.
    pub(crate) fn free_class_locked(&self, c: usize, block: u64, expect: u64) -> Result<bool> {
        let cls = &self.s.st.mem.header().classes[c];
        let words = self.s.st.mem.words(block, 2)?;
        let generation = Tag::from_word(expect).generation;
        if !swap_tag(&words[0], expect, Tag::free(generation).word()) {
            return Ok(false);
        }
        crash_point!("free.tagged");
        if let Some(idx) = self.chunk_of(block) {
            if is_evacuating(self.s.st.mem.chunk_map()[idx as usize].load(R)) {
                // Not linked: the chunk is being emptied (`drain.rs`).
                self.drained_one(idx)?;
                return Ok(true);
            }
        }
        words[1].store(cls.head.load(R), R);
        cls.head.store(block, REL);
        cls.free_count.fetch_add(1, R);
        Ok(true)
    }

    fn free_span(&self, idx: u64, expect: u64) -> Result<bool> {
        let h = self.s.st.mem.header();
        let _g = self.s.guard_word(&h.span_lock)?;
        let off = self.chunk_offset(idx);
        let tag = self.s.st.mem.word(off)?;
        if !swap_tag(tag, expect, Tag::free(0).word()) {
            return Ok(false);
        }
        crash_point!("span.free_tagged");
        self.release_span(idx)?;
        Ok(true)
    }

    /// Zero a span (its tag already FREE) and clear its map entries, head first.
    fn release_span(&self, idx: u64) -> Result<()> {
        let map = self.s.st.mem.chunk_map();
        let k = (map[idx as usize].load(R) & CHUNK_SPAN_LEN_MASK) as u64;
        if k == 0 || idx + k > map.len() as u64 {
            return Err(Error::corrupt(self.chunk_offset(idx), "span length"));
        }
        self.zero_chunks(idx, k)?;
        map[idx as usize].store(CHUNK_FREE, REL);
        crash_point!("span.head_cleared");
        for j in 1..k {
            map[(idx + j) as usize].store(CHUNK_FREE, REL);
        }
        self.s.st.mem.header().span_chunks.fetch_sub(k, R);
        Ok(())
    }

    /// Zero chunks `idx..idx+k` by storing zeros. (Punching a hole and re-allocating the
    /// range left it sparse whenever the re-allocation failed, and a later touch of a sparse
    /// page under memory pressure is SIGBUS, what growth takes care to avoid. Giving pages
    /// back to the OS is the job of the memory reclaim of a later issue, which must keep the
    /// chunk unusable until it is re-backed.)
    fn zero_chunks(&self, idx: u64, k: u64) -> Result<()> {
        let off = self.chunk_offset(idx);
        for w in self.s.st.mem.words(off, k * CHUNK_SIZE / 8)? {
            w.store(0, R);
        }
        Ok(())
    }

    /// Rebuild the free list of class `c` from the block tags (caller holds the class lock).
    /// Chunks that were being given back (draining) are given back first.
    pub(crate) fn rebuild_class(&self, c: usize) -> Result<()> {
        self.free_draining_chunks(c)?;
        let cls = &self.s.st.mem.header().classes[c];
        let size = CLASS_SIZES[c] as u64;
        let map = self.s.st.mem.chunk_map();
        let (mut head, mut free, mut chunks) = (0u64, 0u64, 0u64);
        for (i, e) in map.iter().enumerate().rev() {
            if e.load(R) != CHUNK_CLASS_BASE + c as u32 {
                continue;
            }
            chunks += 1;
            let base = self.chunk_offset(i as u64);
            for b in (0..CHUNK_SIZE / size).rev() {
                let words = self.s.st.mem.words(base + b * size, 2)?;
                if Tag::from_word(words[0].load(R)).state == TAG_FREE {
                    words[1].store(head, R);
                    head = base + b * size;
                    free += 1;
                }
            }
        }
        cls.head.store(head, REL);
        cls.free_count.store(free, R);
        cls.chunks.store(chunks, R);
        Ok(())
    }

    /// Repair spans after the span-lock owner died (caller holds the span lock): release
    /// spans whose tag is FREE and orphaned continuation entries.
    pub(crate) fn rebuild_spans(&self) -> Result<()> {
        let map = self.s.st.mem.chunk_map();
        let mut i = 0u64;
        let mut covered_until = 0u64;
        let mut held = 0u64;
        while i < map.len() as u64 {
            let e = map[i as usize].load(R);
            if e & CHUNK_SPAN_HEAD != 0 {
                let k = (e & CHUNK_SPAN_LEN_MASK) as u64;
                let tag = Tag::from_word(self.s.st.mem.word(self.chunk_offset(i))?.load(R));
                if tag.state == TAG_FREE {
                    // Clear only the entries that are still ours (CONT) after the head.
                    self.zero_chunks(i, 1)?;
                    map[i as usize].store(CHUNK_FREE, REL);
                    let mut j = i + 1;
                    while j < (i + k).min(map.len() as u64)
                        && map[j as usize].load(R) == CHUNK_SPAN_CONT
                    {
                        self.zero_chunks(j, 1)?;
                        map[j as usize].store(CHUNK_FREE, REL);
                        j += 1;
                    }
                    i = j;
                    continue;
                }
                held += k;
                covered_until = i + k;
            } else if e == CHUNK_SPAN_CONT && i >= covered_until {
                self.zero_chunks(i, 1)?;
                map[i as usize].store(CHUNK_FREE, REL);
            }
            i += 1;
        }
        self.s.st.mem.header().span_chunks.store(held, R);
        Ok(())
    }

    /// A word inside the segment as `&AtomicU64` (checked).
    fn word(&self, off: u64) -> Result<&'a AtomicU64> {
        self.s.st.mem.word(off)
    }
}

/// The class of a chunk-map entry that says "carved into a class" (not draining).
#[inline]
fn entry_class(e: u32) -> Option<usize> {
    (CHUNK_CLASS_BASE..CHUNK_CLASS_BASE + NUM_CLASSES as u32)
        .contains(&e)
        .then(|| (e - CHUNK_CLASS_BASE) as usize)
}

/// Replace a block's tag by `new` if it still is `expect` ([`tag_is`]: a LIVE tag may have
/// gained its reference bit from a reader in the meantime). Returns whether it did.
pub(crate) fn swap_tag(w: &AtomicU64, expect: u64, new: u64) -> bool {
    let mut cur = w.load(R);
    loop {
        if !tag_is(cur, expect) {
            return false;
        }
        match w.compare_exchange(cur, new, REL, R) {
            Ok(_) => return true,
            Err(now) => cur = now,
        }
    }
}

/// Which chunks an allocation may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pool {
    /// Records, tables, slot pages: everything but the emergency reserve.
    Data,
    /// Transaction-log extensions: may also use the last [`reserve_chunks`] chunks, so a full
    /// store can still log (and so run) a large `remove_many` that makes room.
    Emergency,
}

/// Chunks at the end of the chunk area kept for transaction logs: an eighth of the store, at
/// most 4 (1 MiB, a log for a batch of ~4,000 keys), at least 1.
pub(crate) fn reserve_chunks(total: u64) -> u64 {
    (total / 8).clamp(1, 4).min(total.saturating_sub(1))
}

impl Store {
    /// Find `k` consecutive free chunks inside the committed length (growing it if needed)
    /// and set their map entries: `head` on the first, `cont` on the others.
    /// Claim `k` contiguous free chunks (map entries `head`, then `cont`), allocating punched
    /// ones again or growing the store as needed. Without `grow`, a claim that would grow
    /// fails with `StoreFull { hint: WOULD_GROW }` (the caller frees room first).
    pub(crate) fn claim_chunks(
        &self,
        k: u64,
        head: u32,
        cont: u32,
        pool: Pool,
        grow: bool,
    ) -> Result<u64> {
        let map = self.mem.chunk_map();
        let total = match pool {
            Pool::Data => map.len() as u64 - reserve_chunks(map.len() as u64),
            Pool::Emergency => map.len() as u64,
        };
        let h = self.mem.header();
        loop {
            let committed_chunks =
                (self.mem.committed().saturating_sub(self.chunk_base)) / CHUNK_SIZE;
            let limit = committed_chunks.min(total);
            let hint = if k == 1 {
                h.chunk_hint.load(R).min(limit)
            } else {
                0
            };
            let mut found = None;
            let mut run = 0u64;
            for i in (hint..limit).chain(0..hint) {
                if i == 0 || (i == hint && hint != 0) {
                    run = 0;
                }
                if crate::reclaim::claimable(map[i as usize].load(R)) {
                    run += 1;
                    if run == k {
                        found = Some(i + 1 - k);
                        break;
                    }
                } else {
                    run = 0;
                }
            }
            if let Some(start) = found {
                if self.claim_range(start, k, head, cont) {
                    if k == 1 {
                        h.chunk_hint.store(start + 1, R);
                    }
                    return Ok(start);
                }
                continue; // lost a race for one of the chunks
            }
            // Chunks given back to the OS are taken again before the store grows.
            if self.back_punched(k, limit)? {
                continue;
            }
            if !grow && committed_chunks < total {
                return Err(Error::StoreFull { hint: WOULD_GROW });
            }
            // Need more committed chunks: at least `k` past the current end.
            if limit + k > total {
                // Not enough room even after growing to the maximum: a span may still fit in a
                // gap after growth to the reserve, so grow to the end first if we can.
                if committed_chunks < total {
                    self.grow(self.chunk_base + total * CHUNK_SIZE)?;
                    continue;
                }
                return Err(Error::StoreFull {
                    hint: "store reached its maximum size",
                });
            }
            self.grow(self.chunk_base + (limit + k) * CHUNK_SIZE)?;
        }
    }

    fn claim_range(&self, start: u64, k: u64, head: u32, cont: u32) -> bool {
        let map = self.mem.chunk_map();
        // A COOLING chunk is as free as a FREE one (backed, zero-filled); taking it cancels
        // its reclaim. A claim that loses a race puts back FREE.
        let take = |i: u64, v: u32| {
            [CHUNK_FREE, CHUNK_COOLING].iter().any(|&from| {
                map[i as usize]
                    .compare_exchange(from, v, Ordering::AcqRel, R)
                    .is_ok()
            })
        };
        for j in 1..k {
            if !take(start + j, cont) {
                for back in 1..j {
                    map[(start + back) as usize].store(CHUNK_FREE, REL);
                }
                return false;
            }
        }
        if !take(start, head) {
            for back in 1..k {
                map[(start + back) as usize].store(CHUNK_FREE, REL);
            }
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A panic inside a write's last attempt (caught by the caller) must not leave the thread
    /// growing under its locks for good.
    #[test]
    fn grow_outside_is_restored_after_a_panic() {
        assert!(grow_outside());
        let r = std::panic::catch_unwind(|| {
            with_grow_outside(false, || {
                assert!(!grow_outside());
                panic!("inside the last attempt")
            })
        });
        assert!(r.is_err());
        assert!(grow_outside());
    }
}
