//! Key commands: DEL, EXISTS, TYPE, KEYS, SCAN, RANDOMKEY, RENAME(NX), COPY, the EXPIRE
//! family, TTL family, PERSIST.
//!
//! SCAN's cursor is a stripe number: each call returns every live key of whole stripes (one
//! consistent view per stripe), so a key present for the whole scan is returned exactly once
//! even while tables double (a key never changes stripe). COUNT is a hint, as in Redis: whole
//! stripes are returned until at least COUNT keys were seen.

use kvshm::{Change, Write};

use super::strings::expiry_at;
use super::{is, parse_int, Ctx, NOT_INT, SYNTAX};
use crate::resp::glob;

pub fn del(cx: &mut Ctx<'_, '_>, a: &[&[u8]]) {
    match cx.db.del(&a[1..]) {
        Ok(n) => cx.out.int(n as i64),
        Err(e) => cx.fail(&e),
    }
}

pub fn exists(cx: &mut Ctx<'_, '_>, a: &[&[u8]]) {
    let mut n = 0;
    for k in &a[1..] {
        match cx.db.exists(k) {
            Ok(true) => n += 1,
            Ok(false) => {}
            Err(e) => return cx.fail(&e),
        }
    }
    cx.out.int(n);
}

pub fn type_(cx: &mut Ctx<'_, '_>, a: &[&[u8]]) {
    match cx.db.exists(a[1]) {
        Ok(true) => cx.out.simple("string"),
        Ok(false) => cx.out.simple("none"),
        Err(e) => cx.fail(&e),
    }
}

pub fn keys(cx: &mut Ctx<'_, '_>, a: &[&[u8]]) {
    let c = cx.db.client();
    let pat = a[1];
    let mut found: Vec<Vec<u8>> = Vec::new();
    for s in 0..c.stripes() {
        let r = c.scan_stripe(s, |k, _, _| {
            if glob::matches(pat, k) {
                found.push(k.to_vec());
            }
        });
        if let Err(e) = r {
            return cx.fail(&e);
        }
    }
    cx.out.array(found.len());
    for k in &found {
        cx.out.bulk(k);
    }
}

pub fn scan(cx: &mut Ctx<'_, '_>, a: &[&[u8]]) {
    let c = cx.db.client();
    let stripes = c.stripes() as u64;
    let cursor = match std::str::from_utf8(a[1])
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    {
        Some(n) => n,
        None => return cx.out.error("ERR invalid cursor"),
    };
    let mut pat: Option<&[u8]> = None;
    let mut count: i64 = 10;
    let mut only_strings = true;
    let mut i = 2;
    while i < a.len() {
        let Some(v) = a.get(i + 1) else {
            return cx.out.error(SYNTAX);
        };
        if is(a[i], "match") {
            pat = Some(v);
        } else if is(a[i], "count") {
            match parse_int(v) {
                Some(n) if n >= 1 => count = n,
                Some(_) => return cx.out.error(SYNTAX),
                None => return cx.out.error(NOT_INT),
            }
        } else if is(a[i], "type") {
            only_strings = is(v, "string");
        } else {
            return cx.out.error(SYNTAX);
        }
        i += 2;
    }
    let mut found: Vec<Vec<u8>> = Vec::new();
    let mut seen: i64 = 0;
    let mut s = cursor;
    while s < stripes && seen < count {
        let r = c.scan_stripe(s as usize, |k, _, _| {
            seen += 1;
            if only_strings && pat.is_none_or(|p| glob::matches(p, k)) {
                found.push(k.to_vec());
            }
        });
        if let Err(e) = r {
            return cx.fail(&e);
        }
        s += 1;
        // An empty stripe costs little; still bound the work of one call.
        if seen == 0 && s - cursor >= 1024.max(count as u64) {
            break;
        }
    }
    let next = if s >= stripes { 0 } else { s };
    cx.out.array(2);
    cx.out.bulk(next.to_string().as_bytes());
    cx.out.array(found.len());
    for k in &found {
        cx.out.bulk(k);
    }
}

