//! `verify()`: a full integrity check of index, records, allocator and slots.
//!
//! A writable client first recovers dead clients, then takes every stripe lock (ascending),
//! every class lock and the span lock, so it sees a quiescent store (writers wait meanwhile;
//! readers go on). A read-only client cannot lock: it checks without locks and repeats up to
//! three times until a run is clean, so a report from it may include changes in flight.

use std::collections::HashSet as StdHashSet;

/// Sets of block offsets: hashed by one multiply (offsets are distinct 8-aligned numbers, not
/// attacker-chosen keys: SipHash's cost per insert was most of an incremental stripe check).
type HashSet<T> = StdHashSet<T, std::hash::BuildHasherDefault<OffsetHasher>>;

/// A multiplicative hasher for `u64` offsets (Fibonacci hashing; the high bits are used).
#[derive(Default)]
struct OffsetHasher(u64);

impl std::hash::Hasher for OffsetHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(32);
    }
}
use std::sync::atomic::Ordering;

use crate::client::Client;
use crate::error::Result;
use crate::layout::*;
use crate::reclaim::is_free_entry;
use crate::segment;
use crate::slots::slot_list;
use crate::store::Store;
use crate::txn::LogView;

const R: Ordering = Ordering::Relaxed;

/// What `verify` found: empty `problems` means healthy.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Keys seen in the index.
    pub keys: u64,
    /// Blocks checked (records, tables, free blocks).
    pub blocks: u64,
    /// Dead clients recovered before checking (and while verify waited for their locks).
    pub recovered: usize,
    /// Clients found dead during the check, after the recovery pass (they died meanwhile).
    /// Not a problem: every lock was ours, so such a client held none, and anything it had
    /// reserved or was about to free is accounted to it. The next recovery pass (the host's
    /// housekeeping, or any client that meets it) cleans its slot up.
    pub unrecovered: usize,
    /// Everything that is wrong, one line each, with the offset where it was seen.
    pub problems: Vec<String>,
}

impl Report {
    /// True when nothing is wrong.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

impl Client {
    /// Check the whole store; see [`Report`].
    pub fn verify(&self) -> Result<Report> {
        self.not_forked()?;
        let Ok(sess) = self.session() else {
            let mut last = Report::default();
            for _ in 0..3 {
                last = check(&self.st, None);
                if last.is_ok() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            return Ok(last);
        };
        let mut recovered = self.recover_dead_clients()?;
        // Our slot takes the locks: another thread of this client must not write meanwhile
        // (it would wait on a lock our slot holds and take itself for a dead owner).
        let _g = self.guard();
        let h = self.st.mem.header();
        // Every lock, in the global order (stripes ascending, classes, span); the guards
        // release them in reverse when this scope ends, also on error.
        let mut stripes = Vec::new();
        for s in 0..self.st.mem.stripe_count() {
            stripes.push(sess.lock_stripe(s)?);
        }
        // A client that dies holding an allocator lock while we wait for it is recovered with
        // no allocator lock held (its deferred frees may need one we took already); then we
        // take them again from the first.
        let alloc_locks = loop {
            let mut held = Vec::new();
            let mut dead = None;
            for w in h.classes.iter().map(|c| &c.lock).chain([&h.span_lock]) {
                match sess.guard_word_unless_dead(w)? {
                    Ok(g) => held.push(g),
                    Err(owner) => {
                        dead = Some(owner);
                        break;
                    }
                }
            }
            let Some(owner) = dead else { break held };
            drop(held);
            crate::recovery::probe_and_recover(&sess, owner)?;
            recovered += 1;
        };
        let mut report = check(&self.st, Some(sess.me));
        drop(alloc_locks);
        drop(stripes);
        report.recovered = recovered;
        Ok(report)
    }

    /// Check one stripe (table, records, counts) under its lock: the incremental check the
    /// host runs in the background.
    pub fn verify_stripe(&self, s: usize) -> Result<Report> {
        let sess = self.session()?;
        let _g = self.guard();
        let _stripe = sess.lock_stripe(s)?;
        let mut c = Checker {
            st: &self.st,
            pending_free: HashSet::default(),
            me: Some(sess.me),
            report: Report::default(),
            referenced: HashSet::default(),
            own_cache: HashSet::default(),
        };
        c.check_stripe(s);
        Ok(c.report)
    }
}

struct Checker<'a> {
    st: &'a Store,
    /// Blocks that committed transactions of live clients are about to free: LIVE and no
    /// longer referenced, legitimately (the writer waits for a class lock we hold).
    pending_free: HashSet<u64>,
    /// Our own slot: its byte lock is ours, which `F_OFD_GETLK` does not report.
    me: Option<u32>,
    report: Report,
    referenced: HashSet<u64>,
    /// Blocks in our own slot's block cache (stable: we hold our write mutex).
    own_cache: HashSet<u64>,
}

impl Checker<'_> {
    fn problem(&mut self, off: u64, what: impl std::fmt::Display) {
        if self.report.problems.len() < 1000 {
            self.report.problems.push(format!("at {off:#x}: {what}"));
        }
    }

