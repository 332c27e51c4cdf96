//! Entry-level building blocks for protocol servers (the RESP server in kvhost, issue 15): an
//! atomic read-modify-write that sees and sets the expiry, a multi-key commit whose puts carry
//! expiries and whose checks can watch a key that does not exist, per-stripe scanning for a
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
    /// Keep the value and its version; set the expiry (`None`: persist). No-op if absent.
    SetExpiry(Option<u64>),
    /// Remove the key.
    Remove,
}

/// A write of [`Client::commit_checked`].
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

/// A condition of [`Client::commit_checked`], taken from [`Client::watch`].
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
    pub fn modify_entry<T>(
        &self,
        key: &[u8],
        f: impl FnOnce(Option<Entry<'_>>) -> Result<(Change, T)>,
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

    /// What [`Client::commit_checked`] needs to tell whether `key` changed from now on: its
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

    /// All or nothing, atomically with respect to every process: if every check holds, apply
    /// `writes` in order (a later write of a key wins); otherwise [`Error::Conflict`] naming
    /// the first failed check (its `current` is the key's version now), and nothing changes.
    /// [`Client::commit_if`] with expiries and [`Watch::Untouched`]: what Redis's
    /// WATCH + MULTI/EXEC needs.
    pub fn commit_checked<K: AsRef<[u8]>>(
        &self,
        checks: &[(K, Watch)],
        writes: &[(K, Write)],
    ) -> Result<()> {
        for (k, _) in checks {
            self.st.check_limits(k.as_ref(), None)?;
        }
        for (k, w) in writes {
            let v = match w {
                Write::Put { value, .. } => Some(value.as_slice()),
                Write::Remove => None,
            };
            self.st.check_limits(k.as_ref(), v)?;
        }
        // Only the last write of a key counts.
        let mut last: Vec<(&[u8], &Write)> = Vec::with_capacity(writes.len());
        for (k, w) in writes.iter().rev() {
            if !last.iter().any(|(l, _)| *l == k.as_ref()) {
                last.push((k.as_ref(), w));
            }
        }
        last.reverse();
        let mut puts: Vec<(&[u8], &[u8])> = Vec::new();
        let mut metas: Vec<u64> = Vec::new();
        let mut removes: Vec<&[u8]> = Vec::new();
        for (k, w) in &last {
            match w {
                Write::Put { value, expires_at } => {
                    puts.push((k, value));
                    metas.push(meta_of(*expires_at)?);
                }
                Write::Remove => removes.push(k),
            }
        }
        self.not_forked()?;
        let g = self.guard();
        let sess = self.session_w(&g)?;
        let hash = |k: &[u8]| self.st.hash(k);
        let check_h: Vec<u64> = checks.iter().map(|(k, _)| hash(k.as_ref())).collect();
        let put_h: Vec<u64> = puts.iter().map(|(k, _)| hash(k)).collect();
        let rem_h: Vec<u64> = removes.iter().map(|k| hash(k)).collect();
        let all: Vec<u64> = check_h
            .iter()
            .chain(&put_h)
            .chain(&rem_h)
            .copied()
            .collect();
        let stripes = self.stripes_of(&all);
        let n = checks.len() + puts.len() + removes.len();
        let txn = Txn::begin(&sess, txn::log_entries_put_many(n.max(1)))?;
        let (txn, recs) = self.new_records(txn, &puts, |i| metas[i])?;
        let mut removed = 0u64;
        self.apply_locked(&sess, txn, &stripes, WriteOp::Modify, |txn| {
            for (i, ((k, check), &h)) in checks.iter().zip(&check_h).enumerate() {
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
            for &s in &stripes {
                let adds = put_h.iter().filter(|&&h| self.st.stripe_of(h) == s).count();
                index::ensure_room(txn, s, adds as u64)?;
            }
            for (i, (k, v)) in puts.iter().enumerate() {
                let s = self.st.stripe_of(put_h[i]);
                index::put(txn, s, put_h[i], k, recs[i], v.len())?;
            }
            for (k, &h) in removes.iter().zip(&rem_h) {
                removed += u64::from(index::remove(txn, self.st.stripe_of(h), h, k)?);
            }
            Ok(())
        })?;
        self.count(&[
            (Counter::Puts, puts.len() as u64),
            (Counter::Removes, removed),
        ]);
        self.trace("commit_checked", b"", format_args!("{n} keys"));
        Ok(())
    }

    /// A multi-key read-modify-write under the locks of every key's stripe: if the `checks`
    /// hold, `f` sees `keys` as they are (`None`: absent) and returns writes, each naming a
    /// key by its index in `keys` (a later write of a key wins), and a result. All of it is
    /// one transaction: no other writer of those stripes, in any process, runs in between,
    /// so it never has to be retried (Redis's EXEC, RENAME, MSETNX). A failed check is
    /// [`Error::Conflict`]; an error from `f` changes nothing. `f` runs with the locks held:
    /// keep it short.
    pub fn transact<K: AsRef<[u8]>, T>(
        &self,
        checks: &[(K, Watch)],
        keys: &[K],
        f: impl FnOnce(&[Option<Record>]) -> Result<(Vec<(usize, Write)>, T)>,
    ) -> Result<T> {
        for (k, _) in checks {
            self.st.check_limits(k.as_ref(), None)?;
        }
        for k in keys {
            self.st.check_limits(k.as_ref(), None)?;
        }
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
            for (i, ((k, check), &h)) in checks.iter().zip(&check_h).enumerate() {
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
            for (i, w) in writes.into_iter().rev() {
                if i >= keys.len() {
                    return Err(Error::InvalidArgument(format!(
                        "transact: write to key index {i} of {}",
                        keys.len()
                    )));
                }
                if !last
                    .iter()
                    .any(|(j, _)| keys[*j].as_ref() == keys[i].as_ref())
                {
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
                        let rec = txn.alloc(record_size(k.len() as u64, value.len() as u64))?;
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
            let keys: Vec<Vec<u8>> = self
                .stripe_items(s, b"")?
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
    fn commit_checked_applies_all_or_nothing() {
        let t = TestStore::new("entry-commit", Config::default());
        let a = t.client();
        let b = t.client();
        a.put(b"x", b"1").unwrap();
        let wx = a.watch(b"x").unwrap();
        let wy = a.watch(b"y").unwrap();
        assert!(matches!(wx, Watch::Version(Some(_))));
        assert!(matches!(wy, Watch::Untouched(_)));
        let at = now_ms() + 60_000;
        a.commit_checked(
            &[(&b"x"[..], wx), (&b"y"[..], wy)],
            &[
                (
                    &b"y"[..],
                    Write::Put {
                        value: b"2".to_vec(),
                        expires_at: Some(at),
                    },
                ),
                (&b"x"[..], Write::Remove),
            ],
        )
        .unwrap();
        assert_eq!(b.get(b"x").unwrap(), None);
        assert_eq!(b.get(b"y").unwrap().as_deref(), Some(&b"2"[..]));
        assert!(matches!(b.ttl(b"y").unwrap(), Ttl::Remaining(_)));

        // A key stored and removed again after the watch: Untouched sees it.
        let wz = a.watch(b"z").unwrap();
        b.put(b"z", b"tmp").unwrap();
        b.remove(b"z").unwrap();
        let r = a.commit_checked(
            &[(&b"z"[..], wz)],
            &[(
                &b"w"[..],
                Write::Put {
                    value: b"no".to_vec(),
                    expires_at: None,
                },
            )],
        );
        assert!(matches!(
            r,
            Err(Error::Conflict {
                index: 0,
                current: None
            })
        ));
        assert_eq!(a.get(b"w").unwrap(), None);

        // A changed version fails; the last write of a key wins.
        let wy = a.watch(b"y").unwrap();
        b.put(b"y", b"3").unwrap();
        let r = a.commit_checked(&[(&b"y"[..], wy)], &[(&b"y"[..], Write::Remove)]);
        assert!(matches!(r, Err(Error::Conflict { index: 0, .. })));
        assert_eq!(a.get(b"y").unwrap().as_deref(), Some(&b"3"[..]));
        let none: &[(&[u8], Watch)] = &[];
        a.commit_checked(
            none,
            &[
                (&b"y"[..], Write::Remove),
                (
                    &b"y"[..],
                    Write::Put {
                        value: b"4".to_vec(),
                        expires_at: None,
                    },
                ),
            ],
        )
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
        assert_eq!(c.clear().unwrap(), 3000);
        assert_eq!(c.len(), 0);
    }
}
