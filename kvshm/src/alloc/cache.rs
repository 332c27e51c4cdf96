//! The allocator's side of the per-client block caches (see `crate::cache` for the protocol
//! and why).

use std::sync::atomic::Ordering;

use super::Allocator;
use crate::cache::{cacheable, BlockCache, PER_CLASS, REFILL};
use crate::crash_point;
use crate::error::{Error, Result};
use crate::layout::*;
use crate::session::Session;

const R: Ordering = Ordering::Relaxed;
const REL: Ordering = Ordering::Release;

impl<'a> Allocator<'a> {
    fn cache(&self, c: usize) -> Option<&'a BlockCache> {
        self.s.cache.filter(|_| cacheable(c))
    }

    /// The cache to put more blocks into: none once the store has grown to its maximum size.
    /// A full store then frees and refills through the class lists only, so memory one
    /// process frees is at once usable by every other (an idle client's cache would otherwise
    /// keep up to 32 blocks, and their chunks, from a store that has no room to spare).
    fn cache_to_fill(&self, c: usize) -> Option<&'a BlockCache> {
        self.cache(c)
            .filter(|_| self.s.st.mem.committed() < self.s.st.reserve)
    }

    /// A cached block of class `c`, logged by `record` before it leaves the cache.
    pub(crate) fn cache_take(&self, c: usize, record: &mut impl FnMut(u64)) -> Result<Option<u64>> {
        let Some(cache) = self.cache(c) else {
            return Ok(None);
        };
        let Some(e) = cache.find(c) else {
            return Ok(None);
        };
        let (b, t) = (cache.block(e), cache.tag(e));
        cache.clear(e);
        let entry = &self.s.slot.cache[e];
        if entry.load(R) != b || self.s.word(b)?.load(R) != t {
            // Only this client writes its entries and its reserved tags: damage. Drop the
            // entry (verify reports a block left reserved) and allocate normally.
            log::error!("block cache entry {e} ({b:#x}) changed behind its client; dropped");
            entry.store(0, REL);
            return Ok(None);
        }
        record(b);
        crash_point!("cache.taken");
        entry.store(0, REL);
        Ok(Some(b))
    }

    /// Caller holds class `c`'s lock and just took a block for itself: cache up to
    /// [`REFILL`]` - 1` more from the free list (never a new chunk for them).
    pub(crate) fn cache_refill_locked(&self, c: usize) -> Result<()> {
        let Some(cache) = self.cache_to_fill(c) else {
            return Ok(());
        };
        let h = self.s.st.mem.header();
        let cls = &h.classes[c];
        for _ in cache.count(c)..REFILL - 1 {
            let Some(e) = cache.empty_entry() else { break };
            let (head, draining) = self.skip_draining_head(c, super::drain::DISCARD_MAX)?;
            if head == 0 || draining {
                break;
            }
            let words = self.s.st.mem.words(head, 2)?;
            if Tag::from_word(words[0].load(R)).state != TAG_FREE
                || self.class_block(head)? != Some(c)
            {
                break; // a damaged list: the next allocation rebuilds it
            }
            let next = words[1].load(R);
            self.s.slot.cache[e].store(head, REL);
            crash_point!("cache.refilled");
            let t = Tag::reserved(self.s.me, cache.next_gen(h)).word();
            words[0].store(t, REL);
            cls.head.store(next, REL);
            cls.free_count.fetch_sub(1, R);
            cache.set(e, c, head, t);
        }
        Ok(())
    }

    /// Free `block` if its tag still equals `expect`, into this client's cache when it takes
    /// the block's class (the deferred frees of a transaction). Returns whether it was freed.
    pub(crate) fn free_block_cached(&self, block: u64, expect: u64) -> Result<bool> {
        let (class, entry) = self.class_block_entry(block)?;
        // A span's head, or a block of a chunk being emptied (not to be handed out again:
        // freed where it is, `drain.rs`), goes back uncached.
        let Some(c) = class.filter(|_| !is_evacuating(entry)) else {
            return self.free_block(block, expect);
        };
        let Some(cache) = self.cache_to_fill(c) else {
            return self.free_block(block, expect);
        };
        let tag = self.s.word(block)?;
        if !tag_is(tag.load(R), expect) {
            return Ok(false);
        }
        if cache.count(c) >= PER_CLASS {
            // Full for this class: half of its entries and this block go back in one take of
            // the class lock.
            let _g = self.s.guard_word(&self.s.st.mem.header().classes[c].lock)?;
            self.flush_class_locked(cache, c, PER_CLASS / 2)?;
            return self.free_class_locked(c, block, expect);
        }
        let Some(e) = cache.empty_entry() else {
            return self.free_block(block, expect);
        };
        let entry = &self.s.slot.cache[e];
        entry.store(block, REL);
        crash_point!("cache.given");
        let t = Tag::reserved(self.s.me, cache.next_gen(self.s.st.mem.header())).word();
        if !super::swap_tag(tag, expect, t) {
            entry.store(0, REL);
            return Ok(false);
        }
        cache.set(e, c, block, t);
        Ok(true)
    }

    /// Give every cached block back to its class. Returns how many went back.
    pub(crate) fn flush_cache(&self) -> Result<usize> {
        let Some(cache) = self.s.cache else {
            return Ok(0);
        };
        cache.set_flush_seen(self.s.st.mem.header().cache_flush.load(R));
        let mut n = 0;
        while let Some((e, _, _)) = cache.entries().next() {
            let c = cache.class(e);
            let _g = self.s.guard_word(&self.s.st.mem.header().classes[c].lock)?;
            n += self.flush_class_locked(cache, c, 0)?;
        }
        Ok(n)
    }

    /// [`Allocator::flush_cache`] if the host asked for it since the last flush (one relaxed
    /// load when not).
    pub(crate) fn flush_cache_if_asked(&self) -> Result<()> {
        if let Some(cache) = self.s.cache {
            if self.s.st.mem.header().cache_flush.load(R) != cache.flush_seen() {
                self.flush_cache()?;
            }
        }
        Ok(())
    }

    /// Caller holds class `c`'s lock: give cached blocks of class `c` back until `keep` remain.
    fn flush_class_locked(&self, cache: &BlockCache, c: usize, keep: usize) -> Result<usize> {
        let mut n = 0;
        while cache.count(c) > keep {
            let Some(e) = cache.find(c) else { break };
            let (b, t) = (cache.block(e), cache.tag(e));
            if self.free_class_locked(c, b, t)? {
                n += 1;
            } else {
                log::error!("cached block {b:#x} changed behind its client; not freed");
            }
            crash_point!("cache.flushed");
            self.s.slot.cache[e].store(0, REL);
            cache.clear(e);
        }
        Ok(n)
    }
}

/// Recovery: free the blocks a dead (or panicked) client `owner` still holds in the cache of
/// `slot`, and clear its entries. Runs after the client's transaction was rolled back or
/// completed; idempotent (a block already freed is skipped).
pub(crate) fn release_slot_cache(s: &Session<'_>, slot: &Slot, owner: u32) -> Result<()> {
    let alloc = Allocator::new(s);
    for entry in &slot.cache {
        let b = entry.load(R);
        if b == 0 {
            continue;
        }
        if let Ok(w) = s.word(b) {
            let t = Tag::from_word(w.load(R));
            if t.state == TAG_RESERVED && t.owner == owner {
                match alloc.free_block(b, t.word()) {
                    Ok(_) => {}
                    Err(e @ Error::Corrupt { .. }) => {
                        log::error!("slot {owner}: cached block {b:#x} not freed: {e}")
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        entry.store(0, REL);
    }
    Ok(())
}
