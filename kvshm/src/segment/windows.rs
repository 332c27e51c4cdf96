//! The Windows side of a segment, behind the same interface as `unix.rs`.
//!
//! Mechanisms (docs/ARCHITECTURE.md, "Windows", says why each was chosen):
//! - **The store is a file** in a per-user directory (`%LOCALAPPDATA%\kvshm`), mapped whole
//!   with one file-backed section: data is kept until the store is released, with or without
//!   a host, as on Linux. The file is made sparse and extended to the reserve before it is
//!   mapped (a section cannot be larger than its file); growth writes zeros over the new range
//!   (`allocate`), so that a full disk is an error there and not an in-page exception later.
//! - **Liveness** is a `LockFileEx` byte-range lock far past the end of the file, owned by the
//!   handle's file object and released by the system when the process ends, like an OFD lock.
//! - **Waiting** on a lock word: cross-process futexes do not exist (`WaitOnAddress` is
//!   process-private), so a waiter yields, then sleeps with a growing pause (at most 1 ms) and
//!   re-checks; a waker does nothing.
//! - **No fork**: a child process never inherits a store (handles are not inheritable).
//!
//! # Safety
//! Every pointer passed to the system comes from a live reference or a stack value that
//! outlives the call, every handle is owned by a `File` (or closed right after use), and the
//! mapping is created once with the reserve length and unmapped only on drop.
#![allow(unsafe_code)]

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::windows::ffi::{OsStrExt, OsStringExt};
use std::os::windows::fs::{FileExt, MetadataExt};
use std::os::windows::io::{AsRawHandle, FromRawHandle};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use windows_sys::Win32::Foundation as wf;
use windows_sys::Win32::Security as ws;
use windows_sys::Win32::Storage::FileSystem as fs;
use windows_sys::Win32::System::Memory as wm;

use crate::error::{Error, Result};

const ERROR_INVALID_FUNCTION: i32 = 1;
const ERROR_NOT_SUPPORTED: i32 = 50;
const ERROR_HANDLE_DISK_FULL: i32 = 39;
const ERROR_DISK_FULL: i32 = 112;

fn path_err(e: io::Error, path: &Path) -> Error {
    let p = path.display().to_string();
    match e.kind() {
        io::ErrorKind::NotFound => Error::NotFound { path: p },
        io::ErrorKind::AlreadyExists => Error::AlreadyExists { path: p },
        io::ErrorKind::PermissionDenied => Error::PermissionDenied { path: p },
        _ => Error::Io(e),
    }
}

fn wide(s: &std::ffi::OsStr) -> Vec<u16> {
    s.encode_wide().chain(std::iter::once(0)).collect()
}

/// A security descriptor that gives the current user, and nobody else, full access to a
/// file (`D:P(A;;FA;;;<user SID>)`), or `None` if the system cannot make one (the file then
/// gets its directory's inherited ACL, which for `%LOCALAPPDATA%` is the user's alone).
struct PrivateSd(*mut core::ffi::c_void);

impl PrivateSd {
    fn new() -> Option<PrivateSd> {
        let sid = current_user_sid()?;
        let sddl: Vec<u16> = wide(&OsString::from(format!("D:P(A;;FA;;;{sid})")));
        let mut sd: ws::PSECURITY_DESCRIPTOR = std::ptr::null_mut();
        // SAFETY: `sddl` is NUL-terminated and lives across the call; `sd` receives a
        // LocalAlloc'ed descriptor that `Drop` frees.
        let ok = unsafe {
            windows_sys::Win32::Security::Authorization::ConvertStringSecurityDescriptorToSecurityDescriptorW(
                sddl.as_ptr(),
                1,
                &mut sd,
                std::ptr::null_mut(),
            )
        };
        (ok != 0 && !sd.is_null()).then_some(PrivateSd(sd))
    }
}

impl Drop for PrivateSd {
    fn drop(&mut self) {
        // SAFETY: the descriptor was allocated by ConvertStringSecurityDescriptor... with
        // LocalAlloc and is freed once.
        unsafe { wf::LocalFree(self.0) };
    }
}

/// The pseudo handle of this process.
fn current_process() -> wf::HANDLE {
    // SAFETY: GetCurrentProcess has no preconditions and returns a constant pseudo handle.
    unsafe { windows_sys::Win32::System::Threading::GetCurrentProcess() }
}

