//! Snapshots: a store's keys and values in a file, and back.
//!
//! Format (version 1, little-endian; `docs/SNAPSHOT.md`):
//! ```text
//! header   32 B  "KVSHMSNP" | version u32 = 1 | flags u32 | created_unix u64 | 0 u64
//! entries        key_len u32 | value_len u32 | [expiry u64] | key | value      (repeated)
//! trailer  24 B  "KVSNPEND" | entry count u64 | CRC-32 (IEEE) of header+entries u32 | 0 u32
//! ```
//! Writing goes to a temporary file in the same directory (mode 0600), is fsynced, then renamed
//! over the target and the directory fsynced: a crash mid-snapshot never damages the previous
//! one. Loading checks the whole file (lengths, limits, count, checksum) before it changes
//! anything in the store.
//!
//! A snapshot is consistent per stripe (each stripe is read as one consistent view), not across
//! the whole store: writes that land while it runs may or may not be in it.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use crate::client::Client;
use crate::error::{Error, Result};

const MAGIC: &[u8; 8] = b"KVSHMSNP";
const END_MAGIC: &[u8; 8] = b"KVSNPEND";
const VERSION: u32 = 1;
/// Header flag: every entry carries its key's expiry (Unix ms, 0 = none) after its lengths.
/// Written by every snapshot of this build; files without it (older builds) load as keys
/// without expiry, and older builds refuse files with it (unknown flag).
const FLAG_EXPIRY: u32 = 1;
const HEADER_LEN: u64 = 32;
const TRAILER_LEN: u64 = 24;
/// Pairs per `put_many` while loading.
const LOAD_BATCH: usize = 512;

/// What a snapshot held or was written with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub keys: u64,
    pub value_bytes: u64,
    pub file_bytes: u64,
    pub created_unix: u64,
}

/// Bytes before an entry's key: its two lengths, and its expiry when the file has them.
fn entry_header_len(flags: u32) -> u64 {
    if flags & FLAG_EXPIRY != 0 {
        16
    } else {
        8
    }
}

fn bad(offset: u64, what: impl Into<String>) -> Error {
    Error::BadSnapshot {
        offset,
        what: what.into(),
    }
}

/// A writer that checksums and counts what passes through.
struct Summing<W> {
    inner: W,
    crc: crc32fast::Hasher,
    len: u64,
}

impl<W: Write> Summing<W> {
    fn put(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.crc.update(b);
        self.len += b.len() as u64;
        self.inner.write_all(b)
    }
}

/// Write every key of `client` to `w` in the snapshot format. `progress(keys)` is called now
/// and then.
pub fn write_snapshot(
    client: &Client,
    w: impl Write,
    mut progress: impl FnMut(u64),
) -> Result<SnapshotInfo> {
    let created = crate::store::now_unix();
    let mut out = Summing {
        inner: w,
        crc: crc32fast::Hasher::new(),
        len: 0,
    };
    let mut header = Vec::with_capacity(HEADER_LEN as usize);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&VERSION.to_le_bytes());
    header.extend_from_slice(&FLAG_EXPIRY.to_le_bytes());
    header.extend_from_slice(&created.to_le_bytes());
    header.extend_from_slice(&0u64.to_le_bytes());
    out.put(&header)?;
    let mut info = SnapshotInfo {
        created_unix: created,
        ..Default::default()
    };
    let mut io_err = None;
    client.scan_with_expiry(b"", |k, v, expiry| {
        let r = out
            .put(&(k.len() as u32).to_le_bytes())
            .and_then(|_| out.put(&(v.len() as u32).to_le_bytes()))
            .and_then(|_| out.put(&expiry.to_le_bytes()))
            .and_then(|_| out.put(k))
            .and_then(|_| out.put(v));
        if let Err(e) = r {
            io_err = Some(e);
            return false;
        }
        info.keys += 1;
        info.value_bytes += v.len() as u64;
        if info.keys % 65_536 == 0 {
            progress(info.keys);
        }
        true
    })?;
    if let Some(e) = io_err {
        return Err(e.into());
    }
    let crc = out.crc.clone().finalize();
    let mut trailer = Vec::with_capacity(TRAILER_LEN as usize);
    trailer.extend_from_slice(END_MAGIC);
    trailer.extend_from_slice(&info.keys.to_le_bytes());
    trailer.extend_from_slice(&crc.to_le_bytes());
    trailer.extend_from_slice(&0u32.to_le_bytes());
    out.inner.write_all(&trailer)?;
    out.inner.flush()?;
    info.file_bytes = out.len + TRAILER_LEN;
    progress(info.keys);
    Ok(info)
}

