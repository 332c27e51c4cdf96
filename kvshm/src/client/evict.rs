//! Eviction (issue 14, second half): a store at its maximum size makes room instead of failing.
//!
//! The policy lives in the segment (`Header::eviction`), so every process evicts the same way,
//! host or not. A write that meets `StoreFull` under an evicting policy has changed nothing and
//! holds no lock (every write path rolls back and unlocks on an error); [`Client::with_room`]
//! then evicts a batch and runs the write again. Taking victims' stripe locks while still
//! holding the writer's would need a lock order across unrelated keys; releasing first needs
//! none. Each victim batch is one transaction under one stripe lock, like the expiry pass:
//! crash-safe by the same log (crash point `evict.removed_one`).
//!
//! Victims, by policy (Redis's names):
//! - `allkeys-lru`, `volatile-lru`: CLOCK. A hit sets the record's reference bit (in its tag,
//!   one CAS, only when clear: no write once set); the sweep, under the stripe lock, clears a
//!   set bit and evicts a record whose bit is clear. The hand (`Header::evict_hand`) is a
//!   stripe number shared by all processes: stripes are visited in turn, every record of a
//!   visited stripe is looked at.
//! - `allkeys-random`, `volatile-random`: the records the hand meets, bits ignored.
//! - `volatile-ttl`: in each stripe visited, the record that expires first.
//! - `volatile-*` evict only keys that have an expiry; with none left the write fails.
//!
//! Which memory: a record of size class `c` needs a free block of class `c`, so the sweep takes
//! only records in blocks of that class while the class holds any. A class with no live record
//! to give (a new value size, or a record bigger than a chunk) gets whole chunks instead: the
//! records of chunks of other classes are evicted chunk by chunk until they are all free and
//! the allocator takes them back (memcached's slab rebalancing, done on demand).

use std::sync::atomic::Ordering;

use super::{Client, WriteOp};
use crate::alloc::Allocator;
use crate::crash_point;
use crate::error::{Error, Result};
use crate::index;
use crate::layout::*;
use crate::txn::{self, Txn};

const R: Ordering = Ordering::Relaxed;

/// What an evicting store does when it is full (Redis's `maxmemory-policy` names).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Policy {
    /// Writes fail with `StoreFull` (the default).
    #[default]
    NoEviction = 0,
    /// Evict any key, least recently used first (CLOCK approximation).
    AllKeysLru = 1,
    /// Evict keys that have an expiry, least recently used first.
    VolatileLru = 2,
    /// Evict any key.
    AllKeysRandom = 3,
    /// Evict keys that have an expiry, the one expiring soonest first (per stripe visited).
    VolatileTtl = 4,
    /// Evict any key that has an expiry.
    VolatileRandom = 5,
}

impl Policy {
    /// Every policy, in code order.
    pub const ALL: [Policy; 6] = [
        Policy::NoEviction,
        Policy::AllKeysLru,
        Policy::VolatileLru,
        Policy::AllKeysRandom,
        Policy::VolatileTtl,
        Policy::VolatileRandom,
    ];

    /// Redis's name of the policy (`allkeys-lru`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Policy::NoEviction => "noeviction",
            Policy::AllKeysLru => "allkeys-lru",
            Policy::VolatileLru => "volatile-lru",
            Policy::AllKeysRandom => "allkeys-random",
            Policy::VolatileTtl => "volatile-ttl",
            Policy::VolatileRandom => "volatile-random",
        }
    }

    /// The policy stored as `code` in the header (an unknown code evicts nothing).
    pub fn from_code(code: u64) -> Policy {
        Policy::ALL
            .into_iter()
            .find(|p| *p as u64 == code)
            .unwrap_or(Policy::NoEviction)
    }

    fn volatile_only(self) -> bool {
        const _: () = assert!(eviction_is_lru(Policy::AllKeysLru as u64));
        const _: () = assert!(eviction_is_lru(Policy::VolatileLru as u64));
        matches!(
            self,
            Policy::VolatileLru | Policy::VolatileTtl | Policy::VolatileRandom
        )
    }
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Policy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Policy> {
        Policy::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "unknown eviction policy {s:?} (one of: {})",
                    Policy::ALL.map(Policy::name).join(", ")
                ))
            })
    }
}

