//! Memory back to the OS (issue 12). A free chunk is first marked COOLING (still free: any
//! claimer takes it as a FREE one); one reclaim pass later, if nobody claimed it meanwhile, it
//! is punched: its pages go back to the OS and its map entry says PUNCHED. A claim that finds
//! no FREE chunk allocates punched ones again before the store grows.
//!
//! Why two passes: a reader may still hold an offset into a chunk from before its blocks were
//! freed (it will retry, its seqlock saw the change), and reading a hole in a tmpfs file
//! allocates a page, which fails with SIGBUS when the tmpfs is full. A reclaim period (1 s
//! when the host runs it) between freeing and punching leaves such readers long gone.
//!
//! Punching and re-allocating happen under the grow lock (an OFD byte lock, released when its
//! holder dies), with the chunk's entry RECLAIMING meanwhile: no claimer takes it. A
//! RECLAIMING entry found by the next holder was left by a dead one; both operations are
//! idempotent, so it is punched again and made PUNCHED.

use std::sync::atomic::Ordering;

use crate::crash_point;
use crate::error::Result;
use crate::layout::*;
use crate::segment;
use crate::store::Store;

const R: Ordering = Ordering::Relaxed;
const REL: Ordering = Ordering::Release;

/// Whether a chunk-map entry means "free, claimable now" (zero-filled and backed).
#[inline]
pub(crate) fn claimable(e: u32) -> bool {
    e == CHUNK_FREE || e == CHUNK_COOLING
}

/// Whether a chunk-map entry means "free" in any form (claimable, punched, or being
/// reclaimed).
#[inline]
pub(crate) fn is_free_entry(e: u32) -> bool {
    claimable(e) || e == CHUNK_PUNCHED || e == CHUNK_RECLAIMING
}

/// What one reclaim pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReclaimPass {
    /// Chunks whose pages went back to the OS (marked by the previous pass).
    pub punched: u64,
    /// All-free chunks of size classes given back to the chunk pool.
    pub released: u64,
    /// Free chunks marked for the next pass.
    pub marked: u64,
    /// Records (and tables) moved out of sparse chunks, which then go back to the pool
    /// (`client/evacuate.rs`).
    pub moved: u64,
}

/// Chunks punched per hold of the grow lock.
const PUNCH_BATCH: u64 = 8;

impl Store {
    fn committed_chunks(&self) -> usize {
        let n = self.mem.committed().saturating_sub(self.chunk_base) / CHUNK_SIZE;
        (n as usize).min(self.mem.chunk_map().len())
    }

    fn chunk_range(&self, idx: usize) -> (u64, u64) {
        let off = self.chunk_base + idx as u64 * CHUNK_SIZE;
        (off, off + CHUNK_SIZE)
    }

