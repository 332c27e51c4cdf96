//! An attached segment: format, attach and validation, hashing, and the lock-free read path.
//!
//! Readers never write to the stripes, tables or records (a writable client's read bumps only
//! its own slot's counters; a read-only client writes nothing at all). A read loads the stripe's `seq` (Acquire), retries while
//! it is odd, probes the table and copies the key and value out word by word (Relaxed atomic
//! loads), then `fence(Acquire)` and re-reads `seq`: if it moved, everything read may be torn
//! and the attempt is discarded. Offsets read during an attempt are bounds-checked, so a torn
//! offset yields an error that is discarded too; only an error seen with an unchanged `seq` is
//! reported (it is real corruption).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::{Config, Geometry};
use crate::error::{Error, Result};
use crate::layout::*;
use crate::mem::Mem;
use crate::segment;
use crate::sync::seqlock;

/// The most one growth adds beyond what its caller needs. Growth allocates (and the kernel
/// zeroes) the new pages while the operation that needed them waits: on tmpfs that costs
/// about 0.25 ms per MiB here, so 8 MiB keeps a growing insert near 2 ms, where the old
/// "grow by half" took 300 ms at 2 GiB. It also bounds committed-but-unused memory.
pub const GROW_STEP_MAX: u64 = 8 << 20;

/// Optimistic read attempts (spinning, then yielding) before the clock is read.
pub(crate) const OPTIMISTIC_READS: u32 = 64;

/// How long a read keeps making optimistic attempts (yielding between them) before a writable
/// client falls back to the stripe lock. Holds of a stripe are short (a write, an expiry
/// batch, a verify step: well under 1 ms), so a reader that outwaits one this way never
/// sleeps on the lock's futex, whose wake-up can come milliseconds late on a busy machine
/// (issue 14: single gets of 1.7-4.8 ms, each put down to a sleep by `expiry_reclaim
/// attribute`). Waiting costs the holder nothing: a reader writes nothing.
pub(crate) const READ_PATIENCE: std::time::Duration = std::time::Duration::from_micros(500);

/// An attached segment (one open file description and one mapping).
#[derive(Debug)]
pub(crate) struct Store {
    pub mem: Mem,
    pub file: File,
    pub path: PathBuf,
    pub seed: u64,
    pub max_key: usize,
    pub max_value: usize,
    pub stripe_shift: u32,
    pub chunk_base: u64,
    pub reserve: u64,
    /// Mapped for writing (a read-only attachment writes nothing, not even reference bits).
    pub writable: bool,
    pub(crate) grow_mutex: std::sync::Mutex<()>,
    /// Lock waits of this attachment (process-local; see [`crate::Client::lock_waits`]).
    pub(crate) lock_waits: LockWaits,
    pub(crate) slot_page_mutex: std::sync::Mutex<()>,
    /// This attachment holds the host lock (it is a `Host`'s): its own liveness probe cannot
    /// see that lock (an OFD lock does not conflict with its own description).
    pub(crate) hosting: std::sync::atomic::AtomicBool,
    /// The change log, if the store keeps one (`changelog.rs`).
    pub(crate) clog: Option<ChangelogRegion>,
}

impl Drop for Store {
    fn drop(&mut self) {
        // Before the descriptors close: their numbers may be reused by any file.
        segment::unregister_fork_fd(&self.file);
        if let Some(f) = self.mem.file() {
            segment::unregister_fork_fd(f);
        }
    }
}

/// Lock takes that had to wait, and how long they waited in all.
#[derive(Debug, Default)]
pub(crate) struct WaitCounter {
    waits: AtomicU64,
    nanos: AtomicU64,
}

impl WaitCounter {
    pub(crate) fn record(&self, d: std::time::Duration) {
        self.waits.fetch_add(1, Ordering::Relaxed);
        self.nanos
            .fetch_add(d.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
    }
    fn get(&self) -> (u64, u64) {
        (
            self.waits.load(Ordering::Relaxed),
            self.nanos.load(Ordering::Relaxed),
        )
    }
}

/// Lock waits of one attachment: stripe locks, and every other lock word (allocator class
/// and span locks, slot-page lock).
#[derive(Debug, Default)]
pub(crate) struct LockWaits {
    pub stripe: WaitCounter,
    pub other: WaitCounter,
}

/// What [`crate::Client::lock_waits`] reports: lock takes of this client that did not succeed
/// at once, and the time they waited (spinning, sleeping, recovering a dead owner).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LockWaitStats {
    pub stripe_waits: u64,
    pub stripe_wait_ns: u64,
    /// Allocator class and span locks (and the rarely taken slot-page lock).
    pub alloc_waits: u64,
    pub alloc_wait_ns: u64,
}

