//! Entry points of issues 13 and 14: versions, conditional writes, counters, waiting for a
//! change, expiry.
//! Versions are never 0, so 0 stands for "absent" wherever a version is passed or returned.

use std::time::Duration;

use kvshm_core::{Error, Ttl, WaitResult};

use crate::args::{bytes, out_ptr, slices};
use crate::client::deliver;
use crate::handle::with_client;
use crate::{fail, invalid, kvshm_bytes, kvshm_client, kvshm_status, tri};
use kvshm_status::*;

/// Write `v` to `p` if `p` is not NULL.
///
/// # Safety
/// `p` is NULL or points to a writable `T`.
unsafe fn put_out<T>(p: *mut T, v: T) {
    if !p.is_null() {
        // SAFETY: non-NULL `p` is writable (caller contract).
        unsafe { *p = v };
    }
}

/// The status of `r`; on a conflict the version found goes to `current` (0 = absent).
///
/// # Safety
/// `current` is NULL or points to a writable `uint64_t`.
unsafe fn conflict_status<T>(r: &kvshm_core::Result<T>, current: *mut u64) -> Option<kvshm_status> {
    match r {
        Ok(_) => None,
        Err(Error::Conflict { current: c, .. }) => {
            // SAFETY: forwarded caller contract.
            unsafe { put_out(current, c.unwrap_or(0)) };
            Some(KVSHM_CONFLICT)
        }
        Err(_) => None,
    }
}

/// Like `kvshm_get`, and `*version` (may be NULL) receives the value's version.
///
/// # Safety
/// As for `kvshm_get`; `version` is NULL or points to a writable `uint64_t`.
#[no_mangle]
pub unsafe extern "C" fn kvshm_get_versioned(
    client: *const kvshm_client,
    key: *const u8,
    key_len: usize,
    buf: *mut u8,
    buf_len: usize,
    value_len: *mut usize,
    version: *mut u64,
) -> kvshm_status {
    with_client(client, |c| {
        // SAFETY: the caller gives a readable key range and a writable `value_len`.
        let (k, vl) = tri!(unsafe {
            bytes(key, key_len).and_then(|k| Ok((k, out_ptr(value_len, "value_len")?)))
        });
        if buf.is_null() && buf_len != 0 {
            return invalid("NULL buffer with a non-zero length");
        }
        match c.get_versioned(k) {
            Ok(None) => KVSHM_NOT_FOUND,
            Ok(Some((v, ver))) => {
                // SAFETY: caller contract for `version`, `buf` and `buf_len`.
                unsafe {
                    put_out(version, ver);
                    deliver(&v, buf, buf_len, vl)
                }
            }
            Err(e) => fail(e),
        }
    })
}

/// Store `value` only if `key`'s version is `expected` (0: only if absent). `*new_version`
/// (may be NULL) receives the new version; on KVSHM_CONFLICT `*current` (may be NULL) receives
/// the version found (0: absent) and nothing changed.
///
/// # Safety
/// `key`/`value` point to readable ranges of the stated lengths (NULL if 0); `new_version`
/// and `current` are NULL or point to writable `uint64_t`s.
#[no_mangle]
pub unsafe extern "C" fn kvshm_put_if_version(
    client: *const kvshm_client,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
    expected: u64,
    new_version: *mut u64,
    current: *mut u64,
) -> kvshm_status {
    with_client(client, |c| {
        // SAFETY: readable ranges of the stated lengths (caller contract).
        let (k, v) =
            tri!(unsafe { bytes(key, key_len).and_then(|k| Ok((k, bytes(value, value_len)?))) });
        let r = c.put_if_version(k, v, (expected != 0).then_some(expected));
        // SAFETY: caller contract for `current`.
        if let Some(s) = unsafe { conflict_status(&r, current) } {
            return s;
        }
        match r {
            Ok(ver) => {
                // SAFETY: caller contract for `new_version`.
                unsafe { put_out(new_version, ver) };
                KVSHM_OK
            }
            Err(e) => fail(e),
        }
    })
}

