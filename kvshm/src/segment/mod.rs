//! The operating-system side of a segment: the named file, its mapping, growth, liveness
//! locks and futexes. Everything that is specific to one OS lives in `unix.rs` or
//! `windows.rs`, behind the same functions; nothing above this module names an OS.

#[cfg(not(any(unix, windows)))]
compile_error!("kvshm: this operating system is not supported (segment/ has unix and windows)");

#[cfg_attr(unix, path = "unix.rs")]
#[cfg_attr(windows, path = "windows.rs")]
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

/// Default directory of store files on Unix (tmpfs). Windows uses `%LOCALAPPDATA%\\kvshm`
/// ([`os_default_dir`]).
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A liveness probe never releases the lock it probes, also when it goes through the
    /// holder's own handle (on Windows, a shared lock tried through the holder's handle is
    /// granted, and unlocking it afterwards dropped the exclusive lock instead), and a byte
    /// held through another handle reads as locked until that handle lets go.
    #[test]
    fn probing_a_liveness_byte_never_releases_it() {
        let dir = std::env::temp_dir().join(format!(
            "kvshm-probe-{}-{}",
            std::process::id(),
            random_u64() % 1_000_000
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("kvshm.probe");
        let a = create_file(&path, 0o600).unwrap();
        let b = open_file(&path, true).unwrap();
        let byte = SLOT_LOCK_BASE + 7;
        assert!(ofd_try_lock(&a, byte).unwrap());
        let _ = ofd_is_locked(&a, byte).unwrap(); // the holder probes its own byte
        assert!(
            ofd_is_locked(&b, byte).unwrap(),
            "held through a, seen free through b"
        );
        assert!(
            !ofd_try_lock(&b, byte).unwrap(),
            "the probe released a's lock"
        );
        ofd_unlock(&a, byte);
        assert!(!ofd_is_locked(&b, byte).unwrap());
        assert!(ofd_try_lock(&b, byte).unwrap());
        drop((a, b));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