/// Records evicted at most per transaction (bounds the log and the lock hold).
const EVICT_BATCH: usize = 16;
/// Records an eviction round tries to free before the write runs again (at most a chunk's
/// worth): a full store under steady inserts evicts in batches rather than one sweep per write.
const EVICT_TARGET: u64 = 16;
/// What a referenced record adds to the cost of emptying its chunk, beyond its own eviction.
const REFERENCED_COST: u64 = 3;
/// Chunks whose blocks one eviction round reads to choose the chunks it empties.
const SCAN_CHUNKS: usize = 256;
/// Chunk windows tried, cheapest first, before an eviction round gives up.
const MAX_WINDOWS: usize = 8;
/// Eviction rounds one write may need before it gives up (other processes may take what a
/// round freed; each round frees at least one record or the write fails at once).
const MAX_ROUNDS: u32 = 64;

impl Client {
    /// The store's eviction policy.
    pub fn eviction(&self) -> Policy {
        Policy::from_code(self.st.mem.header().eviction.load(R))
    }

    /// Set the store's eviction policy, for every process at once (the host sets it at start
    /// from `--eviction`; RESP's `CONFIG SET maxmemory-policy` comes here).
    pub fn set_eviction(&self, policy: Policy) -> Result<()> {
        self.session()?;
        let old = self
            .st
            .mem
            .header()
            .eviction
            .swap(policy as u64, Ordering::AcqRel);
        if old != policy as u64 {
            log::info!(
                "eviction policy of {}: {} -> {policy}",
                self.st.path.display(),
                Policy::from_code(old)
            );
        }
        Ok(())
    }

    /// Keys evicted from this store since it was created (every process).
    pub fn evicted(&self) -> u64 {
        self.st.mem.header().evicted.load(R)
    }

    /// Run the write `op`; if it fails with `StoreFull` and the policy evicts, evict a batch
    /// and run it again. `op` changed nothing when it failed (writes are all or nothing), so
    /// running it again is sound, but it may run more than once.
    // The first attempt inline, the rest out of line: as one generic loop this was a call
    // with ~50 instructions of its own on every write's path (callgrind, ops_driver put).
    #[inline(always)]
    pub(crate) fn with_room<T>(&self, mut op: impl FnMut() -> Result<T>) -> Result<T> {
        crate::alloc::take_full();
        match op() {
            Err(Error::StoreFull { hint }) => self.with_room_after(hint, op),
            r => r,
        }
    }

    /// [`Client::with_room`] once the first attempt failed with `StoreFull { hint }`.
    #[inline(never)]
    fn with_room_after<T>(
        &self,
        mut hint: &'static str,
        mut op: impl FnMut() -> Result<T>,
    ) -> Result<T> {
        let mut rounds = 0;
        let mut grown = 0;
        loop {
            if hint == crate::alloc::GROW_FIRST {
                // Nothing changed; grow by what the write needs, holding no lock, and run it
                // again (at worst the store is at its maximum: the next attempt, growing under
                // its lock, then meets StoreFull as any write would).
                grown += 1;
                let need = crate::alloc::take_full().next_multiple_of(CHUNK_SIZE);
                let to = self.st.mem.committed().saturating_add(need);
                if self.st.grow(to).is_err() {
                    grown = 2;
                }
            } else {
                let policy = self.eviction();
                if policy == Policy::NoEviction {
                    return Err(Error::StoreFull { hint });
                }
                if rounds == MAX_ROUNDS {
                    return Err(Error::StoreFull {
                        hint: "eviction could not keep room for this write",
                    });
                }
                rounds += 1;
                let size = crate::alloc::take_full().max(MIN_CLASS_SIZE as u64);
                if self.evict_for(policy, size)? == 0 {
                    return Err(Error::StoreFull {
                        hint: "nothing left that the eviction policy may evict",
                    });
                }
            }
            crate::alloc::take_full();
            // After two growths lost to other writers, the last attempt grows under its lock
            // (the thread-local that says so is touched only then).
            let r = if grown < 2 {
                op()
            } else {
                crate::alloc::with_grow_outside(false, &mut op)
            };
            match r {
                Err(Error::StoreFull { hint: h }) => hint = h,
                r => return r,
            }
        }
    }

