//! `GET /metrics`: the store's shared counters and the servers' own, in the Prometheus text
//! exposition format (version 0.0.4). Written by hand: a few dozen lines of `# HELP`/`# TYPE`
//! and samples do not need a registry, and every value is read at scrape time from the
//! segment (so it counts every process of the store, not only this one).

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::{client, Shr};

/// A label value, escaped as the format wants (backslash, quote, newline).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Writer {
    s: String,
    store: String,
}

impl Writer {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.s, "# HELP {name} {help}");
        let _ = writeln!(self.s, "# TYPE {name} {kind}");
    }
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], v: f64) {
        let mut l = format!("store=\"{}\"", self.store);
        for (k, val) in labels {
            let _ = write!(l, ",{k}=\"{}\"", label(val));
        }
        let _ = writeln!(self.s, "{name}{{{l}}} {v}");
    }
    fn one(&mut self, name: &str, kind: &str, help: &str, v: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], v);
    }
}

pub(super) async fn metrics(State(sh): State<Shr>) -> Response {
    let c = match client(&sh) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let st = c.stats();
    let (last_snapshot, snapshots) = c.last_snapshot();
    let mut w = Writer {
        s: String::with_capacity(4096),
        store: label(&sh.opts.name),
    };
    w.family("kvshm_build_info", "gauge", "kvshm version (always 1).");
    w.sample(
        "kvshm_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1.0,
    );
    w.one("kvshm_keys", "gauge", "Keys in the store.", st.keys as f64);
    w.one(
        "kvshm_value_bytes",
        "gauge",
        "Bytes of values stored.",
        st.value_bytes as f64,
    );
    w.family(
        "kvshm_memory_bytes",
        "gauge",
        "Store memory by state: committed (file in use), used, free (reusable, backed), returned (given back to the OS), max (the size it may grow to).",
    );
    for (state, v) in [
        ("committed", st.committed_bytes),
        ("used", st.used_bytes),
        ("free", st.free_bytes),
        ("returned", st.returned_bytes),
        ("max", st.max_bytes),
    ] {
        w.sample("kvshm_memory_bytes", &[("state", state)], v as f64);
    }
    w.family(
        "kvshm_ops_total",
        "counter",
        "Operations of every client of the store (local processes, RESP and HTTP alike).",
    );
    w.sample(
        "kvshm_ops_total",
        &[("op", "get"), ("result", "hit")],
        st.hits as f64,
    );
    w.sample(
        "kvshm_ops_total",
        &[("op", "get"), ("result", "miss")],
        st.gets.saturating_sub(st.hits) as f64,
    );
    w.sample(
        "kvshm_ops_total",
        &[("op", "put"), ("result", "ok")],
        st.puts as f64,
    );
    w.sample(
        "kvshm_ops_total",
        &[("op", "remove"), ("result", "ok")],
        st.removes as f64,
    );
    w.family(
        "kvshm_io_bytes_total",
        "counter",
        "Value bytes read and written.",
    );
    w.sample(
        "kvshm_io_bytes_total",
        &[("direction", "in")],
        st.bytes_in as f64,
    );
    w.sample(
        "kvshm_io_bytes_total",
        &[("direction", "out")],
        st.bytes_out as f64,
    );
    w.one(
        "kvshm_writes_committed_total",
        "counter",
        "Writes committed since the store was created (its revision).",
        st.revision as f64,
    );
    w.one(
        "kvshm_clients",
        "gauge",
        "Client processes attached to the store (slots in use).",
        st.clients.len() as f64,
    );
    w.one(
        "kvshm_recoveries_total",
        "counter",
        "Dead clients recovered.",
        st.recoveries as f64,
    );
    w.one(
        "kvshm_growths_total",
        "counter",
        "Times the store grew.",
        st.growths as f64,
    );
    w.one(
        "kvshm_expired_keys_total",
        "counter",
        "Expired keys whose memory was freed.",
        st.expired as f64,
    );
    w.one(
        "kvshm_evicted_keys_total",
        "counter",
        "Keys evicted to make room in a full store (see kvshm_eviction_policy).",
        st.evicted as f64,
    );
    w.one(
        "kvshm_eviction_policy",
        "gauge",
        "The eviction policy: 0 noeviction, 1 allkeys-lru, 2 volatile-lru, 3 allkeys-random, 4 volatile-ttl, 5 volatile-random.",
        st.eviction as u64 as f64,
    );
    w.one(
        "kvshm_lock_fallback_reads_total",
        "counter",
        "Reads that fell back to a stripe lock.",
        st.retries as f64,
    );
    w.one(
        "kvshm_host_up",
        "gauge",
        "Whether a kvhost hosts the store.",
        if st.host_pid.is_some() { 1.0 } else { 0.0 },
    );
    w.one(
        "kvshm_snapshots_total",
        "counter",
        "Snapshots written by the host.",
        snapshots as f64,
    );
    w.one(
        "kvshm_snapshot_last_success_timestamp_seconds",
        "gauge",
        "Unix time of the last snapshot written (0: never).",
        last_snapshot as f64,
    );
    let took = sh.last_snapshot_us.load(Ordering::Acquire);
    if took > 0 {
        w.one(
            "kvshm_snapshot_last_duration_seconds",
            "gauge",
            "How long the last snapshot this host wrote took.",
            took as f64 / 1e6,
        );
    }
    let k = &sh.counters;
    let conns = sh.clients.lock().unwrap_or_else(|e| e.into_inner()).len();
    w.one(
        "kvhost_resp_connections",
        "gauge",
        "Open RESP connections.",
        conns as f64,
    );
    w.one(
        "kvhost_resp_connections_received_total",
        "counter",
        "RESP connections accepted.",
        k.connections.load(Ordering::Relaxed) as f64,
    );
    w.one(
        "kvhost_resp_connections_rejected_total",
        "counter",
        "RESP connections refused (max clients).",
        k.rejected.load(Ordering::Relaxed) as f64,
    );
    w.one(
        "kvhost_resp_commands_total",
        "counter",
        "RESP commands run.",
        k.commands.load(Ordering::Relaxed) as f64,
    );
    w.family(
        "kvhost_resp_net_bytes_total",
        "counter",
        "RESP bytes read and written.",
    );
    w.sample(
        "kvhost_resp_net_bytes_total",
        &[("direction", "in")],
        k.net_in.load(Ordering::Relaxed) as f64,
    );
    w.sample(
        "kvhost_resp_net_bytes_total",
        &[("direction", "out")],
        k.net_out.load(Ordering::Relaxed) as f64,
    );
    w.one(
        "kvhost_http_requests_total",
        "counter",
        "HTTP requests served (this scrape included).",
        k.http_requests.load(Ordering::Relaxed) as f64,
    );
    w.one(
        "kvhost_http_server_errors_total",
        "counter",
        "HTTP requests answered with a 5xx status.",
        k.http_errors.load(Ordering::Relaxed) as f64,
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        w.s,
    )
        .into_response()
}
