//! What the processes exchange: the runner's plan, a worker's result, and the `@@`-prefixed
//! JSON lines a runner prints to the orchestrator.

use std::io::Write;

use serde::{Deserialize, Serialize};

use crate::report;
use crate::workload::{Cell, Histogram};

/// What a runner is asked to do: load `keys` values of `value_bytes` into `system`, then run
/// every cell with every client count.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Plan {
    pub system: String,
    pub keys: u64,
    pub value_bytes: usize,
    pub procs: Vec<usize>,
    pub cells: Vec<Cell>,
}

/// One client's measurement of one cell.
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct WorkerResult {
    pub ops: u64,
    pub ns: u64,
    pub gets: u64,
    pub hits: u64,
    pub get_hist: Histogram,
    pub put_hist: Histogram,
    /// Lock waits during the measured phase (kvshm's Rust client only; see
    /// `kvshm::Client::lock_waits`): [stripe waits, stripe ns, allocator waits, allocator ns].
    #[serde(default)]
    pub lock_waits: [u64; 4],
}

/// One measured cell: what the report and the JSON file hold.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Record {
    pub system: String,
    pub workload: String,
    pub keys: u64,
    pub value_bytes: usize,
    pub dist: String,
    pub read_ratio: f64,
    pub processes: usize,
    pub mode: String,
    pub batch: usize,
    pub ops_per_sec: f64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub max_ns: u64,
    pub get_p50_ns: u64,
    pub get_p999_ns: u64,
    pub put_p50_ns: u64,
    pub put_p999_ns: u64,
    pub bytes_per_key: f64,
    pub misses: u64,
    /// Contention profile (kvshm only, 0 elsewhere): lock takes that waited per 1,000 ops,
    /// and the time waited per op, on stripe locks and on allocator locks.
    #[serde(default)]
    pub stripe_waits_per_kop: f64,
    #[serde(default)]
    pub stripe_wait_ns_per_op: f64,
    #[serde(default)]
    pub alloc_waits_per_kop: f64,
    #[serde(default)]
    pub alloc_wait_ns_per_op: f64,
}

/// Lines a runner prints to the main process.
#[derive(Serialize, Deserialize, Debug)]
pub enum Msg {
    Skip {
        system: String,
        reason: String,
    },
    SkipProcs {
        system: String,
        procs: usize,
        reason: String,
    },
    Loaded(report::Loaded),
    Cell(Record),
    Growth(report::Growth),
}

pub fn emit(m: &Msg) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "@@{}", serde_json::to_string(m).expect("json"));
    let _ = out.flush();
}
