//! The subset of Redis's RDB format a replica needs for string keys: written for a full
//! resynchronisation (any Redis replica loads it), read by a kvhost replica.
//!
//! Layout (Redis's `rdb.c`, format version 9, which Redis 5 and later load):
//! `"REDIS0009"`, aux fields (`0xFA` name value), `0xFE 0` (SELECTDB 0), per key
//! `[0xFC ms as u64 LE]` (EXPIRETIME_MS) `0x00` (string) key value, `0xFF` (EOF), then the
//! CRC-64 (Jones, reflected, as Redis's `crc64.c`) of everything before it, little-endian.
//! Strings are length-prefixed: `00xxxxxx` (< 64), `01xxxxxx xxxxxxxx` (< 16384, big-endian),
//! `0x80` + u32 BE, `0x81` + u64 BE. The reader also takes the integer encodings (`11000000`
//! .. `11000010`) and LZF-compressed strings (`11000011`) that a Redis primary writes.

use std::fmt;

/// The RDB version written.
pub const VERSION: u32 = 9;

const OP_AUX: u8 = 0xFA;
const OP_RESIZEDB: u8 = 0xFB;
const OP_EXPIRETIME_MS: u8 = 0xFC;
const OP_EXPIRETIME: u8 = 0xFD;
const OP_SELECTDB: u8 = 0xFE;
const OP_EOF: u8 = 0xFF;
const OP_MODULE_AUX: u8 = 0xF7;
const OP_IDLE: u8 = 0xF8;
const OP_FREQ: u8 = 0xF9;
const OP_FUNCTION2: u8 = 0xF5;
const TYPE_STRING: u8 = 0;

/// CRC-64/Jones as Redis computes it (reflected polynomial 0x95ac9329ac4bc9b5, init 0).
pub fn crc64(mut crc: u64, data: &[u8]) -> u64 {
    static TABLE: std::sync::OnceLock<[u64; 256]> = std::sync::OnceLock::new();
    let t = TABLE.get_or_init(|| {
        let mut t = [0u64; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut c = i as u64;
            for _ in 0..8 {
                c = if c & 1 == 1 {
                    (c >> 1) ^ 0x95ac_9329_ac4b_c9b5
                } else {
                    c >> 1
                };
            }
            *e = c;
        }
        t
    });
    for &b in data {
        crc = t[((crc ^ b as u64) & 0xff) as usize] ^ (crc >> 8);
    }
    crc
}

/// Writes an RDB into a byte vector.
#[derive(Debug)]
pub struct Writer {
    pub buf: Vec<u8>,
}

fn put_len(buf: &mut Vec<u8>, n: u64) {
    if n < 64 {
        buf.push(n as u8);
    } else if n < 16384 {
        buf.extend_from_slice(&[0x40 | (n >> 8) as u8, n as u8]);
    } else if n <= u32::MAX as u64 {
        buf.push(0x80);
        buf.extend_from_slice(&(n as u32).to_be_bytes());
    } else {
        buf.push(0x81);
        buf.extend_from_slice(&n.to_be_bytes());
    }
}

fn put_str(buf: &mut Vec<u8>, s: &[u8]) {
    put_len(buf, s.len() as u64);
    buf.extend_from_slice(s);
}

impl Writer {
    /// The header, aux fields and SELECTDB 0.
    pub fn new() -> Writer {
        let mut buf = Vec::with_capacity(1 << 16);
        buf.extend_from_slice(format!("REDIS{VERSION:04}").as_bytes());
        for (k, v) in [
            ("redis-ver", "7.0.0"),
            ("redis-bits", "64"),
            ("kvshm-ver", env!("CARGO_PKG_VERSION")),
        ] {
            buf.push(OP_AUX);
            put_str(&mut buf, k.as_bytes());
            put_str(&mut buf, v.as_bytes());
        }
        buf.push(OP_SELECTDB);
        put_len(&mut buf, 0);
        Writer { buf }
    }

    /// One string key with its expiry (Unix ms, 0 = none).
    pub fn string(&mut self, key: &[u8], value: &[u8], expiry_ms: u64) {
        if expiry_ms != 0 {
            self.buf.push(OP_EXPIRETIME_MS);
            self.buf.extend_from_slice(&expiry_ms.to_le_bytes());
        }
        self.buf.push(TYPE_STRING);
        put_str(&mut self.buf, key);
        put_str(&mut self.buf, value);
    }

    /// EOF and checksum.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.push(OP_EOF);
        let crc = crc64(0, &self.buf);
        self.buf.extend_from_slice(&crc.to_le_bytes());
        self.buf
    }
}

impl Default for Writer {
    fn default() -> Self {
        Writer::new()
    }
}

