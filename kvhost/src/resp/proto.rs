//! The RESP wire format: a resumable request parser (multibulk and inline, Redis's limits and
//! error texts) and a reply writer for RESP2 and RESP3.
//!
//! The parser never allocates ahead of the bytes it has: a bulk header announcing 4 GB is
//! refused by the bulk limit, and one announcing 1 MiB costs nothing until the bytes arrive.

use std::ops::Range;

/// Redis's `PROTO_INLINE_MAX_SIZE`: the longest inline command, and the longest header line.
pub const INLINE_MAX: usize = 64 * 1024;
/// Redis's limit on the element count of one multibulk request.
pub const MULTIBULK_MAX: usize = 1024 * 1024;

/// Parse limits of one connection.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Longest bulk argument (`proto-max-bulk-len`).
    pub max_bulk: usize,
}

/// A protocol error: the reply is `-ERR Protocol error: <text>` and the connection closes
/// (as Redis does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub String);

/// What the parser found in the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A whole command: its arguments are the ranges in [`Parser::args`]; it ends at `end`.
    Command { end: usize },
    /// An empty line or `*0`: nothing to run; the next frame starts at `end`.
    Empty { end: usize },
    /// More bytes are needed.
    Incomplete,
}

/// A resumable parser over a growing buffer. Call [`Parser::parse`] with the buffer; after a
/// `Command` or `Empty`, call it again for the next frame. Before removing a consumed prefix
/// of the buffer, call [`Parser::rebase`].
#[derive(Debug, Default)]
pub struct Parser {
    /// Where the current frame starts.
    start: usize,
    /// How far the current frame is parsed.
    pos: usize,
    /// Multibulk: elements still to read (`None`: the header is not read yet).
    left: Option<usize>,
    /// Multibulk: the length of the bulk whose header was read, whose data is awaited.
    bulk: Option<usize>,
    args: Vec<Range<usize>>,
    /// An inline command's arguments (unquoted, so not ranges of the buffer).
    inline_args: Option<Vec<Vec<u8>>>,
}

fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    buf.get(from..)?
        .windows(2)
        .position(|w| w == b"\r\n")
        .map(|i| from + i)
}

/// The common header, read in one pass: at `pos` a `$`, 1 to 18 digits and `\r\n`, all in
/// `buf`. Returns the number and the position after the line; `None` for anything else
/// (incomplete, a sign, a bad byte, too many digits), which the general path then handles
/// exactly as before (callgrind of pipelined INCRs: ~380 parser instructions per command, a
/// `windows(2)` search and a second pass over each header line).
#[inline]
fn quick_bulk_len(buf: &[u8], pos: usize) -> Option<(usize, usize)> {
    quick_len(buf, pos, b'$')
}

/// [`quick_bulk_len`] for a header line starting with `prefix` (`$` or `*`).
#[inline]
fn quick_len(buf: &[u8], pos: usize, prefix: u8) -> Option<(usize, usize)> {
    let line = buf.get(pos..)?;
    if line.first() != Some(&prefix) {
        return None;
    }
    // A leading zero (`*01`): the general path refuses it, as Redis does.
    if line.get(1) == Some(&b'0') && line.get(2) != Some(&b'\r') {
        return None;
    }
    let mut n = 0u64;
    for (i, &d) in line.iter().enumerate().skip(1).take(19) {
        match d {
            b'0'..=b'9' => n = n * 10 + u64::from(d - b'0'),
            b'\r' if i > 1 && line.get(i + 1) == Some(&b'\n') => {
                return Some((usize::try_from(n).ok()?, pos + i + 2));
            }
            _ => return None,
        }
    }
    None
}

/// A header number (`*3`, `$-1`): an optional `-`, then 1 to 19 digits without a leading
/// zero (`0` alone is zero, `-0` is refused); nothing else. Redis's `string2ll`, which refuses
/// `*01` and `$04` ("invalid multibulk length", "invalid bulk length").
fn parse_len(line: &[u8]) -> Option<i64> {
    let (neg, digits) = match line {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, line),
    };
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    if digits[0] == b'0' && (neg || digits.len() > 1) {
        return None;
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n * 10 + i64::from(d - b'0');
    }
    Some(if neg { -n } else { n })
}

