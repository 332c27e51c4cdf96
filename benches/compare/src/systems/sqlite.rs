//! SQLite through rusqlite against Debian's libsqlite3: an in-memory database (one connection)
//! and a WAL database on /dev/shm (one connection per process), `synchronous=OFF`.

use super::scratch::ScratchDir;
use super::{Conn, Mode, Res, System};
use crate::workload::{key, load_value};
use rusqlite::{params, Connection, OptionalExtension};
use std::sync::Mutex;

const SCHEMA: &str =
    "CREATE TABLE IF NOT EXISTS kv(k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID";

fn e(e: rusqlite::Error) -> String {
    format!("sqlite: {e}")
}

fn tune(c: &Connection, wal: bool) -> Res<()> {
    if wal {
        c.pragma_update(None, "journal_mode", "WAL").map_err(e)?;
    }
    c.pragma_update(None, "synchronous", "OFF").map_err(e)?;
    c.pragma_update(None, "cache_size", -(1i64 << 20))
        .map_err(e)?; // 1 GiB
    c.execute_batch(SCHEMA).map_err(e)
}

#[derive(Debug)]
pub struct Sqlite {
    dir: Option<ScratchDir>,
    /// The loading connection; for `:memory:` also the one client.
    conn: Mutex<Option<Connection>>,
    mem_bytes: u64,
}

impl Sqlite {
    pub fn memory() -> Res<Sqlite> {
        let c = Connection::open_in_memory().map_err(e)?;
        tune(&c, false)?;
        Ok(Sqlite {
            dir: None,
            conn: Mutex::new(Some(c)),
            mem_bytes: 0,
        })
    }
    pub fn wal() -> Res<Sqlite> {
        let dir = ScratchDir::new("sqlite")?;
        let c = Connection::open(dir.0.join("kv.db")).map_err(e)?;
        tune(&c, true)?;
        Ok(Sqlite {
            dir: Some(dir),
            conn: Mutex::new(Some(c)),
            mem_bytes: 0,
        })
    }
}

impl System for Sqlite {
    fn mode(&self) -> Mode {
        match self.dir {
            Some(_) => Mode::Processes,
            None => Mode::Single("an in-memory database belongs to one connection"),
        }
    }
    fn load(&mut self, keys: u64, value_bytes: usize) -> Res<()> {
        let mut g = self.conn.lock().unwrap();
        let c = g.as_mut().ok_or("sqlite: no connection")?;
        let tx = c.transaction().map_err(e)?;
        {
            let mut st = tx
                .prepare("INSERT OR REPLACE INTO kv(k, v) VALUES (?1, ?2)")
                .map_err(e)?;
            let (mut k, mut v) = ([0u8; 16], Vec::new());
            for i in 0..keys {
                key(i, &mut k);
                load_value(&mut v, value_bytes, i);
                st.execute(params![&k[..], &v[..]]).map_err(e)?;
            }
        }
        tx.commit().map_err(e)?;
        let pages: u64 = c
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .map_err(e)?;
        let size: u64 = c
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .map_err(e)?;
        self.mem_bytes = match &self.dir {
            Some(d) => d.allocated(),
            None => pages * size,
        };
        Ok(())
    }
    fn conn(&self) -> Res<Box<dyn Conn + Send>> {
        match &self.dir {
            Some(_) => open(&self.spec()),
            None => {
                let c = self
                    .conn
                    .lock()
                    .unwrap()
                    .take()
                    .ok_or("sqlite: one client only")?;
                Ok(Box::new(SqlConn(c)))
            }
        }
    }
    fn spec(&self) -> String {
        self.dir
            .as_ref()
            .map(|d| d.0.join("kv.db").to_string_lossy().into_owned())
            .unwrap_or_default()
    }
    fn memory_bytes(&self) -> Res<u64> {
        Ok(self.mem_bytes)
    }
    fn memory_note(&self) -> &'static str {
        match self.dir {
            Some(_) => "database + WAL files' allocated tmpfs pages",
            None => "page_count x page_size",
        }
    }
}

struct SqlConn(Connection);

impl Conn for SqlConn {
    fn get(&mut self, key: &[u8], out: &mut Vec<u8>) -> Res<bool> {
        let mut st = self
            .0
            .prepare_cached("SELECT v FROM kv WHERE k = ?1")
            .map_err(e)?;
        let found = st
            .query_row([key], |r| {
                let v = r.get_ref(0)?.as_blob()?;
                out.clear();
                out.extend_from_slice(v);
                Ok(())
            })
            .optional()
            .map_err(e)?;
        Ok(found.is_some())
    }
    fn put(&mut self, key: &[u8], value: &[u8]) -> Res<()> {
        let mut st = self
            .0
            .prepare_cached("INSERT OR REPLACE INTO kv(k, v) VALUES (?1, ?2)")
            .map_err(e)?;
        st.execute(params![key, value]).map_err(e)?;
        Ok(())
    }
}

pub fn open(spec: &str) -> Res<Box<dyn Conn + Send>> {
    let c = Connection::open(spec).map_err(e)?;
    tune(&c, true)?;
    c.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(e)?;
    Ok(Box::new(SqlConn(c)))
}