    fn tag(&self, off: u64) -> Option<Tag> {
        self.st
            .mem
            .word(off)
            .ok()
            .map(|w| Tag::from_word(w.load(R)))
    }

    fn owner_alive(&self, slot: u32) -> bool {
        self.me == Some(slot)
            || segment::ofd_is_locked(&self.st.file, segment::SLOT_LOCK_BASE + slot as u64)
                .unwrap_or(true)
    }

    /// An attached slot whose owner is dead: its blocks stay its own until recovery.
    fn awaiting_recovery(&self, slot: u32) -> bool {
        self.st
            .slot_offset(slot)
            .and_then(|off| self.st.mem.slot_at(off).ok())
            .is_some_and(|s| s.state.load(R) == SLOT_ALIVE)
    }

    fn check_stripe(&mut self, s: usize) {
        let st = self.st;
        let stripe = st.mem.stripe(s);
        let tw = stripe.table.load(R);
        let (count, tombs, vbytes) = (
            stripe.count.load(R),
            stripe.tombstones.load(R),
            stripe.value_bytes.load(R),
        );
        let soff = st.stripe_field_offset(s, &stripe.table);
        // Under the stripe's lock (a writable verify holds it) no write is in progress: an odd
        // `seq` is a write bracket left open (readers would retry forever, and the next
        // writer's bracket would publish with the parity inverted).
        if self.me.is_some() && stripe.seq.load(R) & 1 == 1 {
            self.problem(
                st.stripe_field_offset(s, &stripe.seq),
                format!("stripe {s}: seq is odd with no write in progress"),
            );
        }
        let entries = match st.table_entries(tw) {
            Ok(Some((entries, log2))) => {
                let toff = tw & TABLE_OFFSET_MASK;
                self.referenced.insert(toff);
                match self.tag(toff) {
                    Some(t) if t.state == TAG_LIVE => {}
                    t => self.problem(toff, format!("stripe {s}: table block tag {t:?}")),
                }
                if st.mem.word(toff + 8).map(|w| w.load(R)).ok() != Some(log2 as u64) {
                    self.problem(
                        toff,
                        format!("stripe {s}: table header disagrees with 2^{log2}"),
                    );
                }
                entries
            }
            Ok(None) => {
                if count != 0 || vbytes != 0 {
                    self.problem(soff, format!("stripe {s}: no table but count {count}"));
                }
                return;
            }
            Err(e) => {
                self.problem(soff, format!("stripe {s}: {e}"));
                return;
            }
        };
        let (mut live, mut tomb, mut vb) = (0u64, 0u64, 0u64);
        self.referenced
            .reserve(count.min(entries.len() as u64) as usize);
        let mut key = Vec::new();
        // Records are spread over the segment: a few entries ahead, their first lines are
        // asked for, so the misses overlap (measured: 235 -> 57-64 us p50 per stripe of ~1,000 records).
        const AHEAD: usize = 16;
        for (i, e) in entries.iter().enumerate() {
            if let Some(next) = entries.get(i + AHEAD) {
                let n = next.load(R);
                if n != ENTRY_EMPTY && n != ENTRY_TOMBSTONE {
                    st.mem.prefetch(entry_record(n));
                }
            }
            let e = e.load(R);
            if e == ENTRY_EMPTY {
                continue;
            }
            if e == ENTRY_TOMBSTONE {
                tomb += 1;
                continue;
            }
            let rec = entry_record(e);
            live += 1;
            self.report.blocks += 1;
            if !self.referenced.insert(rec) {
                self.problem(
                    rec,
                    format!("stripe {s} entry {i}: record referenced twice"),
                );
            }
            match self.tag(rec) {
                Some(t) if t.state == TAG_LIVE => {}
                t => self.problem(rec, format!("stripe {s} entry {i}: record tag {t:?}")),
            }
            key.clear();
            let lens = st
                .record_lens(rec)
                .and_then(|l| st.read_key(rec, &mut key).map(|_| l));
            let (_, vlen) = match lens {
                Ok(l) => l,
                Err(e) => {
                    self.problem(rec, format!("stripe {s} entry {i}: {e}"));
                    continue;
                }
            };
            vb += vlen as u64;
            let h = st.hash(&key);
            if !entry_matches(e, h) {
                self.problem(
                    rec,
                    format!("stripe {s} entry {i}: stored hash tag differs from key's"),
                );
            } else if st.stripe_of(h) != s {
                self.problem(
                    rec,
                    format!("key hashes to stripe {}, found in {s}", st.stripe_of(h)),
                );
            } else if st.probe_raw(tw, h, &key).ok().flatten() != Some(rec) {
                self.problem(
                    rec,
                    format!("stripe {s} entry {i}: key unreachable or duplicated"),
                );
            }
        }
        if (live, tomb, vb) != (count, tombs, vbytes) {
            self.problem(
                soff,
                format!(
                    "stripe {s}: counted {live} keys/{tomb} tombstones/{vb} value bytes, \
                     stripe says {count}/{tombs}/{vbytes}"
                ),
            );
        }
        self.report.keys += live;
    }

