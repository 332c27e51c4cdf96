//! What a host does in the background: recover dead clients, grow ahead of demand, check a few
//! stripes, drop tombstones, and notice snapshot requests.

use std::sync::atomic::Ordering;

use crate::alloc::Allocator;
use crate::client::{Client, WriteOp};
use crate::error::Result;
use crate::host::Host;
use crate::index;
use crate::layout::CHUNK_SIZE;
pub use crate::reclaim::ReclaimPass;
use crate::txn::{self, Txn};

const R: Ordering = Ordering::Relaxed;

/// What one housekeeping pass did.
#[derive(Clone, Debug, Default)]
pub struct Housekeeping {
    /// Dead clients recovered.
    pub recovered: usize,
    /// Bytes the store grew by ahead of demand.
    pub grew_by: u64,
    /// Stripes checked, and what was wrong in them.
    pub stripes_checked: usize,
    pub problems: Vec<String>,
    /// Stripes whose tables were rebuilt to drop tombstones.
    pub compacted: usize,
    /// A client asked for a snapshot since the last pass.
    pub snapshot_requested: bool,
    /// What the reclaim pass did (once per [`RECLAIM_PERIOD`]; zeros otherwise).
    pub reclaim: ReclaimPass,
    /// Expired keys whose memory this pass freed ([`Client::expire_pass`]).
    pub expired: u64,
}

/// How often the host gives memory back: also the least time between marking a free chunk
/// and punching it.
pub const RECLAIM_PERIOD: std::time::Duration = std::time::Duration::from_secs(1);

impl Client {
    /// Ask the host for a snapshot now (it notices on its next housekeeping pass).
    pub fn request_snapshot(&self) -> Result<()> {
        self.session()?;
        self.st.mem.header().snapshot_request.fetch_add(1, R);
        Ok(())
    }

    /// When a host last wrote a snapshot (Unix seconds, 0 = never) and how many it wrote.
    pub fn last_snapshot(&self) -> (u64, u64) {
        let h = self.st.mem.header();
        (h.last_snapshot_unix.load(R), h.snapshot_count.load(R))
    }

    /// One reclaim pass (what the host runs once per [`RECLAIM_PERIOD`]): free chunks marked
    /// by the previous pass and claimed by nobody since give their pages back to the OS;
    /// size-class chunks whose blocks are all free go back to the chunk pool (classes with
    /// at least two chunks' worth of free blocks), and such classes move the records out of
    /// their sparsest chunks (at most a quarter used) so those follow; free chunks beyond
    /// `keep_bytes` are marked
    /// for the next pass. Calling it more often than the host does shortens the time between
    /// marking and punching, which protects readers that still hold an offset into a freed
    /// chunk (see docs/ARCHITECTURE.md, "Memory back to the OS").
    pub fn reclaim_pass(&self, keep_bytes: u64) -> Result<ReclaimPass> {
        self.session()?;
        let punched = self.st.punch_cooling()?;
        // Writers flush their block caches at their next write, so that chunks their cached
        // blocks keep from being all-free can go at a later pass; this client's go now.
        self.st.mem.header().cache_flush.fetch_add(1, R);
        let compacted = self.compact_pass()?;
        let marked = self.st.mark_cooling(keep_bytes / CHUNK_SIZE);
        Ok(ReclaimPass {
            punched,
            marked,
            ..compacted
        })
    }

    /// The part of a reclaim pass that needs nothing of the OS (what the host runs where the
    /// file system cannot punch holes): all-free chunks of size classes with at least two
    /// chunks' worth of free blocks go back to the chunk pool, and such classes move the
    /// records out of their sparsest chunks so those follow. The chunks are reused by any
    /// size class; none is given back to the OS.
    pub fn compact_pass(&self) -> Result<ReclaimPass> {
        self.session()?;
        let released = {
            let g = self.guard();
            let sess = self.session_w(&g)?;
            Allocator::new(&sess).release_free_class_chunks_above(usize::MAX, 2)?
        };
        // Sparse chunks: their records move out, then they go back too.
        let moved = self.evacuate_pass()?.moved;
        Ok(ReclaimPass {
            released,
            moved,
            ..ReclaimPass::default()
        })
    }

