//! kvhost's HTTP API end to end: REST semantics (binary keys, ETag/If-Match/If-None-Match,
//! TTL, the error statuses), listing and batches, /v1/stats, /healthz and /readyz, the bearer
//! token and protected mode, and that HTTP, RESP and shared memory see the same keys.
//! (/metrics is parsed with the Prometheus Python parser and the dashboard is checked in
//! headless Chromium by `ci/resp.sh`.)

use std::process::{Command, Stdio};

use kvshm_tests::resp::{free_port, http, on_free_ports, RespHost};

fn host(tag: &str, extra: &[&str]) -> (RespHost, u16) {
    let (h, p) = on_free_ports(|| {
        let p = free_port();
        let addr = format!("127.0.0.1:{p}");
        let mut args = vec!["--http", addr.as_str()];
        args.extend_from_slice(extra);
        RespHost::try_start(tag, &args).map(|h| (h, p))
    });
    kvshm_tests::wait_for("the HTTP port", std::time::Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", p)).is_ok()
    });
    (h, p)
}

#[test]
fn rest_keys_versions_and_errors() {
    let (h, p) = host("http-rest", &["--max-value", "1KiB", "--max-key", "64"]);
    let local = h.local();
    // Binary key, percent-encoded; created -> 201 with the version as ETag.
    let r = http(p, "PUT", "/v1/keys/bin%00%FFkey", &[], b"v1");
    assert_eq!(r.status, 201, "{}", r.text());
    let v1 = r.header("etag").unwrap().to_string();
    assert_eq!(
        local.get(b"bin\x00\xffkey").unwrap().as_deref(),
        Some(&b"v1"[..])
    );
    let r = http(p, "GET", "/v1/keys/bin%00%FFkey", &[], b"");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"v1"[..]));
    assert_eq!(r.header("etag"), Some(v1.as_str()));
    let r = http(p, "HEAD", "/v1/keys/bin%00%FFkey", &[], b"");
    assert_eq!((r.status, r.body.len()), (200, 0));
    // If-Match: the right version replaces (200), a stale one is 412 and changes nothing.
    let r = http(
        p,
        "PUT",
        "/v1/keys/bin%00%FFkey",
        &[("If-Match", &v1)],
        b"v2",
    );
    assert_eq!(r.status, 200);
    let v2 = r.header("etag").unwrap().to_string();
    assert_ne!(v1, v2);
    let r = http(
        p,
        "PUT",
        "/v1/keys/bin%00%FFkey",
        &[("If-Match", &v1)],
        b"v3",
    );
    assert_eq!(r.status, 412);
    assert!(
        r.text().contains("\"code\":\"precondition_failed\""),
        "{}",
        r.text()
    );
    assert_eq!(
        local.get(b"bin\x00\xffkey").unwrap().as_deref(),
        Some(&b"v2"[..])
    );
    // If-None-Match: * creates only.
    assert_eq!(
        http(
            p,
            "PUT",
            "/v1/keys/bin%00%FFkey",
            &[("If-None-Match", "*")],
            b"x"
        )
        .status,
        412
    );
    assert_eq!(
        http(p, "PUT", "/v1/keys/fresh", &[("If-None-Match", "*")], b"x").status,
        201
    );
    // TTL, seen by the local client; JSON form for humans.
    assert_eq!(
        http(p, "PUT", "/v1/keys/t?ttl=30s", &[], b"temp").status,
        201
    );
    assert!(matches!(local.ttl(b"t").unwrap(), kvshm::Ttl::Remaining(_)));
    let j = http(p, "GET", "/v1/keys/t?format=json", &[], b"").text();
    assert!(
        j.contains("\"value\":{\"text\":\"temp\"}") && j.contains("\"ttl_ms\":"),
        "{j}"
    );
    assert_eq!(http(p, "PUT", "/v1/keys/t?ttl=soon", &[], b"x").status, 400);
    // Limits and missing keys, with their statuses.
    assert_eq!(
        http(p, "PUT", "/v1/keys/big", &[], &vec![b'x'; 2000]).status,
        413
    );
    let long = format!("/v1/keys/{}", "k".repeat(100));
    assert_eq!(http(p, "PUT", &long, &[], b"x").status, 414);
    let r = http(p, "GET", "/v1/keys/missing", &[], b"");
    assert_eq!(r.status, 404);
    assert!(r.text().contains("\"code\":\"not_found\""));
    assert_eq!(http(p, "PUT", "/v1/keys/bad%zz", &[], b"x").status, 400);
    // DELETE, conditional too.
    assert_eq!(
        http(p, "DELETE", "/v1/keys/fresh", &[("If-Match", "\"1\"")], b"").status,
        412
    );
    assert_eq!(http(p, "DELETE", "/v1/keys/fresh", &[], b"").status, 204);
    assert_eq!(http(p, "DELETE", "/v1/keys/fresh", &[], b"").status, 404);
    // What RESP wrote, HTTP reads.
    let mut c = h.conn();
    c.cmds(&["SET", "from-resp", "hello"]);
    assert_eq!(
        http(p, "GET", "/v1/keys/from-resp", &[], b"").body,
        b"hello"
    );
}

