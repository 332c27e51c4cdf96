//! String commands. Each single-key command is one `Db::modify` (one transaction under the
//! key's stripe lock, or one step of EXEC's overlay), so INCR from a RESP client and `incr`
//! from a local process never lose an update.

use kvshm::{Change, Error, Write};

use super::{is, parse_float, parse_int, Ctx, NOT_INT, SYNTAX};

/// When a SET-like command makes the key expire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Expiry {
    /// No expiry (clears one the key had).
    Clear,
    /// Keep the key's expiry (KEEPTTL).
    Keep,
    /// At this Unix time in ms.
    At(u64),
}

/// The largest expiry the store keeps (Unix ms in 48 bits: year 10889).
const MAX_EXPIRY_MS: i64 = (1 << 48) - 1;

/// An absolute expiry from a relative or absolute argument (`unit_ms`: 1000 for seconds),
/// Redis's checks: positive, no overflow. `None`: invalid.
pub(super) fn expiry_at(arg: &[u8], unit_ms: i64, absolute: bool) -> Option<u64> {
    let n = parse_int(arg)?;
    if n <= 0 {
        return None;
    }
    let ms = n.checked_mul(unit_ms)?;
    let at = if absolute {
        ms
    } else {
        ms.checked_add(kvshm::now_ms() as i64)?
    };
    (at <= MAX_EXPIRY_MS).then_some(at as u64)
}

fn invalid_expire(name: &str) -> String {
    format!("ERR invalid expire time in '{name}' command")
}