/// The current user's SID as a string (`S-1-5-21-...`).
fn current_user_sid() -> Option<String> {
    let mut token: wf::HANDLE = std::ptr::null_mut();
    // SAFETY: `token` receives a handle that is closed below.
    let ok = unsafe {
        windows_sys::Win32::System::Threading::OpenProcessToken(
            current_process(),
            ws::TOKEN_QUERY,
            &mut token,
        )
    };
    if ok == 0 {
        return None;
    }
    let mut buf = vec![0u64; 64]; // 512 bytes, 8-aligned: a TOKEN_USER and its SID
    let mut len = 0u32;
    // SAFETY: `buf` is writable for the length given; `token` is open.
    let ok = unsafe {
        ws::GetTokenInformation(
            token,
            ws::TokenUser,
            buf.as_mut_ptr().cast(),
            (buf.len() * 8) as u32,
            &mut len,
        )
    };
    // SAFETY: `token` was opened above and is closed once.
    unsafe { wf::CloseHandle(token) };
    if ok == 0 {
        return None;
    }
    // SAFETY: on success the buffer starts with a TOKEN_USER whose SID points into `buf`.
    let sid = unsafe { (*(buf.as_ptr() as *const ws::TOKEN_USER)).User.Sid };
    let mut s: windows_sys::core::PWSTR = std::ptr::null_mut();
    // SAFETY: `sid` is valid while `buf` lives; `s` receives a LocalAlloc'ed string.
    let ok =
        unsafe { windows_sys::Win32::Security::Authorization::ConvertSidToStringSidW(sid, &mut s) };
    if ok == 0 || s.is_null() {
        return None;
    }
    // SAFETY: `s` is a NUL-terminated wide string from the call above: every index up to
    // and including its NUL is inside it.
    let n = (0..)
        .take_while(|&i| unsafe { *s.wrapping_add(i) } != 0)
        .count();
    // SAFETY: `s` holds `n` valid u16s.
    let out = OsString::from_wide(unsafe { std::slice::from_raw_parts(s, n) });
    // SAFETY: `s` was LocalAlloc'ed by ConvertSidToStringSidW and is freed once.
    unsafe { wf::LocalFree(s.cast()) };
    out.into_string().ok()
}

/// `CreateFileW` on a synchronous handle that may be deleted while open (like unlinking a
/// file on Unix), refusing to follow a reparse point (symbolic link, junction).
fn open_w(path: &Path, access: u32, disposition: u32, private: bool) -> Result<File> {
    let name = wide(path.as_os_str());
    let sd = if private { PrivateSd::new() } else { None };
    let sa = sd.as_ref().map(|sd| ws::SECURITY_ATTRIBUTES {
        nLength: std::mem::size_of::<ws::SECURITY_ATTRIBUTES>() as u32,
        lpSecurityDescriptor: sd.0,
        bInheritHandle: 0,
    });
    let sa_ptr = sa
        .as_ref()
        .map_or(std::ptr::null(), |s| s as *const ws::SECURITY_ATTRIBUTES);
    // SAFETY: `name` is NUL-terminated; `sa` (if any) and the descriptor it points at live
    // across the call.
    let h = unsafe {
        fs::CreateFileW(
            name.as_ptr(),
            access,
            fs::FILE_SHARE_READ | fs::FILE_SHARE_WRITE | fs::FILE_SHARE_DELETE,
            sa_ptr,
            disposition,
            fs::FILE_ATTRIBUTE_NORMAL | fs::FILE_FLAG_OPEN_REPARSE_POINT,
            std::ptr::null_mut(),
        )
    };
    if h == wf::INVALID_HANDLE_VALUE {
        return Err(path_err(io::Error::last_os_error(), path));
    }
    // SAFETY: `h` was just returned by CreateFileW and is owned by nobody else.
    let f = unsafe { File::from_raw_handle(h as _) };
    let md = f.metadata()?;
    if md.file_attributes() & fs::FILE_ATTRIBUTE_REPARSE_POINT != 0 {
        return Err(Error::PermissionDenied {
            path: format!("{} (is a symbolic link or junction)", path.display()),
        });
    }
    if !md.is_file() {
        return Err(Error::PermissionDenied {
            path: format!("{} (not a regular file)", path.display()),
        });
    }
    Ok(f)
}

