//! Versions, conditional writes, atomic read-modify-writes and waiting for a change (issue 13).
//!
//! Every record carries the version its write got under the stripe lock
//! (`Store::next_version`: unique store-wide, increasing per key, never reused after a remove).
//! Every operation here is one transaction, like `put`: the decision (compare a version, parse
//! a counter, call the caller's closure) is taken under the key's stripe lock, before anything
//! is written, so a failed check, a parse error or a panicking closure changes nothing (the
//! transaction is rolled back; a panic is recovered like a kill, see `WriteGuard`).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{Client, WriteOp};
use crate::error::{Error, Result};
use crate::index::{self, write_record};
use crate::layout::{record_size, Counter, RECORD_META_OFFSET};
use crate::sync::change;
use crate::txn::{self, Txn};

const R: Ordering = Ordering::Relaxed;

/// What a read-modify-write does with its key.
pub(super) enum Decision {
    /// Leave the key as it is.
    Keep,
    /// Store this value with this meta word (expiry; 0 = none).
    Put(Vec<u8>, u64),
    /// Store this integer as decimal ASCII with this meta word (a counter's update: formatted
    /// on the stack, no allocation).
    PutInt(i64, u64),
    /// Keep the value, set the meta word (expiry) in place.
    Touch(u64),
    /// Remove the key.
    Remove,
}

/// The key as a read-modify-write finds it (under the stripe lock).
#[derive(Clone, Copy)]
pub(super) struct Cur<'v> {
    pub(super) value: &'v [u8],
    pub(super) version: u64,
    pub(super) meta: u64,
}

/// The outcome of [`Client::wait_changed`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitResult {
    /// The key's version is no longer the one waited on: its version now (`None`: absent).
    Changed(Option<u64>),
    /// The time ran out with the key unchanged.
    Timeout,
}

impl Client {
    /// The value of `key` and its version, if present. Lock-free, like [`Client::get`].
    pub fn get_versioned(&self, key: &[u8]) -> Result<Option<(Vec<u8>, u64)>> {
        self.not_forked()?;
        self.st.check_limits(key, None)?;
        let hash = self.st.hash(key);
        let s = self.st.stripe_of(hash);
        let r = self.read_consistent(&[s], || {
            let tw = self.st.mem.stripe(s).table.load(R);
            match self.st.probe(tw, hash, key)? {
                Some(rec) => {
                    let mut v = Vec::new();
                    self.st.read_value(rec, &mut v)?;
                    Ok(Some((v, self.st.record_version(rec)?)))
                }
                None => Ok(None),
            }
        })?;
        let hit = u64::from(r.is_some());
        self.count(&[(Counter::Gets, 1), (Counter::Hits, hit)]);
        Ok(r)
    }

    /// The version of `key`, if present (lock-free).
    pub fn version(&self, key: &[u8]) -> Result<Option<u64>> {
        self.not_forked()?;
        self.st.check_limits(key, None)?;
        let hash = self.st.hash(key);
        let s = self.st.stripe_of(hash);
        self.read_consistent(&[s], || {
            let tw = self.st.mem.stripe(s).table.load(R);
            match self.st.probe(tw, hash, key)? {
                Some(rec) => self.st.record_version(rec).map(Some),
                None => Ok(None),
            }
        })
    }

    /// Store `value` only if `key`'s version is `expected` (`None`: only if absent). Returns
    /// the new version, or [`Error::Conflict`] with the version found.
    pub fn put_if_version(&self, key: &[u8], value: &[u8], expected: Option<u64>) -> Result<u64> {
        self.st.check_limits(key, Some(value))?;
        let (_, v) = self.modify(key, |cur| {
            let current = cur.map(|c| c.version);
            if current != expected {
                return Err(Error::Conflict { index: 0, current });
            }
            Ok((Decision::Put(value.to_vec(), 0), ()))
        })?;
        Ok(v.expect("a put has a version"))
    }

    /// Remove `key` only if its version is `expected`; [`Error::Conflict`] otherwise (also
    /// when it is absent).
    pub fn remove_if_version(&self, key: &[u8], expected: u64) -> Result<()> {
        self.st.check_limits(key, None)?;
        self.modify(key, |cur| {
            let current = cur.map(|c| c.version);
            if current != Some(expected) {
                return Err(Error::Conflict { index: 0, current });
            }
            Ok((Decision::Remove, ()))
        })?;
        Ok(())
    }

