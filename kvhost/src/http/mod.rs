//! The HTTP API (issue 16): REST over the store's keys, `/v1/stats`, `/metrics` in the
//! Prometheus text format, health checks and a dashboard page. Served by axum on the RESP
//! server's tokio runtime; every handler runs on its worker thread's own `kvshm::Client`.
//!
//! Keys are the percent-decoded path after `/v1/keys/` (any bytes); values are the raw body
//! (`application/octet-stream`), or JSON with `?format=json`. The record version is the ETag;
//! `If-Match` makes a PUT or DELETE conditional on it, `If-None-Match: *` makes a PUT create
//! only. Errors are JSON `{"error": ..., "code": ...}` with a status that says what happened.

// The `Err` of the small helpers below is the HTTP response itself, returned by the handler
// at once; boxing it would only add noise.
#![allow(clippy::result_large_err)]

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use kvshm::{Change, Client, Error, Write};
use serde::Deserialize;

use crate::resp::net::thread_client;
use crate::resp::Shared;

mod metrics;

/// The dashboard and its vendored chart library.
const DASHBOARD: &str = include_str!("dashboard.html");
const UPLOT_JS: &str = include_str!("assets/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("assets/uPlot.min.css");

type Shr = Arc<Shared>;

/// The router of the HTTP API.
pub fn router(sh: Shr) -> Router {
    let max_body = thread_client(&sh).map_or(1 << 20, |c| c.limits().1) + 64 * 1024;
    Router::new()
        .route("/", get(dashboard))
        .route("/assets/{file}", get(asset))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::metrics))
        .route("/v1/stats", get(stats))
        .route("/v1/keys", get(list_keys))
        .route(
            "/v1/keys/{*key}",
            get(get_key).head(get_key).put(put_key).delete(delete_key),
        )
        .route("/v1/batch", post(batch))
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn_with_state(sh.clone(), guard))
        .with_state(sh)
}

/// How long a client may take to send a request's headers when `--timeout` is not set: slow
/// or silent clients are closed.
pub const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Serve `app` on `listener`: HTTP/1.1 with keep-alive, each connection its own task, a
/// client that sends its headers slower than `--timeout` (default [`HEADER_TIMEOUT`]) is closed
/// (slowloris).
pub async fn serve(listener: tokio::net::TcpListener, app: Router, sh: Shr) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                log::warn!("HTTP accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let svc = TowerToHyperService::new(app.clone());
        let limit = sh.timeout().unwrap_or(HEADER_TIMEOUT);
        tokio::spawn(async move {
            let mut b = hyper::server::conn::http1::Builder::new();
            b.timer(TokioTimer::new())
                .header_read_timeout(limit)
                .keep_alive(true);
            if let Err(e) = b.serve_connection(TokioIo::new(stream), svc).await {
                log::debug!("HTTP connection: {e}");
            }
        });
    }
}

/// Counts requests, and checks the bearer token (when one is set) on everything but the
/// health checks, the page and its assets (the page sends the token itself).
async fn guard(State(sh): State<Shr>, req: Request, next: Next) -> Response {
    sh.counters.http_requests.fetch_add(1, Ordering::Relaxed);
    let path = req.uri().path();
    let open = matches!(path, "/" | "/healthz" | "/readyz") || path.starts_with("/assets/");
    if let (Some(token), false) = (&sh.opts.http_token, open) {
        let ok = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| constant_time_eq(t.as_bytes(), token.as_bytes()));
        if !ok {
            let mut r = err(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a bearer token is required (Authorization: Bearer ...)",
            );
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
    }
    let r = next.run(req).await;
    if r.status().is_server_error() {
        sh.counters.http_errors.fetch_add(1, Ordering::Relaxed);
    }
    r
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// A JSON error response.
fn err(status: StatusCode, code: &str, msg: &str) -> Response {
    let body = serde_json::json!({ "error": msg, "code": code }).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The response for a store error.
fn store_err(e: &Error) -> Response {
    let (status, code) = match e {
        Error::KeyTooLong { .. } => (StatusCode::URI_TOO_LONG, "key_too_long"),
        Error::ValueTooLong { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "value_too_long"),
        Error::StoreFull { .. } => (StatusCode::INSUFFICIENT_STORAGE, "store_full"),
        Error::InvalidArgument(_) => (StatusCode::BAD_REQUEST, "invalid_argument"),
        Error::NotAnInteger | Error::Overflow => (StatusCode::BAD_REQUEST, "invalid_argument"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "store_error"),
    };
    err(status, code, &e.to_string())
}

fn client(sh: &Shared) -> Result<std::rc::Rc<Client>, Response> {
    thread_client(sh).map_err(|e| store_err(&e))
}

/// Percent-decode a path segment into bytes (`+` stays `+`: it is a path, not a form).
pub fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

/// Percent-encode bytes for a path segment (unreserved characters stay).
pub fn percent_encode(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len());
    for &c in b {
        if c.is_ascii_alphanumeric() || b"-._~:".contains(&c) {
            s.push(c as char);
        } else {
            s.push_str(&format!("%{c:02X}"));
        }
    }
    s
}

/// The key of a `/v1/keys/...` request: the raw (still encoded) path after the prefix.
fn key_of(req_path: &str) -> Result<Vec<u8>, Response> {
    let raw = req_path.strip_prefix("/v1/keys/").unwrap_or("");
    percent_decode(raw).ok_or_else(|| {
        err(
            StatusCode::BAD_REQUEST,
            "bad_key",
            "the key is not valid percent-encoding",
        )
    })
}

fn now_ms() -> u64 {
    kvshm::now_ms()
}

fn etag(version: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).expect("digits are a valid header")
}

