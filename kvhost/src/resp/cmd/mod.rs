//! The command table and what every command shares: arguments, errors, the context.
//!
//! - `strings.rs`: GET, SET and the string commands;
//! - `keys.rs`: DEL, EXISTS, SCAN, RENAME, EXPIRE and the key commands;
//! - `admin.rs`: connection and server commands (PING, HELLO, CLIENT, INFO, CONFIG, ...);
//! - transactions (MULTI/EXEC/WATCH) live in `../conn.rs`, which owns the connection state.

use std::sync::OnceLock;

use kvshm::Error;

use super::conn::Conn;
use super::db::Db;
use super::proto::Out;
use super::Shared;

mod admin;
mod keys;
mod strings;

/// What a command runs with.
pub struct Ctx<'a, 'd> {
    /// The store.
    pub db: Db<'d>,
    /// Where the reply goes.
    pub out: &'a mut Out,
    /// The connection.
    pub conn: &'a mut Conn,
    /// The server.
    pub shared: &'a Shared,
}

/// A command's handler: writes exactly one reply.
pub type Handler = fn(&mut Ctx<'_, '_>, &[&[u8]]);

/// A command (what COMMAND INFO/DOCS tell clients, too).
#[derive(Debug)]
pub struct Spec {
    /// Lowercase name.
    pub name: &'static str,
    /// Redis's arity: n exactly, or -n at least n (the name counts).
    pub arity: i32,
    /// Redis's command flags.
    pub flags: &'static [&'static str],
    /// First key, last key (-1: the last argument), step.
    pub keys: (i32, i32, i32),
    /// Redis's command group.
    pub group: &'static str,
    /// One line for COMMAND DOCS and HELP.
    pub summary: &'static str,
    /// The handler.
    pub run: Handler,
}

impl Spec {
    /// Whether the command reads or writes keys (runs against the transaction overlay in
    /// EXEC).
    pub fn is_data(&self) -> bool {
        self.flags.iter().any(|f| *f == "write" || *f == "readonly")
    }
}

impl std::fmt::Debug for Ctx<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx").field("conn", &self.conn.id).finish()
    }
}

const W: &[&str] = &["write", "denyoom"];
const WF: &[&str] = &["write", "denyoom", "fast"];
const WD: &[&str] = &["write", "fast"];
const RF: &[&str] = &["readonly", "fast"];
const R: &[&str] = &["readonly"];
const CONN: &[&str] = &["fast", "noscript", "loading", "stale"];
const ADMIN: &[&str] = &["admin", "noscript", "loading", "stale"];

macro_rules! spec {
    ($name:literal, $arity:expr, $flags:expr, $keys:expr, $group:literal, $summary:literal, $run:expr) => {
        Spec {
            name: $name,
            arity: $arity,
            flags: $flags,
            keys: $keys,
            group: $group,
            summary: $summary,
            run: $run,
        }
    };
}

const NOKEY: (i32, i32, i32) = (0, 0, 0);
const KEY1: (i32, i32, i32) = (1, 1, 1);
const KEYS_ALL: (i32, i32, i32) = (1, -1, 1);
const KEY12: (i32, i32, i32) = (1, 2, 1);