    /// Store `value` only if `key` is absent; returns whether it was stored.
    pub fn put_if_absent(&self, key: &[u8], value: &[u8]) -> Result<bool> {
        self.st.check_limits(key, Some(value))?;
        Ok(self
            .modify(key, |cur| {
                Ok(match cur {
                    None => (Decision::Put(value.to_vec(), 0), true),
                    Some(_) => (Decision::Keep, false),
                })
            })?
            .0)
    }

    /// Store `value` only if `key` is present; returns whether it was stored.
    pub fn replace(&self, key: &[u8], value: &[u8]) -> Result<bool> {
        self.st.check_limits(key, Some(value))?;
        Ok(self
            .modify(key, |cur| {
                Ok(match cur {
                    Some(_) => (Decision::Put(value.to_vec(), 0), true),
                    None => (Decision::Keep, false),
                })
            })?
            .0)
    }

    /// Store `value` and return the value it replaced, atomically.
    pub fn get_and_put(&self, key: &[u8], value: &[u8]) -> Result<Option<Vec<u8>>> {
        self.st.check_limits(key, Some(value))?;
        Ok(self
            .modify(key, |cur| {
                Ok((
                    Decision::Put(value.to_vec(), 0),
                    cur.map(|c| c.value.to_vec()),
                ))
            })?
            .0)
    }

    /// Remove `key` and return the value it had, atomically.
    pub fn get_and_remove(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.st.check_limits(key, None)?;
        Ok(self
            .modify(key, |cur| {
                Ok(match cur {
                    Some(c) => (Decision::Remove, Some(c.value.to_vec())),
                    None => (Decision::Keep, None),
                })
            })?
            .0)
    }

    /// Add `delta` to the decimal integer stored under `key` (a missing key counts as 0) and
    /// return the result, stored as decimal ASCII (so `get` shows `b"42"`); a TTL the key has
    /// is kept. Redis's rules:
    /// [`Error::NotAnInteger`] for a value that is not a canonical signed 64-bit decimal,
    /// [`Error::Overflow`] when the result does not fit; nothing changes then.
    pub fn incr(&self, key: &[u8], delta: i64) -> Result<i64> {
        self.st.check_limits(key, None)?;
        Ok(self
            .modify(key, |cur| {
                // (No `ok_or(Error::..)`: it built and dropped an `Error` on every call.)
                let old = match cur {
                    Some(c) => match parse_i64(c.value) {
                        Some(n) => n,
                        None => return Err(Error::NotAnInteger),
                    },
                    None => 0,
                };
                let Some(new) = old.checked_add(delta) else {
                    return Err(Error::Overflow);
                };
                // Keeps the key's TTL (Redis's INCR).
                let meta = cur.map_or(0, |c| c.meta);
                Ok((Decision::PutInt(new, meta), new))
            })?
            .0)
    }

    /// Append `bytes` to the value of `key` (a missing key starts empty); returns the new
    /// length; a TTL the key has is kept. [`Error::ValueTooLong`] if the result would exceed
    /// the store's limit.
    pub fn append(&self, key: &[u8], bytes: &[u8]) -> Result<usize> {
        self.st.check_limits(key, None)?;
        Ok(self
            .modify(key, |cur| {
                let mut v = cur.map(|c| c.value.to_vec()).unwrap_or_default();
                v.extend_from_slice(bytes);
                let n = v.len();
                Ok((Decision::Put(v, cur.map_or(0, |c| c.meta)), n))
            })?
            .0)
    }

    /// Atomic read-modify-write: `f` sees the current value (`None`: absent) and returns the
    /// new one (`None`: remove the key); a TTL the key has is kept. Returns the key's version
    /// afterwards (`None`: absent).
    ///
    /// `f` runs **with the key's stripe lock held**: keep it short (no I/O, no waiting, no
    /// call into this store), since every writer of that stripe, in every process, waits for
    /// it. If `f` panics, nothing is applied, the lock is released (the client's own slot is
    /// recovered as after a kill), other processes are unaffected, and the panic goes on.
    ///
    /// `f` may run more than once: when the store is full and its policy evicts, the write
    /// runs again after eviction made room (with the value as it is then).
    pub fn update(
        &self,
        key: &[u8],
        mut f: impl FnMut(Option<&[u8]>) -> Option<Vec<u8>>,
    ) -> Result<Option<u64>> {
        self.st.check_limits(key, None)?;
        let ((), v) = self.modify(key, |cur| {
            let d = match f(cur.map(|c| c.value)) {
                Some(v) => Decision::Put(v, cur.map_or(0, |c| c.meta)),
                None => Decision::Remove,
            };
            Ok((d, ()))
        })?;
        Ok(v)
    }

