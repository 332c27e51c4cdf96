//! Replication through Redis's protocol (issue 18): a kvhost primary whose store keeps a change
//! log, replicated to a stock `redis-server --replicaof`. Writes come from local processes
//! through shared memory and from RESP clients; the replica must end up with exactly the
//! primary's keys, values (binary) and expiry times.

use std::collections::BTreeMap;
use std::time::Duration;

use kvshm_tests::resp::{bulk_value, info_field, RedisServer, RespHost};
use kvshm_tests::wait_for;

const LIMIT: Duration = Duration::from_secs(30);

fn primary(tag: &str, changelog: &str) -> RespHost {
    RespHost::start(tag, &["--changelog", changelog, "--stripes", "64"])
}

fn replica_of(p: &RespHost) -> RedisServer {
    let r = RedisServer::start_with(&["--replicaof", "127.0.0.1", &p.port.to_string()]);
    wait_for("the replica's link to come up", LIMIT, || {
        r.info_field("replication", "master_link_status").as_deref() == Some("up")
    });
    r
}

/// Every key of the primary's store with its value and expiry (through shared memory).
fn primary_keys(p: &RespHost) -> BTreeMap<Vec<u8>, (Vec<u8>, u64)> {
    let c = p.local();
    let mut m = BTreeMap::new();
    for s in 0..c.stripes() {
        c.scan_stripe(s, |k, v, exp| {
            m.insert(k.to_vec(), (v.to_vec(), exp));
        })
        .unwrap();
    }
    m
}

/// The replica holds exactly the primary's keys and values, and a TTL where the primary has
/// one (within the time this check takes).
fn assert_replica_matches(p: &RespHost, r: &RedisServer) {
    let want = primary_keys(p);
    let mut rc = r.conn();
    let dbsize = String::from_utf8_lossy(&rc.cmd(&[b"DBSIZE"])).into_owned();
    assert_eq!(dbsize.trim(), format!(":{}", want.len()), "replica DBSIZE");
    let mut wrong = Vec::new();
    for (k, (v, exp)) in &want {
        let got = bulk_value(&rc.cmd(&[b"GET", k]));
        if got.as_ref() != Some(v) {
            wrong.push(String::from_utf8_lossy(k).into_owned());
            continue;
        }
        let pexp = String::from_utf8_lossy(&rc.cmd(&[b"PEXPIRETIME", k])).into_owned();
        let pexp: i64 = pexp.trim().trim_start_matches(':').parse().unwrap();
        if *exp == 0 {
            assert_eq!(
                pexp,
                -1,
                "{} has no TTL on the primary",
                String::from_utf8_lossy(k)
            );
        } else {
            assert_eq!(
                pexp,
                *exp as i64,
                "{}: expiry time",
                String::from_utf8_lossy(k)
            );
        }
    }
    assert!(
        wrong.is_empty(),
        "keys differing on the replica: {:?}",
        &wrong[..wrong.len().min(5)]
    );
}

fn wait_caught_up(p: &RespHost, r: &RedisServer) {
    let mut pc = p.conn();
    // WAIT covers every write committed before it, by any process.
    let acked = pc.cmds(&["WAIT", "1", "20000"]);
    assert_eq!(acked.trim(), ":1", "WAIT");
    let off = info_field(&p.cli(&["info", "replication"]), "master_repl_offset").unwrap();
    wait_for("the replica's offset", LIMIT, || {
        r.info_field("replication", "slave_repl_offset").as_deref() == Some(off.as_str())
    });
}

fn binary(i: u32) -> Vec<u8> {
    (0..(i % 300) + 1)
        .map(|j| (i.wrapping_mul(31) + j * 7) as u8)
        .collect()
}

