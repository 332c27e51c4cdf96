//! Settings: built-in defaults, then an optional TOML file, then command-line flags.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use kvshm::{parse_duration, Config};
use serde::Deserialize;

#[derive(Args, Debug, Default, Clone)]
pub struct RunArgs {
    /// Store name (default `default`).
    #[arg(long, env = "KVSHM_NAME")]
    pub name: Option<String>,
    /// Directory of the store file (default /dev/shm; on Windows %LOCALAPPDATA%\kvshm).
    #[arg(long, env = "KVSHM_DIR")]
    pub dir: Option<PathBuf>,
    /// TOML file with any of these settings (flags override it).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Memory committed at creation (default 4MiB).
    #[arg(long)]
    pub initial_size: Option<String>,
    /// Largest size the store may grow to (default 8GiB).
    #[arg(long)]
    pub max_size: Option<String>,
    /// Longest key (default 1KiB).
    #[arg(long)]
    pub max_key: Option<String>,
    /// Longest value (default 1MiB).
    #[arg(long)]
    pub max_value: Option<String>,
    /// Index stripes, a power of two (default 1024).
    #[arg(long)]
    pub stripes: Option<u32>,
    /// What a full store (at --max-size) does: noeviction (default: writes fail), or evict
    /// with allkeys-lru, volatile-lru, allkeys-random, volatile-random, volatile-ttl (Redis's
    /// maxmemory-policy names). Set for every process using the store.
    #[arg(long, value_name = "POLICY")]
    pub eviction: Option<String>,
    /// Permission bits of the store file (default 0600).
    #[arg(long)]
    pub mode: Option<String>,
    /// Keep a change log of this size in a store created now (e.g. 64MiB; default none):
    /// every write of every process is logged, so the store can be replicated (replicas
    /// connect with PSYNC, as to Redis). Applies when the store is created.
    #[arg(long, value_name = "SIZE")]
    pub changelog: Option<String>,
    /// Bytes of the replication stream kept for a replica that reconnects (partial resync;
    /// default 16MiB).
    #[arg(long, value_name = "SIZE")]
    pub repl_backlog_size: Option<String>,
    /// Snapshot file: loaded when the store does not exist yet, written on request
    /// (`kvcli snapshot`, SIGUSR1), periodically and at shutdown.
    #[arg(long)]
    pub snapshot: Option<PathBuf>,
    /// Write a snapshot this often (e.g. 5m); needs --snapshot.
    #[arg(long)]
    pub snapshot_every: Option<String>,
    /// Log to this file instead of stderr.
    #[arg(long)]
    pub log_file: Option<PathBuf>,
    /// error, warn, info, debug or trace (default info).
    #[arg(long)]
    pub log_level: Option<String>,
    /// Remove the store when the host exits (default: keep the data for the next host).
    #[arg(long)]
    pub release_on_exit: bool,
    /// Serve the Redis protocol (RESP2/RESP3) on this TCP address, e.g. 127.0.0.1:6379;
    /// repeatable. Off unless given.
    #[arg(long, value_name = "ADDR")]
    pub resp: Vec<String>,
    /// Serve the Redis protocol on this Unix socket (created 0600); repeatable.
    #[arg(long, value_name = "PATH")]
    pub resp_unix: Vec<PathBuf>,
    /// Password of the RESP `default` user (AUTH). Also from KVHOST_REQUIREPASS.
    #[arg(long, env = "KVHOST_REQUIREPASS", hide_env_values = true)]
    pub requirepass: Option<String>,
    /// yes (default): refuse a non-loopback --resp address without --requirepass.
    #[arg(long, value_name = "yes|no")]
    pub protected_mode: Option<String>,
    /// Most RESP connections at once (default 10000).
    #[arg(long)]
    pub max_clients: Option<usize>,
    /// Close RESP connections idle this long (e.g. 300s; default 0 = never).
    #[arg(long)]
    pub timeout: Option<String>,
    /// RESP worker threads (default: the number of CPUs).
    #[arg(long)]
    pub resp_threads: Option<usize>,
    /// How long a RESP/HTTP worker spins before it sleeps waiting for requests (default
    /// 20us; 0us never spins: less CPU when lightly loaded, ~25% fewer requests/s when busy).
    #[arg(long)]
    pub resp_spin: Option<String>,
    /// Serve the HTTP API, /metrics and the dashboard on this address, e.g. 127.0.0.1:8080;
    /// repeatable. Off unless given.
    #[arg(long, value_name = "ADDR")]
    pub http: Vec<String>,
    /// Bearer token the HTTP API requires (needed for a non-loopback --http). Also from
    /// KVHOST_HTTP_TOKEN.
    #[arg(long, env = "KVHOST_HTTP_TOKEN", hide_env_values = true)]
    pub http_token: Option<String>,
    /// Most bytes of one unfinished RESP command buffered per connection (default 1GiB,
    /// Redis's client-query-buffer-limit; never less than the longest value).
    #[arg(long)]
    pub max_query_buffer: Option<String>,
    /// Keep the store a read-only copy of this primary (a kvhost with --changelog, or a Redis
    /// server), e.g. 10.0.0.1:6379; needs --resp. Without it, a store left a replica by an
    /// earlier run becomes writable (a primary) again.
    #[arg(long, value_name = "HOST:PORT")]
    pub replica_of: Option<String>,
    /// The primary's password (its --requirepass). Also from KVHOST_MASTERAUTH.
    #[arg(long, env = "KVHOST_MASTERAUTH", hide_env_values = true)]
    pub masterauth: Option<String>,
}

