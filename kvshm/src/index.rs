//! Index writes: insert/update/remove in a stripe's open-addressing table, and table rebuilds
//! (doubling, or dropping tombstones). All run under the stripe lock with `seq` odd, inside a
//! transaction whose undo log covers every in-place write. Reads are in `store.rs`.
//! Functions of a [`Txn`]: they write only through its log.

use std::sync::atomic::Ordering;

use crate::crash_point;
use crate::error::{Error, Result};
use crate::layout::*;
use crate::store::{copy_in, Store};
use crate::txn::{Txn, IN_PLACE_WORDS};

const R: Ordering = Ordering::Relaxed;
const REL: Ordering = Ordering::Release;

/// Where a key is, or would go, in a table.
struct Found {
    /// (entry index, record offset) of the key.
    hit: Option<(u64, u64)>,
    /// First reusable entry on the probe path (tombstone or empty).
    free: Option<u64>,
}

/// Smallest table (log2 of its words) that holds `n` keys at most half full; past
/// [`TABLE_MAX_LOG2`] (a count no store can hold, e.g. a damaged one) it says
/// `TABLE_MAX_LOG2 + 1`, which `rebuild_table` refuses.
fn log2_for(n: u64) -> u32 {
    let want = n.max(1).saturating_mul(2);
    let mut log2 = TABLE_MIN_LOG2;
    while log2 <= TABLE_MAX_LOG2 && table_capacity(log2) < want {
        log2 += 1;
    }
    log2
}

/// A stripe total plus or minus `delta`. Totals are read from the segment: one that would
/// leave the range of a u64 was damaged, and is reported instead of panicking (in debug
/// builds) or wrapping under the stripe lock.
#[inline(always)]
fn adjust(st: &Store, s: usize, what: &str, total: u64, add: u64, sub: u64) -> Result<u64> {
    total
        .checked_add(add)
        .and_then(|t| t.checked_sub(sub))
        .ok_or_else(|| {
            let off = st.stripe_field_offset(s, &st.mem.stripe(s).count);
            Error::corrupt(
                off,
                format!("stripe {s}: {what} {total} + {add} - {sub} out of range"),
            )
        })
}

/// Fill a freshly reserved record block.
pub(crate) fn write_record(
    st: &Store,
    rec: u64,
    key: &[u8],
    value: &[u8],
    meta: u64,
) -> Result<()> {
    let size = record_size(key.len() as u64, value.len() as u64);
    let words = st.mem.words(rec + 8, (size - 8) / 8)?;
    words[0].store(key.len() as u64 | (value.len() as u64) << 32, R);
    words[1].store(0, R); // version: set under the stripe lock (`set_version`)
    words[2].store(meta, R); // expiry (0 = none); reference bit clear
    let kw = (pad8(key.len() as u64) / 8) as usize;
    copy_in(&words[3..3 + kw], key);
    copy_in(&words[3 + kw..], value);
    Ok(())
}

#[inline(always)]
fn find(txn: &Txn<'_, '_>, table_word: u64, hash: u64, key: &[u8]) -> Result<Found> {
    let st = txn.session().st;
    let Some((entries, _)) = st.table_entries(table_word)? else {
        return Ok(Found {
            hit: None,
            free: None,
        });
    };
    let cap = entries.len() as u64;
    let mut i = table_home(hash, cap);
    let mut free = None;
    for _ in 0..cap {
        let e = entries[i as usize].load(R);
        if e == ENTRY_EMPTY {
            return Ok(Found {
                hit: None,
                free: free.or(Some(i)),
            });
        }
        if e == ENTRY_TOMBSTONE {
            free.get_or_insert(i);
        } else if entry_matches(e, hash) && st.record_key_eq(entry_record(e), key)? {
            return Ok(Found {
                hit: Some((i, entry_record(e))),
                free,
            });
        }
        i = table_next(i, cap);
    }
    Ok(Found { hit: None, free })
}