/// A cheap per-thread random number (xorshift seeded from the clock).
fn random() -> u64 {
    use std::cell::Cell;
    thread_local!(static S: Cell<u64> = Cell::new(
        (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)) | 1
    ));
    S.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x
    })
}

pub fn randomkey(cx: &mut Ctx<'_, '_>, _a: &[&[u8]]) {
    let c = cx.db.client();
    let n = c.stripes();
    if c.is_empty() {
        return cx.out.null();
    }
    let start = random() as usize % n;
    for i in 0..n {
        let mut keys: Vec<Vec<u8>> = Vec::new();
        if let Err(e) = c.scan_stripe((start + i) % n, |k, _, _| keys.push(k.to_vec())) {
            return cx.fail(&e);
        }
        if !keys.is_empty() {
            let k = &keys[random() as usize % keys.len()];
            return cx.out.bulk(k);
        }
    }
    cx.out.null();
}

/// RENAME / RENAMENX / COPY: one atomic multi-key step. `Err(text)`: the reply is that error.
fn move_key(
    cx: &mut Ctx<'_, '_>,
    src: &[u8],
    dst: &[u8],
    replace: bool,
    keep_src: bool,
) -> Result<bool, String> {
    let r = cx.db.multi(&[src, dst], |recs| {
        let Some(s) = &recs[0] else {
            return Ok((Vec::new(), Err("ERR no such key".to_string())));
        };
        if src == dst {
            // RENAME k k: nothing to do (Redis answers OK / RENAMENX 0); COPY k k is an error.
            return Ok((Vec::new(), Ok(!keep_src && replace)));
        }
        if recs[1].is_some() && !replace {
            return Ok((Vec::new(), Ok(false)));
        }
        let mut w = vec![(
            dst.to_vec(),
            Write::Put {
                value: s.value.clone(),
                expires_at: s.expires_at,
            },
        )];
        if !keep_src {
            w.push((src.to_vec(), Write::Remove));
        }
        Ok((w, Ok(true)))
    });
    match r {
        Ok(r) => r,
        Err(e) => Err(super::store_error(&e)),
    }
}

pub fn rename(cx: &mut Ctx<'_, '_>, a: &[&[u8]]) {
    match move_key(cx, a[1], a[2], true, false) {
        Ok(_) => cx.out.ok(),
        Err(e) => cx.out.error(&e),
    }
}

pub fn renamenx(cx: &mut Ctx<'_, '_>, a: &[&[u8]]) {
    match move_key(cx, a[1], a[2], false, false) {
        Ok(done) => cx.out.int(i64::from(done)),
        Err(e) => cx.out.error(&e),
    }
}

pub fn copy(cx: &mut Ctx<'_, '_>, a: &[&[u8]]) {
    let mut replace = false;
    let mut i = 3;
    while i < a.len() {
        if is(a[i], "replace") {
            replace = true;
        } else if is(a[i], "db") && i + 1 < a.len() {
            match parse_int(a[i + 1]) {
                Some(0) => {}
                Some(_) => return cx.out.error("ERR DB index is out of range"),
                None => return cx.out.error(NOT_INT),
            }
            i += 1;
        } else {
            return cx.out.error(SYNTAX);
        }
        i += 1;
    }
    if a[1] == a[2] {
        return cx
            .out
            .error("ERR source and destination objects are the same");
    }
    match move_key(cx, a[1], a[2], replace, true) {
        Ok(done) => cx.out.int(i64::from(done)),
        Err(e) if e == "ERR no such key" => cx.out.int(0),
        Err(e) => cx.out.error(&e),
    }
}