/// Why an RDB payload was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RdbError(pub String);

impl fmt::Display for RdbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad RDB payload: {}", self.0)
    }
}

impl std::error::Error for RdbError {}

/// One key of an RDB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// Unix ms, 0 = none.
    pub expiry_ms: u64,
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

enum Len {
    Len(u64),
    /// An encoded string (integer or LZF), by its encoding number.
    Enc(u8),
}

impl<'a> Reader<'a> {
    fn err<T>(&self, what: &str) -> Result<T, RdbError> {
        Err(RdbError(format!("{what} at byte {}", self.at)))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], RdbError> {
        if self.b.len() - self.at < n {
            return self.err("truncated");
        }
        let s = &self.b[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }

    fn byte(&mut self) -> Result<u8, RdbError> {
        Ok(self.take(1)?[0])
    }

    fn len(&mut self) -> Result<Len, RdbError> {
        let b = self.byte()?;
        Ok(match b >> 6 {
            0 => Len::Len((b & 0x3f) as u64),
            1 => Len::Len(((b & 0x3f) as u64) << 8 | self.byte()? as u64),
            2 => match b {
                0x80 => Len::Len(u32::from_be_bytes(self.take(4)?.try_into().unwrap()) as u64),
                0x81 => Len::Len(u64::from_be_bytes(self.take(8)?.try_into().unwrap())),
                _ => return self.err("bad length encoding"),
            },
            _ => Len::Enc(b & 0x3f),
        })
    }

    fn plain_len(&mut self) -> Result<u64, RdbError> {
        match self.len()? {
            Len::Len(n) => Ok(n),
            Len::Enc(_) => self.err("an encoded value where a length belongs"),
        }
    }

    fn string(&mut self, max: usize) -> Result<Vec<u8>, RdbError> {
        match self.len()? {
            Len::Len(n) => {
                if n > max as u64 {
                    return self.err(&format!("a string of {n} bytes (limit {max})"));
                }
                Ok(self.take(n as usize)?.to_vec())
            }
            Len::Enc(0) => Ok((self.byte()? as i8).to_string().into_bytes()),
            Len::Enc(1) => {
                let v = i16::from_le_bytes(self.take(2)?.try_into().unwrap());
                Ok(v.to_string().into_bytes())
            }
            Len::Enc(2) => {
                let v = i32::from_le_bytes(self.take(4)?.try_into().unwrap());
                Ok(v.to_string().into_bytes())
            }
            Len::Enc(3) => {
                let clen = self.plain_len()? as usize;
                let ulen = self.plain_len()? as usize;
                if ulen > max {
                    return self.err(&format!("a string of {ulen} bytes (limit {max})"));
                }
                let c = self.take(clen)?;
                lzf_decompress(c, ulen).ok_or_else(|| RdbError("bad LZF string".into()))
            }
            Len::Enc(e) => self.err(&format!("unknown string encoding {e}")),
        }
    }
}

/// LZF decompression (liblzf's format, as Redis writes compressed strings).
fn lzf_decompress(src: &[u8], out_len: usize) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(out_len);
    let mut i = 0;
    while i < src.len() {
        let ctrl = src[i] as usize;
        i += 1;
        if ctrl < 32 {
            let n = ctrl + 1;
            out.extend_from_slice(src.get(i..i + n)?);
            i += n;
        } else {
            let mut len = ctrl >> 5;
            if len == 7 {
                len += *src.get(i)? as usize;
                i += 1;
            }
            let back = ((ctrl & 0x1f) << 8) + *src.get(i)? as usize + 1;
            i += 1;
            let start = out.len().checked_sub(back)?;
            for k in 0..len + 2 {
                let b = out[start + k];
                out.push(b);
            }
        }
        if out.len() > out_len {
            return None;
        }
    }
    (out.len() == out_len).then_some(out)
}