/// Every command the server knows.
pub static COMMANDS: &[Spec] = &[
    // Strings.
    spec!("get", 2, RF, KEY1, "string", "Returns the string value of a key.", strings::get),
    spec!("set", -3, W, KEY1, "string", "Sets the string value of a key, ignoring its type. The key is created if it doesn't exist.", strings::set),
    spec!("setnx", 3, WF, KEY1, "string", "Set the string value of a key only when the key doesn't exist.", strings::setnx),
    spec!("setex", 4, W, KEY1, "string", "Sets the string value and expiration time of a key. Creates the key if it doesn't exist.", strings::setex),
    spec!("psetex", 4, W, KEY1, "string", "Sets both string value and expiration time in milliseconds of a key. The key is created if it doesn't exist.", strings::psetex),
    spec!("getset", 3, WF, KEY1, "string", "Returns the previous string value of a key after setting it to a new value.", strings::getset),
    spec!("getdel", 2, WD, KEY1, "string", "Returns the string value of a key after deleting the key.", strings::getdel),
    spec!("getex", -2, WD, KEY1, "string", "Returns the string value of a key after setting its expiration time.", strings::getex),
    spec!("mget", -2, RF, KEYS_ALL, "string", "Atomically returns the string values of one or more keys.", strings::mget),
    spec!("mset", -3, W, (1, -1, 2), "string", "Atomically creates or modifies the string values of one or more keys.", strings::mset),
    spec!("msetnx", -3, W, (1, -1, 2), "string", "Atomically modifies the string values of one or more keys only when all keys don't exist.", strings::msetnx),
    spec!("incr", 2, WF, KEY1, "string", "Increments the integer value of a key by one. Uses 0 as initial value if the key doesn't exist.", strings::incr),
    spec!("decr", 2, WF, KEY1, "string", "Decrements the integer value of a key by one. Uses 0 as initial value if the key doesn't exist.", strings::decr),
    spec!("incrby", 3, WF, KEY1, "string", "Increments the integer value of a key by a number. Uses 0 as initial value if the key doesn't exist.", strings::incrby),
    spec!("decrby", 3, WF, KEY1, "string", "Decrements a number from the integer value of a key. Uses 0 as initial value if the key doesn't exist.", strings::decrby),
    spec!("incrbyfloat", 3, WF, KEY1, "string", "Increment the floating point value of a key by a number. Uses 0 as initial value if the key doesn't exist.", strings::incrbyfloat),
    spec!("append", 3, WF, KEY1, "string", "Appends a string to the value of a key. Creates the key if it doesn't exist.", strings::append),
    spec!("strlen", 2, RF, KEY1, "string", "Returns the length of a string value.", strings::strlen),
    spec!("getrange", 4, R, KEY1, "string", "Returns a substring of the string stored at a key.", strings::getrange),
    spec!("substr", 4, R, KEY1, "string", "Returns a substring from a string value.", strings::getrange),
    spec!("setrange", 4, W, KEY1, "string", "Overwrites a part of a string value with another by an offset. Creates the key if it doesn't exist.", strings::setrange),
    spec!("lcs", -3, R, KEY12, "string", "Finds the longest common substring.", strings::lcs),
    // Keys.
    spec!("del", -2, &["write"], KEYS_ALL, "generic", "Deletes one or more keys.", keys::del),
    spec!("unlink", -2, WD, KEYS_ALL, "generic", "Asynchronously deletes one or more keys.", keys::del),
    spec!("exists", -2, RF, KEYS_ALL, "generic", "Determines whether one or more keys exist.", keys::exists),
    spec!("type", 2, RF, KEY1, "generic", "Determines the type of value stored at a key.", keys::type_),
    spec!("keys", 2, R, NOKEY, "generic", "Returns all key names that match a pattern.", keys::keys),
    spec!("scan", -2, R, NOKEY, "generic", "Iterates over the key names in the database.", keys::scan),
    spec!("randomkey", 1, R, NOKEY, "generic", "Returns a random key name from the database.", keys::randomkey),
    spec!("rename", 3, &["write"], KEY12, "generic", "Renames a key and overwrites the destination.", keys::rename),
    spec!("renamenx", 3, WD, KEY12, "generic", "Renames a key only when the target key name doesn't exist.", keys::renamenx),
    spec!("copy", -3, W, KEY12, "generic", "Copies the value of a key to a new key.", keys::copy),
    spec!("expire", -3, WD, KEY1, "generic", "Sets the expiration time of a key in seconds.", keys::expire),
    spec!("pexpire", -3, WD, KEY1, "generic", "Sets the expiration time of a key in milliseconds.", keys::pexpire),
    spec!("expireat", -3, WD, KEY1, "generic", "Sets the expiration time of a key to a Unix timestamp.", keys::expireat),
    spec!("pexpireat", -3, WD, KEY1, "generic", "Sets the expiration time of a key to a Unix milliseconds timestamp.", keys::pexpireat),
    spec!("ttl", 2, RF, KEY1, "generic", "Returns the expiration time in seconds of a key.", keys::ttl),
    spec!("pttl", 2, RF, KEY1, "generic", "Returns the expiration time in milliseconds of a key.", keys::pttl),
    spec!("expiretime", 2, RF, KEY1, "generic", "Returns the expiration time of a key as a Unix timestamp.", keys::expiretime),
    spec!("pexpiretime", 2, RF, KEY1, "generic", "Returns the expiration time of a key as a Unix milliseconds timestamp.", keys::pexpiretime),
    spec!("persist", 2, WD, KEY1, "generic", "Removes the expiration time of a key.", keys::persist),
    spec!("touch", -2, RF, KEYS_ALL, "generic", "Returns the number of existing keys out of those specified after updating the time they were last accessed.", keys::exists),
    // Connection.
    spec!("ping", -1, CONN, NOKEY, "connection", "Returns the server's liveliness response.", admin::ping),
    spec!("echo", 2, CONN, NOKEY, "connection", "Returns the given string.", admin::echo),
    spec!("quit", -1, CONN, NOKEY, "connection", "Closes the connection.", admin::quit),
    spec!("reset", 1, CONN, NOKEY, "connection", "Resets the connection.", admin::reset),
    spec!("hello", -1, CONN, NOKEY, "connection", "Handshakes with the Redis server.", admin::hello),
    spec!("auth", -2, CONN, NOKEY, "connection", "Authenticates the connection.", admin::auth),
    spec!("select", 2, CONN, NOKEY, "connection", "Changes the selected database.", admin::select),
    spec!("client", -2, &["admin", "noscript", "loading", "stale"], NOKEY, "connection", "A container for client connection commands.", admin::client),
    // Server.
    spec!("info", -1, &["loading", "stale"], NOKEY, "server", "Returns information and statistics about the server.", admin::info),
    spec!("dbsize", 1, RF, NOKEY, "server", "Returns the number of keys in the database.", admin::dbsize),
    spec!("time", 1, &["loading", "stale", "fast"], NOKEY, "server", "Returns the server time.", admin::time),
    spec!("command", -1, &["loading", "stale"], NOKEY, "server", "Returns detailed information about all commands.", admin::command),
    spec!("config", -2, ADMIN, NOKEY, "server", "A container for server configuration commands.", admin::config),
    spec!("flushdb", -1, &["write"], NOKEY, "server", "Remove all keys from the current database.", admin::flushdb),
    spec!("flushall", -1, &["write"], NOKEY, "server", "Removes all keys from all databases.", admin::flushdb),
    spec!("save", 1, ADMIN, NOKEY, "server", "Synchronously saves the database(s) to disk.", admin::save),
    spec!("bgsave", -1, ADMIN, NOKEY, "server", "Asynchronously saves the database(s) to disk.", admin::bgsave),
    spec!("lastsave", 1, &["loading", "stale", "fast"], NOKEY, "server", "Returns the Unix timestamp of the last successful save to disk.", admin::lastsave),
    spec!("shutdown", -1, ADMIN, NOKEY, "server", "Synchronously saves the database(s) to disk and shuts down the Redis server.", admin::shutdown),
    spec!("psync", -3, &["admin", "noscript", "no-multi"], NOKEY, "server", "An internal command used in replication.", admin::psync),
    spec!("sync", 1, &["admin", "noscript", "no-multi"], NOKEY, "server", "An internal command used in replication.", admin::psync),
    spec!("replconf", -1, &["admin", "noscript", "loading", "stale"], NOKEY, "server", "An internal command for configuring the replication stream.", admin::replconf),
    spec!("replicaof", 3, &["admin", "noscript", "stale", "no-async-loading"], NOKEY, "server", "Configures a server as replica of another, or promotes it to a master.", admin::replicaof),
    spec!("slaveof", 3, &["admin", "noscript", "stale", "no-async-loading"], NOKEY, "server", "Sets a Redis server as a replica of another, or promotes it to being a master.", admin::replicaof),
    spec!("subscribe", -2, &["pubsub", "noscript", "loading", "stale"], NOKEY, "pubsub", "Listens for messages published to channels.", admin::subscribe),
    spec!("unsubscribe", -1, &["pubsub", "noscript", "loading", "stale"], NOKEY, "pubsub", "Stops listening to messages posted to channels.", admin::unsubscribe),
    spec!("psubscribe", -2, &["pubsub", "noscript", "loading", "stale"], NOKEY, "pubsub", "Listens for messages published to channels that match one or more patterns.", admin::psubscribe),
    spec!("punsubscribe", -1, &["pubsub", "noscript", "loading", "stale"], NOKEY, "pubsub", "Stops listening to messages published to channels that match one or more patterns.", admin::psubscribe),
    spec!("publish", 3, &["pubsub", "loading", "stale", "fast"], NOKEY, "pubsub", "Posts a message to a channel.", admin::publish),
    spec!("pubsub", -2, &["pubsub", "loading", "stale"], NOKEY, "pubsub", "A container for Pub/Sub commands.", admin::pubsub),
    spec!("role", 1, &["noscript", "loading", "stale", "fast"], NOKEY, "server", "Returns the replication role.", admin::role),
    spec!("wait", 3, &["noscript"], NOKEY, "generic", "Blocks until the asynchronous replication of all preceding write commands sent by the connection is completed.", admin::wait),
    // Transactions (handled by the connection; listed for COMMAND).
    spec!("multi", 1, &["noscript", "loading", "stale", "fast"], NOKEY, "transactions", "Starts a transaction.", admin::in_conn),
    spec!("exec", 1, &["noscript", "loading", "stale"], NOKEY, "transactions", "Executes all commands in a transaction.", admin::in_conn),
    spec!("discard", 1, &["noscript", "loading", "stale", "fast"], NOKEY, "transactions", "Discards a transaction.", admin::in_conn),
    spec!("watch", -2, &["noscript", "loading", "stale", "fast"], KEYS_ALL, "transactions", "Monitors changes to keys to determine the execution of a transaction.", admin::in_conn),
    spec!("unwatch", 1, &["noscript", "loading", "stale", "fast"], NOKEY, "transactions", "Forgets about watched keys of a transaction.", admin::in_conn),
];

