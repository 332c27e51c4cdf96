//! Redis: Debian's redis-server started on 127.0.0.1 (no persistence), spoken to over RESP
//! by a minimal client here (GET / SET, optionally pipelined).

use super::server::{Placement, Server};
use super::{Conn, Mode, Res, System};
use crate::workload::{key, load_value};
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::net::TcpStream;

#[derive(Debug)]
pub struct Redis {
    server: Server,
    placement: Placement,
    rss_before: u64,
}

impl Redis {
    pub fn start(placement: Placement) -> Res<Redis> {
        let server = Server::start(
            "redis-server",
            &[
                "--port",
                "{port}",
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
            ],
            placement.server_cpu(),
        )?;
        let rss_before = server.rss();
        Ok(Redis {
            server,
            placement,
            rss_before,
        })
    }
}

impl System for Redis {
    fn mode(&self) -> Mode {
        match self.placement {
            Placement::SameCore => Mode::Single("same-core placement is measured with 1 client"),
            Placement::SeparateCores => Mode::Processes,
        }
    }
    fn load(&mut self, keys: u64, value_bytes: usize) -> Res<()> {
        let mut c = RespConn::connect(self.server.port)?;
        let (mut k, mut v) = ([0u8; 16], Vec::new());
        let mut i = 0;
        while i < keys {
            let n = (keys - i).min(256);
            for j in i..i + n {
                key(j, &mut k);
                load_value(&mut v, value_bytes, j);
                c.send(&[b"SET", &k, &v])?;
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
        match self.placement {
            Placement::SeparateCores => {
                "server's resident growth; server and clients pinned to different cores"
            }
            Placement::SameCore => "server's resident growth; server and client pinned to core 0",
        }
    }
    fn worker_cpus(&self) -> Option<Vec<usize>> {
        Some(self.placement.client_cpus())
    }
}

pub struct RespConn {
    r: BufReader<TcpStream>,
    w: BufWriter<TcpStream>,
}

impl RespConn {
    pub fn connect(port: u16) -> Res<RespConn> {
        let s = Server::connect(port)?;
        let s2 = s.try_clone().map_err(|e| e.to_string())?;
        Ok(RespConn {
            r: BufReader::with_capacity(1 << 16, s),
            w: BufWriter::with_capacity(1 << 16, s2),
        })
    }

    /// Queue one command (flushed by `reply`).
    fn send(&mut self, parts: &[&[u8]]) -> Res<()> {
        let e = |e: std::io::Error| e.to_string();
        write!(self.w, "*{}\r\n", parts.len()).map_err(e)?;
        for p in parts {
            write!(self.w, "${}\r\n", p.len()).map_err(e)?;
            self.w.write_all(p).map_err(e)?;
            self.w.write_all(b"\r\n").map_err(e)?;
        }
        Ok(())
    }

    /// Read one reply: Ok(true) with the bulk string in `out`, Ok(false) for nil; simple
    /// strings (+OK) are Ok(true) with `out` untouched.
    fn reply(&mut self, out: &mut Vec<u8>) -> Res<bool> {
        let e = |e: std::io::Error| e.to_string();
        if !self.w.buffer().is_empty() {
            self.w.flush().map_err(e)?;
        }
        let mut line = Vec::with_capacity(32);
        self.r.read_until(b'\n', &mut line).map_err(e)?;
        if line.len() < 3 {
            return Err("redis: connection closed".into());
        }
        let body = std::str::from_utf8(&line[1..line.len() - 2]).map_err(|e| e.to_string())?;
        match line[0] {
            b'+' => Ok(true),
            b'-' => Err(format!("redis: {body}")),
            b'$' => {
                let n: i64 = body.parse().map_err(|_| "redis: bad length")?;
                if n < 0 {
                    return Ok(false);
                }
                out.clear();
                out.resize(n as usize + 2, 0);
                self.r.read_exact(out).map_err(e)?;
                out.truncate(n as usize);
                Ok(true)
            }
            c => Err(format!("redis: unexpected reply type {}", c as char)),
        }
    }
}

impl Conn for RespConn {
    fn get(&mut self, key: &[u8], out: &mut Vec<u8>) -> Res<bool> {
        self.send(&[b"GET", key])?;
        self.reply(out)
    }
    fn put(&mut self, key: &[u8], value: &[u8]) -> Res<()> {
        self.send(&[b"SET", key, value])?;
        self.reply(&mut Vec::new()).map(|_| ())
    }
    fn batch(&mut self, ops: &[(bool, [u8; 16])], value: &[u8], out: &mut Vec<u8>) -> Res<u64> {
        for (get, k) in ops {
            if *get {
                self.send(&[b"GET", k])?;
            } else {
                self.send(&[b"SET", k, value])?;
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
    let port = spec.parse().map_err(|_| format!("bad redis spec {spec}"))?;
    Ok(Box::new(RespConn::connect(port)?))
}