    /// Evict records to make room for a block of `size` bytes under `policy`. Returns how many
    /// were evicted (0: nothing the policy may evict).
    pub(crate) fn evict_for(&self, policy: Policy, size: u64) -> Result<u64> {
        let class = class_for(size);
        // A batch of small records, but never more than about a chunk's worth of big ones (16
        // values of 100 KB would be a third of a small store).
        let target = (CHUNK_SIZE / size.max(1)).clamp(1, EVICT_TARGET);
        if let Some(c) = class {
            let cls = &self.st.mem.header().classes[c];
            let blocks = cls.chunks.load(R) * (CHUNK_SIZE / CLASS_SIZES[c] as u64);
            if blocks > cls.free_count.load(R) {
                let n = self.sweep(policy, Some(c), target)?;
                if n > 0 {
                    return Ok(n);
                }
            }
        }
        let chunks = match class {
            Some(_) => 1,
            None => size.div_ceil(CHUNK_SIZE),
        };
        // Nothing else: no chunk can be emptied (each holds a table, a slot page or a key the
        // policy keeps), and the write fails with StoreFull.
        self.empty_chunks(policy, class, chunks)
    }

    /// Move the CLOCK hand over stripes, evicting up to `target` records (of class `class`
    /// when given). Gives up after two turns of the hand (the first may only clear bits).
    fn sweep(&self, policy: Policy, class: Option<usize>, target: u64) -> Result<u64> {
        let stripes = self.st.mem.stripe_count() as u64;
        let hand = &self.st.mem.header().evict_hand;
        let (mut evicted, mut seen) = (0, 0);
        for visit in 0..2 * stripes {
            // A whole turn that met no record the sweep may take (the class's blocks are index
            // tables, or its keys have no TTL under a volatile policy): a second is no better.
            if evicted >= target || (visit == stripes && seen == 0) {
                break;
            }
            let s = (hand.fetch_add(1, R) % stripes) as usize;
            let (n, m) = self.evict_stripe(s, policy, class, (target - evicted) as usize)?;
            evicted += n;
            seen += m;
        }
        Ok(evicted)
    }

    /// One transaction on stripe `s`: evict up to `max` of its records under `policy`, going
    /// on from the stripe's own CLOCK hand (`Stripe::clock`, a table position) at most once
    /// round the table. Returns (evicted, candidates looked at).
    fn evict_stripe(
        &self,
        s: usize,
        policy: Policy,
        class: Option<usize>,
        max: usize,
    ) -> Result<(u64, u64)> {
        let max = max.min(EVICT_BATCH);
        let g = self.guard();
        let sess = self.session_w(&g)?;
        let txn = Txn::begin(&sess, txn::log_entries_remove_many(EVICT_BATCH))?;
        let alloc = Allocator::new(&sess);
        let (mut evicted, mut seen) = (0u64, 0u64);
        self.apply_locked(&sess, txn, &[s], WriteOp::Many, |txn| {
            let stripe = self.st.mem.stripe(s);
            let Some((entries, _)) = self.st.table_entries(stripe.table.load(R))? else {
                return Ok(());
            };
            let cap = entries.len();
            let mut pos = (stripe.clock.load(R) % cap as u64) as usize;
            let mut victims = Vec::new();
            let mut soonest: Option<(u64, u64)> = None;
            for _ in 0..cap {
                let e = entries[pos].load(R);
                pos = if pos + 1 == cap { 0 } else { pos + 1 };
                if e == ENTRY_EMPTY || e == ENTRY_TOMBSTONE {
                    continue;
                }
                let rec = entry_record(e);
                if class.is_some() && alloc.class_block(rec)? != class {
                    continue;
                }
                let exp = self.st.record_meta(rec)? & META_EXPIRY_MASK;
                if policy.volatile_only() && exp == 0 {
                    continue;
                }
                seen += 1;
                match policy {
                    Policy::AllKeysLru | Policy::VolatileLru => {
                        // A reader may set the bit at any time; clearing it is one atomic.
                        let tag = self.st.mem.word(rec)?;
                        if tag.fetch_and(!TAG_REF, R) & TAG_REF == 0 {
                            victims.push(rec);
                        }
                    }
                    Policy::VolatileTtl => {
                        if soonest.is_none_or(|(e, _)| exp < e) {
                            soonest = Some((exp, rec));
                        }
                    }
                    Policy::AllKeysRandom | Policy::VolatileRandom | Policy::NoEviction => {
                        victims.push(rec)
                    }
                }
                if victims.len() == max {
                    break;
                }
            }
            stripe.clock.store(pos as u64, R);
            victims.extend(soonest.map(|(_, rec)| rec));
            let mut key = Vec::new();
            for rec in victims {
                self.st.read_key(rec, &mut key)?;
                index::remove(txn, s, self.st.hash(&key), &key)?;
                evicted += 1;
                crash_point!("evict.removed_one");
            }
            Ok(())
        })?;
        self.counted_evictions(evicted);
        Ok((evicted, seen))
    }