/// The command called `name` (any case).
pub fn lookup(name: &[u8]) -> Option<&'static Spec> {
    lookup_index(name).map(|(_, s)| s)
}

/// The command called `name` (any case) and its index in [`COMMANDS`]: the name is lowercased
/// into a 16-byte stack buffer once and compared, as two words, only with the few names of
/// the same length and first letter (comparing every name of the same length
/// case-insensitively cost ~150 instructions per command; comparing slices, a `memcmp` call
/// per candidate, ~80: callgrind of pipelined PINGs, docs/PERFORMANCE.md).
pub fn lookup_index(name: &[u8]) -> Option<(usize, &'static Spec)> {
    const LONGEST: usize = 16;
    /// Per (length, first letter): each command's index and lowercase name as two words.
    type Buckets = Vec<Vec<(usize, [u64; 2])>>;
    static BY_LEN_AND_FIRST: OnceLock<Buckets> = OnceLock::new();
    let slot = |len: usize, first: u8| len * 32 + usize::from(first.to_ascii_lowercase() & 31);
    let table = BY_LEN_AND_FIRST.get_or_init(|| {
        let mut v = vec![Vec::new(); (LONGEST + 1) * 32];
        for (i, s) in COMMANDS.iter().enumerate() {
            let mut b = [0u8; LONGEST];
            b[..s.name.len()].copy_from_slice(s.name.as_bytes());
            v[slot(s.name.len(), s.name.as_bytes()[0])].push((i, words(&b)));
        }
        v
    });
    if name.is_empty() || name.len() > LONGEST {
        return None;
    }
    // Lowercased once (the table's names are lowercase), zero-padded as the table's are: with
    // the length fixed by the bucket, equal words are equal names.
    let mut low = [0u8; LONGEST];
    for (d, c) in low.iter_mut().zip(name) {
        *d = c.to_ascii_lowercase();
    }
    let w = words(&low);
    let idx = table[slot(name.len(), low[0])]
        .iter()
        .find(|(_, n)| *n == w)?
        .0;
    Some((idx, &COMMANDS[idx]))
}