impl LockWaits {
    pub(crate) fn stats(&self) -> LockWaitStats {
        let (stripe_waits, stripe_wait_ns) = self.stripe.get();
        let (alloc_waits, alloc_wait_ns) = self.other.get();
        LockWaitStats {
            stripe_waits,
            stripe_wait_ns,
            alloc_waits,
            alloc_wait_ns,
        }
    }
}

/// Outcome of one optimistic read attempt.
pub(crate) enum Attempt<T> {
    Done(Result<T>),
    /// The stripe changed under us (or a writer holds it): try again.
    Retry,
}

/// The change log region of a store (if it has one), checked against the mapping.
fn changelog_region(mem: &Mem) -> Result<Option<ChangelogRegion>> {
    let h = mem.header();
    let off = h.changelog_offset.load(Ordering::Relaxed);
    let len = h.changelog_len.load(Ordering::Relaxed);
    if len == 0 {
        return Ok(None);
    }
    let cap = mem.word(off + CLOG_CAP)?.load(Ordering::Relaxed);
    if len < CLOG_CONTROL_SIZE || cap != len - CLOG_CONTROL_SIZE || !cap.is_power_of_two() {
        return Err(Error::corrupt(off, format!("change log capacity {cap}")));
    }
    mem.words(off + CLOG_CONTROL_SIZE, cap / 8)?;
    Ok(Some(ChangelogRegion { off, cap }))
}

fn header_u64(buf: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(buf[off..off + 8].try_into().expect("8 bytes"))
}
fn header_u32(buf: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(buf[off..off + 4].try_into().expect("4 bytes"))
}

impl Store {
    /// Create and format a new store file. The file is removed again if formatting fails.
    pub fn format(name: &str, cfg: &Config) -> Result<Store> {
        Store::format_at(segment::store_path(&cfg.dir, name)?, cfg)
    }

    /// [`Store::format`] at `path` (in `cfg`'s directory; a name that is not a store's, such as
    /// the hidden one a store is loaded under before it gets its own).
    pub fn format_at(path: PathBuf, cfg: &Config) -> Result<Store> {
        cfg.validate()?;
        segment::check_dir(&cfg.dir)?;
        let geo = Geometry::new(cfg.stripes, cfg.max_size, cfg.changelog)?;
        let file = segment::create_file(&path, cfg.mode)?;
        crate::crash_point!("format.created");
        let made = (|| {
            let committed = geo.initial_committed(cfg.initial_size);
            segment::allocate(&file, 0, committed)?;
            let map = segment::map(&file, geo.reserve, true)?;
            let mut mem = Mem::new(map);
            let h = mem.header();
            let r = Ordering::Relaxed;
            h.layout_version.store(
                if geo.changelog_len == 0 {
                    LAYOUT_VERSION
                } else {
                    LAYOUT_VERSION_CHANGELOG
                },
                r,
            );
            h.changelog_offset.store(geo.changelog_offset, r);
            h.changelog_len.store(geo.changelog_len, r);

            h.header_size.store(HEADER_SIZE as u32, r);
            h.layout_signature.store(layout_signature(), r);
            h.hash_seed.store(segment::random_u64(), r);
            h.max_key_len.store(cfg.max_key_len as u32, r);
            h.max_value_len.store(cfg.max_value_len as u32, r);
            h.stripe_count.store(cfg.stripes, r);
            h.stripe_shift.store(cfg.stripes.trailing_zeros(), r);
            h.reserve_len.store(geo.reserve, r);
            h.stripes_offset.store(geo.stripes_offset, r);
            h.chunk_map_offset.store(geo.chunk_map_offset, r);
            h.chunk_count.store(geo.chunk_count, r);
            h.slot_page0_offset.store(geo.slot_page0_offset, r);
            h.chunk_base.store(geo.chunk_base, r);
            h.created_unix.store(now_unix(), r);
            h.committed_len.store(committed, r);
            h.slot_pages[0].store(geo.slot_page0_offset, r);
            // Everything else (stripes, chunk map, slots, allocator roots) is zero = valid.
            mem.set_regions(
                committed,
                geo.stripes_offset,
                cfg.stripes as u64,
                geo.chunk_map_offset,
                geo.chunk_count,
            )?;
            if geo.changelog_len != 0 {
                // The control block of an empty log (the ring is zero).
                let o = geo.changelog_offset;
                mem.word(o + CLOG_CAP)?
                    .store(geo.changelog_len - CLOG_CONTROL_SIZE, r);
                mem.word(o + CLOG_NEXT_SEQ)?.store(1, r);
            }
            mem.header().magic.store(MAGIC, Ordering::Release);
            Ok(mem)
        })();
        match made {
            Ok(mem) => Store::from_parts(mem, file, path, true),
            Err(e) => {
                let _ = segment::remove_file(&path);
                Err(e)
            }
        }
    }

