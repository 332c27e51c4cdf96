//! Connection and server commands: PING, ECHO, QUIT, RESET, HELLO, AUTH, SELECT, CLIENT,
//! INFO, DBSIZE, TIME, COMMAND, CONFIG, FLUSHDB/FLUSHALL, SAVE, BGSAVE, LASTSAVE, SHUTDOWN,
//! WAIT.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{is, parse_int, Ctx, COMMANDS, NOT_INT, SYNTAX};
use crate::resp::conn;
use crate::resp::proto::Proto;

/// Redis version this server answers like (HELLO, INFO): the commands and replies follow 7.0.
pub const REDIS_VERSION: &str = "7.0.0";

pub fn ping(cx: &mut Ctx<'_, '_>, a: &[&[u8]]) {
    if cx.conn.subs.active() && cx.out.proto == Proto::V2 {
        // Subscribed mode answers a PING with a two-element array.
        cx.out.array(2);
        cx.out.bulk(b"pong");
        return cx.out.bulk(a.get(1).copied().unwrap_or(b""));
    }
    match a.len() {
        1 => cx.out.simple("PONG"),
        2 => cx.out.bulk(a[1]),
        _ => cx.out.error(&super::wrong_args("ping")),
    }
}

pub fn echo(cx: &mut Ctx<'_, '_>, a: &[&[u8]]) {
    cx.out.bulk(a[1]);
}

pub fn quit(cx: &mut Ctx<'_, '_>, _a: &[&[u8]]) {
    cx.conn.close = true;
    cx.out.ok();
}

pub fn reset(cx: &mut Ctx<'_, '_>, _a: &[&[u8]]) {
    conn::reset(cx.conn, cx.shared, cx.out);
    cx.out.simple("RESET");
}

pub fn select(cx: &mut Ctx<'_, '_>, a: &[&[u8]]) {
    match parse_int(a[1]) {
        Some(0) => cx.out.ok(),
        Some(_) => cx.out.error("ERR DB index is out of range"),
        None => cx.out.error(NOT_INT),
    }
}

/// Check a password for user `user`; the error reply if it is wrong.
fn check_auth(cx: &mut Ctx<'_, '_>, user: &[u8], pass: &[u8]) -> Result<(), &'static str> {
    match cx.shared.password() {
        None if user == b"default" && cx.conn.authed => Ok(()),
        Some(p) if user == b"default" && p.as_bytes() == pass => {
            cx.conn.authed = true;
            Ok(())
        }
        _ => Err("WRONGPASS invalid username-password pair or user is disabled."),
    }
}

pub fn auth(cx: &mut Ctx<'_, '_>, a: &[&[u8]]) {
    let (user, pass) = match a.len() {
        2 => (&b"default"[..], a[1]),
        3 => (a[1], a[2]),
        _ => return cx.out.error(SYNTAX),
    };
    if a.len() == 2 && cx.shared.password().is_none() {
        return cx.out.error("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?");
    }
    match check_auth(cx, user, pass) {
        Ok(()) => cx.out.ok(),
        Err(e) => cx.out.error(e),
    }
}

fn valid_name(n: &[u8]) -> bool {
    n.iter().all(|&c| (b'!'..=b'~').contains(&c))
}

fn set_name(cx: &mut Ctx<'_, '_>, n: &[u8]) -> bool {
    if !valid_name(n) {
        cx.out
            .error("ERR Client names cannot contain spaces, newlines or special characters.");
        return false;
    }
    let mut info = cx
        .conn
        .handle
        .info
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    info.name = String::from_utf8_lossy(n).into_owned();
    true
}

pub fn hello(cx: &mut Ctx<'_, '_>, a: &[&[u8]]) {
    let mut proto = cx.out.proto;
    let mut i = 1;
    if a.len() > 1 {
        match parse_int(a[1]) {
            Some(2) => proto = Proto::V2,
            Some(3) => proto = Proto::V3,
            Some(_) => return cx.out.error("NOPROTO unsupported protocol version"),
            None => {
                return cx
                    .out
                    .error("ERR Protocol version is not an integer or out of range")
            }
        }
        i = 2;
    }
    let mut name: Option<&[u8]> = None;
    while i < a.len() {
        if is(a[i], "auth") && i + 2 < a.len() {
            if let Err(e) = check_auth(cx, a[i + 1], a[i + 2]) {
                return cx.out.error(e);
            }
            i += 3;
        } else if is(a[i], "setname") && i + 1 < a.len() {
            name = Some(a[i + 1]);
            i += 2;
        } else {
            return cx.out.error(&format!(
                "ERR Syntax error in HELLO option '{}'",
                String::from_utf8_lossy(a[i])
            ));
        }
    }
    if !cx.conn.authed {
        return cx
            .out
            .error("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time");
    }
    if let Some(n) = name {
        if !set_name(cx, n) {
            return;
        }
    }
    cx.out.proto = proto;
    {
        let mut info = cx
            .conn
            .handle
            .info
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        info.resp = if proto == Proto::V3 { 3 } else { 2 };
    }
    let o = &mut *cx.out;
    o.map(7);
    o.bulk(b"server");
    o.bulk(b"redis");
    o.bulk(b"version");
    o.bulk(REDIS_VERSION.as_bytes());
    o.bulk(b"proto");
    o.int(if proto == Proto::V3 { 3 } else { 2 });
    o.bulk(b"id");
    o.int(cx.conn.id as i64);
    o.bulk(b"mode");
    o.bulk(b"standalone");
    o.bulk(b"role");
    o.bulk(b"master");
    o.bulk(b"modules");
    o.array(0);
}

