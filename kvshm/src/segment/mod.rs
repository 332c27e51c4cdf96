//! The operating-system side of a segment: the named file, its mapping, growth, liveness
//! locks and futexes. Everything that is specific to one OS lives in `unix.rs` (a Windows port
//! would add `windows.rs` with a pagefile section, `SEC_RESERVE` and `VirtualAlloc` commit).

#[cfg(not(unix))]
compile_error!(
    "kvshm: this operating system is not supported yet (segment/ has only a unix implementation; \
     a Windows port adds segment/windows.rs with the same interface)"
);

#[cfg_attr(unix, path = "unix.rs")]
mod sys;

pub use sys::*;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Byte of the segment file whose OFD write lock marks the live host.
pub const HOST_LOCK_BYTE: u64 = 1 << 40;
/// Byte whose OFD lock serialises growth of the file (released by the kernel if the holder
/// dies; growth is idempotent, so nothing needs repair).
pub const GROW_LOCK_BYTE: u64 = HOST_LOCK_BYTE + 1;
/// Byte whose OFD lock serialises creation of client-slot pages.
pub const SLOT_PAGE_LOCK_BYTE: u64 = HOST_LOCK_BYTE + 2;
/// Byte `SLOT_LOCK_BASE + i` is write-locked (OFD) by the owner of client slot `i`.
pub const SLOT_LOCK_BASE: u64 = 1 << 41;

/// Default directory of store files.
pub const DEFAULT_DIR: &str = "/dev/shm";

/// The file that holds store `name` in `dir`: `<dir>/kvshm.<name>`.
pub fn store_path(dir: &Path, name: &str) -> Result<PathBuf> {
    validate_name(name)?;
    Ok(dir.join(format!("kvshm.{name}")))
}

/// Store names are 1..=200 bytes of `[A-Za-z0-9._-]`, not starting with a dot.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "store name {name:?}: use 1-200 characters of A-Z a-z 0-9 . _ - (not starting with '.')"
        )))
    }
}
