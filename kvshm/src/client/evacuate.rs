//! Compaction of sparse chunks (issue 12: a partly used chunk must not pin its memory
//! forever). The host's reclaim pass picks, in a size class with much free room, the chunks
//! whose blocks are mostly free, marks them EVACUATING (`alloc/drain.rs`: their free blocks
//! leave the free list, none is handed out or linked again) and moves every record out of
//! them, one transaction per record: a copy in a block elsewhere, the key's index entry
//! swapped to it under the stripe lock, the old block freed after the commit (the key's
//! version, expiry and value do not change; readers see the old or the new copy, as with any
//! write). A chunk holding a stripe's table gets the table rebuilt elsewhere. The chunk goes
//! back to the pool when its last block is freed. Crash safety is the transaction's: a move
//! killed before its commit rolls back (the new block is freed), after it completes; a dead
//! class-lock owner's recovery makes evacuating chunks ordinary ones again.

use crate::alloc::Allocator;
use crate::client::write::WriteOp;
use crate::error::{Error, Result};
use crate::index;
use crate::layout::*;
use crate::txn::{self, Txn};
use crate::Client;

const R: std::sync::atomic::Ordering = std::sync::atomic::Ordering::Relaxed;

/// Most chunks of one class evacuating at a time.
const EVAC_BATCH: usize = 4;
/// A chunk is sparse when at most 1 in `SPARSE` of its blocks is in use.
const SPARSE: u64 = 4;
/// Most blocks one pass tries to move (each a transaction of a microsecond or two: a pass
/// takes the host's thread for tens of milliseconds at most, once per reclaim period).
const MOVE_BUDGET: u64 = 16_384;

/// What one evacuation pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Evacuated {
    /// Chunks marked evacuating by this pass.
    pub started: u64,
    /// Records (and tables) moved out of evacuating chunks.
    pub moved: u64,
}

impl Client {
    /// One evacuation pass over every size class (the host's reclaim pass runs it): classes
    /// holding at least two chunks' worth of free blocks start evacuating their sparsest
    /// chunks (at most [`EVAC_BATCH`] each, and only as many as the rest of the class has room
    /// for), and every evacuating chunk's blocks in use are moved out.
    pub(crate) fn evacuate_pass(&self) -> Result<Evacuated> {
        let mut out = Evacuated::default();
        let mut budget = MOVE_BUDGET;
        let h = self.st.mem.header();
        // One scan of the chunk map for every class (a pass with nothing to do, the usual
        // case, costs one load per committed chunk); a class's list is read again only after
        // it changed.
        let mut evacuating = self.evacuating_chunks();
        for (d, &size) in CLASS_SIZES.iter().enumerate() {
            let per_chunk = CHUNK_SIZE / size as u64;
            loop {
                // A chunk can wait long for its last blocks (a block cached by an idle
                // writer): at most EVAC_BATCH per class at a time.
                let pending = evacuating[d].len();
                let mut started = 0;
                if pending < EVAC_BATCH && h.classes[d].free_count.load(R) >= 2 * per_chunk {
                    started = self.start_evacuation(d, EVAC_BATCH - pending)?;
                    if started > 0 {
                        evacuating[d] = self.evacuating_chunks_of(d);
                    }
                }
                let mut moved = 0;
                for &idx in &evacuating[d] {
                    moved += self.evacuate_chunk(d, idx, &mut budget)?;
                }
                if moved > 0 {
                    // The old blocks went into this client's block cache: back to their
                    // chunks now, which lets the emptied chunks go.
                    let g = self.guard();
                    let sess = self.session_w(&g)?;
                    Allocator::new(&sess).flush_cache()?;
                }
                out.started += started;
                out.moved += moved;
                if (started == 0 && moved == 0) || budget == 0 {
                    break;
                }
                evacuating[d] = self.evacuating_chunks_of(d);
            }
            if budget == 0 {
                break;
            }
        }
        if out.moved > 0 {
            log::debug!(
                "evacuation: {} chunk(s) started, {} block(s) moved",
                out.started,
                out.moved
            );
        }
        Ok(out)
    }

    /// Committed chunks (no chunk past the committed length is in use: the map's tail,
    /// up to the reserve, is not scanned).
    fn committed_chunks(&self) -> usize {
        let committed = self.st.mem.committed().saturating_sub(self.st.chunk_base) / CHUNK_SIZE;
        (committed as usize).min(self.st.mem.chunk_map().len())
    }

    /// Evacuating chunks of every class, by class.
    fn evacuating_chunks(&self) -> Vec<Vec<u64>> {
        let map = self.st.mem.chunk_map();
        let mut out = vec![Vec::new(); NUM_CLASSES];
        for (i, e) in map[..self.committed_chunks()].iter().enumerate() {
            let e = e.load(R);
            if is_evacuating(e) {
                if let Some(d) = draining_class(e).filter(|&d| d < NUM_CLASSES) {
                    out[d].push(i as u64);
                }
            }
        }
        out
    }