/// The version an `If-Match` names (`Ok(None)`: no such header).
fn if_match(h: &HeaderMap) -> Result<Option<u64>, Response> {
    let Some(v) = h.get(header::IF_MATCH) else {
        return Ok(None);
    };
    v.to_str()
        .ok()
        .map(|s| s.trim().trim_matches('"'))
        .and_then(|s| s.parse().ok())
        .map(Some)
        .ok_or_else(|| {
            err(
                StatusCode::BAD_REQUEST,
                "bad_if_match",
                "If-Match must be an ETag this API returned (a quoted version)",
            )
        })
}

#[derive(Deserialize, Default)]
struct KeyQuery {
    format: Option<String>,
    ttl: Option<String>,
}

fn text_or_hex(b: &[u8]) -> serde_json::Value {
    match std::str::from_utf8(b) {
        Ok(s) => serde_json::json!({ "text": s }),
        Err(_) => {
            serde_json::json!({ "hex": b.iter().map(|x| format!("{x:02x}")).collect::<String>() })
        }
    }
}

async fn get_key(
    State(sh): State<Shr>,
    method: Method,
    Query(q): Query<KeyQuery>,
    req: Request,
) -> Response {
    let key = match key_of(req.uri().path()) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let c = match client(&sh) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let rec = match c.get_entry(&key) {
        Ok(Some(r)) => r,
        Ok(None) => return err(StatusCode::NOT_FOUND, "not_found", "no such key"),
        Err(e) => return store_err(&e),
    };
    let ttl_ms = rec.expires_at.map(|at| at.saturating_sub(now_ms()));
    let json = q.format.as_deref() == Some("json");
    let mut r = if json {
        let body = serde_json::json!({
            "key": text_or_hex(&key),
            "value": text_or_hex(&rec.value),
            "bytes": rec.value.len(),
            "version": rec.version,
            "ttl_ms": ttl_ms,
        })
        .to_string();
        ([(header::CONTENT_TYPE, "application/json")], body).into_response()
    } else {
        (
            [(header::CONTENT_TYPE, "application/octet-stream")],
            rec.value,
        )
            .into_response()
    };
    let h = r.headers_mut();
    h.insert(header::ETAG, etag(rec.version));
    if let Some(ms) = ttl_ms {
        h.insert("x-kvshm-ttl-ms", HeaderValue::from(ms));
    }
    if method == Method::HEAD {
        *r.body_mut() = Body::empty();
    }
    r
}