/// Read a snapshot stream, calling `each(key, value)` for every entry. With `each` doing
/// nothing this is a full validation pass. Keys and values must fit `limits` (max key, max
/// value).
pub fn read_snapshot(
    r: impl Read,
    file_len: u64,
    limits: (usize, usize),
    mut each: impl FnMut(&[u8], &[u8]) -> Result<()>,
) -> Result<SnapshotInfo> {
    read_snapshot_with_expiry(r, file_len, limits, |k, v, _| each(k, v))
}

/// [`read_snapshot`], with each entry's expiry (Unix ms, 0 = none; always 0 in a file written
/// without expiries).
pub fn read_snapshot_with_expiry(
    r: impl Read,
    file_len: u64,
    limits: (usize, usize),
    mut each: impl FnMut(&[u8], &[u8], u64) -> Result<()>,
) -> Result<SnapshotInfo> {
    if file_len < HEADER_LEN + TRAILER_LEN {
        return Err(bad(
            0,
            format!("{file_len} bytes is too short for a snapshot"),
        ));
    }
    let mut r = BufReader::with_capacity(1 << 20, r);
    let mut crc = crc32fast::Hasher::new();
    let mut header = [0u8; HEADER_LEN as usize];
    r.read_exact(&mut header)?;
    crc.update(&header);
    if &header[..8] != MAGIC {
        return Err(bad(0, "not a kvshm snapshot (bad magic)"));
    }
    let version = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
    if version != VERSION {
        return Err(bad(
            8,
            format!("snapshot version {version}, this build reads {VERSION}"),
        ));
    }
    let flags = u32::from_le_bytes(header[12..16].try_into().expect("4 bytes"));
    if flags & !FLAG_EXPIRY != 0 || header[24..32] != [0u8; 8] {
        return Err(bad(12, "unknown flags or reserved header bytes set"));
    }
    let entry_head = entry_header_len(flags);
    let created_unix = u64::from_le_bytes(header[16..24].try_into().expect("8 bytes"));
    let end = file_len - TRAILER_LEN;
    let mut pos = HEADER_LEN;
    let mut info = SnapshotInfo {
        created_unix,
        file_bytes: file_len,
        ..Default::default()
    };
    let (mut key, mut value) = (Vec::new(), Vec::new());
    let mut too_long: Option<Error> = None;
    while pos < end {
        if end - pos < entry_head {
            return Err(bad(pos, "truncated entry header"));
        }
        let mut lens = [0u8; 16];
        let lens = &mut lens[..entry_head as usize];
        r.read_exact(lens)?;
        crc.update(lens);
        let klen = u32::from_le_bytes(lens[..4].try_into().expect("4 bytes")) as usize;
        let vlen = u32::from_le_bytes(lens[4..8].try_into().expect("4 bytes")) as usize;
        let expiry = match entry_head {
            16 => u64::from_le_bytes(lens[8..16].try_into().expect("8 bytes")),
            _ => 0,
        };
        if expiry > crate::layout::META_EXPIRY_MASK {
            return Err(bad(pos + 8, format!("expiry {expiry} out of range")));
        }
        // Damage first: a length that runs past the file is a bad snapshot, not a key or
        // value too long for this store (which a snapshot of a store with larger limits is).
        if end - pos - entry_head < (klen + vlen) as u64 {
            return Err(bad(pos, "entry runs past the end of the snapshot"));
        }
        // Over this store's limits: reported only if the checksum then says the snapshot is
        // whole (a store with larger limits wrote it); a damaged length is a bad snapshot.
        if klen > limits.0 || vlen > limits.1 {
            if too_long.is_none() {
                too_long = Some(if klen > limits.0 {
                    Error::KeyTooLong {
                        len: klen,
                        max: limits.0,
                    }
                } else {
                    Error::ValueTooLong {
                        len: vlen,
                        max: limits.1,
                    }
                });
            }
            let mut left = (klen + vlen) as u64;
            let mut buf = [0u8; 8192];
            while left > 0 {
                let n = left.min(buf.len() as u64) as usize;
                r.read_exact(&mut buf[..n])?;
                crc.update(&buf[..n]);
                left -= n as u64;
            }
            pos += entry_head + (klen + vlen) as u64;
            info.keys += 1;
            continue;
        }
        key.resize(klen, 0);
        value.resize(vlen, 0);
        r.read_exact(&mut key)?;
        r.read_exact(&mut value)?;
        crc.update(&key);
        crc.update(&value);
        if too_long.is_none() {
            each(&key, &value, expiry)?;
        }
        pos += entry_head + (klen + vlen) as u64;
        info.keys += 1;
        info.value_bytes += vlen as u64;
    }
    let mut trailer = [0u8; TRAILER_LEN as usize];
    r.read_exact(&mut trailer)?;
    if &trailer[..8] != END_MAGIC {
        return Err(bad(end, "bad trailer (truncated or damaged snapshot)"));
    }
    let count = u64::from_le_bytes(trailer[8..16].try_into().expect("8 bytes"));
    let want = u32::from_le_bytes(trailer[16..20].try_into().expect("4 bytes"));
    if trailer[20..24] != [0u8; 4] {
        return Err(bad(end + 20, "reserved trailer bytes set"));
    }
    if count != info.keys {
        return Err(bad(
            end,
            format!("trailer counts {count} entries, file holds {}", info.keys),
        ));
    }
    if crc.finalize() != want {
        return Err(bad(end, "checksum mismatch (damaged snapshot)"));
    }
    if let Some(e) = too_long {
        return Err(e);
    }
    Ok(info)
}