    /// Chunk indexes of class `d` that are evacuating.
    fn evacuating_chunks_of(&self, d: usize) -> Vec<u64> {
        let map = self.st.mem.chunk_map();
        (0..self.committed_chunks() as u64)
            .filter(|&i| {
                let e = map[i as usize].load(R);
                is_evacuating(e) && draining_class(e) == Some(d)
            })
            .collect()
    }

    /// Choose and mark the sparsest chunks of class `d`. Returns how many were marked.
    fn start_evacuation(&self, d: usize, most: usize) -> Result<u64> {
        let size = CLASS_SIZES[d] as u64;
        let per_chunk = CHUNK_SIZE / size;
        let map = self.st.mem.chunk_map();
        let committed = self.st.mem.committed().saturating_sub(self.st.chunk_base) / CHUNK_SIZE;
        // (blocks in use, chunk), read without a lock: candidates only.
        let mut sparse = Vec::new();
        for idx in 0..committed.min(map.len() as u64) {
            if map[idx as usize].load(R) != CHUNK_CLASS_BASE + d as u32 {
                continue;
            }
            let base = self.st.chunk_base + idx * CHUNK_SIZE;
            let mut used = 0;
            for b in 0..per_chunk {
                if Tag::from_word(self.st.mem.word(base + b * size)?.load(R)).state != TAG_FREE {
                    used += 1;
                }
            }
            // All-free chunks are the release's; sparse ones are ours.
            if used > 0 && used * SPARSE <= per_chunk {
                sparse.push((used, idx));
            }
        }
        sparse.sort_unstable();
        // Room for what is moved: the class's free blocks outside the chosen chunks.
        let mut room = self.st.mem.header().classes[d].free_count.load(R);
        let mut chosen = Vec::new();
        for (used, idx) in sparse.into_iter().take(most) {
            let free_here = per_chunk - used;
            if room < free_here + used {
                break;
            }
            room -= free_here + used;
            chosen.push(idx);
        }
        if chosen.is_empty() {
            return Ok(0);
        }
        let g = self.guard();
        let sess = self.session_w(&g)?;
        let alloc = Allocator::new(&sess);
        let mut marked = 0;
        {
            let _l = sess.guard_word(&self.st.mem.header().classes[d].lock)?;
            for &idx in &chosen {
                marked += u64::from(alloc.mark_evacuating(d, idx)?);
            }
        }
        // Writers hand their cached blocks back at their next write (some may be in these
        // chunks), and the chunks' free blocks leave the list.
        self.st.mem.header().cache_flush.fetch_add(1, R);
        alloc.drain_class(d)?;
        Ok(marked)
    }

    /// Move every block in use out of evacuating chunk `idx` of class `d`. Returns how many
    /// moved (blocks that are neither a record nor a table stay: the chunk goes back when
    /// they are freed).
    fn evacuate_chunk(&self, d: usize, idx: u64, budget: &mut u64) -> Result<u64> {
        let size = CLASS_SIZES[d] as u64;
        let base = self.st.chunk_base + idx * CHUNK_SIZE;
        // Which stripe's table lies in this chunk, if any (a hint: checked again under the
        // stripe's lock).
        let tables: std::collections::HashMap<u64, usize> = (0..self.st.mem.stripe_count())
            .map(|s| (self.st.mem.stripe(s).table.load(R) & TABLE_OFFSET_MASK, s))
            .filter(|&(t, _)| t >= base && t < base + CHUNK_SIZE)
            .collect();
        let mut moved = 0;
        for b in 0..CHUNK_SIZE / size {
            let off = base + b * size;
            if Tag::from_word(self.st.mem.word(off)?.load(R)).state != TAG_LIVE {
                continue;
            }
            if *budget == 0 {
                break;
            }
            *budget -= 1;
            let r = match tables.get(&off) {
                Some(&s) => self.move_table(s, off),
                None => self.move_record(off),
            };
            match r {
                Ok(true) => moved += 1,
                Ok(false) => {}
                // No room elsewhere, or a replica's store: the rest waits for a later pass.
                Err(Error::StoreFull { .. } | Error::ReadOnly) => break,
                Err(e) => return Err(e),
            }
        }
        Ok(moved)
    }

    /// Move the record at `off` to a new block. Returns whether it did (false: no record of
    /// the index is there).
    fn move_record(&self, off: u64) -> Result<bool> {
        self.with_record_at(off, |txn, s, hash, key| {
            let (klen, vlen) = self.st.record_lens(off)?;
            let size = record_size(klen as u64, vlen as u64);
            let new = txn.alloc(size)?;
            // Everything after the tag: lengths, version, meta, key, value.
            let words = (size - 8) / 8;
            let (src, dst) = (
                self.st.mem.words(off + 8, words)?,
                self.st.mem.words(new + 8, words)?,
            );
            for (d, w) in dst.iter().zip(src) {
                d.store(w.load(R), R);
            }
            index::relocate(txn, s, hash, key, off, new)
        })
    }

