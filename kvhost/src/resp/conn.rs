//! One connection's state and command dispatch: authentication, arity, MULTI/EXEC/WATCH.
//!
//! EXEC runs the queued commands against an overlay (`db.rs`) and commits everything they
//! wrote in one `commit_checked`, checked against the WATCHed keys and every key the
//! transaction read: atomic with respect to every process, local clients included. A watched
//! key that was present is checked by version; one that was absent by its stripe's revision
//! (any write to its stripe since WATCH aborts: stricter than Redis, never looser).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use kvshm::{Client, Error, Watch};

use super::cmd::{self, Ctx, Spec};
use super::db::{Db, Overlay};
use super::proto::{Out, Proto};
use super::{ClientHandle, Shared};

/// A queued command of a transaction.
type Queued = (&'static Spec, Vec<Vec<u8>>);

/// A connection.
#[derive(Debug)]
pub struct Conn {
    /// CLIENT ID.
    pub id: u64,
    /// What CLIENT LIST shows.
    pub handle: Arc<ClientHandle>,
    /// AUTH done (or no password).
    pub authed: bool,
    /// MULTI's queue (`None`: not in MULTI).
    pub multi: Option<Vec<Queued>>,
    /// A command queued in MULTI was refused: EXEC answers EXECABORT.
    pub multi_failed: bool,
    /// WATCHed keys.
    pub watched: Vec<(Vec<u8>, Watch)>,
    /// Close once the reply is sent (QUIT, protocol error, CLIENT KILL of itself).
    pub close: bool,
    /// CLIENT REPLY OFF/SKIP (bytes of replies to drop: handled by the writer).
    pub reply_off: bool,
}

impl Conn {
    /// A new connection.
    pub fn new(handle: Arc<ClientHandle>, authed: bool) -> Conn {
        Conn {
            id: handle.id,
            handle,
            authed,
            multi: None,
            multi_failed: false,
            watched: Vec::new(),
            close: false,
            reply_off: false,
        }
    }
}

fn no_auth(spec: &Spec) -> bool {
    matches!(spec.name, "auth" | "hello" | "quit" | "reset")
}

/// Run one command, appending its reply to `out`.
pub fn execute(conn: &mut Conn, shared: &Shared, client: &Client, out: &mut Out, args: &[&[u8]]) {
    shared.counters.commands.fetch_add(1, Ordering::Relaxed);
    let Some(spec) = cmd::lookup(args[0]) else {
        if conn.multi.is_some() {
            conn.multi_failed = true;
        }
        if !conn.authed {
            return out.error("NOAUTH Authentication required.");
        }
        return out.error(&cmd::unknown_command(args));
    };
    {
        let mut info = conn.handle.info.lock().unwrap_or_else(|e| e.into_inner());
        info.cmd = spec.name;
    }
    conn.handle.last_ms.store(
        conn.handle.created.elapsed().as_millis() as u64,
        Ordering::Relaxed,
    );
    if !conn.authed && !no_auth(spec) {
        return out.error("NOAUTH Authentication required.");
    }
    let n = args.len() as i32;
    if (spec.arity > 0 && n != spec.arity) || (spec.arity < 0 && n < -spec.arity) {
        if conn.multi.is_some() {
            conn.multi_failed = true;
        }
        return out.error(&cmd::wrong_args(spec.name));
    }
    match spec.name {
        "multi" => {
            if conn.multi.is_some() {
                return out.error("ERR MULTI calls can not be nested");
            }
            conn.multi = Some(Vec::new());
            conn.multi_failed = false;
            set_multi(conn, true);
            return out.ok();
        }
        "exec" => return exec(conn, shared, client, out),
        "discard" => {
            if conn.multi.take().is_none() {
                return out.error("ERR DISCARD without MULTI");
            }
            conn.watched.clear();
            set_multi(conn, false);
            return out.ok();
        }
        "watch" => {
            if conn.multi.is_some() {
                return out.error("ERR WATCH inside MULTI is not allowed");
            }
            for k in &args[1..] {
                match client.watch(k) {
                    Ok(w) => conn.watched.push((k.to_vec(), w)),
                    Err(e) => return out.error(&cmd::store_error(&e)),
                }
            }
            return out.ok();
        }
        "unwatch" => {
            conn.watched.clear();
            return out.ok();
        }
        _ => {}
    }
    if let Some(q) = conn.multi.as_mut() {
        if !matches!(spec.name, "quit" | "reset") {
            q.push((spec, args.iter().map(|a| a.to_vec()).collect()));
            return out.simple("QUEUED");
        }
    }
    let mut cx = Ctx {
        db: Db::Direct(client),
        out,
        conn,
        shared,
    };
    (spec.run)(&mut cx, args);
}

fn set_multi(conn: &Conn, on: bool) {
    conn.handle
        .info
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .multi = on;
}

/// How often EXEC runs its transaction again when other writers changed what it read, before
/// it gives up with an error (each attempt is a few microseconds; this is contention no
/// workload sustains, or a bug).
const EXEC_ATTEMPTS: usize = 10_000;

fn exec(conn: &mut Conn, shared: &Shared, client: &Client, out: &mut Out) {
    let Some(queue) = conn.multi.take() else {
        return out.error("ERR EXEC without MULTI");
    };
    set_multi(conn, false);
    let watched = std::mem::take(&mut conn.watched);
    if conn.multi_failed {
        conn.multi_failed = false;
        return out.error("EXECABORT Transaction discarded because of previous errors.");
    }
    for attempt in 0..EXEC_ATTEMPTS {
        let mut overlay = Overlay::default();
        let mut replies = Out::new(out.proto);
        replies.array(queue.len());
        for (spec, args) in &queue {
            let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            let mut cx = Ctx {
                db: if spec.is_data() {
                    Db::Multi(client, &mut overlay)
                } else {
                    Db::Direct(client)
                },
                out: &mut replies,
                conn,
                shared,
            };
            (spec.run)(&mut cx, &args);
        }
        // HELLO inside MULTI may have switched the protocol.
        out.proto = replies.proto;
        match overlay.commit(client, &watched) {
            Ok(true) => {
                out.buf.extend_from_slice(&replies.buf);
                return;
            }
            Ok(false) => return out.null_array(),
            Err(Error::Conflict { .. }) => {
                if attempt > 8 {
                    std::thread::yield_now();
                }
            }
            Err(e) => return out.error(&cmd::store_error(&e)),
        }
    }
    out.error("ERR EXEC could not commit: the keys it read kept changing (try again)");
}

/// RESET: back to a fresh connection's state.
pub fn reset(conn: &mut Conn, shared: &Shared, out: &mut Out) {
    conn.multi = None;
    conn.multi_failed = false;
    conn.watched.clear();
    conn.reply_off = false;
    conn.authed = shared.password().is_none();
    out.proto = Proto::V2;
    let mut info = conn.handle.info.lock().unwrap_or_else(|e| e.into_inner());
    info.name.clear();
    info.resp = 2;
    info.multi = false;
}