fn client_line(h: &crate::resp::ClientHandle, me: u64) -> String {
    let info = h.info.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let age = h.created.elapsed().as_secs();
    let idle = h
        .created
        .elapsed()
        .as_millis()
        .saturating_sub(u128::from(h.last_ms.load(Ordering::Relaxed)))
        / 1000;
    let _ = me;
    format!(
        "id={} addr={} laddr={} fd=-1 name={} age={age} idle={idle} flags={} db=0 sub=0 psub=0 ssub=0 multi={} qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd=client|{} user=default redir=-1 resp={} lib-name={} lib-ver={}",
        h.id,
        h.addr,
        h.laddr,
        info.name,
        if info.multi { "x" } else { "N" },
        if info.multi { 0 } else { -1 },
        match h.last_cmd.load(Ordering::Relaxed) {
            0 => "NULL",
            i => COMMANDS[i - 1].name,
        },
        if info.resp == 0 { 2 } else { info.resp },
        info.lib_name,
        info.lib_ver,
    )
    .replace("cmd=client|client", "cmd=client")
}

pub fn client(cx: &mut Ctx<'_, '_>, a: &[&[u8]]) {
    let sub = String::from_utf8_lossy(a[1]).to_ascii_lowercase();
    match (sub.as_str(), a.len()) {
        ("id", 2) => cx.out.int(cx.conn.id as i64),
        ("getname", 2) => {
            let n = cx
                .conn
                .handle
                .info
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .name
                .clone();
            if n.is_empty() {
                cx.out.null();
            } else {
                cx.out.bulk(n.as_bytes());
            }
        }
        ("setname", 3) => {
            if set_name(cx, a[2]) {
                cx.out.ok();
            }
        }
        ("setinfo", 4) => {
            let v = String::from_utf8_lossy(a[3]).into_owned();
            if !valid_name(a[3]) && !a[3].is_empty() {
                return cx.out.error(&format!(
                    "ERR {} cannot contain spaces, newlines or special characters.",
                    String::from_utf8_lossy(a[2]).to_ascii_lowercase()
                ));
            }
            let mut info = cx
                .conn
                .handle
                .info
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if is(a[2], "lib-name") {
                info.lib_name = v;
            } else if is(a[2], "lib-ver") {
                info.lib_ver = v;
            } else {
                drop(info);
                return cx.out.error(&format!(
                    "ERR Unrecognized option '{}'",
                    String::from_utf8_lossy(a[2])
                ));
            }
            drop(info);
            cx.out.ok();
        }
        ("info", 2) => {
            let line = client_line(&cx.conn.handle, cx.conn.id) + "\n";
            cx.out.verbatim(&line);
        }
        ("list", _) => {
            let mut ids: Option<Vec<u64>> = None;
            let mut i = 2;
            while i < a.len() {
                if is(a[i], "type") && i + 1 < a.len() {
                    if !is(a[i + 1], "normal") {
                        ids = Some(Vec::new());
                    }
                    i += 2;
                } else if is(a[i], "id") && i + 1 < a.len() {
                    let mut v = Vec::new();
                    for x in &a[i + 1..] {
                        match parse_int(x) {
                            Some(n) if n > 0 => v.push(n as u64),
                            _ => return cx.out.error("ERR Invalid client ID"),
                        }
                    }
                    ids = Some(v);
                    i = a.len();
                } else {
                    return cx.out.error(SYNTAX);
                }
            }
            let clients = cx.shared.clients.lock().unwrap_or_else(|e| e.into_inner());
            let mut s = String::new();
            for h in clients.values() {
                if ids.as_ref().is_none_or(|v| v.contains(&h.id)) {
                    s.push_str(&client_line(h, cx.conn.id));
                    s.push('\n');
                }
            }
            drop(clients);
            cx.out.verbatim(&s);
        }
        ("kill", n) if n >= 3 => client_kill(cx, a),
        ("no-evict" | "no-touch", 3) => cx.out.ok(),
        ("help", 2) => {
            let lines = [
                "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "ID", "    Return the ID of the current connection.",
                "GETNAME", "    Return the name of the current connection.",
                "SETNAME <name>", "    Assign the name <name> to the current connection.",
                "SETINFO <LIB-NAME|LIB-VER> <value>", "    Set client library name or version.",
                "INFO", "    Return information about the current client connection.",
                "LIST [TYPE normal] [ID <id> [<id> ...]]", "    Return information about client connections.",
                "KILL <ip:port> | KILL <option> <value> [<option> <value> ...]", "    Kill connections: ID <id>, ADDR <ip:port>, LADDR <ip:port>, SKIPME (YES|NO), USER default.",
                "HELP", "    Print this help.",
            ];
            cx.out.array(lines.len());
            for l in lines {
                cx.out.simple(l);
            }
        }
        _ => sub_error(cx, a, "client", CLIENT_SUBS),
    }
}