    fn check_blocks(&mut self) {
        let st = self.st;
        let h = st.mem.header();
        let map = st.mem.chunk_map();
        let committed = st.mem.committed();
        let chunk_off = |i: usize| st.chunk_base + i as u64 * CHUNK_SIZE;
        let mut free_tags = vec![0u64; NUM_CLASSES];
        // Draining chunks (alloc/drain.rs): chunk -> blocks its entry says are on the list.
        let mut draining: std::collections::BTreeMap<usize, u32> = Default::default();
        let mut span_chunks = 0u64;
        let mut i = 0;
        while i < map.len() {
            let e = map[i].load(R);
            let off = chunk_off(i);
            if !is_free_entry(e) && off + CHUNK_SIZE > committed {
                self.problem(off, format!("chunk {i} in use beyond the committed length"));
                break;
            }
            if (CHUNK_CLASS_BASE..CHUNK_CLASS_BASE + NUM_CLASSES as u32).contains(&e) {
                let c = (e - CHUNK_CLASS_BASE) as usize;
                let size = CLASS_SIZES[c] as u64;
                for b in 0..CHUNK_SIZE / size {
                    let boff = off + b * size;
                    self.check_tag(boff, &mut free_tags[c]);
                }
            } else if e & CHUNK_SPAN_HEAD != 0 {
                let k = (e & CHUNK_SPAN_LEN_MASK) as usize;
                if k == 0 || i + k > map.len() {
                    self.problem(off, format!("span of {k} chunks"));
                    break;
                }
                for j in 1..k {
                    if map[i + j].load(R) != CHUNK_SPAN_CONT {
                        self.problem(chunk_off(i + j), "span continuation missing");
                    }
                }
                let mut dummy = 0;
                if self.tag(off).map(|t| t.state) == Some(TAG_FREE) {
                    self.problem(off, "free span still holds chunks");
                } else {
                    self.check_tag(off, &mut dummy);
                }
                span_chunks += k as u64;
                i += k;
                continue;
            } else if e == CHUNK_SPAN_CONT {
                self.problem(off, "span continuation without a head");
            } else if let Some(c) = draining_class(e) {
                let n = e & CHUNK_DRAINING_COUNT;
                let size = CLASS_SIZES.get(c).map_or(0, |&s| s as u64);
                if size == 0 || n == 0 || n as u64 > CHUNK_SIZE / size {
                    self.problem(off, format!("draining chunk {i}: entry {e:#x}"));
                } else if is_evacuating(e) {
                    // Blocks in use are being moved out: each checked as anywhere else. The
                    // count is the blocks in use plus the free ones still on the list.
                    let mut free = 0u64;
                    for b in 0..CHUNK_SIZE / size {
                        self.check_tag(off + b * size, &mut free);
                    }
                    let busy = CHUNK_SIZE / size - free;
                    if busy > n as u64 {
                        self.problem(
                            off,
                            format!("evacuating chunk {i}: {busy} in use, count {n}"),
                        );
                    } else {
                        draining.insert(i, n - busy as u32);
                    }
                } else {
                    let busy = (0..CHUNK_SIZE / size)
                        .filter(|b| self.tag(off + b * size).map(|t| t.state) != Some(TAG_FREE))
                        .count();
                    if busy > 0 {
                        self.problem(
                            off,
                            format!("draining chunk {i} holds {busy} blocks in use"),
                        );
                    }
                    draining.insert(i, n);
                }
            } else if e & CHUNK_SLOT_PAGE != 0 {
                let p = (e & !CHUNK_SLOT_PAGE) as usize;
                let first = h.slot_pages.get(p).map(|w| w.load(R));
                if first.is_none_or(|f| f == 0 || f > off) {
                    self.problem(off, format!("chunk of unpublished slot page {p}"));
                }
            } else if !is_free_entry(e) {
                self.problem(off, format!("unknown chunk map entry {e:#x}"));
            }
            i += 1;
        }
        if span_chunks != h.span_chunks.load(R) {
            self.problem(
                0,
                format!(
                    "span chunks {span_chunks}, header says {}",
                    h.span_chunks.load(R)
                ),
            );
        }
        for (c, cls) in h.classes.iter().enumerate() {
            let size = CLASS_SIZES[c] as u64;
            let want = cls.free_count.load(R);
            let mut b = cls.head.load(R);
            let mut n = 0u64;
            // Blocks of this class's draining chunks met on the list, per chunk.
            let mut seen_draining: std::collections::BTreeMap<usize, u32> = Default::default();
            let draining_here: u64 = draining
                .iter()
                .filter(|(&i, _)| draining_class(map[i].load(R)) == Some(c))
                .map(|(_, &k)| k as u64)
                .sum();
            // Bounded by what this check counted itself (free tags in the class's chunks),
            // never by `free_count` read from the segment: a self-linked list must end.
            while b != 0
                && n + seen_draining.values().map(|&k| k as u64).sum::<u64>()
                    <= free_tags[c] + draining_here
            {
                let chunk = b
                    .checked_sub(st.chunk_base)
                    .map(|d| (d >> CHUNK_SHIFT) as usize);
                let entry = chunk.and_then(|i| map.get(i)).map(|e| e.load(R));
                let is_draining = entry.and_then(draining_class) == Some(c);
                let ok_chunk = entry == Some(CHUNK_CLASS_BASE + c as u32) || is_draining;
                if !ok_chunk || (b - chunk_off(chunk.unwrap_or(0))) % size != 0 {
                    self.problem(b, format!("class {c}: free list points outside its chunks"));
                    break;
                }
                if self.tag(b).map(|t| t.state) != Some(TAG_FREE) {
                    self.problem(b, format!("class {c}: free list holds a non-free block"));
                    break;
                }
                if is_draining {
                    *seen_draining.entry(chunk.unwrap_or(0)).or_default() += 1;
                } else {
                    n += 1;
                }
                b = st.mem.word(b + 8).map(|w| w.load(R)).unwrap_or(0);
            }
            for (&i, &k) in draining
                .iter()
                .filter(|(&i, _)| draining_class(map[i].load(R)) == Some(c))
            {
                let on_list = seen_draining.get(&i).copied().unwrap_or(0);
                if on_list != k {
                    self.problem(
                        chunk_off(i),
                        format!("draining chunk {i}: {on_list} blocks on the list, entry says {k}"),
                    );
                }
            }
            if b != 0 {
                self.problem(
                    b,
                    format!(
                        "class {c}: free list longer than its {} free blocks (count says {want})",
                        free_tags[c]
                    ),
                );
            } else if n != want || n != free_tags[c] {
                self.problem(
                    0,
                    format!(
                        "class {c}: list has {n} blocks, count says {want}, tags say {}",
                        free_tags[c]
                    ),
                );
            }
        }
    }