pub fn get(cx: &mut Ctx<'_, '_>, a: &[&[u8]]) {
    match cx.db.get(a[1]) {
        Ok(v) => cx.out.opt_bulk(v.as_deref()),
        Err(e) => cx.fail(&e),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Cond {
    Always,
    IfAbsent,
    IfPresent,
}

/// The common core of SET, SETNX, SETEX, PSETEX, GETSET: `(written, old value if asked)`.
fn set_core(
    cx: &mut Ctx<'_, '_>,
    key: &[u8],
    value: &[u8],
    cond: Cond,
    exp: Expiry,
    want_old: bool,
) -> Result<(bool, Option<Vec<u8>>), Error> {
    if cond == Cond::Always && matches!(exp, Expiry::Clear) && !want_old {
        // Nothing to read first: a put (which clears any expiry, as Redis's SET does).
        return cx.db.set(key, value).map(|()| (true, None));
    }
    cx.db.modify(key, |cur| {
        let old = if want_old {
            cur.map(|e| e.value.to_vec())
        } else {
            None
        };
        let go = match cond {
            Cond::Always => true,
            Cond::IfAbsent => cur.is_none(),
            Cond::IfPresent => cur.is_some(),
        };
        if !go {
            return Ok((Change::Keep, (false, old)));
        }
        let expires_at = match exp {
            Expiry::Clear => None,
            Expiry::Keep => cur.and_then(|e| e.expires_at),
            Expiry::At(at) => Some(at),
        };
        // An absolute time already past: set and expired at once, i.e. gone.
        if expires_at.is_some_and(|at| at <= kvshm::now_ms()) {
            return Ok((Change::Remove, (true, old)));
        }
        Ok((
            Change::Put {
                value: value.to_vec(),
                expires_at,
            },
            (true, old),
        ))
    })
}

pub fn set(cx: &mut Ctx<'_, '_>, a: &[&[u8]]) {
    let mut cond = Cond::Always;
    let mut exp = Expiry::Clear;
    let mut exp_given = false;
    let mut want_old = false;
    let mut i = 3;
    while i < a.len() {
        let o = a[i];
        let next = a.get(i + 1);
        if is(o, "nx") && cond == Cond::Always {
            cond = Cond::IfAbsent;
        } else if is(o, "xx") && cond == Cond::Always {
            cond = Cond::IfPresent;
        } else if is(o, "get") && !want_old {
            want_old = true;
        } else if is(o, "keepttl") && !exp_given {
            exp = Expiry::Keep;
            exp_given = true;
        } else if !exp_given
            && next.is_some()
            && (is(o, "ex") || is(o, "px") || is(o, "exat") || is(o, "pxat"))
        {
            let unit = if is(o, "ex") || is(o, "exat") {
                1000
            } else {
                1
            };
            let abs = is(o, "exat") || is(o, "pxat");
            let Some(arg) = next else {
                return cx.out.error(SYNTAX);
            };
            if parse_int(arg).is_none() {
                return cx.out.error(NOT_INT);
            }
            match expiry_at(arg, unit, abs) {
                Some(at) => exp = Expiry::At(at),
                None => return cx.out.error(&invalid_expire("set")),
            }
            exp_given = true;
            i += 1;
        } else {
            return cx.out.error(SYNTAX);
        }
        i += 1;
    }
    match set_core(cx, a[1], a[2], cond, exp, want_old) {
        Ok((_, old)) if want_old => cx.out.opt_bulk(old.as_deref()),
        Ok((true, _)) => cx.out.ok(),
        Ok((false, _)) => cx.out.null(),
        Err(e) => cx.fail(&e),
    }
}

pub fn setnx(cx: &mut Ctx<'_, '_>, a: &[&[u8]]) {
    match set_core(cx, a[1], a[2], Cond::IfAbsent, Expiry::Clear, false) {
        Ok((w, _)) => cx.out.int(i64::from(w)),
        Err(e) => cx.fail(&e),
    }
}

fn setex_unit(cx: &mut Ctx<'_, '_>, a: &[&[u8]], unit: i64, name: &str) {
    if parse_int(a[2]).is_none() {
        return cx.out.error(NOT_INT);
    }
    let Some(at) = expiry_at(a[2], unit, false) else {
        return cx.out.error(&invalid_expire(name));
    };
    match set_core(cx, a[1], a[3], Cond::Always, Expiry::At(at), false) {
        Ok(_) => cx.out.ok(),
        Err(e) => cx.fail(&e),
    }
}

pub fn setex(cx: &mut Ctx<'_, '_>, a: &[&[u8]]) {
    setex_unit(cx, a, 1000, "setex");
}

pub fn psetex(cx: &mut Ctx<'_, '_>, a: &[&[u8]]) {
    setex_unit(cx, a, 1, "psetex");
}

pub fn getset(cx: &mut Ctx<'_, '_>, a: &[&[u8]]) {
    match set_core(cx, a[1], a[2], Cond::Always, Expiry::Clear, true) {
        Ok((_, old)) => cx.out.opt_bulk(old.as_deref()),
        Err(e) => cx.fail(&e),
    }
}

pub fn getdel(cx: &mut Ctx<'_, '_>, a: &[&[u8]]) {
    let r = cx.db.modify(a[1], |cur| {
        Ok(match cur {
            Some(e) => (Change::Remove, Some(e.value.to_vec())),
            None => (Change::Keep, None),
        })
    });
    match r {
        Ok(v) => cx.out.opt_bulk(v.as_deref()),
        Err(e) => cx.fail(&e),
    }
}

pub fn getex(cx: &mut Ctx<'_, '_>, a: &[&[u8]]) {
    // None: leave the expiry; Some(None): persist; Some(Some(at)).
    let mut set: Option<Option<u64>> = None;
    let mut i = 2;
    while i < a.len() {
        let o = a[i];
        if is(o, "persist") && set.is_none() {
            set = Some(None);
        } else if set.is_none()
            && i + 1 < a.len()
            && (is(o, "ex") || is(o, "px") || is(o, "exat") || is(o, "pxat"))
        {
            let unit = if is(o, "ex") || is(o, "exat") {
                1000
            } else {
                1
            };
            let abs = is(o, "exat") || is(o, "pxat");
            if parse_int(a[i + 1]).is_none() {
                return cx.out.error(NOT_INT);
            }
            match expiry_at(a[i + 1], unit, abs) {
                Some(at) => set = Some(Some(at)),
                None => return cx.out.error(&invalid_expire("getex")),
            }
            i += 1;
        } else {
            return cx.out.error(SYNTAX);
        }
        i += 1;
    }
    let r = cx.db.modify(a[1], |cur| {
        let Some(e) = cur else {
            return Ok((Change::Keep, None));
        };
        let v = Some(e.value.to_vec());
        Ok(match set {
            None => (Change::Keep, v),
            Some(Some(at)) if at <= kvshm::now_ms() => (Change::Remove, v),
            Some(at) => (Change::SetExpiry(at), v),
        })
    });
    match r {
        Ok(v) => cx.out.opt_bulk(v.as_deref()),
        Err(e) => cx.fail(&e),
    }
}

pub fn mget(cx: &mut Ctx<'_, '_>, a: &[&[u8]]) {
    match cx.db.mget(&a[1..]) {
        Ok(vs) => {
            cx.out.array(vs.len());
            for v in &vs {
                cx.out.opt_bulk(v.as_deref());
            }
        }
        Err(e) => cx.fail(&e),
    }
}

fn pairs<'a>(a: &[&'a [u8]]) -> Option<Vec<(&'a [u8], &'a [u8])>> {
    if a.len() % 2 == 0 {
        return None;
    }
    Some(a[1..].chunks(2).map(|p| (p[0], p[1])).collect())
}

