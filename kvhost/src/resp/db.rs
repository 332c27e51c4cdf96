//! The store as commands see it: either directly (each command one atomic operation of the
//! library), or through a transaction's overlay (MULTI/EXEC). EXEC runs inside one
//! `Client::transact` over every key its queued commands name (Redis's key positions of each
//! command): the keys' current records are loaded under their stripe locks, the commands run
//! against the overlay, and what they wrote is applied in the same transaction. Nothing can
//! get in between, so EXEC never retries and never starves behind busy local writers.

use std::collections::HashMap;

use kvshm::{Change, Client, Entry, Error, Record, Result, Write};

/// The store for one command.
#[derive(Debug)]
pub enum Db<'a> {
    /// Straight to the store.
    Direct(&'a Client),
    /// Inside EXEC.
    Multi(&'a Client, &'a mut Overlay),
}

/// A key as the overlay holds it.
#[derive(Clone, Debug)]
struct Held {
    value: Vec<u8>,
    version: u64,
    expires_at: Option<u64>,
}

/// The keys of a transaction: as loaded under their locks, then as its commands left them.
#[derive(Debug, Default)]
pub struct Overlay {
    keys: Vec<Vec<u8>>,
    view: HashMap<Vec<u8>, Option<Held>>,
    /// Keys written, as indexes into `keys`, in first-write order.
    dirty: Vec<usize>,
    /// Where each key is in `keys`.
    index: HashMap<Vec<u8>, usize>,
    /// Whether `keys[i]` is in `dirty`.
    is_dirty: Vec<bool>,
}

impl Overlay {
    /// The overlay over `keys` as `recs` found them.
    pub fn new(keys: &[Vec<u8>], recs: &[Option<Record>]) -> Overlay {
        let view = keys
            .iter()
            .zip(recs)
            .map(|(k, r)| {
                let h = r.as_ref().map(|r| Held {
                    value: r.value.clone(),
                    version: r.version,
                    expires_at: r.expires_at,
                });
                (k.clone(), h)
            })
            .collect();
        Overlay {
            keys: keys.to_vec(),
            view,
            dirty: Vec::new(),
            index: keys
                .iter()
                .enumerate()
                .map(|(i, k)| (k.clone(), i))
                .collect(),
            is_dirty: vec![false; keys.len()],
        }
    }

    fn load(&self, key: &[u8]) -> Result<()> {
        if self.view.contains_key(key) {
            Ok(())
        } else {
            Err(Error::InvalidArgument(format!(
                "key {:?} was not declared by its command",
                String::from_utf8_lossy(key)
            )))
        }
    }

    fn current(&self, key: &[u8]) -> Option<&Held> {
        let h = self.view.get(key)?.as_ref()?;
        // A key that expires while the transaction runs is absent for it too.
        match h.expires_at {
            Some(at) if at <= kvshm::now_ms() => None,
            _ => Some(h),
        }
    }

    /// Called only for a key `load` accepted, so it has an index.
    fn set(&mut self, key: &[u8], h: Option<Held>) {
        if let Some(&i) = self.index.get(key) {
            if !std::mem::replace(&mut self.is_dirty[i], true) {
                self.dirty.push(i);
            }
        }
        self.view.insert(key.to_vec(), h);
    }

    /// What the transaction wrote, by index into its keys.
    pub fn writes(mut self) -> Vec<(usize, Write)> {
        let dirty = std::mem::take(&mut self.dirty);
        dirty
            .into_iter()
            .map(|i| {
                let w = match self.view.remove(&self.keys[i]).flatten() {
                    Some(h) => Write::Put {
                        value: h.value,
                        expires_at: h.expires_at,
                    },
                    None => Write::Remove,
                };
                (i, w)
            })
            .collect()
    }
}

