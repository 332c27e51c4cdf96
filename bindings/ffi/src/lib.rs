//! # Safety
//! The C ABI of kvshm. Holds no store logic: every function validates its arguments, looks
//! the handle up, calls the library, and maps the result to a [`kvshm_status`].
//!
//! Invariants:
//! - Handles are not pointers: a handle is `index + 1 | generation << 32` into a registry, so
//!   a closed, double-closed or made-up handle is detected and answered with
//!   `KVSHM_INVALID_ARGUMENT`, never dereferenced.
//! - Every pointer from the caller is checked for NULL (a NULL with a zero length is an empty
//!   byte string) and turned into a slice only for the length the caller gave; lengths above
//!   `isize::MAX` are refused.
//! - No panic crosses the boundary: each entry point runs under `catch_unwind` and returns
//!   `KVSHM_PANIC` instead.
//!
//! Thread safety: every function may be called from any thread, concurrently, on the same or
//! different handles. Closing a handle while another thread uses it is safe: the other call
//! finishes on its own reference, later calls get `KVSHM_INVALID_ARGUMENT`.
#![allow(unsafe_code)]
#![allow(non_camel_case_types, clippy::missing_safety_doc)]
// Argument conversion takes several of the caller's pointers under one contract (the
// function's documented parameters); one SAFETY comment per block names it.
#![allow(clippy::multiple_unsafe_ops_per_block)]

use std::ffi::{c_char, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, RwLock};

use kvshm_core::{Client, Config, Error, Host};

/// Result of every function. Values are fixed: they are part of the ABI.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum kvshm_status {
    KVSHM_OK = 0,
    /// The key is not in the store (get, contains-style calls never use it for "false").
    KVSHM_NOT_FOUND = 1,
    /// The caller's buffer is too small; the needed length was written.
    KVSHM_BUFFER_TOO_SMALL = 2,
    KVSHM_KEY_TOO_LONG = 3,
    KVSHM_VALUE_TOO_LONG = 4,
    /// The store is at its maximum size or memory ran out; nothing stored was lost.
    KVSHM_STORE_FULL = 5,
    /// No store of that name exists.
    KVSHM_STORE_NOT_FOUND = 6,
    /// A store of that name already exists (create).
    KVSHM_EXISTS = 7,
    /// The store was made by an incompatible build, or is not a store.
    KVSHM_INCOMPATIBLE = 8,
    KVSHM_CORRUPT = 9,
    KVSHM_PERMISSION_DENIED = 10,
    KVSHM_IO = 11,
    /// NULL where a pointer is required, a bad length, a closed or unknown handle, a bad name
    /// or configuration, or a write on a read-only client.
    KVSHM_INVALID_ARGUMENT = 12,
    /// A bug inside the library was caught at the boundary.
    KVSHM_PANIC = 13,
    /// Another host already serves the store.
    KVSHM_HOST_RUNNING = 14,
    /// A read-only client could not get a consistent view (a writer stalled or died).
    KVSHM_BUSY = 15,
    /// A snapshot file is damaged or of another version.
    KVSHM_BAD_SNAPSHOT = 16,
}

use kvshm_status::*;

/// Every status, for tests and bindings that enumerate them.
/// cbindgen:ignore
pub const ALL_STATUSES: [kvshm_status; 17] = [
    KVSHM_OK,
    KVSHM_NOT_FOUND,
    KVSHM_BUFFER_TOO_SMALL,
    KVSHM_KEY_TOO_LONG,
    KVSHM_VALUE_TOO_LONG,
    KVSHM_STORE_FULL,
    KVSHM_STORE_NOT_FOUND,
    KVSHM_EXISTS,
    KVSHM_INCOMPATIBLE,
    KVSHM_CORRUPT,
    KVSHM_PERMISSION_DENIED,
    KVSHM_IO,
    KVSHM_INVALID_ARGUMENT,
    KVSHM_PANIC,
    KVSHM_HOST_RUNNING,
    KVSHM_BUSY,
    KVSHM_BAD_SNAPSHOT,
];