pub fn mset(cx: &mut Ctx<'_, '_>, a: &[&[u8]]) {
    let Some(items) = pairs(a) else {
        return cx.out.error(&super::wrong_args("mset"));
    };
    match cx.db.mset(&items) {
        Ok(()) => cx.out.ok(),
        Err(e) => cx.fail(&e),
    }
}

pub fn msetnx(cx: &mut Ctx<'_, '_>, a: &[&[u8]]) {
    let Some(items) = pairs(a) else {
        return cx.out.error(&super::wrong_args("msetnx"));
    };
    let keys: Vec<&[u8]> = items.iter().map(|(k, _)| *k).collect();
    let r = cx.db.multi(&keys, |recs| {
        if recs.iter().any(Option::is_some) {
            return Ok((Vec::new(), 0));
        }
        let writes = items
            .iter()
            .map(|(k, v)| {
                (
                    k.to_vec(),
                    Write::Put {
                        value: v.to_vec(),
                        expires_at: None,
                    },
                )
            })
            .collect();
        Ok((writes, 1))
    });
    match r {
        Ok(n) => cx.out.int(n),
        Err(e) => cx.fail(&e),
    }
}

fn incr_by(cx: &mut Ctx<'_, '_>, key: &[u8], delta: i64) {
    let r = cx.db.modify(key, |cur| {
        // (No `ok_or(Error::..)`: it built and dropped an `Error` on every call.)
        let old = match cur {
            Some(e) => match parse_int(e.value) {
                Some(n) => n,
                None => return Err(Error::NotAnInteger),
            },
            None => 0,
        };
        let Some(new) = old.checked_add(delta) else {
            return Err(Error::Overflow);
        };
        Ok((
            Change::PutInt {
                value: new,
                expires_at: cur.and_then(|e| e.expires_at),
            },
            new,
        ))
    });
    match r {
        Ok(n) => cx.out.int(n),
        Err(e) => cx.fail(&e),
    }
}

pub fn incr(cx: &mut Ctx<'_, '_>, a: &[&[u8]]) {
    incr_by(cx, a[1], 1);
}

pub fn decr(cx: &mut Ctx<'_, '_>, a: &[&[u8]]) {
    incr_by(cx, a[1], -1);
}

pub fn incrby(cx: &mut Ctx<'_, '_>, a: &[&[u8]]) {
    match parse_int(a[2]) {
        Some(d) => incr_by(cx, a[1], d),
        None => cx.out.error(NOT_INT),
    }
}

