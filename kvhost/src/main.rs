//! `kvhost`: hosts a kvshm store until it is released. The data path stays in the clients;
//! the host creates or adopts the store, recovers dead clients, grows the segment ahead of
//! demand, checks integrity incrementally, writes snapshots and logs what happens.
#![forbid(unsafe_code)]

mod settings;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use kvshm::{Client, Error, Host};

use settings::{RunArgs, Settings};

const EXIT_OTHER: u8 = 1;
const EXIT_CONFIG: u8 = 2;
const EXIT_INCOMPATIBLE: u8 = 3;
const EXIT_PERMISSION: u8 = 4;
const EXIT_FULL: u8 = 5;
const EXIT_HOST_RUNNING: u8 = 6;
const EXIT_SNAPSHOT: u8 = 7;
const EXIT_NOT_FOUND: u8 = 8;

const AFTER_HELP: &str = "\
With no arguments, hosts the store `default` in /dev/shm in the foreground with sensible
defaults (starts at 4 MiB, may grow to 8 GiB). Clients attach by name:
  Rust: kvshm::Client::open(\"default\")     CLI: kvcli --name default get KEY

Exit codes: 0 ok, 1 other error, 2 bad configuration or usage, 3 store exists but is
incompatible or corrupt, 4 permission denied, 5 out of memory/space (store full),
6 another host already serves the store, 7 bad snapshot (or the final snapshot at shutdown
failed; the store is kept), 8 store not found.
Sizes take units B, KiB, MiB, GiB, TiB; durations ms, s, m, h.
Log level also from RUST_LOG (e.g. RUST_LOG=kvshm=trace for per-operation logs).";

#[derive(Parser, Debug)]
#[command(name = "kvhost", version, about = "Host a kvshm shared-memory key-value store", after_help = AFTER_HELP)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Host a store in the foreground (the default command).
    Run(Box<RunArgs>),
    /// Remove a store for good (refused while a host serves it).
    Release {
        /// Store name.
        name: String,
        /// Directory of the store file.
        #[arg(long, env = "KVSHM_DIR")]
        dir: Option<PathBuf>,
    },
    /// Serve an existing store (hosted by another kvhost, or by nobody) over the Redis
    /// protocol, without hosting it: `kvhost serve --name orders --resp 127.0.0.1:6380`.
    /// Takes the --resp* flags of `run`; the store's own settings are the host's.
    Serve(Box<RunArgs>),
    /// Is a host running for the store? Its pid, uptime, store size and clients.
    Status {
        /// Store name.
        name: String,
        /// Directory of the store file.
        #[arg(long, env = "KVSHM_DIR")]
        dir: Option<PathBuf>,
    },
}

fn exit_code(e: &Error) -> u8 {
    match e {
        Error::Incompatible { .. } | Error::Corrupt { .. } => EXIT_INCOMPATIBLE,
        Error::PermissionDenied { .. } => EXIT_PERMISSION,
        Error::StoreFull { .. } => EXIT_FULL,
        Error::HostRunning { .. } => EXIT_HOST_RUNNING,
        Error::BadSnapshot { .. } | Error::KeyTooLong { .. } | Error::ValueTooLong { .. } => {
            EXIT_SNAPSHOT
        }
        Error::InvalidArgument(_) => EXIT_CONFIG,
        Error::NotFound { .. } => EXIT_NOT_FOUND,
        _ => EXIT_OTHER,
    }
}

fn fail(what: &str, e: &Error) -> ExitCode {
    log::error!("{what}: {e}");
    eprintln!("kvhost: {what}: {e}");
    ExitCode::from(exit_code(e))
}

fn init_logging(s: &Settings) -> Result<(), String> {
    let mut b = env_logger::Builder::new();
    b.parse_filters(&s.log_level);
    if let Ok(spec) = std::env::var("RUST_LOG") {
        b.parse_filters(&spec);
    }
    if let Some(path) = &s.log_file {
        // Trace logs hold keys: 0600, no symlink, a file of ours.
        let f = kvshm::open_private_append(path)
            .map_err(|e| format!("cannot open log file {}: {e}", path.display()))?;
        b.target(env_logger::Target::Pipe(Box::new(f)));
    }
    b.format_timestamp_millis();
    b.try_init().map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Some(Cmd::Release { name, dir }) => release(&name, dir),
        Some(Cmd::Status { name, dir }) => status(&name, dir),
        Some(Cmd::Run(a)) => run(&a),
        Some(Cmd::Serve(a)) => serve(&a),
        None => run(&cli.run),
    }
}

