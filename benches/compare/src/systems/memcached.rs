//! memcached: Debian's server started on 127.0.0.1, spoken to over its text protocol by a
//! minimal client here (get / set, optionally pipelined).

use super::server::{Placement, Server};
use super::{Conn, Mode, Res, System};
use crate::workload::{key, load_value};
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::net::TcpStream;

const PLACEMENT: Placement = Placement::SeparateCores;

#[derive(Debug)]
pub struct Memcached {
    server: Server,
    rss_before: u64,
}

impl Memcached {
    pub fn start() -> Res<Memcached> {
        let threads = (super::server::cpus().saturating_sub(1)).max(1).to_string();
        let server = Server::start(
            "memcached",
            &[
                "-p",
                "{port}",
                "-l",
                "127.0.0.1",
                "-U",
                "0",
                "-m",
                "8192",
                "-t",
                &threads,
                "-u",
                "root",
            ],
            PLACEMENT.server_cpu(),
        )?;
        let rss_before = server.rss();
        Ok(Memcached { server, rss_before })
    }
}

impl System for Memcached {
    fn mode(&self) -> Mode {
        Mode::Processes
    }
    fn load(&mut self, keys: u64, value_bytes: usize) -> Res<()> {
        let mut c = McConn::connect(self.server.port)?;
        let (mut k, mut v) = ([0u8; 16], Vec::new());
        let mut i = 0;
        while i < keys {
            let n = (keys - i).min(256);
            for j in i..i + n {
                key(j, &mut k);
                load_value(&mut v, value_bytes, j);
                c.send_set(&k, &v)?;
            }
            for _ in 0..n {
                c.reply(&mut Vec::new())?;
            }
            i += n;
        }
        Ok(())
    }
    fn conn(&self) -> Res<Box<dyn Conn + Send>> {
        open(&self.spec())
    }
    fn spec(&self) -> String {
        self.server.port.to_string()
    }
    fn memory_bytes(&self) -> Res<u64> {
        Ok(self.server.rss().saturating_sub(self.rss_before))
    }
    fn memory_note(&self) -> &'static str {
        "server's resident growth; server and clients pinned to different cores"
    }
    fn worker_cpus(&self) -> Option<Vec<usize>> {
        Some(PLACEMENT.client_cpus())
    }
}

pub struct McConn {
    r: BufReader<TcpStream>,
    w: BufWriter<TcpStream>,
    line: Vec<u8>,
}

impl McConn {
    pub fn connect(port: u16) -> Res<McConn> {
        let s = Server::connect(port)?;
        let s2 = s.try_clone().map_err(|e| e.to_string())?;
        Ok(McConn {
            r: BufReader::with_capacity(1 << 16, s),
            w: BufWriter::with_capacity(1 << 16, s2),
            line: Vec::with_capacity(64),
        })
    }

    fn send_get(&mut self, key: &[u8]) -> Res<()> {
        let e = |e: std::io::Error| e.to_string();
        self.w.write_all(b"get ").map_err(e)?;
        self.w.write_all(key).map_err(e)?;
        self.w.write_all(b"\r\n").map_err(e)
    }

    fn send_set(&mut self, key: &[u8], value: &[u8]) -> Res<()> {
        let e = |e: std::io::Error| e.to_string();
        self.w.write_all(b"set ").map_err(e)?;
        self.w.write_all(key).map_err(e)?;
        write!(self.w, " 0 0 {}\r\n", value.len()).map_err(e)?;
        self.w.write_all(value).map_err(e)?;
        self.w.write_all(b"\r\n").map_err(e)
    }

    fn read_line(&mut self) -> Res<()> {
        self.line.clear();
        self.r
            .read_until(b'\n', &mut self.line)
            .map_err(|e| e.to_string())?;
        if self.line.is_empty() {
            return Err("memcached: connection closed".into());
        }
        Ok(())
    }

    /// Read one reply: a get's (true with the value in `out`, false on a miss) or a set's.
    fn reply(&mut self, out: &mut Vec<u8>) -> Res<bool> {
        if !self.w.buffer().is_empty() {
            self.w.flush().map_err(|e| e.to_string())?;
        }
        self.read_line()?;
        if self.line.starts_with(b"STORED") {
            return Ok(true);
        }
        if self.line.starts_with(b"END") {
            return Ok(false);
        }
        if !self.line.starts_with(b"VALUE ") {
            return Err(format!(
                "memcached: {}",
                String::from_utf8_lossy(&self.line).trim_end()
            ));
        }
        let n: usize = std::str::from_utf8(&self.line)
            .ok()
            .and_then(|l| l.split_whitespace().nth(3))
            .and_then(|n| n.parse().ok())
            .ok_or("memcached: bad VALUE line")?;
        out.clear();
        out.resize(n + 2, 0);
        self.r.read_exact(out).map_err(|e| e.to_string())?;
        out.truncate(n);
        self.read_line()?; // END
        Ok(true)
    }
}

impl Conn for McConn {
    fn get(&mut self, key: &[u8], out: &mut Vec<u8>) -> Res<bool> {
        self.send_get(key)?;
        self.reply(out)
    }
    fn put(&mut self, key: &[u8], value: &[u8]) -> Res<()> {
        self.send_set(key, value)?;
        self.reply(&mut Vec::new()).map(|_| ())
    }
    fn batch(&mut self, ops: &[(bool, [u8; 16])], value: &[u8], out: &mut Vec<u8>) -> Res<u64> {
        for (get, k) in ops {
            if *get {
                self.send_get(k)?;
            } else {
                self.send_set(k, value)?;
            }
        }
        let mut hits = 0;
        for (get, _) in ops {
            let found = self.reply(out)?;
            hits += (*get && found) as u64;
        }
        Ok(hits)
    }
}

pub fn open(spec: &str) -> Res<Box<dyn Conn + Send>> {
    let port = spec
        .parse()
        .map_err(|_| format!("bad memcached spec {spec}"))?;
    Ok(Box::new(McConn::connect(port)?))
}
