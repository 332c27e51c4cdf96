//! What the change log (issue 18) costs a writer: puts of 100-byte values over 100,000 keys (or
//! `KEYS=`) in a store without a change log and in one with a 64 MiB log, interleaved rounds,
//! one process; medians of ns per put, and the ratio. A second thread reads the log meanwhile as
//! kvhost's replication feed does (`--reader`), or nobody reads it (the default).
//!
//! `[PUTS=per round] [KEYS=100000] cargo run --release -p kvshm-benches --bin changelog_cost [ROUNDS] [--reader]`
//!
//! Every key is put once into both stores before the rounds (not timed); each column then
//! puts the keys in turn, wrapping, from where its last round stopped.
//!
//! A third column, the *floor*: puts into the store without a log, each followed by a plain
//! copy of as many bytes as its log entry takes (176: entry header, change header, key and
//! value words) into a 64 MiB ring in memory, at the next position. It is what any log that
//! keeps the written values in memory pays for moving the bytes alone, with no lock, no
//! ordering and no bookkeeping: a lower bound of the change log's cost.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use kvshm::{ChangeRead, Client, Config, Host};

/// Keys written, unless `KEYS=` says otherwise.
const KEYS: u32 = 100_000;

/// `puts` puts of the keys after `cursor` (in turn, wrapping at `keys`; the cursor moves on
/// across rounds), in ns per put.
fn round(c: &Client, value: &[u8], puts: u32, keys: u32, cursor: &mut u32) -> f64 {
    let t = Instant::now();
    for _ in 0..puts {
        c.put(&cursor.to_le_bytes(), value).expect("put");
        *cursor = (*cursor + 1) % keys;
    }
    t.elapsed().as_nanos() as f64 / puts as f64
}

/// Bytes of a logged put's entry here: entry header 32, change header 32, key 8, value 104.
const ENTRY: usize = 176;

/// Puts without a log, each followed by a copy of an entry's bytes into `ring` (see the
/// module's text).
fn floor_round(
    c: &Client,
    value: &[u8],
    (puts, keys, cursor): (u32, u32, &mut u32),
    ring: &mut [u8],
    pos: &mut usize,
) -> f64 {
    let mut entry = [0u8; ENTRY];
    entry[ENTRY - 104..ENTRY - 4].copy_from_slice(value);
    let t = Instant::now();
    for i in 0..puts {
        c.put(&cursor.to_le_bytes(), value).expect("put");
        *cursor = (*cursor + 1) % keys;
        if *pos + ENTRY > ring.len() {
            *pos = 0;
        }
        entry[0..4].copy_from_slice(&i.to_le_bytes());
        ring[*pos..*pos + ENTRY].copy_from_slice(std::hint::black_box(&entry));
        *pos += ENTRY;
    }
    std::hint::black_box(&ring[..]);
    t.elapsed().as_nanos() as f64 / puts as f64
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rounds: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(5);
    // Puts per round and store (`PUTS=`): shorter rounds pair the stores closer in time, so
    // the per-round ratios see less of the VM's drift.
    let puts: u32 = std::env::var("PUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let keys: u32 = std::env::var("KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&k| k > 0)
        .unwrap_or(KEYS);
    let with_reader = args.iter().any(|a| a == "--reader");
    kvshm_benches::print_machine();
    let pid = std::process::id();
    let off = Host::create(&format!("clog-off-{pid}"), &Config::default()).expect("create");
    let on = Host::create(
        &format!("clog-on-{pid}"),
        &Config::default().changelog(
            std::env::var("CLOG")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(64 << 20),
        ),
    )
    .expect("create");
    let value = vec![7u8; 100];
    let stop = Arc::new(AtomicBool::new(false));
    let reader = with_reader.then(|| {
        let stop = stop.clone();
        let name = format!("clog-on-{pid}");
        std::thread::spawn(move || {
            let c = Client::open(&name).expect("attach");
            let mut pos = c.changelog_head().expect("head");
            let mut out = Vec::new();
            let mut read = 0u64;
            while !stop.load(Ordering::Relaxed) {
                out.clear();
                match c.read_changes(pos, 512, &mut out).expect("read") {
                    ChangeRead::UpTo { next } | ChangeRead::Waiting { next } => pos = next,
                    ChangeRead::Lost { oldest } => pos = oldest,
                }
                read += out.len() as u64;
                if out.is_empty() {
                    std::thread::sleep(std::time::Duration::from_micros(200));
                }
            }
            read
        })
    });
    let (mut a, mut b, mut f) = (Vec::new(), Vec::new(), Vec::new());
    // Touched once first, as the log's ring is when the store is made.
    let mut ring = vec![1u8; 64 << 20];
    let mut pos = 0;
    // Every key is in both stores before the first round: the rounds time updates only.
    let (mut cur_off, mut cur_on, mut cur_floor) = (0u32, 0u32, 0u32);
    round(&off, &value, keys, keys, &mut cur_off);
    round(&on, &value, keys, keys, &mut cur_on);
    for r in 0..rounds {
        // The order turns each round: no column always runs after the same one.
        for col in 0..3 {
            match (col + r) % 3 {
                0 => a.push(round(&off, &value, puts, keys, &mut cur_off)),
                1 => b.push(round(&on, &value, puts, keys, &mut cur_on)),
                _ => f.push(floor_round(
                    &off,
                    &value,
                    (puts, keys, &mut cur_floor),
                    &mut ring,
                    &mut pos,
                )),
            }
        }
    }
    // Per-round ratios (each round's stores ran within a second of each other).
    let mut ratio_b: Vec<f64> = a.iter().zip(&b).map(|(x, y)| y / x - 1.0).collect();
    let mut ratio_f: Vec<f64> = a.iter().zip(&f).map(|(x, y)| y / x - 1.0).collect();
    stop.store(true, Ordering::Relaxed);
    if let Some(r) = reader {
        println!("reader took {} transactions", r.join().expect("reader"));
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(|x, y| x.partial_cmp(y).expect("numbers"));
        v[v.len() / 2]
    };
    let (ma, mb, mf) = (med(&mut a), med(&mut b), med(&mut f));
    let quartiles = |v: &mut Vec<f64>| {
        v.sort_by(|x, y| x.partial_cmp(y).expect("numbers"));
        let n = v.len();
        (v[n / 4] * 100.0, v[n / 2] * 100.0, v[(3 * n) / 4] * 100.0)
    };
    let (b1, b2, b3) = quartiles(&mut ratio_b);
    let (f1, f2, f3) = quartiles(&mut ratio_f);
    println!(
        "put, 100 B values, {keys} keys (all in the store before the first round), {rounds} interleaved rounds of {puts}: without a change log {ma:.0} ns, with one {mb:.0} ns ({:+.1}%){}; floor (a put and a {ENTRY}-byte copy into a 64 MiB ring) {mf:.0} ns ({:+.1}%)",
        (mb / ma - 1.0) * 100.0,
        if with_reader { ", log read meanwhile" } else { "" },
        (mf / ma - 1.0) * 100.0,
    );
    println!(
        "per-round cost (median, quartiles): change log {b2:+.1}% ({b1:+.1}% .. {b3:+.1}%), floor {f2:+.1}% ({f1:+.1}% .. {f3:+.1}%)"
    );
    off.release().expect("release");
    on.release().expect("release");
}