/// Settings after defaults, the config file and flags were merged.
#[derive(Debug)]
pub struct Settings {
    pub name: String,
    pub dir: PathBuf,
    pub config: Config,
    pub snapshot: Option<PathBuf>,
    pub snapshot_every: Option<Duration>,
    pub log_file: Option<PathBuf>,
    pub log_level: String,
    pub release_on_exit: bool,
    /// The store's eviction policy, set when the host starts.
    pub eviction: kvshm::Policy,
    /// The RESP and HTTP servers' options (off when no address is given).
    pub resp: kvhost::resp::Options,
}

/// The servers' options from flags and file; `settings` fills in the store and snapshot.
fn resp_settings(a: &RunArgs, f: &FileConfig) -> Result<kvhost::resp::Options, String> {
    let addrs: Vec<String> = if a.resp.is_empty() {
        f.resp.clone().unwrap_or_default()
    } else {
        a.resp.clone()
    };
    let mut tcp = Vec::new();
    for s in &addrs {
        use std::net::ToSocketAddrs;
        let mut it = s
            .to_socket_addrs()
            .map_err(|e| format!("bad --resp address {s:?}: {e} (e.g. 127.0.0.1:6379)"))?;
        tcp.push(
            it.next()
                .ok_or_else(|| format!("--resp {s:?}: no address"))?,
        );
    }
    let http_strs: Vec<String> = if a.http.is_empty() {
        f.http.clone().unwrap_or_default()
    } else {
        a.http.clone()
    };
    let mut http = Vec::new();
    for s in &http_strs {
        use std::net::ToSocketAddrs;
        let mut it = s
            .to_socket_addrs()
            .map_err(|e| format!("bad --http address {s:?}: {e} (e.g. 127.0.0.1:8080)"))?;
        http.push(
            it.next()
                .ok_or_else(|| format!("--http {s:?}: no address"))?,
        );
    }
    let unix = if a.resp_unix.is_empty() {
        f.resp_unix.clone().unwrap_or_default()
    } else {
        a.resp_unix.clone()
    };
    let protected = match a
        .protected_mode
        .clone()
        .or(f.protected_mode.clone())
        .as_deref()
    {
        None | Some("yes") => true,
        Some("no") => false,
        Some(x) => return Err(format!("--protected-mode {x:?}: yes or no")),
    };
    let timeout = match a.timeout.clone().or(f.timeout.clone()) {
        None => None,
        Some(t) if t.trim() == "0" => None,
        Some(t) => Some(parse_duration(&t)?),
    };
    let threads = a
        .resp_threads
        .or(f.resp_threads)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    if threads == 0 || threads > 1024 {
        return Err(format!("--resp-threads {threads}: 1 to 1024"));
    }
    let spin = match a.resp_spin.clone().or(f.resp_spin.clone()) {
        None => Duration::from_micros(20),
        Some(t) if t.trim() == "0" => Duration::ZERO,
        Some(t) => parse_duration(&t)?,
    };
    if spin > Duration::from_millis(10) {
        return Err(format!("--resp-spin {spin:?}: at most 10ms"));
    }
    let max_query_buffer = match a.max_query_buffer.clone().or(f.max_query_buffer.clone()) {
        Some(s) => usize::try_from(parse_size(&s)?).unwrap_or(usize::MAX),
        None => 1 << 30,
    };
    Ok(kvhost::resp::Options {
        dir: PathBuf::new(),
        name: String::new(),
        snapshot: None,
        snapshot_every: None,
        output_chunk: 64 * 1024,
        tcp,
        http,
        http_token: a
            .http_token
            .clone()
            .or(f.http_token.clone())
            .filter(|t| !t.is_empty()),
        unix,
        requirepass: a
            .requirepass
            .clone()
            .or(f.requirepass.clone())
            .filter(|p| !p.is_empty()),
        protected,
        max_clients: a.max_clients.or(f.max_clients).unwrap_or(10_000),
        timeout,
        threads,
        spin,
        max_query_buffer,
        replica_of: match a.replica_of.clone().or(f.replica_of.clone()) {
            Some(s) => {
                let (h, p) = s
                    .rsplit_once(':')
                    .ok_or_else(|| format!("--replica-of {s}: use HOST:PORT"))?;
                let p: u16 = p
                    .parse()
                    .map_err(|_| format!("--replica-of {s}: bad port"))?;
                Some((h.trim_matches(|c| c == '[' || c == ']').to_string(), p))
            }
            None => None,
        },
        masterauth: a
            .masterauth
            .clone()
            .or(f.masterauth.clone())
            .filter(|p| !p.is_empty()),
        repl_backlog: match a.repl_backlog_size.clone().or(f.repl_backlog_size.clone()) {
            Some(s) => usize::try_from(parse_size(&s)?).unwrap_or(usize::MAX),
            None => 16 << 20,
        },
    })
}