/// The status of a library error. Exhaustive over the variants this build knows; `Error` is
/// non-exhaustive, so a future variant maps to `KVSHM_IO` until it is added here.
fn status_of(e: &Error) -> kvshm_status {
    match e {
        Error::KeyTooLong { .. } => KVSHM_KEY_TOO_LONG,
        Error::ValueTooLong { .. } => KVSHM_VALUE_TOO_LONG,
        Error::StoreFull { .. } => KVSHM_STORE_FULL,
        Error::NotFound { .. } => KVSHM_STORE_NOT_FOUND,
        Error::AlreadyExists { .. } => KVSHM_EXISTS,
        Error::HostRunning { .. } => KVSHM_HOST_RUNNING,
        Error::Incompatible { .. } => KVSHM_INCOMPATIBLE,
        Error::Corrupt { .. } => KVSHM_CORRUPT,
        Error::PermissionDenied { .. } => KVSHM_PERMISSION_DENIED,
        Error::Busy => KVSHM_BUSY,
        Error::BadSnapshot { .. } => KVSHM_BAD_SNAPSHOT,
        Error::InvalidArgument(_) => KVSHM_INVALID_ARGUMENT,
        Error::Io(_) => KVSHM_IO,
        _ => KVSHM_IO,
    }
}

/// A static, NUL-terminated description of a status value (never NULL; "unknown status" for
/// a value that is not a `kvshm_status`). Takes an `int32_t` so any value is safe to pass.
#[no_mangle]
pub extern "C" fn kvshm_strerror(status: i32) -> *const c_char {
    let Some(&status) = usize::try_from(status)
        .ok()
        .and_then(|i| ALL_STATUSES.get(i))
    else {
        return c"unknown status".as_ptr();
    };
    let s: &'static CStr = match status {
        KVSHM_OK => c"ok",
        KVSHM_NOT_FOUND => c"key not found",
        KVSHM_BUFFER_TOO_SMALL => c"buffer too small",
        KVSHM_KEY_TOO_LONG => c"key too long",
        KVSHM_VALUE_TOO_LONG => c"value too long",
        KVSHM_STORE_FULL => c"store full",
        KVSHM_STORE_NOT_FOUND => c"store not found",
        KVSHM_EXISTS => c"store already exists",
        KVSHM_INCOMPATIBLE => c"incompatible store",
        KVSHM_CORRUPT => c"corrupt store",
        KVSHM_PERMISSION_DENIED => c"permission denied",
        KVSHM_IO => c"I/O error",
        KVSHM_INVALID_ARGUMENT => c"invalid argument",
        KVSHM_PANIC => c"internal error (panic caught)",
        KVSHM_HOST_RUNNING => c"store already hosted",
        KVSHM_BUSY => c"busy: no consistent read-only view",
        KVSHM_BAD_SNAPSHOT => c"bad snapshot",
    };
    s.as_ptr()
}

thread_local! {
    static LAST_ERROR: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Copy the calling thread's last error message (the full text of the last failed call) into
/// `buf` (NUL-terminated, truncated to `len`). Returns the message length without the NUL.
#[no_mangle]
pub unsafe extern "C" fn kvshm_last_error(buf: *mut c_char, len: usize) -> usize {
    LAST_ERROR.with(|m| {
        let m = m.borrow();
        if !buf.is_null() && len > 0 {
            let n = m.len().min(len - 1);
            // SAFETY: the caller gives `len` writable bytes at `buf` (checked non-NULL); we
            // write `n + 1 <= len` of them.
            unsafe {
                std::ptr::copy_nonoverlapping(m.as_ptr(), buf as *mut u8, n);
                *buf.add(n) = 0;
            }
        }
        m.len()
    })
}

fn fail(e: Error) -> kvshm_status {
    LAST_ERROR.with(|m| *m.borrow_mut() = e.to_string());
    status_of(&e)
}

fn invalid(what: &str) -> kvshm_status {
    LAST_ERROR.with(|m| *m.borrow_mut() = format!("invalid argument: {what}"));
    KVSHM_INVALID_ARGUMENT
}

/// Run an entry point, turning panics into `KVSHM_PANIC`.
fn guard(f: impl FnOnce() -> kvshm_status) -> kvshm_status {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        LAST_ERROR
            .with(|m| *m.borrow_mut() = "internal error: panic caught at the C boundary".into());
        KVSHM_PANIC
    })
}

// ---- handles ----

/// Opaque client handle (an id, never dereferenced; declared, never defined, in C).
#[derive(Debug)]
pub struct kvshm_client {
    _private: [u8; 0],
}

