//! Shared set-up for the kvshm benchmarks (see `benches/ops.rs`).
#![forbid(unsafe_code)]

use kvshm::{Config, Host};

/// A benchmark store, removed on drop.
#[derive(Debug)]
pub struct BenchStore {
    pub host: Option<Host>,
}

impl BenchStore {
    /// A store named after the benchmark and this process, loaded with `n` keys of 16 bytes
    /// and `value_len`-byte values.
    pub fn loaded(tag: &str, n: u64, value_len: usize) -> BenchStore {
        let name = format!("bench-{tag}-{}", std::process::id());
        let _ = Host::release_by_name(kvshm::default_dir(), &name);
        let cfg = Config::default()
            .max_size(32 << 30)
            .dir(kvshm::default_dir());
        let host = Host::create(&name, &cfg).expect("create bench store");
        let value = vec![0x5a; value_len];
        let mut batch = Vec::with_capacity(1000);
        for i in 0..n {
            batch.push((key(i), value.clone()));
            if batch.len() == 1000 {
                host.put_many(&batch).expect("load");
                batch.clear();
            }
        }
        host.put_many(&batch).expect("load");
        BenchStore { host: Some(host) }
    }

    pub fn host(&self) -> &Host {
        self.host.as_ref().expect("host")
    }
}

impl Drop for BenchStore {
    fn drop(&mut self) {
        if let Some(h) = self.host.take() {
            let _ = h.release();
        }
    }
}

/// The 16-byte key of index `i`.
pub fn key(i: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(b"key:\0\0\0\0");
    k[8..].copy_from_slice(&i.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
    k
}

/// Print the machine the numbers come from.
pub fn print_machine() {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("?").to_string())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    eprintln!(
        "machine: {cpus} cpus ({model}), {mem} kB memory, kernel {}",
        kernel.trim()
    );
}
