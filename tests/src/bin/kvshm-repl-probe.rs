//! Probe for `scripts/replication-demo.sh`: writes to a primary's store through shared memory
//! and watches a replica's store, on the same machine (network namespaces separate the hosts'
//! networks, not their memory), so one clock times both ends.
//!
//!   kvshm-repl-probe lag DIR_P NAME_P DIR_R NAME_R N RATE   replication lag of N writes
//!   kvshm-repl-probe load DIR_P NAME_P ACK_FILE              write until killed, logging acks
//!   kvshm-repl-probe missing DIR_R NAME_R ACK_FILE           acknowledged writes the replica lacks
//!   kvshm-repl-probe fill DIR NAME N                         N keys of 100 bytes
//!   kvshm-repl-probe resp-lag PORT_P PORT_R N RATE           lag over RESP (any primary and
//!                                                            replica, Redis too): SET on one,
//!                                                            GET polled on the other

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kvshm::Client;

fn open(dir: &str, name: &str) -> Client {
    Client::open_in(dir, name).unwrap_or_else(|e| {
        eprintln!("kvshm-repl-probe: cannot open {dir}/{name}: {e}");
        std::process::exit(2)
    })
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    match a.get(1).map(String::as_str) {
        Some("lag") if a.len() == 8 => lag(&a[2], &a[3], &a[4], &a[5], &a[6], &a[7]),
        Some("load") if a.len() == 5 => load(&a[2], &a[3], &a[4]),
        Some("missing") if a.len() == 5 => missing(&a[2], &a[3], &a[4]),
        Some("fill") if a.len() == 5 => fill(&a[2], &a[3], &a[4]),
        Some("resp-lag") if a.len() == 6 => resp_lag(&a[2], &a[3], &a[4], &a[5]),
        _ => {
            eprintln!("usage: see the source's header");
            std::process::exit(2)
        }
    }
}

/// Write `n` keys (`write(i)`) at `rate` per second on this thread while another thread
/// waits until each is seen on the other side (`seen(i)`, polled), and print the time from
/// each write's acknowledgement to its first sighting as `TAG writes= rate= p50_us= ...`.
fn measure_lag<W, S, M>(tag: &str, n: &str, rate: &str, mut write: W, make_seen: M)
where
    W: FnMut(usize),
    S: FnMut(usize) -> bool,
    M: FnOnce() -> S + Send + 'static,
{
    let n: usize = n.parse().expect("N");
    let rate: u64 = rate.parse().expect("RATE");
    let start = Instant::now();
    let written: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
    let w2 = written.clone();
    let reader = std::thread::spawn(move || {
        let mut seen = make_seen();
        let mut lags = Vec::with_capacity(n);
        let deadline = Instant::now() + Duration::from_secs(120);
        for (i, w) in w2.iter().enumerate() {
            loop {
                let at = w.load(Ordering::Acquire);
                if at != 0 && seen(i) {
                    lags.push((start.elapsed().as_nanos() as u64).saturating_sub(at));
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "write {i} never reached the replica"
                );
            }
        }
        lags
    });
    let gap = Duration::from_nanos(1_000_000_000 / rate.max(1));
    for (i, w) in written.iter().enumerate() {
        let due = gap * i as u32;
        while start.elapsed() < due {
            std::hint::spin_loop();
        }
        write(i);
        w.store(start.elapsed().as_nanos() as u64, Ordering::Release);
    }
    let wrote = start.elapsed();
    let mut lags = reader.join().expect("reader");
    lags.sort_unstable();
    let q = |f: f64| lags[((lags.len() as f64 * f) as usize).min(lags.len() - 1)] / 1000;
    println!(
        "{tag} writes={n} rate={:.0}/s p50_us={} p99_us={} max_us={}",
        n as f64 / wrote.as_secs_f64(),
        q(0.50),
        q(0.99),
        lags[lags.len() - 1] / 1000
    );
}

fn lag(dp: &str, np: &str, dr: &str, nr: &str, n: &str, rate: &str) {
    let p = open(dp, np);
    let value = vec![b'v'; 100];
    let (dr, nr) = (dr.to_string(), nr.to_string());
    measure_lag(
        "lag",
        n,
        rate,
        |i| p.put(format!("lag-{i}").as_bytes(), &value).expect("put"),
        move || {
            let r = open(&dr, &nr);
            move |i: usize| {
                let hit = r
                    .get(format!("lag-{i}").as_bytes())
                    .ok()
                    .flatten()
                    .is_some();
                if !hit {
                    std::thread::sleep(Duration::from_micros(20));
                }
                hit
            }
        },
    );
}

