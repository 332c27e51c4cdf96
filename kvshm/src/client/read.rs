//! Reads: lock-free seqlock attempts, then (rarely) a consistent view under the stripe locks.
//! Reads write nothing to the shared stripes; a writable client's reads bump its own slot's
//! counters (a read-only client writes nothing at all).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::Client;
use crate::crash_point;
use crate::error::{Error, Result};
use crate::layout::Counter;
use crate::store::{optimistic, Attempt};

const R: Ordering = Ordering::Relaxed;

/// How long a read-only client keeps retrying a stripe a writer holds before `Error::Busy`.
const READ_ONLY_PATIENCE: Duration = Duration::from_secs(2);

/// A key, its value and its expiry (Unix ms, 0 = none).
pub(super) type StripeItem = (Vec<u8>, Vec<u8>, u64);

impl Client {
    /// The value of `key`, if present. Lock-free; never writes to shared stripes.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let mut out = Vec::new();
        Ok(self.get_into(key, &mut out)?.then_some(out))
    }

    /// Copy the value of `key` into `out` (replacing its contents); returns whether the key was
    /// present. Allocates nothing once `out` has the capacity.
    pub fn get_into(&self, key: &[u8], out: &mut Vec<u8>) -> Result<bool> {
        self.not_forked()?;
        self.st.check_limits(key, None)?;
        let hash = self.st.hash(key);
        let s = self.st.stripe_of(hash);
        let found = match self.st.read_optimistic(s, hash, key, out) {
            Some(r) => r?,
            None => self.read_slow(&[s], || {
                let tw = self.st.mem.stripe(s).table.load(R);
                match self.st.probe(tw, hash, key)? {
                    Some(rec) => self.st.read_value(rec, out).map(|_| true),
                    None => Ok(false),
                }
            })?,
        };
        let hit = u64::from(found);
        self.count(&[
            (Counter::Gets, 1),
            (Counter::Hits, hit),
            (Counter::BytesOut, hit * out.len() as u64),
        ]);
        self.trace("get", key, if found { "hit" } else { "miss" });
        Ok(found)
    }

    /// Whether `key` is present.
    pub fn contains(&self, key: &[u8]) -> Result<bool> {
        self.not_forked()?;
        self.st.check_limits(key, None)?;
        let hash = self.st.hash(key);
        let s = self.st.stripe_of(hash);
        self.read_consistent(&[s], || {
            let tw = self.st.mem.stripe(s).table.load(R);
            Ok(self.st.probe(tw, hash, key)?.is_some())
        })
    }

    /// Values of all `keys`, as one consistent snapshot (no write lands between them).
    pub fn get_many<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<Vec<Option<Vec<u8>>>> {
        self.not_forked()?;
        for k in keys {
            self.st.check_limits(k.as_ref(), None)?;
        }
        let hashes: Vec<u64> = keys.iter().map(|k| self.st.hash(k.as_ref())).collect();
        let stripes = self.stripes_of(&hashes);
        let out = self.read_consistent(&stripes, || {
            keys.iter()
                .zip(&hashes)
                .map(|(k, &h)| {
                    let tw = self.st.mem.stripe(self.st.stripe_of(h)).table.load(R);
                    let v = match self.st.probe(tw, h, k.as_ref())? {
                        Some(rec) => {
                            let mut v = Vec::new();
                            self.st.read_value(rec, &mut v)?;
                            Some(v)
                        }
                        None => None,
                    };
                    // A test stops a reader here, between two keys of one batch.
                    crash_point!("get_many.key_read");
                    Ok(v)
                })
                .collect::<Result<Vec<_>>>()
        })?;
        let hits = out.iter().filter(|v| v.is_some()).count() as u64;
        self.count(&[(Counter::Gets, keys.len() as u64), (Counter::Hits, hits)]);
        Ok(out)
    }

    /// Number of keys (sum of the stripes' counts; exact when no write is in flight).
    pub fn len(&self) -> u64 {
        (0..self.st.mem.stripe_count())
            .map(|s| self.st.mem.stripe(s).count.load(R))
            .sum()
    }

    /// Whether the store holds no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Call `f(key, value)` for every key starting with `prefix`, stripe by stripe (each stripe
    /// is a consistent view; the whole scan is not a snapshot). `f` returns false to stop.
    ///
    /// One stripe is buffered at a time, and never more bytes than the store's committed size:
    /// a healthy stripe holds less, so more means a torn view (retried) or a damaged table
    /// (entries pointing at one big record many times: `Corrupt`), not an allocation of
    /// gigabytes.
    pub fn scan(&self, prefix: &[u8], mut f: impl FnMut(&[u8], &[u8]) -> bool) -> Result<()> {
        self.scan_with_expiry(prefix, |k, v, _| f(k, v))
    }

    /// [`Client::scan`], with each key's expiry (Unix milliseconds, 0 = none). Expired keys
    /// are skipped.
    pub fn scan_with_expiry(
        &self,
        prefix: &[u8],
        mut f: impl FnMut(&[u8], &[u8], u64) -> bool,
    ) -> Result<()> {
        self.not_forked()?;
        for s in 0..self.st.mem.stripe_count() {
            for (k, v, exp) in &self.stripe_items(s, prefix)? {
                if !f(k, v, *exp) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// The live keys of stripe `s` starting with `prefix`, with values and expiries, from one
    /// consistent view of the stripe.
    pub(super) fn stripe_items(&self, s: usize, prefix: &[u8]) -> Result<Vec<StripeItem>> {
        self.stripe_records_of(s, prefix, true)
    }

    /// [`Client::stripe_items`], with the records past their expiry too when `live_only` is
    /// false (what emptying the store must remove).
    pub(super) fn stripe_records_of(
        &self,
        s: usize,
        prefix: &[u8],
        live_only: bool,
    ) -> Result<Vec<StripeItem>> {
        self.read_consistent(&[s], || {
            let mut out = Vec::new();
            let mut budget = self.st.mem.committed();
            for rec in self.st.stripe_records(s)? {
                if live_only && self.st.record_expired(rec)? {
                    continue;
                }
                let (klen, vlen) = self.st.record_lens(rec)?;
                let need = (klen + vlen) as u64;
                budget = budget.checked_sub(need).ok_or_else(|| {
                    Error::corrupt(rec, format!("stripe {s}: more record bytes than the store"))
                })?;
                let mut k = Vec::new();
                self.st.read_key(rec, &mut k)?;
                if k.starts_with(prefix) {
                    let mut v = Vec::new();
                    self.st.read_value(rec, &mut v)?;
                    let exp = self.st.record_meta(rec)? & crate::layout::META_EXPIRY_MASK;
                    out.push((k, v, exp));
                }
            }
            Ok(out)
        })
    }

    /// All keys starting with `prefix` (unordered).
    pub fn keys(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        self.scan(prefix, |k, _| {
            out.push(k.to_vec());
            true
        })?;
        Ok(out)
    }

    /// Run `f` against a consistent view of `stripes` (sorted, distinct): up to
    /// Lock-free attempts (spinning, then yielding: [`optimistic`]), then
    /// [`Client::read_slow`].
    pub(super) fn read_consistent<T>(
        &self,
        stripes: &[usize],
        mut f: impl FnMut() -> Result<T>,
    ) -> Result<T> {
        if let Some(r) = optimistic(|| self.st.attempt_all(stripes, &mut f)) {
            return r;
        }
        self.read_slow(stripes, f)
    }

    /// Run `f` with a consistent view of `stripes` (sorted, distinct) when optimistic reads
    /// keep failing: writable clients take the stripe locks; read-only ones wait and retry.
    fn read_slow<T>(&self, stripes: &[usize], mut f: impl FnMut() -> Result<T>) -> Result<T> {
        self.count(&[(Counter::Retries, 1)]);
        if let Ok(sess) = self.session() {
            let _g = self.guard();
            let _locks = stripes
                .iter()
                .map(|&s| sess.lock_stripe(s))
                .collect::<Result<Vec<_>>>()?;
            return f();
        }
        let start = Instant::now();
        while start.elapsed() < READ_ONLY_PATIENCE {
            if let Attempt::Done(r) = self.st.attempt_all(stripes, &mut f) {
                return r;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        Err(Error::Busy)
    }
}