    /// All or nothing, atomically: if every `(key, expected version)` check holds (`None`:
    /// the key must be absent), store `puts` and remove `removes` (a key in both is removed);
    /// otherwise [`Error::Conflict`] naming the first failed check, and nothing changes. Like
    /// etcd's `Txn` or Redis's WATCH + MULTI/EXEC, in one step.
    pub fn commit_if<K: AsRef<[u8]>, V: AsRef<[u8]>, D: AsRef<[u8]>>(
        &self,
        checks: &[(K, Option<u64>)],
        puts: &[(D, V)],
        removes: &[D],
    ) -> Result<()> {
        for (k, _) in checks {
            self.st.check_limits(k.as_ref(), None)?;
        }
        for (k, v) in puts {
            self.st.check_limits(k.as_ref(), Some(v.as_ref()))?;
        }
        for k in removes {
            self.st.check_limits(k.as_ref(), None)?;
        }
        self.with_room(|| self.commit_if_once(checks, puts, removes))
    }

    fn commit_if_once<K: AsRef<[u8]>, V: AsRef<[u8]>, D: AsRef<[u8]>>(
        &self,
        checks: &[(K, Option<u64>)],
        puts: &[(D, V)],
        removes: &[D],
    ) -> Result<()> {
        self.not_forked()?;
        let g = self.guard();
        let sess = self.session_w(&g)?;
        let hash = |k: &[u8]| self.st.hash(k);
        let check_h: Vec<u64> = checks.iter().map(|(k, _)| hash(k.as_ref())).collect();
        let put_h: Vec<u64> = puts.iter().map(|(k, _)| hash(k.as_ref())).collect();
        let rem_h: Vec<u64> = removes.iter().map(|k| hash(k.as_ref())).collect();
        let all: Vec<u64> = check_h
            .iter()
            .chain(&put_h)
            .chain(&rem_h)
            .copied()
            .collect();
        let stripes = self.stripes_of(&all);
        let n = checks.len() + puts.len() + removes.len();
        let txn = Txn::begin(&sess, txn::log_entries_put_many(n))?;
        // New records before any lock, as put_many.
        let (txn, recs) = self.new_records(txn, puts, |_| 0)?;
        self.apply_locked(&sess, txn, &stripes, WriteOp::Modify, |txn| {
            for (i, ((k, expected), &h)) in checks.iter().zip(&check_h).enumerate() {
                let s = self.st.stripe_of(h);
                let current = match index::lookup(txn, s, h, k.as_ref())? {
                    Some(rec) => Some(self.st.record_version(rec)?),
                    None => None,
                };
                if current != *expected {
                    return Err(Error::Conflict { index: i, current });
                }
            }
            for &s in &stripes {
                let adds = put_h.iter().filter(|&&h| self.st.stripe_of(h) == s).count();
                index::ensure_room(txn, s, adds as u64)?;
            }
            for (i, (k, v)) in puts.iter().enumerate() {
                let s = self.st.stripe_of(put_h[i]);
                index::put(txn, s, put_h[i], k.as_ref(), recs[i], v.as_ref().len())?;
            }
            for (k, &h) in removes.iter().zip(&rem_h) {
                index::remove(txn, self.st.stripe_of(h), h, k.as_ref())?;
            }
            Ok(())
        })?;
        self.count(&[(Counter::Puts, puts.len() as u64)]);
        self.trace("commit_if", b"", format_args!("{n} keys"));
        Ok(())
    }

