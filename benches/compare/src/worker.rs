//! A worker process: one client of a system, driving the cells the runner sends it.

use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use crate::protocol::WorkerResult;
use crate::systems::{self, Conn, Res};
use crate::workload::{fill_value, key, load_value, Cell, Chooser, Histogram, Rng};

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

/// How a worker's error about wrong bytes starts (the run then fails, unlike a skipped peer).
pub const WRONG_VALUE: &str = "WRONG VALUE";

/// A value a get of key index `idx` (one of `ids`) returned must be one this workload wrote
/// there: the loaded value of one of those keys or a put's value (compared after the 8-byte
/// stamp both carry, with their length).
fn check_value(got: &[u8], put_value: &[u8], ids: &[u64], scratch: &mut Vec<u8>) -> Res<()> {
    let len = put_value.len();
    let n = len.min(8);
    let same = |a: &[u8], b: &[u8]| a.len() == b.len() && a[n..] == b[n..];
    if same(got, put_value) {
        return Ok(());
    }
    for &i in ids {
        load_value(scratch, len, i);
        if same(got, scratch) {
            return Ok(());
        }
    }
    Err(format!(
        "{WRONG_VALUE}: a get returned {} bytes that this workload never wrote under its key \
         ({len} expected)",
        got.len()
    ))
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
    let mut ids = vec![0u64; cell.batch];
    let mut scratch = Vec::with_capacity(cell.value_bytes);
    let mut r = WorkerResult::default();
    let mut stamp = idx as u64;
    let mut phase = |dur: Duration, r: Option<&mut WorkerResult>| -> Res<()> {
        let check_all = r.is_none();
        let waits_before = conn.lock_waits();
        let start = Instant::now();
        let end = start + dur;
        let mut prev = start;
        let (mut n, mut gets, mut hits) = (0u64, 0u64, 0u64);
        let (mut get_hist, mut put_hist) = (Histogram::default(), Histogram::default());
        loop {
            for (op, id) in ops.iter_mut().zip(ids.iter_mut()) {
                op.0 = rng.below(100) < cell.read_pct as u64;
                *id = chooser.next(&mut rng);
                key(*id, &mut op.1);
                gets += op.0 as u64;
            }
            if !ops.iter().all(|o| o.0) {
                stamp = stamp.wrapping_add(1);
                fill_value(&mut value, cell.value_bytes, stamp);
            }
            hits += if cell.batch == 1 {
                if ops[0].0 {
                    let hit = conn.get(&ops[0].1, &mut out)?;
                    // Every get of the warm-up, one in 16 measured: the bytes must be a value
                    // this workload wrote (its length, and the tail fixed per length; the
                    // first 8 bytes are a stamp).
                    if hit && (check_all || n % 16 == 0) {
                        check_value(&out, &value, &ids, &mut scratch)?;
                    }
                    hit as u64
                } else {
                    conn.put(&ops[0].1, &value)?;
                    0
                }
            } else {
                let h = conn.batch(&ops, &value, &mut out)?;
                // `out` holds the batch's last value found.
                if h > 0 && (check_all || n % 16 == 0) {
                    let gets: Vec<u64> = ops
                        .iter()
                        .zip(&ids)
                        .filter(|(o, _)| o.0)
                        .map(|(_, &i)| i)
                        .collect();
                    check_value(&out, &value, &gets, &mut scratch)?;
                }
                h
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
                lock_waits: match (waits_before, conn.lock_waits()) {
                    (Some(b), Some(a)) => std::array::from_fn(|i| a[i] - b[i]),
                    _ => [0; 4],
                },
            };
        }
        Ok(())
    };
    phase(Duration::from_millis(cell.warmup_ms), None)?;
    phase(Duration::from_millis(cell.measure_ms), Some(&mut r))?;
    Ok(r)
}
