//! The in-process reference: what a program gets without sharing memory across processes.
//! A std `HashMap` behind an `RwLock`, and `dashmap` (sharded locks), used as a user would:
//! owned keys and values, a get copies the value out, a put inserts owned copies.

use super::{copy_found, rss_of, Conn, Mode, Res, System};
use crate::workload::{key, load_value};
use dashmap::DashMap;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

type Map = HashMap<Box<[u8]>, Box<[u8]>>;
type Shards = DashMap<Box<[u8]>, Box<[u8]>>;

#[derive(Debug, Default)]
pub struct StdMap {
    map: Arc<RwLock<Map>>,
    rss: u64,
}

impl System for StdMap {
    fn mode(&self) -> Mode {
        Mode::Threads
    }
    fn load(&mut self, keys: u64, value_bytes: usize) -> Res<()> {
        let before = rss_of("self");
        let mut m = self.map.write().unwrap();
        let (mut k, mut v) = ([0u8; 16], Vec::new());
        for i in 0..keys {
            key(i, &mut k);
            load_value(&mut v, value_bytes, i);
            m.insert(k.into(), v.as_slice().into());
        }
        drop(m);
        self.rss = rss_of("self").saturating_sub(before);
        Ok(())
    }
    fn conn(&self) -> Res<Box<dyn Conn + Send>> {
        Ok(Box::new(StdConn(self.map.clone())))
    }
    fn memory_bytes(&self) -> Res<u64> {
        Ok(self.rss)
    }
    fn memory_note(&self) -> &'static str {
        "resident memory growth while loading"
    }
}

struct StdConn(Arc<RwLock<Map>>);

impl Conn for StdConn {
    fn get(&mut self, key: &[u8], out: &mut Vec<u8>) -> Res<bool> {
        Ok(copy_found(
            self.0.read().unwrap().get(key).map(|v| &v[..]),
            out,
        ))
    }
    fn put(&mut self, key: &[u8], value: &[u8]) -> Res<()> {
        self.0.write().unwrap().insert(key.into(), value.into());
        Ok(())
    }
}

#[derive(Debug, Default)]
pub struct Dash {
    map: Arc<Shards>,
    rss: u64,
}

impl System for Dash {
    fn mode(&self) -> Mode {
        Mode::Threads
    }
    fn load(&mut self, keys: u64, value_bytes: usize) -> Res<()> {
        let before = rss_of("self");
        let (mut k, mut v) = ([0u8; 16], Vec::new());
        for i in 0..keys {
            key(i, &mut k);
            load_value(&mut v, value_bytes, i);
            self.map.insert(k.into(), v.as_slice().into());
        }
        self.rss = rss_of("self").saturating_sub(before);
        Ok(())
    }
    fn conn(&self) -> Res<Box<dyn Conn + Send>> {
        Ok(Box::new(DashConn(self.map.clone())))
    }
    fn memory_bytes(&self) -> Res<u64> {
        Ok(self.rss)
    }
    fn memory_note(&self) -> &'static str {
        "resident memory growth while loading"
    }
}

struct DashConn(Arc<Shards>);

impl Conn for DashConn {
    fn get(&mut self, key: &[u8], out: &mut Vec<u8>) -> Res<bool> {
        Ok(copy_found(self.0.get(key).as_deref().map(|v| &v[..]), out))
    }
    fn put(&mut self, key: &[u8], value: &[u8]) -> Res<()> {
        self.0.insert(key.into(), value.into());
        Ok(())
    }
}
