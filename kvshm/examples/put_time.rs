//! Wall-clock cost of a put and a get of a hot key in a tight loop: 1,000 keys of one client,
//! 100-byte values, 2M puts then 2M gets over them, best of 5 rounds. Pin it to one CPU for
//! repeatable figures (this VM's noise is otherwise larger than the differences measured):
//!
//! ```sh
//! cargo build --release -p kvshm --example put_time
//! taskset -c 1 target/release/examples/put_time
//! ```
//! (Session 14 measured the per-client counters with it: docs/PERFORMANCE.md, issue 12 part 3.)
use kvshm::{Client, Config, Host};
use std::time::Instant;

fn main() {
    let name = format!("bench-pt-{}", std::process::id());
    let h = Host::create(&name, &Config::default()).unwrap();
    let c = Client::open(&name).unwrap();
    let value = [5u8; 100];
    let key = |i: u32| (i.wrapping_mul(2_654_435_761) % 1000).to_le_bytes();
    for i in 0..1000u32 {
        c.put(&i.to_le_bytes(), &value).unwrap();
    }
    let mut out = Vec::new();
    let n = 2_000_000u32;
    let (mut put_ns, mut get_ns) = (f64::MAX, f64::MAX);
    for _ in 0..5 {
        let t = Instant::now();
        for i in 0..n {
            c.put(&key(i), &value).unwrap();
        }
        put_ns = put_ns.min(t.elapsed().as_nanos() as f64 / f64::from(n));
        let t = Instant::now();
        for i in 0..n {
            c.get_into(&key(i), &mut out).unwrap();
        }
        get_ns = get_ns.min(t.elapsed().as_nanos() as f64 / f64::from(n));
    }
    println!("put {put_ns:.1} ns  get {get_ns:.1} ns");
    drop(c);
    h.release().unwrap();
}
