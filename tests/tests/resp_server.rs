//! kvhost's Redis protocol server with real tools and real peers: the same commands sent to
//! a stock redis-server 7 and to kvhost give the same bytes back (differential test);
//! redis-cli (commands, --pipe, --scan), nc with inline commands, redis-benchmark; keys
//! written over RESP are read through shared memory by Rust and C clients and vice versa;
//! MULTI/EXEC is atomic against local processes; the limits hold.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use kvshm_tests::resp::{frame, redis_cli, tool, Conn, RedisServer, RespHost};
use kvshm_tests::{wait_for, ChildGuard};

fn s(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Commands whose replies are deterministic, run in order on one connection of each server.
fn script() -> Vec<Vec<Vec<u8>>> {
    let lines: &[&[&str]] = &[
        &["PING"],
        &["PING", "hello"],
        &["ECHO", ""],
        &["SELECT", "0"],
        &["SELECT", "x"],
        &["GET", "d:missing"],
        &["SET", "d:k", "v"],
        &["GET", "d:k"],
        &["SET", "d:k", "w", "NX"],
        &["SET", "d:k", "w", "XX", "GET"],
        &["SET", "d:new", "w", "XX"],
        &["SET", "d:new", "w", "NX", "GET"],
        &["SET", "d:k", "v", "EX", "0"],
        &["SET", "d:k", "v", "EX", "-5"],
        &["SET", "d:k", "v", "EX", "x"],
        &["SET", "d:k", "v", "PX", "100", "EX", "10"],
        &["SET", "d:k", "v", "NX", "XX"],
        &["SET", "d:k", "v", "KEEPTTL", "EX", "10"],
        &["SET", "d:k", "v", "BOGUS"],
        &["SET", "d:k"],
        &["SET", "d:ttl", "v", "EX", "1000"],
        &["SET", "d:ttl", "w", "KEEPTTL"],
        &["TTL", "d:ttl"],
        &["SET", "d:ttl", "x"],
        &["TTL", "d:ttl"],
        &["TTL", "d:missing"],
        &["PTTL", "d:missing"],
        &["EXPIRETIME", "d:ttl"],
        &["SET", "d:past", "v", "PXAT", "1"],
        &["EXISTS", "d:past"],
        &["SETNX", "d:nx", "1"],
        &["SETNX", "d:nx", "2"],
        &["GET", "d:nx"],
        &["SETEX", "d:ex", "0", "v"],
        &["SETEX", "d:ex", "100", "v"],
        &["PSETEX", "d:ex", "-1", "v"],
        &["GETSET", "d:ex", "z"],
        &["TTL", "d:ex"],
        &["GETDEL", "d:ex"],
        &["GETDEL", "d:ex"],
        &["SET", "d:gx", "v"],
        &["GETEX", "d:gx", "EX", "100"],
        &["TTL", "d:gx"],
        &["GETEX", "d:gx", "PERSIST"],
        &["TTL", "d:gx"],
        &["GETEX", "d:gx", "EX", "0"],
        &["GETEX", "d:gx", "BAD"],
        &["GETEX", "d:nokey"],
        &["MSET", "d:a", "1", "d:b", "2"],
        &["MSET", "d:a", "1", "d:b"],
        &["MGET", "d:a", "d:b", "d:none"],
        &["MSETNX", "d:a", "9", "d:c", "3"],
        &["MSETNX", "d:c", "3", "d:d", "4"],
        &["MGET", "d:a", "d:c", "d:d"],
        &["INCR", "d:n"],
        &["INCRBY", "d:n", "41"],
        &["DECR", "d:n"],
        &["DECRBY", "d:n", "-10"],
        &["INCRBY", "d:n", "x"],
        &["INCRBY", "d:n", " 1"],
        &["DECRBY", "d:n", "-9223372036854775808"],
        &["SET", "d:big", "9223372036854775807"],
        &["INCR", "d:big"],
        &["SET", "d:small", "-9223372036854775808"],
        &["DECR", "d:small"],
        &["SET", "d:str", "abc"],
        &["INCR", "d:str"],
        &["SET", "d:sp", " 1"],
        &["INCR", "d:sp"],
        &["SET", "d:lead", "01"],
        &["INCR", "d:lead"],
        &["INCRBYFLOAT", "d:f", "10.5"],
        &["INCRBYFLOAT", "d:f", "0.1"],
        &["INCRBYFLOAT", "d:f", "-5"],
        &["INCRBYFLOAT", "d:f", "abc"],
        &["INCRBYFLOAT", "d:str", "1"],
        &["INCRBYFLOAT", "d:f", "inf"],
        &["APPEND", "d:ap", "Hello"],
        &["APPEND", "d:ap", " World"],
        &["STRLEN", "d:ap"],
        &["STRLEN", "d:none"],
        &["GETRANGE", "d:ap", "0", "4"],
        &["GETRANGE", "d:ap", "-5", "-1"],
        &["GETRANGE", "d:ap", "0", "-1"],
        &["GETRANGE", "d:ap", "5", "3"],
        &["GETRANGE", "d:ap", "-1", "-5"],
        &["GETRANGE", "d:ap", "-100", "-50"],
        &["GETRANGE", "d:ap", "100", "200"],
        &["GETRANGE", "d:none", "0", "-1"],
        &["GETRANGE", "d:ap", "x", "1"],
        &["SUBSTR", "d:ap", "0", "1"],
        &["SETRANGE", "d:sr", "5", "hi"],
        &["GET", "d:sr"],
        &["SETRANGE", "d:sr", "0", "HE"],
        &["GET", "d:sr"],
        &["SETRANGE", "d:sr2", "3", ""],
        &["EXISTS", "d:sr2"],
        &["SETRANGE", "d:sr", "-1", "x"],
        &["SETRANGE", "d:sr", "1", ""],
        &["SET", "d:l1", "ohmytext"],
        &["SET", "d:l2", "mynewtext"],
        &["LCS", "d:l1", "d:l2"],
        &["LCS", "d:l1", "d:l2", "LEN"],
        &["DEL", "d:a", "d:b", "d:none", "d:a"],
        &["EXISTS", "d:c", "d:c", "d:none"],
        &["TYPE", "d:c"],
        &["TYPE", "d:none"],
        &["RENAME", "d:none", "d:x"],
        &["RENAME", "d:c", "d:c2"],
        &["GET", "d:c2"],
        &["RENAME", "d:c2", "d:c2"],
        &["RENAMENX", "d:c2", "d:d"],
        &["RENAMENX", "d:c2", "d:c3"],
        &["SET", "d:cp", "v", "EX", "500"],
        &["COPY", "d:cp", "d:cp2"],
        &["COPY", "d:cp", "d:cp2"],
        &["COPY", "d:cp", "d:cp2", "REPLACE"],
        &["TTL", "d:cp2"],
        &["COPY", "d:none", "d:cp3"],
        &["COPY", "d:cp", "d:cp"],
        &["SET", "d:e", "v"],
        &["EXPIRE", "d:e", "100", "XX"],
        &["EXPIRE", "d:e", "100", "GT"],
        &["EXPIRE", "d:e", "100", "NX"],
        &["EXPIRE", "d:e", "50", "NX"],
        &["EXPIRE", "d:e", "50", "GT"],
        &["EXPIRE", "d:e", "200", "GT"],
        &["EXPIRE", "d:e", "300", "LT"],
        &["EXPIRE", "d:e", "100", "LT"],
        &["TTL", "d:e"],
        &["EXPIRE", "d:e", "100", "NX", "XX"],
        &["EXPIRE", "d:e", "100", "GT", "LT"],
        &["EXPIRE", "d:e", "100", "FOO"],
        &["EXPIRE", "d:e", "x"],
        &["PERSIST", "d:e"],
        &["PERSIST", "d:e"],
        &["TTL", "d:e"],
        &["EXPIRE", "d:none", "100"],
        &["PEXPIRE", "d:e", "-1"],
        &["EXISTS", "d:e"],
        &["SET", "d:e", "v"],
        &["EXPIREAT", "d:e", "1"],
        &["EXISTS", "d:e"],
        &["SET", "d:e", "v"],
        &["EXPIRE", "d:e", "9223372036854775807"],
        &["SET", "", "empty key"],
        &["GET", ""],
        &["SET", "d:empty", ""],
        &["GET", "d:empty"],
        &["STRLEN", "d:empty"],
        &["FOOBAR", "a", "b"],
        &["foobar"],
        &["GET"],
        &["GET", "a", "b"],
        &["MULTI"],
        &["SET", "d:m", "1"],
        &["INCR", "d:m"],
        &["GET", "d:m"],
        &["EXEC"],
        &["MULTI"],
        &["SET", "d:m", "x"],
        &["INCR", "d:m"],
        &["GET", "d:m"],
        &["EXEC"],
        &["MULTI"],
        &["SET", "d:m"],
        &["SET", "d:m", "2"],
        &["EXEC"],
        &["GET", "d:m"],
        &["MULTI"],
        &["MSET", "d:m1", "a", "d:m2", "b", "d:m1", "c"],
        &["MGET", "d:m1", "d:m2"],
        &["EXEC"],
        &["MGET", "d:m1", "d:m2"],
        &["MULTI"],
        &["NOSUCHCMD"],
        &["EXEC"],
        &["MULTI"],
        &["MULTI"],
        &["WATCH", "d:m"],
        &["DISCARD"],
        &["EXEC"],
        &["DISCARD"],
        &["WATCH", "d:w"],
        &["SET", "d:w", "1"],
        &["MULTI"],
        &["SET", "d:w", "2"],
        &["EXEC"],
        &["GET", "d:w"],
        &["WATCH", "d:w"],
        &["MULTI"],
        &["SET", "d:w", "3"],
        &["EXEC"],
        &["GET", "d:w"],
        &["WATCH", "d:w"],
        &["UNWATCH"],
        &["SET", "d:w", "4"],
        &["MULTI"],
        &["GET", "d:w"],
        &["EXEC"],
        &["AUTH", "x"],
        &["AUTH", "u", "p"],
        &["HELLO", "4"],
        &["HELLO", "x"],
        &["CLIENT", "SETNAME", "a b"],
        &["CLIENT", "SETNAME", "me"],
        &["CLIENT", "GETNAME"],
        &["CLIENT", "NOSUCH"],
        &["SCAN", "x"],
        &["WAIT", "0", "0"],
        &["DBSIZE"],
        &["FLUSHDB"],
        &["DBSIZE"],
        &["KEYS", "*"],
        &["SCAN", "0"],
        &["RANDOMKEY"],
    ];
    lines
        .iter()
        .map(|l| l.iter().map(|a| a.as_bytes().to_vec()).collect())
        .collect()
}

#[test]
fn replies_are_byte_for_byte_those_of_redis() {
    let host = RespHost::start("resp-diff", &[]);
    let redis = RedisServer::start();
    for proto in ["2", "3"] {
        let mut k = host.conn();
        let mut r = redis.conn();
        // Both switch protocol; the HELLO replies differ (server id, version) by design.
        k.cmds(&["HELLO", proto]);
        r.cmds(&["HELLO", proto]);
        k.cmds(&["FLUSHDB"]);
        r.cmds(&["FLUSHDB"]);
        let mut diffs = Vec::new();
        for cmd in script() {
            let args: Vec<&[u8]> = cmd.iter().map(Vec::as_slice).collect();
            let (a, b) = (k.cmd(&args), r.cmd(&args));
            if a != b {
                diffs.push(format!(
                    "RESP{proto} {:?}\n  redis:  {:?}\n  kvhost: {:?}",
                    args.iter().map(|a| s(a)).collect::<Vec<_>>(),
                    s(&b),
                    s(&a)
                ));
            }
        }
        assert!(
            diffs.is_empty(),
            "{} differences:\n{}",
            diffs.len(),
            diffs.join("\n")
        );
    }
}

#[test]
fn binary_keys_cross_between_resp_and_shared_memory() {
    let host = RespHost::start("resp-binary", &[]);
    let local = host.local();
    let key: Vec<u8> = (0..=255u8).rev().collect();
    let value: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let mut c = host.conn();
    assert_eq!(c.cmd(&[b"SET", &key, &value]), b"+OK\r\n");
    assert_eq!(local.get(&key).unwrap().as_deref(), Some(&value[..]));
    // And the other way: a local write, read over RESP.
    local.put(b"\x00local\r\n", b"\xff\x00bytes").unwrap();
    assert_eq!(
        c.cmd(&[b"GET", b"\x00local\r\n"]),
        b"$7\r\n\xff\x00bytes\r\n"
    );
    // A TTL set over RESP is seen by the local client, and one set locally over RESP.
    c.cmds(&["SET", "ttl", "v", "EX", "100"]);
    assert!(
        matches!(local.ttl(b"ttl").unwrap(), kvshm::Ttl::Remaining(d) if d > Duration::from_secs(98))
    );
    local
        .put_with_ttl(b"ttl2", b"v", Duration::from_secs(50))
        .unwrap();
    let t = c.cmds(&["TTL", "ttl2"]);
    assert!(t == ":50\r\n" || t == ":49\r\n", "{t}");
    // INCR over RESP and incr locally interleave without losing an update.
    for _ in 0..100 {
        c.cmds(&["INCR", "n"]);
        local.incr(b"n", 1).unwrap();
    }
    assert_eq!(c.cmds(&["GET", "n"]), "$3\r\n200\r\n");
}

#[test]
fn a_c_client_reads_what_redis_cli_wrote_and_the_other_way() {
    let host = RespHost::start("resp-c", &[]);
    // The C program: hex in, hex out, through libkvshm.so.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let exe = std::env::current_exe().unwrap();
    let profile = exe.parent().and_then(|p| p.parent()).unwrap();
    let mut b = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    b.args(["build", "--quiet", "-p", "kvshm-ffi"]);
    if profile.file_name().is_some_and(|n| n == "release") {
        b.arg("--release");
    }
    assert!(b.status().unwrap().success());
    let prog = std::env::temp_dir().join(format!("kvshm-resp-peer-{}", std::process::id()));
    let st = Command::new("cc")
        .args(["-std=c99", "-Wall", "-Werror", "-o"])
        .arg(&prog)
        .arg(dir.join("c/resp_peer.c"))
        .arg(format!(
            "-I{}",
            dir.join("../bindings/ffi/include").display()
        ))
        .arg(format!("-L{}", profile.display()))
        .arg(format!("-Wl,-rpath,{}", profile.display()))
        .arg("-lkvshm")
        .status()
        .expect("cc");
    assert!(st.success());
    let run = |args: &[&str]| {
        let o = Command::new(&prog)
            .arg(&host.store.dir)
            .arg(&host.store.name)
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", s(&o.stderr));
        s(&o.stdout).trim().to_string()
    };
    assert_eq!(host.cli(&["SET", "from-cli", "hello world"]).trim(), "OK");
    assert_eq!(run(&["get", "from-cli"]), hex(b"hello world"));
    run(&["put", "from-c", &hex(b"bin\x00\x01")]);
    // redis-cli prints binary safely quoted with --no-raw.
    assert_eq!(
        host.cli(&["--no-raw", "GET", "from-c"]).trim(),
        "\"bin\\x00\\x01\""
    );
    let _ = std::fs::remove_file(&prog);
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn redis_cli_pipe_scan_and_inline_commands_over_nc() {
    let host = RespHost::start("resp-tools", &[]);
    // Mass insertion, as Redis documents it.
    let mut input = Vec::new();
    for i in 0..20_000 {
        input.extend(frame(&[
            b"SET",
            format!("pipe:{i}").as_bytes(),
            format!("v{i}").as_bytes(),
        ]));
    }
    let out = redis_cli(host.port, &["--pipe"], Some(&input));
    assert!(out.contains("errors: 0, replies: 20000"), "{out}");
    let local = host.local();
    assert_eq!(local.len(), 20_000);
    assert_eq!(
        local.get(b"pipe:12345").unwrap().as_deref(),
        Some(&b"v12345"[..])
    );
    // --scan with a pattern returns every matching key once.
    local.put(b"other", b"x").unwrap();
    let scanned = host.cli(&["--scan", "--pattern", "pipe:1*"]);
    let mut keys: Vec<&str> = scanned.lines().collect();
    keys.sort_unstable();
    let n = keys.len();
    keys.dedup();
    let want = (0..20_000)
        .filter(|i| i.to_string().starts_with('1'))
        .count();
    assert_eq!((n, keys.len()), (want, want));
    // Inline commands, as typed into telnet or nc.
    let mut nc = Command::new(tool("nc"))
        .args(["-q", "1", "127.0.0.1", &host.port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("nc");
    nc.stdin
        .take()
        .unwrap()
        .write_all(b"PING\r\nSET greeting \"hello world\"\r\nGET greeting\r\nINCR pipe:1\nQUIT\r\n")
        .unwrap();
    let o = nc.wait_with_output().unwrap();
    assert_eq!(
        s(&o.stdout),
        "+PONG\r\n+OK\r\n$11\r\nhello world\r\n-ERR value is not an integer or out of range\r\n+OK\r\n"
    );
    // And over the Unix socket.
    let o = Command::new(tool("redis-cli"))
        .arg("-s")
        .arg(&host.sock)
        .args(["GET", "greeting"])
        .output()
        .unwrap();
    assert_eq!(s(&o.stdout).trim(), "hello world");
    let mode = std::fs::metadata(&host.sock).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(mode.permissions().mode() & 0o777, 0o600);
}

#[test]
fn redis_benchmark_runs_clean() {
    let host = RespHost::start("resp-bench", &[]);
    let o = Command::new(tool("redis-benchmark"))
        .args([
            "-p",
            &host.port.to_string(),
            "-t",
            "ping,set,get,incr,mset",
            "-n",
            "20000",
            "-r",
            "1000",
            "-c",
            "20",
            "-P",
            "4",
            "-q",
            "--csv",
        ])
        .output()
        .unwrap();
    let out = s(&o.stdout);
    assert!(o.status.success(), "{out}\n{}", s(&o.stderr));
    for t in ["PING_INLINE", "PING_MBULK", "SET", "GET", "INCR", "MSET"] {
        assert!(out.contains(&format!("\"{t}")), "{t} missing in:\n{out}");
    }
    // Every INCR counted: the counters redis-benchmark incremented add up to its requests.
    let local = host.local();
    let mut total = 0u64;
    local
        .scan(b"counter:", |_, v| {
            total += std::str::from_utf8(v).unwrap().parse::<u64>().unwrap();
            true
        })
        .unwrap();
    assert_eq!(total, 20_000);
    assert!(local.get(b"key:__rand_int__").unwrap().is_none());
}

#[test]
fn exec_is_atomic_against_local_processes() {
    let host = RespHost::start("resp-exec", &[]);
    let local = host.local();
    local.put_many(&[(b"a", b"0"), (b"b", b"0")]).unwrap();
    // A local writer keeps a == b, always changing both in one put_many.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (dir, name, stop) = (
            host.store.dir.clone(),
            host.store.name.clone(),
            stop.clone(),
        );
        std::thread::spawn(move || {
            let c = kvshm::Client::open_in(&dir, &name).unwrap();
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                let v = i.to_string();
                c.put_many(&[(b"a", v.as_bytes()), (b"b", v.as_bytes())])
                    .unwrap();
            }
            i
        })
    };
    let mut c = host.conn();
    let mut counted = 0;
    for _ in 0..300 {
        // Reads in EXEC see one state of both keys...
        c.cmds(&["MULTI"]);
        c.cmds(&["GET", "a"]);
        c.cmds(&["GET", "b"]);
        let r = c.cmds(&["EXEC"]);
        let parts: Vec<&str> = r.split("\r\n").collect();
        assert!(
            r.starts_with("*2\r\n") && parts[2] == parts[4],
            "EXEC saw a torn state: {r:?}"
        );
        // ...and an optimistic WATCH loop never loses an increment.
        loop {
            c.cmds(&["WATCH", "ctr"]);
            let v: u64 = c
                .cmds(&["GET", "ctr"])
                .split("\r\n")
                .nth(1)
                .and_then(|x| x.parse().ok())
                .unwrap_or(0);
            c.cmds(&["MULTI"]);
            c.cmds(&["SET", "ctr", &(v + 1).to_string()]);
            if c.cmds(&["EXEC"]).starts_with("*1") {
                counted += 1;
                break;
            }
        }
        local.incr(b"ctr", 1).unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let writes = writer.join().unwrap();
    assert!(writes > 0);
    assert_eq!(
        local.get(b"ctr").unwrap(),
        Some((counted + 300).to_string().into_bytes())
    );
}

#[test]
fn limits_hold_and_bad_clients_do_not_stop_the_server() {
    let host = RespHost::start(
        "resp-limits",
        &[
            "--max-clients",
            "50",
            "--timeout",
            "1s",
            "--max-query-buffer",
            "1KiB",
        ],
    );
    // A query buffer limit below the longest value is raised to fit one: a 900 KB SET works.
    let mut c = host.conn();
    let big = vec![b'v'; 900_000];
    assert_eq!(c.cmd(&[b"SET", b"big", &big]), b"+OK\r\n");
    // A MULTI queue is bounded the same way (here 2 MiB + 64 KiB): past it, an error, and
    // EXEC discards the transaction.
    assert_eq!(c.cmds(&["MULTI"]), "+OK\r\n");
    let mut refused = 0;
    for _ in 0..4 {
        let r = c.cmd(&[b"SET", b"q", &big]);
        if r.starts_with(b"-ERR MULTI queue over --max-query-buffer") {
            refused += 1;
        } else {
            assert_eq!(r, b"+QUEUED\r\n");
        }
    }
    assert_eq!(refused, 2, "two 900 KB commands fit, two do not");
    assert!(c.cmds(&["EXEC"]).starts_with("-EXECABORT"));
    assert_eq!(c.cmds(&["GET", "q"]), "$-1\r\n");
    drop(c);
    // Idle timeout: a silent connection is closed after about a second.
    let mut idle = Conn::tcp(host.port);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(idle.closed(), "idle connection not closed");
    // A 4 GB bulk header: refused, connection closed.
    let mut c = host.conn();
    c.send(b"*2\r\n$3\r\nGET\r\n$4294967296\r\n");
    assert_eq!(c.reply(), b"-ERR Protocol error: invalid bulk length\r\n");
    assert!(c.closed());
    // Garbage.
    let mut c = host.conn();
    c.send(b"*1\r\n:oops\r\n");
    assert_eq!(c.reply(), b"-ERR Protocol error: expected '$', got ':'\r\n");
    // A value over the store's limit (1 MiB by default) is refused as Redis refuses a bulk
    // over proto-max-bulk-len.
    let mut c = host.conn();
    c.send(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2000000\r\n");
    assert_eq!(c.reply(), b"-ERR Protocol error: invalid bulk length\r\n");
    // A half frame, then the client goes away: nothing left behind, server fine.
    let mut c = host.conn();
    c.send(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100\r\nabc");
    drop(c);
    // Max clients: the 51st connection is told so. First the connections closed above must
    // have left: the server sees a close when it next reads the socket (a CI run once found
    // one still counted, and a held connection was refused).
    let mut probe = host.conn();
    wait_for(
        "closed connections to leave",
        Duration::from_secs(10),
        || {
            probe
                .cmds(&["INFO", "clients"])
                .contains("connected_clients:1\r\n")
        },
    );
    let mut held: Vec<Conn> = (0..48).map(|_| host.conn()).collect();
    held.push(probe);
    for h in &mut held {
        assert_eq!(h.cmds(&["PING"]), "+PONG\r\n");
    }
    let mut extra = host.conn();
    assert_eq!(extra.cmds(&["PING"]), "+PONG\r\n");
    let mut over = host.conn();
    assert_eq!(over.reply(), b"-ERR max number of clients reached\r\n");
    drop(held);
    drop(extra);
    drop(over);
    wait_for(
        "closed connections to leave",
        Duration::from_secs(10),
        || host.conn().cmds(&["PING"]) == "+PONG\r\n",
    );
    // A million pipelined PINGs, read while they are sent: all answered, the server's
    // memory stays bounded.
    let mut c = host.conn();
    let mut w = c.writer();
    let sender = std::thread::spawn(move || {
        let batch = b"PING\r\n".repeat(100_000);
        for _ in 0..10 {
            w.write_all(&batch).unwrap();
        }
    });
    for i in 0..1_000_000 {
        let r = c.reply();
        assert_eq!(r, b"+PONG\r\n", "reply {i}");
    }
    sender.join().unwrap();
    let rss_kb: u64 = std::fs::read_to_string(format!("/proc/{}/status", host.child.pid()))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap();
    assert!(rss_kb < 256 * 1024, "kvhost peak RSS {rss_kb} kB");
    // Still serving.
    assert_eq!(host.conn().cmds(&["PING"]), "+PONG\r\n");
}

#[test]
fn auth_and_protected_mode() {
    let host = RespHost::start("resp-auth", &["--requirepass", "s3cret"]);
    let mut c = host.conn();
    assert_eq!(
        c.cmds(&["GET", "k"]),
        "-NOAUTH Authentication required.\r\n"
    );
    assert_eq!(
        c.cmds(&["AUTH", "wrong"]),
        "-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    );
    assert_eq!(c.cmds(&["AUTH", "s3cret"]), "+OK\r\n");
    assert_eq!(c.cmds(&["GET", "k"]), "$-1\r\n");
    let mut c = host.conn();
    let r = c.cmds(&["HELLO", "3", "AUTH", "default", "s3cret", "SETNAME", "x"]);
    assert!(r.starts_with("%7\r\n"), "{r}");
    assert_eq!(c.cmds(&["CLIENT", "GETNAME"]), "$1\r\nx\r\n");
    // redis-cli with -a.
    assert_eq!(
        redis_cli(
            host.port,
            &["--no-auth-warning", "-a", "s3cret", "PING"],
            None
        )
        .trim(),
        "PONG"
    );
    // Protected mode: a non-loopback address without a password is refused at start.
    let store = kvshm_tests::StoreName::new("resp-protected");
    let o = Command::new(kvshm_tests::workspace_bin("kvhost"))
        .args(["--name", &store.name, "--dir"])
        .arg(&store.dir)
        .args(["--resp", "0.0.0.0:0", "--release-on-exit"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(s(&o.stderr).contains("protected mode"), "{}", s(&o.stderr));
    assert!(
        !store.path().exists(),
        "--release-on-exit left the store behind"
    );
}

#[test]
fn shutdown_and_client_kill() {
    let mut host = RespHost::start("resp-admin", &[]);
    let mut victim = host.conn();
    assert_eq!(victim.cmds(&["CLIENT", "SETNAME", "victim"]), "+OK\r\n");
    let id: u64 = victim
        .cmds(&["CLIENT", "ID"])
        .trim_start_matches(':')
        .trim()
        .parse()
        .unwrap();
    let mut admin = host.conn();
    let list = admin.cmds(&["CLIENT", "LIST"]);
    assert!(
        list.contains(&format!("id={id} ")) && list.contains("name=victim"),
        "{list}"
    );
    assert_eq!(
        admin.cmds(&["CLIENT", "KILL", "ID", &id.to_string()]),
        ":1\r\n"
    );
    assert!(victim.closed());
    // INFO parses as Redis's format: sections and key:value lines.
    let info = host.cli(&["INFO"]);
    for k in [
        "redis_version:",
        "connected_clients:",
        "used_memory:",
        "role:master",
        "kvshm_store:",
    ] {
        assert!(info.contains(k), "{k} missing from INFO");
    }
    // COMMAND: enough for client libraries (key positions) and redis-cli (which, given no
    // argument specs by a bare COMMAND DOCS, keeps its own built-in hints).
    let count: usize = admin
        .cmds(&["COMMAND", "COUNT"])
        .trim_start_matches(':')
        .trim()
        .parse()
        .unwrap();
    assert!(count > 60, "{count} commands");
    let info = admin.cmds(&["COMMAND", "INFO", "mset"]);
    assert!(
        info.starts_with("*1\r\n*10\r\n$4\r\nmset\r\n:-3\r\n"),
        "{info}"
    );
    assert!(admin.cmds(&["COMMAND", "DOCS"]).starts_with("-ERR"));
    assert!(admin
        .cmds(&["COMMAND", "DOCS", "get"])
        .starts_with("*2\r\n$3\r\nget\r\n"));
    assert_eq!(
        admin.cmds(&["COMMAND", "GETKEYS", "MSET", "a", "1", "b", "2"]),
        "*2\r\n$1\r\na\r\n$1\r\nb\r\n"
    );
    // SHUTDOWN stops kvhost cleanly.
    admin.send(&frame(&[b"SHUTDOWN", b"NOSAVE"]));
    assert!(admin.closed());
    let st = host.child.wait_limit(Duration::from_secs(10));
    assert!(st.success(), "{st}");
    wait_for("the store to be released", Duration::from_secs(5), || {
        !host.store.path().exists()
    });
}

fn rss_kb(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap()
}

#[test]
fn ten_thousand_idle_connections_cost_little_and_block_nobody() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    const N: usize = 10_000;
    // This test process holds N sockets too.
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let want = N as u64 + 512;
    if soft < want {
        setrlimit(Resource::RLIMIT_NOFILE, want, hard.max(want)).expect(
            "raise this test's open-file limit to 10,512 (run as root or raise ulimit -Hn)",
        );
    }
    // kvhost raises its own soft limit to --max-clients + 128 (within its hard limit, which
    // it inherits from this process).
    let host = RespHost::start("resp-idle", &["--max-clients", "10100"]);
    let before = rss_kb(host.child.pid());
    let conns: Vec<std::net::TcpStream> = (0..N)
        .map(|i| {
            std::net::TcpStream::connect(("127.0.0.1", host.port))
                .unwrap_or_else(|e| panic!("connection {i}: {e}"))
        })
        .collect();
    let mut c = host.conn();
    wait_for(
        "kvhost to register every connection",
        Duration::from_secs(60),
        || {
            let info = c.cmds(&["INFO", "clients"]);
            info.lines()
                .find_map(|l| l.strip_prefix("connected_clients:"))
                .and_then(|n| n.trim().parse::<usize>().ok())
                .is_some_and(|n| n > N)
        },
    );
    // Others are served as before.
    assert_eq!(c.cmds(&["SET", "k", "v"]), "+OK\r\n");
    assert_eq!(c.cmds(&["GET", "k"]), "$1\r\nv\r\n");
    let after = rss_kb(host.child.pid());
    let per_conn = (after.saturating_sub(before) * 1024) / N as u64;
    println!("{N} idle connections: kvhost RSS {before} kB -> {after} kB, {per_conn} bytes each");
    assert!(per_conn < 48 * 1024, "{per_conn} bytes per idle connection");
    drop(conns);
}

#[test]
fn kvhost_serve_fronts_a_store_another_host_hosts() {
    let store = kvshm_tests::StoreName::new("resp-serve");
    let mut host = ChildGuard::new(
        Command::new(kvshm_tests::workspace_bin("kvhost"))
            .args(["--name", &store.name, "--dir"])
            .arg(&store.dir)
            .arg("--release-on-exit")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("the host", Duration::from_secs(30), || {
        kvshm::Client::open_read_only_in(&store.dir, &store.name)
            .is_ok_and(|c| c.stats().host_pid.is_some())
    });
    let port = kvshm_tests::resp::free_port();
    let mut serve = ChildGuard::new(
        Command::new(kvshm_tests::workspace_bin("kvhost"))
            .args(["serve", "--name", &store.name, "--dir"])
            .arg(&store.dir)
            .args(["--resp", &format!("127.0.0.1:{port}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("kvhost serve to listen", Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let mut c = Conn::tcp(port);
    assert_eq!(c.cmds(&["SET", "via-serve", "1"]), "+OK\r\n");
    let local = kvshm::Client::open_in(&store.dir, &store.name).unwrap();
    assert_eq!(local.get(b"via-serve").unwrap().as_deref(), Some(&b"1"[..]));
    // Stopping the server leaves the store and its host as they were.
    kvshm_tests::signal(&serve, 15);
    assert!(serve.wait_limit(Duration::from_secs(10)).success());
    assert_eq!(local.get(b"via-serve").unwrap().as_deref(), Some(&b"1"[..]));
    assert!(
        host.child.try_wait().unwrap().is_none(),
        "the host stopped too"
    );
    // Serving a store that does not exist is an error, not a new store.
    let o = Command::new(kvshm_tests::workspace_bin("kvhost"))
        .args([
            "serve",
            "--name",
            "no-such-store-for-serve",
            "--resp",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(8), "{}", s(&o.stderr));
}

/// A cache over RESP: `--max-size 8MiB`, redis-benchmark SETs 1 KB values to 100,000 random
/// keys (100 MB). Without eviction the server answers Redis's -OOM; after `CONFIG SET
/// maxmemory-policy allkeys-lru` every SET succeeds, INFO and CONFIG GET report the policy
/// and the evictions, and local processes see the same policy.
#[test]
fn a_full_store_answers_oom_then_evicts_after_config_set() {
    let host = RespHost::start("resp-evict", &["--max-size", "8MiB"]);
    assert_eq!(
        host.cli(&["CONFIG", "GET", "maxmemory-policy"]).trim(),
        "maxmemory-policy\nnoeviction"
    );
    let bench = |n: &str| {
        let o = Command::new(tool("redis-benchmark"))
            .args(["-p", &host.port.to_string(), "-t", "set", "-n", n])
            .args(["-r", "100000", "-d", "1000", "-c", "8", "-P", "8", "-q"])
            .output()
            .unwrap();
        (o.status.success(), s(&o.stdout) + &s(&o.stderr))
    };
    // redis-benchmark stops at the first error reply and prints it.
    let (_, out) = bench("60000");
    assert!(out.contains("OOM"), "no OOM from a full store: {out}");
    let kb = "x".repeat(1000);
    let r = host.cli(&["SET", "one-more", &kb]);
    assert!(
        r.contains("OOM command not allowed"),
        "SET into a full store: {r}"
    );
    assert!(host
        .cli(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lfu"])
        .starts_with("ERR CONFIG SET failed"));
    assert_eq!(
        host.cli(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"])
            .trim(),
        "OK"
    );
    assert_eq!(host.local().eviction(), kvshm::Policy::AllKeysLru);
    let (ok, out) = bench("60000");
    assert!(ok && !out.contains("OOM") && !out.contains("ERR"), "{out}");
    assert_eq!(host.cli(&["SET", "one-more", &kb]).trim(), "OK");
    let info = host.cli(&["INFO"]);
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .unwrap_or_else(|| panic!("{name} missing in INFO"))
            .trim()
            .to_string()
    };
    assert_eq!(field("maxmemory_policy"), "allkeys-lru");
    let evicted: u64 = field("evicted_keys").parse().unwrap();
    assert!(evicted > 1000, "evicted_keys {evicted}");
    assert_eq!(evicted, host.local().evicted());
    let st = host.local().stats();
    assert!(st.committed_bytes <= st.max_bytes);
    assert_eq!(
        host.local().verify().unwrap().problems,
        Vec::<String>::new()
    );
}
