//! kvshm-compare: the same workload against kvshm and the stores a user could pick instead,
//! in one run, on one machine. See `--help` and docs/PERFORMANCE.md.
//!
//! Process structure (one module per role; `protocol.rs` holds what they exchange): the main process only orchestrates and reports. Each (system, value
//! size) is set up, loaded and measured by its own *runner* process (so resident-memory
//! figures and allocator state of one system never leak into another's), which runs its
//! clients as threads (in-process libraries) or as *worker* processes (kvshm, LMDB, SQLite
//! files, servers).

// The peers' C APIs are set up in short sequences of calls on objects just created; one
// SAFETY argument covers each sequence, so one block per sequence reads better than one per call.
#![allow(clippy::multiple_unsafe_ops_per_block)]

mod orchestrator;
mod protocol;
mod report;
mod runner;
mod systems;
mod worker;
mod workload;

use clap::Parser;

pub use protocol::{Msg, Record};

#[derive(Parser, Debug)]
#[command(
    name = "kvshm-compare",
    about = "Benchmark kvshm side by side with in-process maps and peer stores",
    after_help = "Systems: kvshm, kvshm-c (through the C ABI: build libkvshm.so with \
`cargo build --release -p kvshm-ffi`), hashmap, dashmap, lmdb, sqlite-mem, sqlite-wal, rocksdb, \
leveldb (these five need `--features peers`), redis, redis-samecore, redis-pipe16, kvhost-resp, kvhost-resp-pipe16 (kvhost's RESP server), memcached, \
memcached-pipe16 (need the Debian servers). scripts/bench-compare.sh installs and builds \
everything and runs the full comparison. A system that cannot be set up is reported as \
skipped with the reason."
)]
struct Args {
    /// Small and short: 100k keys, 100-byte values, 0.3 s per cell, scaling to 100k keys.
    #[arg(long)]
    quick: bool,
    /// Also write every measured cell as JSON (an array of objects) to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Comma-separated systems to run (default: all).
    #[arg(long, value_delimiter = ',')]
    systems: Option<Vec<String>>,
    /// Keys loaded for 100-byte values (larger values use fewer keys: at most 1 GiB of values).
    #[arg(long)]
    keys: Option<u64>,
    /// Comma-separated value sizes in bytes.
    #[arg(long, value_delimiter = ',')]
    values: Option<Vec<usize>>,
    /// Measured seconds per cell (after a warm-up of a quarter of it, at most 0.5 s).
    #[arg(long)]
    secs: Option<f64>,
    /// Comma-separated client counts.
    #[arg(long, value_delimiter = ',')]
    procs: Option<Vec<usize>>,
    /// Skip the scaling and growth runs.
    #[arg(long)]
    no_scaling: bool,
    /// Only the scaling and growth runs.
    #[arg(long)]
    only_scaling: bool,
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    match argv.get(1).map(String::as_str) {
        Some("__runner") => return runner::runner(&argv[2]),
        Some("__worker") => return worker::worker(&argv[2], &argv[3], argv.get(4)),
        Some("__growth") => return runner::growth(&argv[2], argv[3].parse().expect("keys")),
        _ => {}
    }
    let args = Args::parse();
    std::process::exit(match orchestrator::orchestrate(&args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("kvshm-compare: {e}");
            1
        }
    })
}