/// Merge the built-in defaults, the `--config` file and the flags (flags win).
pub fn settings(a: &RunArgs) -> Result<Settings, String> {
    let f = match &a.config {
        Some(p) => FileConfig::load(p)?,
        None => FileConfig::default(),
    };
    let resp = resp_settings(a, &f)?;
    let pick = |flag: &Option<String>, file: &Option<String>| flag.clone().or(file.clone());
    let mut cfg = Config::default();
    if let Some(s) = pick(&a.initial_size, &f.initial_size) {
        cfg = cfg.initial_size(parse_size(&s)?);
    }
    if let Some(s) = pick(&a.max_size, &f.max_size) {
        cfg = cfg.max_size(parse_size(&s)?);
    }
    if let Some(s) = pick(&a.max_key, &f.max_key) {
        cfg = cfg.max_key_len(parse_size(&s)? as usize);
    }
    if let Some(s) = pick(&a.max_value, &f.max_value) {
        cfg = cfg.max_value_len(parse_size(&s)? as usize);
    }
    if let Some(n) = a.stripes.or(f.stripes) {
        cfg = cfg.stripes(n);
    }
    if let Some(m) = pick(&a.mode, &f.mode) {
        cfg = cfg.mode(parse_mode(&m)?);
    }
    if let Some(s) = pick(&a.changelog, &f.changelog) {
        cfg = cfg.changelog(parse_size(&s)?);
    }
    let dir = a.dir.clone().or(f.dir).unwrap_or_else(kvshm::default_dir);
    cfg = cfg.dir(&dir);
    let name = a
        .name
        .clone()
        .or(f.name)
        .unwrap_or_else(|| "default".into());
    kvshm::validate_name(&name).map_err(|e| e.to_string())?;
    let snapshot = a.snapshot.clone().or(f.snapshot);
    let snapshot_every = pick(&a.snapshot_every, &f.snapshot_every)
        .map(|s| parse_duration(&s))
        .transpose()?;
    if snapshot_every.is_some() && snapshot.is_none() {
        return Err("--snapshot-every needs --snapshot FILE".into());
    }
    let eviction = match pick(&a.eviction, &f.eviction) {
        Some(p) => p.parse::<kvshm::Policy>().map_err(|e| e.to_string())?,
        None => kvshm::Policy::NoEviction,
    };
    let log_level = pick(&a.log_level, &f.log_level).unwrap_or_else(|| "info".into());
    if log_level.parse::<log::LevelFilter>().is_err() {
        return Err(format!(
            "bad log level {log_level:?} (error, warn, info, debug, trace)"
        ));
    }
    let resp = kvhost::resp::Options {
        dir: dir.clone(),
        name: name.clone(),
        snapshot: snapshot.clone(),
        snapshot_every,
        ..resp
    };
    Ok(Settings {
        name,
        dir,
        config: cfg,
        snapshot,
        snapshot_every,
        log_file: a.log_file.clone().or(f.log_file),
        log_level,
        release_on_exit: a.release_on_exit || f.release_on_exit.unwrap_or(false),
        eviction,
        resp,
    })
}

