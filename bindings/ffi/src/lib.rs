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
//! Layout: `lib.rs` (statuses, messages, the panic guard), `handle.rs` (the handle registry),
//! `args.rs` (argument checks), `host.rs`, `client.rs`, `versioned.rs`, `stats.rs` (the entry
//! points).
//!
//! Thread safety: every function may be called from any thread, concurrently, on the same or
//! different handles. Closing a handle while another thread uses it is safe: the other call
//! finishes on its own reference, later calls get `KVSHM_INVALID_ARGUMENT`.
#![allow(unsafe_code)]
#![allow(non_camel_case_types)]
#![deny(clippy::missing_safety_doc)]
// Argument conversion takes several of the caller's pointers under one contract (the
// function's documented parameters); one SAFETY comment per block names it.
#![allow(clippy::multiple_unsafe_ops_per_block)]

use std::ffi::{c_char, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

use kvshm_core::{Error, ErrorCode};

mod args;
mod client;
mod handle;
mod host;
mod stats;
mod versioned;

pub use args::kvshm_bytes;
pub use client::*;
pub use handle::{kvshm_client, kvshm_host};
pub use host::*;
pub use stats::*;

/// `return` the status of a failed argument check.
macro_rules! tri {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(s) => return s,
        }
    };
}
pub(crate) use tri;

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
    /// A batch needs more transaction log entries than one transaction may have: split it.
    KVSHM_BATCH_TOO_LARGE = 17,
    /// Internal limit: a transaction outgrew its log (a bug if seen); nothing was changed.
    KVSHM_TXN_LOG_FULL = 18,
    /// Every client slot is in use.
    KVSHM_TOO_MANY_CLIENTS = 19,
    /// The client handle was opened by the parent of this (forked) process: open a new one
    /// here. Closing the inherited handle is allowed and touches nothing shared.
    KVSHM_FORKED = 20,
    /// A conditional write found another version than expected (the version found is
    /// reported through the call's `current` argument; 0 = absent); nothing was changed.
    KVSHM_CONFLICT = 21,
    /// kvshm_incr on a value that is not a decimal 64-bit integer; nothing was changed.
    KVSHM_NOT_AN_INTEGER = 22,
    /// kvshm_incr would overflow a signed 64-bit integer; nothing was changed.
    KVSHM_OVERFLOW = 23,
    /// The store is a read-only replica (its kvhost runs with --replica-of): write to the
    /// primary; nothing was changed.
    KVSHM_READ_ONLY = 24,
}

use kvshm_status::*;

/// Every status, for tests and bindings that enumerate them.
/// cbindgen:ignore
pub const ALL_STATUSES: [kvshm_status; 25] = [
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
    KVSHM_BATCH_TOO_LARGE,
    KVSHM_TXN_LOG_FULL,
    KVSHM_TOO_MANY_CLIENTS,
    KVSHM_FORKED,
    KVSHM_CONFLICT,
    KVSHM_NOT_AN_INTEGER,
    KVSHM_OVERFLOW,
    KVSHM_READ_ONLY,
];

/// The status of a library error: one arm per [`ErrorCode`], so a new error kind in the library
/// does not compile here until it has a status.
pub(crate) fn status_of(e: &Error) -> kvshm_status {
    match e.code() {
        ErrorCode::KeyTooLong => KVSHM_KEY_TOO_LONG,
        ErrorCode::ValueTooLong => KVSHM_VALUE_TOO_LONG,
        ErrorCode::StoreFull => KVSHM_STORE_FULL,
        ErrorCode::NotFound => KVSHM_STORE_NOT_FOUND,
        ErrorCode::AlreadyExists => KVSHM_EXISTS,
        ErrorCode::HostRunning => KVSHM_HOST_RUNNING,
        ErrorCode::Incompatible => KVSHM_INCOMPATIBLE,
        ErrorCode::Corrupt => KVSHM_CORRUPT,
        ErrorCode::PermissionDenied => KVSHM_PERMISSION_DENIED,
        ErrorCode::Busy => KVSHM_BUSY,
        ErrorCode::BadSnapshot => KVSHM_BAD_SNAPSHOT,
        ErrorCode::BatchTooLarge => KVSHM_BATCH_TOO_LARGE,
        ErrorCode::TxnLogFull => KVSHM_TXN_LOG_FULL,
        ErrorCode::TooManyClients => KVSHM_TOO_MANY_CLIENTS,
        ErrorCode::Forked => KVSHM_FORKED,
        ErrorCode::Conflict => KVSHM_CONFLICT,
        ErrorCode::NotAnInteger => KVSHM_NOT_AN_INTEGER,
        ErrorCode::Overflow => KVSHM_OVERFLOW,
        ErrorCode::ReadOnly => KVSHM_READ_ONLY,
        ErrorCode::InvalidArgument => KVSHM_INVALID_ARGUMENT,
        ErrorCode::Io => KVSHM_IO,
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
        KVSHM_BATCH_TOO_LARGE => c"batch too large",
        KVSHM_TXN_LOG_FULL => c"transaction log full (internal limit)",
        KVSHM_TOO_MANY_CLIENTS => c"too many clients",
        KVSHM_FORKED => c"client inherited through fork: open a new one",
        KVSHM_CONFLICT => c"conflict: the key has another version",
        KVSHM_NOT_AN_INTEGER => c"value is not an integer",
        KVSHM_OVERFLOW => c"increment would overflow",
        KVSHM_READ_ONLY => c"read-only replica: write to its primary",
    };
    s.as_ptr()
}

