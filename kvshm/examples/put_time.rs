// temporary (not committed): ns per hot put / get, pinned, best of 5
use kvshm::{Client, Config, Host};
use std::time::Instant;
fn main() {
    let name = format!("bench-pt-{}", std::process::id());
    let h = Host::create(&name, &Config::default()).unwrap();
    let c = Client::open(&name).unwrap();
    let v = [5u8; 100];
    for i in 0..1000u32 {
        c.put(&i.to_le_bytes(), &v).unwrap();
    }
    let mut out = Vec::new();
    let n = 2_000_000u32;
    let (mut bp, mut bg) = (f64::MAX, f64::MAX);
    for _ in 0..5 {
        let t = Instant::now();
        for i in 0..n {
            c.put(&(i.wrapping_mul(2654435761) % 1000).to_le_bytes(), &v)
                .unwrap();
        }
        bp = bp.min(t.elapsed().as_nanos() as f64 / n as f64);
        let t = Instant::now();
        for i in 0..n {
            c.get_into(&(i.wrapping_mul(2654435761) % 1000).to_le_bytes(), &mut out)
                .unwrap();
        }
        bg = bg.min(t.elapsed().as_nanos() as f64 / n as f64);
    }
    println!("put {bp:.1} ns  get {bg:.1} ns");
    drop(c);
    h.release().unwrap();
}