/// A zero-padded name of at most 16 bytes as two words.
fn words(b: &[u8; 16]) -> [u64; 2] {
    let (lo, hi) = b.split_at(8);
    [
        u64::from_le_bytes(lo.try_into().unwrap_or_default()),
        u64::from_le_bytes(hi.try_into().unwrap_or_default()),
    ]
}

/// Redis's reply to an unknown command.
pub fn unknown_command(args: &[&[u8]]) -> String {
    let mut s = String::new();
    for a in &args[1..] {
        if s.len() >= 128 {
            break;
        }
        let room = 128 - s.len();
        let a = String::from_utf8_lossy(a);
        let a: String = a.chars().take(room).collect();
        s.push_str(&format!("'{a}' "));
    }
    let name: String = String::from_utf8_lossy(args[0]).chars().take(128).collect();
    format!("ERR unknown command '{name}', with args beginning with: {s}")
}

/// Redis's reply to a wrong argument count.
pub fn wrong_args(name: &str) -> String {
    format!("ERR wrong number of arguments for '{name}' command")
}

/// The error reply for a store error.
pub fn store_error(e: &Error) -> String {
    match e {
        Error::NotAnInteger => "ERR value is not an integer or out of range".into(),
        Error::ReadOnly => "READONLY You can't write against a read only replica.".into(),
        Error::Overflow => "ERR increment or decrement would overflow".into(),
        Error::ValueTooLong { len, max } => format!(
            "ERR string exceeds maximum allowed size (proto-max-bulk-len): {len} bytes, the store's limit is {max}"
        ),
        Error::KeyTooLong { len, max } => {
            format!("ERR key too long: {len} bytes, the store's limit is {max}")
        }
        Error::StoreFull { hint } => {
            format!("OOM command not allowed when used memory > 'maxmemory' (store full: {hint})")
        }
        e => format!("ERR {e}"),
    }
}