impl Parser {
    /// The arguments of the command just parsed (`buf`: the buffer it was parsed from).
    pub fn arg_slices<'b>(&'b self, buf: &'b [u8]) -> Vec<&'b [u8]> {
        match &self.inline_args {
            Some(a) => a.iter().map(Vec::as_slice).collect(),
            None => self.args.iter().map(|r| &buf[r.clone()]).collect(),
        }
    }

    /// Call `f` with the arguments of the command just parsed, without allocating for up to
    /// eight of them.
    pub fn with_args<T>(&self, buf: &[u8], f: impl FnOnce(&[&[u8]]) -> T) -> T {
        if let Some(a) = &self.inline_args {
            let v: Vec<&[u8]> = a.iter().map(Vec::as_slice).collect();
            return f(&v);
        }
        if self.args.len() <= 8 {
            let mut tmp: [&[u8]; 8] = [&[]; 8];
            for (t, r) in tmp.iter_mut().zip(&self.args) {
                *t = &buf[r.clone()];
            }
            return f(&tmp[..self.args.len()]);
        }
        f(&self.arg_slices(buf))
    }

    /// [`Parser::arg_slices`], copied.
    pub fn take_args(&self, buf: &[u8]) -> Vec<Vec<u8>> {
        self.arg_slices(buf)
            .into_iter()
            .map(<[u8]>::to_vec)
            .collect()
    }

    /// The buffer's first `n` bytes (complete frames) are about to be removed.
    pub fn rebase(&mut self, n: usize) {
        debug_assert!(n <= self.start);
        self.start -= n;
        self.pos -= n;
        for r in &mut self.args {
            *r = r.start - n..r.end - n;
        }
    }

    /// Where the frame being parsed starts: everything before it may be dropped.
    pub fn frame_start(&self) -> usize {
        self.start
    }

    /// Parse the next frame from `buf` (which holds everything from the frame start on).
    pub fn parse(&mut self, buf: &[u8], limits: &Limits) -> Result<Parsed, ProtocolError> {
        if self.left.is_none() && self.pos == self.start {
            self.args.clear();
            match buf.get(self.start) {
                None => return Ok(Parsed::Incomplete),
                Some(b'*') => {}
                Some(_) => return self.inline(buf),
            }
        }
        self.multibulk(buf, limits)
    }

    fn done(&mut self, end: usize, empty: bool) -> Parsed {
        self.start = end;
        self.pos = end;
        self.left = None;
        self.bulk = None;
        if empty {
            Parsed::Empty { end }
        } else {
            Parsed::Command { end }
        }
    }

    fn inline(&mut self, buf: &[u8]) -> Result<Parsed, ProtocolError> {
        let Some(nl) = buf[self.start..].iter().position(|&b| b == b'\n') else {
            if buf.len() - self.start > INLINE_MAX {
                return Err(ProtocolError("too big inline request".into()));
            }
            return Ok(Parsed::Incomplete);
        };
        let nl = self.start + nl;
        if nl - self.start > INLINE_MAX {
            return Err(ProtocolError("too big inline request".into()));
        }
        let mut line_end = nl;
        if line_end > self.start && buf[line_end - 1] == b'\r' {
            line_end -= 1;
        }
        let line = &buf[self.start..line_end];
        self.args.clear();
        if !line.iter().any(|&b| b == b'"' || b == b'\'') {
            // No quotes: the words are ranges of the buffer, as a multibulk's arguments are
            // (what `split_args` gives, without allocating per word).
            self.inline_args = None;
            let mut i = 0;
            while i < line.len() {
                if is_space(line[i]) {
                    i += 1;
                    continue;
                }
                let from = i;
                while i < line.len() && !is_space(line[i]) {
                    i += 1;
                }
                self.args.push(self.start + from..self.start + i);
            }
            let empty = self.args.is_empty();
            return Ok(self.done(nl + 1, empty));
        }
        let args =
            split_args(line).ok_or_else(|| ProtocolError("unbalanced quotes in request".into()))?;
        let empty = args.is_empty();
        self.inline_args = Some(args);
        Ok(self.done(nl + 1, empty))
    }

