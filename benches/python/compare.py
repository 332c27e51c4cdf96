"""Python peer comparison (issue 17): get/put of 100-byte values over 100k keys, 1 and 4
processes, for kvshm against multiprocessing.Manager().dict(), diskcache.Cache (on /dev/shm),
redis-py (Unix socket to a local redis-server started here, no persistence), py-lmdb (on
/dev/shm) and a plain in-process dict (the floor; not shared between processes).

Run (in the venv that has the kvshm package, e.g. after `bash ci/python.sh`):
    target/pyvenv/bin/pip install diskcache redis lmdb      # and: apt-get install redis-server
    target/pyvenv/bin/python benches/python/compare.py [--secs 1.0]
Systems whose package or server is missing are reported as skipped.
"""

import argparse
import multiprocessing as mp
import os
import platform
import random
import shutil
import subprocess
import tempfile
import time

import kvshm

KEYS = 100_000
VALUE = b"v" * 100


def key(i):
    return b"key-%08d" % i


class KvShm:
    name = "kvshm"

    def setup(self):
        self.store = f"pycompare-{os.getpid()}"
        self.host = kvshm.Host.create(self.store)
        return self

    def open(self):
        self.c = kvshm.Client(self.store)

    def get(self, k):
        return self.c.get(k)

    def put(self, k, v):
        self.c.put(k, v)

    def close(self):
        self.host.release()


class Dict:
    name = "dict (in-process, not shared)"
    shared = False

    def setup(self):
        self.d = {}
        return self

    def open(self):
        pass

    def get(self, k):
        return self.d.get(k)

    def put(self, k, v):
        self.d[k] = v

    def close(self):
        pass


class Manager:
    name = "multiprocessing.Manager().dict()"

    def setup(self):
        self.m = mp.Manager()
        self.d = self.m.dict()
        return self

    def open(self):
        pass

    def get(self, k):
        return self.d.get(k)

    def put(self, k, v):
        self.d[k] = v

    def close(self):
        self.m.shutdown()


class DiskCache:
    name = "diskcache.Cache (/dev/shm)"

    def setup(self):
        import diskcache  # noqa: F401

        self.dir = tempfile.mkdtemp(dir="/dev/shm", prefix="pycmp-dc-")
        return self

    def open(self):
        import diskcache

        self.c = diskcache.Cache(self.dir)

    def get(self, k):
        return self.c.get(k)

    def put(self, k, v):
        self.c.set(k, v)

    def close(self):
        shutil.rmtree(self.dir, ignore_errors=True)


class Redis:
    name = "redis-py (Unix socket)"

    def setup(self):
        import redis  # noqa: F401

        if not shutil.which("redis-server"):
            raise RuntimeError("redis-server not installed")
        self.dir = tempfile.mkdtemp(prefix="pycmp-redis-")
        self.sock = os.path.join(self.dir, "redis.sock")
        self.proc = subprocess.Popen(
            ["redis-server", "--port", "0", "--unixsocket", self.sock, "--save", "",
             "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL,
        )
        for _ in range(100):
            if os.path.exists(self.sock):
                break
            time.sleep(0.05)
        return self

    def open(self):
        import redis

        self.r = redis.Redis(unix_socket_path=self.sock)

    def get(self, k):
        return self.r.get(k)

    def put(self, k, v):
        self.r.set(k, v)

    def close(self):
        self.proc.terminate()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class Lmdb:
    name = "py-lmdb (/dev/shm)"

    def setup(self):
        import lmdb  # noqa: F401

        self.dir = tempfile.mkdtemp(dir="/dev/shm", prefix="pycmp-lmdb-")
        return self

    def open(self):
        import lmdb

        if getattr(self, "env", None) is not None:
            return  # one environment per process (py-lmdb refuses a second)
        self.env = lmdb.open(self.dir, map_size=1 << 30, sync=False, metasync=False)

    def before_fork(self):
        # An LMDB environment must not be used across fork: workers open their own.
        if getattr(self, "env", None) is not None:
            self.env.close()
            self.env = None

    def get(self, k):
        with self.env.begin() as t:
            return t.get(k)

    def put(self, k, v):
        with self.env.begin(write=True) as t:
            t.put(k, v)

    def close(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def run(sysobj, op, secs, seed):
    """Ops of one kind for `secs` seconds; returns (ops, elapsed)."""
    sysobj.open()
    rng = random.Random(seed)
    keys = [key(rng.randrange(KEYS)) for _ in range(4096)]
    f = sysobj.get if op == "get" else (lambda k: sysobj.put(k, VALUE))
    n, t0 = 0, time.perf_counter()
    while True:
        for k in keys[:256]:
            f(k)
        n += 256
        keys = keys[256:] + keys[:256]
        el = time.perf_counter() - t0
        if el >= secs:
            return n, el


# The system under test, inherited by forked workers (its handles are not picklable; each
# worker opens its own connection in `run`).
CURRENT = None


def _child(args):
    op, secs, seed = args
    return run(CURRENT, op, secs, seed)


def measure(sysobj, procs, op, secs):
    global CURRENT
    if procs == 1:
        n, el = run(sysobj, op, secs, 1)
        return n / el
    CURRENT = sysobj
    getattr(sysobj, "before_fork", lambda: None)()
    with mp.get_context("fork").Pool(procs) as pool:
        res = pool.map(_child, [(op, secs, s) for s in range(procs)])
    return sum(n for n, _ in res) / max(el for _, el in res)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--secs", type=float, default=1.0)
    a = ap.parse_args()
    print(f"machine: {os.cpu_count()} cpus, {platform.machine()}, Python {platform.python_version()}, "
          f"{KEYS} keys x {len(VALUE)} B")
    rows = []
    for cls in (KvShm, Dict, Manager, DiskCache, Redis, Lmdb):
        try:
            s = cls().setup()
        except Exception as e:  # noqa: BLE001 - a missing system is reported, not fatal
            print(f"skipped {cls.name}: {e}")
            continue
        try:
            s.open()
            t0 = time.perf_counter()
            for i in range(KEYS):
                s.put(key(i), VALUE)
            load = time.perf_counter() - t0
            r = {"name": s.name, "load": load}
            for procs in (1, 4):
                if procs > 1 and getattr(s, "shared", True) is False:
                    continue
                for op in ("get", "put"):
                    r[(procs, op)] = measure(s, procs, op, a.secs)
            rows.append(r)
            print(f"  measured {s.name}", flush=True)
        finally:
            s.close()
    base = rows[0]
    print()
    print("| system | get 1p | put 1p | get 4p | put 4p | kvshm / this (get 1p, put 1p) |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for r in rows:
        def cell(k):
            return f"{r[k] / 1e3:,.0f} k/s ({1e6 / r[k]:.2f} us)" if k in r else "-"
        ratio = f"{base[(1, 'get')] / r[(1, 'get')]:.2f}x, {base[(1, 'put')] / r[(1, 'put')]:.2f}x"
        print(f"| {r['name']} | {cell((1, 'get'))} | {cell((1, 'put'))} | {cell((4, 'get'))} | "
              f"{cell((4, 'put'))} | {ratio} |")


if __name__ == "__main__":
    main()
