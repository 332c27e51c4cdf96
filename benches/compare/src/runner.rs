//! A runner process: sets one system up, loads it, and measures every cell with its clients
//! (threads or worker processes); also the growth run.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

use crate::protocol::{emit, Msg, Plan, Record, WorkerResult};
use crate::report;
use crate::systems::{self, Conn, Mode, Res};
use crate::worker::drive;
use crate::workload;
use crate::workload::{fill_value, key, Cell, Histogram};

// ---------------------------------------------------------------------------------------
// Runner: set up, load, measure every cell.

pub fn runner(plan_json: &str) {
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
            let mut waits = [0u64; 4];
            for w in &ws {
                for (a, b) in waits.iter_mut().zip(w.lock_waits) {
                    *a += b;
                }
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
                stripe_waits_per_kop: waits[0] as f64 * 1000.0 / ops.max(1) as f64,
                stripe_wait_ns_per_op: waits[1] as f64 / ops.max(1) as f64,
                alloc_waits_per_kop: waits[2] as f64 * 1000.0 / ops.max(1) as f64,
                alloc_wait_ns_per_op: waits[3] as f64 / ops.max(1) as f64,
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

// ---------------------------------------------------------------------------------------
// Growth: inserts from an empty store, every operation timed.

pub fn growth(system: &str, keys: u64) {
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