impl<'d> Db<'d> {
    /// The client underneath.
    pub fn client(&self) -> &'d Client {
        match self {
            Db::Direct(c) | Db::Multi(c, _) => c,
        }
    }

    /// A value.
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self {
            Db::Direct(c) => c.get(key),
            Db::Multi(_, o) => {
                o.load(key)?;
                Ok(o.current(key).map(|h| h.value.clone()))
            }
        }
    }

    /// A value with its version and expiry.
    pub fn read(&mut self, key: &[u8]) -> Result<Option<Record>> {
        match self {
            Db::Direct(c) => c.get_entry(key),
            Db::Multi(_, o) => {
                o.load(key)?;
                Ok(o.current(key).map(|h| Record {
                    value: h.value.clone(),
                    version: h.version,
                    expires_at: h.expires_at,
                }))
            }
        }
    }

    /// Whether a key exists.
    pub fn exists(&mut self, key: &[u8]) -> Result<bool> {
        match self {
            Db::Direct(c) => c.contains(key),
            Db::Multi(..) => Ok(self.get(key)?.is_some()),
        }
    }

    /// Atomic read-modify-write of one key ([`Client::modify_entry`]).
    pub fn modify<T>(
        &mut self,
        key: &[u8],
        mut f: impl FnMut(Option<Entry<'_>>) -> Result<(Change, T)>,
    ) -> Result<T> {
        match self {
            Db::Direct(c) => Ok(c.modify_entry(key, f)?.0),
            Db::Multi(c, o) => {
                o.load(key)?;
                let cur = o.current(key).cloned();
                let (change, t) = f(cur.as_ref().map(|h| Entry {
                    value: &h.value,
                    version: h.version,
                    expires_at: h.expires_at,
                }))?;
                let (max_key, max_value) = c.limits();
                // The overlay holds values as bytes.
                let change = match change {
                    Change::PutInt { value, expires_at } => Change::Put {
                        value: value.to_string().into_bytes(),
                        expires_at,
                    },
                    other => other,
                };
                match change {
                    Change::Keep => {}
                    Change::Put { value, expires_at } => {
                        if key.len() > max_key {
                            return Err(Error::KeyTooLong {
                                len: key.len(),
                                max: max_key,
                            });
                        }
                        if value.len() > max_value {
                            return Err(Error::ValueTooLong {
                                len: value.len(),
                                max: max_value,
                            });
                        }
                        o.set(
                            key,
                            Some(Held {
                                value,
                                version: 0,
                                expires_at,
                            }),
                        )
                    }
                    Change::PutInt { .. } => unreachable!("made a Put above"),
                    Change::SetExpiry(at) => {
                        if let Some(mut h) = cur {
                            h.expires_at = at;
                            o.set(key, Some(h));
                        }
                    }
                    Change::Remove => {
                        if cur.is_some() {
                            o.set(key, None);
                        }
                    }
                }
                Ok(t)
            }
        }
    }

    /// Atomic read-modify-write of several keys: `f` sees them (in the order of `keys`) and
    /// returns the writes. Directly: optimistic, retried until no other writer got in between.
    pub fn multi<T>(
        &mut self,
        keys: &[&[u8]],
        mut f: impl FnMut(&[Option<Record>]) -> Result<(Vec<(Vec<u8>, Write)>, T)>,
    ) -> Result<T> {
        match self {
            Db::Direct(c) => {
                let none: &[(&[u8], kvshm::Watch)] = &[];
                c.transact(none, keys, |recs| {
                    let (writes, t) = f(recs)?;
                    let index: HashMap<&[u8], usize> =
                        keys.iter().enumerate().map(|(i, k)| (*k, i)).collect();
                    let mut out = Vec::with_capacity(writes.len());
                    for (k, w) in writes {
                        let i = *index.get(k.as_slice()).ok_or_else(|| {
                            Error::InvalidArgument("multi: a write to an undeclared key".into())
                        })?;
                        out.push((i, w));
                    }
                    Ok((out, t))
                })
            }
            Db::Multi(..) => {
                let recs = keys
                    .iter()
                    .map(|k| self.read(k))
                    .collect::<Result<Vec<_>>>()?;
                let (writes, t) = f(&recs)?;
                for (k, w) in writes {
                    // The overlay runs the closure once (only a direct write can run again).
                    let mut w = Some(w);
                    self.modify(&k, |_| {
                        Ok((
                            match w.take().expect("an overlay write runs once") {
                                Write::Put { value, expires_at } => {
                                    Change::Put { value, expires_at }
                                }
                                Write::Remove => Change::Remove,
                            },
                            (),
                        ))
                    })?;
                }
                Ok(t)
            }
        }
    }

    /// Several values (MGET: one consistent view directly).
    pub fn mget(&mut self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>> {
        match self {
            Db::Direct(c) => c.get_many(keys),
            Db::Multi(..) => keys.iter().map(|k| self.get(k)).collect(),
        }
    }

    /// Store one value with no expiry (a plain SET): a put, not a read-modify-write (callgrind
    /// of pipelined SETs: ~1,000 fewer instructions per SET).
    pub fn set(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        match self {
            Db::Direct(c) => c.put(key, value),
            Db::Multi(..) => self.modify(key, |_| {
                Ok((
                    Change::Put {
                        value: value.to_vec(),
                        expires_at: None,
                    },
                    (),
                ))
            }),
        }
    }

    /// Store several values atomically (no expiry).
    pub fn mset(&mut self, items: &[(&[u8], &[u8])]) -> Result<()> {
        match self {
            Db::Direct(c) => c.put_many(items),
            Db::Multi(..) => {
                for (k, v) in items {
                    self.set(k, v)?;
                }
                Ok(())
            }
        }
    }

    /// Remove several keys atomically; how many existed.
    pub fn del(&mut self, keys: &[&[u8]]) -> Result<usize> {
        match self {
            Db::Direct(c) => c.remove_many(keys),
            Db::Multi(..) => {
                let mut n = 0;
                for k in keys {
                    n += self.modify(k, |cur| Ok((Change::Remove, usize::from(cur.is_some()))))?;
                }
                Ok(n)
            }
        }
    }
}