impl Client {
    /// Write a snapshot of the store to `path` atomically (temp file, fsync, rename).
    pub fn dump_file(&self, path: &Path, progress: impl FnMut(u64)) -> Result<SnapshotInfo> {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let file_name = path.file_name().ok_or_else(|| {
            Error::InvalidArgument(format!("{} is not a file path", path.display()))
        })?;
        // An unpredictable name, created exclusively: nobody can plant it, and we remove only
        // a file we created.
        let tmp = dir.join(format!(
            ".{}.tmp-{:016x}",
            file_name.to_string_lossy(),
            crate::segment::random_u64()
        ));
        let f = crate::segment::create_private_new(&tmp)?;
        let result = (|| {
            let mut w = BufWriter::with_capacity(1 << 20, &f);
            let info = write_snapshot(self, &mut w, progress)?;
            w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            crate::segment::rename_durable(&tmp, path, dir)?;
            Ok(info)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    /// Check a snapshot file against this store's limits without changing anything.
    pub fn check_snapshot(&self, path: &Path) -> Result<SnapshotInfo> {
        Ok(self.read_snapshot_file(path)?.info)
    }

    /// Read a snapshot file once, whole, and validate it (checksum, limits, counts): what
    /// [`LoadedSnapshot::apply`] then stores comes from this one read, so a file that changes
    /// meanwhile cannot half-load. A file larger than the store's maximum size is refused
    /// before anything is read (that bounds the memory this takes).
    pub fn read_snapshot_file(&self, path: &Path) -> Result<LoadedSnapshot> {
        let mut f = crate::segment::open_regular_file(path)?;
        let len = f.metadata()?.len();
        if len > self.st.reserve {
            return Err(bad(
                0,
                format!(
                    "{len} bytes is more than this store can hold ({} bytes)",
                    self.st.reserve
                ),
            ));
        }
        let mut bytes = Vec::with_capacity(len as usize);
        (&mut f).take(len).read_to_end(&mut bytes)?;
        if bytes.len() as u64 != len {
            return Err(bad(bytes.len() as u64, "file changed size while read"));
        }
        let info = read_snapshot(&bytes[..], len, self.limits(), |_, _| Ok(()))?;
        Ok(LoadedSnapshot { bytes, info })
    }

    /// Load a snapshot file: read once and validated whole first (nothing changes if it is
    /// bad), then its pairs are stored in batches. With `replace`, keys not in the snapshot
    /// are removed first. A store that fills up mid-load reports `StoreFull` with what was
    /// loaded kept.
    pub fn load_file(
        &self,
        path: &Path,
        replace: bool,
        progress: impl FnMut(u64),
    ) -> Result<SnapshotInfo> {
        self.read_snapshot_file(path)?
            .apply(self, replace, progress)
    }
}

/// A snapshot file read into memory and validated ([`Client::read_snapshot_file`]).
#[derive(Debug)]
pub struct LoadedSnapshot {
    bytes: Vec<u8>,
    info: SnapshotInfo,
}

impl LoadedSnapshot {
    /// What the file holds.
    pub fn info(&self) -> &SnapshotInfo {
        &self.info
    }

    /// Store the snapshot's pairs into `client` (see [`Client::load_file`]); `progress` gets
    /// the number of pairs stored so far.
    pub fn apply(
        &self,
        client: &Client,
        replace: bool,
        mut progress: impl FnMut(u64),
    ) -> Result<SnapshotInfo> {
        if replace {
            let keys = client.keys(b"")?;
            for chunk in keys.chunks(LOAD_BATCH) {
                client.remove_many(chunk)?;
            }
        }
        let mut batch: Vec<(&[u8], &[u8])> = Vec::with_capacity(LOAD_BATCH);
        let mut metas: Vec<u64> = Vec::with_capacity(LOAD_BATCH);
        let mut done = 0u64;
        let now = crate::store::now_ms();
        for_each_entry(&self.bytes, |k, v, expiry| {
            done += 1;
            // A key that expired while on disk is not loaded.
            if expiry != 0 && expiry <= now {
                return Ok(());
            }
            batch.push((k, v));
            metas.push(expiry);
            if batch.len() == LOAD_BATCH {
                client.put_many_meta(&batch, |i| metas[i])?;
                batch.clear();
                metas.clear();
                progress(done);
            }
            Ok(())
        })?;
        client.put_many_meta(&batch, |i| metas[i])?;
        progress(self.info.keys);
        Ok(self.info)
    }
}

/// The entries of a snapshot already validated by `read_snapshot`, borrowed from its bytes.
fn for_each_entry<'b>(
    bytes: &'b [u8],
    mut each: impl FnMut(&'b [u8], &'b [u8], u64) -> Result<()>,
) -> Result<()> {
    let end = bytes.len() - TRAILER_LEN as usize;
    let flags = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes"));
    let head = entry_header_len(flags) as usize;
    let mut pos = HEADER_LEN as usize;
    while pos < end {
        let klen = u32::from_le_bytes(bytes[pos..pos + 4].try_into().expect("4 bytes")) as usize;
        let vlen =
            u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().expect("4 bytes")) as usize;
        let expiry = if head == 16 {
            u64::from_le_bytes(bytes[pos + 8..pos + 16].try_into().expect("8 bytes"))
        } else {
            0
        };
        let k = &bytes[pos + head..pos + head + klen];
        let v = &bytes[pos + head + klen..pos + head + klen + vlen];
        each(k, v, expiry)?;
        pos += head + klen + vlen;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{read_snapshot, write_snapshot, HEADER_LEN};
    use crate::tests::TestStore;
    use crate::{Config, Error};

    /// A value over the reading store's limit is `ValueTooLong` only when the file is whole
    /// (a store with larger limits wrote it); the same length produced by damage is a bad
    /// snapshot, wherever the damaged byte lies.
    #[test]
    fn over_limit_lengths_are_told_apart_from_damage() {
        let t = TestStore::new("snaplim", Config::default().stripes(4));
        let c = t.client();
        c.put(b"big", &[1u8; 3000]).unwrap();
        let mut file = Vec::new();
        write_snapshot(&c, &mut file, |_| {}).unwrap();
        let read =
            |b: &[u8], max_value| read_snapshot(b, b.len() as u64, (64, max_value), |_, _| Ok(()));
        assert!(read(&file, 4096).is_ok());
        assert!(matches!(
            read(&file, 1000),
            Err(Error::ValueTooLong { len: 3000, .. })
        ));
        // The value length's second byte damaged: 3000 -> 3000 ^ 0x0100, still inside the file.
        let mut bad = file.clone();
        bad[HEADER_LEN as usize + 5] ^= 0x01;
        assert!(
            matches!(read(&bad, 1000), Err(Error::BadSnapshot { .. })),
            "{:?}",
            read(&bad, 1000)
        );
        // Its third byte: past the end of the file.
        let mut bad = file.clone();
        bad[HEADER_LEN as usize + 6] ^= 0xff;
        assert!(matches!(read(&bad, 1000), Err(Error::BadSnapshot { .. })));
    }
}
