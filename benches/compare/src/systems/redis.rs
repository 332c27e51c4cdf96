//! Redis: Debian's redis-server started on 127.0.0.1 (no persistence), spoken to over RESP
//! by a minimal client here (GET / SET, optionally pipelined).

use super::server::{Placement, Served, Server, Wire};
use super::Res;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::net::TcpStream;

pub fn start(placement: Placement) -> Res<Served<RespConn>> {
    Served::start(
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
        placement,
    )
}

pub struct RespConn {
    r: BufReader<TcpStream>,
    w: BufWriter<TcpStream>,
}

impl RespConn {
    /// Queue one command.
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
}

impl Wire for RespConn {
    fn connect(port: u16) -> Res<RespConn> {
        let s = Server::connect(port)?;
        let s2 = s.try_clone().map_err(|e| e.to_string())?;
        Ok(RespConn {
            r: BufReader::with_capacity(1 << 16, s),
            w: BufWriter::with_capacity(1 << 16, s2),
        })
    }
    fn send_get(&mut self, key: &[u8]) -> Res<()> {
        self.send(&[b"GET", key])
    }
    fn send_set(&mut self, key: &[u8], value: &[u8]) -> Res<()> {
        self.send(&[b"SET", key, value])
    }
    /// A bulk string (true, in `out`), nil (false), or a simple string such as +OK (true).
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