    fn multibulk(&mut self, buf: &[u8], limits: &Limits) -> Result<Parsed, ProtocolError> {
        if self.left.is_none() {
            // The common `*digits\r\n` in one pass (callgrind of pipelined PINGs: the
            // general path below cost ~50 instructions per command).
            if let Some((n, next)) =
                quick_len(buf, self.pos, b'*').filter(|&(n, _)| (1..=MULTIBULK_MAX).contains(&n))
            {
                self.pos = next;
                self.left = Some(n);
                self.args.clear();
                self.inline_args = None;
            }
        }
        if self.left.is_none() {
            let Some(cr) = find_crlf(buf, self.pos) else {
                if buf.len() - self.pos > INLINE_MAX {
                    return Err(ProtocolError("too big mbulk count string".into()));
                }
                return Ok(Parsed::Incomplete);
            };
            let n = match parse_len(&buf[self.pos + 1..cr]) {
                Some(n) if n <= MULTIBULK_MAX as i64 => n,
                _ => return Err(ProtocolError("invalid multibulk length".into())),
            };
            self.pos = cr + 2;
            if n <= 0 {
                return Ok(self.done(self.pos, true));
            }
            self.left = Some(n as usize);
            self.args.clear();
            self.inline_args = None;
        }
        while let Some(left) = self.left.filter(|&l| l > 0) {
            let len = match self.bulk {
                Some(len) => len,
                None if let Some((len, next)) = quick_bulk_len(buf, self.pos)
                    .filter(|&(len, _)| len as u64 <= limits.max_bulk as u64) =>
                {
                    self.pos = next;
                    self.bulk = Some(len);
                    len
                }
                None => {
                    let Some(cr) = find_crlf(buf, self.pos) else {
                        if buf.len() - self.pos > INLINE_MAX {
                            return Err(ProtocolError("too big bulk count string".into()));
                        }
                        if let Some(&c) = buf.get(self.pos).filter(|&&c| c != b'$') {
                            return Err(expected_dollar(c));
                        }
                        return Ok(Parsed::Incomplete);
                    };
                    if buf[self.pos] != b'$' {
                        return Err(expected_dollar(buf[self.pos]));
                    }
                    let len = match parse_len(&buf[self.pos + 1..cr]) {
                        Some(n) if n >= 0 && n as u64 <= limits.max_bulk as u64 => n as usize,
                        _ => return Err(ProtocolError("invalid bulk length".into())),
                    };
                    self.pos = cr + 2;
                    self.bulk = Some(len);
                    len
                }
            };
            if buf.len() < self.pos + len + 2 {
                return Ok(Parsed::Incomplete);
            }
            // Redis does not check the two bytes after a bulk either; it skips them.
            self.args.push(self.pos..self.pos + len);
            self.pos += len + 2;
            self.bulk = None;
            self.left = Some(left - 1);
        }
        Ok(self.done(self.pos, false))
    }
}

fn expected_dollar(c: u8) -> ProtocolError {
    ProtocolError(format!("expected '$', got '{}'", c as char))
}