    /// Wait until the version of `key` is no longer `since` (`None`: until it exists), at most
    /// `timeout`, without polling: the caller sleeps on a futex that the next writer of the
    /// key's stripe wakes (`sync/change.rs`: no lost wake-ups). Returns at once if the version
    /// already differs. Works across processes and for keys that do not exist yet; needs a
    /// writable client (it takes the stripe lock for its check).
    pub fn wait_changed(
        &self,
        key: &[u8],
        since: Option<u64>,
        timeout: Duration,
    ) -> Result<WaitResult> {
        self.st.check_limits(key, None)?;
        self.not_forked()?;
        let deadline = Instant::now() + timeout;
        let hash = self.st.hash(key);
        let s = self.st.stripe_of(hash);
        let stripe = self.st.mem.stripe(s);
        loop {
            let seen = {
                let g = self.guard();
                let sess = self.session_w(&g)?;
                let _lock = sess.lock_stripe(s)?;
                let tw = stripe.table.load(R);
                let current = match self.st.probe(tw, hash, key)? {
                    Some(rec) => Some(self.st.record_version(rec)?),
                    None => None,
                };
                if current != since {
                    return Ok(WaitResult::Changed(current));
                }
                change::register_locked(&stripe.waiters, &stripe.changes)
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(WaitResult::Timeout);
            }
            change::sleep(&stripe.changes, seen, left);
        }
    }

    /// One single-key transaction whose write is decided under the stripe lock by `f` (which
    /// sees the current value and version). Returns `f`'s result and the key's version after.
    /// `f` runs again if the write met a full store and eviction made room.
    pub(super) fn modify<T>(
        &self,
        key: &[u8],
        mut f: impl FnMut(Option<Cur<'_>>) -> Result<(Decision, T)>,
    ) -> Result<(T, Option<u64>)> {
        self.with_room(|| self.modify_once(key, &mut f))
    }

    fn modify_once<T>(
        &self,
        key: &[u8],
        f: &mut impl FnMut(Option<Cur<'_>>) -> Result<(Decision, T)>,
    ) -> Result<(T, Option<u64>)> {
        self.not_forked()?;
        let g = self.guard();
        let sess = self.session_w(&g)?;
        let hash = self.st.hash(key);
        let s = self.st.stripe_of(hash);
        let txn = Txn::begin(&sess, txn::log_entries_modify())?;
        let mut out = None;
        let mut counts = [
            (Counter::Puts, 0),
            (Counter::BytesIn, 0),
            (Counter::Removes, 0),
        ];
        // The current value is read into this thread's scratch buffer (a counter's update
        // then allocates nothing but its new value).
        let mut buf = SCRATCH.with(std::cell::Cell::take);
        let r = self.apply_locked(&sess, txn, &[s], WriteOp::Modify, |txn| {
            let found = index::lookup(txn, s, hash, key)?;
            let cur = match found {
                Some(rec) => {
                    self.st.read_value(rec, &mut buf)?;
                    Some((
                        &buf[..],
                        self.st.record_version(rec)?,
                        self.st.record_meta(rec)?,
                    ))
                }
                None => None,
            };
            let (d, t) = f(cur.map(|(value, version, meta)| Cur {
                value,
                version,
                meta,
            }))?;
            let version = match d {
                Decision::Keep => cur.map(|(_, v, _)| v),
                Decision::Touch(meta) => match found {
                    Some(rec) => {
                        txn.set(s, rec + RECORD_META_OFFSET, meta)?;
                        index::note_expiry(&self.st, s, meta);
                        txn.note_change(crate::changelog::SET, rec);
                        cur.map(|(_, v, _)| v)
                    }
                    None => None,
                },
                Decision::Put(_, meta) | Decision::PutInt(_, meta) => {
                    let mut digits = [0u8; 20];
                    let v: &[u8] = match &d {
                        Decision::Put(v, _) => v,
                        Decision::PutInt(n, _) => format_i64(*n, &mut digits),
                        _ => unreachable!("matched above"),
                    };
                    self.st.check_limits(key, Some(v))?;
                    if let Some(rec) = found {
                        if index::update_in_place(txn, s, rec, v, meta)? {
                            counts[0].1 = 1;
                            counts[1].1 = v.len() as u64;
                            out = Some((t, Some(self.st.record_version(rec)?)));
                            return Ok(());
                        }
                    }
                    let rec = txn.alloc_locked(record_size(key.len() as u64, v.len() as u64))?;
                    write_record(&self.st, rec, key, v, meta)?;
                    index::put(txn, s, hash, key, rec, v.len())?;
                    counts[0].1 = 1;
                    counts[1].1 = v.len() as u64;
                    Some(self.st.record_version(rec)?)
                }
                Decision::Remove => {
                    counts[2].1 = u64::from(index::remove(txn, s, hash, key)?);
                    None
                }
            };
            out = Some((t, version));
            Ok(())
        });
        if buf.capacity() <= SCRATCH_KEEP {
            buf.clear();
            SCRATCH.with(|c| c.set(buf));
        }
        r?;
        self.count(&counts);
        self.trace("modify", key, "");
        Ok(out.expect("apply ran"))
    }
}

thread_local! {
    /// A read-modify-write's buffer for the current value, kept between calls on a thread
    /// (taken, so a closure that calls in again just gets an empty one).
    static SCRATCH: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Largest scratch buffer kept for the next read-modify-write on the thread.
const SCRATCH_KEEP: usize = 4096;

/// Redis's `string2ll`: an optional `-`, then digits without leading zeros (`0` alone is
/// fine), nothing else, at most 20 bytes, in range.
pub fn parse_i64(v: &[u8]) -> Option<i64> {
    if v.is_empty() || v.len() > 20 {
        return None;
    }
    let (neg, digits) = match v {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, v),
    };
    match digits {
        [b'0'] if !neg => return Some(0),
        [b'1'..=b'9', ..] => {}
        _ => return None,
    }
    if digits.len() <= 18 {
        // At most 10^18 - 1: no overflow possible, no checks per digit.
        let mut n: i64 = 0;
        for &d in digits {
            if !d.is_ascii_digit() {
                return None;
            }
            n = n * 10 + i64::from(d - b'0');
        }
        return Some(if neg { -n } else { n });
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        let d = i64::from(d - b'0');
        n = n.checked_mul(10)?;
        n = if neg {
            n.checked_sub(d)?
        } else {
            n.checked_add(d)?
        };
    }
    Some(n)
}

/// `n` in decimal ASCII (what [`Client::incr`] stores and [`parse_i64`] reads), written at
/// the end of `buf` (20 bytes hold every i64), two digits at a time, without allocating.
///
/// ```
/// let mut buf = [0u8; 20];
/// assert_eq!(kvshm::format_i64(-42, &mut buf), b"-42");
/// ```
pub fn format_i64(n: i64, buf: &mut [u8; 20]) -> &[u8] {
    const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
        2021222324252627282930313233343536373839\
        4041424344454647484950515253545556575859\
        6061626364656667686970717273747576777879\
        8081828384858687888990919293949596979899";
    let mut u = n.unsigned_abs();
    let mut i = buf.len();
    while u >= 100 {
        let r = (u % 100) as usize * 2;
        u /= 100;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&PAIRS[r..r + 2]);
    }
    if u >= 10 {
        let r = u as usize * 2;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&PAIRS[r..r + 2]);
    } else {
        i -= 1;
        buf[i] = b'0' + u as u8;
    }
    if n < 0 {
        i -= 1;
        buf[i] = b'-';
    }
    &buf[i..]
}

