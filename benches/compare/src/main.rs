//! kvshm-compare: the same workload against kvshm and the stores a user could pick instead,
//! in one run, on one machine. See `--help` and docs/PERFORMANCE.md.
//!
//! Process structure: the main process only orchestrates and reports. Each (system, value
//! size) is set up, loaded and measured by its own *runner* process (so resident-memory
//! figures and allocator state of one system never leak into another's), which runs its
//! clients as threads (in-process libraries) or as *worker* processes (kvshm, LMDB, SQLite
//! files, servers).

// The peers' C APIs are set up in short sequences of calls on objects just created; one
// SAFETY argument covers each sequence, so one block per sequence reads better than one per call.
#![allow(clippy::multiple_unsafe_ops_per_block)]

mod report;
mod systems;
mod workload;

use clap::Parser;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};
use systems::{Conn, Mode, Res};
use workload::{fill_value, key, Cell, Chooser, Dist, Histogram, Rng};

#[derive(Parser, Debug)]
#[command(
    name = "kvshm-compare",
    about = "Benchmark kvshm side by side with in-process maps and peer stores",
    after_help = "Systems: kvshm, kvshm-c (through the C ABI: build libkvshm.so with \
`cargo build --release -p kvshm-ffi`), hashmap, dashmap, lmdb, sqlite-mem, sqlite-wal, rocksdb, \
leveldb (these five need `--features peers`), redis, redis-samecore, redis-pipe16, memcached, \
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

/// What a runner is asked to do: load `keys` values of `value_bytes` into `system`, then run
/// every cell with every client count.
#[derive(Serialize, Deserialize, Debug, Clone)]
struct Plan {
    system: String,
    keys: u64,
    value_bytes: usize,
    procs: Vec<usize>,
    cells: Vec<Cell>,
}

/// One client's measurement of one cell.
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
struct WorkerResult {
    ops: u64,
    ns: u64,
    gets: u64,
    hits: u64,
    get_hist: Histogram,
    put_hist: Histogram,
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

fn emit(m: &Msg) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "@@{}", serde_json::to_string(m).expect("json"));
    let _ = out.flush();
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    match argv.get(1).map(String::as_str) {
        Some("__runner") => return runner(&argv[2]),
        Some("__worker") => return worker(&argv[2], &argv[3], argv.get(4)),
        Some("__growth") => return growth(&argv[2], argv[3].parse().expect("keys")),
        _ => {}
    }
    let args = Args::parse();
    std::process::exit(match orchestrate(&args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("kvshm-compare: {e}");
            1
        }
    })
}

