//! `kvcli`: operate and inspect a kvshm store from the shell. Never bypasses the library.
#![forbid(unsafe_code)]

mod glob;

use std::ffi::OsString;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use kvshm::{Client, Error, Host, Stats};

const EXIT_KEY_NOT_FOUND: u8 = 1;
const EXIT_STORE_MISSING: u8 = 2;
const EXIT_LIMIT: u8 = 3;
const EXIT_FULL: u8 = 4;
const EXIT_OTHER: u8 = 5;
const EXIT_CONFLICT: u8 = 6;
const EXIT_TIMEOUT: u8 = 7;

const AFTER_HELP: &str = "\
Keys and values are taken byte for byte from the arguments. Binary keys are printed escaped
(\\xNN) unless --raw; `get` writes the value's raw bytes (plus a newline on a terminal), or
hex with --hex.

Exit codes: 0 ok, 1 key not found (get, exists), 2 store missing, 3 key or value over the
store's limit, 4 store full, 5 any other error (including `verify` finding problems, and `incr`
of a value that is not an integer or would overflow), 6 conflict (`set --if-version` /
`--if-absent` found another version; nothing changed), 7 timeout (`wait`).";

#[derive(Parser, Debug)]
#[command(name = "kvcli", version, about = "Operate and inspect a kvshm store", after_help = AFTER_HELP)]
struct Cli {
    /// Store name.
    #[arg(
        long,
        short,
        env = "KVSHM_NAME",
        default_value = "default",
        global = true
    )]
    name: String,
    /// Directory of the store file (default /dev/shm; on Windows %LOCALAPPDATA%\kvshm).
    #[arg(long, env = "KVSHM_DIR", global = true)]
    dir: Option<PathBuf>,
    /// Print keys and values as raw bytes, not escaped.
    #[arg(long, global = true)]
    raw: bool,
    /// Print values as hex.
    #[arg(long, global = true)]
    hex: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Print the value of KEY (exit 1 if missing).
    Get {
        key: OsString,
        /// Print the key's version instead of its value.
        #[arg(long = "version")]
        show_version: bool,
    },
    /// Store VALUE under KEY (or the contents of --file, or stdin with `-`).
    Set {
        key: OsString,
        value: Option<OsString>,
        /// Read the value from this file.
        #[arg(long, conflicts_with = "value")]
        file: Option<PathBuf>,
        /// Only if the key's version is V (from `get --version`); exit 6 otherwise.
        #[arg(long, value_name = "V")]
        if_version: Option<u64>,
        /// Only if the key is absent; exit 6 otherwise.
        #[arg(long, conflicts_with = "if_version")]
        if_absent: bool,
        /// Expire the key after this long (`500ms`, `10s`, `5m`); without it a set clears any
        /// expiry the key had.
        #[arg(long, value_parser = kvshm::parse_duration, conflicts_with_all = ["if_version", "if_absent"])]
        ttl: Option<Duration>,
    },
    /// Print how long KEY has to live: `persistent`, or seconds with milliseconds (exit 1 if
    /// missing or expired).
    Ttl { key: OsString },
    /// Make KEY expire after DURATION (`10s`, `5m`); exit 1 if missing.
    Expire {
        key: OsString,
        #[arg(value_parser = kvshm::parse_duration)]
        ttl: Duration,
    },
    /// Remove KEY's expiry; prints whether it had one (exit 1 if missing).
    Persist { key: OsString },
    /// Print the store's eviction policy, or set it for every process using the store:
    /// noeviction, allkeys-lru, volatile-lru, allkeys-random, volatile-random, volatile-ttl.
    Eviction {
        #[arg(value_parser = |s: &str| s.parse::<kvshm::Policy>().map_err(|e| e.to_string()))]
        policy: Option<kvshm::Policy>,
    },
    /// Add DELTA (default 1) to the integer under KEY (missing = 0) and print the result.
    Incr {
        key: OsString,
        #[arg(allow_negative_numbers = true)]
        delta: Option<i64>,
    },
    /// Append VALUE to the value of KEY (missing = empty) and print the new length.
    Append {
        key: OsString,
        #[arg(allow_hyphen_values = true)]
        value: OsString,
    },
    /// Wait until KEY changes (is written or removed, or created if missing), then print its
    /// new version (`absent` if removed). Exit 7 on --timeout.
    Wait {
        key: OsString,
        /// Give up after this long (`500ms`, `10s`, `5m`); default: wait indefinitely.
        #[arg(long, value_parser = kvshm::parse_duration)]
        timeout: Option<Duration>,
        /// Wait for a version other than V (default: the key's version now).
        #[arg(long, value_name = "V")]
        since: Option<u64>,
    },
    /// Remove keys (atomically); prints how many existed.
    #[command(alias = "mdel")]
    Del {
        #[arg(required = true)]
        keys: Vec<OsString>,
    },
    /// Exit 0 and print `true` if KEY exists, else print `false` and exit 1.
    Exists { key: OsString },
    /// Print the values of several keys (one snapshot), `(nil)` for missing ones.
    Mget {
        #[arg(required = true)]
        keys: Vec<OsString>,
    },
    /// Store several KEY VALUE pairs, all or nothing.
    Mset {
        #[arg(required = true, num_args = 2.., value_names = ["KEY", "VALUE"])]
        pairs: Vec<OsString>,
    },
    /// List keys matching a glob (`*`, `?`, `[abc]`, `\\` escapes); all keys without one.
    Keys { pattern: Option<OsString> },
    /// List keys (and values) with a prefix.
    Scan {
        #[arg(long, default_value = "")]
        prefix: OsString,
        /// Stop after N keys.
        #[arg(long)]
        limit: Option<usize>,
        /// Print values too (`key<TAB>value`).
        #[arg(long)]
        values: bool,
    },
    /// Store metrics.
    Stats {
        /// Machine-readable JSON.
        #[arg(long)]
        json: bool,
    },
    /// Live view of ops/s and memory, refreshed every second.
    #[command(alias = "top")]
    Watch {
        /// Stop after N refreshes (default: until Ctrl-C).
        #[arg(long)]
        count: Option<u64>,
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
    },
    /// Follow the store's change log (a store made with `kvhost --changelog`): one line per
    /// committed write of any process, `SEQ set KEY VALUE [expires UNIX_MS]` or `SEQ del KEY`,
    /// as it happens.
    Changes {
        /// Stop after N writes (default: until Ctrl-C).
        #[arg(long)]
        count: Option<u64>,
        /// Start at the oldest write still in the log instead of now.
        #[arg(long)]
        from_oldest: bool,
    },
    /// Write a snapshot of the store to FILE.
    Dump { file: PathBuf },
    /// Load a snapshot FILE into the store (validated whole first).
    Load {
        file: PathBuf,
        /// Remove keys that are not in the snapshot first.
        #[arg(long)]
        replace: bool,
    },
    /// Ask the host to write its snapshot now.
    Snapshot,
    /// Full integrity check; exit 5 with a report when anything is wrong.
    Verify,
    /// Remove the store for good.
    Release {
        /// Confirm.
        #[arg(long)]
        yes: bool,
    },
}

