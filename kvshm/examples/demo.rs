//! Host a store and show two processes sharing it:
//! `cargo run --release -p kvshm --example demo`.
//!
//! The parent hosts the store; a child process (this same program, re-run with `child`)
//! attaches, writes keys and reads one back that the parent wrote; the parent then sees the
//! child's keys at once, prints the store's stats and releases the store.

use std::process::Command;

use kvshm::{Client, Config, Host};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("child") {
        let c = Client::open(&args[2])?;
        for i in 0..1000u32 {
            c.put(
                format!("child:{i}").as_bytes(),
                format!("written by pid {}", std::process::id()).as_bytes(),
            )?;
        }
        let greeting = c.get(b"greeting")?.unwrap_or_default();
        println!(
            "child  (pid {}): read greeting = {:?}; wrote 1000 keys",
            std::process::id(),
            String::from_utf8_lossy(&greeting)
        );
        return Ok(());
    }
    let name = format!("demo-{}", std::process::id());
    let host = Host::create(&name, &Config::default())?;
    println!(
        "host   (pid {}): created store {} ",
        std::process::id(),
        host.path().display()
    );
    host.put(b"greeting", b"hello from the host")?;
    let status = Command::new(std::env::current_exe()?)
        .arg("child")
        .arg(&name)
        .status()?;
    assert!(status.success(), "child failed");
    let v = host.get(b"child:999")?.unwrap_or_default();
    println!(
        "host   (pid {}): child:999 = {:?}",
        std::process::id(),
        String::from_utf8_lossy(&v)
    );
    let s = host.stats();
    println!(
        "stats: {} keys, {} value bytes, {} KiB committed, {} puts, {} gets, verify: {}",
        s.keys,
        s.value_bytes,
        s.committed_bytes >> 10,
        s.puts,
        s.gets,
        if host.verify()?.is_ok() {
            "ok"
        } else {
            "PROBLEMS"
        }
    );
    host.release()?;
    println!("released the store");
    Ok(())
}