const CLIENT_SUBS: &[&str] = &[
    "id", "getname", "setname", "setinfo", "info", "list", "kill", "no-evict", "no-touch", "help",
];

/// Redis's replies for a container command: an unknown subcommand, or a known one with the
/// wrong number of arguments.
fn sub_error(cx: &mut Ctx<'_, '_>, a: &[&[u8]], cmd: &str, known: &[&str]) {
    let sub = String::from_utf8_lossy(a[1]);
    if known.iter().any(|k| k.eq_ignore_ascii_case(&sub)) {
        cx.out.error(&format!(
            "ERR wrong number of arguments for '{cmd}|{}' command",
            sub.to_ascii_lowercase()
        ));
    } else {
        cx.out.error(&format!(
            "ERR unknown subcommand '{sub}'. Try {} HELP.",
            cmd.to_ascii_uppercase()
        ));
    }
}

fn client_kill(cx: &mut Ctx<'_, '_>, a: &[&[u8]]) {
    let old_form = a.len() == 3;
    let (mut id, mut addr, mut laddr, mut skipme) = (None, None, None, true);
    if old_form {
        addr = Some(String::from_utf8_lossy(a[2]).into_owned());
        skipme = false;
    } else {
        let mut i = 2;
        while i + 1 < a.len() {
            let v = a[i + 1];
            if is(a[i], "id") {
                match parse_int(v) {
                    Some(n) if n > 0 => id = Some(n as u64),
                    _ => return cx.out.error("ERR client-id should be greater than 0"),
                }
            } else if is(a[i], "addr") {
                addr = Some(String::from_utf8_lossy(v).into_owned());
            } else if is(a[i], "laddr") {
                laddr = Some(String::from_utf8_lossy(v).into_owned());
            } else if is(a[i], "skipme") {
                skipme = is(v, "yes");
            } else if is(a[i], "user") || is(a[i], "type") {
                // One user (default) and one type (normal): these select everyone.
            } else {
                return cx.out.error(SYNTAX);
            }
            i += 2;
        }
        if i != a.len() {
            return cx.out.error(SYNTAX);
        }
    }
    let clients = cx.shared.clients.lock().unwrap_or_else(|e| e.into_inner());
    let mut killed = 0;
    for h in clients.values() {
        let hit = id.is_none_or(|x| x == h.id)
            && addr.as_ref().is_none_or(|x| *x == h.addr)
            && laddr.as_ref().is_none_or(|x| *x == h.laddr)
            && !(skipme && h.id == cx.conn.id);
        if hit {
            log::info!(
                "CLIENT KILL by RESP client {} ({}): closing client {} ({})",
                cx.conn.id,
                cx.conn.handle.addr,
                h.id,
                h.addr
            );
            h.killed.store(true, Ordering::Relaxed);
            h.wake.notify_one();
            killed += 1;
            if h.id == cx.conn.id {
                cx.conn.close = true;
            }
        }
    }
    drop(clients);
    if old_form {
        if killed == 0 {
            cx.out.error("ERR No such client");
        } else {
            cx.out.ok();
        }
    } else {
        cx.out.int(killed);
    }
}

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