fn orchestrate(a: &Args) -> Res<()> {
    let systems: Vec<String> = match &a.systems {
        Some(s) => s.clone(),
        None => systems::ALL.iter().map(|s| s.to_string()).collect(),
    };
    for s in &systems {
        if !systems::ALL.contains(&s.as_str()) {
            return Err(format!(
                "unknown system {s} (known: {})",
                systems::ALL.join(", ")
            ));
        }
    }
    let keys = a.keys.unwrap_or(if a.quick { 100_000 } else { 1_000_000 });
    let values = a.values.clone().unwrap_or(if a.quick {
        vec![100]
    } else {
        vec![100, 1024, 16384]
    });
    let secs = a.secs.unwrap_or(if a.quick { 0.3 } else { 1.0 });
    let procs = a.procs.clone().unwrap_or(vec![1, 2]);
    let measure_ms = (secs * 1000.0) as u64;
    let warmup_ms = (measure_ms / 4).min(500);
    let mut rep = report::Report::new(report::machine());
    println!("{}", rep.machine);
    println!(
        "keys: {keys} at 100 B (fewer for larger values: at most 1 GiB of values), 16-byte keys; \
         {secs} s per cell after {warmup_ms} ms warm-up; clients: {procs:?}\n"
    );
    if !a.only_scaling {
        for &vb in &values {
            let n = keys.min(((1u64 << 30) / vb as u64).max(1000));
            let mut cells = Vec::new();
            for dist in [Dist::Uniform, Dist::Zipf] {
                for read_pct in [100, 90, 50] {
                    cells.push(Cell {
                        keys: n,
                        value_bytes: vb,
                        dist,
                        read_pct,
                        batch: 1,
                        warmup_ms,
                        measure_ms,
                        seed: 0x6b76_7368_6d00 ^ (vb as u64) << 8 ^ read_pct as u64,
                    });
                }
            }
            for s in &systems {
                let mut cells = cells.clone();
                for c in &mut cells {
                    c.batch = systems::batch_of(s);
                }
                let plan = Plan {
                    system: s.clone(),
                    keys: n,
                    value_bytes: vb,
                    procs: procs.clone(),
                    cells,
                };
                run_plan(&plan, &mut rep)?;
            }
        }
        rep.print_tables();
    }
    if !a.no_scaling {
        let sizes: &[u64] = if a.quick {
            &[10_000, 100_000]
        } else {
            &[10_000, 100_000, 1_000_000, 10_000_000]
        };
        for s in ["kvshm", "hashmap"] {
            if !systems.iter().any(|x| x == s) {
                continue;
            }
            for &n in sizes {
                let cells = [100, 90]
                    .into_iter()
                    .map(|read_pct| Cell {
                        keys: n,
                        value_bytes: 100,
                        dist: Dist::Uniform,
                        read_pct,
                        batch: 1,
                        warmup_ms,
                        measure_ms,
                        seed: 0x5ca1e ^ n ^ read_pct as u64,
                    })
                    .collect();
                let plan = Plan {
                    system: s.into(),
                    keys: n,
                    value_bytes: 100,
                    procs: vec![1],
                    cells,
                };
                run_plan_into(&plan, &mut rep, true)?;
            }
            let n = if a.quick { 200_000 } else { 10_000_000 };
            run_growth(s, n, &mut rep)?;
        }
        rep.print_scaling();
    }
    rep.print_targets();
    if let Some(p) = &a.json {
        let j = serde_json::to_string_pretty(&rep.all_records()).expect("json");
        std::fs::write(p, j).map_err(|e| format!("{}: {e}", p.display()))?;
        println!(
            "\nJSON: {} records written to {}",
            rep.all_records().len(),
            p.display()
        );
    }
    match rep.missing() {
        0 => Ok(()),
        n => Err(format!(
            "{n} cell(s) had gets that missed loaded keys (see Skipped)"
        )),
    }
}

fn run_plan(plan: &Plan, rep: &mut report::Report) -> Res<()> {
    run_plan_into(plan, rep, false)
}

/// Run a plan in a runner process, folding what it prints into the report.
fn run_plan_into(plan: &Plan, rep: &mut report::Report, scaling: bool) -> Res<()> {
    eprint!(
        "  {} {} keys x {} B ...",
        plan.system, plan.keys, plan.value_bytes
    );
    let t0 = Instant::now();
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new(exe)
        .arg("__runner")
        .arg(serde_json::to_string(plan).expect("json"))
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("spawn runner: {e}"))?;
    let out = BufReader::new(child.stdout.take().expect("stdout"));
    for line in out.lines() {
        let line = line.map_err(|e| e.to_string())?;
        match line.strip_prefix("@@") {
            Some(j) => rep.add(serde_json::from_str(j).map_err(|e| e.to_string())?, scaling),
            None => println!("{line}"),
        }
    }
    let st = child.wait().map_err(|e| e.to_string())?;
    eprintln!(" {:.1} s", t0.elapsed().as_secs_f64());
    if !st.success() {
        rep.add(
            Msg::Skip {
                system: plan.system.clone(),
                reason: format!("runner failed ({st}) at {} B", plan.value_bytes),
            },
            scaling,
        );
    }
    Ok(())
}