    /// Evict every record of the `want` consecutive chunks (class chunks of classes other than
    /// `except`, spans, free chunks) that hold the fewest live blocks among a region of
    /// [`SCAN_CHUNKS`] chunks that moves round the store, so that the allocator can take them
    /// whole. A chunk holding a block that is not an evictable record
    /// (an index table, a key the policy keeps) keeps what was not evicted. Returns how many
    /// records were evicted.
    fn empty_chunks(&self, policy: Policy, except: Option<usize>, want: u64) -> Result<u64> {
        let map = self.st.mem.chunk_map();
        let committed =
            (self.st.mem.committed().saturating_sub(self.st.chunk_base) / CHUNK_SIZE) as usize;
        let n = committed.min(map.len());
        let want = want as usize;
        if n < want || want == 0 {
            return Ok(0);
        }
        // Chunks the data pool may use (the last ones are the transaction logs' reserve).
        let n = n.min(map.len() - crate::alloc::reserve_chunks(map.len() as u64) as usize);
        if n < want {
            return Ok(0);
        }
        // A region of at most SCAN_CHUNKS chunks, moving round the store from call to call
        // (its tags are read block by block: a whole big store would be too many per write).
        let len = SCAN_CHUNKS.max(want).min(n);
        let first = (self.st.mem.header().evict_hand.fetch_add(1, R) as usize)
            .wrapping_mul(SCAN_CHUNKS)
            % (n - len + 1);
        // Records to evict per chunk of the region; None: the chunk cannot be emptied (slot
        // pages, `except`, a block that is no record or a record the policy keeps).
        let mut live: Vec<Option<u64>> = Vec::with_capacity(len);
        for (i, e) in map.iter().enumerate().skip(first).take(len) {
            let e = e.load(R);
            let base = self.st.chunk_base + i as u64 * CHUNK_SIZE;
            let class = (CHUNK_CLASS_BASE..CHUNK_CLASS_BASE + NUM_CLASSES as u32)
                .contains(&e)
                .then(|| (e - CHUNK_CLASS_BASE) as usize);
            live.push(match class {
                Some(c) if Some(c) != except => {
                    let size = CLASS_SIZES[c] as u64;
                    let mut k = Some(0);
                    for b in 0..CHUNK_SIZE / size {
                        match self.evictable(policy, base + b * size, Some(c))? {
                            Some(true) => k = k.map(|k| k + 1),
                            // A record read since the hand last passed costs more: chunks of
                            // cold records go first.
                            Some(false)
                                if self.st.mem.word(base + b * size)?.load(R) & 0b11
                                    != TAG_FREE =>
                            {
                                k = k.map(|k| k + 1 + REFERENCED_COST)
                            }
                            Some(false) => {}
                            None => {
                                k = None;
                                break;
                            }
                        }
                    }
                    k
                }
                Some(_) => None,
                None if e & CHUNK_SPAN_HEAD != 0 => match self.evictable(policy, base, None)? {
                    Some(true) => Some(1),
                    _ => None,
                },
                None if e == CHUNK_SPAN_CONT => Some(0),
                // A draining chunk is all free: the allocator gives it back (`reclaim_chunks_for`).
                None if crate::reclaim::claimable(e)
                    || (draining_class(e).is_some() && !is_evacuating(e)) =>
                {
                    Some(0)
                }
                None => None,
            });
        }
        // Windows of `want` chunks, fewest (cold) records first; the first that gives up a
        // record is emptied (a block that looked like a record may turn out not to be one).
        let mut windows: Vec<(u64, usize)> = (0..=len - want)
            .filter_map(|start| {
                let w = &live[start..start + want];
                if w.iter().any(Option::is_none) {
                    return None;
                }
                let cost: u64 = w.iter().flatten().sum();
                (cost > 0).then_some((cost, first + start))
            })
            .collect();
        windows.sort_unstable();
        let mut evicted = 0;
        for &(_, start) in windows.iter().take(MAX_WINDOWS) {
            evicted += self.empty_window(policy, start, want)?;
            if evicted > 0 {
                break;
            }
        }
        if evicted > 0 {
            // The emptied chunks go to the chunk pool and, for a class, are carved for it at
            // once: the write's other allocations (its record, before the table it needs) would
            // otherwise take their blocks back from the free lists first.
            let g = self.guard();
            let sess = self.session_w(&g)?;
            Allocator::new(&sess).reclaim_chunks_for(except)?;
        }
        Ok(evicted)
    }

