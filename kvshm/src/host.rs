//! `Host`: creates, owns and releases a store. Also a client (it derefs to `Client`).

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use crate::client::Client;
use crate::config::default_dir;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::segment;
use crate::store::{now_unix, Store};

/// The owner of a store. The store lives until [`Host::release`]; dropping a `Host` (or its
/// process dying) leaves the data in place for the next host (`Host::open_existing`), and
/// clients keep working meanwhile. Only one host holds a store at a time.
///
/// ```no_run
/// let host = kvshm::Host::create("orders", &kvshm::Config::default())?;
/// host.put(b"k", b"v")?; // a host is also a client
/// // ... other processes: kvshm::Client::open("orders")
/// host.release()?;
/// # Ok::<(), kvshm::Error>(())
/// ```
#[derive(Debug)]
pub struct Host {
    client: Client,
    /// When the last reclaim pass ran (housekeeping runs one per `RECLAIM_PERIOD`).
    pub(crate) last_reclaim: std::sync::Mutex<Option<std::time::Instant>>,
    /// Set when the file system refused to punch a hole: no more reclaim passes.
    pub(crate) reclaim_unsupported: std::sync::atomic::AtomicBool,
}

impl Host {
    /// Create and format store `name` (in `cfg`'s directory) and become its host. Fails with
    /// `AlreadyExists` if the store file exists.
    pub fn create(name: &str, cfg: &Config) -> Result<Host> {
        let st = Store::format(name, cfg)?;
        let path = st.path.clone();
        Host::adopt(st).inspect_err(|_| {
            let _ = segment::remove_file(&path);
        })
    }

    /// Create store `name` with its first contents: the store is formatted under a hidden
    /// name in the same directory (`.kvshm.<name>.loading-<pid>-<random>`, which no client
    /// opens), `fill` runs with this host (e.g. loading a snapshot), and only then does the
    /// store get its name, with a rename that never replaces an existing file
    /// (`AlreadyExists` if another store took the name meanwhile). A client therefore sees
    /// either no store or the whole of it, never a store half loaded. If `fill` fails or the
    /// process dies, the hidden file is removed (by the next call for this name or the next
    /// `open_existing` of it, if the process died: a leftover nobody hosts).
    pub fn create_filled<T>(
        name: &str,
        cfg: &Config,
        fill: impl FnOnce(&Host) -> Result<T>,
    ) -> Result<(Host, T)> {
        let path = segment::store_path(&cfg.dir, name)?;
        if path.exists() {
            return Err(Error::AlreadyExists {
                path: path.display().to_string(),
            });
        }
        remove_abandoned_loads(&cfg.dir, name);
        let hidden = cfg.dir.join(format!(
            ".kvshm.{name}.loading-{}-{:08x}",
            segment::pid(),
            segment::random_u64() as u32
        ));
        let mut host = Host::adopt(Store::format_at(hidden.clone(), cfg)?).inspect_err(|_| {
            let _ = segment::remove_file(&hidden);
        })?;
        let placed = fill(&host).and_then(|t| {
            segment::rename_noreplace(&hidden, &path)?;
            Ok(t)
        });
        match placed {
            Ok(t) => {
                host.client.st.path = path;
                log::info!("{} is in place", host.client.path().display());
                Ok((host, t))
            }
            Err(e) => {
                let _ = segment::remove_file(&hidden);
                Err(e)
            }
        }
    }

    /// Become the host of an existing store in [`default_dir`] (after a host restart):
    /// validates it, recovers clients that died meanwhile, and keeps all data.
    pub fn open_existing(name: &str) -> Result<Host> {
        Host::open_existing_in(default_dir(), name)
    }