    /// Check one allocated or free block's tag against the references and the slots.
    fn check_tag(&mut self, off: u64, free: &mut u64) {
        let Some(t) = self.tag(off) else {
            self.problem(off, "block outside the segment");
            return;
        };
        match t.state {
            TAG_FREE => *free += 1,
            TAG_LIVE => {
                if !self.referenced.contains(&off) && !self.pending_free.contains(&off) {
                    self.problem(
                        off,
                        format!(
                            "live block not referenced by the index (leak), gen {}",
                            t.generation
                        ),
                    );
                }
            }
            TAG_RESERVED => {
                // Verify holds this client's write mutex: it has no transaction open, so a
                // block it still reserves and does not cache was never committed or given
                // back. (Other live clients' reserved blocks are in their logs or caches,
                // which change under us without a lock: cached blocks are given and taken
                // without one.)
                if Some(t.owner) == self.me && !self.own_cache.contains(&off) {
                    self.problem(
                        off,
                        "block reserved by this client outside a transaction (leak)",
                    );
                } else if !self.owner_alive(t.owner) && !self.awaiting_recovery(t.owner) {
                    self.problem(
                        off,
                        format!("block reserved by dead client slot {}", t.owner),
                    );
                }
            }
            s => self.problem(off, format!("unknown tag state {s}")),
        }
    }