/// Create the store file exclusively. A `mode` without group/other bits (the default 0600)
/// gives the file an ACL for the current user only; any other mode leaves the directory's
/// inherited ACL.
pub fn create_file(path: &Path, mode: u32) -> Result<File> {
    open_w(
        path,
        wf::GENERIC_READ | wf::GENERIC_WRITE,
        fs::CREATE_NEW,
        mode & 0o077 == 0,
    )
}

/// Open an existing store file; refuse reparse points and non-regular files. (Who may open
/// it is the file's ACL's business on Windows; there is no owner check as on Unix.)
pub fn open_file(path: &Path, writable: bool) -> Result<File> {
    let access = if writable {
        wf::GENERIC_READ | wf::GENERIC_WRITE
    } else {
        wf::GENERIC_READ
    };
    open_w(path, access, fs::OPEN_EXISTING, false)
}

/// Open a file to read (a snapshot to load) the way store files are opened.
pub fn open_regular_file(path: &Path) -> Result<File> {
    open_file(path, false)
}

/// Create (or append to) a file only the current user may read and write (a log that holds
/// keys).
pub fn open_private_append(path: &Path) -> Result<File> {
    open_w(
        path,
        fs::FILE_APPEND_DATA | fs::FILE_GENERIC_READ,
        fs::OPEN_ALWAYS,
        true,
    )
}

/// A directory stores may live in (its ACL decides who may replace files in it).
pub fn check_dir(dir: &Path) -> Result<()> {
    let md = std::fs::metadata(dir).map_err(|e| path_err(e, dir))?;
    if !md.is_dir() {
        return Err(Error::InvalidArgument(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    Ok(())
}

/// Create a new file exclusively, for the current user only, not through a reparse point (a
/// snapshot's temporary file).
pub fn create_private_new(path: &Path) -> Result<File> {
    open_w(
        path,
        wf::GENERIC_READ | wf::GENERIC_WRITE,
        fs::CREATE_NEW,
        true,
    )
}

/// Rename `from` over `to` atomically (`MoveFileExW` with `MOVEFILE_REPLACE_EXISTING`), and
/// durably (`MOVEFILE_WRITE_THROUGH`: it returns once the rename is on disk). `dir` is not
/// needed: NTFS journals the rename itself.
pub fn rename_durable(from: &Path, to: &Path, _dir: &Path) -> Result<()> {
    let (f, t) = (wide(from.as_os_str()), wide(to.as_os_str()));
    // SAFETY: both names are NUL-terminated and live across the call.
    let ok = unsafe {
        fs::MoveFileExW(
            f.as_ptr(),
            t.as_ptr(),
            fs::MOVEFILE_REPLACE_EXISTING | fs::MOVEFILE_WRITE_THROUGH,
        )
    };
    if ok == 0 {
        return Err(path_err(io::Error::last_os_error(), to));
    }
    Ok(())
}

/// Give the file at `from` the name `to`, but only if `to` does not exist (`AlreadyExists`
/// then): `MoveFileExW` without `MOVEFILE_REPLACE_EXISTING` (every handle shares delete
/// access, so an open file can be renamed).
pub fn rename_noreplace(from: &Path, to: &Path) -> Result<()> {
    let (f, t) = (wide(from.as_os_str()), wide(to.as_os_str()));
    // SAFETY: both names are NUL-terminated and live across the call.
    let ok = unsafe { fs::MoveFileExW(f.as_ptr(), t.as_ptr(), fs::MOVEFILE_WRITE_THROUGH) };
    if ok == 0 {
        return Err(path_err(io::Error::last_os_error(), to));
    }
    Ok(())
}

/// Remove the store file, freeing its name at once as `unlink` does: Windows keeps the name
/// of a deleted file until its last handle closes (and Wine even lets it be opened again), so
/// the file is first renamed aside (`.removed-<name>-<random>`, possible because every handle
/// shares delete access), then deleted. Processes that still map it keep their view; the
/// file goes when the last one closes it.
pub fn remove_file(path: &Path) -> Result<()> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let aside = path.with_file_name(format!(".removed-{name}-{:016x}", random_u64()));
    std::fs::rename(path, &aside).map_err(|e| path_err(e, path))?;
    std::fs::remove_file(&aside).map_err(|e| path_err(e, &aside))
}

/// Read `buf.len()` bytes at `off`.
pub fn read_at(file: &File, buf: &mut [u8], off: u64) -> Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let n = file.seek_read(&mut buf[done..], off + done as u64)?;
        if n == 0 {
            return Err(Error::Io(io::ErrorKind::UnexpectedEof.into()));
        }
        done += n;
    }
    Ok(())
}