fn exit_code(e: &Error) -> u8 {
    match e {
        Error::NotFound { .. } => EXIT_STORE_MISSING,
        Error::KeyTooLong { .. } | Error::ValueTooLong { .. } => EXIT_LIMIT,
        Error::StoreFull { .. } => EXIT_FULL,
        _ => EXIT_OTHER,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("kvcli: {e}");
            ExitCode::from(exit_code(&e))
        }
    }
}

fn dir(cli: &Cli) -> PathBuf {
    cli.dir.clone().unwrap_or_else(kvshm::default_dir)
}

fn read_only(cli: &Cli) -> kvshm::Result<Client> {
    Client::open_read_only_in(dir(cli), &cli.name)
}

fn writable(cli: &Cli) -> kvshm::Result<Client> {
    Client::open_in(dir(cli), &cli.name)
}

fn bytes(s: &OsString) -> &[u8] {
    // The bytes on Unix; on Windows, UTF-8 (WTF-8 for unpaired surrogates).
    s.as_encoded_bytes()
}

/// A key for people: printable ASCII as is, everything else `\xNN` (and `\\`).
fn show(cli: &Cli, b: &[u8]) -> Vec<u8> {
    if cli.raw {
        b.to_vec()
    } else {
        b.escape_ascii().to_string().into_bytes()
    }
}

