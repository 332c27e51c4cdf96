//! Issue 14: kvshm as a cache. One Zipf(0.99) trace over `--keys` keys (90% gets, a miss filled
//! by a put of the key, 10% puts) runs against a store that holds about a tenth of them:
//! kvshm (allkeys-lru, one process through shared memory), an exact LRU simulated on the same
//! trace with kvshm's capacity (what CLOCK approximates), Redis (`maxmemory` = kvshm's
//! `--max-size`, allkeys-lru) and memcached (`-m` the same), both over loopback TCP with
//! pipelines of 16. Prints hit ratios (after a warm-up of a third of the trace), keys held and
//! ops/s.
//!
//! `cargo run --release -p kvshm-benches --bin cache_hit_ratio -- [--keys N] [--ops N]
//!  [--max-size BYTES] [--value BYTES] [--systems kvshm,lru,redis,memcached]`
//! (redis-server and memcached from Debian; a missing one is reported as skipped).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kvshm::{Config, Host, Policy};

/// Ops per window: a window's gets are sent (pipelined) first, then its puts (the writes and
/// the fills of the gets that missed), for every system alike.
const WINDOW: usize = 16;

struct Args {
    keys: u32,
    ops: usize,
    max_size: u64,
    value: usize,
    systems: Vec<String>,
}