/// Opaque host handle (an id, never dereferenced; declared, never defined, in C).
#[derive(Debug)]
pub struct kvshm_host {
    _private: [u8; 0],
}

enum Entry {
    Client(Arc<Client>),
    Host(Arc<Host>),
}

impl Entry {
    fn client(&self) -> &Client {
        match self {
            Entry::Client(c) => c,
            Entry::Host(h) => h,
        }
    }
}

#[derive(Default)]
struct Registry {
    slots: Vec<(u32, Option<Arc<Entry>>)>,
    free: Vec<usize>,
}

static REGISTRY: RwLock<Registry> = RwLock::new(Registry {
    slots: Vec::new(),
    free: Vec::new(),
});
static REGISTER: Mutex<()> = Mutex::new(());

fn register(e: Entry) -> usize {
    let _g = REGISTER.lock().unwrap_or_else(|p| p.into_inner());
    let mut r = REGISTRY.write().unwrap_or_else(|p| p.into_inner());
    let idx = match r.free.pop() {
        Some(i) => i,
        None => {
            r.slots.push((0, None));
            r.slots.len() - 1
        }
    };
    let slot = &mut r.slots[idx];
    slot.0 = slot.0.wrapping_add(1).max(1);
    slot.1 = Some(Arc::new(e));
    (idx + 1) | (slot.0 as usize) << 32
}

fn lookup(h: usize) -> Option<Arc<Entry>> {
    let idx = (h & 0xffff_ffff).checked_sub(1)?;
    let generation = (h >> 32) as u32;
    let r = REGISTRY.read().unwrap_or_else(|p| p.into_inner());
    let (g, e) = r.slots.get(idx)?;
    (*g == generation).then(|| e.clone()).flatten()
}

fn unregister(h: usize) -> Option<Arc<Entry>> {
    let idx = (h & 0xffff_ffff).checked_sub(1)?;
    let generation = (h >> 32) as u32;
    let mut r = REGISTRY.write().unwrap_or_else(|p| p.into_inner());
    let slot = r.slots.get_mut(idx)?;
    if slot.0 != generation {
        return None;
    }
    let e = slot.1.take()?;
    r.free.push(idx);
    Some(e)
}

fn with_client(h: *const kvshm_client, f: impl FnOnce(&Client) -> kvshm_status) -> kvshm_status {
    guard(|| match lookup(h as usize) {
        Some(e) => f(e.client()),
        None => invalid("unknown or closed client handle"),
    })
}

// ---- argument helpers ----

/// Bytes from a (pointer, length) pair: NULL is allowed only with length 0.
unsafe fn bytes<'a>(p: *const u8, len: usize) -> Result<&'a [u8], kvshm_status> {
    if len > isize::MAX as usize {
        return Err(invalid("length too large"));
    }
    if p.is_null() {
        return if len == 0 {
            Ok(&[])
        } else {
            Err(invalid("NULL pointer with a non-zero length"))
        };
    }
    // SAFETY: the caller promises `len` readable bytes at `p` (non-NULL, length checked).
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

unsafe fn c_str<'a>(p: *const c_char, what: &str) -> Result<&'a str, kvshm_status> {
    if p.is_null() {
        return Err(invalid(&format!("{what} is NULL")));
    }
    // SAFETY: the caller promises a NUL-terminated string at `p` (checked non-NULL).
    unsafe { CStr::from_ptr(p) }
        .to_str()
        .map_err(|_| invalid(&format!("{what} is not UTF-8")))
}

unsafe fn opt_dir(p: *const c_char) -> Result<std::path::PathBuf, kvshm_status> {
    if p.is_null() {
        Ok(kvshm_core::default_dir())
    } else {
        // SAFETY: forwarded caller contract.
        Ok(unsafe { c_str(p, "dir") }?.into())
    }
}

unsafe fn out_ptr<'a, T>(p: *mut T, what: &str) -> Result<&'a mut T, kvshm_status> {
    if p.is_null() {
        return Err(invalid(&format!("{what} is NULL")));
    }
    // SAFETY: the caller gives a valid, writable `T` at `p` (checked non-NULL).
    Ok(unsafe { &mut *p })
}

macro_rules! tri {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(s) => return s,
        }
    };
}

// ---- configuration ----