fn release(name: &str, dir: Option<PathBuf>) -> ExitCode {
    let dir = dir.unwrap_or_else(kvshm::default_dir);
    match Host::release_by_name(&dir, name) {
        Ok(()) => {
            println!("released store {name}");
            ExitCode::SUCCESS
        }
        Err(Error::HostRunning { .. }) => {
            eprintln!("kvhost: store {name} is being hosted; stop that kvhost first (SIGTERM)");
            ExitCode::from(EXIT_HOST_RUNNING)
        }
        Err(e) => {
            eprintln!("kvhost: release {name}: {e}");
            ExitCode::from(exit_code(&e))
        }
    }
}

fn status(name: &str, dir: Option<PathBuf>) -> ExitCode {
    let dir = dir.unwrap_or_else(kvshm::default_dir);
    let c = match Client::open_read_only_in(&dir, name) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kvhost: store {name}: {e}");
            return ExitCode::from(exit_code(&e));
        }
    };
    let s = c.stats();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    println!("store:    {name} ({})", c.path().display());
    match s.host_pid {
        Some(pid) => println!(
            "host:     running, pid {pid}, up {}",
            human_duration(now.saturating_sub(s.host_start_unix))
        ),
        None => println!("host:     not running (the data is kept; start kvhost to serve it)"),
    }
    println!(
        "size:     {} committed ({} used), max {}",
        kvshm::human_bytes(s.committed_bytes),
        kvshm::human_bytes(s.used_bytes),
        kvshm::human_bytes(s.max_bytes)
    );
    println!(
        "keys:     {} ({} of values)",
        s.keys,
        kvshm::human_bytes(s.value_bytes)
    );
    println!(
        "eviction: {} ({} evicted, {} expired)",
        s.eviction, s.evicted, s.expired
    );
    match c.changelog_capacity() {
        Some(cap) => println!(
            "log:      change log of {}, {} written since creation, the oldest kept at {}",
            kvshm::human_bytes(cap),
            kvshm::human_bytes(c.changelog_head().unwrap_or(0)),
            c.changelog_tail().unwrap_or(0)
        ),
        None => println!("log:      none (a store made with --changelog SIZE can be replicated)"),
    }
    if c.is_replica() {
        match c.replication_position() {
            Ok(Some((id, off))) => println!(
                "role:     replica (read-only for local writers), holding {id} up to offset {off}"
            ),
            _ => println!("role:     replica (read-only for local writers)"),
        }
    } else {
        println!("role:     primary (writable)");
    }
    println!("clients:  {}", s.clients.len());
    for cl in &s.clients {
        println!(
            "  client {} pid {} slot {}{}: {} gets, {} puts, {} removes",
            cl.id,
            cl.pid,
            cl.slot,
            if cl.alive {
                ""
            } else {
                " (dead, awaiting recovery)"
            },
            cl.gets,
            cl.puts,
            cl.removes
        );
    }
    let (last, count) = c.last_snapshot();
    if count > 0 {
        println!(
            "snapshot: {count} written, last {} ago",
            human_duration(now.saturating_sub(last))
        );
    }
    if s.host_pid.is_some() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_OTHER)
    }
}

