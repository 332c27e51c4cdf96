//! LevelDB (Debian's libleveldb) through its C API, on /dev/shm.

use super::cdb::{Api, CDb, ErrPtr};
use super::Res;
use std::ffi::{c_char, c_int, c_void};

#[link(name = "leveldb")]
extern "C" {
    fn leveldb_options_create() -> *mut c_void;
    fn leveldb_options_set_create_if_missing(o: *mut c_void, v: u8);
    fn leveldb_options_set_write_buffer_size(o: *mut c_void, n: usize);
    fn leveldb_options_set_cache(o: *mut c_void, c: *mut c_void);
    fn leveldb_options_set_filter_policy(o: *mut c_void, f: *mut c_void);
    fn leveldb_cache_create_lru(cap: usize) -> *mut c_void;
    fn leveldb_filterpolicy_create_bloom(bits: c_int) -> *mut c_void;
    fn leveldb_open(o: *const c_void, name: *const c_char, err: ErrPtr) -> *mut c_void;
    fn leveldb_writeoptions_create() -> *mut c_void;
    fn leveldb_readoptions_create() -> *mut c_void;
    fn leveldb_put(
        db: *mut c_void,
        o: *const c_void,
        k: *const c_char,
        kl: usize,
        v: *const c_char,
        vl: usize,
        err: ErrPtr,
    );
    fn leveldb_get(
        db: *mut c_void,
        o: *const c_void,
        k: *const c_char,
        kl: usize,
        vl: *mut usize,
        err: ErrPtr,
    ) -> *mut c_char;
    fn leveldb_free(p: *mut c_void);
    fn leveldb_close(db: *mut c_void);
}

unsafe fn open(path: *const c_char, err: ErrPtr) -> *mut c_void {
    // SAFETY: constructors and setters on objects we just created; `path` and `err` are the
    // caller's valid pointers. Options, cache and filter live as long as the process.
    unsafe {
        let o = leveldb_options_create();
        leveldb_options_set_create_if_missing(o, 1);
        leveldb_options_set_write_buffer_size(o, 64 << 20);
        leveldb_options_set_cache(o, leveldb_cache_create_lru(1 << 30));
        leveldb_options_set_filter_policy(o, leveldb_filterpolicy_create_bloom(10));
        leveldb_open(o, path, err)
    }
}

unsafe fn write_options() -> *mut c_void {
    // SAFETY: constructor.
    unsafe { leveldb_writeoptions_create() }
}

unsafe fn read_options() -> *mut c_void {
    // SAFETY: constructor.
    unsafe { leveldb_readoptions_create() }
}

static API: Api = Api {
    name: "leveldb",
    open,
    write_options,
    read_options,
    put: leveldb_put,
    get: leveldb_get,
    free: leveldb_free,
    close: leveldb_close,
    tuning:
        "resident growth + files on /dev/shm (64 MiB write buffer, 1 GiB LRU cache, 10-bit bloom)",
};

pub fn new() -> Res<CDb> {
    CDb::new(&API)
}
