//! Entry points of a host: configuration, create, adopt, close, release.

use std::ffi::c_char;
use std::sync::Arc;

use kvshm_core::{Config, Host};

use crate::args::{c_str, opt_dir, out_ptr};
use crate::handle::{lookup, register, unregister, Entry, Kind};
use crate::{fail, guard, invalid, kvshm_client, kvshm_host, kvshm_status, tri};
use kvshm_status::*;

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
    /// Directory of the store file; NULL for the default (`$KVSHM_DIR`, else /dev/shm; on Windows %LOCALAPPDATA%\kvshm).
    pub dir: *const c_char,
}

/// The defaults: 4 MiB initial, 8 GiB max, keys up to 1 KiB, values up to 1 MiB, 1024 stripes,
/// mode 0600, default directory.
///
/// # Safety
/// `out` is NULL or points to a writable `kvshm_config`.
#[no_mangle]
pub unsafe extern "C" fn kvshm_config_default(out: *mut kvshm_config) -> kvshm_status {
    guard(|| {
        // SAFETY: checked by `out_ptr`.
        let out = tri!(unsafe { out_ptr(out, "out") });
        let d = Config::default();
        *out = kvshm_config {
            initial_size: d.get_initial_size(),
            max_size: d.get_max_size(),
            max_key_len: d.get_max_key_len(),
            max_value_len: d.get_max_value_len(),
            stripes: d.get_stripes(),
            mode: d.get_mode(),
            dir: std::ptr::null(),
        };
        KVSHM_OK
    })
}

/// Create and host store `name`. `cfg` may be NULL for the defaults.
///
/// # Safety
/// `name` is NULL or a NUL-terminated string; `cfg` is NULL or points to a readable
/// `kvshm_config` whose `dir` is NULL or a NUL-terminated string; `out` is NULL or points to a
/// writable handle.
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
///
/// # Safety
/// `name` and `dir` are NULL or NUL-terminated strings; `out` is NULL or points to a writable
/// handle.
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
///
/// # Safety
/// `out` is NULL or points to a writable handle. `host` may be anything (it is looked up, never
/// dereferenced).
#[no_mangle]
pub unsafe extern "C" fn kvshm_host_client(
    host: *const kvshm_host,
    out: *mut *mut kvshm_client,
) -> kvshm_status {
    guard(|| {
        // SAFETY: checked by `out_ptr`.
        let out = tri!(unsafe { out_ptr(out, "out") });
        match lookup(host as usize, Kind::Host).as_deref() {
            Some(Entry::Host(h)) => {
                *out = register(Entry::HostClient(h.clone())) as *mut kvshm_client;
                KVSHM_OK
            }
            _ => invalid("unknown or closed host handle"),
        }
    })
}

/// Stop hosting, keeping the data for the next host. The handle is invalid afterwards.
#[no_mangle]
pub extern "C" fn kvshm_host_close(host: *mut kvshm_host) -> kvshm_status {
    guard(|| match unregister(host as usize, Kind::Host) {
        Some(_) => KVSHM_OK,
        None => invalid("unknown or closed host handle (or not a host handle)"),
    })
}

/// Remove the store for good and close the host handle.
#[no_mangle]
pub extern "C" fn kvshm_host_release(host: *mut kvshm_host) -> kvshm_status {
    guard(|| {
        let e = match lookup(host as usize, Kind::Host) {
            Some(e) => e,
            None => return invalid("unknown or closed host handle (or not a host handle)"),
        };
        let Entry::Host(h) = &*e else {
            return invalid("not a host handle");
        };
        if let Err(err) = h.remove_store_file() {
            return fail(err);
        }
        unregister(host as usize, Kind::Host);
        KVSHM_OK
    })
}