    /// Rebuild stripe `s`'s table (at `off`) elsewhere. Returns whether it moved.
    fn move_table(&self, s: usize, off: u64) -> Result<bool> {
        let g = self.guard();
        let sess = self.session_w(&g)?;
        let txn = Txn::begin(&sess, txn::log_entries_compact())?;
        let mut moved = false;
        self.apply_locked(&sess, txn, &[s], WriteOp::Many, |txn| {
            if self.st.mem.stripe(s).table.load(R) & TABLE_OFFSET_MASK != off {
                return Ok(());
            }
            moved = index::relocate_table(txn, s)?;
            Ok(())
        })?;
        Ok(moved)
    }
}

#[cfg(test)]
mod tests {
    use crate::layout::*;
    use crate::tests::TestStore;
    use crate::{Client, Config};

    fn assert_verifies(c: &Client) {
        let r = c.verify().unwrap();
        assert!(r.is_ok(), "{:#?}", r.problems);
    }

    fn chunks_of(c: &Client, class: usize) -> usize {
        let map = c.st.mem.chunk_map();
        map.iter()
            .filter(|e| {
                let e = e.load(super::R);
                e == CHUNK_CLASS_BASE + class as u32 || draining_class(e) == Some(class)
            })
            .count()
    }

    /// A stripe's table found in an evacuating chunk is rebuilt elsewhere, its keys intact;
    /// a block that is no record of the index is left where it is.
    #[test]
    fn a_table_moves_and_a_non_record_stays() {
        let t = TestStore::new("evactable", Config::default().stripes(4));
        let c = t.client();
        for i in 0..500u32 {
            c.put(&i.to_le_bytes(), &[7u8; 50]).unwrap();
        }
        let table = c.st.mem.stripe(1).table.load(super::R) & TABLE_OFFSET_MASK;
        assert!(c.move_table(1, table).unwrap());
        let now = c.st.mem.stripe(1).table.load(super::R) & TABLE_OFFSET_MASK;
        assert_ne!(now, table);
        // The old offset is no stripe's table any more: nothing to do.
        assert!(!c.move_table(1, table).unwrap());
        // A table is no record: `move_record` leaves it.
        assert!(!c.move_record(now).unwrap());
        for i in 0..500u32 {
            assert_eq!(c.get(&i.to_le_bytes()).unwrap(), Some(vec![7u8; 50]));
        }
        assert_verifies(&c);
    }

    /// Nine in ten keys removed, every tenth kept: each chunk of the class stays a tenth
    /// used, none all free. Evacuation passes move the survivors together: the class ends
    /// with a fraction of its chunks, every kept key reads back with its value and version,
    /// and verify is clean after every pass.
    #[test]
    fn sparse_chunks_are_emptied_and_keys_keep_value_and_version() {
        let t = TestStore::new("evac", Config::default().stripes(16));
        let c = t.client();
        let n = 40_000u32;
        for i in 0..n {
            c.put(&i.to_le_bytes(), &[(i % 251) as u8; 100]).unwrap();
        }
        let class = class_for(record_size(4, 100)).unwrap();
        for i in (0..n).filter(|i| i % 10 != 0) {
            assert!(c.remove(&i.to_le_bytes()).unwrap());
        }
        let versions: Vec<u64> = (0..n)
            .step_by(10)
            .map(|i| c.get_versioned(&i.to_le_bytes()).unwrap().unwrap().1)
            .collect();
        let before = chunks_of(&c, class);
        let h = t.client();
        let mut moved = 0;
        for _ in 0..40 {
            // (Not `reclaim_pass`: no hole punching under Wine, where this test runs too.)
            let p = h.compact_pass().unwrap();
            assert_verifies(&c);
            moved += p.moved;
            if p.moved == 0 {
                break;
            }
        }
        // Each survivor moves about once (a move never lands in a chunk being emptied).
        assert!(
            moved <= u64::from(n / 10),
            "{moved} moves for {} records",
            n / 10
        );
        let after = chunks_of(&c, class);
        assert!(
            after * 3 <= before,
            "class chunks {before} -> {after}: the sparse ones were not emptied"
        );
        for (j, i) in (0..n).step_by(10).enumerate() {
            let (v, ver) = c.get_versioned(&i.to_le_bytes()).unwrap().unwrap();
            assert_eq!(v, vec![(i % 251) as u8; 100], "key {i}");
            assert_eq!(ver, versions[j], "key {i}: version changed by the move");
        }
        // And it is still an ordinary store.
        for i in 0..1000u32 {
            c.put(&(n + i).to_le_bytes(), &[1u8; 100]).unwrap();
        }
        assert_verifies(&c);
    }
}
