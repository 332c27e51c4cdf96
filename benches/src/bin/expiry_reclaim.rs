//! Issue 14: a million keys expiring within one second, their memory back in the free lists
//! (removed by the host's expiry passes) within two seconds, while another client's gets and
//! puts run: how long until every expired key is freed, and the worst get/put latency meanwhile,
//! next to the same figures from before the first expiry (this VM's own noise: a thread here
//! loses its vCPU for a scheduler tick, ~4 ms, now and then, whatever it runs).
//!
//! `cargo run --release -p kvshm-benches --bin expiry_reclaim [KEYS [hog] [verify=N]
//! [attribute]]`; with `hog` the control: no housekeeping runs, a plain busy loop takes its
//! vCPU for the same time instead; `verify=N`: stripes the host's pass verifies (8, as kvhost;
//! 0 = none); `attribute`: the client thread reads its own context-switch and page-fault
//! counts (getrusage) after every operation, and each operation over 1 ms is put down to what
//! happened during it: *preempted* (an involuntary switch: the scheduler gave its vCPU to
//! another thread), *blocked* (a voluntary switch: it slept, e.g. on a lock's futex), both, or
//! neither (then it ran the whole time: the store's own work, or page faults, counted too).
//! The extra system call per operation slows the client down; the split is what it is for.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kvshm::{Client, Config, Host};

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    // `hog`: the control run (see below); `verify=N`: stripes the host verifies per pass
    // (kvhost: 8).
    let hog = std::env::args().skip(2).any(|a| a == "hog");
    let verify_stripes: usize = std::env::args()
        .skip(2)
        .find_map(|a| {
            a.strip_prefix("verify=")
                .map(|n| n.parse().expect("verify=N"))
        })
        .unwrap_or(8);
    let attribute = std::env::args().skip(2).any(|a| a == "attribute");
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
        "{n} keys with TTLs ending between +2 s and +3 s (host verifies {verify_stripes} \
         stripes per pass) loaded in {:.1} s; {} used",
        load.as_secs_f64(),
        kvshm::human_bytes(before.used_bytes)
    );
    std::thread::scope(|sc| {
        // The host: housekeeping every 100 ms, as kvhost does.
        sc.spawn(|| {
            let mut cursor = 0usize;
            if hog {
                // The control: no housekeeping, the same vCPU kept busy by a plain loop from
                // the first expiry for as long as the passes take in a normal run.
                while Instant::now() < first_expiry {
                    std::thread::sleep(Duration::from_millis(10));
                }
                let mut x = 0u64;
                while Instant::now() < last_expiry + Duration::from_millis(200) {
                    for _ in 0..10_000 {
                        x = std::hint::black_box(
                            x.wrapping_mul(6364136223846793005).wrapping_add(1),
                        );
                    }
                }
                return;
            }
            while !stop.load(Ordering::Relaxed) {
                host.housekeeping(&mut cursor, verify_stripes)
                    .expect("housekeeping");
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        // Another client: gets and puts of persistent keys, timed one by one, in two phases:
        // before the first expiry (the machine's own noise: nothing but this load runs) and
        // from it on (expiry passes, chunks drained and punched).
        let load = sc.spawn(|| {
            let w = Client::open(&name).expect("attach");
            let mut phases = [Phase::default(), Phase::default()];
            let mut i = 0u64;
            let mut buf = Vec::new();
            let mut usage = attribute.then(Usage::now);
            while !stop.load(Ordering::Relaxed) {
                i = (i + 7919) % 100_000;
                let k = format!("p{i}");
                let t = Instant::now();
                let get = i % 2 == 0;
                if get {
                    w.get_into(k.as_bytes(), &mut buf).unwrap();
                } else {
                    w.put(k.as_bytes(), &value).unwrap();
                }
                let d = t.elapsed();
                let phase = &mut phases[usize::from(t >= first_expiry)];
                phase.add(get, d);
                if let Some(before) = usage.as_mut() {
                    let now = Usage::now();
                    if d > Duration::from_millis(1) {
                        phase.attribute(&now.since(before));
                    }
                    *before = now;
                }
            }
            phases
        });
        let mut freed_at = None;
        if hog {
            std::thread::sleep(last_expiry + Duration::from_millis(200) - Instant::now());
        }
        while !hog && Instant::now() < last_expiry + Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
            // One load (stats() walks every stripe: a third busy thread on this 2-vCPU VM).
            if Instant::now() > first_expiry && c.expired() >= n {
                freed_at = Some(Instant::now());
                break;
            }
        }
        stop.store(true, Ordering::Relaxed);
        let phases = load.join().unwrap();
        let after = c.stats();
        match freed_at {
            _ if hog => println!("control: no housekeeping, one thread busy in a loop instead"),
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
        let second = if hog {
            "busy loop"
        } else {
            "expiry and reclaim"
        };
        for (p, what) in phases.iter().zip(["before expiry", second]) {
            println!(
                "concurrent client, {what}: {} ops in {:.2} s, worst get {:.0} us, worst put {:.0} \
                 us, {} ops over 1 ms ({} gets)",
                p.ops,
                p.busy.as_secs_f64(),
                p.worst_get.as_secs_f64() * 1e6,
                p.worst_put.as_secs_f64() * 1e6,
                p.over_1ms,
                p.slow_gets
            );
            if attribute {
                println!(
                    "  of those over 1 ms: {} preempted, {} blocked, {} both, {} neither \
                     ({} with page faults)",
                    p.preempted, p.blocked, p.both, p.neither, p.faulted
                );
            }
        }
    });
    host.release().unwrap();
}

/// One phase of the concurrent client's ops.
#[derive(Default)]
struct Phase {
    ops: u64,
    busy: Duration,
    worst_get: Duration,
    worst_put: Duration,
    over_1ms: u64,
    slow_gets: u64,
    preempted: u64,
    blocked: u64,
    both: u64,
    neither: u64,
    faulted: u64,
}

impl Phase {
    fn add(&mut self, get: bool, d: Duration) {
        self.ops += 1;
        self.busy += d;
        let worst = if get {
            &mut self.worst_get
        } else {
            &mut self.worst_put
        };
        *worst = (*worst).max(d);
        self.over_1ms += u64::from(d > Duration::from_millis(1));
        self.slow_gets += u64::from(get && d > Duration::from_millis(1));
    }
}

impl Phase {
    /// Count a slow operation by what `u` (the counts' change over it) says happened.
    fn attribute(&mut self, u: &Usage) {
        match (u.involuntary > 0, u.voluntary > 0) {
            (true, false) => self.preempted += 1,
            (false, true) => self.blocked += 1,
            (true, true) => self.both += 1,
            (false, false) => self.neither += 1,
        }
        self.faulted += u64::from(u.faults > 0);
    }
}

/// The calling thread's context switches and page faults so far.
#[derive(Clone, Copy, Default)]
struct Usage {
    voluntary: i64,
    involuntary: i64,
    faults: i64,
}

impl Usage {
    #[cfg(target_os = "linux")]
    fn now() -> Usage {
        use nix::sys::resource::{getrusage, UsageWho};
        let u = getrusage(UsageWho::RUSAGE_THREAD).expect("getrusage");
        Usage {
            voluntary: u.voluntary_context_switches(),
            involuntary: u.involuntary_context_switches(),
            faults: u.minor_page_faults() + u.major_page_faults(),
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn now() -> Usage {
        Usage::default()
    }

    fn since(&self, before: &Usage) -> Usage {
        Usage {
            voluntary: self.voluntary - before.voluntary,
            involuntary: self.involuntary - before.involuntary,
            faults: self.faults - before.faults,
        }
    }
}
