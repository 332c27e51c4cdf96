//! RocksDB and LevelDB through their C APIs (Debian's librocksdb / libleveldb), which have the
//! same shape: an opaque db handle, put / get with an error out-pointer, a malloc'd value.
//! Both are in-process libraries: P clients are P threads sharing the handle.

use super::scratch::ScratchDir;
use super::{rss_of, Conn, Mode, Res, System};
use crate::workload::{key, load_value};
use std::ffi::{c_char, c_void, CStr, CString};
use std::sync::Arc;

pub type ErrPtr = *mut *mut c_char;

/// The entry points one library provides.
#[derive(Debug)]
pub struct Api {
    pub name: &'static str,
    /// Open (creating) the database at the path, with the tuning described in `tuning`.
    pub open: unsafe fn(*const c_char, ErrPtr) -> *mut c_void,
    pub write_options: unsafe fn() -> *mut c_void,
    pub read_options: unsafe fn() -> *mut c_void,
    pub put: unsafe extern "C" fn(
        *mut c_void,
        *const c_void,
        *const c_char,
        usize,
        *const c_char,
        usize,
        ErrPtr,
    ),
    pub get: unsafe extern "C" fn(
        *mut c_void,
        *const c_void,
        *const c_char,
        usize,
        *mut usize,
        ErrPtr,
    ) -> *mut c_char,
    pub free: unsafe extern "C" fn(*mut c_void),
    pub close: unsafe extern "C" fn(*mut c_void),
    pub tuning: &'static str,
}

/// An open database and its option objects (never freed before the db is closed).
struct Handle {
    api: &'static Api,
    db: *mut c_void,
    wo: *mut c_void,
    ro: *mut c_void,
}

// SAFETY: both libraries document their db handle and option objects as safe for concurrent
// use from many threads (the options are only read after creation).
unsafe impl Send for Handle {}
// SAFETY: as above.
unsafe impl Sync for Handle {}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: `db` came from `open` and no connection outlives the Arc holding us.
        unsafe { (self.api.close)(self.db) };
    }
}

fn check(api: &Api, err: *mut c_char) -> Res<()> {
    if err.is_null() {
        return Ok(());
    }
    // SAFETY: a non-NULL error is a NUL-terminated malloc'd string from the library.
    let msg = unsafe { CStr::from_ptr(err) }
        .to_string_lossy()
        .into_owned();
    // SAFETY: freed once, with the library's allocator.
    unsafe { (api.free)(err.cast()) };
    Err(format!("{}: {msg}", api.name))
}

pub struct CDb {
    h: Arc<Handle>,
    dir: ScratchDir,
    rss: u64,
}

impl std::fmt::Debug for CDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at {}", self.h.api.name, self.dir.0.display())
    }
}

impl CDb {
    pub fn new(api: &'static Api) -> Res<CDb> {
        let dir = ScratchDir::new(api.name)?;
        let path = CString::new(dir.0.join("db").to_string_lossy().as_bytes()).expect("path");
        let mut err = std::ptr::null_mut();
        // SAFETY: `path` is NUL-terminated, `err` a valid out-pointer.
        let db = unsafe { (api.open)(path.as_ptr(), &mut err) };
        check(api, err)?;
        if db.is_null() {
            return Err(format!("{}: open failed", api.name));
        }
        // SAFETY: plain constructors.
        let (wo, ro) = unsafe { ((api.write_options)(), (api.read_options)()) };
        Ok(CDb {
            h: Arc::new(Handle { api, db, wo, ro }),
            dir,
            rss: 0,
        })
    }
}

impl System for CDb {
    fn mode(&self) -> Mode {
        Mode::Threads
    }
    fn load(&mut self, keys: u64, value_bytes: usize) -> Res<()> {
        let before = rss_of("self");
        let mut c = CConn(self.h.clone());
        let (mut k, mut v) = ([0u8; 16], Vec::new());
        for i in 0..keys {
            key(i, &mut k);
            load_value(&mut v, value_bytes, i);
            c.put(&k, &v)?;
        }
        self.rss = rss_of("self").saturating_sub(before);
        Ok(())
    }
    fn conn(&self) -> Res<Box<dyn Conn + Send>> {
        Ok(Box::new(CConn(self.h.clone())))
    }
    fn memory_bytes(&self) -> Res<u64> {
        Ok(self.rss + self.dir.allocated())
    }
    fn memory_note(&self) -> &'static str {
        self.h.api.tuning
    }
}

struct CConn(Arc<Handle>);

impl Conn for CConn {
    fn get(&mut self, key: &[u8], out: &mut Vec<u8>) -> Res<bool> {
        let h = &*self.0;
        let (mut len, mut err) = (0usize, std::ptr::null_mut());
        // SAFETY: open handle and options; key valid for its length; out-pointers valid.
        let p = unsafe {
            (h.api.get)(
                h.db,
                h.ro,
                key.as_ptr().cast(),
                key.len(),
                &mut len,
                &mut err,
            )
        };
        check(h.api, err)?;
        if p.is_null() {
            return Ok(false);
        }
        out.clear();
        // SAFETY: a non-NULL result holds `len` bytes, malloc'd by the library for us.
        out.extend_from_slice(unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) });
        // SAFETY: freed once, with the library's allocator.
        unsafe { (h.api.free)(p.cast()) };
        Ok(true)
    }
    fn put(&mut self, key: &[u8], value: &[u8]) -> Res<()> {
        let h = &*self.0;
        let mut err = std::ptr::null_mut();
        // SAFETY: as in `get`.
        unsafe {
            (h.api.put)(
                h.db,
                h.wo,
                key.as_ptr().cast(),
                key.len(),
                value.as_ptr().cast(),
                value.len(),
                &mut err,
            )
        };
        check(h.api, err)
    }
}
