//! LMDB through heed (which bundles LMDB's C source), on /dev/shm with NO_SYNC: the one peer
//! that, like kvshm, lets separate processes share one memory-mapped store.

use super::scratch::ScratchDir;
use super::{copy_found, Conn, Mode, Res, System};
use crate::workload::{key, load_value};
use heed::types::Bytes;
use heed::{Database, Env, EnvFlags, EnvOpenOptions};
use std::path::Path;

const MAP_SIZE: usize = 32 << 30;

fn env_at(dir: &Path) -> Res<Env> {
    let mut o = EnvOpenOptions::new();
    o.map_size(MAP_SIZE).max_dbs(1);
    // SAFETY: NO_SYNC / NO_META_SYNC only drop durability (the files are on tmpfs anyway),
    // and the environment is opened once per process.
    unsafe {
        o.flags(EnvFlags::NO_SYNC | EnvFlags::NO_META_SYNC);
        o.open(dir)
    }
    .map_err(|e| format!("lmdb open: {e}"))
}

#[derive(Debug)]
pub struct Lmdb {
    dir: ScratchDir,
    env: Env,
    db: Database<Bytes, Bytes>,
}

impl Lmdb {
    pub fn new() -> Res<Lmdb> {
        let dir = ScratchDir::new("lmdb")?;
        let env = env_at(&dir.0)?;
        let mut w = env.write_txn().map_err(|e| e.to_string())?;
        let db = env
            .create_database(&mut w, None)
            .map_err(|e| e.to_string())?;
        w.commit().map_err(|e| e.to_string())?;
        Ok(Lmdb { dir, env, db })
    }
}

impl System for Lmdb {
    fn mode(&self) -> Mode {
        Mode::Processes
    }
    fn load(&mut self, keys: u64, value_bytes: usize) -> Res<()> {
        let (mut k, mut v) = ([0u8; 16], Vec::new());
        let mut i = 0;
        while i < keys {
            let mut w = self.env.write_txn().map_err(|e| e.to_string())?;
            for j in i..(i + 10_000).min(keys) {
                key(j, &mut k);
                load_value(&mut v, value_bytes, j);
                self.db.put(&mut w, &k, &v).map_err(|e| e.to_string())?;
            }
            w.commit().map_err(|e| e.to_string())?;
            i += 10_000;
        }
        Ok(())
    }
    fn conn(&self) -> Res<Box<dyn Conn + Send>> {
        open(&self.spec())
    }
    fn spec(&self) -> String {
        self.dir.0.to_string_lossy().into_owned()
    }
    fn memory_bytes(&self) -> Res<u64> {
        Ok(self.dir.allocated())
    }
    fn memory_note(&self) -> &'static str {
        "data file's allocated tmpfs pages (NO_SYNC)"
    }
}

struct LmdbConn {
    env: Env,
    db: Database<Bytes, Bytes>,
}

impl Conn for LmdbConn {
    fn get(&mut self, key: &[u8], out: &mut Vec<u8>) -> Res<bool> {
        let r = self.env.read_txn().map_err(|e| e.to_string())?;
        let v = self.db.get(&r, key).map_err(|e| e.to_string())?;
        Ok(copy_found(v, out))
    }
    fn put(&mut self, key: &[u8], value: &[u8]) -> Res<()> {
        let mut w = self.env.write_txn().map_err(|e| e.to_string())?;
        self.db.put(&mut w, key, value).map_err(|e| e.to_string())?;
        w.commit().map_err(|e| e.to_string())
    }
}

pub fn open(spec: &str) -> Res<Box<dyn Conn + Send>> {
    let env = env_at(Path::new(spec))?;
    let r = env.read_txn().map_err(|e| e.to_string())?;
    let db = env
        .open_database(&r, None)
        .map_err(|e| e.to_string())?
        .ok_or("lmdb: no database")?;
    r.commit().map_err(|e| e.to_string())?;
    Ok(Box::new(LmdbConn { env, db }))
}