thread_local! {
    static LAST_ERROR: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Copy the calling thread's last error message (the full text of the last failed call) into
/// `buf` (NUL-terminated, truncated to `len`). Returns the message length without the NUL.
///
/// # Safety
/// `buf` is NULL or points to `len` writable bytes.
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

pub(crate) fn fail(e: Error) -> kvshm_status {
    LAST_ERROR.with(|m| *m.borrow_mut() = e.to_string());
    status_of(&e)
}

pub(crate) fn invalid(what: &str) -> kvshm_status {
    LAST_ERROR.with(|m| *m.borrow_mut() = format!("invalid argument: {what}"));
    KVSHM_INVALID_ARGUMENT
}

/// Run an entry point, turning panics into `KVSHM_PANIC`.
pub(crate) fn guard(f: impl FnOnce() -> kvshm_status) -> kvshm_status {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        LAST_ERROR
            .with(|m| *m.borrow_mut() = "internal error: panic caught at the C boundary".into());
        KVSHM_PANIC
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
            (
                Error::BatchTooLarge { entries: 2, max: 1 },
                KVSHM_BATCH_TOO_LARGE,
            ),
            (Error::TxnLogFull { capacity: 1 }, KVSHM_TXN_LOG_FULL),
            (Error::TooManyClients { max: 1 }, KVSHM_TOO_MANY_CLIENTS),
            (Error::Forked { opened_by: 1 }, KVSHM_FORKED),
            (
                Error::Conflict {
                    index: 0,
                    current: None,
                },
                KVSHM_CONFLICT,
            ),
            (Error::NotAnInteger, KVSHM_NOT_AN_INTEGER),
            (Error::Overflow, KVSHM_OVERFLOW),
            (Error::ReadOnly, KVSHM_READ_ONLY),
        ];
        for (e, s) in errors {
            assert_eq!(status_of(&e), s, "{e:?}");
            // The library's stable code is the C status number.
            assert_eq!(e.code() as i32, s as i32, "{e:?}");
        }
    }

    /// Regression (issue 11, item 11): `kvshm_host_close` on a client handle closed it and then
    /// reported an error; `kvshm_client_close` accepted host handles; generations wrapped.
    #[test]
    fn a_handle_of_the_other_kind_is_refused_and_stays_open() {
        use crate::handle::set_generation_for_test;
        use std::ptr::null_mut;
        let name =
            std::ffi::CString::new(format!("unit-ffi-kinds-{}", std::process::id())).unwrap();
        let mut host = null_mut();
        // SAFETY: a valid NUL-terminated name, NULL config, a valid out pointer.
        let made = unsafe { kvshm_host_create(name.as_ptr(), std::ptr::null(), &mut host) };
        assert_eq!(made, KVSHM_OK);
        let (mut client, mut n) = (null_mut(), 0u64);
        // SAFETY: valid out pointers (below too).
        assert_eq!(unsafe { kvshm_host_client(host, &mut client) }, KVSHM_OK);
        assert_eq!(
            kvshm_host_close(client as *mut kvshm_host),
            KVSHM_INVALID_ARGUMENT
        );
        // SAFETY: as above.
        let open = unsafe { kvshm_len(client, &mut n) };
        assert_eq!(open, KVSHM_OK, "client closed");
        assert_eq!(
            kvshm_client_close(host as *mut kvshm_client),
            KVSHM_INVALID_ARGUMENT
        );
        // SAFETY: as above.
        let still = unsafe { kvshm_len(host as *const kvshm_client, &mut n) };
        assert_eq!(still, KVSHM_INVALID_ARGUMENT, "a host handle is no client");
        let mut other = null_mut();
        // SAFETY: as above.
        let open = unsafe { kvshm_host_client(host, &mut other) };
        assert_eq!(open, KVSHM_OK, "host closed");
        // A slot at the last generation is retired when closed: never reused, never wraps.
        let last = set_generation_for_test(other as usize, u32::MAX);
        assert_eq!(kvshm_client_close(last as *mut kvshm_client), KVSHM_OK);
        let mut next = null_mut();
        // SAFETY: as above.
        assert_eq!(unsafe { kvshm_host_client(host, &mut next) }, KVSHM_OK);
        assert_ne!(
            next as usize & 0xffff_ffff,
            last & 0xffff_ffff,
            "retired slot reused"
        );
        // SAFETY: as above.
        let stale = unsafe { kvshm_len(last as *const kvshm_client, &mut n) };
        assert_eq!(stale, KVSHM_INVALID_ARGUMENT);
        assert_eq!(kvshm_client_close(next), KVSHM_OK);
        assert_eq!(kvshm_client_close(client), KVSHM_OK);
        assert_eq!(kvshm_host_release(host), KVSHM_OK);
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