/// Creation parameters. Fill with `kvshm_config_default`, then change fields.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct kvshm_config {
    pub initial_size: u64,
    pub max_size: u64,
    pub max_key_len: usize,
    pub max_value_len: usize,
    /// A power of two up to 65536.
    pub stripes: u32,
    /// Permission bits of the store file (e.g. 0600).
    pub mode: u32,
    /// Directory of the store file; NULL for the default (`$KVSHM_DIR` or /dev/shm).
    pub dir: *const c_char,
}

/// The defaults: 4 MiB initial, 8 GiB max, keys up to 1 KiB, values up to 1 MiB, 1024 stripes,
/// mode 0600, default directory.
#[no_mangle]
pub unsafe extern "C" fn kvshm_config_default(out: *mut kvshm_config) -> kvshm_status {
    guard(|| {
        // SAFETY: checked by `out_ptr`.
        let out = tri!(unsafe { out_ptr(out, "out") });
        *out = kvshm_config {
            initial_size: 4 << 20,
            max_size: 8 << 30,
            max_key_len: 1024,
            max_value_len: 1 << 20,
            stripes: 1024,
            mode: 0o600,
            dir: std::ptr::null(),
        };
        KVSHM_OK
    })
}

// ---- host ----

/// Create and host store `name`. `cfg` may be NULL for the defaults.
#[no_mangle]
pub unsafe extern "C" fn kvshm_host_create(
    name: *const c_char,
    cfg: *const kvshm_config,
    out: *mut *mut kvshm_host,
) -> kvshm_status {
    guard(|| {
        // SAFETY: argument contracts as documented; each helper checks NULL.
        let (name, out) =
            tri!(unsafe { c_str(name, "name").and_then(|n| Ok((n, out_ptr(out, "out")?))) });
        let mut config = Config::default();
        if !cfg.is_null() {
            // SAFETY: non-NULL `cfg` points to a valid kvshm_config (caller contract).
            let c = unsafe { *cfg };
            config = config
                .initial_size(c.initial_size)
                .max_size(c.max_size)
                .max_key_len(c.max_key_len)
                .max_value_len(c.max_value_len)
                .stripes(c.stripes)
                .mode(c.mode);
            // SAFETY: as above for the `dir` string.
            config = config.dir(tri!(unsafe { opt_dir(c.dir) }));
        } else {
            config = config.dir(kvshm_core::default_dir());
        }
        match Host::create(name, &config) {
            Ok(h) => {
                *out = register(Entry::Host(Arc::new(h))) as *mut kvshm_host;
                KVSHM_OK
            }
            Err(e) => fail(e),
        }
    })
}

/// Become the host of an existing store (after a host restart). `dir` may be NULL.
#[no_mangle]
pub unsafe extern "C" fn kvshm_host_open_existing(
    name: *const c_char,
    dir: *const c_char,
    out: *mut *mut kvshm_host,
) -> kvshm_status {
    guard(|| {
        // SAFETY: argument contracts as documented; each helper checks NULL.
        let (name, dir, out) = tri!(unsafe {
            c_str(name, "name").and_then(|n| Ok((n, opt_dir(dir)?, out_ptr(out, "out")?)))
        });
        match Host::open_existing_in(dir, name) {
            Ok(h) => {
                *out = register(Entry::Host(Arc::new(h))) as *mut kvshm_host;
                KVSHM_OK
            }
            Err(e) => fail(e),
        }
    })
}

/// A client handle that uses the host's own attachment (close it with
/// `kvshm_client_close`; it keeps the host alive until then).
#[no_mangle]
pub unsafe extern "C" fn kvshm_host_client(
    host: *const kvshm_host,
    out: *mut *mut kvshm_client,
) -> kvshm_status {
    guard(|| {
        // SAFETY: checked by `out_ptr`.
        let out = tri!(unsafe { out_ptr(out, "out") });
        match lookup(host as usize).as_deref() {
            Some(Entry::Host(h)) => {
                *out = register(Entry::Host(h.clone())) as *mut kvshm_client;
                KVSHM_OK
            }
            _ => invalid("unknown or closed host handle"),
        }
    })
}

