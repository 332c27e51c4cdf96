//! The main process: plans the runs, starts one runner process per (system, value size),
//! collects their lines and writes the report.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::protocol::Plan;
use crate::systems::{self, Res};
use crate::workload::{Cell, Dist};
use crate::{report, Args, Msg};

pub fn orchestrate(a: &Args) -> Res<()> {
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
    if rep.wrong_values() > 0 {
        return Err(format!(
            "{} run(s) had gets that returned wrong bytes (see Skipped)",
            rep.wrong_values()
        ));
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