fn info_text(cx: &Ctx<'_, '_>, wanted: &[String]) -> String {
    let all = wanted.is_empty()
        || wanted
            .iter()
            .any(|w| w == "all" || w == "everything" || w == "default");
    let want = |s: &str| all || wanted.iter().any(|w| w == s);
    let c = cx.db.client();
    let st = c.stats();
    let sh = cx.shared;
    let mut s = String::new();
    let up = sh.started.elapsed().as_secs();
    if want("server") {
        let _ = write!(
            s,
            "# Server\r\nredis_version:{REDIS_VERSION}\r\nredis_mode:standalone\r\nkvshm_version:{}\r\nkvshm_store:{}\r\nos:{} {}\r\narch_bits:64\r\nmultiplexing_api:epoll\r\nprocess_id:{}\r\nrun_id:{}\r\ntcp_port:{}\r\nserver_time_usec:{}\r\nuptime_in_seconds:{up}\r\nuptime_in_days:{}\r\nio_threads_active:{}\r\n\r\n",
            env!("CARGO_PKG_VERSION"),
            c.path().display(),
            std::env::consts::OS,
            std::env::consts::ARCH,
            std::process::id(),
            sh.run_id,
            sh.port.load(Ordering::Relaxed),
            unix_now().as_micros(),
            up / 86400,
            sh.opts.threads,
        );
    }
    if want("clients") {
        let n = sh.clients.lock().unwrap_or_else(|e| e.into_inner()).len();
        let _ = write!(
            s,
            "# Clients\r\nconnected_clients:{n}\r\nmaxclients:{}\r\nblocked_clients:0\r\nkvshm_local_clients:{}\r\n\r\n",
            sh.max_clients.load(Ordering::Relaxed),
            st.clients.len()
        );
    }
    if want("memory") {
        let _ = write!(
            s,
            "# Memory\r\nused_memory:{}\r\nused_memory_human:{}\r\nmaxmemory:{}\r\nmaxmemory_human:{}\r\nmaxmemory_policy:{}\r\nkvshm_committed_bytes:{}\r\nkvshm_value_bytes:{}\r\nkvshm_free_bytes:{}\r\n\r\n",
            st.used_bytes,
            kvshm::human_bytes(st.used_bytes),
            st.max_bytes,
            kvshm::human_bytes(st.max_bytes),
            st.eviction,
            st.committed_bytes,
            st.value_bytes,
            st.free_bytes,
        );
    }
    if want("persistence") {
        let (last, count) = c.last_snapshot();
        let _ = write!(
            s,
            "# Persistence\r\nloading:0\r\nrdb_bgsave_in_progress:0\r\nrdb_last_save_time:{last}\r\nrdb_saves:{count}\r\nrdb_last_bgsave_status:ok\r\naof_enabled:0\r\nkvshm_snapshot_file:{}\r\n\r\n",
            sh.opts
                .snapshot
                .as_ref()
                .map_or(String::new(), |p| p.display().to_string())
        );
    }
    if want("stats") {
        let k = &sh.counters;
        let _ = write!(
            s,
            "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\ntotal_net_input_bytes:{}\r\ntotal_net_output_bytes:{}\r\nrejected_connections:{}\r\nexpired_keys:{}\r\nevicted_keys:{}\r\nkeyspace_hits:{}\r\nkeyspace_misses:{}\r\nkvshm_puts:{}\r\nkvshm_removes:{}\r\n\r\n",
            k.connections.load(Ordering::Relaxed),
            k.commands.load(Ordering::Relaxed),
            k.net_in.load(Ordering::Relaxed),
            k.net_out.load(Ordering::Relaxed),
            k.rejected.load(Ordering::Relaxed),
            st.expired,
            st.evicted,
            st.hits,
            st.gets.saturating_sub(st.hits),
            st.puts,
            st.removes,
        );
    }
    if want("replication") {
        let link = sh.replica_link();
        match sh.repl.get() {
            _ if link.is_some() => {
                s.push_str(&link.map(|l| l.info()).unwrap_or_default());
                s.push_str("\r\n");
            }
            Some(feed) => {
                s.push_str(&feed.info());
                s.push_str("\r\n");
            }
            None => {
                let _ = write!(
                    s,
                    "# Replication\r\nrole:master\r\nconnected_slaves:0\r\nmaster_replid:{}\r\nmaster_repl_offset:0\r\n\r\n",
                    sh.run_id
                );
            }
        }
    }
    if want("keyspace") {
        s.push_str("# Keyspace\r\n");
        if st.keys > 0 {
            let _ = write!(s, "db0:keys={}\r\n", st.keys);
        }
        s.push_str("\r\n");
    }
    while s.ends_with("\r\n\r\n") {
        s.truncate(s.len() - 2);
    }
    s
}

pub fn info(cx: &mut Ctx<'_, '_>, a: &[&[u8]]) {
    let wanted: Vec<String> = a[1..]
        .iter()
        .map(|w| String::from_utf8_lossy(w).to_ascii_lowercase())
        .collect();
    let text = info_text(cx, &wanted);
    cx.out.verbatim(&text);
}

pub fn dbsize(cx: &mut Ctx<'_, '_>, _a: &[&[u8]]) {
    let n = cx.db.client().len();
    cx.out.int(n as i64);
}

pub fn time(cx: &mut Ctx<'_, '_>, _a: &[&[u8]]) {
    let t = unix_now();
    cx.out.array(2);
    cx.out.bulk(t.as_secs().to_string().as_bytes());
    cx.out.bulk(t.subsec_micros().to_string().as_bytes());
}

