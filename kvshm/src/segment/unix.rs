//! # Safety
//! This module makes raw system calls (`fallocate`, `fcntl` OFD locks, `futex`) and creates the
//! shared mapping. Invariants: every pointer passed to the kernel comes from a live reference
//! (`&AtomicU32`, a stack `flock`/`timespec`), every file descriptor is owned by a `File` that
//! outlives the call, and the mapping is created once with the reserve length and never moved.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::{AsRawFd, FromRawFd};
use std::path::Path;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

use memmap2::{MmapOptions, MmapRaw};

/// The mapping of a store file's reserve.
pub type Mapping = MmapRaw;

use crate::error::{Error, Result};

fn path_err(e: io::Error, path: &Path) -> Error {
    let p = path.display().to_string();
    match e.raw_os_error() {
        Some(libc::ENOENT) => Error::NotFound { path: p },
        Some(libc::EEXIST) => Error::AlreadyExists { path: p },
        Some(libc::EACCES) | Some(libc::EPERM) => Error::PermissionDenied { path: p },
        // O_NOFOLLOW on a symlink.
        Some(libc::ELOOP) => Error::PermissionDenied {
            path: format!("{p} (is a symbolic link)"),
        },
        _ => Error::Io(e),
    }
}

fn open_raw(path: &Path, flags: libc::c_int, mode: u32) -> Result<File> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::InvalidArgument("path contains a NUL byte".into()))?;
    // SAFETY: `c` is a valid NUL-terminated string that lives across the call.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC | libc::O_NOFOLLOW, mode) };
    if fd < 0 {
        return Err(path_err(io::Error::last_os_error(), path));
    }
    // SAFETY: `fd` was just returned by open() and is owned by nobody else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Create the store file exclusively with exactly `mode` (the umask is not applied).
pub fn create_file(path: &Path, mode: u32) -> Result<File> {
    let f = open_raw(path, libc::O_RDWR | libc::O_CREAT | libc::O_EXCL, mode)?;
    // SAFETY: the descriptor is owned by `f`, alive for the call.
    if unsafe { libc::fchmod(f.as_raw_fd(), mode as libc::mode_t) } != 0 {
        return Err(Error::Io(io::Error::last_os_error()));
    }
    Ok(f)
}

/// Open an existing store file; refuse symlinks, non-regular files and files owned by another
/// user (root may open any).
pub fn open_file(path: &Path, writable: bool) -> Result<File> {
    let flags = if writable {
        libc::O_RDWR
    } else {
        libc::O_RDONLY
    };
    let f = open_raw(path, flags | libc::O_NONBLOCK, 0)?;
    let md = f.metadata()?;
    if !md.file_type().is_file() {
        return Err(Error::PermissionDenied {
            path: format!("{} (not a regular file)", path.display()),
        });
    }
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 && md.uid() != euid {
        return Err(Error::PermissionDenied {
            path: format!("{} (owned by uid {}, not {euid})", path.display(), md.uid()),
        });
    }
    Ok(f)
}

/// Open a file to read (a snapshot to load) the way store files are opened: no symlink at
/// the last component, a regular file, owned by us (root may open any), and not writable by
/// group or others (anybody could have changed it).
pub fn open_regular_file(path: &Path) -> Result<File> {
    let f = open_file(path, false)?;
    let mode = f.metadata()?.mode();
    if mode & 0o022 != 0 {
        return Err(Error::PermissionDenied {
            path: format!(
                "{} (mode {:o}: writable by group or others)",
                path.display(),
                mode & 0o777
            ),
        });
    }
    Ok(f)
}

/// Create (or append to) a file only we may read and write, such as a log that holds keys:
/// no symlink at the last component, created 0600, an existing one must be a regular file
/// we own (root may use any) and is made 0600.
pub fn open_private_append(path: &Path) -> Result<File> {
    let f = open_raw(
        path,
        libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_NONBLOCK,
        0o600,
    )?;
    let md = f.metadata()?;
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if !md.file_type().is_file() || (euid != 0 && md.uid() != euid) {
        return Err(Error::PermissionDenied {
            path: format!("{} (not a regular file of ours)", path.display()),
        });
    }
    // SAFETY: the descriptor is owned by `f`, alive for the call.
    if unsafe { libc::fchmod(f.as_raw_fd(), 0o600) } != 0 {
        return Err(Error::Io(io::Error::last_os_error()));
    }
    Ok(f)
}

