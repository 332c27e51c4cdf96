//! Collecting results and printing the report: machine header, one table per workload,
//! scaling and growth, and the targets with what was measured against them.

use crate::{Msg, Record};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Inserts from an empty store, each timed.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Growth {
    pub system: String,
    pub keys: u64,
    pub secs: f64,
    pub initial_bytes: u64,
    pub final_bytes: u64,
    pub growths: u64,
    pub p50_ns: u64,
    pub p999_ns: u64,
    pub max_ns: u64,
    pub over_1ms: u64,
}

/// A system loaded for one value size: how long it took and the memory it takes.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Loaded {
    pub system: String,
    pub keys: u64,
    pub value_bytes: usize,
    pub secs: f64,
    pub bytes: u64,
    pub note: String,
}

#[derive(Debug)]
pub struct Report {
    pub machine: String,
    cells: Vec<Record>,
    scaling: Vec<Record>,
    loaded: Vec<Loaded>,
    skips: Vec<String>,
    growth: Vec<Growth>,
}

/// Cores, memory, kernel and CPU model of this machine.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown CPU".into(), |s| s.trim().to_string());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("MemTotal")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok())
            })
        })
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let clock =
        std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
            .unwrap_or_default();
    format!(
        "machine: {} x {model}, {:.1} GiB RAM, Linux {}, clocksource {}, kvshm-compare {}",
        crate::systems::server::cpus(),
        mem as f64 / (1 << 20) as f64,
        kernel.trim(),
        clock.trim(),
        env!("CARGO_PKG_VERSION")
    )
}

fn ns(v: u64) -> String {
    if v >= 10_000_000 {
        format!("{:.0} ms", v as f64 / 1e6)
    } else if v >= 1_000_000 {
        format!("{:.1} ms", v as f64 / 1e6)
    } else if v >= 10_000 {
        format!("{:.0} µs", v as f64 / 1e3)
    } else if v >= 1_000 {
        format!("{:.1} µs", v as f64 / 1e3)
    } else {
        format!("{v} ns")
    }
}

fn rate(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2} M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1} k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

fn order(system: &str) -> usize {
    crate::systems::ALL
        .iter()
        .position(|s| *s == system)
        .unwrap_or(usize::MAX)
}

impl Report {
    pub fn new(machine: String) -> Report {
        Report {
            machine,
            cells: Vec::new(),
            scaling: Vec::new(),
            loaded: Vec::new(),
            skips: Vec::new(),
            growth: Vec::new(),
        }
    }

    pub fn add(&mut self, m: Msg, scaling: bool) {
        match m {
            Msg::Skip { system, reason } => {
                let s = format!("{system}: {reason}");
                if !self.skips.contains(&s) {
                    self.skips.push(s);
                }
            }
            Msg::SkipProcs {
                system,
                procs,
                reason,
            } => {
                let s = format!("{system} with {procs} clients: {reason}");
                if !self.skips.contains(&s) {
                    self.skips.push(s);
                }
            }
            Msg::Loaded(l) => {
                if !scaling {
                    self.loaded.push(l)
                }
            }
            Msg::Cell(r) => {
                if r.misses > 0 {
                    self.skips.push(format!(
                        "{} {} P={}: {} gets MISSED keys that were loaded (a bug in that system's adapter or the system)",
                        r.system, r.workload, r.processes, r.misses
                    ));
                }
                if scaling {
                    self.scaling.push(r)
                } else {
                    self.cells.push(r)
                }
            }
            Msg::Growth(g) => self.growth.push(g),
        }
    }

    /// Cells whose gets missed keys that were loaded (a correctness failure, not a speed one).
    pub fn missing(&self) -> usize {
        self.all_records().iter().filter(|r| r.misses > 0).count()
    }

    /// Runs in which a get returned bytes the workload never wrote under its key.
    pub fn wrong_values(&self) -> usize {
        self.skips
            .iter()
            .filter(|s| s.contains(crate::worker::WRONG_VALUE))
            .count()
    }

    pub fn all_records(&self) -> Vec<&Record> {
        self.cells.iter().chain(&self.scaling).collect()
    }

    fn find(&self, system: &str, value: usize, dist: &str, read: f64, p: usize) -> Option<&Record> {
        self.cells.iter().find(|r| {
            r.system == system
                && r.value_bytes == value
                && r.dist == dist
                && (r.read_ratio - read).abs() < 1e-9
                && r.processes == p
        })
    }