fn show_value(cli: &Cli, v: &[u8]) -> Vec<u8> {
    if cli.hex {
        v.iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
            .into_bytes()
    } else {
        show(cli, v)
    }
}

fn out(line: &[u8]) -> kvshm::Result<()> {
    let mut o = std::io::stdout().lock();
    o.write_all(line)?;
    o.write_all(b"\n")?;
    Ok(())
}

/// Print one line per key that `line` accepts (`None` skips it), at most `limit` lines.
/// Stops at the first write error (e.g. a closed pipe) and returns it.
fn print_scan(
    c: &Client,
    prefix: &[u8],
    limit: Option<usize>,
    mut line: impl FnMut(&[u8], &[u8]) -> Option<Vec<u8>>,
) -> kvshm::Result<()> {
    let mut n = 0usize;
    let mut err = None;
    c.scan(prefix, |k, v| {
        if limit.is_some_and(|l| n >= l) {
            return false;
        }
        let Some(l) = line(k, v) else { return true };
        n += 1;
        if let Err(e) = out(&l) {
            err = Some(e);
            return false;
        }
        true
    })?;
    err.map_or(Ok(()), Err)
}

/// Run one command; returns the exit code (0, or a "not found"/"problems" code).
fn run(cli: &Cli) -> kvshm::Result<u8> {
    match &cli.cmd {
        Cmd::Get { key, show_version } => cmd_get(cli, key, *show_version),
        Cmd::Set {
            key,
            value,
            file,
            if_version,
            if_absent,
            ttl,
        } => {
            let cond = match (if_version, if_absent) {
                (Some(v), _) => Some(Some(*v)),
                (None, true) => Some(None),
                (None, false) => None,
            };
            cmd_set(cli, key, value.as_ref(), file.as_deref(), cond, *ttl)
        }
        Cmd::Ttl { key } => match read_only(cli)?.ttl(bytes(key))? {
            kvshm::Ttl::Missing => {
                eprintln!("kvcli: key not found");
                Ok(EXIT_KEY_NOT_FOUND)
            }
            kvshm::Ttl::Persistent => {
                println!("persistent");
                Ok(0)
            }
            kvshm::Ttl::Remaining(d) => {
                println!("{:.3}", d.as_secs_f64());
                Ok(0)
            }
        },
        Cmd::Expire { key, ttl } => {
            if writable(cli)?.expire(bytes(key), *ttl)? {
                println!("OK");
                Ok(0)
            } else {
                eprintln!("kvcli: key not found");
                Ok(EXIT_KEY_NOT_FOUND)
            }
        }
        Cmd::Persist { key } => {
            let c = writable(cli)?;
            if !c.contains(bytes(key))? {
                eprintln!("kvcli: key not found");
                return Ok(EXIT_KEY_NOT_FOUND);
            }
            println!("{}", c.persist(bytes(key))?);
            Ok(0)
        }
        Cmd::Eviction { policy: None } => {
            let c = read_only(cli)?;
            println!("{} ({} evicted)", c.eviction(), c.evicted());
            Ok(0)
        }
        Cmd::Eviction { policy: Some(p) } => {
            writable(cli)?.set_eviction(*p)?;
            println!("OK");
            Ok(0)
        }
        Cmd::Incr { key, delta } => {
            let n = writable(cli)?.incr(bytes(key), delta.unwrap_or(1))?;
            println!("{n}");
            Ok(0)
        }
        Cmd::Append { key, value } => {
            let n = writable(cli)?.append(bytes(key), bytes(value))?;
            println!("{n}");
            Ok(0)
        }
        Cmd::Wait {
            key,
            timeout,
            since,
        } => cmd_wait(cli, key, *timeout, *since),
        Cmd::Del { keys } => cmd_del(cli, keys),
        Cmd::Exists { key } => cmd_exists(cli, key),
        Cmd::Mget { keys } => cmd_mget(cli, keys),
        Cmd::Mset { pairs } => cmd_mset(cli, pairs),
        Cmd::Keys { pattern } => cmd_keys(cli, pattern.as_ref()),
        Cmd::Scan {
            prefix,
            limit,
            values,
        } => cmd_scan(cli, prefix, *limit, *values),
        Cmd::Stats { json } => cmd_stats(cli, *json),
        Cmd::Watch { count, interval } => watch(cli, *count, *interval).map(|_| 0),
        Cmd::Changes { count, from_oldest } => cmd_changes(cli, *count, *from_oldest),
        Cmd::Dump { file } => cmd_dump(cli, file),
        Cmd::Load { file, replace } => cmd_load(cli, file, *replace),
        Cmd::Snapshot => cmd_snapshot(cli),
        Cmd::Verify => cmd_verify(cli),
        Cmd::Release { yes } => cmd_release(cli, *yes),
    }
}