/// A directory stores may live in: one that no other user can write to without the sticky
/// bit (they could replace or remove a store file), owned by us or by root.
pub fn check_dir(dir: &Path) -> Result<()> {
    let md = std::fs::metadata(dir).map_err(|e| path_err(e, dir))?;
    if !md.is_dir() {
        return Err(Error::InvalidArgument(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    let mode = md.mode();
    let shared_writable = mode & 0o022 != 0 && mode & libc::S_ISVTX == 0;
    if (md.uid() != euid && md.uid() != 0) || shared_writable {
        return Err(Error::PermissionDenied {
            path: format!(
                "{} (directory owned by uid {} with mode {:o}: other users could replace \
                 store files; use a directory of your own or one with the sticky bit)",
                dir.display(),
                md.uid(),
                mode & 0o7777
            ),
        });
    }
    Ok(())
}

/// Create a new file exclusively, mode 0600, not through a symbolic link (a snapshot's
/// temporary file).
pub fn create_private_new(path: &Path) -> Result<File> {
    open_raw(path, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL, 0o600)
}

/// Rename `from` over `to` atomically, then fsync the directory `dir` holding both, so the
/// rename survives a power cut.
pub fn rename_durable(from: &Path, to: &Path, dir: &Path) -> Result<()> {
    std::fs::rename(from, to)?;
    File::open(dir)?.sync_all()?;
    Ok(())
}

/// Give the file at `from` the name `to`, but only if `to` does not exist (`AlreadyExists`
/// then): a hard link, atomic and never clobbering, then the old name removed. A crash in
/// between leaves both names on the same file.
pub fn rename_noreplace(from: &Path, to: &Path) -> Result<()> {
    std::fs::hard_link(from, to).map_err(|e| path_err(e, to))?;
    std::fs::remove_file(from).map_err(|e| path_err(e, from))
}

/// Remove the store file.
pub fn remove_file(path: &Path) -> Result<()> {
    std::fs::remove_file(path).map_err(|e| path_err(e, path))
}

/// Read `buf.len()` bytes at `off`.
pub fn read_at(file: &File, buf: &mut [u8], off: u64) -> Result<()> {
    use std::os::unix::fs::FileExt;
    file.read_exact_at(buf, off)?;
    Ok(())
}

/// Whether an error from [`punch_hole`] means the file system cannot give pages back.
pub fn is_unsupported(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EOPNOTSUPP)
}

/// Where stores live by default: [`super::DEFAULT_DIR`] (tmpfs).
pub fn os_default_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(super::DEFAULT_DIR)
}

/// Make sure bytes `from..to` of the file are allocated (never sparse: memory exhaustion must
/// be an error here, not a SIGBUS later). Growth passes only the new range: tmpfs walks every
/// page of the range it is given, so allocating from 0 made each growth cost O(file size).
pub fn allocate(file: &File, from: u64, to: u64) -> Result<()> {
    fallocate_range(file, 0, from, to).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EFBIG) | Some(libc::ENOMEM) => Error::StoreFull {
            hint: "no memory or space left for the store file; free memory, raise the tmpfs \
                   size, or host the store on another --dir",
        },
        _ => Error::Io(e),
    })
}

/// Give bytes `from..to` of the file back to the OS (a hole; the file keeps its length, and
/// the range reads as zeros). [`allocate`] makes it memory again.
pub fn punch_hole(file: &File, from: u64, to: u64) -> Result<()> {
    let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    fallocate_range(file, mode, from, to).map_err(Error::Io)
}

/// `fallocate(mode)` over `from..to` (nothing for an empty range), retried on EINTR.
fn fallocate_range(file: &File, mode: libc::c_int, from: u64, to: u64) -> io::Result<()> {
    if to <= from {
        return Ok(());
    }
    loop {
        // SAFETY: plain syscall on an fd owned by `file`.
        let r = unsafe {
            libc::fallocate(
                file.as_raw_fd(),
                mode,
                from as libc::off_t,
                (to - from) as libc::off_t,
            )
        };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

fn flock_for(byte: u64, kind: libc::c_short) -> libc::flock {
    // SAFETY: flock is plain old data; all-zero is a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = byte as libc::off_t;
    fl.l_len = 1;
    fl
}

/// Try to take the OFD write lock on one byte through this open file description. `Ok(false)`
/// when another description holds it. Dropped by the kernel when the description is closed,
/// i.e. the instant the owning process dies.
pub fn ofd_try_lock(file: &File, byte: u64) -> Result<bool> {
    let mut fl = flock_for(byte, libc::F_WRLCK as libc::c_short);
    // SAFETY: `fl` is a valid flock on the stack; fd owned by `file`.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &mut fl) };
    if r == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EACCES) => Ok(false),
        _ => Err(Error::Io(e)),
    }
}

/// Take the OFD write lock on one byte, waiting while another description holds it.
pub fn ofd_lock_wait(file: &File, byte: u64) -> Result<()> {
    loop {
        let mut fl = flock_for(byte, libc::F_WRLCK as libc::c_short);
        // SAFETY: as in `ofd_try_lock`.
        let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLKW, &mut fl) };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(Error::Io(e));
        }
    }
}

