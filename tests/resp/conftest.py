"""What the RESP and HTTP tests share: a kvhost on free loopback ports, stopped (and its store
released) when the module's tests are done."""

import os
import socket
import subprocess
import time
import uuid

import pytest

KVHOST = os.environ.get("KVHOST", "target/release/kvhost")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_kvhost(flag):
    """A kvhost serving its own store with `flag` (`--resp` or `--http`) on a free port;
    a generator for a fixture: yields (store name, port)."""
    name = f"py{flag.strip('-')}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    port = free_port()
    proc = subprocess.Popen(
        [KVHOST, "--name", name, flag, f"127.0.0.1:{port}", "--release-on-exit",
         "--log-level", "warn"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, "kvhost exited"
                assert time.time() < deadline, "kvhost does not listen"
                time.sleep(0.02)
        yield name, port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        path = os.path.join("/dev/shm", f"kvshm.{name}")
        if os.path.exists(path):
            os.unlink(path)


@pytest.fixture(scope="module")
def resp_host():
    yield from start_kvhost("--resp")


@pytest.fixture(scope="module")
def http_host():
    yield from start_kvhost("--http")