/// The keys of the config file (all optional; same names as the long flags, with `_`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub name: Option<String>,
    pub dir: Option<PathBuf>,
    pub initial_size: Option<String>,
    pub max_size: Option<String>,
    pub max_key: Option<String>,
    pub max_value: Option<String>,
    pub changelog: Option<String>,
    pub repl_backlog_size: Option<String>,
    pub replica_of: Option<String>,
    pub masterauth: Option<String>,
    pub stripes: Option<u32>,
    pub eviction: Option<String>,
    pub mode: Option<String>,
    pub snapshot: Option<PathBuf>,
    pub snapshot_every: Option<String>,
    pub log_file: Option<PathBuf>,
    pub log_level: Option<String>,
    pub release_on_exit: Option<bool>,
    pub resp: Option<Vec<String>>,
    pub resp_unix: Option<Vec<PathBuf>>,
    pub requirepass: Option<String>,
    pub protected_mode: Option<String>,
    pub max_clients: Option<usize>,
    pub timeout: Option<String>,
    pub resp_threads: Option<usize>,
    pub resp_spin: Option<String>,
    pub max_query_buffer: Option<String>,
    pub http: Option<Vec<String>>,
    pub http_token: Option<String>,
}

impl FileConfig {
    pub fn load(path: &std::path::Path) -> Result<FileConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("config file {}: {e}", path.display()))
    }
}

/// Parse a size: a number with an optional unit B, K/KB/KiB, M/MB/MiB, G/GB/GiB, T/TB/TiB
/// (all powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '_')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .replace('_', "")
        .parse()
        .map_err(|_| format!("bad size {s:?}"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        u => {
            return Err(format!(
                "bad size unit {u:?} in {s:?} (use B, KiB, MiB, GiB, TiB)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} too large"))
}

/// Parse an octal file mode such as `0600` or `0o640`.
pub fn parse_mode(s: &str) -> Result<u32, String> {
    let t = s.trim().trim_start_matches("0o");
    let m = u32::from_str_radix(t, 8).map_err(|_| format!("bad mode {s:?} (octal, e.g. 0600)"))?;
    if m > 0o777 {
        return Err(format!("mode {s:?}: permission bits only"));
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_parse() {
        assert_eq!(parse_size("4MiB").unwrap(), 4 << 20);
        assert_eq!(parse_size("8 GiB").unwrap(), 8 << 30);
        assert_eq!(parse_size("1k").unwrap(), 1024);
        assert_eq!(parse_size("100").unwrap(), 100);
        assert!(parse_size("4 parsecs").is_err());
        assert!(parse_size("x").is_err());
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("5y").is_err());
        assert_eq!(parse_mode("0600").unwrap(), 0o600);
        assert_eq!(parse_mode("0o640").unwrap(), 0o640);
        assert!(parse_mode("999").is_err());
    }

    #[test]
    fn config_file_rejects_unknown_keys() {
        assert!(toml::from_str::<FileConfig>("max_size = \"1GiB\"").is_ok());
        assert!(toml::from_str::<FileConfig>("max_sise = \"1GiB\"").is_err());
    }
}