fn cmd_get(cli: &Cli, key: &OsString, show_version: bool) -> kvshm::Result<u8> {
    let c = read_only(cli)?;
    if show_version {
        let Some(v) = c.version(bytes(key))? else {
            eprintln!("kvcli: key not found");
            return Ok(EXIT_KEY_NOT_FOUND);
        };
        println!("{v}");
        return Ok(0);
    }
    let Some(v) = c.get(bytes(key))? else {
        eprintln!("kvcli: key not found");
        return Ok(EXIT_KEY_NOT_FOUND);
    };
    let mut o = std::io::stdout().lock();
    if cli.hex {
        o.write_all(&show_value(cli, &v))?;
        o.write_all(b"\n")?;
    } else {
        o.write_all(&v)?;
        if std::io::stdout().is_terminal() {
            o.write_all(b"\n")?;
        }
    }
    Ok(0)
}

fn cmd_set(
    cli: &Cli,
    key: &OsString,
    value: Option<&OsString>,
    file: Option<&Path>,
    expected: Option<Option<u64>>,
    ttl: Option<Duration>,
) -> kvshm::Result<u8> {
    let c = writable(cli)?;
    // Read at most one byte more than the store takes: `--file /dev/zero` must not eat memory.
    let max = c.limits().1;
    let bounded = |r: &mut dyn Read| -> kvshm::Result<Vec<u8>> {
        let mut buf = Vec::new();
        r.take(max as u64 + 1).read_to_end(&mut buf)?;
        if buf.len() > max {
            return Err(Error::ValueTooLong {
                len: buf.len(),
                max,
            });
        }
        Ok(buf)
    };
    let v = match (value, file) {
        (Some(v), _) if v == "-" => bounded(&mut std::io::stdin().lock())?,
        (Some(v), _) => bytes(v).to_vec(),
        (None, Some(f)) => bounded(&mut std::fs::File::open(f)?)?,
        (None, None) => {
            return Err(Error::InvalidArgument(
                "set needs a VALUE, --file F, or - for stdin".into(),
            ))
        }
    };
    if let Some(expected) = expected {
        match c.put_if_version(bytes(key), &v, expected) {
            Err(Error::Conflict { current, .. }) => {
                match current {
                    Some(cur) => eprintln!("kvcli: conflict: the key is at version {cur}"),
                    None => eprintln!("kvcli: conflict: the key is absent"),
                }
                return Ok(EXIT_CONFLICT);
            }
            r => {
                r?;
            }
        }
    } else if let Some(ttl) = ttl {
        c.put_with_ttl(bytes(key), &v, ttl)?;
    } else {
        c.put(bytes(key), &v)?;
    }
    println!("OK");
    Ok(0)
}