    /// Evict every record of chunks `start..start + want`; returns how many.
    fn empty_window(&self, policy: Policy, start: usize, want: usize) -> Result<u64> {
        let map = self.st.mem.chunk_map();
        let mut evicted = 0;
        for i in start..start + want {
            let e = map[i].load(R);
            let base = self.st.chunk_base + i as u64 * CHUNK_SIZE;
            if e & CHUNK_SPAN_HEAD != 0 {
                evicted += u64::from(self.evict_block(policy, base)?);
            } else if e == CHUNK_SPAN_CONT {
                // The span it continues, wherever its head is.
                if let Some(j) = (0..i)
                    .rev()
                    .find(|&j| map[j].load(R) & CHUNK_SPAN_HEAD != 0)
                {
                    let head = self.st.chunk_base + j as u64 * CHUNK_SIZE;
                    evicted += u64::from(self.evict_block(policy, head)?);
                }
            } else if (CHUNK_CLASS_BASE..CHUNK_CLASS_BASE + NUM_CLASSES as u32).contains(&e) {
                let size = CLASS_SIZES[(e - CHUNK_CLASS_BASE) as usize] as u64;
                for b in 0..CHUNK_SIZE / size {
                    let off = base + b * size;
                    if Tag::from_word(self.st.mem.word(off)?.load(R)).state == TAG_LIVE {
                        evicted += u64::from(self.evict_block(policy, off)?);
                    }
                }
            }
        }
        Ok(evicted)
    }

    /// Whether the block at `off` (of class `class`, or a span head) looks like a cold record
    /// the policy may evict, read without a lock (a hint for choosing chunks): `Some(false)`
    /// for a free block or a referenced record, `None` for a block that is not a record (an index table, a log
    /// extension: its lengths do not make a record of its class) or a key the policy keeps.
    fn evictable(&self, policy: Policy, off: u64, class: Option<usize>) -> Result<Option<bool>> {
        let t = self.st.mem.word(off)?.load(R);
        match t & 0b11 {
            TAG_FREE => return Ok(Some(false)),
            TAG_LIVE => {}
            _ => return Ok(None), // reserved: a write in flight
        }
        let Ok((k, v)) = self.st.record_lens(off) else {
            return Ok(None);
        };
        // An index table is `[tag][log2]...` with `8 << log2` its block size; in the smallest
        // class that reads like a 3-byte key with an empty value: taken as a table.
        if v == 0 && class.is_some_and(|c| CLASS_SIZES[c] as u64 == 8 << k.min(40)) {
            return Ok(None);
        }
        if class_for(record_size(k as u64, v as u64)) != class {
            return Ok(None);
        }
        if policy.volatile_only() && self.st.record_meta(off)? & META_EXPIRY_MASK == 0 {
            return Ok(None);
        }
        // Referenced (under an LRU policy): evictable, reported as not cold.
        Ok(Some(t & TAG_REF == 0 || !eviction_is_lru(policy as u64)))
    }

    /// Evict the record in block `off` if it is one (its key's index entry points at it, seen
    /// under the stripe lock) and the policy allows it. Returns whether it did.
    fn evict_block(&self, policy: Policy, off: u64) -> Result<bool> {
        let evicted = self.with_record_at(off, |txn, s, hash, key| {
            if policy.volatile_only() && self.st.record_meta(off)? & META_EXPIRY_MASK == 0 {
                return Ok(false);
            }
            index::remove(txn, s, hash, key)?;
            crash_point!("evict.removed_one");
            Ok(true)
        })?;
        self.counted_evictions(u64::from(evicted));
        Ok(evicted)
    }

