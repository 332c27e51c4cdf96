//! memcached: Debian's server started on 127.0.0.1, spoken to over its text protocol by a
//! minimal client here (get / set, optionally pipelined).

use super::server::{Placement, Served, Server, Wire};
use super::Res;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::net::TcpStream;

pub fn start() -> Res<Served<McConn>> {
    let threads = (super::server::cpus().saturating_sub(1)).max(1).to_string();
    Served::start(
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
        Placement::SeparateCores,
    )
}

pub struct McConn {
    r: BufReader<TcpStream>,
    w: BufWriter<TcpStream>,
    line: Vec<u8>,
}

impl McConn {
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
}

impl Wire for McConn {
    fn connect(port: u16) -> Res<McConn> {
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

    /// VALUE + data + END (true, in `out`), END alone (false), or STORED (true).
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