#[test]
fn a_stock_redis_replica_gets_every_write_of_every_process() {
    let p = primary("repl-redis", "16MiB");
    let local = p.local();
    // Before the replica exists: goes over in the full sync (RDB).
    for i in 0..500u32 {
        local
            .put(format!("pre-{i}").as_bytes(), &binary(i))
            .unwrap();
    }
    for i in 0..20u32 {
        local
            .put_with_ttl(
                format!("ttl-{i}").as_bytes(),
                b"t",
                Duration::from_secs(300),
            )
            .unwrap();
    }
    local
        .put(b"bin\x00\xff\r\nkey", b"\x00\x01\r\n$-1\r\n")
        .unwrap();
    p.cli(&["set", "resp-pre", "1"]);
    let r = replica_of(&p);
    assert_eq!(
        r.info_field("replication", "role").as_deref(),
        Some("slave")
    );
    // After: goes over in the stream, from both kinds of writer.
    for i in 0..300u32 {
        local
            .put(format!("post-{i}").as_bytes(), &binary(i + 7))
            .unwrap();
    }
    for i in 0..100u32 {
        assert!(local.remove(format!("pre-{i}").as_bytes()).unwrap());
    }
    for _ in 0..25 {
        local.incr(b"counter", 4).unwrap();
    }
    local
        .put_many(&[
            (&b"many-a"[..], &b"1"[..]),
            (b"many-b", b"2"),
            (b"many-c", b"3"),
        ])
        .unwrap();
    local.expire(b"post-1", Duration::from_secs(500)).unwrap();
    local.remove_many(&[&b"pre-100"[..], b"pre-101"]).unwrap();
    p.cli(&["mset", "resp-a", "x", "resp-b", "y"]);
    p.cli(&["set", "resp-ttl", "z", "PX", "400000"]);
    p.cli(&["del", "resp-pre"]);
    p.cli(&["incrby", "counter", "1000"]);
    wait_caught_up(&p, &r);
    assert_replica_matches(&p, &r);
    let mut rc = r.conn();
    assert_eq!(
        bulk_value(&rc.cmd(&[b"GET", b"counter"])),
        Some(b"1100".to_vec())
    );
    // The replica is read-only for its own clients (Redis's replica-read-only).
    assert!(rc.cmds(&["SET", "x", "1"]).starts_with("-READONLY"));
    // ROLE and INFO of the primary list it.
    let role = p.cli(&["role"]);
    assert!(role.starts_with("master\n"), "{role}");
    let info = p.cli(&["info", "replication"]);
    assert_eq!(info_field(&info, "connected_slaves").as_deref(), Some("1"));
    assert!(
        info.contains(&format!("port={},state=online", r.port)),
        "{info}"
    );
}

#[test]
fn a_replica_that_reconnects_gets_only_what_it_missed_and_a_gap_means_a_full_sync() {
    // A small log: a transaction over half of it cannot be logged, the stream has a gap.
    let p = primary("repl-resync", "256KiB");
    let local = p.local();
    for i in 0..200u32 {
        local.put(format!("k{i}").as_bytes(), &binary(i)).unwrap();
    }
    let r = replica_of(&p);
    wait_caught_up(&p, &r);
    // The replica's link drops; writes go on; it reconnects with PSYNC and continues.
    assert!(redis_cli_ok(r.port, &["client", "kill", "type", "master"]));
    for i in 0..200u32 {
        local
            .put(format!("k{i}").as_bytes(), &binary(i + 1))
            .unwrap();
    }
    wait_for("the replica to reconnect", LIMIT, || {
        r.info_field("replication", "master_link_status").as_deref() == Some("up")
    });
    wait_caught_up(&p, &r);
    assert_replica_matches(&p, &r);
    let log = std::fs::read_to_string(&p.log).unwrap();
    assert!(
        log.contains("partial resync from offset"),
        "no partial resync in the log"
    );
    assert_eq!(log.matches("full resync at offset").count(), 1);
    // A put_many of ~200 KB does not fit half of a 256 KiB log: the stream restarts and the
    // replica is synced in full again, with the big transaction in its RDB.
    let big: Vec<(Vec<u8>, Vec<u8>)> = (0..200u32)
        .map(|i| (format!("big-{i}").into_bytes(), vec![(i % 251) as u8; 1000]))
        .collect();
    local.put_many(&big).unwrap();
    local.put(b"after-gap", b"1").unwrap();
    wait_for("a second full resync", LIMIT, || {
        std::fs::read_to_string(&p.log)
            .unwrap()
            .matches("full resync at offset")
            .count()
            == 2
    });
    wait_for("the replica's link to come up again", LIMIT, || {
        r.info_field("replication", "master_link_status").as_deref() == Some("up")
    });
    wait_caught_up(&p, &r);
    assert_replica_matches(&p, &r);
    assert!(std::fs::read_to_string(&p.log)
        .unwrap()
        .contains("too big for the change log"));
}

