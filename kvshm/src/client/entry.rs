//! Entry-level building blocks for protocol servers (the RESP server in kvhost, issue 15): an
//! atomic read-modify-write that sees and sets the expiry, a multi-key commit whose puts carry
//! expiries and whose checks can watch a key that does not exist (`transact`), per-stripe scanning for a
//! cursor that survives table growth, and emptying the store.
//!
//! Everything here is built on the same transactions as `put` and `commit_if`: a decision is
//! taken under the stripe lock(s), before anything is written.

use std::sync::atomic::Ordering;

use super::versioned::Decision;
use super::{Client, WriteOp};
use crate::error::{Error, Result};
use crate::index::{self, write_record};
use crate::layout::{record_size, Counter, META_EXPIRY_MASK};
use crate::txn::{self, Txn};

/// A key as [`Client::modify_entry`] finds it, under its stripe lock.
#[derive(Clone, Copy, Debug)]
pub struct Entry<'v> {
    /// The value.
    pub value: &'v [u8],
    /// Its version (see [`Client::version`]).
    pub version: u64,
    /// When it expires (Unix milliseconds), if it does.
    pub expires_at: Option<u64>,
}

/// A key's value, version and expiry, read together by [`Client::get_entry`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The value.
    pub value: Vec<u8>,
    /// Its version.
    pub version: u64,
    /// When it expires (Unix milliseconds), if it does.
    pub expires_at: Option<u64>,
}

/// What [`Client::modify_entry`] does with the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Nothing.
    Keep,
    /// Store `value`, expiring at `expires_at` (Unix ms; `None`: never).
    Put {
        /// The new value.
        value: Vec<u8>,
        /// Its expiry.
        expires_at: Option<u64>,
    },
    /// Store the integer `value` as decimal ASCII (what `incr` stores), expiring at
    /// `expires_at`: a counter's update without allocating its new value.
    PutInt {
        /// The new value.
        value: i64,
        /// Its expiry.
        expires_at: Option<u64>,
    },
    /// Keep the value and its version; set the expiry (`None`: persist). No-op if absent.
    SetExpiry(Option<u64>),
    /// Remove the key.
    Remove,
}

/// A write of [`Client::transact`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    /// Store the value, expiring at `expires_at` (Unix ms; `None`: never).
    Put {
        /// The new value.
        value: Vec<u8>,
        /// Its expiry.
        expires_at: Option<u64>,
    },
    /// Remove the key (nothing if absent).
    Remove,
}

/// A condition of [`Client::transact`], taken from [`Client::watch`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Watch {
    /// The key had this version (`None`: it was absent): the check holds if its version is
    /// the same at commit (a key removed and stored again has a new version).
    Version(Option<u64>),
    /// The key was absent and its stripe had this revision: the check holds if no write at
    /// all reached the key's stripe since. Stricter than `Version(None)`, which a key stored
    /// and removed again in between passes: this one sees that (at the price of failing for
    /// a write to another key of the same stripe, one in `stripes`).
    Untouched(u64),
}

fn meta_of(expires_at: Option<u64>) -> Result<u64> {
    match expires_at {
        None => Ok(0),
        Some(0) => Ok(1),
        Some(ms) if ms <= META_EXPIRY_MASK => Ok(ms),
        Some(ms) => Err(Error::InvalidArgument(format!(
            "expiry time {ms} ms is too far in the future"
        ))),
    }
}

fn expiry_of_meta(meta: u64) -> Option<u64> {
    match meta & META_EXPIRY_MASK {
        0 => None,
        at => Some(at),
    }
}