/// Stop hosting, keeping the data for the next host. The handle is invalid afterwards.
#[no_mangle]
pub extern "C" fn kvshm_host_close(host: *mut kvshm_host) -> kvshm_status {
    guard(|| match unregister(host as usize) {
        Some(e) if matches!(*e, Entry::Host(_)) => KVSHM_OK,
        Some(_) => invalid("not a host handle"),
        None => invalid("unknown or closed host handle"),
    })
}

/// Remove the store for good and close the host handle.
#[no_mangle]
pub extern "C" fn kvshm_host_release(host: *mut kvshm_host) -> kvshm_status {
    guard(|| {
        let e = match lookup(host as usize) {
            Some(e) => e,
            None => return invalid("unknown or closed host handle"),
        };
        let Entry::Host(h) = &*e else {
            return invalid("not a host handle");
        };
        if let Err(err) = h.remove_store_file() {
            return fail(err);
        }
        unregister(host as usize);
        KVSHM_OK
    })
}

// ---- clients ----

unsafe fn open_client(
    name: *const c_char,
    dir: *const c_char,
    out: *mut *mut kvshm_client,
    read_only: bool,
) -> kvshm_status {
    guard(|| {
        // SAFETY: argument contracts as documented; each helper checks NULL.
        let (name, dir, out) = tri!(unsafe {
            c_str(name, "name").and_then(|n| Ok((n, opt_dir(dir)?, out_ptr(out, "out")?)))
        });
        let r = if read_only {
            Client::open_read_only_in(dir, name)
        } else {
            Client::open_in(dir, name)
        };
        match r {
            Ok(c) => {
                *out = register(Entry::Client(Arc::new(c))) as *mut kvshm_client;
                KVSHM_OK
            }
            Err(e) => fail(e),
        }
    })
}

/// Attach to store `name` (in `dir`, or the default directory when NULL).
#[no_mangle]
pub unsafe extern "C" fn kvshm_client_open(
    name: *const c_char,
    dir: *const c_char,
    out: *mut *mut kvshm_client,
) -> kvshm_status {
    // SAFETY: forwarded caller contract.
    unsafe { open_client(name, dir, out, false) }
}

/// Attach read-only: never writes to the store; writes return KVSHM_INVALID_ARGUMENT.
#[no_mangle]
pub unsafe extern "C" fn kvshm_client_open_read_only(
    name: *const c_char,
    dir: *const c_char,
    out: *mut *mut kvshm_client,
) -> kvshm_status {
    // SAFETY: forwarded caller contract.
    unsafe { open_client(name, dir, out, true) }
}

/// Detach. The handle is invalid afterwards (using it returns KVSHM_INVALID_ARGUMENT).
#[no_mangle]
pub extern "C" fn kvshm_client_close(client: *mut kvshm_client) -> kvshm_status {
    guard(|| match unregister(client as usize) {
        Some(_) => KVSHM_OK,
        None => invalid("unknown or closed client handle"),
    })
}

/// Store `value` under `key` (insert or replace); visible to every process on return.
#[no_mangle]
pub unsafe extern "C" fn kvshm_put(
    client: *const kvshm_client,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
) -> kvshm_status {
    with_client(client, |c| {
        // SAFETY: the caller gives readable ranges of the stated lengths (checked for NULL).
        let (k, v) =
            tri!(unsafe { bytes(key, key_len).and_then(|k| Ok((k, bytes(value, value_len)?))) });
        c.put(k, v).map_or_else(fail, |_| KVSHM_OK)
    })
}

/// Copy the value of `key` into `buf` (`buf_len` bytes). `*value_len` receives the value's
/// length in every case where the key exists: when it exceeds `buf_len` the call returns
/// KVSHM_BUFFER_TOO_SMALL and writes nothing to `buf`. KVSHM_NOT_FOUND when absent.
/// `buf` may be NULL when `buf_len` is 0 (to ask for the length).
#[no_mangle]
pub unsafe extern "C" fn kvshm_get(
    client: *const kvshm_client,
    key: *const u8,
    key_len: usize,
    buf: *mut u8,
    buf_len: usize,
    value_len: *mut usize,
) -> kvshm_status {
    with_client(client, |c| {
        // SAFETY: as in kvshm_put; `value_len` checked by `out_ptr`.
        let (k, vl) = tri!(unsafe {
            bytes(key, key_len).and_then(|k| Ok((k, out_ptr(value_len, "value_len")?)))
        });
        if buf.is_null() && buf_len != 0 {
            return invalid("NULL buffer with a non-zero length");
        }
        let mut v = Vec::new();
        match c.get_into(k, &mut v) {
            Ok(false) => KVSHM_NOT_FOUND,
            Ok(true) => {
                *vl = v.len();
                if v.len() > buf_len {
                    return KVSHM_BUFFER_TOO_SMALL;
                }
                if !v.is_empty() {
                    // SAFETY: `buf` is non-NULL here (v.len() > 0 and <= buf_len) and holds
                    // `buf_len >= v.len()` writable bytes (caller contract).
                    unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), buf, v.len()) };
                }
                KVSHM_OK
            }
            Err(e) => fail(e),
        }
    })
}