/// Release a byte taken with [`ofd_try_lock`].
pub fn ofd_unlock(file: &File, byte: u64) {
    let mut fl = flock_for(byte, libc::F_UNLCK as libc::c_short);
    // SAFETY: as in `ofd_try_lock`. Unlocking cannot fail for a valid fd.
    unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &mut fl) };
}

/// Whether some open file description holds a lock on `byte` (the kernel reports no pid for
/// OFD locks, so none is returned). Works on read-only descriptors and writes nothing.
pub fn ofd_is_locked(file: &File, byte: u64) -> Result<bool> {
    let mut fl = flock_for(byte, libc::F_RDLCK as libc::c_short);
    // SAFETY: as in `ofd_try_lock`.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) };
    if r != 0 {
        return Err(Error::Io(io::Error::last_os_error()));
    }
    Ok(fl.l_type != libc::F_UNLCK as libc::c_short)
}

/// Map `len` bytes of the file (the reserve; pages past the file's end are touched only after
/// growth made them valid).
pub fn map(file: &File, len: u64, writable: bool) -> Result<MmapRaw> {
    let len = usize::try_from(len).map_err(|_| Error::InvalidArgument("reserve too big".into()))?;
    let opts = {
        let mut o = MmapOptions::new();
        o.len(len);
        o
    };
    let m = if writable {
        opts.map_raw(file)
    } else {
        opts.map_raw_read_only(file)
    };
    m.map_err(|e| match e.raw_os_error() {
        Some(libc::ENOMEM) => Error::StoreFull {
            hint: "no address space for the mapping",
        },
        _ => Error::Io(e),
    })
}

/// Wait while `*word == expected`, at most `timeout`. A shared (not process-private) futex:
/// the word lives in the segment and waiters of every process share the queue.
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `word` is a live, aligned u32; `ts` lives on the stack across the call. A
    // spurious or early return is harmless: callers re-check the word.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// Wake up to `n` waiters of `word` in any process.
pub fn futex_wake(word: &AtomicU32, n: i32) {
    // SAFETY: `word` is a live, aligned u32.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            n,
            0usize,
            0usize,
            0u32,
        );
    }
}

/// This process's id.
pub fn pid() -> u64 {
    std::process::id() as u64
}

/// Random 64 bits for the hash seed (no extra crate: the kernel's getrandom).
pub fn random_u64() -> u64 {
    let mut v = 0u64;
    // SAFETY: writes at most 8 bytes into `v`, which lives across the call.
    let r = unsafe { libc::getrandom((&mut v as *mut u64).cast(), 8, 0) };
    if r == 8 {
        v
    } else {
        // Fallback: time and pid mixed; the seed only needs to differ between stores.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        t ^ (pid() << 32) ^ 0x9e37_79b9_7f4a_7c15
    }
}

/// Raise SIGKILL on ourselves (crash points).
#[cfg(feature = "crash-points")]
pub fn kill_self() -> ! {
    // SAFETY: raise has no preconditions; SIGKILL does not return.
    unsafe { libc::raise(libc::SIGKILL) };
    unreachable!("SIGKILL returned")
}

/// Raise SIGSTOP on ourselves (crash points with `KVSHM_CRASH_ACTION=stop`).
#[cfg(feature = "crash-points")]
pub fn stop_self() {
    // SAFETY: raise has no preconditions; the process continues after SIGCONT.
    unsafe { libc::raise(libc::SIGSTOP) };
}

// ---- fork ----
//
// Liveness is an OFD lock on the store file's open file description, and `fork` shares that
// description with the child (through the descriptors *and* the shared mapping, which holds a
// reference to the file too): a client that dies would look alive for as long as any child it
// forked lives, and a child using the inherited `Client` would write as the parent's slot. So
// every store descriptor and mapping is registered here, and a `pthread_atfork` child handler
// points each descriptor at /dev/null and replaces each mapping by a read-only anonymous one
// of the same range (reads see zeros, nothing faults, and the description, and so the lock,
// stays the parent's alone). It also bumps the fork generation, which makes an inherited
// `Client` refuse to run (`Error::Forked`; the child opens its own).

use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicU64, AtomicUsize, Ordering as AtomicOrdering};

/// Incremented in every child process right after `fork`.
static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);

/// A registered descriptor (-1: unused) and the mapping made from it (length 0: none). Nodes
/// are leaked, never freed, so the child handler can walk the list without locks or
/// allocation (what is allowed after `fork`).
struct FdNode {
    fd: AtomicI32,
    map_addr: AtomicUsize,
    map_len: AtomicUsize,
    next: AtomicPtr<FdNode>,
}