#[test]
fn listing_batches_stats_and_health() {
    let (h, p) = host("http-list", &["--stripes", "8"]);
    let local = h.local();
    for i in 0..500 {
        local.put(format!("user:{i}").as_bytes(), b"x").unwrap();
    }
    local.put(b"other", b"x").unwrap();
    // Pages by cursor: every user:* key exactly once.
    let mut seen = std::collections::HashSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/keys?prefix=user%3A&limit=50&cursor={c}"),
            None => "/v1/keys?prefix=user%3A&limit=50".to_string(),
        };
        let r = http(p, "GET", &path, &[], b"");
        assert_eq!(r.status, 200);
        let j: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        for k in j["keys"].as_array().unwrap() {
            assert!(seen.insert(k["key"].as_str().unwrap().to_string()));
        }
        match j["cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 500);
    // A batch: the sets and deletes in one transaction.
    let r = http(
        p,
        "POST",
        "/v1/batch",
        &[("Content-Type", "application/json")],
        br#"{"get":["user:1","nope"],"set":{"a":"1","b":"2"},"delete":["user:2","gone"]}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let j: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(j["get"]["user:1"], "x");
    assert!(j["get"]["nope"].is_null());
    assert_eq!(
        (j["set"].as_u64(), j["deleted"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(local.get(b"b").unwrap().as_deref(), Some(&b"2"[..]));
    assert!(local.get(b"user:2").unwrap().is_none());
    assert_eq!(
        http(p, "POST", "/v1/batch", &[], b"{\"bogus\":1}").status,
        400
    );
    // /v1/stats is kvcli stats --json.
    let j: serde_json::Value =
        serde_json::from_slice(&http(p, "GET", "/v1/stats", &[], b"").body).unwrap();
    assert_eq!(j["keys"].as_u64(), Some(501 + 2 - 1));
    assert!(j["host_pid"].as_u64().is_some());
    assert_eq!(http(p, "GET", "/healthz", &[], b"").status, 200);
    assert_eq!(http(p, "GET", "/readyz", &[], b"").status, 200);
    let page = http(p, "GET", "/", &[], b"");
    assert!(page.status == 200 && page.text().contains("uPlot"));
    assert_eq!(
        http(p, "GET", "/assets/uPlot.iife.min.js", &[], b"").status,
        200
    );
}

#[test]
fn metrics_count_snapshots_and_their_duration() {
    let snap = std::env::temp_dir().join(format!("http-metrics-{}.snap", std::process::id()));
    let snap_s = snap.display().to_string();
    let (h, p) = host("http-metrics", &["--snapshot", &snap_s]);
    let local = h.local();
    local.put(b"k", b"v").unwrap();
    let m = http(p, "GET", "/metrics", &[], b"").text();
    assert!(
        !m.contains("kvshm_snapshot_last_duration_seconds"),
        "no snapshot yet"
    );
    local.request_snapshot().unwrap();
    kvshm_tests::wait_for("the snapshot", std::time::Duration::from_secs(30), || {
        local.last_snapshot().1 >= 1
    });
    let m = http(p, "GET", "/metrics", &[], b"").text();
    let _ = std::fs::remove_file(&snap);
    assert!(m.contains("kvshm_snapshots_total{store="), "{m}");
    let line = m
        .lines()
        .find(|l| l.starts_with("kvshm_snapshot_last_duration_seconds{"))
        .unwrap_or_else(|| panic!("no duration in {m}"));
    let secs: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(secs > 0.0 && secs < 30.0, "{line}");
    assert!(
        m.contains("kvshm_keys{store=") && m.contains("} 1\n"),
        "{m}"
    );
}

#[test]
fn a_slow_client_is_closed_and_others_are_served() {
    use std::io::{Read, Write};
    let (_h, p) = host("http-slow", &["--timeout", "1s"]);
    let mut slow = std::net::TcpStream::connect(("127.0.0.1", p)).unwrap();
    slow.write_all(b"GET /v1/stats HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // Others are served while it dawdles.
    assert_eq!(http(p, "GET", "/healthz", &[], b"").status, 200);
    slow.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let t = std::time::Instant::now();
    let mut buf = Vec::new();
    let _ = slow.read_to_end(&mut buf);
    assert!(
        t.elapsed() < std::time::Duration::from_secs(8),
        "not closed: {:?}",
        t.elapsed()
    );
}

#[test]
fn token_and_protected_mode() {
    let (_h, p) = host("http-token", &["--http-token", "s3cret"]);
    assert_eq!(http(p, "GET", "/v1/stats", &[], b"").status, 401);
    assert_eq!(
        http(
            p,
            "GET",
            "/metrics",
            &[("Authorization", "Bearer nope")],
            b""
        )
        .status,
        401
    );
    assert_eq!(
        http(
            p,
            "GET",
            "/v1/stats",
            &[("Authorization", "Bearer s3cret")],
            b""
        )
        .status,
        200
    );
    assert_eq!(http(p, "GET", "/healthz", &[], b"").status, 200);
    // A non-loopback address without a token is refused at start.
    let store = kvshm_tests::StoreName::new("http-protected");
    let o = Command::new(kvshm_tests::workspace_bin("kvhost"))
        .args(["--name", &store.name, "--dir"])
        .arg(&store.dir)
        .args(["--http", "0.0.0.0:0", "--release-on-exit"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("protected mode"));
}