fn redis_cli_ok(port: u16, args: &[&str]) -> bool {
    !kvshm_tests::resp::redis_cli(port, args, None)
        .trim()
        .is_empty()
}

/// PSYNC's offset comes from the network: the extremes of an i64 get a full resync.
#[test]
fn psync_with_extreme_offsets_gets_a_full_resync() {
    let p = primary("repl-psync-edge", "1MiB");
    for off in ["-9223372036854775808", "9223372036854775807", "0"] {
        let mut c = p.conn();
        c.send(&kvshm_tests::resp::frame(&[b"PSYNC", b"?", off.as_bytes()]));
        let r = c.reply();
        assert!(
            String::from_utf8_lossy(&r).starts_with("+FULLRESYNC "),
            "PSYNC ? {off}: {r:?}"
        );
    }
    assert_eq!(p.cli(&["ping"]).trim(), "PONG");
}

#[test]
fn a_store_without_a_change_log_refuses_psync_clearly() {
    let p = RespHost::start("repl-none", &["--stripes", "16"]);
    let mut c = p.conn();
    let r = c.cmds(&["PSYNC", "?", "-1"]);
    assert!(r.contains("--changelog"), "{r}");
    assert_eq!(c.cmds(&["WAIT", "0", "0"]).trim(), ":0");
}

fn link_up(h: &RespHost) -> bool {
    info_field(&h.cli(&["info", "replication"]), "master_link_status").as_deref() == Some("up")
}

fn kv_replica_flags(primary_port: u16) -> Vec<String> {
    ["--changelog", "16MiB", "--stripes", "64", "--replica-of"]
        .iter()
        .map(|s| s.to_string())
        .chain([format!("127.0.0.1:{primary_port}")])
        .collect()
}

fn as_strs(v: &[String]) -> Vec<&str> {
    v.iter().map(|s| s.as_str()).collect()
}

/// WAIT on `p` for one replica, then until `r`'s store equals `p`'s.
fn wait_same(p: &RespHost, r: &RespHost) {
    assert_eq!(p.conn().cmds(&["WAIT", "1", "20000"]).trim(), ":1", "WAIT");
    wait_for("the replica's store to equal the primary's", LIMIT, || {
        primary_keys(p) == primary_keys(r)
    });
}