pub fn decrby(cx: &mut Ctx<'_, '_>, a: &[&[u8]]) {
    match parse_int(a[2]) {
        Some(i64::MIN) => cx.out.error("ERR decrement would overflow"),
        Some(d) => incr_by(cx, a[1], -d),
        None => cx.out.error(NOT_INT),
    }
}

pub fn incrbyfloat(cx: &mut Ctx<'_, '_>, a: &[&[u8]]) {
    let Some(d) = parse_float(a[2]) else {
        return cx.out.error("ERR value is not a valid float");
    };
    // The closure's own errors, told apart from the store's.
    let r = cx.db.modify(a[1], |cur| {
        let old = match cur {
            Some(e) => match parse_float(e.value) {
                Some(v) => v,
                None => return Ok((Change::Keep, Err("ERR value is not a valid float"))),
            },
            None => 0.0,
        };
        let new = old + d;
        if !new.is_finite() {
            return Ok((
                Change::Keep,
                Err("ERR increment would produce NaN or Infinity"),
            ));
        }
        let s = super::super::proto::format_double(new);
        Ok((
            Change::Put {
                value: s.clone().into_bytes(),
                expires_at: cur.and_then(|e| e.expires_at),
            },
            Ok(s),
        ))
    });
    match r {
        Ok(Ok(s)) => cx.out.bulk(s.as_bytes()),
        Ok(Err(msg)) => cx.out.error(msg),
        Err(e) => cx.fail(&e),
    }
}

pub fn append(cx: &mut Ctx<'_, '_>, a: &[&[u8]]) {
    let max = cx.db.client().limits().1;
    let r = cx.db.modify(a[1], |cur| {
        let mut v = cur.map(|e| e.value.to_vec()).unwrap_or_default();
        if v.len() + a[2].len() > max {
            return Err(Error::ValueTooLong {
                len: v.len() + a[2].len(),
                max,
            });
        }
        v.extend_from_slice(a[2]);
        let n = v.len();
        Ok((
            Change::Put {
                value: v,
                expires_at: cur.and_then(|e| e.expires_at),
            },
            n,
        ))
    });
    match r {
        Ok(n) => cx.out.int(n as i64),
        Err(e) => cx.fail(&e),
    }
}

pub fn strlen(cx: &mut Ctx<'_, '_>, a: &[&[u8]]) {
    match cx.db.get(a[1]) {
        Ok(v) => cx.out.int(v.map_or(0, |v| v.len() as i64)),
        Err(e) => cx.fail(&e),
    }
}

/// Redis's GETRANGE index rules.
fn range(len: i64, mut start: i64, mut end: i64) -> Option<(usize, usize)> {
    if start < 0 && end < 0 && start > end {
        return None;
    }
    if start < 0 {
        start += len;
    }
    if end < 0 {
        end += len;
    }
    start = start.max(0);
    end = end.max(0);
    if end >= len {
        end = len - 1;
    }
    if start > end || len == 0 {
        return None;
    }
    Some((start as usize, end as usize + 1))
}

pub fn getrange(cx: &mut Ctx<'_, '_>, a: &[&[u8]]) {
    let (Some(s), Some(e)) = (parse_int(a[2]), parse_int(a[3])) else {
        return cx.out.error(NOT_INT);
    };
    match cx.db.get(a[1]) {
        Ok(v) => {
            let v = v.unwrap_or_default();
            match range(v.len() as i64, s, e) {
                Some((from, to)) => cx.out.bulk(&v[from..to]),
                None => cx.out.bulk(b""),
            }
        }
        Err(e) => cx.fail(&e),
    }
}

