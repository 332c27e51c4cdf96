//! Wake-up latency of `wait_changed` across processes (issue 13): a writer process puts the
//! wall-clock time into a key; a waiter process sleeping in `wait_changed` on that key wakes,
//! reads the time and reports now minus it. Prints p50/p90/p99/max over the samples.
//!
//! `cargo run --release -p kvshm-benches --bin wake_latency [SAMPLES]`

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kvshm::{Client, Config, Host, WaitResult};

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn waiter(name: &str, samples: usize) {
    let c = Client::open(name).expect("attach");
    let mut since = c.version(b"t").expect("version");
    println!("ready");
    for _ in 0..samples {
        match c
            .wait_changed(b"t", since, Duration::from_secs(10))
            .expect("wait")
        {
            WaitResult::Changed(v) => {
                let t = now_ns();
                let sent: u64 = c
                    .get(b"t")
                    .expect("get")
                    .map(|v| String::from_utf8(v).unwrap().parse().unwrap())
                    .unwrap_or(t);
                println!("{}", t.saturating_sub(sent));
                since = v;
            }
            WaitResult::Timeout => {
                eprintln!("waiter: timed out");
                std::process::exit(1);
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("waiter") {
        return waiter(&args[2], args[3].parse().unwrap());
    }
    let samples: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(2000);
    kvshm_benches::print_machine();
    let name = format!("bench-wake-{}", std::process::id());
    let host = Host::create(&name, &Config::default()).expect("create");
    let c = host.client();
    c.put(b"t", b"0").unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["waiter", &name, &samples.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn waiter");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    let mut lat = Vec::with_capacity(samples);
    for _ in 0..samples {
        // Let the waiter fall asleep, then write.
        std::thread::sleep(Duration::from_millis(2));
        c.put(b"t", now_ns().to_string().as_bytes()).unwrap();
        let l: u64 = lines.next().unwrap().unwrap().parse().unwrap();
        lat.push(l);
    }
    child.wait().unwrap();
    lat.sort_unstable();
    let p = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)] as f64 / 1000.0;
    println!(
        "wake-up latency over {samples} wakes (put in one process -> wait_changed returns in \
         another): p50 {:.1} us, p90 {:.1} us, p99 {:.1} us, max {:.1} us",
        p(0.5),
        p(0.9),
        p(0.99),
        p(1.0)
    );
    host.release().unwrap();
}
