//! A fixed operation mix for instruction counts (callgrind is repeatable where timings on a
//! VM are not): 10,000 keys, then 200,000 gets that miss (`miss`), hit (`hit`), or hit and
//! are each followed by a put that replaces a value (`put`) or an `incr` of a counter
//! (`incr`).
//!
//! ```sh
//! cargo build --release -p kvshm --example ops_driver
//! valgrind --tool=callgrind target/release/examples/ops_driver put
//! ```
//! Instructions per put = (total of `put` - total of `hit`) / 200,000.
use kvshm::{Client, Config, Host};
fn main() {
    let name = format!("bench-cg-{}", std::process::id());
    // KVSHM_CHANGELOG=BYTES: the same in a store with a change log (issue 18).
    let log: u64 = std::env::var("KVSHM_CHANGELOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let h = Host::create(&name, &Config::default().changelog(log)).unwrap();
    let c = Client::open(&name).unwrap();
    for i in 0..10_000u32 {
        c.put(&i.to_le_bytes(), b"1234567890").unwrap();
    }
    let mode = std::env::args().nth(1).unwrap_or_else(|| "hit".into());
    let mut hits = 0u64;
    let mut out = Vec::new();
    for i in 0..200_000u32 {
        let k = if mode == "miss" {
            (i + 1_000_000).to_le_bytes()
        } else {
            (i % 10_000).to_le_bytes()
        };
        if c.get_into(&k, &mut out).unwrap() {
            hits += 1;
        }
        if mode == "put" {
            c.put(&(i % 10_000).to_le_bytes(), b"abcdefghij").unwrap();
        }
        if mode == "incr" {
            c.incr(&(i % 10_000).to_le_bytes(), 1).unwrap();
        }
    }
    println!("{hits}");
    drop(c);
    h.release().unwrap();
}