fn expire_generic(cx: &mut Ctx<'_, '_>, a: &[&[u8]], unit: i64, absolute: bool, name: &str) {
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for o in &a[3..] {
        if is(o, "nx") {
            nx = true;
        } else if is(o, "xx") {
            xx = true;
        } else if is(o, "gt") {
            gt = true;
        } else if is(o, "lt") {
            lt = true;
        } else {
            return cx.out.error(&format!(
                "ERR Unsupported option {}",
                String::from_utf8_lossy(o)
            ));
        }
    }
    if nx && (xx || gt || lt) {
        return cx
            .out
            .error("ERR NX and XX, GT or LT options at the same time are not compatible");
    }
    if gt && lt {
        return cx
            .out
            .error("ERR GT and LT options at the same time are not compatible");
    }
    let Some(n) = parse_int(a[2]) else {
        return cx.out.error(NOT_INT);
    };
    // A time not in the future deletes the key (Redis); one too far is an error.
    let at: Option<u64> = if n <= 0 {
        Some(0)
    } else {
        match expiry_at(a[2], unit, absolute) {
            Some(at) => Some(at),
            None => {
                return cx
                    .out
                    .error(&format!("ERR invalid expire time in '{name}' command"))
            }
        }
    };
    let at = at.unwrap_or(0);
    let r = cx.db.modify(a[1], |cur| {
        let Some(e) = cur else {
            return Ok((Change::Keep, 0));
        };
        let ok = match e.expires_at {
            None => !(xx || gt),
            Some(cur_at) => !nx && (!gt || at > cur_at) && (!lt || at < cur_at),
        };
        if !ok {
            return Ok((Change::Keep, 0));
        }
        if at <= kvshm::now_ms() {
            return Ok((Change::Remove, 1));
        }
        Ok((Change::SetExpiry(Some(at)), 1))
    });
    match r {
        Ok(n) => cx.out.int(n),
        Err(e) => cx.fail(&e),
    }
}

pub fn expire(cx: &mut Ctx<'_, '_>, a: &[&[u8]]) {
    expire_generic(cx, a, 1000, false, "expire");
}

pub fn pexpire(cx: &mut Ctx<'_, '_>, a: &[&[u8]]) {
    expire_generic(cx, a, 1, false, "pexpire");
}

pub fn expireat(cx: &mut Ctx<'_, '_>, a: &[&[u8]]) {
    expire_generic(cx, a, 1000, true, "expireat");
}

pub fn pexpireat(cx: &mut Ctx<'_, '_>, a: &[&[u8]]) {
    expire_generic(cx, a, 1, true, "pexpireat");
}

/// The key's expiry: `Err(-2)` missing, `Err(-1)` none, `Ok(at)`.
fn expiry(cx: &mut Ctx<'_, '_>, key: &[u8]) -> Result<Result<u64, i64>, kvshm::Error> {
    Ok(match cx.db.read(key)? {
        None => Err(-2),
        Some(r) => r.expires_at.ok_or(-1),
    })
}

fn ttl_reply(cx: &mut Ctx<'_, '_>, key: &[u8], f: impl Fn(u64) -> i64) {
    match expiry(cx, key) {
        Ok(Ok(at)) => cx.out.int(f(at)),
        Ok(Err(code)) => cx.out.int(code),
        Err(e) => cx.fail(&e),
    }
}

fn left(at: u64) -> i64 {
    at.saturating_sub(kvshm::now_ms()) as i64
}

pub fn ttl(cx: &mut Ctx<'_, '_>, a: &[&[u8]]) {
    ttl_reply(cx, a[1], |at| (left(at) + 500) / 1000);
}

pub fn pttl(cx: &mut Ctx<'_, '_>, a: &[&[u8]]) {
    ttl_reply(cx, a[1], left);
}

pub fn expiretime(cx: &mut Ctx<'_, '_>, a: &[&[u8]]) {
    ttl_reply(cx, a[1], |at| (at / 1000) as i64);
}

pub fn pexpiretime(cx: &mut Ctx<'_, '_>, a: &[&[u8]]) {
    ttl_reply(cx, a[1], |at| at as i64);
}

pub fn persist(cx: &mut Ctx<'_, '_>, a: &[&[u8]]) {
    let r = cx.db.modify(a[1], |cur| {
        Ok(match cur {
            Some(e) if e.expires_at.is_some() => (Change::SetExpiry(None), 1),
            _ => (Change::Keep, 0),
        })
    });
    match r {
        Ok(n) => cx.out.int(n),
        Err(e) => cx.fail(&e),
    }
}