/// Make sure bytes `from..to` of the (sparse) file are allocated: zeros are written over the
/// range, so a full disk is `StoreFull` here, not an in-page exception at a later touch. The
/// range is never in use (beyond the committed length, or a chunk given back).
pub fn allocate(file: &File, from: u64, to: u64) -> Result<()> {
    const STEP: u64 = 1 << 20;
    let zeros = vec![0u8; STEP as usize];
    let mut at = from;
    while at < to {
        let n = (to - at).min(STEP) as usize;
        if let Err(e) = file.seek_write(&zeros[..n], at) {
            return Err(match e.raw_os_error() {
                Some(ERROR_DISK_FULL) | Some(ERROR_HANDLE_DISK_FULL) => Error::StoreFull {
                    hint: "no disk space left for the store file; free space or host the \
                           store on another --dir",
                },
                _ => Error::Io(e),
            });
        }
        at += n as u64;
    }
    Ok(())
}

/// Give bytes `from..to` back (`FSCTL_SET_ZERO_DATA` on the sparse file). A file system that
/// cannot is reported as unsupported ([`is_unsupported`]). The range is zero already (chunks
/// are zeroed before they are given back), so a view that still shows the old pages reads
/// zeros either way.
pub fn punch_hole(file: &File, from: u64, to: u64) -> Result<()> {
    if to <= from {
        return Ok(());
    }
    let info = windows_sys::Win32::System::Ioctl::FILE_ZERO_DATA_INFORMATION {
        FileOffset: from as i64,
        BeyondFinalZero: to as i64,
    };
    let mut ret = 0u32;
    // SAFETY: `info` and `ret` live on the stack across the call; the handle is owned by
    // `file`; no OVERLAPPED: the handle is synchronous.
    let ok = unsafe {
        windows_sys::Win32::System::IO::DeviceIoControl(
            file.as_raw_handle() as wf::HANDLE,
            windows_sys::Win32::System::Ioctl::FSCTL_SET_ZERO_DATA,
            (&info as *const windows_sys::Win32::System::Ioctl::FILE_ZERO_DATA_INFORMATION).cast(),
            std::mem::size_of_val(&info) as u32,
            std::ptr::null_mut(),
            0,
            &mut ret,
            std::ptr::null_mut(),
        )
    };
    if ok != 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    Err(Error::Io(match e.raw_os_error() {
        Some(ERROR_INVALID_FUNCTION) | Some(ERROR_NOT_SUPPORTED) => {
            io::Error::new(io::ErrorKind::Unsupported, e)
        }
        _ => e,
    }))
}

/// Whether an error from [`punch_hole`] means the file system cannot give pages back.
pub fn is_unsupported(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Unsupported
        || matches!(
            e.raw_os_error(),
            Some(ERROR_INVALID_FUNCTION) | Some(ERROR_NOT_SUPPORTED)
        )
}

fn lock_range(file: &File, byte: u64, flags: u32) -> io::Result<bool> {
    // SAFETY: OVERLAPPED is plain old data; all-zero is a valid value.
    let mut ov: windows_sys::Win32::System::IO::OVERLAPPED = unsafe { std::mem::zeroed() };
    ov.Anonymous.Anonymous.Offset = byte as u32;
    ov.Anonymous.Anonymous.OffsetHigh = (byte >> 32) as u32;
    // SAFETY: `ov` lives on the stack across the call; the handle is owned by `file` and is
    // synchronous, so the call completes before it returns.
    let ok = unsafe { fs::LockFileEx(file.as_raw_handle() as wf::HANDLE, flags, 0, 1, 0, &mut ov) };
    if ok != 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(wf::ERROR_LOCK_VIOLATION as i32) {
        return Ok(false);
    }
    Err(e)
}