fn cmd_wait(
    cli: &Cli,
    key: &OsString,
    timeout: Option<Duration>,
    since: Option<u64>,
) -> kvshm::Result<u8> {
    let c = writable(cli)?;
    let since = match since {
        Some(v) => Some(v),
        None => c.version(bytes(key))?,
    };
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        // Without --timeout, wait in slices of an hour (each one a single sleep).
        let left = match deadline {
            Some(d) => d.saturating_duration_since(Instant::now()),
            None => Duration::from_secs(3600),
        };
        match c.wait_changed(bytes(key), since, left)? {
            kvshm::WaitResult::Changed(v) => {
                match v {
                    Some(v) => println!("{v}"),
                    None => println!("absent"),
                }
                return Ok(0);
            }
            kvshm::WaitResult::Timeout if deadline.is_some() => {
                eprintln!("kvcli: timed out; the key did not change");
                return Ok(EXIT_TIMEOUT);
            }
            kvshm::WaitResult::Timeout => {}
        }
    }
}

fn cmd_changes(cli: &Cli, count: Option<u64>, from_oldest: bool) -> kvshm::Result<u8> {
    let c = writable(cli)?;
    let mut pos = if from_oldest {
        c.changelog_tail()?
    } else {
        c.changelog_head()?
    };
    let mut shown = 0u64;
    let mut batches = Vec::new();
    loop {
        batches.clear();
        let r = c.read_changes(pos, 256, &mut batches)?;
        for b in &batches {
            if b.overflow {
                out(format!("{} overflow (a transaction too big for the log)", b.seq).as_bytes())?;
            }
            for ch in &b.changes {
                let mut line = format!("{} ", b.seq).into_bytes();
                match &ch.value {
                    Some(v) => {
                        line.extend_from_slice(b"set ");
                        line.extend(show(cli, &ch.key));
                        line.push(b' ');
                        line.extend(show_value(cli, v));
                        if ch.expiry_ms != 0 {
                            line.extend(format!(" expires {}", ch.expiry_ms).bytes());
                        }
                    }
                    None => {
                        line.extend_from_slice(b"del ");
                        line.extend(show(cli, &ch.key));
                    }
                }
                out(&line)?;
                shown += 1;
                if count.is_some_and(|n| shown >= n) {
                    return Ok(0);
                }
            }
        }
        match r {
            kvshm::ChangeRead::UpTo { next } => {
                pos = next;
                if batches.is_empty() {
                    c.wait_changes(pos, Duration::from_secs(1))?;
                }
            }
            kvshm::ChangeRead::Waiting { next } => {
                pos = next;
                std::thread::sleep(Duration::from_millis(1));
            }
            kvshm::ChangeRead::Lost { oldest } => {
                eprintln!("kvcli: fell behind the change log; writes were missed (going on from the oldest kept)");
                pos = oldest;
            }
        }
    }
}

fn cmd_del(cli: &Cli, keys: &[OsString]) -> kvshm::Result<u8> {
    let keys: Vec<&[u8]> = keys.iter().map(bytes).collect();
    println!("{}", writable(cli)?.remove_many(&keys)?);
    Ok(0)
}

fn cmd_exists(cli: &Cli, key: &OsString) -> kvshm::Result<u8> {
    let found = read_only(cli)?.contains(bytes(key))?;
    println!("{found}");
    Ok(if found { 0 } else { EXIT_KEY_NOT_FOUND })
}

fn cmd_mget(cli: &Cli, keys: &[OsString]) -> kvshm::Result<u8> {
    let keys: Vec<&[u8]> = keys.iter().map(bytes).collect();
    for v in read_only(cli)?.get_many(&keys)? {
        match v {
            Some(v) => out(&show_value(cli, &v))?,
            None => out(b"(nil)")?,
        }
    }
    Ok(0)
}

fn cmd_mset(cli: &Cli, pairs: &[OsString]) -> kvshm::Result<u8> {
    if pairs.len() % 2 != 0 {
        return Err(Error::InvalidArgument("mset takes KEY VALUE pairs".into()));
    }
    let items: Vec<(&[u8], &[u8])> = pairs
        .chunks(2)
        .map(|p| (bytes(&p[0]), bytes(&p[1])))
        .collect();
    writable(cli)?.put_many(&items)?;
    println!("OK");
    Ok(0)
}