fn command_info(cx: &mut Ctx<'_, '_>, s: &super::Spec) {
    let o = &mut *cx.out;
    o.array(10);
    o.bulk(s.name.as_bytes());
    o.int(i64::from(s.arity));
    o.set(s.flags.len());
    for f in s.flags {
        o.simple(f);
    }
    o.int(i64::from(s.keys.0));
    o.int(i64::from(s.keys.1));
    o.int(i64::from(s.keys.2));
    o.set(0);
    o.set(0);
    o.array(0);
    o.array(0);
}

fn command_doc(cx: &mut Ctx<'_, '_>, s: &super::Spec) {
    let o = &mut *cx.out;
    o.bulk(s.name.as_bytes());
    o.map(3);
    o.bulk(b"summary");
    o.bulk(s.summary.as_bytes());
    o.bulk(b"since");
    o.bulk(b"1.0.0");
    o.bulk(b"group");
    o.bulk(s.group.as_bytes());
}

pub fn command(cx: &mut Ctx<'_, '_>, a: &[&[u8]]) {
    if a.len() == 1 {
        cx.out.array(COMMANDS.len());
        for s in COMMANDS {
            command_info(cx, s);
        }
        return;
    }
    let sub = String::from_utf8_lossy(a[1]).to_ascii_lowercase();
    match sub.as_str() {
        "count" if a.len() == 2 => cx.out.int(COMMANDS.len() as i64),
        "list" => {
            cx.out.array(COMMANDS.len());
            for s in COMMANDS {
                cx.out.bulk(s.name.as_bytes());
            }
        }
        "info" => {
            let names: Vec<&[u8]> = a[2..].to_vec();
            if names.is_empty() {
                cx.out.array(COMMANDS.len());
                for s in COMMANDS {
                    command_info(cx, s);
                }
                return;
            }
            cx.out.array(names.len());
            for n in names {
                match super::lookup(n) {
                    Some(s) => command_info(cx, s),
                    None => cx.out.null_array(),
                }
            }
        }
        "docs" if a.len() == 2 => {
            // What redis-cli asks at start: answering with docs that have no argument specs
            // would replace redis-cli's built-in help and hints with empty ones; the error
            // makes it use its own table (the commands served are Redis's, same arguments).
            cx.out.error(
                "ERR COMMAND DOCS needs command names here (kvhost: COMMAND DOCS name [name ...])",
            )
        }
        "docs" => {
            let specs: Vec<&super::Spec> = a[2..].iter().filter_map(|n| super::lookup(n)).collect();
            cx.out.map(specs.len());
            for s in specs {
                command_doc(cx, s);
            }
        }
        "getkeys" if a.len() >= 3 => {
            let Some(s) = super::lookup(a[2]) else {
                return cx.out.error("ERR Invalid command specified");
            };
            let args = &a[2..];
            let (first, last, step) = s.keys;
            if first == 0 {
                return cx.out.error("ERR The command has no key arguments");
            }
            let last = if last < 0 {
                args.len() as i32 + last
            } else {
                last
            };
            let keys: Vec<&[u8]> = (first..=last)
                .step_by(step.max(1) as usize)
                .filter_map(|i| args.get(i as usize).copied())
                .collect();
            cx.out.array(keys.len());
            for k in keys {
                cx.out.bulk(k);
            }
        }
        _ => sub_error(
            cx,
            a,
            "command",
            &["count", "list", "info", "docs", "getkeys"],
        ),
    }
}

/// CONFIG GET's parameters and their values now.
fn config_params(cx: &Ctx<'_, '_>) -> Vec<(&'static str, String)> {
    let sh = cx.shared;
    let c = cx.db.client();
    let (_, max_value) = c.limits();
    let st = c.stats();
    let snap = sh.opts.snapshot.as_ref();
    vec![
        ("maxmemory", st.max_bytes.to_string()),
        ("maxmemory-policy", st.eviction.name().into()),
        (
            "save",
            sh.opts
                .snapshot_every
                .filter(|_| snap.is_some())
                .map_or(String::new(), |d| format!("{} 1", d.as_secs().max(1))),
        ),
        ("appendonly", "no".into()),
        ("timeout", sh.timeout_s.load(Ordering::Relaxed).to_string()),
        (
            "maxclients",
            sh.max_clients.load(Ordering::Relaxed).to_string(),
        ),
        ("requirepass", sh.password().unwrap_or_default()),
        ("port", sh.port.load(Ordering::Relaxed).to_string()),
        (
            "bind",
            sh.opts
                .tcp
                .iter()
                .map(|a| a.ip().to_string())
                .collect::<Vec<_>>()
                .join(" "),
        ),
        (
            "unixsocket",
            sh.opts
                .unix
                .first()
                .map_or(String::new(), |p| p.display().to_string()),
        ),
        ("unixsocketperm", "600".into()),
        ("databases", "1".into()),
        ("proto-max-bulk-len", max_value.to_string()),
        (
            "client-query-buffer-limit",
            sh.opts.max_query_buffer.to_string(),
        ),
        (
            "protected-mode",
            if sh.opts.protected { "yes" } else { "no" }.into(),
        ),
        ("io-threads", sh.opts.threads.to_string()),
        (
            "dir",
            snap.and_then(|p| p.parent())
                .map_or(String::new(), |p| p.display().to_string()),
        ),
        (
            "dbfilename",
            snap.and_then(|p| p.file_name())
                .map_or(String::new(), |p| p.to_string_lossy().into_owned()),
        ),
    ]
}