/// Remove `key`. `*existed` (may be NULL) tells whether it was there.
#[no_mangle]
pub unsafe extern "C" fn kvshm_remove(
    client: *const kvshm_client,
    key: *const u8,
    key_len: usize,
    existed: *mut bool,
) -> kvshm_status {
    with_client(client, |c| {
        // SAFETY: as in kvshm_put.
        let k = tri!(unsafe { bytes(key, key_len) });
        match c.remove(k) {
            Ok(e) => {
                if !existed.is_null() {
                    // SAFETY: non-NULL `existed` is a writable bool (caller contract).
                    unsafe { *existed = e };
                }
                KVSHM_OK
            }
            Err(e) => fail(e),
        }
    })
}

/// `*found` = whether `key` is present.
#[no_mangle]
pub unsafe extern "C" fn kvshm_contains(
    client: *const kvshm_client,
    key: *const u8,
    key_len: usize,
    found: *mut bool,
) -> kvshm_status {
    with_client(client, |c| {
        // SAFETY: as in kvshm_get.
        let (k, f) =
            tri!(unsafe { bytes(key, key_len).and_then(|k| Ok((k, out_ptr(found, "found")?))) });
        c.contains(k).map_or_else(fail, |b| {
            *f = b;
            KVSHM_OK
        })
    })
}

/// `*len` = number of keys.
#[no_mangle]
pub unsafe extern "C" fn kvshm_len(client: *const kvshm_client, len: *mut u64) -> kvshm_status {
    with_client(client, |c| {
        // SAFETY: checked by `out_ptr`.
        let l = tri!(unsafe { out_ptr(len, "len") });
        *l = c.len();
        KVSHM_OK
    })
}

/// A byte string: `ptr` may be NULL only when `len` is 0.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct kvshm_bytes {
    pub ptr: *const u8,
    pub len: usize,
}

unsafe fn slices<'a>(p: *const kvshm_bytes, n: usize) -> Result<Vec<&'a [u8]>, kvshm_status> {
    if n == 0 {
        return Ok(Vec::new());
    }
    if p.is_null() || n > isize::MAX as usize / std::mem::size_of::<kvshm_bytes>() {
        return Err(invalid("NULL or oversized array"));
    }
    // SAFETY: the caller gives `n` readable kvshm_bytes at `p` (checked non-NULL).
    let arr = unsafe { std::slice::from_raw_parts(p, n) };
    // SAFETY: each element's range is readable (caller contract); `bytes` checks NULL.
    arr.iter().map(|b| unsafe { bytes(b.ptr, b.len) }).collect()
}

/// Store `n` pairs `keys[i] -> values[i]`, all or nothing.
#[no_mangle]
pub unsafe extern "C" fn kvshm_put_many(
    client: *const kvshm_client,
    keys: *const kvshm_bytes,
    values: *const kvshm_bytes,
    n: usize,
) -> kvshm_status {
    with_client(client, |c| {
        // SAFETY: forwarded caller contract.
        let (k, v) = tri!(unsafe { slices(keys, n).and_then(|k| Ok((k, slices(values, n)?))) });
        let items: Vec<(&[u8], &[u8])> = k.into_iter().zip(v).collect();
        c.put_many(&items).map_or_else(fail, |_| KVSHM_OK)
    })
}

/// Length marker of a missing key in `kvshm_get_many`'s `value_lens` (`SIZE_MAX` in C).
/// cbindgen:ignore
pub const KVSHM_MISSING: usize = usize::MAX;

