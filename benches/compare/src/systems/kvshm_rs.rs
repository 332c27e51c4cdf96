//! kvshm through its Rust client: the store lives in a segment on /dev/shm hosted by the
//! runner process; worker processes attach to it by name.

use super::{Conn, Mode, Res, System};
use crate::workload::{key, load_value};
use kvshm::{Client, Config, Host};

/// A hosted store, released (file removed) on drop.
#[derive(Debug)]
pub struct Hosted {
    pub name: String,
    pub host: Option<Host>,
}

impl Hosted {
    pub fn create(tag: &str, initial_size: u64) -> Res<Hosted> {
        let name = format!("compare-{tag}-{}", std::process::id());
        let _ = Host::release_by_name(kvshm::default_dir(), &name);
        let cfg = Config::default()
            .initial_size(initial_size)
            .max_size(64 << 30)
            .max_value_len(1 << 20);
        let host = Host::create(&name, &cfg).map_err(|e| format!("kvshm create: {e}"))?;
        Ok(Hosted {
            name,
            host: Some(host),
        })
    }
    pub fn client(&self) -> &Client {
        self.host.as_ref().expect("hosted").client()
    }
    /// Bytes of /dev/shm the segment occupies (allocated tmpfs pages).
    pub fn allocated(&self) -> u64 {
        super::allocated_under(self.client().path())
    }
}

impl Drop for Hosted {
    fn drop(&mut self) {
        if let Some(h) = self.host.take() {
            let _ = h.release();
        }
    }
}

/// Load keys `0..keys` through `c`.
fn load(c: &Client, keys: u64, value_bytes: usize) -> Res<()> {
    let (mut k, mut v) = ([0u8; 16], Vec::new());
    for i in 0..keys {
        key(i, &mut k);
        load_value(&mut v, value_bytes, i);
        c.put(&k, &v).map_err(|e| format!("kvshm load: {e}"))?;
    }
    Ok(())
}

/// kvshm hosted by the runner; clients attach through the Rust API or, with `via_c`, through
/// the C ABI (`libkvshm.so`).
#[derive(Debug)]
pub struct KvShm {
    pub store: Hosted,
    via_c: bool,
}

impl KvShm {
    pub fn new(via_c: bool) -> Res<KvShm> {
        if via_c {
            super::kvshm_c::available()?; // skip early when the library is not built
        }
        Ok(KvShm {
            store: Hosted::create(if via_c { "c" } else { "rs" }, 4 << 20)?,
            via_c,
        })
    }
}

impl System for KvShm {
    fn mode(&self) -> Mode {
        Mode::Processes
    }
    fn load(&mut self, keys: u64, value_bytes: usize) -> Res<()> {
        load(self.store.client(), keys, value_bytes)
    }
    fn conn(&self) -> Res<Box<dyn Conn + Send>> {
        if self.via_c {
            super::kvshm_c::open(&self.spec())
        } else {
            open(&self.spec())
        }
    }
    fn spec(&self) -> String {
        self.store.name.clone()
    }
    fn memory_bytes(&self) -> Res<u64> {
        Ok(self.store.allocated())
    }
    fn memory_note(&self) -> &'static str {
        "segment file's allocated tmpfs pages"
    }
}

struct RsConn(Client);

impl Conn for RsConn {
    fn lock_waits(&self) -> Option<[u64; 4]> {
        let w = self.0.lock_waits();
        Some([
            w.stripe_waits,
            w.stripe_wait_ns,
            w.alloc_waits,
            w.alloc_wait_ns,
        ])
    }
    fn get(&mut self, key: &[u8], out: &mut Vec<u8>) -> Res<bool> {
        self.0.get_into(key, out).map_err(|e| e.to_string())
    }
    fn put(&mut self, key: &[u8], value: &[u8]) -> Res<()> {
        self.0.put(key, value).map_err(|e| e.to_string())
    }
}

pub fn open(spec: &str) -> Res<Box<dyn Conn + Send>> {
    let c = Client::open(spec).map_err(|e| format!("kvshm attach: {e}"))?;
    Ok(Box::new(RsConn(c)))
}