    fn counted_evictions(&self, n: u64) {
        if n > 0 {
            self.st.mem.header().evicted.fetch_add(n, R);
            log::debug!("evicted {n} keys");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Policy;
    use crate::layout::TAG_REF;
    use crate::tests::TestStore;
    use crate::{Client, Config, Error};
    use std::time::Duration;

    fn small(tag: &str) -> TestStore {
        TestStore::new(
            tag,
            Config::default()
                .max_size(4 << 20)
                .initial_size(0)
                .stripes(16),
        )
    }

    fn key(i: u32) -> Vec<u8> {
        format!("key:{i:07}").into_bytes()
    }

    fn clean(c: &Client) {
        let r = c.verify().unwrap();
        assert!(r.problems.is_empty(), "{:?}", r.problems);
    }

    #[test]
    fn policies_have_redis_names() {
        for p in Policy::ALL {
            assert_eq!(p.name().parse::<Policy>().unwrap(), p);
            assert_eq!(Policy::from_code(p as u64), p);
        }
        assert!("allkeys-lfu".parse::<Policy>().is_err());
        assert_eq!(Policy::from_code(99), Policy::NoEviction);
    }

    #[test]
    fn an_evicting_store_never_fills_and_stays_within_its_bound() {
        let t = small("evict-bound");
        let c = t.client();
        let other = t.client();
        // noeviction: today's StoreFull.
        let mut n = 0;
        while c.put(&key(n), &[7u8; 100]).is_ok() {
            n += 1;
        }
        assert!(matches!(
            c.put(&key(n), &[7u8; 100]),
            Err(Error::StoreFull { .. })
        ));
        other.set_eviction(Policy::AllKeysLru).unwrap();
        assert_eq!(c.eviction(), Policy::AllKeysLru);
        let total = 10 * n;
        for i in n..total {
            c.put(&key(i), &[i as u8; 100]).unwrap();
        }
        // Every write path makes room, not only put.
        c.put_many(&[
            (key(total), vec![1u8; 100]),
            (key(total + 1), vec![2u8; 100]),
        ])
        .unwrap();
        assert_eq!(c.incr(b"counter", 5).unwrap(), 5);
        c.update(b"updated", |_| Some(vec![3u8; 100])).unwrap();
        let st = &c.st;
        assert!(st.mem.committed() <= st.reserve);
        let evicted = c.evicted();
        assert!(evicted >= (total - n) as u64, "{evicted}");
        assert_eq!(c.len() + evicted, total as u64 + 4);
        // What is left is what was written (evicted keys are gone whole).
        for i in (n..total).step_by(7) {
            if let Some(v) = c.get(&key(i)).unwrap() {
                assert_eq!(v, [i as u8; 100]);
            }
        }
        assert_eq!(c.stats().evicted, evicted);
        clean(&c);
    }

    /// Reads set reference bits; CLOCK keeps what is read. allkeys-random is the control: the
    /// same workload loses hot keys there, so the test sees the bits, not luck.
    #[test]
    fn lru_keeps_the_keys_that_are_read_and_random_does_not() {
        let run = |policy: Policy| -> usize {
            let t = small("evict-lru");
            let c = t.client();
            c.set_eviction(policy).unwrap();
            let hot: Vec<u32> = (0..300).collect();
            for &i in &hot {
                c.put(&key(i), &[1u8; 100]).unwrap();
            }
            for i in 1000..120_000u32 {
                c.put(&key(i), &[2u8; 100]).unwrap();
                if i % 500 == 0 {
                    for &h in &hot {
                        c.get(&key(h)).unwrap();
                    }
                }
            }
            assert!(c.evicted() > 50_000);
            clean(&c);
            hot.iter()
                .filter(|&&h| c.get(&key(h)).unwrap().is_some())
                .count()
        };
        let lru = run(Policy::AllKeysLru);
        let random = run(Policy::AllKeysRandom);
        // Chunks emptied whole for index tables may take a hot key or two (see `empty_chunks`).
        assert!(lru >= 290, "LRU kept only {lru} of 300 hot keys");
        assert!(
            random < 150,
            "random eviction kept {random} of 300 hot keys"
        );
    }

    #[test]
    fn volatile_policies_evict_only_keys_with_a_ttl() {
        for policy in [
            Policy::VolatileLru,
            Policy::VolatileTtl,
            Policy::VolatileRandom,
        ] {
            let t = small("evict-volatile");
            let c = t.client();
            c.set_eviction(policy).unwrap();
            for i in 0..5000 {
                c.put(&key(i), &[1u8; 100]).unwrap();
            }
            // TTLs from 1 h to 2 h; volatile-ttl evicts the soonest first.
            let ttl = |i: u32| Duration::from_secs(3600 + u64::from(i % 3600));
            let mut i = 100_000;
            while c.evicted() < 20_000 {
                c.put_with_ttl(&key(i), &[2u8; 100], ttl(i)).unwrap();
                i += 1;
            }
            for p in 0..5000 {
                assert!(
                    c.contains(&key(p)).unwrap(),
                    "{policy}: persistent key evicted"
                );
            }
            if policy == Policy::VolatileTtl {
                // Survivors expire later than the average key did.
                let (mut sum, mut n) = (0u64, 0u64);
                for j in 100_000..i {
                    if c.contains(&key(j)).unwrap() {
                        sum += ttl(j).as_secs();
                        n += 1;
                    }
                }
                assert!(sum / n > 3600 + 1800 + 300, "mean TTL left {}", sum / n);
            }
            // Only persistent keys left to take: a persistent put fills the store, then fails.
            let r = loop {
                match c.put(&key(i), &[3u8; 100]) {
                    Ok(()) => i += 1,
                    Err(e) => break e,
                }
            };
            assert!(matches!(r, Error::StoreFull { .. }), "{r:?}");
            clean(&c);
        }
    }

    #[test]
    fn a_new_value_size_gets_whole_chunks_of_other_classes() {
        let t = TestStore::new(
            "evict-sizes",
            Config::default()
                .max_size(8 << 20)
                .initial_size(0)
                .stripes(16)
                .max_value_len(1 << 20),
        );
        let c = t.client();
        c.set_eviction(Policy::AllKeysLru).unwrap();
        let mut i = 0;
        while c.evicted() == 0 {
            c.put(&key(i), &[1u8; 100]).unwrap();
            i += 1;
        }
        for j in 0..2000 {
            c.put(&key(1_000_000 + j), &[2u8; 3000]).unwrap();
        }
        // Bigger than a chunk: contiguous chunks, emptied for it.
        for j in 0..4 {
            c.put(&key(2_000_000 + j), &vec![3u8; 1 << 20]).unwrap();
        }
        assert_eq!(
            c.get(&key(2_000_003)).unwrap().map(|v| v.len()),
            Some(1 << 20)
        );
        c.put(&key(3_000_000), &[4u8; 3000]).unwrap();
        assert!(c.get(&key(3_000_000)).unwrap() == Some(vec![4u8; 3000]));
        clean(&c);
    }

    /// A reference bit set by a reader must not stop the free of a record that is replaced or
    /// removed (the free expects the LIVE tag without it): every block comes back.
    #[test]
    fn referenced_records_are_freed_like_any_other() {
        let t = small("evict-refbit");
        let c = t.client();
        c.set_eviction(Policy::AllKeysLru).unwrap();
        for i in 0..2000 {
            c.put(&key(i), &[1u8; 100]).unwrap();
            assert!(c.get(&key(i)).unwrap().is_some());
        }
        let tag_of = |k: &[u8]| {
            let h = c.st.hash(k);
            let tw = c.st.mem.stripe(c.st.stripe_of(h)).table.load(super::R);
            let rec = c.st.probe_raw(tw, h, k).unwrap().unwrap();
            c.st.mem.word(rec).unwrap()
        };
        // A new record starts referenced; the sweep's clear is undone by the next hit, but
        // not by a read-only client's (its mapping is read-only: it writes nothing).
        let tag = tag_of(&key(5));
        assert_ne!(
            tag.load(super::R) & TAG_REF,
            0,
            "a new record is referenced"
        );
        tag.fetch_and(!TAG_REF, super::R);
        let ro = Client::open_read_only_in(crate::tests::dir(), &t.name).unwrap();
        assert!(ro.get(&key(5)).unwrap().is_some());
        assert_eq!(tag.load(super::R) & TAG_REF, 0, "a read-only hit wrote");
        assert!(c.get(&key(5)).unwrap().is_some());
        assert_ne!(tag.load(super::R) & TAG_REF, 0, "a hit sets the bit");
        for i in 0..2000 {
            if i % 2 == 0 {
                c.put(&key(i), &[2u8; 100]).unwrap();
            } else {
                assert!(c.remove(&key(i)).unwrap());
            }
        }
        clean(&c);
    }
}