static FD_LIST: AtomicPtr<FdNode> = AtomicPtr::new(std::ptr::null_mut());

/// How many times this process's ancestors forked it (0 in the process that started).
#[inline]
pub fn fork_generation() -> u64 {
    FORK_GENERATION.load(AtomicOrdering::Relaxed)
}

extern "C" fn on_fork_child() {
    FORK_GENERATION.fetch_add(1, AtomicOrdering::Relaxed);
    // SAFETY: open/dup2/close are async-signal-safe; the path is a static C string.
    let null = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if null < 0 {
        return;
    }
    let mut node = FD_LIST.load(AtomicOrdering::Acquire);
    while !node.is_null() {
        // SAFETY: nodes are leaked `Box`es, never freed; the list is only ever prepended to.
        let n = unsafe { &*node };
        let fd = n.fd.load(AtomicOrdering::Acquire);
        if fd >= 0 {
            // SAFETY: `fd` is a descriptor of this (child) process inherited from the parent;
            // dup2 replaces it atomically and keeps its number, so the `File` that owns it
            // closes /dev/null later instead of the store's description.
            unsafe { libc::dup2(null, fd) };
            let (addr, len) = (
                n.map_addr.load(AtomicOrdering::Acquire),
                n.map_len.load(AtomicOrdering::Acquire),
            );
            if len > 0 {
                // SAFETY: `addr..addr+len` is the store mapping this process inherited (still
                // owned by its `Mem`, which unmaps the range on drop); MAP_FIXED replaces it
                // in place by anonymous read-only zero pages, so no reference to the store
                // file remains and no address in the range faults.
                unsafe {
                    libc::mmap(
                        addr as *mut libc::c_void,
                        len,
                        libc::PROT_READ,
                        libc::MAP_PRIVATE
                            | libc::MAP_ANONYMOUS
                            | libc::MAP_FIXED
                            | libc::MAP_NORESERVE,
                        -1,
                        0,
                    )
                };
            }
        }
        node = n.next.load(AtomicOrdering::Acquire);
    }
    // SAFETY: `null` is our own descriptor, opened above.
    unsafe { libc::close(null) };
}

/// Register a store descriptor and the mapping made from it, if any (see the section
/// comment). Installs the fork handler once.
pub fn register_fork_fd(file: &File, map: Option<(usize, usize)>) {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        // SAFETY: registers a plain function with no captured state; it stays valid for the
        // life of the process.
        unsafe { libc::pthread_atfork(None, None, Some(on_fork_child)) };
    });
    let fd = file.as_raw_fd();
    let (addr, len) = map.unwrap_or((0, 0));
    let mut node = FD_LIST.load(AtomicOrdering::Acquire);
    while !node.is_null() {
        // SAFETY: as in `on_fork_child`.
        let n = unsafe { &*node };
        // Claim a free node (-2 while we fill it, so the child handler skips it), then publish.
        if n.fd
            .compare_exchange(-1, -2, AtomicOrdering::AcqRel, AtomicOrdering::Relaxed)
            .is_ok()
        {
            n.map_addr.store(addr, AtomicOrdering::Relaxed);
            n.map_len.store(len, AtomicOrdering::Relaxed);
            n.fd.store(fd, AtomicOrdering::Release);
            return;
        }
        node = n.next.load(AtomicOrdering::Acquire);
    }
    let new = Box::into_raw(Box::new(FdNode {
        fd: AtomicI32::new(fd),
        map_addr: AtomicUsize::new(addr),
        map_len: AtomicUsize::new(len),
        next: AtomicPtr::new(FD_LIST.load(AtomicOrdering::Acquire)),
    }));
    loop {
        // SAFETY: `new` is ours until published by the CAS below.
        let head = unsafe { &*new }.next.load(AtomicOrdering::Relaxed);
        match FD_LIST.compare_exchange(head, new, AtomicOrdering::AcqRel, AtomicOrdering::Acquire) {
            Ok(_) => return,
            // SAFETY: as above.
            Err(h) => unsafe { &*new }.next.store(h, AtomicOrdering::Relaxed),
        }
    }
}

/// Forget a store descriptor before it is closed (its number may be reused by any file).
pub fn unregister_fork_fd(file: &File) {
    let fd = file.as_raw_fd();
    let mut node = FD_LIST.load(AtomicOrdering::Acquire);
    while !node.is_null() {
        // SAFETY: as in `on_fork_child`.
        let n = unsafe { &*node };
        if n.fd
            .compare_exchange(fd, -1, AtomicOrdering::AcqRel, AtomicOrdering::Relaxed)
            .is_ok()
        {
            return;
        }
        node = n.next.load(AtomicOrdering::Acquire);
    }
}