fn cmd_keys(cli: &Cli, pattern: Option<&OsString>) -> kvshm::Result<u8> {
    let c = read_only(cli)?;
    let pat = pattern.map(|p| bytes(p).to_vec());
    let prefix = pat.as_deref().map(glob::literal_prefix).unwrap_or_default();
    print_scan(&c, &prefix, None, |k, _| {
        pat.as_deref()
            .is_none_or(|p| glob::matches(p, k))
            .then(|| show(cli, k))
    })?;
    Ok(0)
}

fn cmd_scan(cli: &Cli, prefix: &OsString, limit: Option<usize>, values: bool) -> kvshm::Result<u8> {
    let c = read_only(cli)?;
    print_scan(&c, bytes(prefix), limit, |k, v| {
        let mut line = show(cli, k);
        if values {
            line.push(b'\t');
            line.extend(show_value(cli, v));
        }
        Some(line)
    })?;
    Ok(0)
}

fn cmd_stats(cli: &Cli, json: bool) -> kvshm::Result<u8> {
    let c = read_only(cli)?;
    let s = c.stats();
    if json {
        println!("{}", stats_json(cli, &c, &s));
    } else {
        print!("{}", stats_table(cli, &c, &s));
    }
    Ok(0)
}

fn cmd_dump(cli: &Cli, file: &Path) -> kvshm::Result<u8> {
    let c = read_only(cli)?;
    let bar = progress(c.stats().keys, "dumping");
    let info = c.dump_file(file, |n| bar.set_position(n))?;
    bar.finish_and_clear();
    eprintln!(
        "dumped {} keys ({} bytes) to {}",
        info.keys,
        info.file_bytes,
        file.display()
    );
    Ok(0)
}

fn cmd_load(cli: &Cli, file: &Path, replace: bool) -> kvshm::Result<u8> {
    let c = writable(cli)?;
    // One read of the file: validated whole, then applied from the same bytes.
    let snap = c.read_snapshot_file(file)?;
    let bar = progress(snap.info().keys, "loading");
    let info = snap.apply(&c, replace, |n| bar.set_position(n))?;
    bar.finish_and_clear();
    eprintln!("loaded {} keys from {}", info.keys, file.display());
    Ok(0)
}

