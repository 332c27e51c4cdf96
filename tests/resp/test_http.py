"""kvhost's HTTP side as its users see it: /metrics read by Prometheus's own Python parser,
and the dashboard page rendered by headless Chromium while a writer runs (the DOM is checked
for live samples and charts; a screenshot is saved to target/dashboard.png)."""

import os
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

import kvshm

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def host(http_host):
    return http_host


def get(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return r.status, r.headers, r.read()


def test_metrics_parse_with_the_prometheus_parser(host):
    name, port = host
    local = kvshm.Store(name)
    for i in range(100):
        local[f"m:{i}".encode()] = b"x" * 10
    _ = local.get(b"m:1"), local.get(b"nope")
    status, headers, body = get(port, "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    # Counters lose their _total suffix in the parser's family names.
    for fam in ["kvshm_keys", "kvshm_memory_bytes", "kvshm_ops", "kvshm_clients",
                "kvshm_build_info", "kvhost_http_requests", "kvshm_snapshot_last_success_timestamp_seconds"]:
        assert fam in families, fam
    keys = families["kvshm_keys"].samples[0]
    assert keys.value == 100 and keys.labels["store"] == name
    ops = {(s.labels["op"], s.labels["result"]): s.value for s in families["kvshm_ops"].samples}
    assert ops[("get", "hit")] >= 1 and ops[("get", "miss")] >= 1 and ops[("put", "ok")] >= 100
    assert families["kvshm_ops"].type == "counter"
    mem = {s.labels["state"]: s.value for s in families["kvshm_memory_bytes"].samples}
    assert mem["used"] <= mem["committed"] <= mem["max"]


def chromium():
    for c in ("chromium", "chromium-browser", "google-chrome"):
        p = shutil.which(c)
        if p:
            return p
    pytest.fail("chromium is not installed: bash ci/install-deps.sh")


def test_dashboard_shows_live_data_in_chromium(host):
    name, port = host
    stop = threading.Event()

    def writer():
        s = kvshm.Store(name)
        i = 0
        while not stop.is_set():
            s[f"dash:{i % 500}".encode()] = f"value {i}".encode()
            _ = s.get(f"dash:{(i * 7) % 600}".encode())
            i += 1
            time.sleep(0.001)

    t = threading.Thread(target=writer)
    t.start()
    try:
        time.sleep(0.5)
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1400,1100",
                 "--virtual-time-budget=6000"]
        url = f"http://127.0.0.1:{port}/"
        with tempfile.TemporaryDirectory() as ud:
            dom = subprocess.run([chromium(), *flags, f"--user-data-dir={ud}", "--dump-dom", url],
                                 capture_output=True, text=True, timeout=120).stdout
        # Several polls of /v1/stats reached the charts, the tiles show the store's keys, the
        # client table and the key browser are filled.
        import re
        samples = int(re.search(r'data-samples="(\d+)"', dom).group(1))
        assert samples >= 3, dom[:2000]
        assert dom.count("<canvas") >= 4
        keys = int(re.search(r'id="t-keys">([\d,]+)<', dom).group(1).replace(",", ""))
        assert keys > 0
        assert "dash:" in dom  # the key browser lists keys
        assert "alive" in dom  # the client table
        out = os.path.join(ROOT, "target", "dashboard.png")
        with tempfile.TemporaryDirectory() as ud:
            subprocess.run([chromium(), *flags, f"--user-data-dir={ud}", f"--screenshot={out}", url],
                           capture_output=True, timeout=120)
        assert os.path.getsize(out) > 10_000
    finally:
        stop.set()
        t.join()