    /// Rebuild stripe `s` if tombstones make up over a third of its used slots.
    pub fn compact_stripe(&self, s: usize) -> Result<bool> {
        let stripe = self.st.mem.stripe(s);
        let (count, tombs) = (stripe.count.load(R), stripe.tombstones.load(R));
        if tombs < 8 || tombs.saturating_mul(3) < count.saturating_add(tombs) {
            return Ok(false);
        }
        self.session()?;
        let g = self.guard();
        let sess = self.session_w(&g)?;
        let txn = Txn::begin(&sess, txn::log_entries_compact())?;
        let mut did = false;
        self.apply_locked(&sess, txn, &[s], WriteOp::Many, |txn| {
            did = index::compact(txn, s)?;
            Ok(())
        })?;
        Ok(did)
    }
}

/// The most free room housekeeping keeps ahead of the clients.
pub const GROW_AHEAD_MAX: u64 = 64 << 20;

impl Host {
    /// One housekeeping pass. `cursor` walks the stripes across passes; `check` stripes are
    /// verified per pass.
    pub fn housekeeping(&self, cursor: &mut usize, check: usize) -> Result<Housekeeping> {
        let mut out = Housekeeping {
            recovered: self.recover_dead_clients()?,
            ..Default::default()
        };
        // Grow ahead so clients rarely grow themselves: keep a quarter of the committed
        // size free, at most GROW_AHEAD_MAX (what is committed is memory taken). One step of
        // GROW_STEP_MAX at a time, so a client that must grow never waits on a long one.
        let s = self.stats();
        let headroom = (s.committed_bytes / 4).min(GROW_AHEAD_MAX);
        // Memory given back to the OS is taken again before growing: it counts as room.
        if s.free_bytes + s.returned_bytes < headroom && s.committed_bytes < s.max_bytes {
            let want = (s.committed_bytes + headroom - s.free_bytes).min(s.max_bytes);
            while self.st.mem.committed() < want {
                let next = (self.st.mem.committed() + crate::store::GROW_STEP_MAX).min(want);
                self.st.grow(next)?;
            }
            out.grew_by = self.st.mem.committed() - s.committed_bytes;
        }
        // Expired keys' memory back to the free lists (each pass: only stripes whose hint is
        // due are touched).
        match self.expire_pass() {
            Ok(n) => out.expired = n,
            Err(e) => out.problems.push(format!("expiry pass: {e}")),
        }
        let n = self.st.mem.stripe_count();
        for _ in 0..check.min(n) {
            let stripe = *cursor % n;
            *cursor = cursor.wrapping_add(1);
            let r = self.verify_stripe(stripe)?;
            out.problems.extend(r.problems);
            out.stripes_checked += 1;
            // A stripe that cannot be compacted (damaged) is a problem to report, not a
            // reason to skip the rest of the pass.
            match self.compact_stripe(stripe) {
                Ok(true) => out.compacted += 1,
                Ok(false) => {}
                Err(e) => out
                    .problems
                    .push(format!("stripe {stripe}: compaction: {e}")),
            }
        }
        // Memory back to the OS, once per period: keep a little free memory ready (1/32 of
        // the committed size, at most GROW_AHEAD_MAX / 4), give back the rest.
        let due = {
            let mut last = self.last_reclaim.lock().unwrap_or_else(|p| p.into_inner());
            let due = last.is_none_or(|t| t.elapsed() >= RECLAIM_PERIOD);
            if due {
                *last = Some(std::time::Instant::now());
            }
            due
        };
        if due && !self.reclaim_unsupported.load(R) {
            let keep = (self.st.mem.committed() / 32).min(GROW_AHEAD_MAX / 4);
            match self.reclaim_pass(keep) {
                Ok(p) => out.reclaim = p,
                // A file system that cannot punch holes (`--dir` elsewhere than tmpfs): say
                // so once and stop trying; free chunks are still reused before growing, and
                // compacted (below).
                Err(crate::Error::Io(e)) if crate::segment::is_unsupported(&e) => {
                    self.reclaim_unsupported.store(true, R);
                    log::warn!(
                        "the store's file system cannot punch holes: memory of removed keys \
                         is reused but not given back to the OS"
                    );
                }
                Err(e) => out.problems.push(format!("reclaim: {e}")),
            }
        }
        if due && self.reclaim_unsupported.load(R) {
            match self.compact_pass() {
                Ok(p) => out.reclaim = p,
                Err(e) => out.problems.push(format!("compaction: {e}")),
            }
        }
        out.snapshot_requested = self.st.mem.header().snapshot_request.swap(0, R) != 0;
        Ok(out)
    }

    /// Record that a snapshot was written.
    pub fn note_snapshot(&self) {
        let h = self.st.mem.header();
        h.last_snapshot_unix.store(crate::store::now_unix(), R);
        h.snapshot_count.fetch_add(1, R);
    }
}