/// Try to take the exclusive lock on one byte through this handle. `Ok(false)` when another
/// handle holds it. Released by the system when the handle is closed, i.e. when the owning
/// process ends. (A probe by [`ofd_is_locked`] holds a byte for microseconds: a failed try is
/// repeated twice before it counts.)
pub fn ofd_try_lock(file: &File, byte: u64) -> Result<bool> {
    for attempt in 0..3 {
        if lock_range(
            file,
            byte,
            fs::LOCKFILE_EXCLUSIVE_LOCK | fs::LOCKFILE_FAIL_IMMEDIATELY,
        )? {
            return Ok(true);
        }
        if attempt < 2 {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
    Ok(false)
}

/// Take the exclusive lock on one byte, waiting while another handle holds it.
pub fn ofd_lock_wait(file: &File, byte: u64) -> Result<()> {
    lock_range(file, byte, fs::LOCKFILE_EXCLUSIVE_LOCK)?;
    Ok(())
}

/// Release a byte taken with [`ofd_try_lock`] or [`ofd_lock_wait`].
pub fn ofd_unlock(file: &File, byte: u64) {
    // SAFETY: as in `lock_range`.
    let mut ov: windows_sys::Win32::System::IO::OVERLAPPED = unsafe { std::mem::zeroed() };
    ov.Anonymous.Anonymous.Offset = byte as u32;
    ov.Anonymous.Anonymous.OffsetHigh = (byte >> 32) as u32;
    // SAFETY: as in `lock_range`. Unlocking a byte we hold cannot fail.
    unsafe { fs::UnlockFileEx(file.as_raw_handle() as wf::HANDLE, 0, 1, 0, &mut ov) };
}

/// Whether some handle holds the lock on `byte`: a shared lock is tried through a new file
/// object of the same file (`ReOpenFile`) and released with it. Not through `file` itself: a
/// handle that holds the byte exclusively is granted a shared lock on it too, and the unlock
/// after the probe would then drop the exclusive lock (the first unlock of a range releases
/// the exclusive one). Through the new object, a byte this process holds reads as locked, as
/// every other holder does. Works on read-only handles; writes nothing to the file.
pub fn ofd_is_locked(file: &File, byte: u64) -> Result<bool> {
    // SAFETY: the handle is owned by `file`; the new handle is owned by `probe` below.
    let h = unsafe {
        fs::ReOpenFile(
            file.as_raw_handle() as wf::HANDLE,
            wf::GENERIC_READ,
            fs::FILE_SHARE_READ | fs::FILE_SHARE_WRITE | fs::FILE_SHARE_DELETE,
            0,
        )
    };
    if h == wf::INVALID_HANDLE_VALUE {
        return Err(Error::Io(io::Error::last_os_error()));
    }
    // SAFETY: `h` was just returned by ReOpenFile and is owned by nobody else.
    let probe = unsafe { File::from_raw_handle(h as _) };
    // Closing `probe` releases the probe's lock, if it got one.
    Ok(!lock_range(&probe, byte, fs::LOCKFILE_FAIL_IMMEDIATELY)?)
}

/// A view of the whole reserve of a store file.
#[derive(Debug)]
pub struct Mapping {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the view is process-wide memory; `Mem` hands out only atomic accessors to it.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Start of the view.
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr
    }
    /// Length of the view (the reserve).
    pub fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        let addr = wm::MEMORY_MAPPED_VIEW_ADDRESS {
            Value: self.ptr.cast(),
        };
        // SAFETY: `ptr` is the base of a view made by MapViewOfFile and unmapped once.
        unsafe { wm::UnmapViewOfFile(addr) };
    }
}

/// Mark the file sparse (so that extending it to the reserve takes no disk space until
/// pages are touched). Not every file system can; a failure is ignored.
fn set_sparse(file: &File) {
    let mut ret = 0u32;
    // SAFETY: no input or output buffers; `ret` lives across the call.
    unsafe {
        windows_sys::Win32::System::IO::DeviceIoControl(
            file.as_raw_handle() as wf::HANDLE,
            windows_sys::Win32::System::Ioctl::FSCTL_SET_SPARSE,
            std::ptr::null(),
            0,
            std::ptr::null_mut(),
            0,
            &mut ret,
            std::ptr::null_mut(),
        )
    };
}