/// C's `isspace`, as `sdssplitargs` uses it (a NUL byte is an ordinary byte here: the line is
/// not a C string).
fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// Redis's `sdssplitargs`: words separated by spaces; `"..."` with `\n \r \t \b \a \\ \"` and
/// `\xHH` escapes, `'...'` with `\'`; a closing quote must be followed by a space or the end.
/// `None` for unbalanced quotes.
pub fn split_args(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    let mut i = 0;
    let n = line.len();
    loop {
        while i < n && is_space(line[i]) {
            i += 1;
        }
        if i >= n {
            return Some(out);
        }
        let mut cur = Vec::new();
        let (mut inq, mut insq) = (false, false);
        loop {
            if inq {
                if i >= n {
                    return None;
                }
                let c = line[i];
                if c == b'\\' && i + 3 < n && line[i + 1] == b'x' {
                    let hex = |b: u8| (b as char).to_digit(16);
                    if let (Some(h), Some(l)) = (hex(line[i + 2]), hex(line[i + 3])) {
                        cur.push((h * 16 + l) as u8);
                        i += 4;
                        continue;
                    }
                }
                if c == b'\\' && i + 1 < n {
                    cur.push(match line[i + 1] {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 8,
                        b'a' => 7,
                        o => o,
                    });
                    i += 2;
                    continue;
                }
                if c == b'"' {
                    if i + 1 < n && !is_space(line[i + 1]) {
                        return None;
                    }
                    i += 1;
                    break;
                }
                cur.push(c);
                i += 1;
            } else if insq {
                if i >= n {
                    return None;
                }
                let c = line[i];
                if c == b'\\' && i + 1 < n && line[i + 1] == b'\'' {
                    cur.push(b'\'');
                    i += 2;
                    continue;
                }
                if c == b'\'' {
                    if i + 1 < n && !is_space(line[i + 1]) {
                        return None;
                    }
                    i += 1;
                    break;
                }
                cur.push(c);
                i += 1;
            } else {
                if i >= n {
                    break;
                }
                match line[i] {
                    c if is_space(c) => break,
                    b'"' => inq = true,
                    b'\'' => insq = true,
                    c => cur.push(c),
                }
                i += 1;
            }
        }
        out.push(cur);
    }
}

/// The protocol a connection speaks (`HELLO 2|3`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    /// RESP2 (the default).
    V2,
    /// RESP3.
    V3,
}

/// Replies, appended to an output buffer.
#[derive(Debug)]
pub struct Out {
    /// The bytes to send.
    pub buf: Vec<u8>,
    /// The protocol the replies are written in.
    pub proto: Proto,
}

impl Out {
    /// An empty buffer for `proto`.
    pub fn new(proto: Proto) -> Out {
        Out {
            buf: Vec::with_capacity(16 * 1024),
            proto,
        }
    }

    fn line(&mut self, prefix: u8, body: &[u8]) {
        self.buf.push(prefix);
        self.buf.extend_from_slice(body);
        self.buf.extend_from_slice(b"\r\n");
    }

    fn num(&mut self, prefix: u8, n: i64) {
        let mut digits = [0u8; 20];
        self.buf.push(prefix);
        self.buf
            .extend_from_slice(kvshm::format_i64(n, &mut digits));
        self.buf.extend_from_slice(b"\r\n");
    }

    /// `+OK`-style status.
    pub fn simple(&mut self, s: &str) {
        self.line(b'+', s.as_bytes());
    }
    /// `+OK`.
    pub fn ok(&mut self) {
        self.buf.extend_from_slice(b"+OK\r\n");
    }
    /// An error; `s` starts with its code (`ERR ...`, `WRONGTYPE ...`). CR/LF are replaced.
    pub fn error(&mut self, s: &str) {
        let clean: Vec<u8> = s
            .bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b })
            .collect();
        self.line(b'-', &clean);
    }
    /// An integer.
    pub fn int(&mut self, n: i64) {
        self.num(b':', n);
    }
    /// A bulk string.
    pub fn bulk(&mut self, b: &[u8]) {
        self.num(b'$', b.len() as i64);
        self.buf.extend_from_slice(b);
        self.buf.extend_from_slice(b"\r\n");
    }
    /// A bulk string or null.
    pub fn opt_bulk(&mut self, b: Option<&[u8]>) {
        match b {
            Some(b) => self.bulk(b),
            None => self.null(),
        }
    }
    /// The null bulk string (RESP2 `$-1`, RESP3 `_`).
    pub fn null(&mut self) {
        match self.proto {
            Proto::V2 => self.buf.extend_from_slice(b"$-1\r\n"),
            Proto::V3 => self.buf.extend_from_slice(b"_\r\n"),
        }
    }
    /// The null array (RESP2 `*-1`, RESP3 `_`).
    pub fn null_array(&mut self) {
        match self.proto {
            Proto::V2 => self.buf.extend_from_slice(b"*-1\r\n"),
            Proto::V3 => self.buf.extend_from_slice(b"_\r\n"),
        }
    }
    /// An array header.
    pub fn array(&mut self, n: usize) {
        self.num(b'*', n as i64);
    }
    /// A set header (RESP2: an array).
    pub fn set(&mut self, n: usize) {
        match self.proto {
            Proto::V2 => self.num(b'*', n as i64),
            Proto::V3 => self.num(b'~', n as i64),
        }
    }
    /// A map header of `n` pairs (RESP2: an array of 2n).
    pub fn map(&mut self, n: usize) {
        match self.proto {
            Proto::V2 => self.num(b'*', 2 * n as i64),
            Proto::V3 => self.num(b'%', n as i64),
        }
    }
    /// A double (RESP2: a bulk string).
    pub fn double(&mut self, d: f64) {
        let s = format_double(d);
        match self.proto {
            Proto::V2 => self.bulk(s.as_bytes()),
            Proto::V3 => self.line(b',', s.as_bytes()),
        }
    }
    /// A text blob for humans (INFO, CLIENT LIST): RESP3 verbatim `txt`, RESP2 bulk.
    pub fn verbatim(&mut self, s: &str) {
        match self.proto {
            Proto::V2 => self.bulk(s.as_bytes()),
            Proto::V3 => {
                self.num(b'=', s.len() as i64 + 4);
                self.buf.extend_from_slice(b"txt:");
                self.buf.extend_from_slice(s.as_bytes());
                self.buf.extend_from_slice(b"\r\n");
            }
        }
    }
}