async fn put_key(
    State(sh): State<Shr>,
    Query(q): Query<KeyQuery>,
    headers: HeaderMap,
    req: Request,
) -> Response {
    let key = match key_of(req.uri().path()) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let expected = match if_match(&headers) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let create_only = headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == b"*");
    let expires_at = match q.ttl.as_deref().map(kvshm::parse_duration) {
        None => None,
        Some(Ok(d)) if !d.is_zero() => Some(now_ms() + d.as_millis() as u64),
        Some(_) => {
            return err(
                StatusCode::BAD_REQUEST,
                "bad_ttl",
                "ttl must be a positive duration such as 500ms, 10s, 5m",
            )
        }
    };
    // The thread's client is not held across the await (the task may move threads).
    let (max_key, max_value) = match client(&sh) {
        Ok(c) => c.limits(),
        Err(r) => return r,
    };
    // Read at most one byte more than a value may have: a longer body is refused without
    // being buffered whole.
    let body: Bytes = match axum::body::to_bytes(req.into_body(), max_value + 1).await {
        Ok(b) => b,
        Err(_) => {
            return store_err(&Error::ValueTooLong {
                len: max_value + 1,
                max: max_value,
            })
        }
    };
    let c = match client(&sh) {
        Ok(c) => c,
        Err(r) => return r,
    };
    if key.len() > max_key {
        return store_err(&Error::KeyTooLong {
            len: key.len(),
            max: max_key,
        });
    }
    if body.len() > max_value {
        return store_err(&Error::ValueTooLong {
            len: body.len(),
            max: max_value,
        });
    }
    let r = c.modify_entry(&key, |cur| {
        let ok = match (cur, expected, create_only) {
            (Some(_), _, true) => false,
            (Some(e), Some(v), _) => e.version == v,
            (None, Some(_), _) => false,
            _ => true,
        };
        if !ok {
            return Ok((Change::Keep, (false, cur.is_none(), cur.map(|e| e.version))));
        }
        Ok((
            Change::Put {
                value: body.to_vec(),
                expires_at,
            },
            (true, cur.is_none(), None),
        ))
    });
    match r {
        Ok(((true, created, _), Some(v))) => {
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            let mut r = (
                status,
                [(header::CONTENT_TYPE, "application/json")],
                serde_json::json!({ "version": v }).to_string(),
            )
                .into_response();
            r.headers_mut().insert(header::ETAG, etag(v));
            r
        }
        Ok(((false, _, current), _)) => {
            let mut r = err(
                StatusCode::PRECONDITION_FAILED,
                "precondition_failed",
                match current {
                    Some(_) if create_only => "the key exists (If-None-Match: *)",
                    Some(_) => "the key's version is not the one in If-Match",
                    None => "the key does not exist (If-Match)",
                },
            );
            if let Some(v) = current {
                r.headers_mut().insert(header::ETAG, etag(v));
            }
            r
        }
        // Written and already expired (a TTL shorter than the request): gone, as asked.
        Ok(((true, _, _), None)) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => store_err(&e),
    }
}

async fn delete_key(State(sh): State<Shr>, headers: HeaderMap, req: Request) -> Response {
    let key = match key_of(req.uri().path()) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let expected = match if_match(&headers) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let c = match client(&sh) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let r = c.modify_entry(&key, |cur| {
        Ok(match (cur, expected) {
            (None, _) => (Change::Keep, Err(StatusCode::NOT_FOUND)),
            (Some(e), Some(v)) if e.version != v => {
                (Change::Keep, Err(StatusCode::PRECONDITION_FAILED))
            }
            (Some(_), _) => (Change::Remove, Ok(())),
        })
    });
    match r {
        Ok((Ok(()), _)) => StatusCode::NO_CONTENT.into_response(),
        Ok((Err(StatusCode::NOT_FOUND), _)) => {
            err(StatusCode::NOT_FOUND, "not_found", "no such key")
        }
        Ok((Err(s), _)) => err(
            s,
            "precondition_failed",
            "the key's version is not the one in If-Match",
        ),
        Err(e) => store_err(&e),
    }
}

