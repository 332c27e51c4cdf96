//! Giving a size class's all-free chunks back to the chunk pool, holding the class lock for
//! bounded steps only (issue 14: a mass expiry freed ~400 chunks of one class, and releasing
//! them in one hold of its lock stalled that class's writers for 12 ms).
//!
//! A class's free list is singly linked: the blocks of one chunk cannot leave it without a
//! walk. So a chunk is given back in stages (docs/ARCHITECTURE.md, "Draining chunks"):
//! 1. Candidates, chunks of the class whose tags all read FREE, are found without the lock.
//! 2. Under the lock, [`MARK_BATCH`] at a time, each is checked again (a tag changes FREE <->
//!    non-FREE only under the class lock, so the check is exact) and its map entry becomes
//!    [`CHUNK_DRAINING`] with the number of its blocks on the list (all of them). From then
//!    on no block of it is handed out.
//! 3. The list is walked from its head, [`WALK_BATCH`] nodes per hold of the lock; a block of
//!    a draining chunk is unlinked and its chunk's count drops by one; the last one makes the
//!    chunk zero and FREE. Between holds the walk keeps its place at the last block it kept,
//!    which is still on the list if it is still FREE in a (non-draining) chunk of the class:
//!    under the lock, such a block is on the list, always. Else it starts again at the head.
//! 4. An allocation that finds a draining block at the head unlinks it the same way, at most
//!    [`DISCARD_MAX`] before it carves a fresh chunk (if one is free without growing).
//!
//! Crash safety: every change is made under the class lock. A dead owner's recovery rebuilds
//! the class ([`Allocator::rebuild_class`]), which zeroes and frees every draining chunk of it
//! first (all its blocks are free, by construction) and relinks the rest from the tags. A
//! walker that dies between two holds leaves draining chunks with exact counts: allocations
//! unlink their blocks as they meet them, and the next reclaim pass walks the list again.

use std::sync::atomic::Ordering;

use super::Allocator;
use crate::crash_point;
use crate::error::Result;
use crate::layout::*;

const R: Ordering = Ordering::Relaxed;
const REL: Ordering = Ordering::Release;

/// Candidate chunks checked and marked per hold of the class lock (each check reads the
/// chunk's tags: at most 4,096 sequential words).
const MARK_BATCH: usize = 8;
/// Free-list nodes visited per hold of the class lock while draining (each a likely cache
/// miss: tens of microseconds per hold).
const WALK_BATCH: u64 = 256;
/// Draining blocks an allocation unlinks from the head of its list before it carves a new
/// chunk instead (when one is free without growing).
pub(super) const DISCARD_MAX: u32 = 256;
/// Times a walk starts again at the head (its place was allocated meanwhile) before it
/// leaves the rest to allocations and the next pass.
const MAX_RESTARTS: u32 = 16;

/// A block found on a class's free list.
pub(super) enum Listed {
    /// A free block of a chunk of the class: stays.
    Kept,
    /// A block of draining chunk `idx`: to be unlinked.
    Draining(u64),
    /// Anything else: the list is damaged.
    Damaged,
}