/// Read every string key of an RDB (database 0), checking the checksum when there is one.
/// Keys and values longer than `max_key`/`max_value` and types other than strings are
/// refused with a clear error (a kvshm store holds strings only).
pub fn read(
    b: &[u8],
    max_key: usize,
    max_value: usize,
    mut f: impl FnMut(Entry),
) -> Result<u64, RdbError> {
    let mut r = Reader { b, at: 0 };
    let magic = r.take(9)?;
    if &magic[..5] != b"REDIS" {
        return r.err("not an RDB (magic)");
    }
    let version: u32 = std::str::from_utf8(&magic[5..])
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| RdbError("bad RDB version".into()))?;
    if !(1..=11).contains(&version) {
        return r.err(&format!("RDB version {version}"));
    }
    let mut expiry = 0u64;
    let mut db = 0u64;
    let mut keys = 0u64;
    loop {
        let op = r.byte()?;
        match op {
            OP_EOF => {
                let end = r.at;
                if version >= 5 {
                    let want = u64::from_le_bytes(r.take(8)?.try_into().unwrap());
                    if want != 0 && want != crc64(0, &b[..end]) {
                        return Err(RdbError("checksum mismatch".into()));
                    }
                }
                return Ok(keys);
            }
            OP_AUX => {
                r.string(1 << 20)?;
                r.string(1 << 20)?;
            }
            OP_SELECTDB => db = r.plain_len()?,
            OP_RESIZEDB => {
                r.plain_len()?;
                r.plain_len()?;
            }
            OP_EXPIRETIME_MS => expiry = u64::from_le_bytes(r.take(8)?.try_into().unwrap()),
            OP_EXPIRETIME => {
                expiry = u32::from_le_bytes(r.take(4)?.try_into().unwrap()) as u64 * 1000
            }
            OP_IDLE => {
                r.plain_len()?;
            }
            OP_FREQ => {
                r.byte()?;
            }
            OP_MODULE_AUX | OP_FUNCTION2 => {
                return r.err("modules and functions are not supported by kvshm");
            }
            TYPE_STRING => {
                let key = r.string(max_key)?;
                let value = r.string(max_value)?;
                if db != 0 {
                    return r.err(&format!("a key in database {db} (kvshm has database 0)"));
                }
                f(Entry {
                    key,
                    value,
                    expiry_ms: std::mem::take(&mut expiry),
                });
                keys += 1;
            }
            t => {
                return r.err(&format!(
                    "a value of RDB type {t} (kvshm stores strings only)"
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc64_is_redis_crc64() {
        // Redis's crc64.c test vector.
        assert_eq!(crc64(0, b"123456789"), 0xe9c6_d914_c4b8_d9ca);
    }

    #[test]
    fn written_keys_read_back_with_every_length_encoding() {
        let mut w = Writer::new();
        let long = vec![b'x'; 70_000];
        let mid = vec![b'y'; 300];
        w.string(b"a", b"1", 0);
        w.string(b"bin\x00\xff", &mid, 1_900_000_000_000);
        w.string(&mid, &long, 0);
        w.string(b"", b"", 0);
        let bytes = w.finish();
        let mut got = Vec::new();
        assert_eq!(read(&bytes, 1024, 1 << 20, |e| got.push(e)).unwrap(), 4);
        assert_eq!(got[0].value, b"1");
        assert_eq!(got[1].key, b"bin\x00\xff");
        assert_eq!(got[1].expiry_ms, 1_900_000_000_000);
        assert_eq!(got[2].value, long);
        assert_eq!(got[3].key, b"");
        // Any flipped byte is refused (checksum or structure), never read as other keys.
        for i in (9..bytes.len())
            .step_by(97)
            .chain(bytes.len() - 12..bytes.len())
        {
            let mut bad = bytes.clone();
            bad[i] ^= 0x20;
            let mut n = 0;
            assert!(read(&bad, 1024, 1 << 20, |_| n += 1).is_err(), "byte {i}");
        }
        // Limits are enforced.
        assert!(read(&bytes, 1024, 1000, |_| {}).is_err());
    }

    #[test]
    fn redis_integer_and_lzf_encodings_are_read() {
        // A hand-built RDB as Redis writes small integers and a compressed string.
        let mut b = b"REDIS0009".to_vec();
        b.extend_from_slice(&[OP_SELECTDB, 0]);
        b.extend_from_slice(&[TYPE_STRING, 1, b'i', 0xC0, 0xF6]); // int8 -10
        b.extend_from_slice(&[TYPE_STRING, 1, b'j', 0xC1, 0x39, 0x30]); // int16 12345
        b.extend_from_slice(&[TYPE_STRING, 1, b'k', 0xC2, 0x15, 0xCD, 0x5B, 0x07]); // 123456789
                                                                                    // LZF of "aaaaaaaaaa": literal 'a', then a back-reference of 9 bytes at distance 1.
        b.extend_from_slice(&[TYPE_STRING, 1, b'z', 0xC3, 5, 10, 0, b'a', 0xE0, 0, 0]);
        b.push(OP_EOF);
        b.extend_from_slice(&0u64.to_le_bytes()); // checksum off
        let mut got = Vec::new();
        read(&b, 64, 64, |e| got.push((e.key, e.value))).unwrap();
        assert_eq!(got[0].1, b"-10");
        assert_eq!(got[1].1, b"12345");
        assert_eq!(got[2].1, b"123456789");
        assert_eq!(got[3].1, b"aaaaaaaaaa");
    }
}