impl Client {
    /// Atomic read-modify-write of one key with its expiry: `f` sees the key as it is under
    /// its stripe lock (`None`: absent or expired) and returns what to do and what to return.
    /// An error from `f` changes nothing. `f` runs with the stripe lock held: keep it short
    /// (see [`Client::update`]). Returns `f`'s result and the key's version afterwards.
    ///
    /// `f` may run more than once: when the store is full and its policy evicts, the write
    /// runs again after eviction made room (`f` then sees the key as it is then).
    pub fn modify_entry<T>(
        &self,
        key: &[u8],
        mut f: impl FnMut(Option<Entry<'_>>) -> Result<(Change, T)>,
    ) -> Result<(T, Option<u64>)> {
        self.st.check_limits(key, None)?;
        self.modify(key, |cur| {
            let entry = cur.map(|c| Entry {
                value: c.value,
                version: c.version,
                expires_at: expiry_of_meta(c.meta),
            });
            let (change, t) = f(entry)?;
            let keep_bits = cur.map_or(0, |c| c.meta & !META_EXPIRY_MASK);
            let d = match change {
                Change::Keep => Decision::Keep,
                Change::Put { value, expires_at } => {
                    Decision::Put(value, keep_bits | meta_of(expires_at)?)
                }
                Change::PutInt { value, expires_at } => {
                    Decision::PutInt(value, keep_bits | meta_of(expires_at)?)
                }
                Change::SetExpiry(at) => match cur {
                    Some(_) => Decision::Touch(keep_bits | meta_of(at)?),
                    None => Decision::Keep,
                },
                Change::Remove => Decision::Remove,
            };
            Ok((d, t))
        })
    }

    /// The value of `key` with its version and expiry, from one consistent view. Lock-free.
    pub fn get_entry(&self, key: &[u8]) -> Result<Option<Record>> {
        self.not_forked()?;
        self.st.check_limits(key, None)?;
        let hash = self.st.hash(key);
        let s = self.st.stripe_of(hash);
        let r = self.read_consistent(&[s], || {
            let tw = self.st.mem.stripe(s).table.load(Ordering::Relaxed);
            match self.st.probe(tw, hash, key)? {
                Some(rec) => {
                    let mut value = Vec::new();
                    self.st.read_value(rec, &mut value)?;
                    Ok(Some(Record {
                        value,
                        version: self.st.record_version(rec)?,
                        expires_at: expiry_of_meta(self.st.record_meta(rec)?),
                    }))
                }
                None => Ok(None),
            }
        })?;
        self.count(&[(Counter::Gets, 1), (Counter::Hits, u64::from(r.is_some()))]);
        Ok(r)
    }

    /// What [`Client::transact`] needs to tell whether `key` changed from now on: its
    /// version if present, else its stripe's revision ([`Watch::Untouched`]). Lock-free.
    pub fn watch(&self, key: &[u8]) -> Result<Watch> {
        self.not_forked()?;
        self.st.check_limits(key, None)?;
        let hash = self.st.hash(key);
        let s = self.st.stripe_of(hash);
        self.read_consistent(&[s], || {
            let stripe = self.st.mem.stripe(s);
            let revision = stripe.revision.load(Ordering::Acquire);
            let tw = stripe.table.load(Ordering::Relaxed);
            Ok(match self.st.probe(tw, hash, key)? {
                Some(rec) => Watch::Version(Some(self.st.record_version(rec)?)),
                None => Watch::Untouched(revision),
            })
        })
    }

    /// A multi-key read-modify-write under the locks of every key's stripe: if the `checks`
    /// hold, `f` sees `keys` as they are (`None`: absent) and returns writes, each naming a
    /// key by its index in `keys` (a later write of a key wins), and a result. All of it is
    /// one transaction: no other writer of those stripes, in any process, runs in between,
    /// so it never has to be retried (Redis's EXEC, RENAME, MSETNX). A failed check is
    /// [`Error::Conflict`]; an error from `f` changes nothing. `f` runs with the locks held:
    /// keep it short.
    ///
    /// `f` may run more than once: when the store is full and its policy evicts, the
    /// transaction runs again after eviction made room (checks and reads as they are then).
    pub fn transact<K: AsRef<[u8]>, T>(
        &self,
        checks: &[(K, Watch)],
        keys: &[K],
        mut f: impl FnMut(&[Option<Record>]) -> Result<(Vec<(usize, Write)>, T)>,
    ) -> Result<T> {
        for (k, _) in checks {
            self.st.check_limits(k.as_ref(), None)?;
        }
        for k in keys {
            self.st.check_limits(k.as_ref(), None)?;
        }
        self.with_room(|| self.transact_once(checks, keys, &mut f))
    }

    fn transact_once<K: AsRef<[u8]>, T>(
        &self,
        checks: &[(K, Watch)],
        keys: &[K],
        f: &mut impl FnMut(&[Option<Record>]) -> Result<(Vec<(usize, Write)>, T)>,
    ) -> Result<T> {
        self.not_forked()?;
        let g = self.guard();
        let sess = self.session_w(&g)?;
        let check_h: Vec<u64> = checks
            .iter()
            .map(|(k, _)| self.st.hash(k.as_ref()))
            .collect();
        let key_h: Vec<u64> = keys.iter().map(|k| self.st.hash(k.as_ref())).collect();
        let all: Vec<u64> = check_h.iter().chain(&key_h).copied().collect();
        let stripes = self.stripes_of(&all);
        let txn = Txn::begin(&sess, txn::log_entries_single() * keys.len().max(1) + 8)?;
        let mut out = None;
        let (mut puts, mut removes, mut bytes) = (0u64, 0u64, 0u64);
        self.apply_locked(&sess, txn, &stripes, WriteOp::Modify, |txn| {
            self.check_watches(txn, checks, &check_h)?;
            let mut recs = Vec::with_capacity(keys.len());
            for (k, &h) in keys.iter().zip(&key_h) {
                let s = self.st.stripe_of(h);
                recs.push(match index::lookup(txn, s, h, k.as_ref())? {
                    Some(rec) => {
                        let mut value = Vec::new();
                        self.st.read_value(rec, &mut value)?;
                        Some(Record {
                            value,
                            version: self.st.record_version(rec)?,
                            expires_at: expiry_of_meta(self.st.record_meta(rec)?),
                        })
                    }
                    None => None,
                });
            }
            let (writes, t) = f(&recs)?;
            // The last write of each key, in order.
            let mut last: Vec<(usize, Write)> = Vec::with_capacity(writes.len());
            let mut written: std::collections::HashSet<&[u8]> =
                std::collections::HashSet::with_capacity(writes.len());
            for (i, w) in writes.into_iter().rev() {
                if i >= keys.len() {
                    return Err(Error::InvalidArgument(format!(
                        "transact: write to key index {i} of {}",
                        keys.len()
                    )));
                }
                if written.insert(keys[i].as_ref()) {
                    last.push((i, w));
                }
            }
            last.reverse();
            for (i, w) in &last {
                if let Write::Put { value, expires_at } = w {
                    self.st.check_limits(keys[*i].as_ref(), Some(value))?;
                    meta_of(*expires_at)?;
                }
            }
            for &s in &stripes {
                let adds = last
                    .iter()
                    .filter(|(i, w)| {
                        matches!(w, Write::Put { .. }) && self.st.stripe_of(key_h[*i]) == s
                    })
                    .count();
                index::ensure_room(txn, s, adds as u64)?;
            }
            for (i, w) in &last {
                let (k, h) = (keys[*i].as_ref(), key_h[*i]);
                let s = self.st.stripe_of(h);
                match w {
                    Write::Put { value, expires_at } => {
                        let rec =
                            txn.alloc_locked(record_size(k.len() as u64, value.len() as u64))?;
                        write_record(&self.st, rec, k, value, meta_of(*expires_at)?)?;
                        index::put(txn, s, h, k, rec, value.len())?;
                        puts += 1;
                        bytes += value.len() as u64;
                    }
                    Write::Remove => removes += u64::from(index::remove(txn, s, h, k)?),
                }
            }
            out = Some(t);
            Ok(())
        })?;
        self.count(&[
            (Counter::Puts, puts),
            (Counter::BytesIn, bytes),
            (Counter::Removes, removes),
        ]);
        self.trace("transact", b"", format_args!("{} keys", keys.len()));
        Ok(out.expect("apply ran"))
    }

    /// Under the stripe locks: every `(key, watch)` still holds, else `Conflict` naming the
    /// first that does not.
    fn check_watches<K: AsRef<[u8]>>(
        &self,
        txn: &Txn<'_, '_>,
        checks: &[(K, Watch)],
        hashes: &[u64],
    ) -> Result<()> {
        for (i, ((k, check), &h)) in checks.iter().zip(hashes).enumerate() {
            let s = self.st.stripe_of(h);
            let current = match index::lookup(txn, s, h, k.as_ref())? {
                Some(rec) => Some(self.st.record_version(rec)?),
                None => None,
            };
            let holds = match *check {
                Watch::Version(v) => current == v,
                Watch::Untouched(rev) => {
                    current.is_none()
                        && self.st.mem.stripe(s).revision.load(Ordering::Relaxed) == rev
                }
            };
            if !holds {
                return Err(Error::Conflict { index: i, current });
            }
        }
        Ok(())
    }

    /// How many index stripes the store has (the unit of [`Client::scan_stripe`]).
    pub fn stripes(&self) -> usize {
        self.st.mem.stripe_count()
    }

    /// Call `f(key, value, expires_at_ms_or_0)` for every live key of stripe `stripe`, from
    /// one consistent view of it (lock-free). A cursor over stripes returns every key present
    /// for the whole iteration at least once, whatever the tables do meanwhile (each stripe's
    /// table grows on its own, and a key never changes stripe): Redis's SCAN guarantee.
    pub fn scan_stripe(&self, stripe: usize, mut f: impl FnMut(&[u8], &[u8], u64)) -> Result<()> {
        self.not_forked()?;
        if stripe >= self.st.mem.stripe_count() {
            return Err(Error::InvalidArgument(format!(
                "stripe {stripe} out of range (the store has {})",
                self.st.mem.stripe_count()
            )));
        }
        for (k, v, exp) in self.stripe_items(stripe, b"")? {
            f(&k, &v, exp);
        }
        Ok(())
    }

    /// Remove every key, stripe by stripe (each stripe's keys in transactions of at most 64
    /// keys): a key written by another process while this runs may survive it (Redis's
    /// FLUSHDB is atomic; this one is not, see docs/RESP.md). Returns how many keys it removed.
    pub fn clear(&self) -> Result<u64> {
        let mut removed = 0u64;
        for s in 0..self.st.mem.stripe_count() {
            // Expired records too: they count in `len` until an expiry pass frees them.
            let keys: Vec<Vec<u8>> = self
                .stripe_records_of(s, b"", false)?
                .into_iter()
                .map(|(k, _, _)| k)
                .collect();
            for batch in keys.chunks(64) {
                removed += self.remove_many(batch)? as u64;
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::TestStore;
    use crate::{now_ms, Config, Ttl};

    #[test]
    fn modify_entry_sees_and_sets_expiry() {
        let t = TestStore::new("entry-modify", Config::default());
        let c = t.client();
        let at = now_ms() + 60_000;
        let (seen, v1) = c
            .modify_entry(b"k", |e| {
                let seen = e.is_some();
                Ok((
                    Change::Put {
                        value: b"v".to_vec(),
                        expires_at: Some(at),
                    },
                    seen,
                ))
            })
            .unwrap();
        assert!(!seen);
        let r = c.get_entry(b"k").unwrap().unwrap();
        assert_eq!(
            (r.value.as_slice(), Some(r.version), r.expires_at),
            (&b"v"[..], v1, Some(at))
        );
        let (exp, v2) = c
            .modify_entry(b"k", |e| Ok((Change::Keep, e.unwrap().expires_at)))
            .unwrap();
        assert_eq!(exp, Some(at));
        assert_eq!(v1, v2);
        // SetExpiry keeps value and version; None persists.
        let (_, v3) = c
            .modify_entry(b"k", |_| Ok((Change::SetExpiry(None), ())))
            .unwrap();
        assert_eq!(v3, v1);
        assert_eq!(c.ttl(b"k").unwrap(), Ttl::Persistent);
        // An error from the closure changes nothing.
        let r = c.modify_entry(b"k", |_| -> Result<(Change, ())> {
            Err(Error::InvalidArgument("no".into()))
        });
        assert!(r.is_err());
        assert_eq!(c.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
        // An expiry already past: the key is gone for readers.
        c.modify_entry(b"k", |_| Ok((Change::SetExpiry(Some(1)), ())))
            .unwrap();
        assert_eq!(c.get(b"k").unwrap(), None);
        // SetExpiry on an absent key does nothing.
        let (_, v) = c
            .modify_entry(b"none", |_| Ok((Change::SetExpiry(Some(at)), ())))
            .unwrap();
        assert_eq!(v, None);
        assert_eq!(c.get(b"none").unwrap(), None);
    }

    #[test]
    fn watches_see_versions_and_untouched_stripes() {
        let t = TestStore::new("entry-watch", Config::default());
        let a = t.client();
        let b = t.client();
        a.put(b"x", b"1").unwrap();
        let wx = a.watch(b"x").unwrap();
        let wy = a.watch(b"y").unwrap();
        assert!(matches!(wx, Watch::Version(Some(_))));
        assert!(matches!(wy, Watch::Untouched(_)));
        let at = now_ms() + 60_000;
        let keys: [&[u8]; 2] = [b"x", b"y"];
        a.transact(&[(&b"x"[..], wx), (&b"y"[..], wy)], &keys, |_| {
            let put = Write::Put {
                value: b"2".to_vec(),
                expires_at: Some(at),
            };
            Ok((vec![(1, put), (0, Write::Remove)], ()))
        })
        .unwrap();
        assert_eq!(b.get(b"x").unwrap(), None);
        assert_eq!(b.get(b"y").unwrap().as_deref(), Some(&b"2"[..]));
        assert!(matches!(b.ttl(b"y").unwrap(), Ttl::Remaining(_)));

        // A key stored and removed again after the watch: Untouched sees it.
        let wz = a.watch(b"z").unwrap();
        b.put(b"z", b"tmp").unwrap();
        b.remove(b"z").unwrap();
        let w: [&[u8]; 1] = [b"w"];
        let r = a.transact(&[(&b"z"[..], wz)], &w, |_| {
            let put = Write::Put {
                value: b"no".to_vec(),
                expires_at: None,
            };
            Ok((vec![(0, put)], ()))
        });
        assert!(matches!(
            r,
            Err(Error::Conflict {
                index: 0,
                current: None
            })
        ));
        assert_eq!(a.get(b"w").unwrap(), None);

        // The last write of a key wins.
        let none: &[(&[u8], Watch)] = &[];
        let y: [&[u8]; 1] = [b"y"];
        a.transact(none, &y, |_| {
            let put = Write::Put {
                value: b"4".to_vec(),
                expires_at: None,
            };
            Ok((vec![(0, Write::Remove), (0, put)], ()))
        })
        .unwrap();
        assert_eq!(a.get(b"y").unwrap().as_deref(), Some(&b"4"[..]));
    }

    #[test]
    fn transact_reads_and_writes_under_the_locks() {
        let t = TestStore::new("entry-transact", Config::default());
        let a = t.client();
        let b = t.client();
        a.put(b"src", b"v").unwrap();
        let keys: [&[u8]; 2] = [b"src", b"dst"];
        let none: &[(&[u8], Watch)] = &[];
        // RENAME as one transaction.
        let moved = a
            .transact(none, &keys, |recs| {
                let v = recs[0].clone().unwrap();
                Ok((
                    vec![
                        (
                            1,
                            Write::Put {
                                value: v.value,
                                expires_at: v.expires_at,
                            },
                        ),
                        (0, Write::Remove),
                    ],
                    recs[1].is_none(),
                ))
            })
            .unwrap();
        assert!(moved);
        assert_eq!(b.get(b"src").unwrap(), None);
        assert_eq!(b.get(b"dst").unwrap().as_deref(), Some(&b"v"[..]));
        // A write to an undeclared key, or an error from f: nothing applied.
        let r = a.transact(none, &keys, |_| {
            Ok((vec![(0, Write::Remove), (2, Write::Remove)], ()))
        });
        assert!(matches!(r, Err(Error::InvalidArgument(_))));
        assert_eq!(b.get(b"dst").unwrap().as_deref(), Some(&b"v"[..]));
        // A watch that fails: Conflict, nothing applied.
        let w = a.watch(b"dst").unwrap();
        b.put(b"dst", b"changed").unwrap();
        let r = a.transact(&[(&b"dst"[..], w)], &keys, |_| {
            Ok((vec![(1, Write::Remove)], ()))
        });
        assert!(matches!(r, Err(Error::Conflict { index: 0, .. })));
        assert_eq!(b.get(b"dst").unwrap().as_deref(), Some(&b"changed"[..]));
    }

    #[test]
    fn scan_stripe_and_clear_cover_every_key() {
        let t = TestStore::new("entry-scan", Config::default());
        let c = t.client();
        for i in 0..3000u32 {
            c.put(format!("k{i}").as_bytes(), b"v").unwrap();
        }
        let mut seen = std::collections::HashSet::new();
        for s in 0..c.stripes() {
            c.scan_stripe(s, |k, _, _| {
                assert!(seen.insert(k.to_vec()));
            })
            .unwrap();
        }
        assert_eq!(seen.len(), 3000);
        assert!(c.scan_stripe(c.stripes(), |_, _, _| {}).is_err());
        // An expired key not yet freed by an expiry pass still counts in len(); clear
        // removes it too (FLUSHDB then DBSIZE is 0).
        c.put_with_ttl(b"short", b"v", std::time::Duration::from_millis(1))
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(c.len(), 3001);
        assert_eq!(c.clear().unwrap(), 3000);
        assert_eq!(c.len(), 0);
    }
}