/// Map `len` bytes of the file (the reserve). A section cannot be larger than its file, so
/// a writable caller first extends the (sparse) file to `len`; pages past the committed
/// length are touched only after growth allocated them.
pub fn map(file: &File, len: u64, writable: bool) -> Result<Mapping> {
    let size =
        usize::try_from(len).map_err(|_| Error::InvalidArgument("reserve too big".into()))?;
    if writable && file.metadata()?.len() < len {
        set_sparse(file);
        file.set_len(len).map_err(|e| match e.raw_os_error() {
            Some(ERROR_DISK_FULL) | Some(ERROR_HANDLE_DISK_FULL) => Error::StoreFull {
                hint: "no disk space for the store file's reserve (the file system cannot \
                       make it sparse?); lower --max-size",
            },
            _ => Error::Io(e),
        })?;
    }
    let (protect, access) = if writable {
        (wm::PAGE_READWRITE, wm::FILE_MAP_READ | wm::FILE_MAP_WRITE)
    } else {
        (wm::PAGE_READONLY, wm::FILE_MAP_READ)
    };
    // SAFETY: the file handle is owned by `file`; no name, no security attributes.
    let section = unsafe {
        wm::CreateFileMappingW(
            file.as_raw_handle() as wf::HANDLE,
            std::ptr::null(),
            protect,
            (len >> 32) as u32,
            len as u32,
            std::ptr::null(),
        )
    };
    if section.is_null() {
        return Err(Error::Io(io::Error::last_os_error()));
    }
    // SAFETY: `section` was just created; the view keeps it alive after the handle closes.
    let view = unsafe { wm::MapViewOfFile(section, access, 0, 0, size) };
    let err = io::Error::last_os_error();
    // SAFETY: closes the handle made above, once.
    unsafe { wf::CloseHandle(section) };
    if view.Value.is_null() {
        return Err(Error::StoreFull {
            hint: if err.raw_os_error() == Some(8) {
                "no address space for the mapping"
            } else {
                "the store file could not be mapped"
            },
        });
    }
    Ok(Mapping {
        ptr: view.Value.cast(),
        len: size,
    })
}

/// Wait while `*word == expected`, at most `timeout`. There is no cross-process futex on
/// Windows: yield a few times, then sleep with a pause that doubles from 20 us up to 1 ms,
/// re-checking the word in between. Callers re-check the word anyway.
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let start = Instant::now();
    let mut pause = Duration::from_micros(20);
    for i in 0u32.. {
        if word.load(Ordering::Acquire) != expected {
            return;
        }
        let spent = start.elapsed();
        if spent >= timeout {
            return;
        }
        if i < 32 {
            std::thread::yield_now();
            continue;
        }
        std::thread::sleep(pause.min(timeout - spent));
        pause = (pause * 2).min(Duration::from_millis(1));
    }
}

/// Waiters poll (see [`futex_wait`]): nothing to wake.
pub fn futex_wake(_word: &AtomicU32, _n: i32) {}

/// This process's id.
pub fn pid() -> u64 {
    std::process::id() as u64
}

/// Random 64 bits for the hash seed: std's per-process random keys, mixed with the time and
/// the pid (the seed only needs to differ between stores).
pub fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    h.write_u64(t ^ (pid() << 32));
    h.finish()
}

/// End this process at once, as `TerminateProcess` from outside would (crash points).
#[cfg(feature = "crash-points")]
pub fn kill_self() -> ! {
    // SAFETY: TerminateProcess on our own pseudo handle does not return.
    unsafe { windows_sys::Win32::System::Threading::TerminateProcess(current_process(), 137) };
    unreachable!("TerminateProcess returned")
}

/// Freeze here (crash points with `KVSHM_CRASH_ACTION=stop`): Windows has no SIGSTOP, so the
/// thread sleeps until the test that froze it terminates the process.
#[cfg(feature = "crash-points")]
pub fn stop_self() {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Windows has no fork: always 0.
#[inline]
pub fn fork_generation() -> u64 {
    0
}

/// Nothing to do without fork (handles are created non-inheritable).
pub fn register_fork_fd(_file: &File, _map: Option<(usize, usize)>) {}

/// Nothing to do without fork.
pub fn unregister_fork_fd(_file: &File) {}

/// Where stores live by default: `%LOCALAPPDATA%\kvshm` (created if missing), else the
/// temporary directory's `kvshm`.
pub fn os_default_dir() -> PathBuf {
    let base = std::env::var_os("LOCALAPPDATA")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = base.join("kvshm");
    let _ = std::fs::create_dir_all(&dir);
    dir
}