pub const SYNTAX: &str = "ERR syntax error";
pub const NOT_INT: &str = "ERR value is not an integer or out of range";

/// Redis's `string2ll`: canonical signed decimal only (the library's, as `incr` uses it).
pub fn parse_int(b: &[u8]) -> Option<i64> {
    kvshm::parse_i64(b)
}

/// A float argument as Redis's `strtold` takes it (no spaces, no NaN).
pub fn parse_float(b: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(b).ok()?;
    if s.is_empty() || s.starts_with(char::is_whitespace) || s.ends_with(char::is_whitespace) {
        return None;
    }
    let low = s.to_ascii_lowercase();
    let v: f64 = match low.as_str() {
        "inf" | "+inf" | "infinity" | "+infinity" => f64::INFINITY,
        "-inf" | "-infinity" => f64::NEG_INFINITY,
        _ => low.parse().ok()?,
    };
    if v.is_nan() {
        return None;
    }
    Some(v)
}

/// Whether `a` is `word`, ignoring ASCII case.
pub fn is(a: &[u8], word: &str) -> bool {
    a.eq_ignore_ascii_case(word.as_bytes())
}

impl Ctx<'_, '_> {
    /// Reply with a store error.
    pub fn fail(&mut self, e: &Error) {
        let msg = store_error(e);
        self.out.error(&msg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_consistent() {
        let mut names = std::collections::HashSet::new();
        for s in COMMANDS {
            assert!(names.insert(s.name), "{} twice", s.name);
            assert_eq!(s.name, s.name.to_ascii_lowercase());
            assert!(
                !s.name.is_empty() && s.name.len() <= 16,
                "{}: lookup_index's LONGEST",
                s.name
            );
            assert!(s.arity != 0);
            assert!(lookup(s.name.to_ascii_uppercase().as_bytes()).is_some());
        }
        assert!(lookup(b"nosuchcommand").is_none());
        assert!(lookup(b"averyveryverylongcommandname").is_none());
    }

    /// Every command is found by its name in any case, and a name that differs in one byte
    /// (same length, same first letter) or in length is not.
    #[test]
    fn every_command_is_found_in_any_case() {
        for (i, s) in COMMANDS.iter().enumerate() {
            let lower = s.name.as_bytes().to_vec();
            let upper = lower.to_ascii_uppercase();
            let mixed: Vec<u8> = lower
                .iter()
                .enumerate()
                .map(|(j, b)| {
                    if j % 2 == 0 {
                        b.to_ascii_uppercase()
                    } else {
                        *b
                    }
                })
                .collect();
            for n in [&lower, &upper, &mixed] {
                assert_eq!(lookup_index(n).map(|(j, _)| j), Some(i), "{}", s.name);
            }
            let mut off = lower.clone();
            *off.last_mut().unwrap() ^= 0x40;
            assert!(lookup_index(&off).is_none_or(|(j, _)| j != i), "{}", s.name);
            let mut longer = lower.clone();
            longer.push(b'x');
            assert!(
                lookup_index(&longer).is_none_or(|(j, _)| j != i),
                "{}",
                s.name
            );
        }
        assert!(lookup_index(b"").is_none());
        assert!(lookup_index(&[0xc3, 0xa9]).is_none());
        assert!(lookup_index(&[b'g'; 40]).is_none());
    }

    #[test]
    fn unknown_command_text_is_redis_text() {
        assert_eq!(
            unknown_command(&[b"foo", b"a", b"b"]),
            "ERR unknown command 'foo', with args beginning with: 'a' 'b' "
        );
        assert_eq!(
            unknown_command(&[b"foo"]),
            "ERR unknown command 'foo', with args beginning with: "
        );
    }

    #[test]
    fn integers_parse_as_string2ll() {
        assert_eq!(parse_int(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_int(b"9223372036854775808"), None);
        assert_eq!(parse_int(b"01"), None);
        assert_eq!(parse_int(b"+1"), None);
        assert_eq!(parse_int(b"-0"), None);
        assert_eq!(parse_int(b" 1"), None);
        assert_eq!(parse_float(b"1.5"), Some(1.5));
        assert_eq!(parse_float(b"nan"), None);
        assert_eq!(parse_float(b" 1"), None);
    }
}