    pub fn print_tables(&self) {
        let mut groups: BTreeMap<(usize, String, i64), Vec<&Record>> = BTreeMap::new();
        for r in &self.cells {
            groups
                .entry((
                    r.value_bytes,
                    r.dist.clone(),
                    -((r.read_ratio * 100.0) as i64),
                ))
                .or_default()
                .push(r);
        }
        for ((vb, dist, read), mut rows) in groups {
            rows.sort_by_key(|r| (r.processes, order(&r.system)));
            println!(
                "\n### {vb}-byte values, {dist}, {}% gets ({} keys)\n",
                -read, rows[0].keys
            );
            println!("| system | clients | ops/s | p50 | p99 | p99.9 | get p50 | put p50 | bytes/key | kvshm ops/s ÷ this |");
            println!("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
            for r in &rows {
                let kv = self
                    .find("kvshm", r.value_bytes, &r.dist, r.read_ratio, r.processes)
                    .map_or("-".to_string(), |k| {
                        format!("{:.2}×", k.ops_per_sec / r.ops_per_sec)
                    });
                let put = if r.read_ratio >= 1.0 {
                    "-".into()
                } else {
                    ns(r.put_p50_ns)
                };
                println!(
                    "| {} | {} {} | {} | {} | {} | {} | {} | {} | {:.0} | {kv} |",
                    r.system,
                    r.processes,
                    r.mode,
                    rate(r.ops_per_sec),
                    ns(r.p50_ns),
                    ns(r.p99_ns),
                    ns(r.p999_ns),
                    ns(r.get_p50_ns),
                    put,
                    r.bytes_per_key
                );
            }
        }
        if !self.loaded.is_empty() {
            println!("\n### Loading and memory\n");
            println!("| system | keys | value bytes | load s | bytes/key | (key+value)×1.3+32 | measured as |");
            println!("| --- | ---: | ---: | ---: | ---: | ---: | --- |");
            let mut l: Vec<&Loaded> = self.loaded.iter().collect();
            l.sort_by_key(|l| (l.value_bytes, order(&l.system)));
            for l in l {
                println!(
                    "| {} | {} | {} | {:.1} | {:.0} | {:.0} | {} |",
                    l.system,
                    l.keys,
                    l.value_bytes,
                    l.secs,
                    l.bytes as f64 / l.keys as f64,
                    (16 + l.value_bytes) as f64 * 1.3 + 32.0,
                    l.note
                );
            }
        }
        if !self.skips.is_empty() {
            println!("\n### Skipped\n");
            for s in &self.skips {
                println!("- {s}");
            }
        }
    }

    pub fn print_scaling(&self) {
        if !self.scaling.is_empty() {
            println!(
                "\n### Scaling with the number of keys (100-byte values, uniform, 1 client)\n"
            );
            println!("| system | keys | gets/s (100% get) | get p50 | get p99 | ops/s (90% get) | p50 | p99 | bytes/key |");
            println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
            let mut keys: Vec<(usize, u64, String)> = self
                .scaling
                .iter()
                .map(|r| (order(&r.system), r.keys, r.system.clone()))
                .collect();
            keys.sort();
            keys.dedup();
            for (_, n, s) in keys {
                let get = |read: f64| {
                    self.scaling.iter().find(|r| {
                        r.system == s && r.keys == n && (r.read_ratio - read).abs() < 1e-9
                    })
                };
                let (Some(a), Some(b)) = (get(1.0), get(0.9)) else {
                    continue;
                };
                println!(
                    "| {s} | {n} | {} | {} | {} | {} | {} | {} | {:.0} |",
                    rate(a.ops_per_sec),
                    ns(a.p50_ns),
                    ns(a.p99_ns),
                    rate(b.ops_per_sec),
                    ns(b.p50_ns),
                    ns(b.p99_ns),
                    a.bytes_per_key
                );
            }
        }
        if !self.growth.is_empty() {
            println!(
                "\n### Growth: inserts into an empty store (100-byte values), every insert timed\n"
            );
            println!("| system | keys | seconds | initial bytes | final bytes | growths | p50 | p99.9 | worst | inserts > 1 ms |");
            println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
            for g in &self.growth {
                println!(
                    "| {} | {} | {:.1} | {} | {} | {} | {} | {} | {} | {} |",
                    g.system,
                    g.keys,
                    g.secs,
                    g.initial_bytes,
                    g.final_bytes,
                    g.growths,
                    ns(g.p50_ns),
                    ns(g.p999_ns),
                    ns(g.max_ns),
                    g.over_1ms
                );
            }
        }
    }

    /// The targets, each with the measured figure and met / missed.
    pub fn print_targets(&self) {
        let mut out = String::new();
        // One line per target: what was measured and whether it met the target, or the
        // target's name when this run did not measure it.
        let mut target = |name: &str, got: Option<(String, bool)>| {
            let _ = match got {
                Some((what, ok)) => {
                    writeln!(out, "- {}: {what}", if ok { "met" } else { "MISSED" })
                }
                None => writeln!(out, "- not measured: {name}"),
            };
        };
        let kv = self.find("kvshm", 100, "uniform", 0.9, 1);
        for (peer, want) in [
            ("hashmap", 1.0),
            ("sqlite-mem", 3.0),
            ("lmdb", 4.0),
            ("rocksdb", 15.0),
            ("redis", 100.0),
        ] {
            // Against the better of the two unpipelined Redis placements.
            let names: &[&str] = if peer == "redis" {
                &["redis", "redis-samecore"]
            } else {
                &[peer]
            };
            let other = names
                .iter()
                .filter_map(|p| self.find(p, 100, "uniform", 0.9, 1))
                .max_by(|a, b| a.ops_per_sec.total_cmp(&b.ops_per_sec));
            target(
                &format!("kvshm ≥ {want}× {peer}"),
                kv.zip(other).map(|(k, o)| {
                    let x = k.ops_per_sec / o.ops_per_sec;
                    (
                        format!(
                            "1 client, 100 B, uniform, 90% get: kvshm {} ops/s = {x:.2}× {} ({}; target ≥ {want}×)",
                            rate(k.ops_per_sec),
                            o.system,
                            rate(o.ops_per_sec)
                        ),
                        x >= want,
                    )
                }),
            );
        }
        target(
            "get p99.9 ≤ 2 µs",
            self.find("kvshm", 100, "uniform", 1.0, 1).map(|r| {
                (
                    format!(
                        "get p99.9 at {} keys: {} (target ≤ 2 µs)",
                        r.keys,
                        ns(r.get_p999_ns)
                    ),
                    r.get_p999_ns <= 2000,
                )
            }),
        );
        target(
            "put p50 ≤ 1 µs",
            self.find("kvshm", 100, "uniform", 0.5, 1).map(|r| {
                (
                    format!(
                        "put p50 (50% get mix, {} keys): {} (target ≤ 1 µs)",
                        r.keys,
                        ns(r.put_p50_ns)
                    ),
                    r.put_p50_ns <= 1000,
                )
            }),
        );
        let one = self.find("kvshm", 100, "uniform", 1.0, 1);
        let two = self.find("kvshm", 100, "uniform", 1.0, 2);
        target(
            "2 processes ≥ 1.8× 1 process",
            one.zip(two).map(|(a, b)| {
                let x = b.ops_per_sec / a.ops_per_sec;
                (
                    format!(
                        "100% gets, 2 processes: {} vs 1 process {} = {x:.2}× (target ≥ 1.8×)",
                        rate(b.ops_per_sec),
                        rate(a.ops_per_sec)
                    ),
                    x >= 1.8,
                )
            }),
        );
        let sc = |s: &str, n: u64| {
            self.scaling
                .iter()
                .find(|r| r.system == s && r.keys == n && r.read_ratio >= 1.0)
        };
        let kvs = sc("kvshm", 10_000).zip(sc("kvshm", 10_000_000));
        let hms = sc("hashmap", 10_000).zip(sc("hashmap", 10_000_000));
        target(
            "10M-key p50 within 1.5× of 10k (net of HashMap's slowdown)",
            kvs.zip(hms).map(|((a, b), (c, d))| {
                let kx = b.p50_ns as f64 / a.p50_ns as f64;
                let hx = d.p50_ns as f64 / c.p50_ns as f64;
                (
                    format!(
                        "get p50 10k -> 10M keys: kvshm {} -> {} ({kx:.2}×), std HashMap {} -> {} ({hx:.2}×); kvshm's slowdown ÷ HashMap's = {:.2} (target ≤ 1.5)",
                        ns(a.p50_ns), ns(b.p50_ns), ns(c.p50_ns), ns(d.p50_ns), kx / hx
                    ),
                    kx / hx <= 1.5,
                )
            }),
        );
        target(
            "growth: no insert > 5 ms",
            self.growth.iter().find(|g| g.system == "kvshm").map(|g| {
                (
                    format!(
                        "growth from {} bytes to {} keys ({} growths): worst insert {} (target ≤ 5 ms)",
                        g.initial_bytes,
                        g.keys,
                        g.growths,
                        ns(g.max_ns)
                    ),
                    g.max_ns <= 5_000_000,
                )
            }),
        );
        let cap = (16.0 + 100.0) * 1.3 + 32.0;
        target(
            "memory ≤ 1.3×(key+value)+32 B/key",
            self.loaded
                .iter()
                .find(|l| l.system == "kvshm" && l.value_bytes == 100)
                .map(|l| {
                    let per = l.bytes as f64 / l.keys as f64;
                    (
                        format!("memory at 100 B values: {per:.0} bytes/key (target ≤ {cap:.0})"),
                        per <= cap,
                    )
                }),
        );
        println!("\n### Targets (issue 6)\n\n{out}");
    }
}
