#!/usr/bin/env python3
"""kvhost's RESP server against Debian's redis-server 7, side by side in one run.

Both servers are started the same way (no persistence, loopback TCP and a Unix socket) and
pinned to CPU 0; redis-benchmark runs pinned to CPU 1 (this machine has two: each side gets
one core, and kvhost runs one RESP worker thread, as Redis runs one event loop). Besides
requests/s and p50, it reports each server's CPU time per request (utime + stime of all its
threads from /proc, over each test's run; kvhost's includes its workers' spin before they
sleep, `--resp-spin`) and redis-benchmark's own CPU use over the run: near 100% of its core
says the client, not the server, sets that row's requests/s (unpipelined rows, on two cores).
Both servers run through each round and every test is measured on one right after the other
(the order turning test by test), so that a slow minute of the VM hits both sides of a pair;
the table gives the median over rounds of requests/s and of p50 latency, per test, transport
and pipeline depth, and the median over rounds of each pair's ratio.

    python3 benches/resp/compare.py [--rounds 5] [--requests 1000000] [--tests incr] [--out FILE.md]
        [--pipelines 1,16] [--transports tcp,unix] [--kvhost-args="--resp-spin 0us"]

Needs redis-server and redis-benchmark (ci/install-deps.sh) and a release kvhost
(`cargo build --release -p kvhost`).
"""

import argparse
import csv
import io
import os
import platform
import resource
import socket
import statistics
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TESTS = "ping,set,get,incr,mset"
KVHOST_ARGS = []


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
               "--release-on-exit", "--log-level", "warn", *KVHOST_ARGS]
    else:
        cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--unixsocket", sock, "--unixsocketperm", "600",
               "--dir", tmp]
    proc = subprocess.Popen(["taskset", "-c", "0"] + cmd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_port(port, proc)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
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
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.monotonic()
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        wall = time.monotonic() - t0
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        used = (cpu_ticks(proc.pid) - before) / tick
        # redis-benchmark's own CPU over its run: near 100% of its core means the client, not
        # the server, sets the requests/s of the row.
        client = (ru1.ru_utime - ru0.ru_utime + ru1.ru_stime - ru0.ru_stime) / wall * 100
        parsed = list(csv.DictReader(io.StringIO(out)))
        per_req = used / (requests * len(parsed)) * 1e6
        for row in parsed:
            rows[row["test"]] = (float(row["rps"]), float(row["p50_latency_ms"]), per_req,
                                 client)
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--requests", type=int, default=1_000_000)
    ap.add_argument("--out")
    ap.add_argument("--tests", default=TESTS, help=f"redis-benchmark -t list (default {TESTS})")
    ap.add_argument("--pipelines", default="1,16", help="-P depths (default 1,16)")
    ap.add_argument("--transports", default="tcp,unix", help="tcp, unix or both (default)")
    ap.add_argument("--kvhost-args", default="", help="extra kvhost arguments (an A/B of a setting)")
    a = ap.parse_args()
    KVHOST_ARGS.extend(a.kvhost_args.split())
    results = {}  # (system, transport, pipeline, test) -> [(rps, p50)]
    configs = [(t, int(p)) for t in a.transports.split(",") for p in a.pipelines.split(",")]
    pairs = {}  # (transport, pipeline, test) -> [kvhost rps / redis rps, per round]
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.rounds):
            # Both servers run for the whole round (each idle while the other is measured), and
            # each test is measured on one right after the other, the order turning with every
            # test: a pair is seconds apart, so a slow minute of the VM hits both sides of it.
            servers = {}
            try:
                for system in ("kvhost", "redis"):
                    servers[system] = start(system, tmp)
                i = r
                for transport, pipeline in configs:
                    n = a.requests if pipeline > 1 else a.requests // 4
                    for one in a.tests.split(","):
                        order = ("kvhost", "redis") if i % 2 == 0 else ("redis", "kvhost")
                        i += 1
                        got = {}
                        for system in order:
                            proc, port, sock = servers[system]
                            got[system] = bench(proc, port, sock, pipeline, n, transport, one)
                            for test, v in got[system].items():
                                results.setdefault((system, transport, pipeline, test),
                                                   []).append(v)
                        for test, v in got["kvhost"].items():
                            pairs.setdefault((transport, pipeline, test), []).append(
                                v[0] / got["redis"][test][0])
            finally:
                for proc, _, _ in servers.values():
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
                 f"-c 50 -r 100000, -n {a.requests} (pipelined) / {a.requests // 4}"
                 f"{'; kvhost ' + a.kvhost_args if a.kvhost_args else ''}.")
    lines.append("")
    lines.append("| transport | -P | test | kvhost req/s | redis req/s | ratio | kvhost p50 ms "
                 "| redis p50 ms | kvhost CPU µs/req | redis CPU µs/req | client CPU % (kvhost, redis) "
                 "| paired ratio (min..max) |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    worst = None
    worst_paired = None
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
            kcl = statistics.median(x[3] for x in k)
            rcl = statistics.median(x[3] for x in rd)
            ratio = krps / rrps
            worst = ratio if worst is None else min(worst, ratio)
            pr = pairs[(transport, pipeline, test)]
            paired = statistics.median(pr)
            worst_paired = paired if worst_paired is None else min(worst_paired, paired)
            lines.append(f"| {transport} | {pipeline} | {test} | {krps:,.0f} | {rrps:,.0f} | "
                         f"{ratio:.2f}x | {kp:.3f} | {rp:.3f} | {kc:.2f} | {rc:.2f} | "
                         f"{kcl:.0f}, {rcl:.0f} | {paired:.2f}x ({min(pr):.2f}..{max(pr):.2f}) |")
    lines.append("")
    lines.append(f"Lowest ratio of medians: {worst:.2f}x; lowest paired ratio (median over rounds "
                 f"of kvhost/redis measured back to back): {worst_paired:.2f}x")
    text = "\n".join(lines)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