fn args() -> Args {
    let mut a = Args {
        keys: 1_000_000,
        ops: 6_000_000,
        max_size: 24 << 20,
        value: 100,
        systems: ["kvshm", "lru", "redis", "memcached"]
            .map(String::from)
            .to_vec(),
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for w in argv.chunks(2) {
        let v = w.get(1).map(String::as_str).unwrap_or("");
        match w[0].as_str() {
            "--keys" => a.keys = v.parse().expect("--keys N"),
            "--ops" => a.ops = v.parse().expect("--ops N"),
            "--max-size" => a.max_size = v.parse().expect("--max-size BYTES"),
            "--value" => a.value = v.parse().expect("--value BYTES"),
            "--systems" => a.systems = v.split(',').map(String::from).collect(),
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

/// xorshift64*: the same trace on every run.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// (key, is_get) per op: Zipf(0.99) ranks, scattered over the key space.
fn trace(keys: u32, ops: usize) -> Vec<(u32, bool)> {
    let mut cdf = Vec::with_capacity(keys as usize);
    let mut sum = 0.0;
    for r in 1..=keys {
        sum += 1.0 / f64::from(r).powf(0.99);
        cdf.push(sum);
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    (0..ops)
        .map(|_| {
            let u = rng.unit() * sum;
            let rank = cdf.partition_point(|&c| c < u) as u64;
            // Rank -> key: a fixed odd multiplier mod 2^32 scatters hot keys (then folded
            // into the key space).
            let key = (rank.wrapping_mul(2_654_435_761) % u64::from(keys)) as u32;
            (key, rng.next() % 10 != 0)
        })
        .collect()
}

fn key(k: u32) -> String {
    format!("key:{k:010}")
}

/// One system under the trace: a window of gets (true = hit) then a window of puts.
trait Cache {
    fn gets(&mut self, keys: &[u32]) -> Vec<bool>;
    fn puts(&mut self, keys: &[u32]);
    /// Keys held now.
    fn held(&mut self) -> u64;
}

struct Outcome {
    hits: u64,
    gets: u64,
    held: f64,
    ops_per_s: f64,
}

/// Run the trace; hit ratio over the ops after the first third.
fn run(c: &mut dyn Cache, trace: &[(u32, bool)]) -> Outcome {
    let warm = trace.len() / 3;
    let (mut hits, mut gets) = (0u64, 0u64);
    let (mut held_sum, mut held_n) = (0f64, 0u64);
    let t = Instant::now();
    let mut done = 0usize;
    for (w, ops) in trace.chunks(WINDOW).enumerate() {
        let get_keys: Vec<u32> = ops.iter().filter(|o| o.1).map(|o| o.0).collect();
        let found = c.gets(&get_keys);
        let mut puts: Vec<u32> = ops.iter().filter(|o| !o.1).map(|o| o.0).collect();
        puts.extend(
            get_keys
                .iter()
                .zip(&found)
                .filter(|(_, f)| !**f)
                .map(|(k, _)| *k),
        );
        c.puts(&puts);
        if done >= warm {
            gets += get_keys.len() as u64;
            hits += found.iter().filter(|f| **f).count() as u64;
            if w % 4096 == 0 {
                held_sum += c.held() as f64;
                held_n += 1;
            }
        }
        done += ops.len();
    }
    let secs = t.elapsed().as_secs_f64();
    Outcome {
        hits,
        gets,
        held: held_sum / held_n.max(1) as f64,
        ops_per_s: trace.len() as f64 / secs,
    }
}

struct Kvshm {
    host: Host,
    value: Vec<u8>,
    buf: Vec<u8>,
}

impl Drop for Kvshm {
    /// The store goes with the run, also when it panics.
    fn drop(&mut self) {
        let _ = self.host.remove_store_file();
    }
}

impl Cache for Kvshm {
    fn gets(&mut self, keys: &[u32]) -> Vec<bool> {
        let c = self.host.client();
        keys.iter()
            .map(|&k| c.get_into(key(k).as_bytes(), &mut self.buf).expect("get"))
            .collect()
    }
    fn puts(&mut self, keys: &[u32]) {
        let c = self.host.client();
        for &k in keys {
            c.put(key(k).as_bytes(), &self.value).expect("put");
        }
    }
    fn held(&mut self) -> u64 {
        self.host.client().len()
    }
}

/// Exact LRU over dense keys: a doubly linked list in arrays (u32::MAX = none).
struct Lru {
    cap: usize,
    len: usize,
    prev: Vec<u32>,
    next: Vec<u32>,
    present: Vec<bool>,
    head: u32,
    tail: u32,
}

const NIL: u32 = u32::MAX;

impl Lru {
    fn new(keys: u32, cap: usize) -> Lru {
        Lru {
            cap,
            len: 0,
            prev: vec![NIL; keys as usize],
            next: vec![NIL; keys as usize],
            present: vec![false; keys as usize],
            head: NIL,
            tail: NIL,
        }
    }
    fn unlink(&mut self, k: u32) {
        let (p, n) = (self.prev[k as usize], self.next[k as usize]);
        if p == NIL {
            self.head = n;
        } else {
            self.next[p as usize] = n;
        }
        if n == NIL {
            self.tail = p;
        } else {
            self.prev[n as usize] = p;
        }
    }
    fn push_front(&mut self, k: u32) {
        self.prev[k as usize] = NIL;
        self.next[k as usize] = self.head;
        if self.head != NIL {
            self.prev[self.head as usize] = k;
        }
        self.head = k;
        if self.tail == NIL {
            self.tail = k;
        }
    }
    fn touch(&mut self, k: u32) {
        if self.present[k as usize] {
            self.unlink(k);
            self.push_front(k);
            return;
        }
        if self.len == self.cap {
            let t = self.tail;
            self.unlink(t);
            self.present[t as usize] = false;
            self.len -= 1;
        }
        self.present[k as usize] = true;
        self.push_front(k);
        self.len += 1;
    }
}

impl Cache for Lru {
    fn gets(&mut self, keys: &[u32]) -> Vec<bool> {
        keys.iter()
            .map(|&k| {
                let hit = self.present[k as usize];
                if hit {
                    self.touch(k);
                }
                hit
            })
            .collect()
    }
    fn puts(&mut self, keys: &[u32]) {
        for &k in keys {
            self.touch(k);
        }
    }
    fn held(&mut self) -> u64 {
        self.len as u64
    }
}

/// A server speaking RESP (Redis) or memcached's text protocol, pipelined per window.
struct Server {
    child: Child,
    r: BufReader<TcpStream>,
    w: TcpStream,
    resp: bool,
    value: Vec<u8>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Server {
    fn start(resp: bool, max_bytes: u64, value: usize) -> Result<Server, String> {
        let port = free_port();
        let mut cmd = if resp {
            let mut c = Command::new("redis-server");
            c.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .args(["--maxmemory", &max_bytes.to_string()])
                .args(["--maxmemory-policy", "allkeys-lru"]);
            c
        } else {
            let mut c = Command::new("memcached");
            c.args(["-p", &port.to_string(), "-l", "127.0.0.1", "-U", "0"])
                .args(["-m", &(max_bytes >> 20).max(1).to_string(), "-t", "1"])
                .args(["-u", "root"]);
            c
        };
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot start {}: {e}",
                    if resp { "redis-server" } else { "memcached" }
                )
            })?;
        let start = Instant::now();
        let stream = loop {
            match TcpStream::connect(("127.0.0.1", port)) {
                Ok(s) => break s,
                Err(_) if start.elapsed() < Duration::from_secs(10) => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => return Err(format!("server did not come up: {e}")),
            }
        };
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        Ok(Server {
            child,
            r: BufReader::new(stream.try_clone().map_err(|e| e.to_string())?),
            w: stream,
            resp,
            value: vec![b'v'; value],
        })
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        self.r.read_line(&mut l).expect("read");
        assert!(!l.is_empty(), "server closed the connection");
        l
    }

    fn skip(&mut self, n: usize) {
        let mut b = vec![0u8; n + 2];
        self.r.read_exact(&mut b).expect("read");
    }
}

impl Cache for Server {
    fn gets(&mut self, keys: &[u32]) -> Vec<bool> {
        let mut out = Vec::new();
        for &k in keys {
            let k = key(k);
            if self.resp {
                write!(out, "*2\r\n$3\r\nGET\r\n${}\r\n{k}\r\n", k.len()).unwrap();
            } else {
                write!(out, "get {k}\r\n").unwrap();
            }
        }
        self.w.write_all(&out).expect("write");
        keys.iter()
            .map(|_| {
                let l = self.line();
                if self.resp {
                    if l.starts_with("$-1") {
                        return false;
                    }
                    let n: usize = l[1..].trim().parse().expect("bulk length");
                    self.skip(n);
                    true
                } else {
                    if l.starts_with("END") {
                        return false;
                    }
                    let n: usize = l.trim().rsplit(' ').next().unwrap().parse().expect("len");
                    self.skip(n);
                    assert!(self.line().starts_with("END"));
                    true
                }
            })
            .collect()
    }
    fn puts(&mut self, keys: &[u32]) {
        let mut out = Vec::new();
        for &k in keys {
            let k = key(k);
            if self.resp {
                write!(
                    out,
                    "*3\r\n$3\r\nSET\r\n${}\r\n{k}\r\n${}\r\n",
                    k.len(),
                    self.value.len()
                )
                .unwrap();
            } else {
                write!(out, "set {k} 0 0 {}\r\n", self.value.len()).unwrap();
            }
            out.extend_from_slice(&self.value);
            out.extend_from_slice(b"\r\n");
        }
        self.w.write_all(&out).expect("write");
        for _ in keys {
            let l = self.line();
            assert!(l.starts_with("+OK") || l.starts_with("STORED"), "{l}");
        }
    }
    fn held(&mut self) -> u64 {
        let cmd: &[u8] = if self.resp {
            b"DBSIZE\r\n"
        } else {
            b"stats\r\n"
        };
        self.w.write_all(cmd).expect("write");
        if self.resp {
            return self.line()[1..].trim().parse().unwrap_or(0);
        }
        let mut stats = HashMap::new();
        loop {
            let l = self.line();
            if l.starts_with("END") {
                break;
            }
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() == 3 {
                stats.insert(f[1].to_string(), f[2].to_string());
            }
        }
        stats
            .get("curr_items")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

fn main() {
    let a = args();
    kvshm_benches::print_machine();
    println!(
        "trace: {} ops over {} keys, Zipf(0.99), 90% gets (a miss is filled by a put), 10% puts, {}-byte values; every store gets {} ({}); hit ratio after the first third",
        a.ops,
        a.keys,
        a.value,
        kvshm::human_bytes(a.max_size),
        a.max_size
    );
    let t = Instant::now();
    let tr = trace(a.keys, a.ops);
    println!("trace generated in {:.1} s", t.elapsed().as_secs_f64());
    let report = |name: &str, o: &Outcome| {
        println!(
            "{name:<28} hit ratio {:>6.2}%   keys held {:>9.0}   {:>10.0} ops/s",
            100.0 * o.hits as f64 / o.gets.max(1) as f64,
            o.held,
            o.ops_per_s
        );
    };
    let mut kvshm_held = None;
    let want = |s: &str| a.systems.iter().any(|x| x == s);
    if want("kvshm") {
        let name = format!("bench-cache-{}", std::process::id());
        let _ = Host::release_by_name(kvshm::default_dir(), &name);
        let host = Host::create(
            &name,
            &Config::default().max_size(a.max_size).initial_size(0),
        )
        .expect("create");
        host.client().set_eviction(Policy::AllKeysLru).unwrap();
        let mut k = Kvshm {
            host,
            value: vec![b'v'; a.value],
            buf: Vec::new(),
        };
        let o = run(&mut k, &tr);
        report("kvshm allkeys-lru (CLOCK)", &o);
        println!(
            "{:<28} evicted {}, verify: {:?}",
            "",
            k.host.client().evicted(),
            k.host.verify().map(|r| r.problems.len())
        );
        kvshm_held = Some(o.held);
    }
    if want("lru") {
        let cap = kvshm_held.unwrap_or(f64::from(a.keys) / 10.0) as usize;
        let o = run(&mut Lru::new(a.keys, cap.max(1)), &tr);
        report(&format!("exact LRU, {cap} keys"), &o);
    }
    let mut peers_held = Vec::new();
    for (name, resp) in [("redis", true), ("memcached", false)] {
        if !want(name) {
            continue;
        }
        match Server::start(resp, a.max_size, a.value) {
            Ok(mut s) => {
                let o = run(&mut s, &tr);
                let label = if resp {
                    "redis allkeys-lru"
                } else {
                    "memcached"
                };
                report(label, &o);
                peers_held.push((label, o.held));
            }
            Err(e) => println!("{name:<28} skipped: {e}"),
        }
    }
    // How close each peer's own approximation comes to an exact LRU of its capacity.
    if want("lru") {
        for (label, held) in peers_held {
            let cap = held as usize;
            let o = run(&mut Lru::new(a.keys, cap.max(1)), &tr);
            report(&format!("exact LRU, {cap} ({label})"), &o);
        }
    }
}