    /// Run `f` holding the grow lock, after finishing what a dead holder left RECLAIMING.
    pub(crate) fn with_grow_lock<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let _local = self.grow_mutex.lock().unwrap_or_else(|p| p.into_inner());
        segment::ofd_lock_wait(&self.file, segment::GROW_LOCK_BYTE)?;
        let r = self.finish_reclaiming().and_then(|()| f());
        segment::ofd_unlock(&self.file, segment::GROW_LOCK_BYTE);
        r
    }

    /// Caller holds the grow lock: RECLAIMING entries are a dead holder's; punch them (again)
    /// and make them PUNCHED.
    fn finish_reclaiming(&self) -> Result<()> {
        let map = self.mem.chunk_map();
        for (i, e) in map.iter().enumerate().take(self.committed_chunks()) {
            if e.load(R) == CHUNK_RECLAIMING {
                let (from, to) = self.chunk_range(i);
                segment::punch_hole(&self.file, from, to)?;
                e.store(CHUNK_PUNCHED, REL);
                log::debug!("chunk {i}: reclaim left by a dead process finished");
            }
        }
        Ok(())
    }

    /// Give the pages of every COOLING chunk back to the OS. Returns how many.
    pub(crate) fn punch_cooling(&self) -> Result<u64> {
        let map = self.mem.chunk_map();
        if !map
            .iter()
            .take(self.committed_chunks())
            .any(|e| e.load(R) == CHUNK_COOLING)
        {
            return Ok(0);
        }
        // The grow lock is taken for at most PUNCH_BATCH punches at a time: a writer that
        // needs a punched chunk back (or must grow) waits for one small batch, not for a whole
        // pass (after a mass expiry one pass punched 600 chunks).
        let mut n = 0;
        let mut next = 0usize;
        let end = self.committed_chunks();
        while next < end {
            let (done, at) = self.with_grow_lock(|| {
                let mut done = 0u64;
                let mut i = next;
                while i < end && done < PUNCH_BATCH {
                    let e = &map[i];
                    i += 1;
                    if e.compare_exchange(CHUNK_COOLING, CHUNK_RECLAIMING, Ordering::AcqRel, R)
                        .is_err()
                    {
                        continue; // claimed meanwhile, or not cooling
                    }
                    crash_point!("reclaim.punching");
                    let (from, to) = self.chunk_range(i - 1);
                    if let Err(e2) = segment::punch_hole(&self.file, from, to) {
                        e.store(CHUNK_COOLING, REL); // still backed and zero
                        return Err(e2);
                    }
                    e.store(CHUNK_PUNCHED, REL);
                    done += 1;
                }
                Ok((done, i))
            })?;
            n += done;
            next = at;
        }
        Ok(n)
    }

    /// Mark FREE chunks COOLING, highest first, leaving `keep_chunks` claimable ones. Returns
    /// how many it marked.
    pub(crate) fn mark_cooling(&self, keep_chunks: u64) -> u64 {
        let map = &self.mem.chunk_map()[..self.committed_chunks()];
        let claimable_now = map.iter().filter(|e| claimable(e.load(R))).count() as u64;
        let mut excess = claimable_now.saturating_sub(keep_chunks);
        let mut marked = 0;
        for e in map.iter().rev() {
            if excess == 0 {
                break;
            }
            match e.load(R) {
                CHUNK_COOLING => excess -= 1,
                CHUNK_FREE if e.compare_exchange(CHUNK_FREE, CHUNK_COOLING, R, R).is_ok() => {
                    marked += 1;
                    excess -= 1;
                }
                _ => {}
            }
        }
        marked
    }

    /// Allocate punched chunks again so a claim of `k` chunks below chunk `limit` can succeed
    /// without growing: the first run of `k` chunks that are each free in some form, at least
    /// one of them PUNCHED. Returns whether it made any chunk claimable.
    pub(crate) fn back_punched(&self, k: u64, limit: u64) -> Result<bool> {
        let map = self.mem.chunk_map();
        let limit = (limit as usize).min(map.len());
        if !map[..limit].iter().any(|e| e.load(R) == CHUNK_PUNCHED) {
            return Ok(false);
        }
        self.with_grow_lock(|| {
            let mut run = 0u64;
            let mut found = None;
            for (i, e) in map[..limit].iter().enumerate() {
                let e = e.load(R);
                if claimable(e) || e == CHUNK_PUNCHED {
                    run += 1;
                    if run == k {
                        let start = i + 1 - k as usize;
                        if map[start..=i].iter().any(|e| e.load(R) == CHUNK_PUNCHED) {
                            found = Some(start);
                            break;
                        }
                        run -= 1; // slide: the window's first chunk drops out
                    }
                } else {
                    run = 0;
                }
            }
            let Some(start) = found else {
                return Ok(false);
            };
            let ours: Vec<usize> = (start..start + k as usize)
                .filter(|&i| {
                    map[i]
                        .compare_exchange(CHUNK_PUNCHED, CHUNK_RECLAIMING, Ordering::AcqRel, R)
                        .is_ok()
                })
                .collect();
            for (n, &i) in ours.iter().enumerate() {
                let (from, to) = self.chunk_range(i);
                if let Err(e) = segment::allocate(&self.file, from, to) {
                    for &j in &ours[n..] {
                        map[j].store(CHUNK_PUNCHED, REL);
                    }
                    // Those already backed stay claimable.
                    for &j in &ours[..n] {
                        map[j].store(CHUNK_FREE, REL);
                    }
                    return Err(e);
                }
                crash_point!("reclaim.backing");
                map[i].store(CHUNK_FREE, REL);
            }
            if !ours.is_empty() {
                log::debug!("{} punched chunk(s) allocated again", ours.len());
            }
            Ok(true)
        })
    }

    /// Bytes of punched chunks (given back to the OS).
    pub(crate) fn returned_bytes(&self) -> u64 {
        let map = self.mem.chunk_map();
        map.iter()
            .take(self.committed_chunks())
            .filter(|e| matches!(e.load(R), CHUNK_PUNCHED | CHUNK_RECLAIMING))
            .count() as u64
            * CHUNK_SIZE
    }
}