pub fn setrange(cx: &mut Ctx<'_, '_>, a: &[&[u8]]) {
    let Some(off) = parse_int(a[2]) else {
        return cx.out.error(NOT_INT);
    };
    if off < 0 {
        return cx.out.error("ERR offset is out of range");
    }
    let max = cx.db.client().limits().1;
    let bytes = a[3];
    let off = off as u64;
    if !bytes.is_empty() && off + bytes.len() as u64 > max as u64 {
        return cx
            .out
            .error("ERR string exceeds maximum allowed size (proto-max-bulk-len)");
    }
    let off = off as usize;
    let r = cx.db.modify(a[1], |cur| {
        let Some(e) = cur else {
            if bytes.is_empty() {
                return Ok((Change::Keep, 0));
            }
            let mut v = vec![0u8; off];
            v.extend_from_slice(bytes);
            let n = v.len();
            return Ok((
                Change::Put {
                    value: v,
                    expires_at: None,
                },
                n,
            ));
        };
        if bytes.is_empty() {
            return Ok((Change::Keep, e.value.len()));
        }
        let mut v = e.value.to_vec();
        if v.len() < off + bytes.len() {
            v.resize(off + bytes.len(), 0);
        }
        v[off..off + bytes.len()].copy_from_slice(bytes);
        let n = v.len();
        Ok((
            Change::Put {
                value: v,
                expires_at: e.expires_at,
            },
            n,
        ))
    });
    match r {
        Ok(n) => cx.out.int(n as i64),
        Err(e) => cx.fail(&e),
    }
}

/// LCS key1 key2 [LEN]: the longest common subsequence (Redis's dynamic programme, limited
/// as Redis limits it: the table must fit in memory; here at most 64 Mi cells).
pub fn lcs(cx: &mut Ctx<'_, '_>, a: &[&[u8]]) {
    let mut len_only = false;
    for o in &a[3..] {
        if is(o, "len") {
            len_only = true;
        } else {
            return cx
                .out
                .error("ERR LCS of IDX, MINMATCHLEN and WITHMATCHLEN is not supported by kvhost; use LEN or no option");
        }
    }
    let vals = match cx.db.mget(&a[1..3]) {
        Ok(v) => v,
        Err(e) => return cx.fail(&e),
    };
    let x = vals[0].clone().unwrap_or_default();
    let y = vals[1].clone().unwrap_or_default();
    if (x.len() + 1) as u64 * (y.len() + 1) as u64 > 64 << 20 {
        return cx
            .out
            .error("ERR Insufficient memory, transient memory for LCS exceeds proto-max-bulk-len");
    }
    let w = y.len() + 1;
    let mut t = vec![0u32; (x.len() + 1) * w];
    for i in 1..=x.len() {
        for j in 1..=y.len() {
            t[i * w + j] = if x[i - 1] == y[j - 1] {
                t[(i - 1) * w + j - 1] + 1
            } else {
                t[(i - 1) * w + j].max(t[i * w + j - 1])
            };
        }
    }
    let n = t[x.len() * w + y.len()] as usize;
    if len_only {
        return cx.out.int(n as i64);
    }
    let mut s = vec![0u8; n];
    let (mut i, mut j, mut k) = (x.len(), y.len(), n);
    while k > 0 && i > 0 && j > 0 {
        if x[i - 1] == y[j - 1] {
            s[k - 1] = x[i - 1];
            k -= 1;
            i -= 1;
            j -= 1;
        } else if t[(i - 1) * w + j] > t[i * w + j - 1] {
            i -= 1;
        } else {
            j -= 1;
        }
    }
    cx.out.bulk(&s);
}

#[cfg(test)]
mod tests {
    use super::range;

    #[test]
    fn getrange_rules_are_redis_rules() {
        // "Hello World" as in Redis's docs.
        let r = |s, e| range(11, s, e);
        assert_eq!(r(0, 3), Some((0, 4)));
        assert_eq!(r(-3, -1), Some((8, 11)));
        assert_eq!(r(0, -1), Some((0, 11)));
        assert_eq!(r(10, 100), Some((10, 11)));
        assert_eq!(r(5, 3), None);
        assert_eq!(r(-1, -5), None);
        assert_eq!(r(-100, -50), Some((0, 1)));
        assert_eq!(range(0, 0, -1), None);
    }
}
