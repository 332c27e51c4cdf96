//! Helpers for the RESP server's tests: a kvhost serving RESP on a free loopback port, a
//! stock redis-server beside it (the reference for differential tests), and a minimal raw
//! RESP client that returns reply bytes exactly as the server sent them.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{workspace_bin, ChildGuard, StoreName};

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The path of a tool the test needs; a missing one fails the test with how to get it
/// (`scripts/test-all.sh` installs them).
pub fn tool(name: &str) -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = PathBuf::from(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("{name} is not installed: run `bash ci/install-deps.sh` (apt-get install redis-server redis-tools netcat-openbsd)");
}

fn wait_port(port: u16, child: &mut ChildGuard, what: &str) {
    if let Err(e) = try_wait_port(port, child, what) {
        panic!("{e}");
    }
}

/// [`wait_port`], with a server that exited before listening as an `Err` (e.g. it lost its
/// port to another test between [`free_port`] and its bind).
fn try_wait_port(port: u16, child: &mut ChildGuard, what: &str) -> Result<(), String> {
    let t = Instant::now();
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if let Ok(Some(st)) = child.child.try_wait() {
            return Err(format!("{what} exited before listening: {st}"));
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "{what} does not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Run `start` (a server on ports picked by [`free_port`]) up to three times while it fails:
/// another test may take a picked port before the server binds it, and the server exits.
/// Panics with the last error.
pub fn on_free_ports<T>(mut start: impl FnMut() -> Result<T, String>) -> T {
    let mut last = String::new();
    for _ in 0..3 {
        match start() {
            Ok(t) => return t,
            Err(e) => last = e,
        }
    }
    panic!("{last}");
}

/// A kvhost hosting its own store with RESP on a loopback port (and a Unix socket).
#[derive(Debug)]
pub struct RespHost {
    /// The store (removed on drop).
    pub store: StoreName,
    /// The host process (killed on drop).
    pub child: ChildGuard,
    /// TCP port.
    pub port: u16,
    /// Unix socket path.
    pub sock: PathBuf,
    /// Log file.
    pub log: PathBuf,
}

impl RespHost {
    /// Start one; `extra` are more kvhost flags. A kvhost that exits before it listens (its
    /// free port taken by another test meanwhile) is started again on another port, twice.
    pub fn start(tag: &str, extra: &[&str]) -> RespHost {
        on_free_ports(|| RespHost::try_start(tag, extra))
    }

    /// [`RespHost::start`] once: `Err` (with the end of kvhost's log) if it exited before
    /// listening.
    pub fn try_start(tag: &str, extra: &[&str]) -> Result<RespHost, String> {
        let store = StoreName::new(tag);
        let port = free_port();
        let sock = std::env::temp_dir().join(format!("{}.sock", store.name));
        let log = std::env::temp_dir().join(format!("{}.log", store.name));
        let mut child = RespHost::command(&store, port, &sock, &log, extra);
        if let Err(e) = try_wait_port(port, &mut child, "kvhost") {
            return Err(format!("{e}; its log ends: {:?}", crate::log_tail(&log, 5)));
        }
        Ok(RespHost {
            store,
            child,
            port,
            sock,
            log,
        })
    }

    /// Kill this kvhost with SIGKILL (the store stays, as after a crash).
    pub fn kill9(&mut self) {
        let _ = self.child.child.kill();
        let _ = self.child.child.wait();
    }

    /// Start kvhost again on the same store, port and log, with `extra` flags.
    pub fn restart(&mut self, extra: &[&str]) {
        self.kill9();
        self.child = RespHost::command(&self.store, self.port, &self.sock, &self.log, extra);
        wait_port(self.port, &mut self.child, "kvhost");
    }

    /// kvhost started with these settings (not waited for).
    fn command(
        store: &StoreName,
        port: u16,
        sock: &std::path::Path,
        log: &std::path::Path,
        extra: &[&str],
    ) -> ChildGuard {
        let mut c = Command::new(workspace_bin("kvhost"));
        c.args(["--name", &store.name, "--dir"])
            .arg(&store.dir)
            .args(["--resp", &format!("127.0.0.1:{port}"), "--resp-unix"])
            .arg(sock)
            .arg("--log-file")
            .arg(log)
            .args(["--log-level", "debug", "--release-on-exit"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        ChildGuard::new(c.spawn().expect("start kvhost"))
    }

    /// A raw connection.
    pub fn conn(&self) -> Conn {
        Conn::tcp(self.port)
    }

    /// A local client of the same store, through shared memory.
    pub fn local(&self) -> kvshm::Client {
        kvshm::Client::open_in(&self.store.dir, &self.store.name).expect("attach")
    }

    /// Run redis-cli against it with `args`; its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        redis_cli(self.port, args, None)
    }
}

impl Drop for RespHost {
    fn drop(&mut self) {
        self.child.kill();
        if std::thread::panicking() {
            crate::print_tail(
                &format!("kvhost {} (port {})", self.store.name, self.port),
                &self.log,
                40,
            );
        }
        let _ = std::fs::remove_file(&self.sock);
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Run redis-cli on `port` with `args` (and `stdin`); its stdout.
pub fn redis_cli(port: u16, args: &[&str], stdin: Option<&[u8]>) -> String {
    let mut c = Command::new(tool("redis-cli"));
    c.args(["-p", &port.to_string()]).args(args);
    c.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut ch = c.spawn().expect("redis-cli");
    if let Some(input) = stdin {
        let mut i = ch.stdin.take().unwrap();
        i.write_all(input).unwrap();
    }
    let o = ch.wait_with_output().expect("redis-cli output");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A stock redis-server on a free loopback port, no persistence.
#[derive(Debug)]
pub struct RedisServer {
    /// The process.
    pub child: ChildGuard,
    /// Its port.
    pub port: u16,
    dir: PathBuf,
}

impl RedisServer {
    /// Start one.
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// Start one with more redis-server arguments (e.g. `--replicaof 127.0.0.1 PORT`).
    pub fn start_with(extra: &[&str]) -> RedisServer {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("kvshm-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut c = Command::new(tool("redis-server"));
        c.args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
        ])
        .args(extra)
        .arg("--dir")
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let mut child = ChildGuard::new(c.spawn().expect("start redis-server"));
        wait_port(port, &mut child, "redis-server");
        RedisServer { child, port, dir }
    }

    /// A raw connection.
    pub fn conn(&self) -> Conn {
        Conn::tcp(self.port)
    }

    /// The value of field `name` in `INFO section`.
    pub fn info_field(&self, section: &str, name: &str) -> Option<String> {
        info_field(&redis_cli(self.port, &["info", section], None), name)
    }
}

/// The value of field `name` in INFO's text.
pub fn info_field(info: &str, name: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
}

/// A bulk reply's bytes (`None` for a nil reply); panics on anything else.
pub fn bulk_value(reply: &[u8]) -> Option<Vec<u8>> {
    if reply.starts_with(b"$-1\r\n") || reply.starts_with(b"_\r\n") {
        return None;
    }
    let nl = reply
        .iter()
        .position(|&b| b == b'\n')
        .expect("a reply line");
    assert_eq!(
        reply[0],
        b'$',
        "not a bulk reply: {:?}",
        String::from_utf8_lossy(reply)
    );
    let n: usize = std::str::from_utf8(&reply[1..nl - 1])
        .unwrap()
        .parse()
        .unwrap();
    Some(reply[nl + 1..nl + 1 + n].to_vec())
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.child.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A raw RESP connection.
#[derive(Debug)]
pub struct Conn {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

/// One command as a RESP multibulk frame.
pub fn frame(args: &[&[u8]]) -> Vec<u8> {
    let mut f = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        f.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        f.extend_from_slice(a);
        f.extend_from_slice(b"\r\n");
    }
    f
}

impl Conn {
    /// Connect to a loopback port.
    pub fn tcp(port: u16) -> Conn {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Conn {
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
        }
    }

    /// A second handle on the socket, for a thread that only writes.
    pub fn writer(&self) -> TcpStream {
        self.w.try_clone().expect("clone socket")
    }

    /// Send raw bytes.
    pub fn send(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).expect("send");
    }

    /// Send a command and read its reply (raw bytes).
    pub fn cmd(&mut self, args: &[&[u8]]) -> Vec<u8> {
        self.send(&frame(args));
        self.reply()
    }

    /// [`Conn::cmd`] with string arguments, the reply as text.
    pub fn cmds(&mut self, args: &[&str]) -> String {
        let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
        String::from_utf8_lossy(&self.cmd(&a)).into_owned()
    }

    /// Read one whole reply, raw. Empty if the server closed the connection.
    pub fn reply(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        self.read_one(&mut out);
        out
    }

    /// Whether the server closed the connection (reads EOF within the read timeout).
    pub fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.r.read(&mut b), Ok(0))
    }

    fn line(&mut self, out: &mut Vec<u8>) -> Option<String> {
        let mut l = Vec::new();
        let n = self.r.read_until(b'\n', &mut l).ok()?;
        if n == 0 {
            return None;
        }
        out.extend_from_slice(&l);
        Some(String::from_utf8_lossy(&l).trim_end().to_string())
    }

    fn read_one(&mut self, out: &mut Vec<u8>) {
        let Some(l) = self.line(out) else { return };
        let (t, rest) = l.split_at(1);
        match t {
            "$" | "=" | "!" => {
                let n: i64 = rest.parse().unwrap();
                if n >= 0 {
                    let mut b = vec![0u8; n as usize + 2];
                    self.r.read_exact(&mut b).unwrap();
                    out.extend_from_slice(&b);
                }
            }
            "*" | "~" | ">" => {
                let n: i64 = rest.parse().unwrap();
                for _ in 0..n.max(0) {
                    self.read_one(out);
                }
            }
            "%" | "|" => {
                let n: i64 = rest.parse().unwrap();
                for _ in 0..2 * n.max(0) {
                    self.read_one(out);
                }
            }
            _ => {}
        }
    }
}

/// An HTTP/1.1 response: status, headers (lowercase names), body.
#[derive(Debug)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 request to 127.0.0.1:`port` on a fresh connection (`Connection: close`).
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    if chunked {
        let mut out = Vec::new();
        let mut i = 0;
        while let Some(nl) = body[i..].windows(2).position(|w| w == b"\r\n") {
            let n = usize::from_str_radix(String::from_utf8_lossy(&body[i..i + nl]).trim(), 16)
                .unwrap_or(0);
            if n == 0 {
                break;
            }
            let start = i + nl + 2;
            out.extend_from_slice(&body[start..start + n]);
            i = start + n + 2;
        }
        body = out;
    }
    HttpResponse {
        status,
        headers,
        body,
    }
}
