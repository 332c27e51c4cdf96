//! kvhost's Redis protocol server over its shared-memory store (issue 15), spoken to with
//! the same minimal RESP client as redis-server: the same keys a local kvshm client reads
//! from memory, reached over TCP like Redis. The kvhost binary next to this one is started
//! with one RESP worker thread (as Redis runs one event loop) on its own store.

use std::path::PathBuf;

use super::redis::RespConn;
use super::server::{Placement, Served};
use super::{Conn, Mode, Res, System};

/// A kvhost started for the run; its store is removed when the run ends.
pub struct KvhostResp {
    inner: Served<RespConn>,
    store: PathBuf,
}

pub fn start(placement: Placement) -> Res<KvhostResp> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let kvhost = exe.with_file_name("kvhost");
    if !kvhost.exists() {
        return Err(format!(
            "{} not built: cargo build --release -p kvhost",
            kvhost.display()
        ));
    }
    let name = format!("kvcmp-resp-{}", std::process::id());
    let store = kvshm::default_dir().join(format!("kvshm.{name}"));
    let inner = Served::start(
        &kvhost.to_string_lossy(),
        &[
            "--name",
            &name,
            "--resp",
            "127.0.0.1:{port}",
            "--resp-threads",
            "1",
            "--max-size",
            "16GiB",
            "--log-level",
            "warn",
        ],
        placement,
    )?;
    Ok(KvhostResp { inner, store })
}

impl Drop for KvhostResp {
    fn drop(&mut self) {
        // The server is killed when `inner` drops; its store file goes now (the mapping
        // keeps the memory until then).
        let _ = std::fs::remove_file(&self.store);
    }
}

impl System for KvhostResp {
    fn mode(&self) -> Mode {
        self.inner.mode()
    }
    fn load(&mut self, keys: u64, value_bytes: usize) -> Res<()> {
        self.inner.load(keys, value_bytes)
    }
    fn conn(&self) -> Res<Box<dyn Conn + Send>> {
        self.inner.conn()
    }
    fn spec(&self) -> String {
        self.inner.spec()
    }
    fn memory_bytes(&self) -> Res<u64> {
        self.inner.memory_bytes()
    }
    fn memory_note(&self) -> &'static str {
        "kvhost's resident growth (the store's pages it touched); server and clients on different cores"
    }
    fn worker_cpus(&self) -> Option<Vec<usize>> {
        self.inner.worker_cpus()
    }
}
