//! RocksDB (Debian's librocksdb 7.8) through its C API, on /dev/shm.

use super::cdb::{Api, CDb, ErrPtr};
use super::Res;
use std::ffi::{c_char, c_int, c_uchar, c_void};

#[link(name = "rocksdb")]
extern "C" {
    fn rocksdb_options_create() -> *mut c_void;
    fn rocksdb_options_set_create_if_missing(o: *mut c_void, v: c_uchar);
    fn rocksdb_options_increase_parallelism(o: *mut c_void, n: c_int);
    fn rocksdb_block_based_options_create() -> *mut c_void;
    fn rocksdb_block_based_options_set_block_cache(b: *mut c_void, cache: *mut c_void);
    fn rocksdb_block_based_options_set_filter_policy(b: *mut c_void, f: *mut c_void);
    fn rocksdb_filterpolicy_create_bloom(bits: f64) -> *mut c_void;
    fn rocksdb_cache_create_lru(cap: usize) -> *mut c_void;
    fn rocksdb_options_set_block_based_table_factory(o: *mut c_void, b: *mut c_void);
    fn rocksdb_open(o: *const c_void, name: *const c_char, err: ErrPtr) -> *mut c_void;
    fn rocksdb_writeoptions_create() -> *mut c_void;
    fn rocksdb_writeoptions_disable_WAL(o: *mut c_void, disable: c_int);
    fn rocksdb_readoptions_create() -> *mut c_void;
    fn rocksdb_put(
        db: *mut c_void,
        o: *const c_void,
        k: *const c_char,
        kl: usize,
        v: *const c_char,
        vl: usize,
        err: ErrPtr,
    );
    fn rocksdb_get(
        db: *mut c_void,
        o: *const c_void,
        k: *const c_char,
        kl: usize,
        vl: *mut usize,
        err: ErrPtr,
    ) -> *mut c_char;
    fn rocksdb_free(p: *mut c_void);
    fn rocksdb_close(db: *mut c_void);
}

unsafe fn open(path: *const c_char, err: ErrPtr) -> *mut c_void {
    // SAFETY: constructors and setters on objects we just created; `path` and `err` are the
    // caller's valid pointers. The option objects live as long as the process (RocksDB keeps
    // references to the cache and table factory).
    unsafe {
        let o = rocksdb_options_create();
        rocksdb_options_set_create_if_missing(o, 1);
        rocksdb_options_increase_parallelism(o, 2);
        let t = rocksdb_block_based_options_create();
        rocksdb_block_based_options_set_block_cache(t, rocksdb_cache_create_lru(1 << 30));
        rocksdb_block_based_options_set_filter_policy(t, rocksdb_filterpolicy_create_bloom(10.0));
        rocksdb_options_set_block_based_table_factory(o, t);
        rocksdb_open(o, path, err)
    }
}

unsafe fn write_options() -> *mut c_void {
    // SAFETY: constructor and setter on the new object.
    unsafe {
        let w = rocksdb_writeoptions_create();
        rocksdb_writeoptions_disable_WAL(w, 1);
        w
    }
}

unsafe fn read_options() -> *mut c_void {
    // SAFETY: constructor.
    unsafe { rocksdb_readoptions_create() }
}

static API: Api = Api {
    name: "rocksdb",
    open,
    write_options,
    read_options,
    put: rocksdb_put,
    get: rocksdb_get,
    free: rocksdb_free,
    close: rocksdb_close,
    tuning: "resident growth + files on /dev/shm (WAL off, 1 GiB LRU block cache, 10-bit bloom)",
};

pub fn new() -> Res<CDb> {
    CDb::new(&API)
}