#[test]
fn a_kvhost_replica_follows_is_read_only_and_takes_over_after_the_primary_is_killed() {
    let mut p = primary("repl-kv-p", "16MiB");
    let pl = p.local();
    for i in 0..300u32 {
        pl.put(format!("pre-{i}").as_bytes(), &binary(i)).unwrap();
    }
    pl.put_with_ttl(b"ttl", b"t", Duration::from_secs(600))
        .unwrap();
    let r = RespHost::start("repl-kv-r", &as_strs(&kv_replica_flags(p.port)));
    wait_for("the kvhost replica's link", LIMIT, || link_up(&r));
    for i in 0..300u32 {
        pl.put(format!("post-{i}").as_bytes(), &binary(i + 3))
            .unwrap();
    }
    pl.remove(b"pre-0").unwrap();
    pl.incr(b"n", 42).unwrap();
    wait_same(&p, &r);
    // Keys, values and expiry times are the same, read through shared memory on both sides.
    let rl = r.local();
    assert_eq!(rl.get(b"n").unwrap().as_deref(), Some(&b"42"[..]));
    // Read-only for everybody but the link: local processes and RESP clients.
    assert!(matches!(rl.put(b"x", b"1"), Err(kvshm::Error::ReadOnly)));
    assert!(r.conn().cmds(&["SET", "x", "1"]).starts_with("-READONLY"));
    let role = r.cli(&["role"]);
    assert!(role.starts_with("slave\n127.0.0.1\n"), "{role}");
    // `kvhost status` tells from the store alone (no server asked).
    let status = |h: &RespHost| {
        let o = std::process::Command::new(kvshm_tests::workspace_bin("kvhost"))
            .args(["status", &h.store.name, "--dir"])
            .arg(&h.store.dir)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let st = status(&r);
    assert!(
        st.contains("role:     replica (read-only for local writers), holding "),
        "{st}"
    );
    assert!(st.contains("log:      change log of 16.0 MiB"), "{st}");
    assert!(status(&p).contains("role:     primary (writable)"));

    // The primary is killed while a local process writes; every write it saw acknowledged by
    // WAIT is on the replica, and what is missing is at most what came after the last WAIT.
    let mut acked = 0u32;
    let mut waited = 0u32;
    let mut pc = p.conn();
    for i in 0..2000u32 {
        pl.put(format!("load-{i}").as_bytes(), &binary(i)).unwrap();
        acked = i + 1;
        if i % 100 == 99 {
            assert_eq!(pc.cmds(&["WAIT", "1", "20000"]).trim(), ":1");
            waited = i + 1;
        }
        if i == 1234 {
            p.kill9();
            break;
        }
    }
    drop(pc);
    wait_for("the replica to see its primary gone", LIMIT, || {
        !link_up(&r)
    });
    assert_eq!(r.cli(&["replicaof", "no", "one"]).trim(), "OK");
    let missing: Vec<u32> = (0..acked)
        .filter(|i| rl.get(format!("load-{i}").as_bytes()).unwrap().is_none())
        .collect();
    assert!(
        missing.iter().all(|&i| i >= waited),
        "writes acknowledged by WAIT lost: {:?}",
        &missing[..missing.len().min(5)]
    );
    eprintln!(
        "failover: {acked} writes acknowledged, {waited} of them by WAIT, {} missing on the promoted replica",
        missing.len()
    );
    // The promoted replica is a writable primary now, for local processes and RESP.
    rl.put(b"after-failover", b"1").unwrap();
    assert_eq!(r.conn().cmds(&["SET", "via-resp", "2"]).trim(), "+OK");
    assert!(r.cli(&["role"]).starts_with("master\n"));

    // The old primary comes back as a replica of the new one: its store (with writes the
    // new primary never got) becomes an exact copy again.
    let flags = kv_replica_flags(r.port);
    p.restart(&as_strs(&flags));
    wait_for("the old primary to follow the new one", LIMIT, || {
        link_up(&p)
    });
    wait_same(&r, &p);
    assert_eq!(
        p.local().get(b"after-failover").unwrap().as_deref(),
        Some(&b"1"[..])
    );
    // A restart of the replica keeps its data and it catches up again, from where its store
    // stood (recorded in the store: a partial resync, not a full one).
    let fulls = |h: &RespHost| {
        std::fs::read_to_string(&h.log)
            .unwrap()
            .matches("full resync at offset")
            .count()
    };
    let partials = |h: &RespHost| {
        std::fs::read_to_string(&h.log)
            .unwrap()
            .matches("partial resync from offset")
            .count()
    };
    let (f0, p0) = (fulls(&r), partials(&r));
    r.local().put(b"while-restarting", b"3").unwrap();
    p.restart(&as_strs(&flags));
    wait_for("the replica's link after its restart", LIMIT, || {
        link_up(&p)
    });
    wait_same(&r, &p);
    assert_eq!(fulls(&r), f0, "a restarted replica was sent a full sync");
    assert_eq!(
        partials(&r),
        p0 + 1,
        "no partial resync after the replica's restart"
    );
    // Killed (-9) while writes go on: it resumes from what it had recorded.
    for i in 0..500u32 {
        r.local()
            .put(format!("during-{i}").as_bytes(), b"x")
            .unwrap();
        if i == 250 {
            p.kill9();
        }
    }
    p.restart(&as_strs(&flags));
    wait_for("the replica's link after a kill", LIMIT, || link_up(&p));
    wait_same(&r, &p);
    assert_eq!(fulls(&r), f0, "a killed replica was sent a full sync");
}

/// A Redis Sentinel (`redis-server --sentinel`) on a free loopback port, monitoring `port`.
///
/// `down-after-milliseconds` is 3000, not less: after a failover Sentinel opens new links to
/// the promoted master and counts its down time from the switch, and on a loaded machine
/// those links have come up more than a second late (CI, and 1 of 16 loops here): with 1000
/// it declared the new master down at once and failed back to the restarted old primary.
/// Its log is printed when a test fails.
struct Sentinel {
    child: kvshm_tests::ChildGuard,
    port: u16,
    dir: std::path::PathBuf,
}

impl Sentinel {
    fn start(master_port: u16) -> Sentinel {
        let port = kvshm_tests::resp::free_port();
        let dir =
            std::env::temp_dir().join(format!("kvshm-sentinel-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\nlogfile {}\nsentinel monitor mk 127.0.0.1 {master_port} 1\n\
                 sentinel down-after-milliseconds mk 3000\nsentinel failover-timeout mk 5000\n\
                 sentinel parallel-syncs mk 1\n",
                dir.display(),
                dir.join("sentinel.log").display()
            ),
        )
        .unwrap();
        let mut c = std::process::Command::new(kvshm_tests::resp::tool("redis-server"));
        c.arg(&conf)
            .arg("--sentinel")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let child = kvshm_tests::ChildGuard::new(c.spawn().expect("start redis-server --sentinel"));
        Sentinel { child, port, dir }
    }

    fn cli(&self, args: &[&str]) -> String {
        kvshm_tests::resp::redis_cli(self.port, args, None)
    }

    fn master(&self) -> String {
        self.cli(&["sentinel", "get-master-addr-by-name", "mk"])
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(":")
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        self.child.kill();
        if std::thread::panicking() {
            kvshm_tests::print_tail("Sentinel", &self.dir.join("sentinel.log"), 60);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn redis_sentinel_fails_over_from_a_killed_kvhost_primary_to_its_kvhost_replica() {
    let mut p = primary("repl-sent-p", "16MiB");
    let r = RespHost::start("repl-sent-r", &as_strs(&kv_replica_flags(p.port)));
    wait_for("the replica's link", LIMIT, || link_up(&r));
    let s = Sentinel::start(p.port);
    // Sentinel finds the replica through the primary's INFO and talks to both (commands and
    // its hello channel): both healthy, not "disconnected".
    wait_for("Sentinel to see the replica", LIMIT, || {
        let reps = s.cli(&["sentinel", "replicas", "mk"]);
        reps.contains(&format!("127.0.0.1:{}", r.port))
            && reps.lines().any(|l| l == "slave")
            && !reps.contains("disconnected")
    });
    let pl = p.local();
    for i in 0..100u32 {
        pl.put(format!("k{i}").as_bytes(), &binary(i)).unwrap();
    }
    assert_eq!(p.conn().cmds(&["WAIT", "1", "20000"]).trim(), ":1");
    p.kill9();
    wait_for(
        "Sentinel to promote the kvhost replica",
        Duration::from_secs(60),
        || s.master() == format!("127.0.0.1:{}", r.port),
    );
    wait_for("the promoted replica to be a master", LIMIT, || {
        r.cli(&["role"]).starts_with("master\n")
    });
    let rl = r.local();
    for i in 0..100u32 {
        assert_eq!(rl.get(format!("k{i}").as_bytes()).unwrap(), Some(binary(i)));
    }
    rl.put(b"after-failover", b"1").unwrap();
    // The old primary comes back as a plain kvhost; Sentinel turns it into a replica of the
    // new primary, which sends it everything.
    p.restart(&["--changelog", "16MiB", "--stripes", "64"]);
    wait_for(
        "Sentinel to convert the old primary",
        Duration::from_secs(60),
        || link_up(&p),
    );
    wait_same(&r, &p);
}

/// Reads one RESP command (a multibulk) from a replica, as text.
fn read_command(r: &mut std::io::BufReader<std::net::TcpStream>) -> Vec<String> {
    use std::io::{BufRead, Read};
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let n: usize = line
        .trim()
        .trim_start_matches('*')
        .parse()
        .unwrap_or_else(|_| panic!("{line:?}"));
    (0..n)
        .map(|_| {
            let mut h = String::new();
            r.read_line(&mut h).unwrap();
            let len: usize = h.trim().trim_start_matches('$').parse().unwrap();
            let mut b = vec![0u8; len + 2];
            r.read_exact(&mut b).unwrap();
            String::from_utf8_lossy(&b[..len]).into_owned()
        })
        .collect()
}

/// A scripted primary: answers a replica's handshake and returns its PSYNC arguments.
fn handshake(
    l: &std::net::TcpListener,
) -> (
    std::io::BufReader<std::net::TcpStream>,
    std::net::TcpStream,
    Vec<String>,
) {
    use std::io::Write;
    // Never an endless wait: a replica that does not come back fails the test.
    l.set_nonblocking(true).unwrap();
    let t = std::time::Instant::now();
    let s = loop {
        match l.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(t.elapsed() < LIMIT, "the replica did not connect again");
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("accept: {e}"),
        }
    };
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = std::io::BufReader::new(s);
    loop {
        let c = read_command(&mut r);
        match c[0].to_ascii_lowercase().as_str() {
            "ping" => w.write_all(b"+PONG\r\n").unwrap(),
            "replconf" => w.write_all(b"+OK\r\n").unwrap(),
            "psync" => return (r, w, c),
            other => panic!("unexpected {other} in the handshake"),
        }
    }
}

/// A kvhost replica of a primary this test scripts itself: the listener the replica connects
/// to, and the replica.
fn scripted_replica(tag: &str) -> (std::net::TcpListener, RespHost) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let r = RespHost::start(
        tag,
        &[
            "--changelog",
            "1MiB",
            "--stripes",
            "16",
            "--replica-of",
            &format!("127.0.0.1:{port}"),
        ],
    );
    (l, r)
}

/// A replica whose link drops inside a MULTI block resumes from before the MULTI: the
/// transaction is neither lost nor half applied (the offset it asks to continue from counts
/// only what it applied).
#[test]
fn a_replica_resumes_before_a_transaction_its_link_lost_halfway() {
    use std::io::Write;
    let (l, r) = scripted_replica("repl-multi");
    let id = "a".repeat(40);
    // First connection: a full sync of an empty RDB at offset 100, then half a transaction.
    let (_r1, mut w1, psync) = handshake(&l);
    assert_eq!(psync[1..], ["?", "-1"]);
    let mut rdb = b"REDIS0009\xfe\x00\xff".to_vec();
    rdb.extend_from_slice(&[0; 8]); // no checksum
    w1.write_all(format!("+FULLRESYNC {id} 100\r\n${}\r\n", rdb.len()).as_bytes())
        .unwrap();
    w1.write_all(&rdb).unwrap();
    let set_a = b"*3\r\n$3\r\nSET\r\n$1\r\na\r\n$1\r\n1\r\n";
    let set_b = b"*3\r\n$3\r\nSET\r\n$1\r\nb\r\n$1\r\n2\r\n";
    let multi = b"*1\r\n$5\r\nMULTI\r\n";
    let exec = b"*1\r\n$4\r\nEXEC\r\n";
    w1.write_all(set_a).unwrap();
    w1.write_all(multi).unwrap();
    w1.write_all(set_b).unwrap();
    // Give the replica time to read all of it, then drop the link mid-transaction.
    wait_for("the first write applied", LIMIT, || {
        r.local().get(b"a").unwrap().is_some()
    });
    std::thread::sleep(Duration::from_millis(300));
    drop(w1);
    drop(_r1);
    // It comes back asking for the byte after SET a: not after the MULTI's part.
    let (_r2, mut w2, psync) = handshake(&l);
    assert_eq!(psync[1], id);
    assert_eq!(
        psync[2],
        (100 + set_a.len() + 1).to_string(),
        "the replica resumes after what it applied"
    );
    assert_eq!(
        r.local().get(b"b").unwrap(),
        None,
        "half a transaction applied"
    );
    w2.write_all(format!("+CONTINUE {id}\r\n").as_bytes())
        .unwrap();
    w2.write_all(multi).unwrap();
    w2.write_all(set_b).unwrap();
    w2.write_all(exec).unwrap();
    wait_for("the transaction applied", LIMIT, || {
        r.local().get(b"b").unwrap().is_some()
    });
    let want = 100 + set_a.len() + multi.len() + set_b.len() + exec.len();
    wait_for("the replica's offset", LIMIT, || {
        info_field(&r.cli(&["info", "replication"]), "slave_repl_offset") == Some(want.to_string())
    });
}

/// A primary that sends garbage (a huge RDB length, an unknown command, a bulk longer than
/// the store's limits, an endless line) never takes the replica down or makes it buffer
/// without bound: each breaks the link with an error, and the replica connects again and
/// follows a good stream afterwards.
#[test]
fn a_replica_fed_garbage_by_its_primary_drops_the_link_and_recovers() {
    use std::io::Write;
    let (l, r) = scripted_replica("repl-garbage");
    let id = "b".repeat(40);
    let mut empty_rdb = b"REDIS0009\xfe\x00\xff".to_vec();
    empty_rdb.extend_from_slice(&[0; 8]);
    // 1. An RDB length far beyond the store: refused before anything is allocated.
    let (_r1, mut w1, _) = handshake(&l);
    w1.write_all(format!("+FULLRESYNC {id} 0\r\n$99999999999999\r\n").as_bytes())
        .unwrap();
    // 2. A good sync, then a command no primary sends.
    let (_r2, mut w2, _) = handshake(&l);
    w2.write_all(format!("+FULLRESYNC {id} 0\r\n${}\r\n", empty_rdb.len()).as_bytes())
        .unwrap();
    w2.write_all(&empty_rdb).unwrap();
    w2.write_all(b"\x00garbage \xff\xfe\r\n").unwrap();
    // 3. A bulk longer than the store's longest key or value.
    let (_r3, mut w3, psync) = handshake(&l);
    assert_eq!(
        psync[1..],
        [id.clone(), "1".into()],
        "it resumes at offset 0"
    );
    w3.write_all(
        format!("+CONTINUE {id}\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$999999999\r\n").as_bytes(),
    )
    .unwrap();
    // 4. A reply line that never ends.
    let (_r4, mut w4, _) = handshake(&l);
    let _ = w4.write_all(&vec![b'x'; 200 << 10]);
    // 5. A time that overflows when made absolute (EX of u64::MAX seconds).
    let (_r5, mut w5, _) = handshake(&l);
    w5.write_all(
        format!("+CONTINUE {id}\r\n*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n$2\r\nEX\r\n$20\r\n18446744073709551615\r\n")
            .as_bytes(),
    )
    .unwrap();
    // 6. A good stream: applied.
    let (_r6, mut w5, psync) = handshake(&l);
    assert_eq!(psync[1..], [id.clone(), "1".into()]);
    w5.write_all(
        format!("+CONTINUE {id}\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\nok\r\n").as_bytes(),
    )
    .unwrap();
    wait_for("the good write applied", LIMIT, || {
        r.local().get(b"k").unwrap().as_deref() == Some(&b"ok"[..])
    });
    assert_eq!(r.cli(&["ping"]).trim(), "PONG");
    let log = std::fs::read_to_string(&r.log).unwrap();
    for what in [
        "more than this store can hold",
        "in the stream is not supported",
        "bad stream from the primary",
        "a reply line of the primary over",
    ] {
        assert!(log.contains(what), "no {what:?} in the replica's log");
    }
}
