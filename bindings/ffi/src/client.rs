//! Entry points of a client: open, close, and the data operations.

use std::ffi::c_char;
use std::sync::Arc;

use kvshm_core::Client;

use crate::args::{bytes, c_str, opt_dir, out_ptr, slices};
use crate::handle::{register, unregister, with_client, Entry, Kind};
use crate::{fail, guard, invalid, kvshm_bytes, kvshm_client, kvshm_status, tri};
use kvshm_status::*;

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
///
/// # Safety
/// `name` and `dir` are NULL or NUL-terminated strings; `out` is NULL or points to a writable
/// handle.
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
///
/// # Safety
/// As for `kvshm_client_open`.
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
    guard(|| match unregister(client as usize, Kind::Client) {
        Some(_) => KVSHM_OK,
        None => invalid("unknown or closed client handle (or not a client handle)"),
    })
}

/// Store `value` under `key` (insert or replace); visible to every process on return.
///
/// # Safety
/// `key` points to `key_len` readable bytes and `value` to `value_len` (either may be NULL when
/// its length is 0). `client` may be anything (it is looked up, never dereferenced).
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
///
/// # Safety
/// `key` points to `key_len` readable bytes (NULL if 0); `buf` points to `buf_len` writable
/// bytes (NULL if 0); `value_len` is NULL or points to a writable `size_t`.
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
        // A per-thread buffer: a hit allocates nothing once it has the capacity (it keeps at
        // most 1 MiB between calls).
        GET_BUF.with(|cell| {
            let mut v = cell.take();
            let status = match c.get_into(k, &mut v) {
                Ok(false) => KVSHM_NOT_FOUND,
                // SAFETY: forwarded caller contract for `buf`/`buf_len`.
                Ok(true) => unsafe { deliver(&v, buf, buf_len, vl) },
                Err(e) => fail(e),
            };
            if v.capacity() > 1 << 20 {
                v = Vec::new();
            }
            cell.set(v);
            status
        })
    })
}

/// Hand a value to the caller: `*value_len` = its length; copied into `buf` when it fits,
/// else KVSHM_BUFFER_TOO_SMALL with `buf` untouched.
///
/// # Safety
/// `buf` is NULL only when `buf_len` is 0 (checked by the callers), else points to `buf_len`
/// writable bytes.
pub(crate) unsafe fn deliver(
    v: &[u8],
    buf: *mut u8,
    buf_len: usize,
    value_len: &mut usize,
) -> kvshm_status {
    *value_len = v.len();
    if v.len() > buf_len {
        return KVSHM_BUFFER_TOO_SMALL;
    }
    if !v.is_empty() {
        // SAFETY: `buf` is non-NULL here (0 < v.len() <= buf_len) and holds `buf_len` writable
        // bytes (caller contract).
        unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), buf, v.len()) };
    }
    KVSHM_OK
}

thread_local! {
    /// `kvshm_get`'s copy buffer, reused by the calls of one thread.
    static GET_BUF: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Remove `key`. `*existed` (may be NULL) tells whether it was there.
///
/// # Safety
/// `key` points to `key_len` readable bytes (NULL if 0); `existed` is NULL or points to a
/// writable `bool`.
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
///
/// # Safety
/// `key` points to `key_len` readable bytes (NULL if 0); `found` is NULL or points to a
/// writable `bool`.
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
///
/// # Safety
/// `len` is NULL or points to a writable `uint64_t`.
#[no_mangle]
pub unsafe extern "C" fn kvshm_len(client: *const kvshm_client, len: *mut u64) -> kvshm_status {
    with_client(client, |c| {
        // SAFETY: checked by `out_ptr`.
        let l = tri!(unsafe { out_ptr(len, "len") });
        *l = c.len();
        KVSHM_OK
    })
}

/// Store `n` pairs `keys[i] -> values[i]`, all or nothing.
///
/// # Safety
/// `keys` and `values` each point to `n` readable `kvshm_bytes` (NULL if `n` is 0), and each of
/// those to its `len` readable bytes.
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
///
/// # Safety
/// `keys` points to `n` readable `kvshm_bytes` (each to its `len` readable bytes); `buf` to
/// `buf_len` writable bytes (NULL if 0); `value_lens` to `n` writable `size_t`; `needed` is
/// NULL or points to a writable `size_t`.
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
///
/// # Safety
/// `keys` points to `n` readable `kvshm_bytes` (NULL if `n` is 0), each to its `len` readable
/// bytes; `removed` is NULL or points to a writable `size_t`.
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
