//! Scratch directories on /dev/shm for the peers that keep files (LMDB, SQLite, RocksDB,
//! LevelDB).

use super::{allocated_under, Res};
use std::path::{Path, PathBuf};

/// A scratch directory on /dev/shm (tmpfs, like the kvshm segment) removed on drop.
#[derive(Debug)]
pub struct ScratchDir(pub PathBuf);

impl ScratchDir {
    pub fn new(tag: &str) -> Res<ScratchDir> {
        let p = Path::new("/dev/shm").join(format!("kvshm-compare-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        Ok(ScratchDir(p))
    }
    /// Bytes the files under it occupy (allocated blocks, not apparent sizes).
    pub fn allocated(&self) -> u64 {
        allocated_under(&self.0)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