#[cfg(test)]
mod tests {
    use super::{format_i64, parse_i64, WaitResult};
    use crate::tests::TestStore;
    use crate::{Config, Error};
    use std::time::{Duration, Instant};

    fn conflict(r: crate::Result<impl std::fmt::Debug>) -> (usize, Option<u64>) {
        match r {
            Err(Error::Conflict { index, current }) => (index, current),
            other => panic!("expected a conflict, got {other:?}"),
        }
    }

    #[test]
    fn versions_increase_per_key_never_come_back_and_are_unique() {
        let t = TestStore::new("versions", Config::default().stripes(4));
        let c = t.client();
        assert_eq!(c.get_versioned(b"k").unwrap(), None);
        c.put(b"k", b"a").unwrap();
        let (v, v1) = c.get_versioned(b"k").unwrap().unwrap();
        assert_eq!(v, b"a");
        c.put(b"k", b"b").unwrap();
        let v2 = c.version(b"k").unwrap().unwrap();
        assert!(v2 > v1);
        assert!(c.remove(b"k").unwrap());
        assert_eq!(c.version(b"k").unwrap(), None);
        c.put(b"k", b"a").unwrap();
        let v3 = c.version(b"k").unwrap().unwrap();
        assert!(
            v3 > v2,
            "a re-insert brought an old version back: {v3} <= {v2}"
        );
        // Unique across keys (of every stripe) and across the writes of a batch.
        let mut seen = std::collections::HashSet::new();
        let items: Vec<(Vec<u8>, Vec<u8>)> = (0..200u32)
            .map(|i| (i.to_le_bytes().to_vec(), b"x".to_vec()))
            .collect();
        c.put_many(&items).unwrap();
        for i in 0..200u32 {
            assert!(seen.insert(c.version(&i.to_le_bytes()).unwrap().unwrap()));
        }
        assert!(!seen.contains(&v3));
        let r = c.verify().unwrap();
        assert!(r.is_ok(), "{:#?}", r.problems);
    }