    /// Our own block cache: every entry a distinct block reserved by us.
    fn check_own_cache(&mut self) {
        let Some(me) = self.me else { return };
        let Some(slot) = self
            .st
            .slot_offset(me)
            .and_then(|o| self.st.mem.slot_at(o).ok())
        else {
            return;
        };
        for (e, w) in slot.cache.iter().enumerate() {
            let b = w.load(R);
            if b == 0 {
                continue;
            }
            match self.tag(b) {
                Some(t) if t.state == TAG_RESERVED && t.owner == me => {
                    if !self.own_cache.insert(b) {
                        self.problem(b, format!("block cache entry {e}: block cached twice"));
                    }
                }
                t => self.problem(b, format!("block cache entry {e}: block tag {t:?}")),
            }
        }
    }

    fn check_slots(&mut self) {
        let h = self.st.mem.header();
        let mut listed = true;
        for (p, base) in h.slot_pages.iter().enumerate() {
            let base = base.load(R);
            if base == 0 {
                listed = false;
            } else if !listed || !crate::slots::slot_page_ok(self.st, p, base) {
                self.problem(base, format!("client slot page {p} is not a valid page"));
                listed = false;
            }
        }
        for (idx, off) in slot_list(self.st) {
            let Ok(slot) = self.st.mem.slot_at(off) else {
                self.problem(off, format!("slot {idx} outside the segment"));
                continue;
            };
            let state = slot.state.load(R);
            if state == SLOT_ALIVE && !self.owner_alive(idx) {
                self.report.unrecovered += 1;
            } else if state != SLOT_ALIVE && state != SLOT_FREE {
                self.problem(off, format!("slot {idx}: unknown state {state}"));
            }
        }
    }
}

/// Blocks that COMMITTED transactions still have to free. Stable while the caller holds every
/// class and span lock: such a writer cannot finish its frees meanwhile.
fn pending_frees(st: &Store) -> HashSet<u64> {
    let mut out = HashSet::default();
    for (_, off) in slot_list(st) {
        let Ok(slot) = st.mem.slot_at(off) else {
            continue;
        };
        if slot.state.load(R) != SLOT_ALIVE || slot.txn_state.load(R) != TXN_COMMITTED {
            continue;
        }
        if let Ok(log) = LogView::of(st, slot, off) {
            out.extend(log.pending_frees(slot.n_free.load(R) as usize));
        }
    }
    out
}

pub(crate) fn check(st: &Store, me: Option<u32>) -> Report {
    let mut c = Checker {
        st,
        pending_free: pending_frees(st),
        me,
        report: Report::default(),
        referenced: HashSet::default(),
        own_cache: HashSet::default(),
    };
    c.check_own_cache();
    let h = st.mem.header();
    if h.committed_len.load(R) > st.reserve {
        c.problem(0, "committed length beyond the reserve");
    }
    for s in 0..st.mem.stripe_count() {
        let seq = st.mem.stripe(s).seq.load(R);
        if seq & 1 == 1 && st.mem.stripe(s).lock.load(R) == 0 {
            c.problem(
                0,
                format!("stripe {s}: odd seq {seq} without a lock holder"),
            );
        }
        c.check_stripe(s);
    }
    c.check_blocks();
    c.check_slots();
    c.report
}