fn load(dp: &str, np: &str, ack_file: &str) {
    let p = open(dp, np);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(ack_file)
        .expect("ack file");
    let value = vec![b'l'; 100];
    for i in 0u64.. {
        p.put(format!("load-{i}").as_bytes(), &value).expect("put");
        // One write(2) per acknowledgement, ending with a mark: a line cut by the kill is not
        // counted (see kvshm_tests::END).
        f.write_all(format!("{i} .\n").as_bytes()).expect("ack");
    }
}

fn missing(dr: &str, nr: &str, ack_file: &str) {
    let r = open(dr, nr);
    let text = std::fs::read_to_string(ack_file).expect("ack file");
    let acked = text
        .lines()
        .filter_map(|l| l.strip_suffix(" ."))
        .filter_map(|l| l.parse::<u64>().ok())
        .max()
        .map_or(0, |m| m + 1);
    let mut missing = 0u64;
    let mut first = None;
    for i in 0..acked {
        if r.get(format!("load-{i}").as_bytes())
            .expect("get")
            .is_none()
        {
            missing += 1;
            first.get_or_insert(i);
        }
    }
    // The stream is applied in order and the writer is one process: what the replica lacks
    // must be the newest writes only (a tail), never one with later ones present.
    let tail = first.is_none_or(|f| f + missing == acked);
    println!(
        "acked={acked} missing={missing} first_missing={} tail={}",
        first.map_or("none".to_string(), |f| f.to_string()),
        if tail { "yes" } else { "no" }
    );
}

fn fill(dir: &str, name: &str, n: &str) {
    let n: u64 = n.parse().expect("N");
    let c = open(dir, name);
    let value = vec![b'f'; 100];
    let mut batch: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(256);
    for i in 0..n {
        batch.push((format!("key:{i:012}").into_bytes(), value.clone()));
        if batch.len() == 256 || i + 1 == n {
            c.put_many(&batch).expect("put_many");
            batch.clear();
        }
    }
    println!("filled {n}");
}

/// A blocking RESP connection: send a command, read one reply line (and a bulk's body).
struct Resp {
    r: std::io::BufReader<std::net::TcpStream>,
    w: std::net::TcpStream,
}

impl Resp {
    fn new(port: &str) -> Resp {
        let s = std::net::TcpStream::connect(("127.0.0.1", port.parse::<u16>().expect("port")))
            .expect("connect");
        s.set_nodelay(true).expect("nodelay");
        Resp {
            r: std::io::BufReader::new(s.try_clone().expect("clone")),
            w: s,
        }
    }

    /// Send `args`, return the reply's first line, and a bulk's body if any.
    fn cmd(&mut self, args: &[&[u8]]) -> (String, Option<Vec<u8>>) {
        use std::io::{BufRead, Read};
        let mut f = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            f.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            f.extend_from_slice(a);
            f.extend_from_slice(b"\r\n");
        }
        self.w.write_all(&f).expect("send");
        let mut line = String::new();
        self.r.read_line(&mut line).expect("reply");
        let line = line.trim_end().to_string();
        if let Some(n) = line.strip_prefix('$') {
            let n: i64 = n.parse().expect("bulk length");
            if n >= 0 {
                let mut b = vec![0u8; n as usize + 2];
                self.r.read_exact(&mut b).expect("bulk");
                b.truncate(n as usize);
                return (line, Some(b));
            }
        }
        (line, None)
    }
}

fn resp_lag(port_p: &str, port_r: &str, n: &str, rate: &str) {
    let mut p = Resp::new(port_p);
    let value = vec![b'v'; 100];
    let pr = port_r.to_string();
    measure_lag(
        "resp-lag",
        n,
        rate,
        |i| {
            let (ok, _) = p.cmd(&[b"SET", format!("rlag-{i}").as_bytes(), &value]);
            assert_eq!(ok, "+OK");
        },
        move || {
            let mut r = Resp::new(&pr);
            move |i: usize| r.cmd(&[b"GET", format!("rlag-{i}").as_bytes()]).1.is_some()
        },
    );
}