    #[test]
    fn conditional_writes_apply_only_when_their_check_holds() {
        let t = TestStore::new("cas", Config::default().stripes(4));
        let c = t.client();
        // Only if absent.
        let v1 = c.put_if_version(b"k", b"one", None).unwrap();
        assert_eq!(
            conflict(c.put_if_version(b"k", b"two", None)),
            (0, Some(v1))
        );
        assert_eq!(c.get(b"k").unwrap().as_deref(), Some(&b"one"[..]));
        // Only at the expected version.
        let v2 = c.put_if_version(b"k", b"two", Some(v1)).unwrap();
        assert!(v2 > v1);
        assert_eq!(
            conflict(c.put_if_version(b"k", b"three", Some(v1))),
            (0, Some(v2))
        );
        assert_eq!(conflict(c.remove_if_version(b"k", v1)), (0, Some(v2)));
        assert_eq!(conflict(c.remove_if_version(b"gone", 5)), (0, None));
        c.remove_if_version(b"k", v2).unwrap();
        assert_eq!(c.get(b"k").unwrap(), None);
        // put_if_absent / replace / get_and_put / get_and_remove.
        assert!(!c.replace(b"k", b"x").unwrap());
        assert_eq!(c.get(b"k").unwrap(), None);
        assert!(c.put_if_absent(b"k", b"first").unwrap());
        assert!(!c.put_if_absent(b"k", b"second").unwrap());
        assert!(c.replace(b"k", b"third").unwrap());
        assert_eq!(
            c.get_and_put(b"k", b"fourth").unwrap().as_deref(),
            Some(&b"third"[..])
        );
        assert_eq!(c.get_and_put(b"new", b"v").unwrap(), None);
        assert_eq!(
            c.get_and_remove(b"k").unwrap().as_deref(),
            Some(&b"fourth"[..])
        );
        assert_eq!(c.get_and_remove(b"k").unwrap(), None);
        assert_eq!(c.get(b"k").unwrap(), None);
        let r = c.verify().unwrap();
        assert!(r.is_ok(), "{:#?}", r.problems);
    }

    /// A counter's new value that fits its block is written in place: same record offset, a
    /// new version, the stripe's value bytes right; one that does not fit takes a new record.
    #[test]
    fn a_counter_is_updated_in_its_own_block() {
        let t = TestStore::new("inplace", Config::default().stripes(4));
        let c = t.client();
        let rec_of = |k: &[u8]| {
            let h = c.st.hash(k);
            let tw =
                c.st.mem
                    .stripe(c.st.stripe_of(h))
                    .table
                    .load(super::super::R);
            c.st.probe_raw(tw, h, k).unwrap().unwrap()
        };
        c.put_with_ttl(b"n", b"9", Duration::from_secs(60)).unwrap();
        let (rec, v0) = (rec_of(b"n"), c.version(b"n").unwrap().unwrap());
        assert_eq!(c.incr(b"n", 1).unwrap(), 10);
        assert_eq!(c.incr(b"n", 990).unwrap(), 1000);
        assert_eq!(rec_of(b"n"), rec, "moved to another block");
        assert!(c.version(b"n").unwrap().unwrap() > v0);
        assert!(matches!(
            c.ttl(b"n").unwrap(),
            super::super::Ttl::Remaining(_)
        ));
        assert_eq!(c.get(b"n").unwrap().as_deref(), Some(&b"1000"[..]));
        assert_eq!(c.stats().value_bytes, 4);
        // Longer than its block takes: a new record, the old block freed.
        c.update(b"n", |_| Some(vec![b'x'; 200])).unwrap();
        assert_ne!(rec_of(b"n"), rec);
        assert_eq!(c.stats().value_bytes, 200);
        let r = c.verify().unwrap();
        assert!(r.problems.is_empty(), "{:?}", r.problems);
    }