/// Remove `key` only if its version is `expected`; KVSHM_CONFLICT (with `*current`, 0 =
/// absent) otherwise.
///
/// # Safety
/// `key` points to `key_len` readable bytes (NULL if 0); `current` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn kvshm_remove_if_version(
    client: *const kvshm_client,
    key: *const u8,
    key_len: usize,
    expected: u64,
    current: *mut u64,
) -> kvshm_status {
    with_client(client, |c| {
        // SAFETY: readable key range (caller contract).
        let k = tri!(unsafe { bytes(key, key_len) });
        let r = c.remove_if_version(k, expected);
        // SAFETY: caller contract for `current`.
        if let Some(s) = unsafe { conflict_status(&r, current) } {
            return s;
        }
        r.map_or_else(fail, |_| KVSHM_OK)
    })
}

/// Store `value` only if `key` is absent; `*stored` (may be NULL) says whether it was.
///
/// # Safety
/// As for `kvshm_put`; `stored` is NULL or points to a writable `bool`.
#[no_mangle]
pub unsafe extern "C" fn kvshm_put_if_absent(
    client: *const kvshm_client,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
    stored: *mut bool,
) -> kvshm_status {
    // SAFETY: forwarded caller contract.
    unsafe {
        put_when(client, key, key_len, value, value_len, stored, |c, k, v| {
            c.put_if_absent(k, v)
        })
    }
}

/// A put that may not happen (`f` says whether it did): `kvshm_put_if_absent`, `kvshm_replace`.
///
/// # Safety
/// As for `kvshm_put_if_absent`.
unsafe fn put_when(
    client: *const kvshm_client,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
    stored: *mut bool,
    f: impl FnOnce(&kvshm_core::Client, &[u8], &[u8]) -> kvshm_core::Result<bool>,
) -> kvshm_status {
    with_client(client, |c| {
        // SAFETY: readable ranges of the stated lengths (caller contract).
        let (k, v) =
            tri!(unsafe { bytes(key, key_len).and_then(|k| Ok((k, bytes(value, value_len)?))) });
        match f(c, k, v) {
            Ok(b) => {
                // SAFETY: caller contract for `stored`.
                unsafe { put_out(stored, b) };
                KVSHM_OK
            }
            Err(e) => fail(e),
        }
    })
}

/// Add `delta` to the decimal integer under `key` (absent = 0), store it as decimal text, and
/// write the result to `*result` (may be NULL). KVSHM_NOT_AN_INTEGER / KVSHM_OVERFLOW change
/// nothing.
///
/// # Safety
/// `key` points to `key_len` readable bytes (NULL if 0); `result` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn kvshm_incr(
    client: *const kvshm_client,
    key: *const u8,
    key_len: usize,
    delta: i64,
    result: *mut i64,
) -> kvshm_status {
    with_client(client, |c| {
        // SAFETY: readable key range (caller contract).
        let k = tri!(unsafe { bytes(key, key_len) });
        match c.incr(k, delta) {
            Ok(n) => {
                // SAFETY: caller contract for `result`.
                unsafe { put_out(result, n) };
                KVSHM_OK
            }
            Err(e) => fail(e),
        }
    })
}

/// Append `data` to the value of `key` (absent = empty); `*new_len` (may be NULL) receives
/// the new length.
///
/// # Safety
/// `key`/`data` point to readable ranges of the stated lengths (NULL if 0); `new_len` is NULL
/// or writable.
#[no_mangle]
pub unsafe extern "C" fn kvshm_append(
    client: *const kvshm_client,
    key: *const u8,
    key_len: usize,
    data: *const u8,
    data_len: usize,
    new_len: *mut usize,
) -> kvshm_status {
    with_client(client, |c| {
        // SAFETY: readable ranges of the stated lengths (caller contract).
        let (k, d) =
            tri!(unsafe { bytes(key, key_len).and_then(|k| Ok((k, bytes(data, data_len)?))) });
        match c.append(k, d) {
            Ok(n) => {
                // SAFETY: caller contract for `new_len`.
                unsafe { put_out(new_len, n) };
                KVSHM_OK
            }
            Err(e) => fail(e),
        }
    })
}