impl Allocator<'_> {
    /// Give every all-free chunk of class `d` back to the chunk pool (zeroed, FREE), holding
    /// the class lock for bounded steps only; `pending`: the class has draining chunks from
    /// before (a walker that died between holds), to finish too. Returns how many chunks
    /// became free.
    pub(super) fn release_class_chunks(&self, d: usize, pending: bool) -> Result<u64> {
        let candidates = self.all_free_chunks(d)?;
        let cls = &self.s.st.mem.header().classes[d];
        let mut marked = 0;
        for batch in candidates.chunks(MARK_BATCH) {
            let _g = self.s.guard_word(&cls.lock)?;
            for &idx in batch {
                marked += u64::from(self.mark_draining(d, idx)?);
            }
        }
        if marked == 0 && !pending {
            return Ok(0);
        }
        // No lock held here: a process killed now leaves draining chunks behind and no dead
        // lock owner (allocations and the next pass finish them).
        crash_point!("alloc.drain_paused");
        self.drain_walk(d)
    }

    /// Unlink the listed blocks of class `d`'s draining and evacuating chunks (after marking
    /// some). Returns how many chunks became free.
    pub(crate) fn drain_class(&self, d: usize) -> Result<u64> {
        self.drain_walk(d)
    }

    /// Chunks of class `d` whose tags all read FREE, read without the lock (candidates only).
    fn all_free_chunks(&self, d: usize) -> Result<Vec<u64>> {
        let map = self.s.st.mem.chunk_map();
        let entry = CHUNK_CLASS_BASE + d as u32;
        let committed = self
            .s
            .st
            .mem
            .committed()
            .saturating_sub(self.s.st.chunk_base)
            / CHUNK_SIZE;
        let mut out = Vec::new();
        for idx in 0..committed.min(map.len() as u64) {
            if map[idx as usize].load(R) == entry && self.chunk_all_free(d, idx)? {
                out.push(idx);
            }
        }
        Ok(out)
    }

    fn chunk_all_free(&self, d: usize, idx: u64) -> Result<bool> {
        let size = CLASS_SIZES[d] as u64;
        let base = self.chunk_offset(idx);
        for b in 0..CHUNK_SIZE / size {
            if Tag::from_word(self.word(base + b * size)?.load(R)).state != TAG_FREE {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Caller holds class `d`'s lock: make chunk `idx` DRAINING if it still is a chunk of the
    /// class with every block free. Returns whether it did.
    fn mark_draining(&self, d: usize, idx: u64) -> Result<bool> {
        let map = self.s.st.mem.chunk_map();
        if map[idx as usize].load(R) != CHUNK_CLASS_BASE + d as u32
            || !self.chunk_all_free(d, idx)?
        {
            return Ok(false);
        }
        let n = CHUNK_SIZE / CLASS_SIZES[d] as u64;
        map[idx as usize].store(chunk_draining(d, n as u32), REL);
        crash_point!("alloc.drain_marked");
        // Hints (rebuilt from the tags by recovery): the usable free blocks and chunks.
        let cls = &self.s.st.mem.header().classes[d];
        cls.free_count
            .store(cls.free_count.load(R).saturating_sub(n), R);
        cls.chunks.store(cls.chunks.load(R).saturating_sub(1), R);
        Ok(true)
    }

    /// Caller holds class `d`'s lock: make chunk `idx` EVACUATING if it still is a chunk of the
    /// class with at least one block in use: its free blocks (all on the list) leave the
    /// class's count, and no block of it is handed out or linked again. Its entry counts every
    /// block not yet accounted for: one less per listed block unlinked and per block in use
    /// freed; the last one frees the chunk (no scan of its tags). Returns whether it did.
    pub(crate) fn mark_evacuating(&self, d: usize, idx: u64) -> Result<bool> {
        let map = self.s.st.mem.chunk_map();
        if map[idx as usize].load(R) != CHUNK_CLASS_BASE + d as u32 {
            return Ok(false);
        }
        let size = CLASS_SIZES[d] as u64;
        let base = self.chunk_offset(idx);
        let mut free = 0u64;
        for b in 0..CHUNK_SIZE / size {
            if Tag::from_word(self.word(base + b * size)?.load(R)).state == TAG_FREE {
                free += 1;
            }
        }
        if free == CHUNK_SIZE / size {
            return self.mark_draining(d, idx);
        }
        // The count: blocks still to be accounted for, listed free ones (the walk unlinks
        // them) and those in use (freed later, not linked): all of them.
        let n = (CHUNK_SIZE / size) as u32;
        map[idx as usize].store(chunk_draining(d, n) | CHUNK_EVACUATING, REL);
        crash_point!("evacuate.marked");
        let cls = &self.s.st.mem.header().classes[d];
        cls.free_count
            .store(cls.free_count.load(R).saturating_sub(free), R);
        cls.chunks.store(cls.chunks.load(R).saturating_sub(1), R);
        Ok(true)
    }

    /// Walk class `d`'s free list, unlinking the blocks of draining chunks, [`WALK_BATCH`]
    /// nodes per hold of the lock. Returns how many chunks became free.
    pub(super) fn drain_walk(&self, d: usize) -> Result<u64> {
        let cls = &self.s.st.mem.header().classes[d];
        // A list longer than every block of the store is a cycle (damage).
        let bound = self.s.st.mem.chunk_map().len() as u64 * (CHUNK_SIZE / CLASS_SIZES[d] as u64);
        let (mut cursor, mut walked, mut freed, mut restarts) = (0u64, 0u64, 0u64, 0u32);
        loop {
            let _g = self.s.guard_word(&cls.lock)?;
            if cursor != 0 && !matches!(self.listed(d, cursor, true), Listed::Kept) {
                // Our place was handed out since the last hold: from the head again.
                restarts += 1;
                if restarts > MAX_RESTARTS {
                    return Ok(freed);
                }
                (cursor, walked) = (0, 0);
            }
            for _ in 0..WALK_BATCH {
                let link = if cursor == 0 {
                    &cls.head
                } else {
                    self.word(cursor + 8)?
                };
                let b = link.load(R);
                if b == 0 {
                    return Ok(freed);
                }
                walked += 1;
                match self.listed(d, b, true) {
                    Listed::Kept if walked <= bound => cursor = b,
                    Listed::Draining(idx) => {
                        link.store(self.word(b + 8)?.load(R), REL);
                        crash_point!("alloc.drain_unlinked");
                        freed += u64::from(self.drained_one(idx)?);
                    }
                    Listed::Kept | Listed::Damaged => {
                        log::error!("free list of class {d} is damaged at {b:#x}; rebuilding it");
                        let pending = self.draining_chunks(d);
                        self.rebuild_class(d)?;
                        return Ok(freed + pending);
                    }
                }
            }
        }
    }

    /// What block `b` on class `c`'s free list is. `aligned`: also check that it lies on a
    /// block boundary (the walk; the allocation's hot path trusts the list that far, as it
    /// always did).
    pub(super) fn listed(&self, c: usize, b: u64, aligned: bool) -> Listed {
        let Some(idx) = self.chunk_of(b) else {
            return Listed::Damaged;
        };
        if aligned && (b - self.chunk_offset(idx)) % CLASS_SIZES[c] as u64 != 0 {
            return Listed::Damaged;
        }
        if !self
            .word(b)
            .is_ok_and(|w| Tag::from_word(w.load(R)).state == TAG_FREE)
        {
            return Listed::Damaged;
        }
        let e = self.s.st.mem.chunk_map()[idx as usize].load(R);
        if e == CHUNK_CLASS_BASE + c as u32 {
            Listed::Kept
        } else if draining_class(e) == Some(c) && e & CHUNK_DRAINING_COUNT != 0 {
            Listed::Draining(idx)
        } else {
            Listed::Damaged
        }
    }

    /// Caller holds the class lock and just unlinked a block of draining chunk `idx`, or freed
    /// (without linking it) a block of evacuating chunk `idx`: count it; the last one zeroes
    /// the chunk and frees it. Returns whether it did.
    pub(super) fn drained_one(&self, idx: u64) -> Result<bool> {
        let e = &self.s.st.mem.chunk_map()[idx as usize];
        let v = e.load(R);
        if v & CHUNK_DRAINING_COUNT > 1 {
            e.store(v - 1, REL);
            return Ok(false);
        }
        self.zero_chunks(idx, 1)?;
        crash_point!("alloc.chunk_zeroed");
        e.store(CHUNK_FREE, REL);
        crash_point!("alloc.chunk_released");
        Ok(true)
    }

    /// Caller holds class `c`'s lock: unlink draining blocks from the head of its free list,
    /// at most `max`. Returns the head then (0: empty) and whether it is still a draining
    /// block (`max` reached).
    pub(super) fn skip_draining_head(&self, c: usize, max: u32) -> Result<(u64, bool)> {
        let cls = &self.s.st.mem.header().classes[c];
        let mut head = cls.head.load(R);
        for _ in 0..max {
            if head == 0 {
                return Ok((0, false));
            }
            let Listed::Draining(idx) = self.listed(c, head, false) else {
                return Ok((head, false));
            };
            head = self.word(head + 8)?.load(R);
            cls.head.store(head, REL);
            crash_point!("alloc.drain_unlinked");
            self.drained_one(idx)?;
        }
        let draining = head != 0 && matches!(self.listed(c, head, false), Listed::Draining(_));
        Ok((head, draining))
    }

    /// Caller holds class `c`'s lock (recovery, a damaged list): zero and free every draining
    /// chunk of the class (every block of one is free), and make every evacuating one an
    /// ordinary chunk of the class again (the rebuild relinks its free blocks). Returns how
    /// many chunks were freed.
    pub(super) fn free_draining_chunks(&self, c: usize) -> Result<u64> {
        let map = self.s.st.mem.chunk_map();
        let mut n = 0;
        for (i, e) in map.iter().enumerate() {
            let v = e.load(R);
            if is_evacuating(v) && draining_class(v) == Some(c) {
                e.store(CHUNK_CLASS_BASE + c as u32, REL);
            } else if draining_class(v) == Some(c) {
                self.zero_chunks(i as u64, 1)?;
                e.store(CHUNK_FREE, REL);
                n += 1;
            }
        }
        Ok(n)
    }

    /// How many chunks of class `c` are draining.
    fn draining_chunks(&self, c: usize) -> u64 {
        let map = self.s.st.mem.chunk_map();
        map.iter()
            .filter(|e| draining_class(e.load(R)) == Some(c))
            .count() as u64
    }
}

/// Which classes have draining chunks (from the chunk map, without locks).
pub(super) fn classes_draining(map: &[std::sync::atomic::AtomicU32]) -> [bool; NUM_CLASSES] {
    let mut out = [false; NUM_CLASSES];
    for e in map {
        if let Some(c) = draining_class(e.load(R)) {
            if let Some(slot) = out.get_mut(c) {
                *slot = true;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::Allocator;
    use crate::layout::*;
    use crate::tests::TestStore;
    use crate::{Client, Config};

    fn draining(c: &Client) -> Vec<usize> {
        let map = c.st.mem.chunk_map();
        (0..map.len())
            .filter(|&i| draining_class(map[i].load(super::R)).is_some())
            .collect()
    }

    fn assert_verifies(c: &Client) {
        let r = c.verify().unwrap();
        assert!(r.is_ok(), "{:#?}", r.problems);
    }

    /// Run `f` with an allocator of `c`'s, holding `class`'s lock, given the class's all-free
    /// chunks (found before the lock).
    fn under_class_lock<T>(
        c: &Client,
        class: usize,
        f: impl FnOnce(&Allocator, Vec<u64>) -> T,
    ) -> T {
        let g = c.guard();
        let s = c.session_w(&g).unwrap();
        let a = Allocator::new(&s);
        let candidates = a.all_free_chunks(class).unwrap();
        let _l = s
            .guard_word(&c.st.mem.header().classes[class].lock)
            .unwrap();
        f(&a, candidates)
    }

    /// `n` records of one class written and removed, the writer's cache flushed: the class's
    /// chunks are all free. Returns the class.
    fn emptied_class(c: &Client, n: u32) -> usize {
        for i in 0..n {
            c.put(&i.to_le_bytes(), &[1u8; 100]).unwrap();
        }
        for i in 0..n {
            assert!(c.remove(&i.to_le_bytes()).unwrap());
        }
        let g = c.guard();
        let s = c.session_w(&g).unwrap();
        Allocator::new(&s).flush_cache().unwrap();
        class_for(record_size(4, 100)).unwrap()
    }

    /// Stage by stage, with writes in between: chunks marked draining verify clean (all their
    /// blocks free, their counts match the list), allocations that meet their blocks at the
    /// head unlink them instead of handing them out, and the walk gives every one back.
    #[test]
    fn chunks_drain_in_stages_that_verify_with_writes_between() {
        let t = TestStore::new("drain", Config::default().stripes(4));
        let c = t.client();
        let class = emptied_class(&c, 30_000);
        let chunks_before = c.st.mem.header().classes[class].chunks.load(super::R);
        let marked = under_class_lock(&c, class, |a, candidates| {
            assert!(
                candidates.len() >= 10,
                "{} all-free chunks",
                candidates.len()
            );
            for &i in &candidates {
                assert!(a.mark_draining(class, i).unwrap());
            }
            candidates
        });
        assert_eq!(
            draining(&c),
            marked.iter().map(|&i| i as usize).collect::<Vec<_>>()
        );
        assert_verifies(&c);
        let on_list = |c: &Client| -> u32 {
            let map = c.st.mem.chunk_map();
            draining(c)
                .iter()
                .map(|&i| map[i].load(super::R) & CHUNK_DRAINING_COUNT)
                .sum()
        };
        let before = on_list(&c);
        // The most recently freed blocks head the list: these puts meet draining blocks first.
        for i in 0..3000u32 {
            c.put(&(100_000 + i).to_le_bytes(), &[2u8; 100]).unwrap();
        }
        assert_verifies(&c);
        assert!(on_list(&c) < before, "no allocation met a draining block");
        let left = draining(&c).len() as u64;
        let freed = {
            let g = c.guard();
            let s = c.session_w(&g).unwrap();
            Allocator::new(&s).drain_walk(class).unwrap()
        };
        assert_eq!(freed, left, "the walk frees every chunk still draining");
        assert!(draining(&c).is_empty());
        assert_verifies(&c);
        let map = c.st.mem.chunk_map();
        for &i in &marked {
            let e = map[i as usize].load(super::R);
            if e == CHUNK_FREE {
                let base = c.st.chunk_base + i * CHUNK_SIZE;
                let words = c.st.mem.words(base, CHUNK_SIZE / 8).unwrap();
                assert!(
                    words.iter().all(|w| w.load(super::R) == 0),
                    "chunk {i} not zero"
                );
            } else {
                // Carved again for the puts above.
                assert_eq!(e, CHUNK_CLASS_BASE + class as u32);
            }
        }
        assert!(c.st.mem.header().classes[class].chunks.load(super::R) < chunks_before);
        for i in 0..3000u32 {
            let v = c.get(&(100_000 + i).to_le_bytes()).unwrap();
            assert_eq!(v.as_deref(), Some(&[2u8; 100][..]));
        }
    }

    /// The scan for all-free chunks takes no lock: a chunk that a writer used since is not
    /// marked (the check under the lock reads its tags again).
    #[test]
    fn a_chunk_used_after_the_scan_is_not_marked() {
        let t = TestStore::new("drainrecheck", Config::default().stripes(4));
        let c = t.client();
        let class = emptied_class(&c, 20_000);
        let candidates = {
            let g = c.guard();
            let s = c.session_w(&g).unwrap();
            Allocator::new(&s).all_free_chunks(class).unwrap()
        };
        assert!(candidates.len() > 2);
        // Writes take blocks from the head of the list: the chunks of the last blocks freed.
        for i in 0..10u32 {
            c.put(&(70_000 + i).to_le_bytes(), &[6u8; 100]).unwrap();
        }
        let g = c.guard();
        let s = c.session_w(&g).unwrap();
        let a = Allocator::new(&s);
        let now_free = a.all_free_chunks(class).unwrap();
        let used: Vec<u64> = candidates
            .iter()
            .copied()
            .filter(|i| !now_free.contains(i))
            .collect();
        assert!(
            !used.is_empty(),
            "the writes used none of the scanned chunks"
        );
        let _l = s
            .guard_word(&c.st.mem.header().classes[class].lock)
            .unwrap();
        for &i in &candidates {
            assert_eq!(
                a.mark_draining(class, i).unwrap(),
                !used.contains(&i),
                "chunk {i}"
            );
        }
    }

    /// Recovery's rebuild (a lock owner died mid-drain) gives every draining chunk back whole.
    #[test]
    fn a_rebuild_frees_draining_chunks() {
        let t = TestStore::new("drainrebuild", Config::default().stripes(4));
        let c = t.client();
        let class = emptied_class(&c, 20_000);
        under_class_lock(&c, class, |a, candidates| {
            for &i in &candidates[..candidates.len() / 2] {
                assert!(a.mark_draining(class, i).unwrap());
            }
            // Half of one walk's worth unlinked, as a walker killed in its first hold leaves.
            a.skip_draining_head(class, 500).unwrap();
            assert!(!draining(&c).is_empty());
            a.rebuild_class(class).unwrap();
        });
        assert!(draining(&c).is_empty());
        assert_verifies(&c);
        c.put(b"after", &[3u8; 100]).unwrap();
        assert_verifies(&c);
    }

    /// Draining chunks left by a walker that died between two holds (no lock owner to
    /// recover) are finished by the next reclaim pass, even in a class with too few free
    /// blocks to be looked at otherwise.
    #[test]
    fn a_pass_finishes_chunks_a_dead_walker_left_draining() {
        let t = TestStore::new("drainleft", Config::default().stripes(4));
        let c = t.client();
        let class = emptied_class(&c, 20_000);
        under_class_lock(&c, class, |a, candidates| {
            for &i in &candidates {
                assert!(a.mark_draining(class, i).unwrap());
            }
        });
        // Every all-free chunk is draining: the class's usable free blocks are few (below the
        // pass's threshold of two chunks' worth). A few writes meanwhile.
        let cls = &c.st.mem.header().classes[class];
        assert!(cls.free_count.load(super::R) < 2 * CHUNK_SIZE / CLASS_SIZES[class] as u64);
        for i in 0..20u32 {
            c.put(&(50_000 + i).to_le_bytes(), &[4u8; 100]).unwrap();
        }
        assert!(!draining(&c).is_empty());
        assert_verifies(&c);
        c.compact_pass().unwrap();
        assert!(draining(&c).is_empty());
        assert_verifies(&c);
    }

    /// What the host's reclaim pass calls: every all-free chunk of the class comes back, and
    /// nothing of the class is left draining.
    #[test]
    fn a_release_gives_back_every_all_free_chunk() {
        let t = TestStore::new("drainall", Config::default().stripes(4));
        let c = t.client();
        let class = emptied_class(&c, 30_000);
        let g = c.guard();
        let s = c.session_w(&g).unwrap();
        let a = Allocator::new(&s);
        let all_free = a.all_free_chunks(class).unwrap().len() as u64;
        assert_eq!(a.release_class_chunks(class, false).unwrap(), all_free);
        assert!(a.all_free_chunks(class).unwrap().is_empty());
        assert!(draining(&c).is_empty());
        drop(g);
        assert_verifies(&c);
    }
}