/// Make sure stripe `s` can take `adds` more keys without passing 3/4 load (counting
/// tombstones), rebuilding its table if not.
pub(crate) fn ensure_room(txn: &Txn<'_, '_>, s: usize, adds: u64) -> Result<()> {
    let stripe = txn.session().st.mem.stripe(s);
    let tw = stripe.table.load(R);
    let count = stripe.count.load(R);
    let tombs = stripe.tombstones.load(R);
    if tw == 0 {
        return rebuild_table(txn, s, log2_for(count.saturating_add(adds)), true);
    }
    // The table word is segment data: its capacity must be in range (the entries themselves
    // are bounds-checked by `find`, which decodes the same word right after).
    let log2 = (tw >> TABLE_LOG2_SHIFT) as u32;
    if !(TABLE_MIN_LOG2..=TABLE_MAX_LOG2).contains(&log2) {
        return Err(Error::corrupt(
            tw & TABLE_OFFSET_MASK,
            format!("table capacity 2^{log2}"),
        ));
    }
    let load = count.saturating_add(tombs).saturating_add(adds);
    if load.saturating_mul(4) > 3 * table_capacity(log2) {
        return rebuild_table(txn, s, log2_for(count.saturating_add(adds)).max(log2), true);
    }
    Ok(())
}

/// Replace stripe `s`'s table by a fresh one of `2^log2` words holding the same keys. The
/// keys must fit at most 3/4 full: a table holding more live entries than the stripe's count
/// (a damaged count) is reported, never placed into a table too small for them (which would
/// probe forever under the stripe lock). With `no_growth` (a write inside
/// `Client::with_room`, or a compaction), the new table's block comes from
/// [`Txn::alloc_locked`]: never by growth under the stripe lock (growth zeroes pages for
/// milliseconds, and every reader of the stripe would wait).
fn rebuild_table(txn: &Txn<'_, '_>, s: usize, log2: u32, no_growth: bool) -> Result<()> {
    if log2 > TABLE_MAX_LOG2 {
        return Err(Error::StoreFull {
            hint: "stripe index at its maximum size",
        });
    }
    let sess = txn.session();
    let st = sess.st;
    let stripe = st.mem.stripe(s);
    let nt = if no_growth {
        txn.alloc_locked(table_size(log2))?
    } else {
        txn.alloc(table_size(log2))?
    };
    st.mem.word(nt + 8)?.store(log2 as u64, R);
    let cap = table_capacity(log2);
    let new_entries = st.mem.words(nt + TABLE_HEADER_SIZE, cap)?;
    for w in new_entries {
        w.store(0, R);
    }
    let old = stripe.table.load(R);
    if let Some((entries, _)) = st.table_entries(old)? {
        let live = entries
            .iter()
            .filter(|e| !matches!(e.load(R), ENTRY_EMPTY | ENTRY_TOMBSTONE))
            .count() as u64;
        if live.saturating_mul(4) > 3 * cap {
            return Err(Error::corrupt(
                old & TABLE_OFFSET_MASK,
                format!(
                    "stripe {s}: table holds {live} keys, count says {}",
                    stripe.count.load(R)
                ),
            ));
        }
        let mut key = Vec::new();
        for e in entries {
            let e = e.load(R);
            if e == ENTRY_EMPTY || e == ENTRY_TOMBSTONE {
                continue;
            }
            // Entries keep only a tag of the hash: the key gives the probe start.
            let rec = entry_record(e);
            st.read_key(rec, &mut key)?;
            let hash = st.hash(&key);
            let mut i = table_home(hash, cap);
            while new_entries[i as usize].load(R) != ENTRY_EMPTY {
                i = table_next(i, cap); // ends: at most 3/4 of the new table is filled
            }
            new_entries[i as usize].store(table_entry(hash, rec), R);
        }
        txn.defer_free(old & TABLE_OFFSET_MASK)?;
    }
    crash_point!("table.filled");
    let stripe = txn.stripe_mut(s)?;
    stripe
        .table
        .store(nt | (log2 as u64) << TABLE_LOG2_SHIFT, REL);
    stripe.tombstones.store(0, REL);
    crash_point!("table.published");
    Ok(())
}

