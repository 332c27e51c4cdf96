//! kvshm through its C ABI: `libkvshm.so` loaded with `dlopen`, called through the exported
//! `kvshm_*` functions exactly as a C program would. The store is set up by
//! [`super::kvshm_rs::KvShm`]; only the client side differs.

use super::{Conn, Res};
use std::ffi::{c_char, c_void, CString};
use std::path::PathBuf;

type OpenFn = unsafe extern "C" fn(*const c_char, *const c_char, *mut *mut c_void) -> i32;
type GetFn =
    unsafe extern "C" fn(*const c_void, *const u8, usize, *mut u8, usize, *mut usize) -> i32;
type PutFn = unsafe extern "C" fn(*const c_void, *const u8, usize, *const u8, usize) -> i32;
type CloseFn = extern "C" fn(*mut c_void) -> i32;

const KVSHM_OK: i32 = 0;
const KVSHM_NOT_FOUND: i32 = 1;
const KVSHM_BUFFER_TOO_SMALL: i32 = 2;

/// Where the shared library is: `KVSHM_FFI_LIB`, or beside this executable (cargo's target
/// directory, where `cargo build --release -p kvshm-ffi` puts it).
fn library() -> Res<PathBuf> {
    if let Some(p) = std::env::var_os("KVSHM_FFI_LIB") {
        return Ok(p.into());
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = exe.parent().ok_or("no executable directory")?;
    let p = dir.join("libkvshm.so");
    if p.exists() {
        return Ok(p);
    }
    Err(format!(
        "{} not found: build it with `cargo build --release -p kvshm-ffi` (or set KVSHM_FFI_LIB)",
        p.display()
    ))
}

struct Lib {
    open: OpenFn,
    get: GetFn,
    put: PutFn,
    close: CloseFn,
}

fn sym(h: *mut c_void, name: &str) -> Res<*mut c_void> {
    let c = CString::new(name).expect("symbol name");
    // SAFETY: `h` is a live handle from dlopen (never closed); `c` is NUL-terminated.
    let p = unsafe { libc::dlsym(h, c.as_ptr()) };
    if p.is_null() {
        return Err(format!("symbol {name} missing from libkvshm.so"));
    }
    Ok(p)
}

fn lib() -> Res<Lib> {
    let path = library()?;
    let c = CString::new(path.to_string_lossy().as_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: `c` is NUL-terminated. The handle is never closed (the symbols stay valid).
    let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if h.is_null() {
        return Err(format!("dlopen {} failed", path.display()));
    }
    let (open, get, put, close) = (
        sym(h, "kvshm_client_open")?,
        sym(h, "kvshm_get")?,
        sym(h, "kvshm_put")?,
        sym(h, "kvshm_client_close")?,
    );
    // SAFETY: each symbol is the exported function of that name, whose C signature (in
    // include/kvshm.h) is the function pointer type it is transmuted to.
    unsafe {
        Ok(Lib {
            open: std::mem::transmute::<*mut c_void, OpenFn>(open),
            get: std::mem::transmute::<*mut c_void, GetFn>(get),
            put: std::mem::transmute::<*mut c_void, PutFn>(put),
            close: std::mem::transmute::<*mut c_void, CloseFn>(close),
        })
    }
}

/// Whether the library can be loaded (so a missing build is reported as skipped up front).
pub fn available() -> Res<()> {
    lib().map(|_| ())
}

struct CConn {
    lib: Lib,
    client: *mut c_void,
}

// SAFETY: a kvshm_client handle may be used from any thread (the C ABI documents handles as
// thread-safe); this connection is used by one thread at a time anyway.
unsafe impl Send for CConn {}

impl Conn for CConn {
    fn get(&mut self, key: &[u8], out: &mut Vec<u8>) -> Res<bool> {
        loop {
            let mut len = 0usize;
            // SAFETY: key and out are valid for the lengths passed; `len` is a valid out
            // pointer; `client` is an open handle.
            let r = unsafe {
                (self.lib.get)(
                    self.client,
                    key.as_ptr(),
                    key.len(),
                    out.as_mut_ptr(),
                    out.capacity(),
                    &mut len,
                )
            };
            match r {
                KVSHM_OK => {
                    // SAFETY: the call wrote `len <= capacity` bytes to `out`.
                    unsafe { out.set_len(len) };
                    return Ok(true);
                }
                KVSHM_NOT_FOUND => return Ok(false),
                KVSHM_BUFFER_TOO_SMALL => out.reserve(len),
                e => return Err(format!("kvshm_get: status {e}")),
            }
        }
    }
    fn put(&mut self, key: &[u8], value: &[u8]) -> Res<()> {
        // SAFETY: as in `get`.
        let r = unsafe {
            (self.lib.put)(
                self.client,
                key.as_ptr(),
                key.len(),
                value.as_ptr(),
                value.len(),
            )
        };
        if r != KVSHM_OK {
            return Err(format!("kvshm_put: status {r}"));
        }
        Ok(())
    }
}

impl Drop for CConn {
    fn drop(&mut self) {
        (self.lib.close)(self.client);
    }
}

pub fn open(spec: &str) -> Res<Box<dyn Conn + Send>> {
    let lib = lib()?;
    let name = CString::new(spec).map_err(|e| e.to_string())?;
    let mut client = std::ptr::null_mut();
    // SAFETY: name is NUL-terminated, dir NULL means the default directory, `client` is a
    // valid out pointer.
    let r = unsafe { (lib.open)(name.as_ptr(), std::ptr::null(), &mut client) };
    if r != KVSHM_OK {
        return Err(format!("kvshm_client_open: status {r}"));
    }
    Ok(Box::new(CConn { lib, client }))
}
