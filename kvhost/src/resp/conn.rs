//! One connection's state and command dispatch: authentication, arity, MULTI/EXEC/WATCH.
//!
//! EXEC runs the queued commands against an overlay (`db.rs`) inside one `Client::transact`
//! over the keys they name, checked against the WATCHed keys: atomic with respect to every
//! process, local clients included. A watched
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
    /// Bytes of the commands queued in MULTI.
    pub multi_bytes: usize,
    /// WATCHed keys.
    pub watched: Vec<(Vec<u8>, Watch)>,
    /// Close once the reply is sent (QUIT, protocol error, CLIENT KILL of itself).
    pub close: bool,
    /// A command that the connection finishes asynchronously (its reply is not written yet).
    pub blocked: Option<Blocked>,
    /// REPLCONF listening-port of a replica.
    pub repl_port: u16,
    /// SUBSCRIBEd channels.
    pub subs: super::pubsub::Subscriptions,
}

/// What a blocked connection waits for.
#[derive(Debug)]
pub enum Blocked {
    /// WAIT numreplicas timeout (`None`: no limit).
    Wait {
        n: usize,
        timeout: Option<std::time::Duration>,
    },
    /// PSYNC/SYNC: the connection becomes a replica's stream.
    Psync(crate::repl::Psync),
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
            multi_bytes: 0,
            watched: Vec::new(),
            close: false,
            blocked: None,
            repl_port: 0,
            subs: super::pubsub::Subscriptions::default(),
        }
    }
}

fn no_auth(spec: &Spec) -> bool {
    matches!(spec.name, "auth" | "hello" | "quit" | "reset")
}

/// Run one command, appending its reply to `out`.
pub fn execute(conn: &mut Conn, shared: &Shared, client: &Client, out: &mut Out, args: &[&[u8]]) {
    let Some((idx, spec)) = cmd::lookup_index(args[0]) else {
        if conn.multi.is_some() {
            conn.multi_failed = true;
        }
        if !conn.authed {
            return out.error("NOAUTH Authentication required.");
        }
        return out.error(&cmd::unknown_command(args));
    };
    conn.handle.last_cmd.store(idx + 1, Ordering::Relaxed);
    if !conn.authed && !no_auth(spec) {
        return out.error("NOAUTH Authentication required.");
    }
    let n = args.len() as i32;
    if conn.subs.active()
        && out.proto == Proto::V2
        && !matches!(
            spec.name,
            "subscribe" | "unsubscribe" | "psubscribe" | "punsubscribe" | "ping" | "quit" | "reset"
        )
    {
        return out.error(&format!(
            "ERR Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context",
            spec.name
        ));
    }
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
            conn.multi_bytes = 0;
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
        if refused_in_multi(spec) {
            conn.multi_failed = true;
            return out.error("ERR Command not allowed inside a transaction");
        }
        if !matches!(spec.name, "quit" | "reset") {
            // The queue is bounded like one unfinished command (--max-query-buffer): a client
            // cannot make the server hold more for it by queueing instead of sending.
            let bytes: usize = args.iter().map(|a| a.len() + 16).sum();
            if conn.multi_bytes + bytes > shared.opts.max_query_buffer {
                conn.multi_failed = true;
                return out.error(
                    "ERR MULTI queue over --max-query-buffer; the transaction will be discarded",
                );
            }
            conn.multi_bytes += bytes;
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

/// The keys a command names, by its key positions (Redis's first, last, step), added to
/// `into` unless `seen` has them.
fn declared_keys(
    spec: &Spec,
    args: &[Vec<u8>],
    into: &mut Vec<Vec<u8>>,
    seen: &mut std::collections::HashSet<Vec<u8>>,
) {
    let (first, last, step) = spec.keys;
    if first <= 0 {
        return;
    }
    let n = args.len() as i32;
    let last = if last < 0 { n + last } else { last.min(n - 1) };
    let mut i = first;
    while i <= last {
        let k = &args[i as usize];
        if seen.insert(k.clone()) {
            into.push(k.clone());
        }
        i += step.max(1);
    }
}

/// Commands EXEC cannot run while it holds its keys' locks (they read or write every stripe,
/// or wait for the host): refused in MULTI with Redis's error for no-multi commands.
pub fn refused_in_multi(spec: &Spec) -> bool {
    matches!(
        spec.name,
        "keys"
            | "scan"
            | "randomkey"
            | "dbsize"
            | "flushdb"
            | "flushall"
            | "save"
            | "shutdown"
            | "psync"
            | "sync"
            | "wait"
            | "subscribe"
            | "unsubscribe"
            | "psubscribe"
            | "punsubscribe"
            | "replconf"
    )
}

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
    let mut keys: Vec<Vec<u8>> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (spec, args) in &queue {
        if spec.is_data() {
            declared_keys(spec, args, &mut keys, &mut seen);
        }
    }
    let proto = out.proto;
    if keys.is_empty() && watched.is_empty() {
        // No data command (e.g. Sentinel's MULTI SLAVEOF NO ONE / CONFIG REWRITE / CLIENT
        // KILL EXEC): nothing for a store transaction to cover, and a replica store must
        // still run it (a transaction is a write there).
        let mut replies = Out::new(proto);
        replies.array(queue.len());
        for (spec, args) in &queue {
            let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            let mut cx = Ctx {
                db: Db::Direct(client),
                out: &mut replies,
                conn: &mut *conn,
                shared,
            };
            (spec.run)(&mut cx, &args);
        }
        out.proto = replies.proto;
        out.buf.extend_from_slice(&replies.buf);
        return;
    }
    let r = client.transact(&watched, &keys, |recs| {
        let mut overlay = Overlay::new(&keys, recs);
        let mut replies = Out::new(proto);
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
                conn: &mut *conn,
                shared,
            };
            (spec.run)(&mut cx, &args);
        }
        Ok((overlay.writes(), replies))
    });
    match r {
        Ok(replies) => {
            // HELLO inside MULTI may have switched the protocol.
            out.proto = replies.proto;
            out.buf.extend_from_slice(&replies.buf);
        }
        Err(Error::Conflict { .. }) => out.null_array(),
        Err(e) => out.error(&cmd::store_error(&e)),
    }
}

/// RESET: back to a fresh connection's state.
pub fn reset(conn: &mut Conn, shared: &Shared, out: &mut Out) {
    conn.multi = None;
    conn.multi_failed = false;
    conn.watched.clear();
    conn.authed = shared.password().is_none();
    out.proto = Proto::V2;
    let mut info = conn.handle.info.lock().unwrap_or_else(|e| e.into_inner());
    info.name.clear();
    info.resp = 2;
    info.multi = false;
}