#[derive(Deserialize, Default)]
struct ListQuery {
    prefix: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

/// `GET /v1/keys?prefix=&limit=&cursor=`: keys in pages. The cursor is a stripe number (as
/// SCAN's): whole stripes per page, so a key present for the whole listing is listed exactly
/// once however the tables grow meanwhile; `limit` is a hint (a page ends after the stripe
/// that reached it).
async fn list_keys(State(sh): State<Shr>, Query(q): Query<ListQuery>) -> Response {
    let c = match client(&sh) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let prefix = match q.prefix.as_deref().map(percent_decode) {
        None => Vec::new(),
        Some(Some(p)) => p,
        Some(None) => {
            return err(
                StatusCode::BAD_REQUEST,
                "bad_prefix",
                "bad percent-encoding",
            )
        }
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    let mut s: usize = match q.cursor.as_deref().map(str::parse) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => return err(StatusCode::BAD_REQUEST, "bad_cursor", "bad cursor"),
    };
    let mut keys: Vec<serde_json::Value> = Vec::new();
    let stripes = c.stripes();
    while s < stripes && keys.len() < limit {
        let r = c.scan_stripe(s, |k, v, exp| {
            if k.starts_with(&prefix) {
                keys.push(serde_json::json!({
                    "key": String::from_utf8_lossy(k),
                    "path": percent_encode(k),
                    "bytes": v.len(),
                    "expires_at_ms": (exp != 0).then_some(exp),
                }));
            }
        });
        if let Err(e) = r {
            return store_err(&e);
        }
        s += 1;
    }
    let next = (s < stripes).then(|| s.to_string());
    let body = serde_json::json!({ "keys": keys, "cursor": next }).to_string();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct BatchReq {
    #[serde(default)]
    get: Vec<String>,
    #[serde(default)]
    set: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    delete: Vec<String>,
}

/// `POST /v1/batch`: `{"get": [k...], "set": {k: v...}, "delete": [k...]}` (text keys and
/// values). The gets are one consistent view; the sets and deletes are one atomic
/// transaction (a key in both is deleted).
async fn batch(State(sh): State<Shr>, body: Bytes) -> Response {
    let req: BatchReq = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return err(
                StatusCode::BAD_REQUEST,
                "bad_json",
                &format!("expected {{\"get\": [...], \"set\": {{...}}, \"delete\": [...]}}: {e}"),
            )
        }
    };
    let c = match client(&sh) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let mut sets: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for (k, v) in &req.set {
        let Some(v) = v.as_str() else {
            return err(
                StatusCode::BAD_REQUEST,
                "bad_json",
                "set values must be strings",
            );
        };
        sets.push((k.as_bytes().to_vec(), v.as_bytes().to_vec()));
    }
    let mut gets = serde_json::Map::new();
    if !req.get.is_empty() {
        match c.get_many(&req.get) {
            Ok(vs) => {
                for (k, v) in req.get.iter().zip(vs) {
                    gets.insert(
                        k.clone(),
                        v.map_or(serde_json::Value::Null, |v| {
                            serde_json::Value::String(String::from_utf8_lossy(&v).into_owned())
                        }),
                    );
                }
            }
            Err(e) => return store_err(&e),
        }
    }
    let mut keys: Vec<Vec<u8>> = sets.iter().map(|(k, _)| k.clone()).collect();
    keys.extend(req.delete.iter().map(|k| k.as_bytes().to_vec()));
    let mut deleted = 0usize;
    if !keys.is_empty() {
        let none: &[(Vec<u8>, kvshm::Watch)] = &[];
        let r = c.transact(none, &keys, |recs| {
            let mut w: Vec<(usize, Write)> = sets
                .iter()
                .enumerate()
                .map(|(i, (_, v))| {
                    (
                        i,
                        Write::Put {
                            value: v.clone(),
                            expires_at: None,
                        },
                    )
                })
                .collect();
            let mut n = 0;
            for i in sets.len()..keys.len() {
                let existed = recs[i].is_some() || sets.iter().any(|(k, _)| *k == keys[i]);
                n += usize::from(existed);
                w.push((i, Write::Remove));
            }
            Ok((w, n))
        });
        match r {
            Ok(n) => deleted = n,
            Err(e) => return store_err(&e),
        }
    }
    let body =
        serde_json::json!({ "get": gets, "set": sets.len(), "deleted": deleted }).to_string();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn stats(State(sh): State<Shr>) -> Response {
    let c = match client(&sh) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let s = c.stats();
    let body = s.to_json(
        &sh.opts.name,
        &c.path().display().to_string(),
        c.last_snapshot(),
        unix_now(),
    );
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready: the store is attached and a host serves it (housekeeping, recovery, growth).
async fn readyz(State(sh): State<Shr>) -> Response {
    match client(&sh) {
        Ok(c) if c.stats().host_pid.is_some() => "ready\n".into_response(),
        Ok(_) => err(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_host",
            "no kvhost hosts the store",
        ),
        Err(r) => r,
    }
}

async fn dashboard() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        DASHBOARD,
    )
        .into_response()
}

async fn asset(axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    match file.as_str() {
        "uPlot.iife.min.js" => (
            [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
            UPLOT_JS,
        )
            .into_response(),
        "uPlot.min.css" => (
            [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
            UPLOT_CSS,
        )
            .into_response(),
        _ => err(StatusCode::NOT_FOUND, "not_found", "no such asset"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_coding_round_trips_any_bytes() {
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(percent_decode(&percent_encode(&all)).unwrap(), all);
        assert_eq!(percent_decode("a%20b+c").unwrap(), b"a b+c");
        assert!(percent_decode("%zz").is_none());
        assert!(percent_decode("%4").is_none());
    }
}