/// Rebuild stripe `s`'s table at the size its live keys need, dropping tombstones (and
/// shrinking an oversized table). Returns whether it rebuilt: not when the new table's block
/// would take growth (a compaction is never worth growing the store under the stripe lock;
/// the host grows ahead of the clients, and the next pass tries again).
pub(crate) fn compact(txn: &Txn<'_, '_>, s: usize) -> Result<bool> {
    let stripe = txn.session().st.mem.stripe(s);
    let tw = stripe.table.load(R);
    if tw == 0 {
        return Ok(false);
    }
    match rebuild_table(txn, s, log2_for(stripe.count.load(R)), true) {
        Ok(()) => Ok(true),
        Err(Error::StoreFull { hint }) if hint == crate::alloc::GROW_FIRST => {
            log::debug!("stripe {s}: table compaction skipped (it would grow the store)");
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// Insert or replace `key` -> record `rec` in stripe `s`. Returns true for a replace.
pub(crate) fn put(
    txn: &Txn<'_, '_>,
    s: usize,
    hash: u64,
    key: &[u8],
    rec: u64,
    value_len: usize,
) -> Result<bool> {
    let f = find_for_put(txn, s, hash, key)?;
    put_found(txn, s, hash, rec, value_len, f)
}

/// Find `key` in stripe `s` for a put: a hit (a replace adds no entry) as it is; on a miss,
/// after [`ensure_room`] for one more key, probing again if that rebuilt the table.
#[inline(always)]
fn find_for_put(txn: &Txn<'_, '_>, s: usize, hash: u64, key: &[u8]) -> Result<Found> {
    let table = &txn.session().st.mem.stripe(s).table;
    let tw = table.load(R);
    let f = find(txn, tw, hash, key)?;
    if f.hit.is_some() {
        return Ok(f);
    }
    ensure_room(txn, s, 1)?;
    let now = table.load(R);
    if now == tw {
        return Ok(f);
    }
    find(txn, now, hash, key)
}

/// Store `key` -> `value` (with `meta`) in stripe `s` under its lock: the live record is
/// rewritten in its own block if the value fits it ([`update_in_place`]), else a new record
/// from `alloc` replaces it or is inserted. Returns whether it replaced a key, or `None`
/// when `alloc` had no block to give without waiting long (growth: it returns `None`, see
/// [`Txn::alloc_quick`]): then the key is untouched and the caller puts a record it makes
/// outside the lock. One probe either way.
#[inline(always)]
pub(crate) fn put_value(
    txn: &Txn<'_, '_>,
    s: usize,
    hash: u64,
    key: &[u8],
    value: &[u8],
    meta: u64,
    alloc: impl FnOnce() -> Result<Option<u64>>,
) -> Result<Option<bool>> {
    let st = txn.session().st;
    let f = find_for_put(txn, s, hash, key)?;
    if let Some((_, old)) = f.hit {
        if update_in_place(txn, s, old, value, meta)? {
            return Ok(Some(true));
        }
    }
    let Some(rec) = alloc()? else {
        return Ok(None);
    };
    write_record(st, rec, key, value, meta)?;
    crash_point!("put.prepared");
    put_found(txn, s, hash, rec, value.len(), f).map(Some)
}

/// [`put`] once the key's place in the table is known (`f`, found under the lock after
/// `ensure_room`).
fn put_found(
    txn: &Txn<'_, '_>,
    s: usize,
    hash: u64,
    rec: u64,
    value_len: usize,
    f: Found,
) -> Result<bool> {
    let st = txn.session().st;
    let stripe = st.mem.stripe(s);
    let tw = stripe.table.load(R);
    let toff = tw & TABLE_OFFSET_MASK;
    let entry_off = |i: u64| toff + TABLE_HEADER_SIZE + i * TABLE_ENTRY_SIZE;
    let vb = stripe.value_bytes.load(R);
    // The record is still ours alone (RESERVED): its version is set before it is published.
    st.mem
        .word(rec + RECORD_VERSION_OFFSET)?
        .store(st.next_version(s), R);
    note_expiry(st, s, st.record_meta(rec)?);
    txn.note_change(crate::changelog::SET, rec);
    if let Some((i, old)) = f.hit {
        let (_, old_len) = st.record_lens(old)?;
        let vb = adjust(st, s, "value bytes", vb, value_len as u64, old_len as u64)?;
        txn.set(s, entry_off(i), table_entry(hash, rec))?;
        crash_point!("put.replaced");
        txn.stripe_mut(s)?.value_bytes.store(vb, REL);
        txn.defer_free(old)?;
        return Ok(true);
    }
    let i = f
        .free
        .ok_or_else(|| Error::corrupt(toff, "index table has no free entry"))?;
    let was_tomb = st.mem.word(entry_off(i))?.load(R) == ENTRY_TOMBSTONE;
    let count = adjust(st, s, "count", stripe.count.load(R), 1, 0)?;
    let tombs = stripe.tombstones.load(R);
    let tombs = adjust(st, s, "tombstones", tombs, 0, u64::from(was_tomb))?;
    let vb = adjust(st, s, "value bytes", vb, value_len as u64, 0)?;
    txn.set(s, entry_off(i), table_entry(hash, rec))?;
    crash_point!("put.inserted");
    let stripe = txn.stripe_mut(s)?;
    stripe.count.store(count, REL);
    stripe.tombstones.store(tombs, REL);
    stripe.value_bytes.store(vb, REL);
    Ok(false)
}

/// Replace the value and meta of the live record `rec` of stripe `s` (caller holds the lock,
/// `seq` odd) in its own block, if the new record belongs to the block's size class (a
/// smaller value keeps no bigger block than a new record would get) and key and value take at
/// most [`IN_PLACE_WORDS`] words: every word changed is undo-logged first (one log range for the
/// value, one for lengths, version and meta), so a kill at any point rolls back (or, after
/// the commit, has it all). Readers see the old or the new record (the seqlock); the key's
/// version moves as with a new record; no block is allocated or freed (Redis's SET of a
/// same-size string and its INCR rewrite in place too). Under an LRU policy the write
/// references the record, as a new one starts referenced. Returns false, changing nothing,
/// when it does not fit.
#[inline(always)]
pub(crate) fn update_in_place(
    txn: &Txn<'_, '_>,
    s: usize,
    rec: u64,
    value: &[u8],
    meta: u64,
) -> Result<bool> {
    let st = txn.session().st;
    let words = pad8(value.len() as u64) / 8;
    if words > IN_PLACE_WORDS {
        return Ok(false);
    }
    let (klen, old_len) = st.record_lens(rec)?;
    // The log range below covers the key's words too: a long key takes a new record.
    let kw = pad8(klen as u64) / 8;
    if kw + words > IN_PLACE_WORDS {
        return Ok(false);
    }
    // A record of the same size keeps its block whatever its class (no lookup: the common
    // case, a value overwritten by one of its length or a counter keeping its digits). Else
    // the block's class must be the one a new record of this size would get (`class_for`,
    // without its search). (Key and value within IN_PLACE_WORDS are never a span.)
    let size = record_size(klen as u64, value.len() as u64);
    if size != record_size(klen as u64, old_len as u64) {
        let Some(c) = crate::alloc::Allocator::new(txn.session()).class_block(rec)? else {
            return Ok(false); // a span
        };
        if size > CLASS_SIZES[c] as u64 || (c > 0 && size <= CLASS_SIZES[c - 1] as u64) {
            return Ok(false);
        }
    }
    let stripe = st.mem.stripe(s);
    let vb = adjust(
        st,
        s,
        "value bytes",
        stripe.value_bytes.load(R),
        value.len() as u64,
        old_len as u64,
    )?;
    // One log range from the lengths to the new value's end (the key's words, unchanged,
    // come along: cheaper than a second range).
    let all = txn.log_range(s, rec + RECORD_LENS_OFFSET, (3 + kw + words) as usize)?;
    crate::mem::copy_words_in(&all[3 + kw as usize..], value);
    crash_point!("modify.in_place");
    all[0].store(klen as u64 | (value.len() as u64) << 32, REL);
    all[1].store(st.next_version(s), REL);
    all[2].store(meta, REL);
    note_expiry(st, s, meta);
    if vb != stripe.value_bytes.load(R) {
        txn.stripe_mut(s)?.value_bytes.store(vb, REL);
    }
    st.reference(rec);
    txn.note_change(crate::changelog::SET, rec);
    Ok(true)
}

/// Lower stripe `s`'s `next_expiry` hint to a record's expiry (caller holds the lock).
#[inline(always)]
pub(crate) fn note_expiry(st: &Store, s: usize, meta: u64) {
    let exp = meta & META_EXPIRY_MASK;
    if exp != 0 {
        let hint = &st.mem.stripe(s).next_expiry;
        let cur = hint.load(R);
        if cur == 0 || exp < cur {
            hint.store(exp, REL);
        }
    }
}

/// The record of `key` in stripe `s` (caller holds the stripe lock), if present and not
/// expired (an expired record is absent for a read-modify-write too; writing replaces it).
pub(crate) fn lookup(txn: &Txn<'_, '_>, s: usize, hash: u64, key: &[u8]) -> Result<Option<u64>> {
    let st = txn.session().st;
    let tw = st.mem.stripe(s).table.load(R);
    match find(txn, tw, hash, key)?.hit {
        Some((_, rec)) if !st.record_expired(rec)? => Ok(Some(rec)),
        _ => Ok(None),
    }
}

/// The record of `key` in stripe `s`, expired or not (caller holds the stripe lock).
pub(crate) fn find_record(
    txn: &Txn<'_, '_>,
    s: usize,
    hash: u64,
    key: &[u8],
) -> Result<Option<u64>> {
    let tw = txn.session().st.mem.stripe(s).table.load(R);
    Ok(find(txn, tw, hash, key)?.hit.map(|(_, rec)| rec))
}

/// Point `key`'s entry in stripe `s` at `new`, a copy of its record `old` (caller holds the
/// stripe lock): the compaction of a sparse chunk (`client/evacuate.rs`). The key's version,
/// value, expiry and the stripe's counts stay; nothing is noted for the change log (no key
/// changed); `old` is freed after the commit. Returns false, changing nothing, if the key's
/// record is not `old` any more.
pub(crate) fn relocate(
    txn: &Txn<'_, '_>,
    s: usize,
    hash: u64,
    key: &[u8],
    old: u64,
    new: u64,
) -> Result<bool> {
    let st = txn.session().st;
    let tw = st.mem.stripe(s).table.load(R);
    let Some((i, rec)) = find(txn, tw, hash, key)?.hit else {
        return Ok(false);
    };
    if rec != old {
        return Ok(false);
    }
    let entry = (tw & TABLE_OFFSET_MASK) + TABLE_HEADER_SIZE + i * TABLE_ENTRY_SIZE;
    txn.set(s, entry, table_entry(hash, new))?;
    crash_point!("evacuate.moved");
    txn.defer_free(old)?;
    Ok(true)
}

/// Rebuild stripe `s`'s table in a new block (caller holds the stripe lock): the compaction of
/// a sparse chunk that holds the table.
pub(crate) fn relocate_table(txn: &Txn<'_, '_>, s: usize) -> Result<bool> {
    compact(txn, s)
}

/// Remove `key` from stripe `s`. Returns whether it was there (an expired record is removed
/// too, but was not there for the caller).
pub(crate) fn remove(txn: &Txn<'_, '_>, s: usize, hash: u64, key: &[u8]) -> Result<bool> {
    let st = txn.session().st;
    let stripe = st.mem.stripe(s);
    let tw = stripe.table.load(R);
    let Some((i, rec)) = find(txn, tw, hash, key)?.hit else {
        return Ok(false);
    };
    // The stripe's revision counts removes too (stats). A later insert would get a higher
    // version than the removed record's without it: inserts bump the revision themselves.
    st.next_version(s);
    let toff = tw & TABLE_OFFSET_MASK;
    let log2 = (tw >> TABLE_LOG2_SHIFT) as u32;
    let next = table_next(i, table_capacity(log2));
    let next_rec = st
        .mem
        .word(toff + TABLE_HEADER_SIZE + next * TABLE_ENTRY_SIZE)?
        .load(R);
    // No probe path runs through entry i if the next entry was never used.
    let mark = if next_rec == ENTRY_EMPTY {
        ENTRY_EMPTY
    } else {
        ENTRY_TOMBSTONE
    };
    let (_, vlen) = st.record_lens(rec)?;
    let count = adjust(st, s, "count", stripe.count.load(R), 0, 1)?;
    let tombs = stripe.tombstones.load(R);
    let tombs = adjust(
        st,
        s,
        "tombstones",
        tombs,
        u64::from(mark == ENTRY_TOMBSTONE),
        0,
    )?;
    let vb = stripe.value_bytes.load(R);
    let vb = adjust(st, s, "value bytes", vb, 0, vlen as u64)?;
    txn.set(s, toff + TABLE_HEADER_SIZE + i * TABLE_ENTRY_SIZE, mark)?;
    crash_point!("remove.unlinked");
    let stripe = txn.stripe_mut(s)?;
    stripe.count.store(count, REL);
    stripe.tombstones.store(tombs, REL);
    stripe.value_bytes.store(vb, REL);
    let expired = st.record_expired(rec)?;
    txn.defer_free(rec)?;
    txn.note_change(crate::changelog::DEL, rec);
    Ok(!expired)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_stay_at_most_half_full_after_sizing() {
        assert_eq!(log2_for(0), TABLE_MIN_LOG2);
        assert_eq!(log2_for(3), TABLE_MIN_LOG2);
        assert_eq!(log2_for(4), 4);
        for n in [1u64, 7, 100, 12_345] {
            let l = log2_for(n);
            assert!(n * 2 <= table_capacity(l));
            assert!(l == TABLE_MIN_LOG2 || n * 2 > table_capacity(l - 1));
        }
        // A table is a whole power-of-two block: a size class, or one chunk at 2^15 words.
        for l in TABLE_MIN_LOG2..=15 {
            assert_eq!(
                CLASS_SIZES[class_for(table_size(l)).unwrap()] as u64,
                table_size(l)
            );
        }
        assert_eq!(table_size(15), CHUNK_SIZE);
    }
}