pub fn config(cx: &mut Ctx<'_, '_>, a: &[&[u8]]) {
    let sub = String::from_utf8_lossy(a[1]).to_ascii_lowercase();
    match sub.as_str() {
        "get" if a.len() >= 3 => {
            let params = config_params(cx);
            let hits: Vec<&(&str, String)> = params
                .iter()
                .filter(|(n, _)| {
                    a[2..]
                        .iter()
                        .any(|p| crate::resp::glob::matches(&p.to_ascii_lowercase(), n.as_bytes()))
                })
                .collect();
            cx.out.map(hits.len());
            for (n, v) in hits {
                cx.out.bulk(n.as_bytes());
                cx.out.bulk(v.as_bytes());
            }
        }
        "set" if a.len() >= 4 && a.len() % 2 == 0 => {
            // Validate everything first: all or nothing, as Redis.
            let mut sets: Vec<(String, String)> = Vec::new();
            for p in a[2..].chunks(2) {
                let name = String::from_utf8_lossy(p[0]).to_ascii_lowercase();
                let v = String::from_utf8_lossy(p[1]).into_owned();
                let known = config_params(cx).iter().any(|(n, _)| *n == name);
                match name.as_str() {
                    "timeout" | "maxclients" => {
                        if v.parse::<u64>().is_err() {
                            return cx.out.error(&format!(
                                "ERR CONFIG SET failed (possibly related to argument '{name}') - argument couldn't be parsed into an integer"
                            ));
                        }
                    }
                    "requirepass" => {}
                    "maxmemory-policy" => {
                        if v.parse::<kvshm::Policy>().is_err() {
                            return cx.out.error(&format!(
                                "ERR CONFIG SET failed (possibly related to argument '{name}') - argument(s) must be one of the following: {}",
                                kvshm::Policy::ALL.map(kvshm::Policy::name).join(", ")
                            ));
                        }
                    }
                    _ if known => {
                        return cx.out.error(&format!(
                            "ERR CONFIG SET failed (possibly related to argument '{name}') - kvhost sets it at start only (see kvhost --help)"
                        ))
                    }
                    _ => {
                        return cx.out.error(&format!(
                            "ERR Unknown option or number of arguments for CONFIG SET - '{name}'"
                        ))
                    }
                }
                sets.push((name, v));
            }
            for (name, v) in sets {
                match name.as_str() {
                    "timeout" => cx
                        .shared
                        .timeout_s
                        .store(v.parse().unwrap_or(0), Ordering::Relaxed),
                    "maxclients" => cx
                        .shared
                        .max_clients
                        .store(v.parse().unwrap_or(0), Ordering::Relaxed),
                    "maxmemory-policy" => {
                        let p = v.parse().unwrap_or_default();
                        if let Err(e) = cx.db.client().set_eviction(p) {
                            return cx.fail(&e);
                        }
                        log::info!(
                            "CONFIG SET maxmemory-policy {p} by RESP client {} ({})",
                            cx.conn.id,
                            cx.conn.handle.addr
                        );
                    }
                    _ => {
                        *cx.shared
                            .requirepass
                            .lock()
                            .unwrap_or_else(|e| e.into_inner()) = (!v.is_empty()).then_some(v);
                    }
                }
            }
            cx.out.ok();
        }
        "resetstat" if a.len() == 2 => {
            let k = &cx.shared.counters;
            for c in [
                &k.connections,
                &k.rejected,
                &k.commands,
                &k.net_in,
                &k.net_out,
            ] {
                c.store(0, Ordering::Relaxed);
            }
            cx.out.ok();
        }
        "rewrite" if a.len() == 2 => cx.out.error(
            "ERR kvhost has no config file to rewrite: settings come from flags and --config",
        ),
        _ => sub_error(cx, a, "config", &["get", "set", "resetstat", "rewrite"]),
    }
}