/// Read `n` keys as one consistent snapshot. Values are packed one after another into `buf`;
/// `value_lens[i]` receives each length (KVSHM_MISSING for an absent key). When they do not
/// fit, returns KVSHM_BUFFER_TOO_SMALL with `*needed` set to the total and `buf` untouched.
#[no_mangle]
pub unsafe extern "C" fn kvshm_get_many(
    client: *const kvshm_client,
    keys: *const kvshm_bytes,
    n: usize,
    buf: *mut u8,
    buf_len: usize,
    value_lens: *mut usize,
    needed: *mut usize,
) -> kvshm_status {
    with_client(client, |c| {
        // SAFETY: forwarded caller contract; `needed` checked by `out_ptr`.
        let (k, need) =
            tri!(unsafe { slices(keys, n).and_then(|k| Ok((k, out_ptr(needed, "needed")?))) });
        if n > 0 && value_lens.is_null() {
            return invalid("value_lens is NULL");
        }
        if buf.is_null() && buf_len != 0 {
            return invalid("NULL buffer with a non-zero length");
        }
        let vals = match c.get_many(&k) {
            Ok(v) => v,
            Err(e) => return fail(e),
        };
        let total: usize = vals.iter().flatten().map(Vec::len).sum();
        *need = total;
        if n > 0 {
            // SAFETY: the caller gives `n` writable usizes at `value_lens` (checked non-NULL).
            let lens = unsafe { std::slice::from_raw_parts_mut(value_lens, n) };
            for (l, v) in lens.iter_mut().zip(&vals) {
                *l = v.as_ref().map_or(KVSHM_MISSING, Vec::len);
            }
        }
        if total > buf_len {
            return KVSHM_BUFFER_TOO_SMALL;
        }
        let mut at = 0;
        for v in vals.iter().flatten().filter(|v| !v.is_empty()) {
            // SAFETY: `buf` holds `buf_len >= total` writable bytes (non-NULL since total > 0).
            unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), buf.add(at), v.len()) };
            at += v.len();
        }
        KVSHM_OK
    })
}

/// Remove `n` keys atomically; `*removed` (may be NULL) receives how many existed.
#[no_mangle]
pub unsafe extern "C" fn kvshm_remove_many(
    client: *const kvshm_client,
    keys: *const kvshm_bytes,
    n: usize,
    removed: *mut usize,
) -> kvshm_status {
    with_client(client, |c| {
        // SAFETY: forwarded caller contract.
        let k = tri!(unsafe { slices(keys, n) });
        match c.remove_many(&k) {
            Ok(r) => {
                if !removed.is_null() {
                    // SAFETY: non-NULL `removed` is writable (caller contract).
                    unsafe { *removed = r };
                }
                KVSHM_OK
            }
            Err(e) => fail(e),
        }
    })
}

/// Store metrics (see `kvshm::Stats`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct kvshm_stats {
    pub keys: u64,
    pub value_bytes: u64,
    pub committed_bytes: u64,
    pub used_bytes: u64,
    pub free_bytes: u64,
    pub max_bytes: u64,
    pub gets: u64,
    pub hits: u64,
    pub puts: u64,
    pub removes: u64,
    pub clients: u64,
    pub recoveries: u64,
    pub growths: u64,
    /// 0 when no host runs.
    pub host_pid: u64,
    pub max_key_len: u64,
    pub max_value_len: u64,
}

/// Fill `*out` with the store's metrics.
#[no_mangle]
pub unsafe extern "C" fn kvshm_get_stats(
    client: *const kvshm_client,
    out: *mut kvshm_stats,
) -> kvshm_status {
    with_client(client, |c| {
        // SAFETY: checked by `out_ptr`.
        let o = tri!(unsafe { out_ptr(out, "out") });
        let s = c.stats();
        *o = kvshm_stats {
            keys: s.keys,
            value_bytes: s.value_bytes,
            committed_bytes: s.committed_bytes,
            used_bytes: s.used_bytes,
            free_bytes: s.free_bytes,
            max_bytes: s.max_bytes,
            gets: s.gets,
            hits: s.hits,
            puts: s.puts,
            removes: s.removes,
            clients: s.clients.len() as u64,
            recoveries: s.recoveries,
            growths: s.growths,
            host_pid: s.host_pid.unwrap_or(0),
            max_key_len: s.max_key_len as u64,
            max_value_len: s.max_value_len as u64,
        };
        KVSHM_OK
    })
}