fn cmd_snapshot(cli: &Cli) -> kvshm::Result<u8> {
    let c = writable(cli)?;
    if c.stats().host_pid.is_none() {
        return Err(Error::InvalidArgument(
            "no host is running for this store".into(),
        ));
    }
    let (_, before) = c.last_snapshot();
    c.request_snapshot()?;
    let start = Instant::now();
    while c.last_snapshot().1 == before {
        if start.elapsed() > Duration::from_secs(600) {
            return Err(Error::InvalidArgument(
                "the host did not write a snapshot (is it started with --snapshot FILE?)".into(),
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("snapshot written");
    Ok(0)
}

fn cmd_verify(cli: &Cli) -> kvshm::Result<u8> {
    let r = read_only(cli)?.verify()?;
    if !r.is_ok() {
        println!("{} problem(s):", r.problems.len());
        for p in &r.problems {
            println!("  {p}");
        }
        return Ok(EXIT_OTHER);
    }
    println!("ok: {} keys, {} blocks checked", r.keys, r.blocks);
    if r.unrecovered > 0 {
        println!(
            "  {} dead client(s) await recovery (the host's housekeeping does it)",
            r.unrecovered
        );
    }
    Ok(0)
}

fn cmd_release(cli: &Cli, yes: bool) -> kvshm::Result<u8> {
    if !yes {
        return Err(Error::InvalidArgument(format!(
            "release removes store {} and all its data for good; add --yes",
            cli.name
        )));
    }
    Host::release_by_name(dir(cli), &cli.name)?;
    println!("released {}", cli.name);
    Ok(0)
}

fn progress(total: u64, what: &'static str) -> indicatif::ProgressBar {
    if total < 100_000 {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(total),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{msg} {bar:40} {pos}/{len} keys ({eta})")
    {
        bar.set_style(style);
    }
    bar.set_message(what);
    bar
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn stats_json(cli: &Cli, c: &Client, s: &Stats) -> String {
    s.to_json(
        &cli.name,
        &c.path().display().to_string(),
        c.last_snapshot(),
        now_unix(),
    )
}

fn stats_table(cli: &Cli, c: &Client, s: &Stats) -> String {
    let mut t = String::new();
    let mut row = |k: &str, v: String| t.push_str(&format!("{k:<16} {v}\n"));
    row("store", format!("{} ({})", cli.name, c.path().display()));
    row(
        "host",
        match s.host_pid {
            Some(pid) => format!(
                "pid {pid}, up {}s",
                now_unix().saturating_sub(s.host_start_unix)
            ),
            None => "not running".into(),
        },
    );
    row("keys", s.keys.to_string());
    row("value bytes", kvshm::human_bytes(s.value_bytes));
    row(
        "memory",
        format!(
            "{} committed, {} used, {} free, {} returned to the OS, max {}",
            kvshm::human_bytes(s.committed_bytes),
            kvshm::human_bytes(s.used_bytes),
            kvshm::human_bytes(s.free_bytes),
            kvshm::human_bytes(s.returned_bytes),
            kvshm::human_bytes(s.max_bytes)
        ),
    );
    row("gets", format!("{} ({} hits)", s.gets, s.hits));
    row("puts", s.puts.to_string());
    row("removes", s.removes.to_string());
    row("revision", s.revision.to_string());
    row("expired", s.expired.to_string());
    row("evicted", format!("{} (policy {})", s.evicted, s.eviction));
    row(
        "stripes",
        format!(
            "{} (max {} keys, avg {:.1})",
            s.stripes,
            s.max_stripe_keys,
            s.keys as f64 / s.stripes.max(1) as f64
        ),
    );
    row("growths", s.growths.to_string());
    row("recoveries", s.recoveries.to_string());
    row("clients", s.clients.len().to_string());
    for cl in &s.clients {
        let ops = cl.gets + cl.puts + cl.removes;
        let mut extra = String::new();
        if !cl.alive {
            extra.push_str(", DEAD (awaiting recovery)");
        }
        if let Some(w) = cl.waiting_on_stripe {
            extra.push_str(&format!(", waiting on stripe {w}"));
        }
        row(
            "",
            format!(
                "client {} pid {} slot {}: {ops} ops{extra}",
                cl.id, cl.pid, cl.slot
            ),
        );
    }
    t
}

fn watch(cli: &Cli, count: Option<u64>, interval: f64) -> kvshm::Result<()> {
    let c = read_only(cli)?;
    let tty = std::io::stdout().is_terminal();
    // `--interval inf` or NaN made from_secs_f64 panic: accept 0.05 s .. 1 day.
    if !interval.is_finite() || interval > 86_400.0 {
        return Err(Error::InvalidArgument(format!(
            "--interval {interval}: give seconds between 0.05 and 86400"
        )));
    }
    let period = Duration::from_secs_f64(interval.max(0.05));
    let mut prev = c.stats();
    let mut at = Instant::now();
    let mut n = 0u64;
    loop {
        std::thread::sleep(period);
        let s = c.stats();
        let dt = at.elapsed().as_secs_f64();
        at = Instant::now();
        let rate = |a: u64, b: u64| (a.saturating_sub(b)) as f64 / dt;
        let mut screen = String::new();
        if tty {
            screen.push_str("\x1b[H\x1b[2J");
        }
        screen.push_str(&format!(
            "{}  gets/s {:.0}  puts/s {:.0}  removes/s {:.0}  hit {:.1}%\n",
            cli.name,
            rate(s.gets, prev.gets),
            rate(s.puts, prev.puts),
            rate(s.removes, prev.removes),
            if s.gets > prev.gets {
                100.0 * (s.hits - prev.hits.min(s.hits)) as f64 / (s.gets - prev.gets) as f64
            } else {
                0.0
            }
        ));
        screen.push_str(&stats_table(cli, &c, &s));
        print!("{screen}");
        std::io::stdout().flush()?;
        prev = s;
        n += 1;
        if count.is_some_and(|k| n >= k) {
            return Ok(());
        }
    }
}
