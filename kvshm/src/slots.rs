//! Client slots: claiming one at attach (recovering a dead owner's on the way), the geometric
//! slot pages, and the sessions that write as a slot.
//!
//! A slot is owned by whoever holds the OFD byte lock `SLOT_LOCK_BASE + index` of the store
//! file; slot pages are created under another OFD byte lock (no client identity is needed, so
//! a process that has no slot yet can create one).

use std::sync::atomic::Ordering;

use crate::alloc::Pool;
use crate::crash_point;
use crate::error::{Error, Result};
use crate::layout::*;
use crate::recovery;
use crate::segment;
use crate::session::Session;
use crate::store::Store;

const R: Ordering = Ordering::Relaxed;
const REL: Ordering = Ordering::Release;
const ACQ: Ordering = Ordering::Acquire;

/// A slot this process owns: its index and offset.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SlotRef {
    pub idx: u32,
    pub off: u64,
}

/// The session of slot `r`: lock waits recover dead owners with [`recovery`].
#[inline(always)]
pub(crate) fn session(st: &Store, r: SlotRef) -> Result<Session<'_>> {
    Ok(Session {
        st,
        me: r.idx,
        slot_off: r.off,
        slot: st.mem.slot_at(r.off)?,
        on_stall: recovery::probe_and_recover,
        cache: None,
    })
}

/// Every existing slot: (index, offset), page by page. A page is listed only if it lies in
/// the committed segment where the chunk map says it is (page 0 where the header put it); the
/// first page that does not ends the list (pages are published in order), so damaged
/// `slot_pages` words cost neither memory nor time beyond the store's own size.
pub(crate) fn slot_list(st: &Store) -> impl Iterator<Item = (u32, u64)> + '_ {
    let h = st.mem.header();
    h.slot_pages
        .iter()
        .enumerate()
        .map(|(p, base)| (p, base.load(ACQ)))
        .take_while(move |&(p, base)| base != 0 && slot_page_ok(st, p, base))
        .flat_map(|(p, base)| {
            let first = slot_page_first(p);
            (0..slot_page_len(p)).map(move |j| ((first + j) as u32, base + j * SLOT_SIZE))
        })
}

/// Whether slot page `p` may be at `base`.
pub(crate) fn slot_page_ok(st: &Store, p: usize, base: u64) -> bool {
    let Some(bytes) = slot_page_len(p).checked_mul(SLOT_SIZE) else {
        return false;
    };
    if st.mem.words(base, bytes / 8).is_err() {
        log::debug!("client slot page {p} at {base:#x} lies outside the segment; ignored");
        return false;
    }
    if p == 0 {
        return base == st.mem.header().slot_page0_offset.load(R);
    }
    let entry = CHUNK_SLOT_PAGE | p as u32;
    let map = st.mem.chunk_map();
    let ok = base >= st.chunk_base
        && (base - st.chunk_base) % CHUNK_SIZE == 0
        && map
            .get(((base - st.chunk_base) / CHUNK_SIZE) as usize)
            .is_some_and(|e| e.load(ACQ) == entry);
    if !ok {
        log::debug!("client slot page {p} at {base:#x} is not where the chunk map says; ignored");
    }
    ok
}

/// Find a free slot (or a dead client's, recovering it), creating a slot page if all are taken.
pub(crate) fn claim_slot(st: &Store) -> Result<SlotRef> {
    loop {
        for pass in 0..2 {
            for (idx, off) in slot_list(st) {
                let slot = st.mem.slot_at(off)?;
                if pass == 0 && slot.state.load(ACQ) != SLOT_FREE {
                    continue;
                }
                if !segment::ofd_try_lock(&st.file, segment::SLOT_LOCK_BASE + idx as u64)? {
                    continue;
                }
                let r = SlotRef { idx, off };
                if slot.state.load(ACQ) == SLOT_ALIVE {
                    // Its owner died: we hold its byte, so we are its recoverer.
                    recovery::recover_slot(&session(st, r)?, idx)?;
                }
                let h = st.mem.header();
                for c in slot.counters.iter().chain(&slot.counters_shared) {
                    c.store(0, R);
                }
                slot.txn_state.store(TXN_IDLE, R);
                slot.log_ext.store(0, R);
                slot.waiting_on.store(0, R);
                slot.client_id
                    .store(h.next_client_id.fetch_add(1, R) + 1, R);
                slot.pid.store(segment::pid(), R);
                slot.start_unix.store(crate::store::now_unix(), R);
                slot.state.store(SLOT_ALIVE, REL);
                return Ok(r);
            }
        }
        grow_slot_pages(st)?;
    }
}

/// Add the next client-slot page (or publish one whose creator died; see
/// [`repair_slot_pages`]).
fn grow_slot_pages(st: &Store) -> Result<()> {
    with_slot_page_lock(st, |h| {
        if publish_orphan_pages(st)? {
            return Ok(());
        }
        let Some(p) = (1..MAX_SLOT_PAGES).find(|&p| h.slot_pages[p].load(ACQ) == 0) else {
            return Err(Error::TooManyClients {
                max: slot_page_first(MAX_SLOT_PAGES),
            });
        };
        let entry = CHUNK_SLOT_PAGE | p as u32;
        let k = (slot_page_len(p) * SLOT_SIZE).div_ceil(CHUNK_SIZE);
        let idx = st.claim_chunks(k, entry, entry, Pool::Data, true)?;
        crash_point!("slots.page_claimed");
        h.slot_pages[p].store(st.chunk_base + idx * CHUNK_SIZE, REL);
        log::debug!("client slot page {p} added ({} slots)", slot_page_len(p));
        Ok(())
    })
}

/// Publish slot pages whose creator died after claiming their chunks. Slot pages are created
/// under an OFD byte lock (no client identity needed); the chunk map entries name the page.
pub(crate) fn repair_slot_pages(st: &Store) -> Result<bool> {
    with_slot_page_lock(st, |_| publish_orphan_pages(st))
}

fn with_slot_page_lock<T>(st: &Store, f: impl FnOnce(&Header) -> Result<T>) -> Result<T> {
    let _local = st.slot_page_mutex.lock().unwrap_or_else(|p| p.into_inner());
    segment::ofd_lock_wait(&st.file, segment::SLOT_PAGE_LOCK_BYTE)?;
    let r = f(st.mem.header());
    segment::ofd_unlock(&st.file, segment::SLOT_PAGE_LOCK_BYTE);
    r
}

/// Caller holds the slot-page lock. Returns whether a page was published.
fn publish_orphan_pages(st: &Store) -> Result<bool> {
    let h = st.mem.header();
    let Some(p) = (1..MAX_SLOT_PAGES).find(|&p| h.slot_pages[p].load(ACQ) == 0) else {
        return Ok(false);
    };
    let entry = CHUNK_SLOT_PAGE | p as u32;
    match st.mem.chunk_map().iter().position(|e| e.load(ACQ) == entry) {
        Some(i) => {
            h.slot_pages[p].store(st.chunk_base + i as u64 * CHUNK_SIZE, REL);
            log::warn!("published client slot page {p} left behind by a dead client");
            Ok(true)
        }
        None => Ok(false),
    }
}
