//! Issue 14: a million keys expiring within one second, their memory back in the free lists
//! (removed by the host's expiry passes) within two seconds, while another client's gets and
//! puts run: how long until every expired key is freed, and the worst get/put latency meanwhile.
//!
//! `cargo run --release -p kvshm-benches --bin expiry_reclaim [KEYS]`

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kvshm::{Client, Config, Host};

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    kvshm_benches::print_machine();
    let name = format!("bench-expiry-{}", std::process::id());
    let host = Host::create(&name, &Config::default()).expect("create");
    let c = host.client();
    // Persistent keys for the concurrent load.
    let value = [7u8; 100];
    for i in 0..100_000u64 {
        c.put(format!("p{i}").as_bytes(), &value).unwrap();
    }
    // n keys whose expiries spread over one second, starting 2 s after the load ends.
    let t0 = Instant::now();
    let batch = 512;
    let mut items = Vec::with_capacity(batch);
    for i in 0..n {
        items.push(i);
        if items.len() == batch || i == n - 1 {
            for &k in &items {
                let left = Duration::from_millis(2000 + k * 1000 / n).saturating_sub(t0.elapsed());
                c.put_with_ttl(
                    format!("e{k}").as_bytes(),
                    &value,
                    left.max(Duration::from_millis(1)),
                )
                .unwrap();
            }
            items.clear();
        }
    }
    let load = t0.elapsed();
    let first_expiry = t0 + Duration::from_millis(2000);
    let last_expiry = t0 + Duration::from_millis(3000);
    let stop = AtomicBool::new(false);
    let before = c.stats();
    println!(
        "{n} keys with TTLs ending between +2 s and +3 s loaded in {:.1} s; {} used",
        load.as_secs_f64(),
        kvshm::human_bytes(before.used_bytes)
    );
    std::thread::scope(|sc| {
        // The host: housekeeping every 100 ms, as kvhost does.
        sc.spawn(|| {
            let mut cursor = 0usize;
            while !stop.load(Ordering::Relaxed) {
                host.housekeeping(&mut cursor, 8).expect("housekeeping");
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        // Another client: gets and puts of persistent keys, timed one by one.
        let load = sc.spawn(|| {
            let w = Client::open(&name).expect("attach");
            let (mut worst_get, mut worst_put, mut ops) = (Duration::ZERO, Duration::ZERO, 0u64);
            let mut over_1ms = 0u64;
            let mut i = 0u64;
            let mut buf = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                i = (i + 7919) % 100_000;
                let k = format!("p{i}");
                let t = Instant::now();
                if i % 2 == 0 {
                    w.get_into(k.as_bytes(), &mut buf).unwrap();
                    worst_get = worst_get.max(t.elapsed());
                } else {
                    w.put(k.as_bytes(), &value).unwrap();
                    worst_put = worst_put.max(t.elapsed());
                }
                if t.elapsed() > Duration::from_millis(1) {
                    over_1ms += 1;
                }
                ops += 1;
            }
            (worst_get, worst_put, ops, over_1ms)
        });
        let mut freed_at = None;
        while Instant::now() < last_expiry + Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
            // One load (stats() walks every stripe: a third busy thread on this 2-vCPU VM).
            if Instant::now() > first_expiry && c.expired() >= n {
                freed_at = Some(Instant::now());
                break;
            }
        }
        stop.store(true, Ordering::Relaxed);
        let (wg, wp, ops, over) = load.join().unwrap();
        let after = c.stats();
        match freed_at {
            Some(t) => println!(
                "all {n} expired keys freed {:.2} s after the last expiry ({:.2} s after the first); \
                 used memory {} -> {}",
                t.saturating_duration_since(last_expiry).as_secs_f64(),
                t.saturating_duration_since(first_expiry).as_secs_f64(),
                kvshm::human_bytes(before.used_bytes),
                kvshm::human_bytes(after.used_bytes)
            ),
            None => println!("NOT all freed within 10 s: {} of {n}", after.expired),
        }
        println!(
            "concurrent client: {ops} ops, worst get {:.0} us, worst put {:.0} us, {over} ops over 1 ms",
            wg.as_secs_f64() * 1e6,
            wp.as_secs_f64() * 1e6
        );
    });
    host.release().unwrap();
}
