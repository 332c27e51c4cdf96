//! Store configuration (fixed when a store is created) and the derived segment geometry.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::layout::{
    CHUNK_SIZE, HEADER_SIZE, MAX_RESERVE, MAX_STRIPES, SLOT_PAGE0_SLOTS, SLOT_SIZE, STRIPE_SIZE,
};

/// Creation parameters of a store, with builder-style setters.
///
/// ```
/// let cfg = kvshm::Config::default().max_size(1 << 30).max_value_len(64 << 10).stripes(256);
/// assert_eq!(cfg.get_stripes(), 256);
/// ```
#[derive(Clone, Debug)]
pub struct Config {
    pub(crate) initial_size: u64,
    pub(crate) max_size: u64,
    pub(crate) max_key_len: usize,
    pub(crate) max_value_len: usize,
    pub(crate) stripes: u32,
    pub(crate) dir: PathBuf,
    pub(crate) mode: u32,
    pub(crate) changelog: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            initial_size: 4 << 20,
            max_size: 8 << 30,
            max_key_len: 1024,
            max_value_len: 1 << 20,
            stripes: 1024,
            dir: default_dir(),
            mode: 0o600,
            changelog: 0,
        }
    }
}

/// The directory stores live in unless told otherwise: `$KVSHM_DIR`, else `/dev/shm`
/// (Windows: `%LOCALAPPDATA%\\kvshm`). Both
/// [`Config::default`] (where a host creates) and `Client::open` (where a client looks) use it,
/// so a host and its clients meet with or without the variable.
pub fn default_dir() -> PathBuf {
    std::env::var_os("KVSHM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(crate::segment::os_default_dir)
}

/// Largest value a store may be configured for (1 GiB).
pub const MAX_VALUE_LIMIT: usize = 1 << 30;
/// Smallest change log (64 KiB).
pub const MIN_CHANGELOG: u64 = 64 << 10;
/// Largest change log (64 GiB).
pub const MAX_CHANGELOG: u64 = 64 << 30;
/// Largest key a store may be configured for (64 KiB).
pub const MAX_KEY_LIMIT: usize = 64 << 10;

impl Config {
    /// Bytes committed at creation (raised to the metadata plus two chunks if smaller).
    pub fn initial_size(mut self, bytes: u64) -> Self {
        self.initial_size = bytes;
        self
    }
    /// Largest size the store may grow to (virtual reservation of every mapping).
    pub fn max_size(mut self, bytes: u64) -> Self {
        self.max_size = bytes;
        self
    }
    /// Longest key accepted by `put`.
    pub fn max_key_len(mut self, n: usize) -> Self {
        self.max_key_len = n;
        self
    }
    /// Longest value accepted by `put`.
    pub fn max_value_len(mut self, n: usize) -> Self {
        self.max_value_len = n;
        self
    }
    /// Number of index stripes (a power of two, 1..=65536).
    pub fn stripes(mut self, n: u32) -> Self {
        self.stripes = n;
        self
    }
    /// Directory of the store file (default [`default_dir`]: `$KVSHM_DIR`, else `/dev/shm`).
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = dir.into();
        self
    }
    /// Permission bits of the store file (default `0o600`: owner only).
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }
    /// The configured directory.
    pub fn get_dir(&self) -> &std::path::Path {
        &self.dir
    }
    /// The configured stripe count.
    pub fn get_stripes(&self) -> u32 {
        self.stripes
    }
    /// Keep a change log of this many bytes in the store (0 = none, the default): every
    /// committed write of every process is appended to it, in one total order, for a reader
    /// such as kvhost's replication (`Client::read_changes`). At least [`MIN_CHANGELOG`]
    /// bytes, rounded up to a power of two (plus a 4 KiB control page); the region comes out
    /// of `max_size`. A store with a change log has its own `layout_version` (7), which
    /// older builds refuse.
    pub fn changelog(mut self, bytes: u64) -> Self {
        self.changelog = bytes;
        self
    }
    /// The configured change log size in bytes (0 = none).
    pub fn get_changelog(&self) -> u64 {
        self.changelog
    }
    /// The configured initial size in bytes.
    pub fn get_initial_size(&self) -> u64 {
        self.initial_size
    }
    /// The configured maximum size in bytes.
    pub fn get_max_size(&self) -> u64 {
        self.max_size
    }
    /// The configured longest key.
    pub fn get_max_key_len(&self) -> usize {
        self.max_key_len
    }
    /// The configured longest value.
    pub fn get_max_value_len(&self) -> usize {
        self.max_value_len
    }
    /// The configured permission bits.
    pub fn get_mode(&self) -> u32 {
        self.mode
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidArgument(m));
        if !self.stripes.is_power_of_two() || self.stripes > MAX_STRIPES {
            return bad(format!(
                "stripes must be a power of two up to {MAX_STRIPES}"
            ));
        }
        if self.max_key_len == 0 || self.max_key_len > MAX_KEY_LIMIT {
            return bad(format!("max_key_len must be 1..={MAX_KEY_LIMIT}"));
        }
        if self.max_value_len > MAX_VALUE_LIMIT {
            return bad(format!("max_value_len must be at most {MAX_VALUE_LIMIT}"));
        }
        if self.max_size > MAX_RESERVE {
            return bad(format!("max_size must be at most {MAX_RESERVE}"));
        }
        if self.mode & !0o777 != 0 {
            return bad("mode must be permission bits only (e.g. 0o600)".into());
        }
        if self.mode & 0o022 != 0 {
            // Anyone who can write the file can truncate it: every client would die of SIGBUS.
            return bad(format!(
                "mode {:o} lets group or others write the store file (use 0600, or 0640/0644: \
                 other users still cannot attach, the owner check refuses them)",
                self.mode
            ));
        }
        if self.changelog != 0 && !(MIN_CHANGELOG..=MAX_CHANGELOG).contains(&self.changelog) {
            return bad(format!(
                "the change log must be {MIN_CHANGELOG}..={MAX_CHANGELOG} bytes (or 0 for none)"
            ));
        }
        let g = Geometry::new(self.stripes, self.max_size, self.changelog)?;
        if self.max_size < g.min_committed() {
            return bad(format!(
                "max_size must be at least {} bytes",
                g.min_committed()
            ));
        }
        Ok(())
    }
}