pub fn flushdb(cx: &mut Ctx<'_, '_>, a: &[&[u8]]) {
    if a.len() > 2 || (a.len() == 2 && !is(a[1], "async") && !is(a[1], "sync")) {
        return cx.out.error(SYNTAX);
    }
    match cx.db.client().clear() {
        Ok(n) => {
            log::info!(
                "FLUSHDB by RESP client {} ({}): {n} keys removed",
                cx.conn.id,
                cx.conn.handle.addr
            );
            cx.out.ok()
        }
        Err(e) => cx.fail(&e),
    }
}

fn no_snapshot(cx: &mut Ctx<'_, '_>) -> bool {
    if cx.shared.opts.snapshot.is_none() {
        cx.out
            .error("ERR no snapshot file is configured (start kvhost with --snapshot FILE)");
        return true;
    }
    false
}

pub fn save(cx: &mut Ctx<'_, '_>, _a: &[&[u8]]) {
    if no_snapshot(cx) {
        return;
    }
    let c = cx.db.client();
    let (_, before) = c.last_snapshot();
    if let Err(e) = c.request_snapshot() {
        return cx.fail(&e);
    }
    // The host writes it on its next pass (every 100 ms); SAVE blocks this connection (and
    // this worker thread: Redis's SAVE blocks the whole server) until it is written.
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(600) {
        if c.last_snapshot().1 > before {
            return cx.out.ok();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    cx.out
        .error("ERR the snapshot was not written within 600 s (see kvhost's log)");
}

pub fn bgsave(cx: &mut Ctx<'_, '_>, a: &[&[u8]]) {
    if a.len() > 2 || (a.len() == 2 && !is(a[1], "schedule")) {
        return cx.out.error(SYNTAX);
    }
    if no_snapshot(cx) {
        return;
    }
    match cx.db.client().request_snapshot() {
        Ok(()) => cx.out.simple("Background saving started"),
        Err(e) => cx.fail(&e),
    }
}

pub fn lastsave(cx: &mut Ctx<'_, '_>, _a: &[&[u8]]) {
    let (last, _) = cx.db.client().last_snapshot();
    cx.out.int(last as i64);
}

pub fn shutdown(cx: &mut Ctx<'_, '_>, a: &[&[u8]]) {
    let mut nosave = false;
    for o in &a[1..] {
        if is(o, "nosave") {
            nosave = true;
        } else if is(o, "save") {
            nosave = false;
        } else if is(o, "now") || is(o, "force") {
        } else if is(o, "abort") {
            return cx.out.error("ERR No shutdown in progress.");
        } else {
            return cx.out.error(SYNTAX);
        }
    }
    if !nosave && cx.shared.opts.snapshot.is_none() {
        log::info!(
            "SHUTDOWN from client {}: no snapshot file configured",
            cx.conn.id
        );
    }
    log::warn!(
        "SHUTDOWN{} requested by RESP client {} ({})",
        if nosave { " NOSAVE" } else { "" },
        cx.conn.id,
        cx.conn.handle.addr
    );
    cx.shared.control.nosave.store(nosave, Ordering::Relaxed);
    cx.shared.control.stop.store(true, Ordering::Relaxed);
    // Redis closes the connection without a reply.
    cx.conn.close = true;
}

pub fn wait(cx: &mut Ctx<'_, '_>, a: &[&[u8]]) {
    let (Some(n), Some(ms)) = (parse_int(a[1]), parse_int(a[2])) else {
        return cx.out.error(NOT_INT);
    };
    if ms < 0 {
        return cx.out.error("ERR timeout is negative");
    }
    if cx.shared.repl.get().is_none() {
        // No change log, so no replicas: none acknowledged.
        return cx.out.int(0);
    }
    // The connection waits (without blocking its thread) and then replies.
    cx.conn.blocked = Some(conn::Blocked::Wait {
        n: n.max(0) as usize,
        timeout: (ms > 0).then(|| Duration::from_millis(ms as u64)),
    });
}

pub fn psync(cx: &mut Ctx<'_, '_>, a: &[&[u8]]) {
    if cx.shared.repl.get().is_none() {
        return cx.out.error(
            "ERR this store keeps no change log, so it cannot be replicated (create it with kvhost --changelog SIZE)",
        );
    }
    let (replid, offset) = if is(a[0], "sync") {
        (String::from("?"), -1)
    } else if a.len() == 3 {
        match parse_int(a[2]) {
            Some(o) => (String::from_utf8_lossy(a[1]).into_owned(), o),
            None => return cx.out.error(NOT_INT),
        }
    } else {
        return cx.out.error(&super::wrong_args("psync"));
    };
    cx.conn.blocked = Some(conn::Blocked::Psync(crate::repl::Psync { replid, offset }));
}

pub fn replconf(cx: &mut Ctx<'_, '_>, a: &[&[u8]]) {
    if a.len() % 2 == 0 {
        return cx.out.error(SYNTAX);
    }
    let mut i = 1;
    while i + 1 < a.len() {
        if is(a[i], "ack") || is(a[i], "getack") {
            // Acknowledgements are read by the replica's stream task; never answered.
            return;
        }
        if is(a[i], "listening-port") {
            match parse_int(a[i + 1]) {
                Some(p) if (0..=65535).contains(&p) => cx.conn.repl_port = p as u16,
                _ => return cx.out.error(NOT_INT),
            }
        }
        // capa eof / psync2, ip-address, rdb-only, ...: accepted.
        i += 2;
    }
    cx.out.ok();
}

pub fn replicaof(cx: &mut Ctx<'_, '_>, a: &[&[u8]]) {
    let target = if is(a[1], "no") && is(a[2], "one") {
        None
    } else {
        match parse_int(a[2]) {
            Some(p) if (0..=65535).contains(&p) => {
                Some((String::from_utf8_lossy(a[1]).into_owned(), p as u16))
            }
            _ => return cx.out.error("ERR Invalid master port"),
        }
    };
    let was = cx.shared.replica_link();
    let same = match (&was, &target) {
        (Some(l), Some((h, p))) => l.host == *h && l.port == *p,
        _ => false,
    };
    if same {
        return cx.out.simple("OK Already connected to specified master");
    }
    log::warn!(
        "REPLICAOF {} by RESP client {} ({})",
        target
            .as_ref()
            .map_or("NO ONE".to_string(), |(h, p)| format!("{h}:{p}")),
        cx.conn.id,
        cx.conn.handle.addr
    );
    match cx.shared.set_replica_of(target) {
        Ok(()) => cx.out.ok(),
        Err(e) => cx.fail(&e),
    }
}

pub fn subscribe(cx: &mut Ctx<'_, '_>, a: &[&[u8]]) {
    // Never inside MULTI: refused while queueing (`conn::refused_in_multi`).
    let ps = cx.shared.pubsub.clone();
    for ch in &a[1..] {
        cx.conn.subs.subscribe(&ps, ch, cx.out);
    }
}

pub fn unsubscribe(cx: &mut Ctx<'_, '_>, a: &[&[u8]]) {
    cx.conn.subs.unsubscribe(&a[1..], cx.out);
}

pub fn psubscribe(cx: &mut Ctx<'_, '_>, _a: &[&[u8]]) {
    cx.out.error(
        "ERR pattern subscriptions are not supported by kvhost (SUBSCRIBE channels by name)",
    );
}

pub fn publish(cx: &mut Ctx<'_, '_>, a: &[&[u8]]) {
    let n = cx.shared.pubsub.publish(a[1], a[2]);
    cx.out.int(n as i64);
}

pub fn pubsub(cx: &mut Ctx<'_, '_>, a: &[&[u8]]) {
    if is(a[1], "channels") {
        let chans = cx.shared.pubsub.channels();
        let pat = a.get(2).copied();
        let chans: Vec<Vec<u8>> = chans
            .into_iter()
            .filter(|c| pat.is_none_or(|p| crate::resp::glob::matches(p, c)))
            .collect();
        cx.out.array(chans.len());
        for c in chans {
            cx.out.bulk(&c);
        }
    } else if is(a[1], "numsub") {
        cx.out.array(2 * (a.len() - 2));
        for c in &a[2..] {
            cx.out.bulk(c);
            cx.out.int(cx.shared.pubsub.numsub(c) as i64);
        }
    } else if is(a[1], "numpat") {
        cx.out.int(0);
    } else {
        sub_error(cx, a, "pubsub", &["channels", "numsub", "numpat"]);
    }
}

pub fn role(cx: &mut Ctx<'_, '_>, _a: &[&[u8]]) {
    if let Some(l) = cx.shared.replica_link() {
        cx.out.array(5);
        cx.out.bulk(b"slave");
        cx.out.bulk(l.host.as_bytes());
        cx.out.int(i64::from(l.port));
        cx.out.bulk(l.state().as_bytes());
        return cx.out.int(l.offset.load(Ordering::Relaxed) as i64);
    }
    let Some(feed) = cx.shared.repl.get() else {
        cx.out.array(3);
        cx.out.bulk(b"master");
        cx.out.int(0);
        return cx.out.array(0);
    };
    let reps = feed.replicas();
    cx.out.array(3);
    cx.out.bulk(b"master");
    cx.out.int(feed.offset() as i64);
    cx.out.array(reps.len());
    for r in reps {
        cx.out.array(3);
        cx.out.bulk(r.ip.as_bytes());
        cx.out.bulk(r.port.to_string().as_bytes());
        cx.out.bulk(r.ack.to_string().as_bytes());
    }
}

/// MULTI, EXEC, DISCARD, WATCH, UNWATCH are handled by the connection (`conn.rs`).
pub fn in_conn(cx: &mut Ctx<'_, '_>, _a: &[&[u8]]) {
    cx.out
        .error("ERR this command is handled by the connection");
}
