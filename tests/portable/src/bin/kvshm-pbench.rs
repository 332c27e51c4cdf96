//! What waiting on a held lock costs, on Linux (futex) and on Windows (yield, then sleeps of
//! 20 us doubling to 1 ms: there is no cross-process futex): `kvshm-pbench [OPS]` increments
//! one counter OPS times in all, from 1, 2 and 4 processes (`kvshm-pchild incr`, every
//! increment under the key's stripe lock), and prints the time per increment and the
//! processes' throughput. Cross-built, it runs under Wine (ci/windows.sh prints it).
#![forbid(unsafe_code)]

use std::process::Command;
use std::time::Instant;

fn main() {
    let ops: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200_000);
    let child = std::env::current_exe()
        .expect("own path")
        .with_file_name(format!("kvshm-pchild{}", std::env::consts::EXE_SUFFIX));
    let dir = std::env::temp_dir().join(format!("kvshm-pbench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let name = "pbench";
    let host = kvshm::Host::create(name, &kvshm::Config::default().dir(&dir).stripes(64))
        .expect("create store");
    println!(
        "contended incr of one key, {ops} increments in all ({} {}):",
        std::env::consts::OS,
        std::env::consts::ARCH
    );
    for procs in [1u64, 2, 4] {
        host.put(b"ctr", b"0").expect("reset");
        host.put(b"ready", b"0").expect("reset");
        host.remove(b"go").expect("reset");
        let mut kids: Vec<_> = (0..procs)
            .map(|_| {
                Command::new(&child)
                    .arg("incr-sync")
                    .arg(&dir)
                    .arg(name)
                    .arg("ctr")
                    .arg((ops / procs).to_string())
                    .spawn()
                    .expect("spawn kvshm-pchild")
            })
            .collect();
        // Process start (slow under Wine) is not timed: the children wait for `go`.
        while host.get(b"ready").expect("get").as_deref() != Some(procs.to_string().as_bytes()) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        host.put(b"go", b"1").expect("go");
        let start = Instant::now();
        for k in &mut kids {
            assert!(k.wait().expect("wait").success(), "a child failed");
        }
        let secs = start.elapsed().as_secs_f64();
        let got = host.get(b"ctr").expect("get").unwrap_or_default();
        let want = (ops / procs * procs).to_string();
        assert_eq!(got, want.as_bytes(), "lost increments");
        println!(
            "  {procs} process(es): {:.0} ns per increment, {:.2} M increments/s",
            secs * 1e9 / ops as f64,
            ops as f64 / secs / 1e6
        );
    }
    host.release().expect("release");
    let _ = std::fs::remove_dir_all(&dir);
}