    /// [`Host::open_existing`] in `dir`.
    pub fn open_existing_in(dir: impl AsRef<Path>, name: &str) -> Result<Host> {
        let path = segment::store_path(dir.as_ref(), name)?;
        // A load that died between the two steps of its rename leaves a second name of this
        // very file: drop it (before we hold the host lock, which would hide it as unowned).
        remove_abandoned_loads(dir.as_ref(), name);
        let host = Host::adopt(Store::attach(&path, true)?)?;
        let n = host.client.recover_dead_clients()?;
        if n > 0 {
            log::warn!(
                "recovered {n} dead client(s) while adopting {}",
                path.display()
            );
        }
        Ok(host)
    }

    fn adopt(st: Store) -> Result<Host> {
        // A host lock held while no host pid is written is a host coming or going: one that
        // has not stored its pid yet, or one that has exited while a child forked by some
        // process of it (between fork and exec, or not yet exited) still shares the locked
        // file description. Both pass within moments: wait a little for them (a test process
        // spawning children in other threads met the second in CI).
        let patience = std::time::Instant::now() + std::time::Duration::from_millis(500);
        while !segment::ofd_try_lock(&st.file, segment::HOST_LOCK_BYTE)? {
            let pid = st.mem.header().host_pid.load(Ordering::Relaxed);
            if pid != 0 || std::time::Instant::now() >= patience {
                return Err(Error::HostRunning { pid });
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        st.hosting.store(true, Ordering::Relaxed);
        let h = st.mem.header();
        h.host_pid.store(segment::pid(), Ordering::Relaxed);
        h.host_start_unix.store(now_unix(), Ordering::Relaxed);
        let client = Client::from_store(st)?;
        log::info!("hosting {}", client.path().display());
        Ok(Host {
            client,
            last_reclaim: std::sync::Mutex::new(None),
            reclaim_unsupported: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The host's own client handle.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Remove the store for good. Attached clients keep their mapping until they detach, but
    /// nobody can attach any more.
    pub fn release(self) -> Result<()> {
        self.remove_store_file()
    }

    /// Remove the store file while keeping this host (and its mapping) alive; used where the
    /// host cannot be consumed (the C ABI). Nobody can attach afterwards.
    pub fn remove_store_file(&self) -> Result<()> {
        let path: PathBuf = self.client.path().to_path_buf();
        segment::remove_file(&path)?;
        log::info!("released {}", path.display());
        Ok(())
    }

    /// Remove the store file of `name` in `dir` without attaching (e.g. a store whose host is
    /// gone). Refuses while a host holds it.
    pub fn release_by_name(dir: impl AsRef<Path>, name: &str) -> Result<()> {
        let path = segment::store_path(dir.as_ref(), name)?;
        let file = segment::open_file(&path, true)?;
        if !segment::ofd_try_lock(&file, segment::HOST_LOCK_BYTE)? {
            let pid = Store::attach(&path, false)
                .map(|st| st.mem.header().host_pid.load(Ordering::Relaxed))
                .unwrap_or(0);
            return Err(Error::HostRunning { pid });
        }
        segment::remove_file(&path)
    }
}

impl Deref for Host {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if self.client.not_forked().is_err() {
            return; // a forked child's copy: the host is the parent
        }
        self.client
            .st
            .mem
            .header()
            .host_pid
            .store(0, Ordering::Relaxed);
    }
}

/// Remove the hidden files of earlier [`Host::create_filled`] calls for `name` whose process
/// died before the store got its name (nobody holds their host lock). Best effort.
fn remove_abandoned_loads(dir: &Path, name: &str) {
    let prefix = format!(".kvshm.{name}.loading-");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let file_name = e.file_name();
        let Some(rest) = file_name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        // Only our own pattern (`<pid>-<hex>`), not another store's longer name.
        if rest.contains('.') {
            continue;
        }
        let p = e.path();
        let abandoned = segment::open_file(&p, true)
            .and_then(|f| segment::ofd_try_lock(&f, segment::HOST_LOCK_BYTE))
            .unwrap_or(false);
        if abandoned && segment::remove_file(&p).is_ok() {
            log::warn!("removed {}, a store abandoned while loading", p.display());
        }
    }
}