    #[test]
    fn incr_and_append_follow_redis() {
        let t = TestStore::new("incr", Config::default().stripes(4).max_value_len(64));
        let c = t.client();
        assert_eq!(c.incr(b"n", 5).unwrap(), 5);
        assert_eq!(c.incr(b"n", -7).unwrap(), -2);
        assert_eq!(c.get(b"n").unwrap().as_deref(), Some(&b"-2"[..]));
        c.put(b"n", b"9223372036854775806").unwrap();
        assert_eq!(c.incr(b"n", 1).unwrap(), i64::MAX);
        assert!(matches!(c.incr(b"n", 1), Err(Error::Overflow)));
        assert_eq!(
            c.get(b"n").unwrap().as_deref(),
            Some(&b"9223372036854775807"[..])
        );
        c.put(b"s", b"12a").unwrap();
        let v = c.version(b"s").unwrap();
        assert!(matches!(c.incr(b"s", 1), Err(Error::NotAnInteger)));
        assert_eq!(c.version(b"s").unwrap(), v, "a failed incr changed the key");
        assert_eq!(c.append(b"a", b"hello").unwrap(), 5);
        assert_eq!(c.append(b"a", b", world").unwrap(), 12);
        assert_eq!(c.get(b"a").unwrap().as_deref(), Some(&b"hello, world"[..]));
        assert!(matches!(
            c.append(b"a", &[b'x'; 60]),
            Err(Error::ValueTooLong { len: 72, max: 64 })
        ));
        assert_eq!(c.get(b"a").unwrap().as_deref(), Some(&b"hello, world"[..]));
        let r = c.verify().unwrap();
        assert!(r.is_ok(), "{:#?}", r.problems);
    }