/// Wait until `key`'s version is no longer `since` (0: until it exists), at most `timeout_ms`
/// milliseconds, sleeping (no polling). `*changed` says whether it changed (false: timed out)
/// and `*version` (both may be NULL) receives the version then (0: absent). Needs a writable
/// client.
///
/// # Safety
/// `key` points to `key_len` readable bytes (NULL if 0); `changed` and `version` are NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn kvshm_wait_changed(
    client: *const kvshm_client,
    key: *const u8,
    key_len: usize,
    since: u64,
    timeout_ms: u64,
    changed: *mut bool,
    version: *mut u64,
) -> kvshm_status {
    with_client(client, |c| {
        // SAFETY: readable key range (caller contract).
        let k = tri!(unsafe { bytes(key, key_len) });
        let since = (since != 0).then_some(since);
        match c.wait_changed(k, since, Duration::from_millis(timeout_ms)) {
            Ok(r) => {
                let (ch, v) = match r {
                    WaitResult::Changed(v) => (true, v.unwrap_or(0)),
                    WaitResult::Timeout => (false, since.unwrap_or(0)),
                };
                // SAFETY: caller contract for `changed` and `version`.
                unsafe {
                    put_out(changed, ch);
                    put_out(version, v);
                }
                KVSHM_OK
            }
            Err(e) => fail(e),
        }
    })
}

/// Store `value` only if `key` is present; `*stored` (may be NULL) says whether it was.
///
/// # Safety
/// As for `kvshm_put_if_absent`.
#[no_mangle]
pub unsafe extern "C" fn kvshm_replace(
    client: *const kvshm_client,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
    stored: *mut bool,
) -> kvshm_status {
    // SAFETY: forwarded caller contract.
    unsafe {
        put_when(client, key, key_len, value, value_len, stored, |c, k, v| {
            c.replace(k, v)
        })
    }
}

/// All or nothing, atomically: if every `check_keys[i]` is at `check_versions[i]` (0: must be
/// absent), store the `n_puts` pairs and remove the `n_removes` keys; otherwise
/// KVSHM_CONFLICT with `*failed_check` (the index of the first failed check) and `*current`
/// (the version found there, 0 = absent), both may be NULL, and nothing changes.
///
/// # Safety
/// `check_keys` points to `n_checks` readable `kvshm_bytes` and `check_versions` to
/// `n_checks` `uint64_t`; `put_keys`/`put_values` to `n_puts` `kvshm_bytes` each;
/// `remove_keys` to `n_removes` (any array may be NULL when its count is 0); every
/// `kvshm_bytes` to its `len` readable bytes; `failed_check` and `current` are NULL or
/// writable.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn kvshm_commit_if(
    client: *const kvshm_client,
    check_keys: *const kvshm_bytes,
    check_versions: *const u64,
    n_checks: usize,
    put_keys: *const kvshm_bytes,
    put_values: *const kvshm_bytes,
    n_puts: usize,
    remove_keys: *const kvshm_bytes,
    n_removes: usize,
    failed_check: *mut usize,
    current: *mut u64,
) -> kvshm_status {
    with_client(client, |c| {
        if n_checks > 0 && (check_versions.is_null() || n_checks > isize::MAX as usize / 8) {
            return invalid("check_versions is NULL or oversized");
        }
        // SAFETY: forwarded caller contract (counts and readable arrays).
        let (ck, pk, pv, rk) = tri!(unsafe {
            slices(check_keys, n_checks).and_then(|ck| {
                Ok((
                    ck,
                    slices(put_keys, n_puts)?,
                    slices(put_values, n_puts)?,
                    slices(remove_keys, n_removes)?,
                ))
            })
        });
        let versions: &[u64] = if n_checks == 0 {
            &[]
        } else {
            // SAFETY: `check_versions` holds `n_checks` readable u64s (checked non-NULL).
            unsafe { std::slice::from_raw_parts(check_versions, n_checks) }
        };
        let checks: Vec<(&[u8], Option<u64>)> = ck
            .into_iter()
            .zip(versions)
            .map(|(k, &v)| (k, (v != 0).then_some(v)))
            .collect();
        let puts: Vec<(&[u8], &[u8])> = pk.into_iter().zip(pv).collect();
        match c.commit_if(&checks, &puts, &rk) {
            Ok(()) => KVSHM_OK,
            Err(Error::Conflict {
                index,
                current: cur,
            }) => {
                // SAFETY: caller contract for `failed_check` and `current`.
                unsafe {
                    put_out(failed_check, index);
                    put_out(current, cur.unwrap_or(0));
                }
                KVSHM_CONFLICT
            }
            Err(e) => fail(e),
        }
    })
}