/// Full integrity check. `*problems` receives the number of problems (0 = healthy); when
/// `report` is not NULL the first problems are written there as text (NUL-terminated,
/// truncated to `report_len`).
#[no_mangle]
pub unsafe extern "C" fn kvshm_verify(
    client: *const kvshm_client,
    problems: *mut u64,
    report: *mut c_char,
    report_len: usize,
) -> kvshm_status {
    with_client(client, |c| {
        // SAFETY: checked by `out_ptr`.
        let p = tri!(unsafe { out_ptr(problems, "problems") });
        match c.verify() {
            Ok(r) => {
                *p = r.problems.len() as u64;
                if !report.is_null() && report_len > 0 {
                    let text = r.problems.join("\n");
                    let n = text.len().min(report_len - 1);
                    // SAFETY: `report` holds `report_len` writable bytes (caller contract);
                    // we write n + 1 <= report_len.
                    unsafe {
                        std::ptr::copy_nonoverlapping(text.as_ptr(), report as *mut u8, n);
                        *report.add(n) = 0;
                    }
                }
                KVSHM_OK
            }
            Err(e) => fail(e),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_has_a_message_and_round_trips() {
        for (i, s) in ALL_STATUSES.iter().enumerate() {
            assert_eq!(*s as i32, i as i32, "status values are dense and fixed");
            // SAFETY: kvshm_strerror returns a static NUL-terminated string.
            let m = unsafe { CStr::from_ptr(kvshm_strerror(*s as i32)) }
                .to_str()
                .unwrap();
            assert!(!m.is_empty());
        }
        let errors = [
            (Error::KeyTooLong { len: 2, max: 1 }, KVSHM_KEY_TOO_LONG),
            (Error::ValueTooLong { len: 2, max: 1 }, KVSHM_VALUE_TOO_LONG),
            (Error::StoreFull { hint: "" }, KVSHM_STORE_FULL),
            (
                Error::NotFound {
                    path: String::new(),
                },
                KVSHM_STORE_NOT_FOUND,
            ),
            (
                Error::AlreadyExists {
                    path: String::new(),
                },
                KVSHM_EXISTS,
            ),
            (Error::HostRunning { pid: 1 }, KVSHM_HOST_RUNNING),
            (
                Error::Incompatible {
                    what: String::new(),
                },
                KVSHM_INCOMPATIBLE,
            ),
            (
                Error::Corrupt {
                    offset: 0,
                    what: String::new(),
                },
                KVSHM_CORRUPT,
            ),
            (
                Error::PermissionDenied {
                    path: String::new(),
                },
                KVSHM_PERMISSION_DENIED,
            ),
            (Error::Busy, KVSHM_BUSY),
            (
                Error::BadSnapshot {
                    offset: 0,
                    what: String::new(),
                },
                KVSHM_BAD_SNAPSHOT,
            ),
            (
                Error::InvalidArgument(String::new()),
                KVSHM_INVALID_ARGUMENT,
            ),
            (Error::Io(std::io::Error::other("x")), KVSHM_IO),
        ];
        for (e, s) in errors {
            assert_eq!(status_of(&e), s, "{e:?}");
        }
    }

    #[test]
    fn handles_are_checked() {
        assert_eq!(
            kvshm_client_close(std::ptr::null_mut()),
            KVSHM_INVALID_ARGUMENT
        );
        assert_eq!(
            kvshm_client_close(12345usize as *mut kvshm_client),
            KVSHM_INVALID_ARGUMENT
        );
        let mut n = 0u64;
        // SAFETY: valid out pointer; the handle is made up on purpose.
        let made_up = unsafe { kvshm_len(7usize as *const kvshm_client, &mut n) };
        assert_eq!(made_up, KVSHM_INVALID_ARGUMENT);
        assert_eq!(guard(|| panic!("boom")), KVSHM_PANIC);
        // SAFETY: static strings.
        let unknown = unsafe { CStr::from_ptr(kvshm_strerror(99)) };
        assert_eq!(unknown.to_str().unwrap(), "unknown status");
        // SAFETY: as above.
        let negative = unsafe { CStr::from_ptr(kvshm_strerror(-1)) };
        assert_eq!(negative.to_str().unwrap(), "unknown status");
    }
}