/// A double as Redis prints one: integers without a fraction, `inf`/`-inf`, else the
/// shortest form that reads back the same.
pub fn format_double(d: f64) -> String {
    if d.is_infinite() {
        return if d > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if d.is_nan() {
        return "nan".into();
    }
    if d == d.trunc() && d.abs() < 1e17 {
        return format!("{}", d as i64);
    }
    format!("{d}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Limits = Limits { max_bulk: 1024 };

    fn all(buf: &[u8]) -> Result<Vec<Vec<Vec<u8>>>, ProtocolError> {
        let mut p = Parser::default();
        let mut out = Vec::new();
        loop {
            match p.parse(buf, &L)? {
                Parsed::Command { .. } => out.push(p.take_args(buf)),
                Parsed::Empty { .. } => {}
                Parsed::Incomplete => return Ok(out),
            }
        }
    }

    #[test]
    fn multibulk_and_inline_and_pipelines() {
        let got =
            all(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nPING\r\n\r\nset a \"b c\\x41\"\r\n*0\r\n").unwrap();
        assert_eq!(
            got,
            vec![
                vec![b"GET".to_vec(), b"k".to_vec()],
                vec![b"PING".to_vec()],
                vec![b"set".to_vec(), b"a".to_vec(), b"b cA".to_vec()],
            ]
        );
    }

    #[test]
    fn resumes_at_every_split_point() {
        let frame = b"*3\r\n$3\r\nSET\r\n$5\r\nhello\r\n$0\r\n\r\n";
        for cut in 0..frame.len() {
            let mut p = Parser::default();
            assert_eq!(
                p.parse(&frame[..cut], &L).unwrap(),
                Parsed::Incomplete,
                "{cut}"
            );
            assert!(
                matches!(p.parse(frame, &L).unwrap(), Parsed::Command { end } if end == frame.len())
            );
            assert_eq!(
                p.take_args(frame),
                vec![b"SET".to_vec(), b"hello".to_vec(), vec![]]
            );
        }
    }

    #[test]
    fn limits_and_errors_have_redis_texts() {
        let e = |b: &[u8]| all(b).unwrap_err().0;
        assert_eq!(e(b"*2\r\n$2000\r\n"), "invalid bulk length");
        assert_eq!(e(b"*1\r\n$4294967296\r\n"), "invalid bulk length");
        assert_eq!(e(b"*1\r\n$-1\r\n"), "invalid bulk length");
        assert_eq!(e(b"*99999999\r\n"), "invalid multibulk length");
        assert_eq!(e(b"*x\r\n"), "invalid multibulk length");
        // Leading zeros are refused as Redis's string2ll refuses them (checked against
        // redis-server 7.0.15); `0` alone is zero.
        assert_eq!(e(b"*01\r\n$4\r\nPING\r\n"), "invalid multibulk length");
        assert_eq!(e(b"*-0\r\n"), "invalid multibulk length");
        assert_eq!(e(b"*1\r\n$04\r\nPING\r\n"), "invalid bulk length");
        assert_eq!(e(b"*1\r\n$+4\r\nPING\r\n"), "invalid bulk length");
        assert_eq!(
            all(b"*0\r\n*1\r\n$0\r\n\r\n").unwrap(),
            vec![vec![Vec::<u8>::new()]]
        );
        assert_eq!(e(b"*1\r\n:3\r\n"), "expected '$', got ':'");
        assert_eq!(e(b"*1\r\nX"), "expected '$', got 'X'");
        assert_eq!(e(b"set a \"b\r\n"), "unbalanced quotes in request");
        assert_eq!(e(&vec![b'a'; INLINE_MAX + 1]), "too big inline request");
        let mut big = b"*".to_vec();
        big.extend(vec![b'1'; INLINE_MAX + 1]);
        assert_eq!(e(&big), "too big mbulk count string");
    }

    #[test]
    fn split_args_follows_sdssplitargs() {
        let s = |l: &str| split_args(l.as_bytes());
        assert_eq!(s("  a  b "), Some(vec![b"a".to_vec(), b"b".to_vec()]));
        assert_eq!(s("'it\\'s' x"), Some(vec![b"it's".to_vec(), b"x".to_vec()]));
        assert_eq!(s("\"a\"b"), None);
        assert_eq!(s("'a"), None);
        assert_eq!(s("\"\\x00\\n\""), Some(vec![vec![0, b'\n']]));
        assert_eq!(s(""), Some(vec![]));
        // A NUL byte is part of a word (it once split forever, growing without bound).
        assert_eq!(
            split_args(b"a\0b \0"),
            Some(vec![b"a\0b".to_vec(), vec![0]])
        );
        assert_eq!(s("a\x0bb"), Some(vec![b"a".to_vec(), b"b".to_vec()]));
    }

    /// An inline line without quotes is split into buffer ranges, not by `split_args`: both
    /// give the same words (random lines of words, spaces of every kind, NULs, binary bytes).
    #[test]
    fn unquoted_inline_lines_split_as_split_args_does() {
        let alphabet: &[u8] = b"ab \t\x0b\x0c\0\xff\\xPING";
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..5_000 {
            let mut line = Vec::new();
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            for k in 0..(x % 24) {
                line.push(alphabet[((x >> (k % 50)) as usize + k as usize * 7) % alphabet.len()]);
            }
            let mut frame = line.clone();
            frame.extend_from_slice(b"\r\n");
            let mut p = Parser::default();
            let parsed = p.parse(&frame, &L).unwrap();
            let want = split_args(&line).unwrap();
            let got = p.take_args(&frame);
            match parsed {
                Parsed::Empty { .. } => assert!(want.is_empty(), "{line:?}"),
                Parsed::Command { end } => {
                    assert_eq!(end, frame.len());
                    assert_eq!(got, want, "{line:?}");
                }
                other => panic!("{line:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn replies_in_both_protocols() {
        let mut o = Out::new(Proto::V2);
        o.null();
        o.map(1);
        o.double(1.5);
        o.int(-3);
        assert_eq!(o.buf, b"$-1\r\n*2\r\n$3\r\n1.5\r\n:-3\r\n");
        let mut o = Out::new(Proto::V3);
        o.null();
        o.map(1);
        o.double(2.0);
        o.error("ERR bad\r\nthing");
        assert_eq!(o.buf, b"_\r\n%1\r\n,2\r\n-ERR bad  thing\r\n");
        assert_eq!(format_double(10.6), "10.6");
        assert_eq!(format_double(3.0e20), "300000000000000000000");
    }
}