/// Store `value` under `key`, expiring `ttl_ms` milliseconds from now (0 is
/// KVSHM_INVALID_ARGUMENT). From then on the key is absent for every process.
///
/// # Safety
/// As for `kvshm_put`.
#[no_mangle]
pub unsafe extern "C" fn kvshm_put_ttl(
    client: *const kvshm_client,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
    ttl_ms: u64,
) -> kvshm_status {
    with_client(client, |c| {
        // SAFETY: readable ranges of the stated lengths (caller contract).
        let (k, v) =
            tri!(unsafe { bytes(key, key_len).and_then(|k| Ok((k, bytes(value, value_len)?))) });
        c.put_with_ttl(k, v, Duration::from_millis(ttl_ms))
            .map_or_else(fail, |_| KVSHM_OK)
    })
}

/// Make `key` expire `ttl_ms` milliseconds from now; `*found` (may be NULL) says whether the
/// key exists.
///
/// # Safety
/// `key` points to `key_len` readable bytes (NULL if 0); `found` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn kvshm_expire(
    client: *const kvshm_client,
    key: *const u8,
    key_len: usize,
    ttl_ms: u64,
    found: *mut bool,
) -> kvshm_status {
    with_client(client, |c| {
        // SAFETY: readable key range (caller contract).
        let k = tri!(unsafe { bytes(key, key_len) });
        match c.expire(k, Duration::from_millis(ttl_ms)) {
            Ok(b) => {
                // SAFETY: caller contract for `found`.
                unsafe { put_out(found, b) };
                KVSHM_OK
            }
            Err(e) => fail(e),
        }
    })
}

/// Remove `key`'s expiry; `*had` (may be NULL) says whether it had one.
///
/// # Safety
/// `key` points to `key_len` readable bytes (NULL if 0); `had` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn kvshm_persist(
    client: *const kvshm_client,
    key: *const u8,
    key_len: usize,
    had: *mut bool,
) -> kvshm_status {
    with_client(client, |c| {
        // SAFETY: readable key range (caller contract).
        let k = tri!(unsafe { bytes(key, key_len) });
        match c.persist(k) {
            Ok(b) => {
                // SAFETY: caller contract for `had`.
                unsafe { put_out(had, b) };
                KVSHM_OK
            }
            Err(e) => fail(e),
        }
    })
}

/// `*ttl_ms` receives how many milliseconds `key` has to live, or -1 when it does not expire.
/// KVSHM_NOT_FOUND when the key is missing or expired.
///
/// # Safety
/// `key` points to `key_len` readable bytes (NULL if 0); `ttl_ms` points to a writable
/// `int64_t`.
#[no_mangle]
pub unsafe extern "C" fn kvshm_ttl(
    client: *const kvshm_client,
    key: *const u8,
    key_len: usize,
    ttl_ms: *mut i64,
) -> kvshm_status {
    with_client(client, |c| {
        // SAFETY: readable key range and a writable `ttl_ms` (caller contract).
        let (k, out) =
            tri!(unsafe { bytes(key, key_len).and_then(|k| Ok((k, out_ptr(ttl_ms, "ttl_ms")?))) });
        match c.ttl(k) {
            Ok(Ttl::Missing) => KVSHM_NOT_FOUND,
            Ok(Ttl::Persistent) => {
                *out = -1;
                KVSHM_OK
            }
            Ok(Ttl::Remaining(d)) => {
                *out = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
                KVSHM_OK
            }
            Err(e) => fail(e),
        }
    })
}
