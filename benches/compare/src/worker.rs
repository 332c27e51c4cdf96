//! A worker process: one client of a system, driving the cells the runner sends it.

use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use crate::protocol::WorkerResult;
use crate::systems::{self, Conn, Res};
use crate::workload::{fill_value, key, Cell, Chooser, Histogram, Rng};

pub fn worker(system: &str, spec: &str, cpu: Option<&String>) {
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
pub fn drive(conn: &mut dyn Conn, cell: &Cell, idx: usize) -> Res<WorkerResult> {
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