    #[test]
    fn update_applies_its_closure_atomically_and_a_panic_applies_nothing() {
        let t = TestStore::new("update", Config::default().stripes(1));
        let (c, other) = (t.client(), t.client());
        let v = c.update(b"k", |cur| {
            assert_eq!(cur, None);
            Some(b"v1".to_vec())
        });
        assert!(v.unwrap().is_some());
        assert_eq!(
            c.update(b"k", |cur| {
                assert_eq!(cur, Some(&b"v1"[..]));
                None
            })
            .unwrap(),
            None
        );
        assert_eq!(c.get(b"k").unwrap(), None);
        c.put(b"k", b"kept").unwrap();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            c.update(b"k", |_| panic!("inside update"))
        }));
        assert!(r.is_err());
        assert_eq!(c.get(b"k").unwrap().as_deref(), Some(&b"kept"[..]));
        // The stripe lock (one stripe: every key) was released: another client writes, and
        // the panicking client writes on too.
        other.put(b"k", b"other").unwrap();
        c.put(b"k2", b"after").unwrap();
        let r = c.verify().unwrap();
        assert!(r.is_ok(), "{:#?}", r.problems);
    }

    #[test]
    fn commit_if_is_all_or_nothing_and_names_the_failed_check() {
        let t = TestStore::new("commitif", Config::default().stripes(8));
        let c = t.client();
        c.put(b"a", b"1").unwrap();
        let va = c.version(b"a").unwrap();
        let no: &[&[u8]] = &[];
        c.commit_if(
            &[(b"a", va), (b"b", None)],
            &[(&b"b"[..], &b"2"[..]), (b"c", b"3")],
            no,
        )
        .unwrap();
        assert_eq!(c.get(b"b").unwrap().as_deref(), Some(&b"2"[..]));
        // Second check fails: nothing of the batch lands.
        let vb = c.version(b"b").unwrap();
        let r = c.commit_if(
            &[(&b"a"[..], va), (b"b", None)],
            &[(&b"a"[..], &b"x"[..]), (b"d", b"4")],
            &[&b"c"[..]],
        );
        assert_eq!(conflict(r), (1, vb));
        assert_eq!(c.get(b"a").unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(c.get(b"c").unwrap().as_deref(), Some(&b"3"[..]));
        assert_eq!(c.get(b"d").unwrap(), None);
        c.commit_if(&[(&b"b"[..], vb)], &[(&b"a"[..], &b"x"[..])], &[&b"c"[..]])
            .unwrap();
        assert_eq!(c.get(b"a").unwrap().as_deref(), Some(&b"x"[..]));
        assert_eq!(c.get(b"c").unwrap(), None);
        let r = c.verify().unwrap();
        assert!(r.is_ok(), "{:#?}", r.problems);
    }

    /// The writer's side of the wait protocol in a real store: a write to a stripe with a
    /// registered waiter clears the flag and moves the futex word; a write without one
    /// touches neither (a write pays nothing when nobody waits).
    #[test]
    fn a_write_moves_the_futex_word_only_when_someone_waits() {
        use std::sync::atomic::Ordering::Relaxed;
        let t = TestStore::new("waitword", Config::default().stripes(1));
        let c = t.client();
        let stripe = c.st.mem.stripe(0);
        c.put(b"k", b"1").unwrap();
        assert_eq!(
            (stripe.waiters.load(Relaxed), stripe.changes.load(Relaxed)),
            (0, 0)
        );
        stripe.waiters.store(1, Relaxed);
        c.put(b"other", b"2").unwrap();
        assert_eq!(
            (stripe.waiters.load(Relaxed), stripe.changes.load(Relaxed)),
            (0, 1)
        );
        c.incr(b"n", 1).unwrap();
        assert_eq!(stripe.changes.load(Relaxed), 1);
    }

    #[test]
    fn wait_changed_returns_at_once_on_a_change_and_times_out_without_one() {
        let t = TestStore::new("wait", Config::default().stripes(2));
        let (c, w) = (t.client(), t.client());
        c.put(b"k", b"v").unwrap();
        let v = c.version(b"k").unwrap();
        assert_eq!(
            c.wait_changed(b"k", None, Duration::from_secs(5)).unwrap(),
            WaitResult::Changed(v)
        );
        let start = Instant::now();
        assert_eq!(
            c.wait_changed(b"k", v, Duration::from_millis(200)).unwrap(),
            WaitResult::Timeout
        );
        assert!(start.elapsed() >= Duration::from_millis(200));
        // A writer on another thread (a client of its own, as another process would be).
        let h = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            w.put(b"k", b"new").unwrap();
            w.version(b"k").unwrap()
        });
        let r = c.wait_changed(b"k", v, Duration::from_secs(20)).unwrap();
        let nv = h.join().unwrap();
        assert_eq!(r, WaitResult::Changed(nv));
    }

    #[test]
    fn integers_parse_by_redis_rules() {
        for (s, want) in [
            ("0", Some(0)),
            ("42", Some(42)),
            ("-42", Some(-42)),
            ("9223372036854775807", Some(i64::MAX)),
            ("-9223372036854775808", Some(i64::MIN)),
            ("9223372036854775808", None),
            ("-9223372036854775809", None),
            ("", None),
            ("-", None),
            ("-0", None),
            ("01", None),
            ("+1", None),
            (" 1", None),
            ("1 ", None),
            ("1.5", None),
            ("abc", None),
            ("000000000000000000001", None),
            ("999999999999999999", Some(999_999_999_999_999_999)),
            ("-999999999999999999", Some(-999_999_999_999_999_999)),
            ("1000000000000000000", Some(1_000_000_000_000_000_000)),
            ("12345678901234567x", None),
            ("1234567890123456789x", None),
        ] {
            assert_eq!(parse_i64(s.as_bytes()), want, "{s:?}");
        }
    }

    /// The stack formatter writes what `to_string` does, and parses back, for every length
    /// and both signs.
    #[test]
    fn format_i64_is_to_string() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut cases = vec![0, 1, -1, 9, -9, 10, -10, i64::MAX, i64::MIN, i64::MIN + 1];
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            cases.push((x as i64) >> (x % 63));
        }
        for n in cases {
            let mut buf = [0u8; 20];
            let s = format_i64(n, &mut buf);
            assert_eq!(s, n.to_string().as_bytes());
            assert_eq!(parse_i64(s), Some(n));
        }
    }
}
