//! Memory that comes back (issue 12): how much of a store's memory (allocated tmpfs blocks of
//! its file, not its length) goes back to the OS after removes, with a host thread running
//! the same housekeeping loop as `kvhost` (a pass every 100 ms, a reclaim pass each second).
//!
//!     cargo run --release -p kvshm-benches --bin memory_reclaim
//!
//! 1. 400,000 keys with 100-byte values, then all removed: allocated bytes over 5 s.
//! 2. Drifting sizes: 10 rounds, value size doubling from 64 B, ~40 MB of values per round,
//!    each round's keys replacing the last round's: allocated bytes vs live bytes.
//! 3. put/remove churn at one size for 3 s, with and without the host's housekeeping.

use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kvshm::{Client, Config, Host};

fn allocated(path: &std::path::Path) -> u64 {
    std::fs::metadata(path)
        .map(|m| m.blocks() * 512)
        .unwrap_or(0)
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
}

struct Bench {
    name: String,
    path: std::path::PathBuf,
    host: Option<Arc<Host>>,
    stop: Arc<AtomicBool>,
    keeper: Option<std::thread::JoinHandle<()>>,
}

impl Bench {
    fn new(tag: &str, housekeeping: bool) -> Bench {
        let name = format!("bench-reclaim-{tag}-{}", std::process::id());
        let host = Arc::new(
            Host::create(&name, &Config::default().initial_size(0).stripes(64)).expect("create"),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let keeper = housekeeping.then(|| {
            let (h, stop) = (host.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut cursor = 0;
                while !stop.load(Ordering::Relaxed) {
                    h.housekeeping(&mut cursor, 4).expect("housekeeping");
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        });
        Bench {
            path: kvshm::store_path(&kvshm::default_dir(), &name).expect("path"),
            name,
            host: Some(host),
            stop,
            keeper,
        }
    }
    fn client(&self) -> Client {
        Client::open(&self.name).expect("attach")
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(k) = self.keeper.take() {
            let _ = k.join();
        }
        if let Some(h) = self.host.take().and_then(|h| Arc::try_unwrap(h).ok()) {
            let _ = h.release();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn remove_all_then_watch() {
    let b = Bench::new("removeall", true);
    let c = b.client();
    let value = vec![0x5au8; 100];
    for i in 0..400_000u32 {
        c.put(format!("key-{i:08}").as_bytes(), &value).unwrap();
    }
    let peak = allocated(&b.path);
    let start = Instant::now();
    for i in 0..400_000u32 {
        c.remove(format!("key-{i:08}").as_bytes()).unwrap();
    }
    println!(
        "1. 400,000 keys x 100 B: peak {} allocated; all removed in {:?}",
        mib(peak),
        start.elapsed()
    );
    let removed = Instant::now();
    let mut reached = None;
    while removed.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(250));
        let now = allocated(&b.path);
        if reached.is_none() && now * 10 <= peak {
            reached = Some(removed.elapsed());
        }
    }
    let end = allocated(&b.path);
    println!(
        "   after 5 s: {} allocated = {:.1}% of the peak (<= 10% after {:?}); stats: {}",
        mib(end),
        end as f64 * 100.0 / peak as f64,
        reached,
        {
            let s = c.stats();
            format!(
                "committed {}, free {}, returned {}",
                mib(s.committed_bytes),
                mib(s.free_bytes),
                mib(s.returned_bytes)
            )
        }
    );
}

/// The worst case of chunk-granular reclaim: removes scattered over the whole key space leave
/// a few live records in most chunks, which pin them.
fn scattered_removes() {
    let b = Bench::new("scattered", true);
    let c = b.client();
    let value = vec![0x5au8; 100];
    for i in 0..400_000u32 {
        c.put(format!("key-{i:08}").as_bytes(), &value).unwrap();
    }
    let peak = allocated(&b.path);
    for i in 0..400_000u32 {
        if i % 10 != 0 {
            c.remove(format!("key-{i:08}").as_bytes()).unwrap();
        }
    }
    std::thread::sleep(Duration::from_secs(5));
    let end = allocated(&b.path);
    println!(
        "1b. 400,000 keys x 100 B, 9 in 10 removed (every 10th kept): peak {}, after 5 s {} \
         ({:.1}% of the peak, with 10% of the data live)",
        mib(peak),
        mib(end),
        end as f64 * 100.0 / peak as f64
    );
}

fn drifting() {
    let b = Bench::new("drift", true);
    let c = b.client();
    let per_round: u64 = 40 << 20;
    let mut prev: Option<(u64, usize)> = None;
    println!("2. drifting value sizes, ~40 MB per round, each round replacing the last:");
    let mut worst = 0f64;
    for round in 0..10u32 {
        let size = 64usize << round;
        let n = per_round / size as u64;
        let value = vec![round as u8; size];
        for i in 0..n {
            c.put(format!("r{round}-{i:08}").as_bytes(), &value)
                .unwrap();
        }
        if let Some((pn, _)) = prev {
            for i in 0..pn {
                c.remove(format!("r{}-{i:08}", round - 1).as_bytes())
                    .unwrap();
            }
        }
        prev = Some((n, size));
        // Two reclaim periods for the host to mark and punch.
        std::thread::sleep(Duration::from_millis(2300));
        let a = allocated(&b.path);
        // What the same data takes in a store that held nothing else: records, index and
        // fixed overhead, without the history of other sizes.
        let fresh = {
            let f = Bench::new(&format!("fresh{round}"), false);
            let fc = f.client();
            for i in 0..n {
                fc.put(format!("r{round}-{i:08}").as_bytes(), &value)
                    .unwrap();
            }
            allocated(&f.path)
        };
        let ratio = a as f64 / fresh as f64;
        worst = worst.max(ratio);
        println!(
            "   round {round}: {n} x {size} B: allocated {} vs {} in a fresh store ({ratio:.2}x)",
            mib(a),
            mib(fresh)
        );
    }
    println!("   worst: {worst:.2}x a fresh store holding the same data");
}

fn churn(housekeeping: bool) -> f64 {
    let b = Bench::new(
        if housekeeping { "churn-hk" } else { "churn" },
        housekeeping,
    );
    let c = b.client();
    let value = vec![1u8; 200];
    for i in 0..100_000u32 {
        c.put(&i.to_le_bytes(), &value).unwrap();
    }
    let start = Instant::now();
    let mut ops = 0u64;
    let mut i = 0u32;
    while start.elapsed() < Duration::from_secs(3) {
        for _ in 0..1000 {
            let k = (i % 100_000).to_le_bytes();
            c.remove(&k).unwrap();
            c.put(&k, &value).unwrap();
            i = i.wrapping_add(7919);
            ops += 2;
        }
    }
    ops as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    println!(
        "machine: {} cores, kernel {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    );
    remove_all_then_watch();
    scattered_removes();
    drifting();
    // Interleaved pairs, medians: this VM's speed drifts by more than the effect.
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        off.push(churn(false));
        on.push(churn(true));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let (off_m, on_m) = (median(&mut off), median(&mut on));
    println!(
        "3. put/remove churn, 100,000 keys x 200 B, 5 interleaved pairs of 3 s: median \
         {:.2} M ops/s without housekeeping, {:.2} M ops/s with it ({:+.1}%); runs \
         without {:.2?}, with {:.2?} M ops/s",
        off_m / 1e6,
        on_m / 1e6,
        (on_m / off_m - 1.0) * 100.0,
        off.iter().map(|x| x / 1e6).collect::<Vec<_>>(),
        on.iter().map(|x| x / 1e6).collect::<Vec<_>>()
    );
}