    /// How long attach waits for a store file whose creation may be under way (see
    /// [`Store::attach`]).
    pub const CREATION_PATIENCE: std::time::Duration = std::time::Duration::from_millis(1000);

    /// Attach to an existing store file, validating everything before mapping it.
    pub fn attach(path: &Path, writable: bool) -> Result<Store> {
        if let Some(dir) = path.parent() {
            segment::check_dir(dir)?;
        }
        let file = segment::open_file(path, writable)?;
        let incompatible = |what: String| Err(Error::Incompatible { what });
        use core::mem::offset_of as off;
        // A store being created has its name before its header is whole (`Store::format`
        // sizes the file, then publishes `magic` last): a client started with its host may
        // open it in between. Such a file gets `CREATION_PATIENCE` to become a store before it
        // is called unformatted.
        let patience = std::time::Instant::now() + Store::CREATION_PATIENCE;
        let mut buf = vec![0u8; HEADER_SIZE as usize];
        let file_len = loop {
            let file_len = file.metadata()?.len();
            let formatted = file_len >= HEADER_SIZE && {
                crate::crash_point!("attach.length_read");
                segment::read_at(&file, &mut buf, 0)?;
                header_u64(&buf, off!(Header, magic)) != 0
            };
            if formatted {
                break file_len;
            }
            if std::time::Instant::now() >= patience {
                return if file_len < HEADER_SIZE {
                    incompatible(format!("file is {file_len} bytes, shorter than a header"))
                } else {
                    incompatible("not formatted (creation interrupted?)".into())
                };
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        };
        // The length again, after the header: a growth extends the file before it raises
        // `committed_len` (`Store::grow`), and the file never shrinks, so a header read first
        // never claims more than the length read after it. (With only a length read before
        // the header, a store growing meanwhile was refused as truncated: a client killed and
        // restarted in a storm once failed to attach so.)
        let file_len = file_len.max(file.metadata()?.len());
        let magic = header_u64(&buf, off!(Header, magic));
        if magic != MAGIC {
            return incompatible("not a kvshm store (bad magic)".into());
        }
        let version = header_u32(&buf, off!(Header, layout_version));
        if version != LAYOUT_VERSION && version != LAYOUT_VERSION_CHANGELOG {
            return incompatible(format!(
                "layout version {version}, this build reads {LAYOUT_VERSION} and \
                 {LAYOUT_VERSION_CHANGELOG} (with a change log)"
            ));
        }
        let changelog_len = if version == LAYOUT_VERSION_CHANGELOG {
            header_u64(&buf, off!(Header, changelog_len))
        } else {
            0
        };
        if header_u64(&buf, off!(Header, layout_signature)) != layout_signature()
            || header_u32(&buf, off!(Header, header_size)) as u64 != HEADER_SIZE
        {
            return incompatible("layout signature differs (built with another layout)".into());
        }
        let reserve = header_u64(&buf, off!(Header, reserve_len));
        let committed = header_u64(&buf, off!(Header, committed_len));
        let stripes = header_u32(&buf, off!(Header, stripe_count));
        let shift = header_u32(&buf, off!(Header, stripe_shift));
        let max_key = header_u32(&buf, off!(Header, max_key_len)) as usize;
        let max_value = header_u32(&buf, off!(Header, max_value_len)) as usize;
        // The geometry takes the ring size asked for (a power of two stays itself).
        let ring = changelog_len.saturating_sub(CLOG_CONTROL_SIZE);
        let geo = (changelog_len <= crate::config::MAX_CHANGELOG + CLOG_CONTROL_SIZE
            && (changelog_len == 0 || ring.is_power_of_two()))
        .then(|| Geometry::new(stripes, reserve, ring).ok())
        .flatten();
        let corrupt = |what: &str| Err(Error::corrupt(0, what));
        if !stripes.is_power_of_two() || stripes > MAX_STRIPES || 1u32 << shift != stripes {
            return corrupt("bad stripe count");
        }
        if reserve > MAX_RESERVE || committed > reserve || committed > file_len {
            return corrupt("committed length beyond the reserve or the file (truncated?)");
        }
        if max_key == 0
            || max_key > crate::config::MAX_KEY_LIMIT
            || max_value > crate::config::MAX_VALUE_LIMIT
        {
            return corrupt("bad key/value limits");
        }
        let geo = match geo {
            Some(g) => g,
            None => return corrupt("bad geometry"),
        };
        if header_u64(&buf, off!(Header, stripes_offset)) != geo.stripes_offset
            || header_u64(&buf, off!(Header, chunk_map_offset)) != geo.chunk_map_offset
            || header_u64(&buf, off!(Header, chunk_count)) != geo.chunk_count
            || header_u64(&buf, off!(Header, chunk_base)) != geo.chunk_base
            || header_u64(&buf, off!(Header, slot_page0_offset)) != geo.slot_page0_offset
            || geo.changelog_len != changelog_len
            || (changelog_len != 0
                && header_u64(&buf, off!(Header, changelog_offset)) != geo.changelog_offset)
            || committed < geo.min_committed()
        {
            return corrupt("region offsets do not match the geometry");
        }
        let map = segment::map(&file, reserve, writable)?;
        let mut mem = Mem::new(map);
        mem.set_regions(
            committed,
            geo.stripes_offset,
            stripes as u64,
            geo.chunk_map_offset,
            geo.chunk_count,
        )?;
        Store::from_parts(mem, file, path.to_path_buf(), writable)
    }

    fn from_parts(mut mem: Mem, file: File, path: PathBuf, writable: bool) -> Result<Store> {
        let mem_file = file.try_clone()?;
        segment::register_fork_fd(&file, Some(mem.map_range()));
        segment::register_fork_fd(&mem_file, None);
        mem.set_file(mem_file);
        let clog = changelog_region(&mem)?;
        if let Some(r) = clog {
            mem.set_changelog(r.off, CLOG_CONTROL_SIZE + r.cap)?;
        }
        let h = mem.header();
        let r = Ordering::Relaxed;
        Ok(Store {
            clog,
            seed: h.hash_seed.load(r),
            max_key: h.max_key_len.load(r) as usize,
            max_value: h.max_value_len.load(r) as usize,
            stripe_shift: h.stripe_shift.load(r),
            chunk_base: h.chunk_base.load(r),
            reserve: h.reserve_len.load(r),
            mem,
            file,
            path,
            writable,
            grow_mutex: std::sync::Mutex::new(()),
            lock_waits: LockWaits::default(),
            slot_page_mutex: std::sync::Mutex::new(()),
            hosting: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Grow the committed length to at least `min` (by half the current size, at most
    /// [`GROW_STEP_MAX`] beyond what `min` needs, in whole chunks),
    /// backed by real allocation of the file, then publish it. Serialised across processes by
    /// an OFD byte lock (released by the kernel if the holder dies; the steps are idempotent)
    /// and within the process by `grow_mutex` (OFD locks do not exclude their own description).
    pub fn grow(&self, min: u64) -> Result<()> {
        if self.mem.committed() >= min {
            return Ok(());
        }
        if min > self.reserve {
            return Err(Error::StoreFull {
                hint: "store reached its maximum size",
            });
        }
        self.with_grow_lock(|| {
            let h = self.mem.header();
            // What the file backs, not what the header says: a damaged (raised) committed_len
            // is allocated for real here before it is published again.
            let file_len = self.file.metadata()?.len();
            let cur = h.committed_len.load(Ordering::Acquire).min(file_len);
            if cur >= min {
                return Ok(());
            }
            let step = (cur + (cur / 2).min(GROW_STEP_MAX))
                .max(min)
                .div_ceil(CHUNK_SIZE)
                * CHUNK_SIZE;
            let mut new = step.min(self.reserve);
            if segment::allocate(&self.file, cur, new).is_err() {
                // The generous step may not fit where the minimum still does.
                new = min;
                segment::allocate(&self.file, cur, new)?;
            }
            crate::crash_point!("grow.allocated");
            h.committed_len.store(new, Ordering::Release);
            h.growth_count.fetch_add(1, Ordering::Relaxed);
            log::debug!("store grew from {cur} to {new} bytes");
            Ok(())
        })
    }

    #[inline(always)]
    pub fn hash(&self, key: &[u8]) -> u64 {
        xxhash_rust::xxh3::xxh3_64_with_seed(key, self.seed)
    }

    #[inline]
    pub fn stripe_of(&self, hash: u64) -> usize {
        if self.stripe_shift == 0 {
            0
        } else {
            (hash >> (64 - self.stripe_shift)) as usize
        }
    }

    pub fn check_limits(&self, key: &[u8], value: Option<&[u8]>) -> Result<()> {
        if key.len() > self.max_key {
            return Err(Error::KeyTooLong {
                len: key.len(),
                max: self.max_key,
            });
        }
        if let Some(v) = value {
            if v.len() > self.max_value {
                return Err(Error::ValueTooLong {
                    len: v.len(),
                    max: self.max_value,
                });
            }
        }
        Ok(())
    }

    /// Offset of client slot `idx`, if its page exists.
    pub fn slot_offset(&self, idx: u32) -> Option<u64> {
        let (page, first) = slot_page_of(idx);
        let base = self
            .mem
            .header()
            .slot_pages
            .get(page)?
            .load(Ordering::Acquire);
        if base == 0 {
            return None;
        }
        Some(base + (idx as u64 - first) * SLOT_SIZE)
    }

    /// Offset of a stripe field, for undo entries.
    pub fn stripe_field_offset(&self, stripe: usize, field: &AtomicU64) -> u64 {
        let st = self.mem.stripe(stripe) as *const Stripe as usize;
        let f = field as *const AtomicU64 as usize;
        debug_assert!(f >= st && f < st + STRIPE_SIZE as usize);
        self.mem.header().stripes_offset.load(Ordering::Relaxed)
            + stripe as u64 * STRIPE_SIZE
            + (f - st) as u64
    }

    // ---- records and tables (shared by readers and writers) ----

    /// Decode and check a table word: (its entries, log2 of the table's words).
    #[inline]
    pub fn table_entries(&self, table_word: u64) -> Result<Option<(&[AtomicU64], u32)>> {
        if table_word == 0 {
            return Ok(None);
        }
        let off = table_word & TABLE_OFFSET_MASK;
        let log2 = (table_word >> TABLE_LOG2_SHIFT) as u32;
        if !(TABLE_MIN_LOG2..=TABLE_MAX_LOG2).contains(&log2) {
            return Err(Error::corrupt(off, format!("table capacity 2^{log2}")));
        }
        let entries = self
            .mem
            .words(off + TABLE_HEADER_SIZE, table_capacity(log2))?;
        Ok(Some((entries, log2)))
    }

    /// Lengths of the record at `off`, checked against the store limits.
    // Always inlined: on every read's path (callgrind: a call here cost ~50 instructions per
    // get once `scan` became another caller and LLVM stopped inlining it).
    #[inline(always)]
    pub fn record_lens(&self, off: u64) -> Result<(usize, usize)> {
        let lens = self
            .mem
            .word(off + RECORD_LENS_OFFSET)?
            .load(Ordering::Relaxed);
        let (k, v) = ((lens & 0xffff_ffff) as usize, (lens >> 32) as usize);
        if k > self.max_key || v > self.max_value {
            return Err(lens_over_limits(off, k, v));
        }
        Ok((k, v))
    }

    /// The meta word of the record at `off` (expiry in its low 48 bits).
    #[inline(always)]
    pub fn record_meta(&self, off: u64) -> Result<u64> {
        Ok(self
            .mem
            .word(off + RECORD_META_OFFSET)?
            .load(Ordering::Relaxed))
    }

    /// Whether the record at `off` is past its expiry. The clock is read only for a record
    /// that has one: a get of a key without a TTL pays one load of a word in the record's first
    /// cache line.
    #[inline(always)]
    pub fn record_expired(&self, off: u64) -> Result<bool> {
        let exp = self.record_meta(off)? & META_EXPIRY_MASK;
        Ok(exp != 0 && now_ms() >= exp)
    }

    /// The version stored in the record at `off`.
    #[inline]
    pub fn record_version(&self, off: u64) -> Result<u64> {
        Ok(self
            .mem
            .word(off + RECORD_VERSION_OFFSET)?
            .load(Ordering::Relaxed))
    }

    /// The version of the next write to stripe `s` (the caller holds its lock): the stripe's
    /// revision, bumped, with the stripe number in the low 16 bits. Unique store-wide and
    /// increasing per key (a key always lives in one stripe, whose revision never goes back,
    /// not even when a transaction rolls back: that only leaves a gap). Not one global order:
    /// a store-wide counter would put one contended cache line in every write of every
    /// process (docs/ARCHITECTURE.md, "Versions").
    #[inline(always)]
    pub(crate) fn next_version(&self, s: usize) -> u64 {
        let stripe = self.mem.stripe(s);
        let r = stripe.revision.load(Ordering::Relaxed) + 1;
        stripe.revision.store(r, Ordering::Release);
        r << 16 | s as u64
    }

    /// Whether the record at `off` holds `key`.
    #[inline(always)]
    pub fn record_key_eq(&self, off: u64, key: &[u8]) -> Result<bool> {
        let (klen, _) = self.record_lens(off)?;
        if klen != key.len() {
            return Ok(false);
        }
        let words = self
            .mem
            .words(off + RECORD_HEADER_SIZE, pad8(klen as u64) / 8)?;
        Ok(words_eq(words, key))
    }

    /// Copy the key of the record at `off` into `out`.
    pub fn read_key(&self, off: u64, out: &mut Vec<u8>) -> Result<()> {
        let (klen, _) = self.record_lens(off)?;
        let words = self
            .mem
            .words(off + RECORD_HEADER_SIZE, pad8(klen as u64) / 8)?;
        copy_out(words, klen, out);
        Ok(())
    }

    /// Copy the value of the record at `off` into `out`.
    #[inline(always)]
    pub fn read_value(&self, off: u64, out: &mut Vec<u8>) -> Result<()> {
        let (klen, vlen) = self.record_lens(off)?;
        let start = off + RECORD_HEADER_SIZE + pad8(klen as u64);
        let words = self.mem.words(start, pad8(vlen as u64) / 8)?;
        copy_out(words, vlen, out);
        Ok(())
    }

    /// Find `key` in a table; `Some(record offset)` when present and not expired.
    #[inline]
    pub fn probe(&self, table_word: u64, hash: u64, key: &[u8]) -> Result<Option<u64>> {
        self.probe_inner::<true>(table_word, hash, key)
    }

    /// Find `key`'s record in a table, expired or not.
    #[inline]
    pub fn probe_raw(&self, table_word: u64, hash: u64, key: &[u8]) -> Result<Option<u64>> {
        self.probe_inner::<false>(table_word, hash, key)
    }

    /// The probe loop. With `LIVE`, a record past its expiry is absent: its meta word is read
    /// with the lengths (one bounds check for both), and the clock only if it has an expiry.
    #[inline(always)]
    fn probe_inner<const LIVE: bool>(
        &self,
        table_word: u64,
        hash: u64,
        key: &[u8],
    ) -> Result<Option<u64>> {
        let Some((entries, _)) = self.table_entries(table_word)? else {
            return Ok(None);
        };
        let cap = entries.len() as u64;
        let mut i = table_home(hash, cap);
        for _ in 0..cap {
            let e = entries[i as usize].load(Ordering::Relaxed);
            if e == ENTRY_EMPTY {
                return Ok(None);
            }
            if e != ENTRY_TOMBSTONE && entry_matches(e, hash) {
                let rec = entry_record(e);
                // [lens][version][meta]
                let head = self.mem.words(rec + RECORD_LENS_OFFSET, 3)?;
                let lens = head[0].load(Ordering::Relaxed);
                let (k, v) = ((lens & 0xffff_ffff) as usize, (lens >> 32) as usize);
                if k > self.max_key || v > self.max_value {
                    return Err(Error::corrupt(
                        rec,
                        format!("record lengths {k}/{v} over the limits"),
                    ));
                }
                if k == key.len()
                    && words_eq(
                        self.mem
                            .words(rec + RECORD_HEADER_SIZE, pad8(k as u64) / 8)?,
                        key,
                    )
                {
                    if LIVE {
                        let exp = head[2].load(Ordering::Relaxed) & META_EXPIRY_MASK;
                        if exp != 0 && now_ms() >= exp {
                            return Ok(None);
                        }
                        self.reference(rec);
                    }
                    return Ok(Some(rec));
                }
            }
            i = table_next(i, cap);
        }
        Ok(None)
    }

    /// A read found the record at `rec`: under an LRU eviction policy, set its tag's
    /// reference bit if clear. One CAS from exactly the LIVE tag just loaded: if the block was
    /// freed or reused meanwhile the word differs (or the bit lands on the record now there,
    /// a harmless hint). Nothing is written once the bit is set, nor by read-only clients.
    #[inline(always)]
    pub(crate) fn reference(&self, rec: u64) {
        if !self.writable || !eviction_is_lru(self.mem.header().eviction.load(Ordering::Relaxed)) {
            return;
        }
        if let Ok(w) = self.mem.word(rec) {
            let t = w.load(Ordering::Relaxed);
            if live_unreferenced(t) {
                let _ = w.compare_exchange(t, t | TAG_REF, Ordering::Relaxed, Ordering::Relaxed);
            }
        }
    }

    /// One optimistic (lock-free, write-free) attempt to run `f` against a consistent view of
    /// stripe `s`.
    #[inline]
    pub fn attempt<T>(&self, s: usize, f: impl FnOnce() -> Result<T>) -> Attempt<T> {
        let seq = &self.mem.stripe(s).seq;
        let Some(s1) = seqlock::read_begin(seq) else {
            return Attempt::Retry;
        };
        let r = f();
        if !seqlock::read_validate(seq, s1) {
            return Attempt::Retry;
        }
        Attempt::Done(r)
    }

    /// [`Store::attempt`] over several stripes (sorted, distinct) at once.
    pub fn attempt_all<T>(&self, stripes: &[usize], f: impl FnOnce() -> Result<T>) -> Attempt<T> {
        if let [s] = stripes {
            return self.attempt(*s, f);
        }
        let seqs: Option<Vec<u64>> = stripes
            .iter()
            .map(|&s| seqlock::read_begin(&self.mem.stripe(s).seq))
            .collect();
        let Some(seqs) = seqs else {
            return Attempt::Retry;
        };
        let r = f();
        let unchanged = stripes
            .iter()
            .zip(&seqs)
            .all(|(&s, &q)| seqlock::read_validate(&self.mem.stripe(s).seq, q));
        if !unchanged {
            return Attempt::Retry;
        }
        Attempt::Done(r)
    }

    /// Lock-free read of `key` from stripe `s` into `out`. `None` when no consistent view was
    /// had within [`optimistic`]'s patience.
    #[inline]
    pub fn read_optimistic(
        &self,
        s: usize,
        hash: u64,
        key: &[u8],
        out: &mut Vec<u8>,
    ) -> Option<Result<bool>> {
        let st = self.mem.stripe(s);
        optimistic(|| {
            self.attempt(s, || {
                let tw = st.table.load(Ordering::Relaxed);
                match self.probe(tw, hash, key)? {
                    Some(rec) => self.read_value(rec, out).map(|_| true),
                    None => Ok(false),
                }
            })
        })
    }

    /// Every (record offset) of stripe `s` as seen by the caller's consistent view.
    pub fn stripe_records(&self, s: usize) -> Result<Vec<u64>> {
        let st = self.mem.stripe(s);
        let tw = st.table.load(Ordering::Relaxed);
        let mut out = Vec::new();
        if let Some((entries, _)) = self.table_entries(tw)? {
            for e in entries {
                let e = e.load(Ordering::Relaxed);
                if e != ENTRY_EMPTY && e != ENTRY_TOMBSTONE {
                    out.push(entry_record(e));
                }
            }
        }
        Ok(out)
    }
}

/// Run `attempt` until it is done: [`OPTIMISTIC_READS`] times with [`backoff`], then, yielding
/// between attempts, until [`READ_PATIENCE`] has passed. `None`: still not done.
// Always inlined, with one call of `attempt` (two call sites made LLVM put the read's closure
// out of line: ~48 more instructions per get, callgrind).
#[inline(always)]
pub(crate) fn optimistic<T>(mut attempt: impl FnMut() -> Attempt<T>) -> Option<Result<T>> {
    let mut i = 0;
    let mut since: Option<std::time::Instant> = None;
    loop {
        if let Attempt::Done(r) = attempt() {
            return Some(r);
        }
        if i < OPTIMISTIC_READS {
            backoff(i);
            i += 1;
            continue;
        }
        if since.get_or_insert_with(std::time::Instant::now).elapsed() >= READ_PATIENCE {
            return None;
        }
        std::thread::yield_now();
    }
}

/// Wait between optimistic read attempts: spin for the first few (a writer's critical section
/// is short), then yield the CPU (the writer may be descheduled).
#[inline]
pub(crate) fn backoff(attempt: u32) {
    if attempt > 8 {
        std::thread::yield_now();
    } else {
        std::hint::spin_loop();
    }
}

/// Compare little-endian words against bytes padded with zeros.
#[inline]
pub(crate) fn words_eq(words: &[AtomicU64], bytes: &[u8]) -> bool {
    let mut chunks = bytes.chunks_exact(8);
    for (w, c) in words.iter().zip(&mut chunks) {
        if w.load(Ordering::Relaxed) != u64::from_le_bytes(c.try_into().expect("8 bytes")) {
            return false;
        }
    }
    let rest = chunks.remainder();
    if rest.is_empty() {
        return true;
    }
    let mut last = [0u8; 8];
    last[..rest.len()].copy_from_slice(rest);
    words.last().map(|w| w.load(Ordering::Relaxed)) == Some(u64::from_le_bytes(last))
}

/// Copy `len` bytes held in `words` into `out` (replacing its contents).
#[inline]
pub(crate) fn copy_out(words: &[AtomicU64], len: usize, out: &mut Vec<u8>) {
    crate::mem::copy_words_out(words, len, out)
}

/// Store bytes into words, zero-padding the last one.
#[inline]
pub(crate) fn copy_in(words: &[AtomicU64], bytes: &[u8]) {
    crate::mem::copy_words_in(words, bytes)
}

/// Wall-clock time in Unix milliseconds: the clock of expiry times, the same in every process
/// (`clock_gettime(CLOCK_REALTIME)` through the vDSO; the coarse clock is too coarse for 1 ms).
#[inline]
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub(crate) fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cold]
fn lens_over_limits(off: u64, k: usize, v: usize) -> Error {
    Error::corrupt(off, format!("record lengths {k}/{v} over the limits"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_copies_round_trip() {
        for len in [0usize, 1, 7, 8, 9, 100] {
            let bytes: Vec<u8> = (0..len as u8).map(|b| b.wrapping_mul(31) | 1).collect();
            let words: Vec<AtomicU64> = (0..pad8(len as u64) / 8)
                .map(|_| AtomicU64::new(0))
                .collect();
            copy_in(&words, &bytes);
            assert!(words_eq(&words, &bytes));
            let mut out = Vec::new();
            copy_out(&words, len, &mut out);
            assert_eq!(out, bytes);
            if len > 0 {
                let mut other = bytes.clone();
                other[len - 1] ^= 0x80;
                assert!(!words_eq(&words, &other));
            }
        }
    }
}