/// The merged settings, with logging set up from them (exit code 2 on a bad setting).
fn configured(a: &RunArgs) -> Result<settings::Settings, ExitCode> {
    let s = settings::settings(a).and_then(|s| init_logging(&s).map(|()| s));
    s.map_err(|e| {
        eprintln!("kvhost: {e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

fn run(a: &RunArgs) -> ExitCode {
    let s = match configured(a) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let Some(stop) = stop_flag() else {
        return ExitCode::from(EXIT_OTHER);
    };
    let snap_now = Arc::new(AtomicBool::new(false));
    // Windows has no SIGUSR1: `kvcli snapshot` asks through the store instead.
    #[cfg(unix)]
    let _ = signal_hook::flag::register(signal_hook::consts::SIGUSR1, snap_now.clone());

    let path = match kvshm::store_path(&s.dir, &s.name) {
        Ok(p) => p,
        Err(e) => return fail("bad store name", &e),
    };
    let host = match open_or_create(&s, &path) {
        Ok(h) => h,
        Err(code) => return code,
    };
    if let Err(e) = host.client().set_eviction(s.eviction) {
        return fail("cannot set the eviction policy", &e);
    }
    if s.resp.replica_of.is_some() {
        if !s.resp.enabled() {
            eprintln!("kvhost: --replica-of needs --resp ADDR (replicas announce their port)");
            return ExitCode::from(2);
        }
        // The host's own upkeep (expiry passes, compaction) goes on in a replica store.
        host.set_replication_applier(true);
    } else {
        if host.is_replica() {
            if let Err(e) = host.set_replica(false) {
                return fail("cannot make the store writable", &e);
            }
            log::warn!("the store was left a replica by an earlier run; without --replica-of it is writable (a primary) now");
        }
        // A primary's writes diverge from any stream it followed: a later --replica-of
        // must not resume from where that stream was.
        if host.has_changelog() {
            if let Err(e) = host.set_replication_position(None) {
                return fail("cannot clear the replication position", &e);
            }
        }
    }
    let st = host.stats();
    println!(
        "kvhost: hosting store '{}' at {} (pid {}): {} keys, {} committed, max {} ({} when full), keys <= {} B, values <= {} B",
        s.name,
        path.display(),
        std::process::id(),
        st.keys,
        kvshm::human_bytes(st.committed_bytes),
        kvshm::human_bytes(st.max_bytes),
        st.eviction,
        st.max_key_len,
        st.max_value_len
    );
    println!(
        "kvhost: clients attach with kvshm::Client::open(\"{}\") or `kvcli --name {} ...`; Ctrl-C stops (data kept{})",
        s.name,
        s.name,
        if s.release_on_exit { ", then released" } else { "" }
    );
    let control = Arc::new(kvhost::resp::Control {
        stop: stop.clone(),
        ..Default::default()
    });
    let resp = match start_resp(&s, &control) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kvhost: {e}");
            log::error!("{e}");
            // As at any other exit: --release-on-exit removes the store.
            if s.release_on_exit {
                let _ = host.release();
            } else {
                drop(host);
            }
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let _ = std::io::stdout().flush();
    log::info!("hosting {} (pid {})", path.display(), std::process::id());

    let mut cursor = 0usize;
    let mut known: BTreeMap<u64, u64> = BTreeMap::new();
    let mut last_snapshot = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        match host.housekeeping(&mut cursor, 8) {
            Ok(hk) => {
                if hk.recovered > 0 {
                    log::warn!("recovered {} dead client(s)", hk.recovered);
                }
                if hk.grew_by > 0 {
                    log::info!(
                        "grew the store by {} ahead of demand",
                        kvshm::human_bytes(hk.grew_by)
                    );
                }
                for p in &hk.problems {
                    log::error!("integrity check: {p}");
                }
                if hk.compacted > 0 {
                    log::debug!("compacted {} stripe(s)", hk.compacted);
                }
                let r = hk.reclaim;
                if r.released + r.punched + r.moved > 0 {
                    log::debug!(
                        "reclaim: {} chunk(s) back to the pool, {} given back to the OS, {} \
                         record(s) moved out of sparse chunks",
                        r.released,
                        r.punched,
                        r.moved
                    );
                }
                if hk.expired > 0 {
                    log::debug!("freed {} expired key(s)", hk.expired);
                }
                if hk.snapshot_requested {
                    snap_now.store(true, Ordering::Relaxed);
                }
            }
            Err(e) => log::error!("housekeeping: {e}"),
        }
        log_clients(&host, &mut known);
        let due = s
            .snapshot_every
            .is_some_and(|every| last_snapshot.elapsed() >= every);
        if snap_now.swap(false, Ordering::Relaxed) || due {
            last_snapshot = Instant::now();
            match &s.snapshot {
                Some(p) => {
                    write_snapshot(&host, p, resp.as_ref());
                }
                None => log::warn!("snapshot requested but no --snapshot FILE is configured"),
            }
        }
    }
    log::info!("stopping");
    if let Some(r) = resp {
        r.stop();
        log::info!("RESP server stopped");
    }
    // The final snapshot is what a reboot comes back to: if it fails, say so in the exit code
    // (the data stays in the store either way, and release-on-exit is skipped). SHUTDOWN
    // NOSAVE from a RESP client skips it.
    let nosave = control.nosave.load(Ordering::Relaxed);
    if nosave {
        log::info!("SHUTDOWN NOSAVE: no final snapshot");
    }
    let final_snapshot_failed = !nosave
        && s.snapshot
            .as_ref()
            .is_some_and(|p| !write_snapshot(&host, p, None));
    if final_snapshot_failed {
        eprintln!("kvhost: the final snapshot failed (see the log); the store is kept");
        drop(host);
        return ExitCode::from(EXIT_SNAPSHOT);
    }
    if s.release_on_exit {
        match host.release() {
            Ok(()) => log::info!("released {}", path.display()),
            Err(e) => return fail("release", &e),
        }
    } else {
        log::info!("data kept in {} for the next host", path.display());
        drop(host);
    }
    ExitCode::SUCCESS
}

/// A flag SIGINT and SIGTERM set (`None`, said on stderr, if they cannot be handled).
fn stop_flag() -> Option<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(sig, stop.clone()) {
            eprintln!("kvhost: cannot handle signals: {e}");
            return None;
        }
    }
    Some(stop)
}

/// `kvhost serve`: the RESP server alone, as a client of a store that exists.
fn serve(a: &RunArgs) -> ExitCode {
    let s = match configured(a) {
        Ok(s) if s.resp.enabled() => s,
        Ok(_) => {
            eprintln!("kvhost serve: give --resp ADDR, --resp-unix PATH and/or --http ADDR");
            return ExitCode::from(EXIT_CONFIG);
        }
        Err(code) => return code,
    };
    // The store must exist: serving does not create one (that is the host's job).
    let client = match Client::open_in(&s.dir, &s.name) {
        Ok(c) => c,
        Err(e) => return fail(&format!("cannot attach to store {}", s.name), &e),
    };
    let Some(stop) = stop_flag() else {
        return ExitCode::from(EXIT_OTHER);
    };
    let control = Arc::new(kvhost::resp::Control {
        stop: stop.clone(),
        ..Default::default()
    });
    let server = match start_resp(&s, &control) {
        Ok(Some(r)) => r,
        Ok(None) => return ExitCode::from(EXIT_CONFIG),
        Err(e) => {
            eprintln!("kvhost: {e}");
            log::error!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    println!(
        "kvhost: serving store '{}' at {} over RESP (not hosting it{}); Ctrl-C stops",
        s.name,
        client.path().display(),
        match client.stats().host_pid {
            Some(pid) => format!(": kvhost pid {pid} hosts it"),
            None => ": no host runs; start one for housekeeping and snapshots".into(),
        }
    );
    let _ = std::io::stdout().flush();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
    server.stop();
    log::info!("RESP server stopped");
    ExitCode::SUCCESS
}

/// Start the RESP server if `--resp`/`--resp-unix` asked for it, and say where it listens.
fn start_resp(
    s: &Settings,
    control: &Arc<kvhost::resp::Control>,
) -> Result<Option<kvhost::resp::Server>, String> {
    let r = &s.resp;
    if !r.enabled() {
        return Ok(None);
    }
    let opts = r.clone();
    let server = kvhost::resp::start(opts, control.clone()).map_err(|e| e.to_string())?;
    if let Some((h, p)) = r.replica_of.clone() {
        println!("kvhost: replica of {h}:{p} (read-only for every other writer)");
        server
            .shared()
            .set_replica_of(Some((h, p)))
            .map_err(|e| format!("cannot replicate: {e}"))?;
    }
    for a in &server.tcp_addrs {
        println!(
            "kvhost: Redis protocol on {a}{}: redis-cli -h {} -p {}",
            if r.requirepass.is_some() {
                " (AUTH required)"
            } else {
                ""
            },
            a.ip(),
            a.port()
        );
        log::info!("RESP listening on {a}");
    }
    for a in &server.http_addrs {
        println!(
            "kvhost: HTTP API, /metrics and dashboard on http://{a}/{}",
            if r.http_token.is_some() {
                " (bearer token required)"
            } else {
                ""
            }
        );
        log::info!("HTTP listening on {a}");
    }
    for p in &r.unix {
        println!(
            "kvhost: Redis protocol on unix socket {}: redis-cli -s {}",
            p.display(),
            p.display()
        );
        log::info!("RESP listening on {}", p.display());
    }
    Ok(Some(server))
}

/// Adopt the existing store (recovering and verifying it), or create it (loading the
/// snapshot, if one is configured and exists).
fn open_or_create(s: &Settings, path: &Path) -> Result<Host, ExitCode> {
    if path.exists() {
        let host = Host::open_existing_in(&s.dir, &s.name)
            .map_err(|e| fail("cannot adopt the store", &e))?;
        let report = host.verify().map_err(|e| fail("verify", &e))?;
        if !report.is_ok() {
            for p in &report.problems {
                log::error!("verify: {p}");
                eprintln!("kvhost: verify: {p}");
            }
            eprintln!("kvhost: the existing store is damaged; not serving it (dump what you can with kvcli, then release it)");
            return Err(ExitCode::from(EXIT_INCOMPATIBLE));
        }
        log::info!(
            "adopted existing store: {} keys, {} dead client(s) recovered, verify ok",
            report.keys,
            report.recovered
        );
        if report.unrecovered > 0 {
            // They died between the recovery pass and the check; housekeeping recovers them.
            log::warn!(
                "{} client(s) died while the store was being verified",
                report.unrecovered
            );
        }
        return Ok(host);
    }
    let Some(snap) = s.snapshot.as_ref().filter(|p| p.exists()) else {
        let host =
            Host::create(&s.name, &s.config).map_err(|e| fail("cannot create the store", &e))?;
        log::info!("created {}", path.display());
        return Ok(host);
    };
    // Loaded under a hidden name and put in place whole: no client sees it half loaded.
    let t = Instant::now();
    let loaded = Host::create_filled(&s.name, &s.config, |host| {
        host.load_file(snap, false, |_| {})
    });
    match loaded {
        Ok((host, info)) => {
            log::info!(
                "loaded snapshot {} into new store {}: {} keys, {} in {:?}",
                snap.display(),
                path.display(),
                info.keys,
                kvshm::human_bytes(info.value_bytes),
                t.elapsed()
            );
            Ok(host)
        }
        Err(e) => Err(fail(
            &format!("cannot create the store from snapshot {}", snap.display()),
            &e,
        )),
    }
}

/// Write a snapshot; returns whether it was written (a failure is logged).
fn write_snapshot(host: &Host, path: &Path, resp: Option<&kvhost::resp::Server>) -> bool {
    let t = Instant::now();
    match host.dump_file(path, |_| {}) {
        Ok(info) => {
            // The duration first: whoever sees the new count sees its duration.
            if let Some(r) = resp {
                r.shared()
                    .last_snapshot_us
                    .store(t.elapsed().as_micros() as u64, Ordering::Release);
            }
            host.note_snapshot();
            log::info!(
                "snapshot written to {}: {} keys, {} in {:?}",
                path.display(),
                info.keys,
                kvshm::human_bytes(info.file_bytes),
                t.elapsed()
            );
            true
        }
        Err(e) => {
            log::error!(
                "snapshot to {} failed (previous one kept): {e}",
                path.display()
            );
            false
        }
    }
}

/// Log clients that attached or detached since the last pass.
fn log_clients(host: &Host, known: &mut BTreeMap<u64, u64>) {
    let now: BTreeMap<u64, u64> = host.stats().clients.iter().map(|c| (c.id, c.pid)).collect();
    for (id, pid) in &now {
        if !known.contains_key(id) {
            log::info!("client {id} (pid {pid}) attached");
        }
    }
    for (id, pid) in known.iter() {
        if !now.contains_key(id) {
            log::info!("client {id} (pid {pid}) detached");
        }
    }
    *known = now;
}

fn human_duration(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m{}s", s / 60, s % 60),
        s => format!("{}h{}m", s / 3600, s % 3600 / 60),
    }
}
