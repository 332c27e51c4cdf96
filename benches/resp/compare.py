#!/usr/bin/env python3
"""kvhost's RESP server against Debian's redis-server 7, side by side in one run.

Both servers are started the same way (no persistence, loopback TCP and a Unix socket) and
pinned to CPU 0; redis-benchmark runs pinned to CPU 1 (this machine has two: each side gets
one core, and kvhost runs one RESP worker thread, as Redis runs one event loop). Besides
requests/s and p50, it reports each server's CPU time per request (utime + stime of all its
threads from /proc, over each test's run): on two cores the client is often the bottleneck,
and then CPU per request is what tells the servers apart. Rounds
alternate the two servers so that a slow minute of the VM hits both; the table gives the
median over rounds of requests/s and of p50 latency, per test, transport and pipeline depth.

    python3 benches/resp/compare.py [--rounds 5] [--requests 1000000] [--tests incr] [--out FILE.md]

Needs redis-server and redis-benchmark (ci/install-deps.sh) and a release kvhost
(`cargo build --release -p kvhost`).
"""

import argparse
import csv
import io
import os
import platform
import socket
import statistics
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TESTS = "ping,set,get,incr,mset"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc):
    t = time.time()
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None:
                raise SystemExit("server exited")
            if time.time() - t > 30:
                raise SystemExit("server does not listen")
            time.sleep(0.02)


def start(system, tmp):
    port = free_port()
    sock = os.path.join(tmp, f"{system}.sock")
    if system == "kvhost":
        name = f"resp-bench-{os.getpid()}"
        cmd = [os.path.join(ROOT, "target/release/kvhost"), "--name", name,
               "--resp", f"127.0.0.1:{port}", "--resp-unix", sock, "--resp-threads", "1",
               "--release-on-exit", "--log-level", "warn"]
    else:
        cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--unixsocket", sock, "--unixsocketperm", "600",
               "--dir", tmp]
    proc = subprocess.Popen(["taskset", "-c", "0"] + cmd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_port(port, proc)
    return proc, port, sock


def cpu_ticks(pid):
    """utime + stime of every thread of `pid`, in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def bench(proc, port, sock, pipeline, requests, transport, tests=TESTS):
    """Each test in its own redis-benchmark run, so the server's CPU time is per test."""
    target = ["-s", sock] if transport == "unix" else ["-h", "127.0.0.1", "-p", str(port)]
    rows = {}
    tick = os.sysconf("SC_CLK_TCK")
    for test in tests.split(","):
        cmd = ["taskset", "-c", "1", "redis-benchmark", *target, "-t", test, "-n",
               str(requests), "-r", "100000", "-c", "50", "-P", str(pipeline), "--csv"]
        before = cpu_ticks(proc.pid)
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        used = (cpu_ticks(proc.pid) - before) / tick
        parsed = list(csv.DictReader(io.StringIO(out)))
        per_req = used / (requests * len(parsed)) * 1e6
        for row in parsed:
            rows[row["test"]] = (float(row["rps"]), float(row["p50_latency_ms"]), per_req)
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--requests", type=int, default=1_000_000)
    ap.add_argument("--out")
    ap.add_argument("--tests", default=TESTS, help=f"redis-benchmark -t list (default {TESTS})")
    a = ap.parse_args()
    results = {}  # (system, transport, pipeline, test) -> [(rps, p50)]
    configs = [(t, p) for t in ("tcp", "unix") for p in (1, 16)]
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.rounds):
            order = ("kvhost", "redis") if r % 2 == 0 else ("redis", "kvhost")
            for system in order:
                proc, port, sock = start(system, tmp)
                try:
                    for transport, pipeline in configs:
                        n = a.requests if pipeline > 1 else a.requests // 4
                        for test, v in bench(proc, port, sock, pipeline, n, transport,
                                             a.tests).items():
                            results.setdefault((system, transport, pipeline, test), []).append(v)
                finally:
                    proc.terminate()
                    proc.wait()
            print(f"round {r + 1}/{a.rounds} done", flush=True)
    lines = []
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    redis_ver = subprocess.run(["redis-server", "--version"], capture_output=True,
                               text=True).stdout.split()[2]
    lines.append(f"Machine: {platform.node()}, {os.cpu_count()} CPUs ({cpu}), "
                 f"{platform.system()} {platform.release()}; redis-server {redis_ver}; "
                 f"{a.rounds} rounds, medians; servers on CPU 0, redis-benchmark on CPU 1, "
                 f"-c 50 -r 100000, -n {a.requests} (pipelined) / {a.requests // 4}.")
    lines.append("")
    lines.append("| transport | -P | test | kvhost req/s | redis req/s | ratio | kvhost p50 ms "
                 "| redis p50 ms | kvhost CPU µs/req | redis CPU µs/req |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|")
    worst = None
    for transport, pipeline in configs:
        tests = sorted({k[3] for k in results if k[1] == transport and k[2] == pipeline})
        for test in tests:
            k = results[("kvhost", transport, pipeline, test)]
            rd = results[("redis", transport, pipeline, test)]
            krps = statistics.median(x[0] for x in k)
            rrps = statistics.median(x[0] for x in rd)
            kp = statistics.median(x[1] for x in k)
            rp = statistics.median(x[1] for x in rd)
            kc = statistics.median(x[2] for x in k)
            rc = statistics.median(x[2] for x in rd)
            ratio = krps / rrps
            worst = ratio if worst is None else min(worst, ratio)
            lines.append(f"| {transport} | {pipeline} | {test} | {krps:,.0f} | {rrps:,.0f} | "
                         f"{ratio:.2f}x | {kp:.3f} | {rp:.3f} | {kc:.2f} | {rc:.2f} |")
    lines.append("")
    lines.append(f"Lowest ratio: {worst:.2f}x")
    text = "\n".join(lines)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
