//! Probe for `scripts/replication-demo.sh`: writes to a primary's store through shared memory
//! and watches a replica's store, on the same machine (network namespaces separate the hosts'
//! networks, not their memory), so one clock times both ends.
//!
//!   kvshm-repl-probe lag DIR_P NAME_P DIR_R NAME_R N RATE   replication lag of N writes
//!   kvshm-repl-probe load DIR_P NAME_P ACK_FILE              write until killed, logging acks
//!   kvshm-repl-probe missing DIR_R NAME_R ACK_FILE           acknowledged writes the replica lacks

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kvshm::Client;

fn open(dir: &str, name: &str) -> Client {
    Client::open_in(dir, name).unwrap_or_else(|e| {
        eprintln!("kvshm-repl-probe: cannot open {dir}/{name}: {e}");
        std::process::exit(2)
    })
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    match a.get(1).map(String::as_str) {
        Some("lag") if a.len() == 8 => lag(&a[2], &a[3], &a[4], &a[5], &a[6], &a[7]),
        Some("load") if a.len() == 5 => load(&a[2], &a[3], &a[4]),
        Some("missing") if a.len() == 5 => missing(&a[2], &a[3], &a[4]),
        _ => {
            eprintln!("usage: see the source's header");
            std::process::exit(2)
        }
    }
}

fn lag(dp: &str, np: &str, dr: &str, nr: &str, n: &str, rate: &str) {
    let n: usize = n.parse().expect("N");
    let rate: u64 = rate.parse().expect("RATE");
    let p = open(dp, np);
    let start = Instant::now();
    let written: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
    let w2 = written.clone();
    let (dr, nr) = (dr.to_string(), nr.to_string());
    let reader = std::thread::spawn(move || {
        let r = open(&dr, &nr);
        let mut lags = Vec::with_capacity(n);
        let deadline = Instant::now() + Duration::from_secs(120);
        for (i, w) in w2.iter().enumerate() {
            let key = format!("lag-{i}");
            loop {
                let at = w.load(Ordering::Acquire);
                if at != 0 && r.get(key.as_bytes()).ok().flatten().is_some() {
                    let now = start.elapsed().as_nanos() as u64;
                    lags.push(now.saturating_sub(at));
                    break;
                }
                assert!(Instant::now() < deadline, "{key} never reached the replica");
                std::thread::sleep(Duration::from_micros(20));
            }
        }
        lags
    });
    let gap = Duration::from_nanos(1_000_000_000 / rate.max(1));
    let value = vec![b'v'; 100];
    for (i, w) in written.iter().enumerate() {
        let due = gap * i as u32;
        while start.elapsed() < due {
            std::hint::spin_loop();
        }
        p.put(format!("lag-{i}").as_bytes(), &value).expect("put");
        w.store(start.elapsed().as_nanos() as u64, Ordering::Release);
    }
    let wrote = start.elapsed();
    let mut lags = reader.join().expect("reader");
    lags.sort_unstable();
    let q = |f: f64| lags[((lags.len() as f64 * f) as usize).min(lags.len() - 1)] / 1000;
    println!(
        "lag writes={n} rate={:.0}/s p50_us={} p99_us={} max_us={}",
        n as f64 / wrote.as_secs_f64(),
        q(0.50),
        q(0.99),
        lags[lags.len() - 1] / 1000
    );
}

fn load(dp: &str, np: &str, ack_file: &str) {
    let p = open(dp, np);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(ack_file)
        .expect("ack file");
    let value = vec![b'l'; 100];
    for i in 0u64.. {
        p.put(format!("load-{i}").as_bytes(), &value).expect("put");
        // One write(2) per acknowledgement, ending with a mark: a line cut by the kill is not
        // counted (see kvshm_tests::END).
        f.write_all(format!("{i} .\n").as_bytes()).expect("ack");
    }
}

fn missing(dr: &str, nr: &str, ack_file: &str) {
    let r = open(dr, nr);
    let text = std::fs::read_to_string(ack_file).expect("ack file");
    let acked = text
        .lines()
        .filter_map(|l| l.strip_suffix(" ."))
        .filter_map(|l| l.parse::<u64>().ok())
        .max()
        .map_or(0, |m| m + 1);
    let mut missing = 0u64;
    let mut first = None;
    for i in 0..acked {
        if r.get(format!("load-{i}").as_bytes())
            .expect("get")
            .is_none()
        {
            missing += 1;
            first.get_or_insert(i);
        }
    }
    // The stream is applied in order and the writer is one process: what the replica lacks
    // must be the newest writes only (a tail), never one with later ones present.
    let tail = first.is_none_or(|f| f + missing == acked);
    println!(
        "acked={acked} missing={missing} first_missing={} tail={}",
        first.map_or("none".to_string(), |f| f.to_string()),
        if tail { "yes" } else { "no" }
    );
}