fn run_growth(system: &str, keys: u64, rep: &mut report::Report) -> Res<()> {
    eprint!("  growth {system} to {keys} keys ...");
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = Command::new(exe)
        .args(["__growth", system, &keys.to_string()])
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| e.to_string())?;
    eprintln!(" done");
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some(j) = line.strip_prefix("@@") {
            rep.add(serde_json::from_str(j).map_err(|e| e.to_string())?, true);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Runner: set up, load, measure every cell.

fn runner(plan_json: &str) {
    let plan: Plan = serde_json::from_str(plan_json).expect("plan");
    let skip = |reason: String| {
        emit(&Msg::Skip {
            system: plan.system.clone(),
            reason,
        })
    };
    let mut sys = match systems::create(&plan.system) {
        Ok(s) => s,
        Err(e) => return skip(e),
    };
    // Generate the value pool before loading: resident-memory figures must not include it.
    let _ = workload::pool();
    let t0 = Instant::now();
    if let Err(e) = sys.load(plan.keys, plan.value_bytes) {
        return skip(format!("load failed: {e}"));
    }
    let secs = t0.elapsed().as_secs_f64();
    let bytes = match sys.memory_bytes() {
        Ok(b) => b,
        Err(e) => return skip(format!("memory: {e}")),
    };
    emit(&Msg::Loaded(report::Loaded {
        system: plan.system.clone(),
        keys: plan.keys,
        value_bytes: plan.value_bytes,
        secs,
        bytes,
        note: sys.memory_note().into(),
    }));
    let mode = sys.mode();
    for &p in &plan.procs {
        let results: Res<Vec<(Cell, Vec<WorkerResult>)>> = match mode {
            Mode::Single(why) if p > 1 => {
                emit(&Msg::SkipProcs {
                    system: plan.system.clone(),
                    procs: p,
                    reason: why.into(),
                });
                continue;
            }
            Mode::Threads | Mode::Single(_) => run_threads(&*sys, p, &plan.cells),
            Mode::Processes => run_processes(&*sys, &plan.system, p, &plan.cells),
        };
        let results = match results {
            Ok(r) => r,
            Err(e) => {
                emit(&Msg::SkipProcs {
                    system: plan.system.clone(),
                    procs: p,
                    reason: e,
                });
                continue;
            }
        };
        let mode_name = match mode {
            Mode::Processes => "processes",
            Mode::Threads => "threads",
            Mode::Single(_) => "single",
        };
        for (cell, ws) in results {
            let (mut hist, mut gh, mut ph): (Histogram, Histogram, Histogram) = Default::default();
            let (mut ops, mut gets, mut hits, mut ns) = (0, 0, 0, 1);
            for w in &ws {
                Histogram::merge(&mut gh, &w.get_hist);
                Histogram::merge(&mut ph, &w.put_hist);
                Histogram::merge(&mut hist, &w.get_hist);
                Histogram::merge(&mut hist, &w.put_hist);
                ops += w.ops;
                gets += w.gets;
                hits += w.hits;
                ns = ns.max(w.ns);
            }
            emit(&Msg::Cell(Record {
                system: plan.system.clone(),
                workload: format!(
                    "{}-{}r-{}B",
                    cell.dist.name(),
                    cell.read_pct,
                    cell.value_bytes
                ),
                keys: cell.keys,
                value_bytes: cell.value_bytes,
                dist: cell.dist.name().into(),
                read_ratio: cell.read_pct as f64 / 100.0,
                processes: p,
                mode: mode_name.into(),
                batch: cell.batch,
                ops_per_sec: ops as f64 * 1e9 / ns as f64,
                p50_ns: hist.quantile(0.5),
                p99_ns: hist.quantile(0.99),
                p999_ns: hist.quantile(0.999),
                max_ns: hist.max,
                get_p50_ns: gh.quantile(0.5),
                get_p999_ns: gh.quantile(0.999),
                put_p50_ns: ph.quantile(0.5),
                put_p999_ns: ph.quantile(0.999),
                bytes_per_key: bytes as f64 / plan.keys as f64,
                misses: gets - hits,
            }));
        }
    }
}

fn run_threads(
    sys: &dyn systems::System,
    p: usize,
    cells: &[Cell],
) -> Res<Vec<(Cell, Vec<WorkerResult>)>> {
    let mut out = Vec::new();
    let mut conns: Vec<Box<dyn Conn + Send>> = (0..p).map(|_| sys.conn()).collect::<Res<_>>()?;
    for cell in cells {
        let rs: Vec<Res<WorkerResult>> = std::thread::scope(|s| {
            let hs: Vec<_> = conns
                .iter_mut()
                .enumerate()
                .map(|(i, c)| s.spawn(move || drive(&mut **c, cell, i)))
                .collect();
            hs.into_iter()
                .map(|h| h.join().expect("client thread"))
                .collect()
        });
        out.push((cell.clone(), rs.into_iter().collect::<Res<_>>()?));
    }
    Ok(out)
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Worker {
    fn line(&mut self) -> Res<String> {
        let mut l = String::new();
        self.stdout.read_line(&mut l).map_err(|e| e.to_string())?;
        if l.is_empty() {
            return Err("worker exited".into());
        }
        Ok(l.trim_end().to_string())
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run_processes(
    sys: &dyn systems::System,
    name: &str,
    p: usize,
    cells: &[Cell],
) -> Res<Vec<(Cell, Vec<WorkerResult>)>> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let cpus = sys.worker_cpus();
    let mut ws = Vec::new();
    for i in 0..p {
        let mut cmd = Command::new(&exe);
        cmd.args(["__worker", name, &sys.spec()]);
        if let Some(c) = &cpus {
            cmd.arg(c[i % c.len()].to_string());
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn worker: {e}"))?;
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut w = Worker {
            child,
            stdin,
            stdout,
        };
        let l = w.line()?;
        if l != "READY" {
            return Err(format!("worker: {l}"));
        }
        ws.push(w);
    }
    let mut out = Vec::new();
    for cell in cells {
        let j = serde_json::to_string(cell).expect("json");
        for w in &mut ws {
            writeln!(w.stdin, "{j}").map_err(|e| e.to_string())?;
        }
        let mut rs = Vec::new();
        for w in &mut ws {
            let l = w.line()?;
            match l.strip_prefix("RES ") {
                Some(r) => rs.push(serde_json::from_str(r).map_err(|e| e.to_string())?),
                None => return Err(format!("worker: {l}")),
            }
        }
        out.push((cell.clone(), rs));
    }
    Ok(out)
}

fn worker(system: &str, spec: &str, cpu: Option<&String>) {
    if let Some(c) = cpu {
        if let Err(e) = systems::server::pin(&[c.parse().expect("cpu")]) {
            println!("ERR {e}");
            return;
        }
    }
    let mut conn = match systems::open_worker(system, spec) {
        Ok(c) => c,
        Err(e) => {
            println!("ERR {e}");
            return;
        }
    };
    println!("READY");
    let stdin = std::io::stdin();
    for (i, line) in stdin.lock().lines().enumerate() {
        let Ok(line) = line else { return };
        let cell: Cell = serde_json::from_str(&line).expect("cell");
        match drive(&mut *conn, &cell, i * 7919 + std::process::id() as usize) {
            Ok(r) => println!("RES {}", serde_json::to_string(&r).expect("json")),
            Err(e) => println!("ERR {e}"),
        }
        let _ = std::io::stdout().flush();
    }
}

/// One client's loop: warm up, then measure for the cell's time. Latency is the time between
/// consecutive completions (one clock read per batch), so it includes choosing the key.
fn drive(conn: &mut dyn Conn, cell: &Cell, idx: usize) -> Res<WorkerResult> {
    let chooser = Chooser::new(cell);
    let mut rng = Rng::new(cell.seed ^ (idx as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut value = Vec::new();
    fill_value(&mut value, cell.value_bytes, 0);
    let mut out = Vec::with_capacity(cell.value_bytes);
    let mut ops = vec![(true, [0u8; 16]); cell.batch];
    let mut r = WorkerResult::default();
    let mut stamp = idx as u64;
    let mut phase = |dur: Duration, r: Option<&mut WorkerResult>| -> Res<()> {
        let start = Instant::now();
        let end = start + dur;
        let mut prev = start;
        let (mut n, mut gets, mut hits) = (0u64, 0u64, 0u64);
        let (mut get_hist, mut put_hist) = (Histogram::default(), Histogram::default());
        loop {
            for op in ops.iter_mut() {
                op.0 = rng.below(100) < cell.read_pct as u64;
                key(chooser.next(&mut rng), &mut op.1);
                gets += op.0 as u64;
            }
            if !ops.iter().all(|o| o.0) {
                stamp = stamp.wrapping_add(1);
                fill_value(&mut value, cell.value_bytes, stamp);
            }
            hits += if cell.batch == 1 {
                if ops[0].0 {
                    conn.get(&ops[0].1, &mut out)? as u64
                } else {
                    conn.put(&ops[0].1, &value)?;
                    0
                }
            } else {
                conn.batch(&ops, &value, &mut out)?
            };
            let now = Instant::now();
            let ns = (now - prev).as_nanos() as u64;
            for op in &ops {
                if op.0 {
                    get_hist.record(ns, 1);
                } else {
                    put_hist.record(ns, 1);
                }
            }
            prev = now;
            n += cell.batch as u64;
            if now >= end {
                break;
            }
        }
        if let Some(r) = r {
            *r = WorkerResult {
                ops: n,
                ns: (prev - start).as_nanos() as u64,
                gets,
                hits,
                get_hist,
                put_hist,
            };
        }
        Ok(())
    };
    phase(Duration::from_millis(cell.warmup_ms), None)?;
    phase(Duration::from_millis(cell.measure_ms), Some(&mut r))?;
    Ok(r)
}

// ---------------------------------------------------------------------------------------
// Growth: inserts from an empty store, every operation timed.

fn growth(system: &str, keys: u64) {
    let mut hist = Histogram::default();
    let (mut k, mut v) = ([0u8; 16], Vec::new());
    let t0 = Instant::now();
    let mut slow = 0u64;
    let mut timed = |i: u64, op: &mut dyn FnMut(&[u8], &[u8])| {
        key(i, &mut k);
        fill_value(&mut v, 100, i);
        let t = Instant::now();
        op(&k, &v);
        let ns = t.elapsed().as_nanos() as u64;
        hist.record(ns, 1);
        slow += (ns > 1_000_000) as u64;
    };
    let (initial, final_bytes, growths) = match system {
        "kvshm" => {
            let st = systems::kvshm_rs::Hosted::create("growth", 1 << 20).expect("create");
            let c = st.client();
            let initial = c.stats().committed_bytes;
            for i in 0..keys {
                timed(i, &mut |k, v| c.put(k, v).expect("put"));
            }
            let s = c.stats();
            (initial, s.committed_bytes, s.growths)
        }
        _ => {
            let mut m: std::collections::HashMap<Box<[u8]>, Box<[u8]>> = Default::default();
            let before = systems::rss_of("self");
            for i in 0..keys {
                timed(i, &mut |k, v| {
                    m.insert(k.into(), v.into());
                });
            }
            (0, systems::rss_of("self").saturating_sub(before), 0)
        }
    };
    emit(&Msg::Growth(report::Growth {
        system: system.into(),
        keys,
        secs: t0.elapsed().as_secs_f64(),
        initial_bytes: initial,
        final_bytes,
        growths,
        p50_ns: hist.quantile(0.5),
        p999_ns: hist.quantile(0.999),
        max_ns: hist.max,
        over_1ms: slow,
    }));
}