/// Where the fixed regions of a segment go.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Geometry {
    pub stripes_offset: u64,
    pub chunk_map_offset: u64,
    pub chunk_count: u64,
    pub slot_page0_offset: u64,
    /// The change log region (after slot page 0; length 0 = none).
    pub changelog_offset: u64,
    pub changelog_len: u64,
    pub chunk_base: u64,
    pub reserve: u64,
}

const fn round_up(n: u64, to: u64) -> u64 {
    n.div_ceil(to) * to
}

impl Geometry {
    pub fn new(stripes: u32, max_size: u64, changelog: u64) -> Result<Geometry> {
        let stripes_offset = HEADER_SIZE;
        let chunk_map_offset = stripes_offset + stripes as u64 * STRIPE_SIZE;
        let max_chunks = max_size / CHUNK_SIZE + 1;
        let slot_page0_offset = round_up(chunk_map_offset + max_chunks * 4, 4096);
        let changelog_offset = slot_page0_offset + SLOT_PAGE0_SLOTS * SLOT_SIZE;
        // A control page, then the ring: the size asked for, rounded up to a power of two.
        let changelog_len = if changelog == 0 {
            0
        } else {
            crate::layout::CLOG_CONTROL_SIZE + changelog.next_power_of_two()
        };
        let chunk_base = round_up(changelog_offset + changelog_len, CHUNK_SIZE);
        let chunk_count = max_size.saturating_sub(chunk_base) / CHUNK_SIZE;
        if chunk_count < 2 {
            return Err(Error::InvalidArgument(format!(
                "max_size {max_size} leaves no room for data (need at least {})",
                chunk_base + 2 * CHUNK_SIZE
            )));
        }
        Ok(Geometry {
            stripes_offset,
            chunk_map_offset,
            chunk_count,
            slot_page0_offset,
            changelog_offset: if changelog_len == 0 {
                0
            } else {
                changelog_offset
            },
            changelog_len,
            chunk_base,
            reserve: chunk_base + chunk_count * CHUNK_SIZE,
        })
    }

    /// Metadata plus two chunks: the smallest committed length.
    pub fn min_committed(&self) -> u64 {
        self.chunk_base + 2 * CHUNK_SIZE
    }

    /// The committed length for a requested initial size.
    pub fn initial_committed(&self, requested: u64) -> u64 {
        round_up(requested.max(self.min_committed()), CHUNK_SIZE).min(self.reserve)
    }
}

/// Parse a duration: a number with unit ms, s, m, h (e.g. `500ms`, `30s`, `5m`, `1h`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = |mul: u64| {
        n.checked_mul(mul)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("duration {s:?} is too long"))
    };
    Ok(match unit {
        "us" | "µs" => Duration::from_micros(n),
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => secs(60)?,
        "h" => secs(3600)?,
        u => {
            return Err(format!(
                "bad duration unit {u:?} in {s:?} (use us, ms, s, m, h)"
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_store_starts_small() {
        let c = Config::default();
        c.validate().unwrap();
        let g = Geometry::new(c.stripes, c.max_size, 0).unwrap();
        assert!(g.initial_committed(c.initial_size) <= 4 << 20);
        assert!(g.reserve <= c.max_size);
        assert_eq!(g.chunk_base % CHUNK_SIZE, 0);
    }

    #[test]
    fn bad_configs_are_refused() {
        assert!(Config::default().stripes(3).validate().is_err());
        assert!(Config::default().max_key_len(0).validate().is_err());
        assert!(Config::default().max_size(512 << 10).validate().is_err());
        assert!(Config::default().mode(0o4777).validate().is_err());
        // Regression (issue 11, item 13): group/other write bits were accepted.
        for m in [0o666, 0o777, 0o620, 0o602] {
            assert!(Config::default().mode(m).validate().is_err(), "{m:o}");
        }
        for m in [0o600, 0o640, 0o644, 0o400] {
            assert!(Config::default().mode(m).validate().is_ok(), "{m:o}");
        }
    }
}
