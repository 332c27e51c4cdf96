"""Tests of the kvshm Python package: every call, the errors, worker pools over fork and spawn,
a forked child with an inherited Client, workers SIGKILLed in a loop, Rust <-> Python byte
for byte (through the kvcli binary), and random operations against a dict model.

Run: `bash ci/python.sh` (builds the package into a venv and runs pytest).
KVCLI: path of the kvcli binary for the cross-language test (skipped when unset).
"""

import multiprocessing as mp
import os
import random
import signal
import subprocess
import time
import uuid

import pytest

import kvshm


@pytest.fixture
def store():
    """A fresh store, released (with its file) even when the test fails."""
    name = f"py-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    host = kvshm.Host.create(name, max_value_len=1 << 20)
    try:
        yield name, host
    finally:
        host.release()


def test_every_call(store):
    name, host = store
    c = kvshm.Client(name)
    assert c.name == name and "kvshm.Client" in repr(c)
    assert c.get(b"k") is None
    c.put(b"k", b"v")
    c.put("text", "h\u00e9")  # str is UTF-8
    assert c.get(b"k") == b"v" and c.get("text") == "h\u00e9".encode()
    c.put(bytearray(b"ba"), memoryview(b"mv"))
    assert c.get(b"ba") == b"mv"
    binary = bytes(range(256))
    c.put(binary, binary * 3)
    assert c.get(binary) == binary * 3
    assert c.contains(b"k") and not c.contains(b"nope")
    assert len(c) == 4
    c.put_many({b"a": b"1", b"b": b"2"})
    c.put_many([(b"c", b"3")])
    assert c.get_many([b"a", b"x", b"c"]) == [b"1", None, b"3"]
    assert sorted(c.keys(b"")) == sorted([b"k", b"text", b"ba", binary, b"a", b"b", b"c"])
    assert sorted(c.keys(prefix=b"t")) == [b"text"]
    assert dict(c.scan(b"a")) == {b"a": b"1"}
    assert c.remove_many([b"a", b"b", b"zz"]) == 2
    assert c.remove(b"c") and not c.remove(b"c")
    s = c.stats()
    assert s["keys"] == 4 and s["puts"] >= 6 and s["clients"] >= 2
    assert c.verify() == []
    # Versions, conditional writes, counters.
    v1 = c.put_if_version(b"cas", b"one", None)
    with pytest.raises(kvshm.Conflict) as e:
        c.put_if_version(b"cas", b"two", None)
    assert e.value.current == v1 and e.value.index == 0
    v2 = c.put_if_version(b"cas", b"two", v1)
    assert v2 > v1 and c.get_versioned(b"cas") == (b"two", v2) and c.version(b"cas") == v2
    with pytest.raises(kvshm.Conflict):
        c.remove_if_version(b"cas", v1)
    c.remove_if_version(b"cas", v2)
    assert c.put_if_absent(b"once", b"1") and not c.put_if_absent(b"once", b"2")
    assert c.replace(b"once", b"3") and not c.replace(b"none", b"x")
    assert c.get_and_put(b"once", b"4") == b"3"
    assert c.get_and_remove(b"once") == b"4" and c.get(b"once") is None
    assert c.incr(b"n") == 1 and c.incr(b"n", 41) == 42 and c.get(b"n") == b"42"
    assert c.append(b"log", b"ab") == 2 and c.append(b"log", b"c") == 3
    with pytest.raises(kvshm.NotAnInteger):
        c.incr(b"log")
    c.put(b"max", b"9223372036854775807")
    with pytest.raises(kvshm.Overflow):
        c.incr(b"max")
    vn = c.version(b"n")
    with pytest.raises(kvshm.Conflict) as e:
        c.commit_if([(b"n", vn), (b"log", None)], [(b"t", b"1")], [b"n"])
    assert e.value.index == 1 and c.get(b"t") is None
    c.commit_if([(b"n", vn)], [(b"t", b"1")], [b"n"])
    assert c.get(b"t") == b"1" and c.get(b"n") is None
    # Waiting: a timeout, then a change by another client.
    vt = c.version(b"t")
    t0 = time.monotonic()
    assert c.wait_changed(b"t", vt, 0.1) == (False, vt)
    assert time.monotonic() - t0 >= 0.1
    other = kvshm.Client(name)
    other.put(b"t", b"2")
    changed, nv = c.wait_changed(b"t", vt, 5.0)
    assert changed and nv == c.version(b"t")
    # Expiry.
    c.put(b"ttl", b"x", ttl=0.05)
    left = c.ttl(b"ttl")
    assert left is not None and 0 < left <= 0.05
    assert c.ttl(b"t") == -1.0 and c.ttl(b"missing") is None
    assert c.persist(b"ttl") and c.ttl(b"ttl") == -1.0
    assert c.expire(b"ttl", 0.05) and not c.expire(b"missing", 1)
    time.sleep(0.07)
    assert c.get(b"ttl") is None
    assert host.housekeeping() == 1
    # Eviction policy: the store's, seen by every client.
    assert c.eviction == "noeviction" and c.stats()["evicted"] == 0
    c.eviction = "allkeys-lru"
    assert other.eviction == "allkeys-lru" and other.stats()["eviction"] == "allkeys-lru"
    with pytest.raises(kvshm.InvalidArgument):
        c.eviction = "allkeys-lfu"
    c.eviction = "noeviction"


def test_errors_are_distinct_classes(store):
    name, _ = store
    small = f"{name}-small"
    with kvshm.Host.create(small, max_key_len=8, max_value_len=16, max_size=4 << 20) as h:
        c = h.client()
        with pytest.raises(kvshm.KeyTooLong):
            c.put(b"123456789", b"v")
        with pytest.raises(kvshm.ValueTooLong):
            c.put(b"k", b"x" * 17)
        with pytest.raises(kvshm.AlreadyExists):
            kvshm.Host.create(small)
        with pytest.raises(kvshm.HostRunning):
            kvshm.Host.open_existing(small)
        ro = kvshm.Client(small, read_only=True)
        with pytest.raises(kvshm.InvalidArgument):
            ro.put(b"k", b"v")
        with pytest.raises(TypeError):
            c.put(12, b"v")
    with pytest.raises(kvshm.NotFound):
        kvshm.Client("no-such-store-python")
    for cls in (kvshm.KeyTooLong, kvshm.StoreFull, kvshm.Conflict, kvshm.Forked):
        assert issubclass(cls, kvshm.Error)


def test_the_mapping_view(store):
    name, _ = store
    s = kvshm.Store(name)
    s[b"a"] = b"1"
    s["b"] = "2"
    assert s[b"a"] == b"1" and b"b" in s and len(s) == 2
    assert sorted(s) == [b"a", b"b"]
    del s[b"a"]
    with pytest.raises(KeyError):
        s[b"a"]
    with pytest.raises(KeyError):
        del s[b"a"]
    assert s.get(b"a", b"default") == b"default"
    s.update({b"x": b"y"})
    assert dict(s.items()) == {b"b": b"2", b"x": b"y"}


def _worker(args):
    """100k/4 mixed operations on the worker's own keys, checked against a local model."""
    client, wid, n = args
    rng = random.Random(wid)
    model = {}
    for i in range(n):
        k = f"w{wid}-{rng.randrange(500)}".encode()
        op = rng.randrange(10)
        if op < 5:
            assert client.get(k) == model.get(k), (k, client.get(k), model.get(k))
        elif op < 9:
            v = f"{wid}:{i}".encode()
            client.put(k, v)
            model[k] = v
        else:
            assert client.remove(k) == (k in model)
            model.pop(k, None)
        if i % 97 == 0:
            client.incr(b"shared-counter")
    return wid, {k.decode(): v.decode() for k, v in model.items()}, n // 97 + (1 if n % 97 else 0)


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_a_pool_of_four_workers_checks_every_result(store, method):
    name, _ = store
    c = kvshm.Client(name)
    n = 25_000 if method == "fork" else 5_000
    with mp.get_context(method).Pool(4) as pool:
        results = pool.map(_worker, [(c, w, n) for w in range(4)])
    incrs = 0
    for wid, model, k in results:
        incrs += k
        for key, v in model.items():
            assert c.get(key) == v.encode()
    assert c.incr(b"shared-counter", 0) == incrs
    assert c.verify() == []


def test_an_inherited_client_raises_in_the_forked_child(store):
    name, _ = store
    c = kvshm.Client(name)
    c.put(b"parent", b"1")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            try:
                c.get(b"parent")
            except kvshm.Forked:
                mine = kvshm.Client(name)
                mine.put(b"child", b"2")
                code = 0 if mine.get(b"parent") == b"1" else 2
        finally:
            os.write(w, bytes([code]))
            os._exit(code)
    os.close(w)
    assert os.read(r, 1) == b"\x00"
    os.waitpid(pid, 0)
    assert c.get(b"child") == b"2"
    assert c.put(b"parent", b"3") is None  # the parent's client is unaffected


def _killable_writer(name, wid):
    c = kvshm.Client(name)
    i = 0
    while True:
        c.put_many({f"k{wid}-{i % 50}".encode(): f"{i}".encode(), b"last": f"{wid}:{i}".encode()})
        c.incr(b"count")
        i += 1


def test_workers_killed_in_a_loop_leave_a_healthy_store(store):
    name, _ = store
    c = kvshm.Client(name)
    ctx = mp.get_context("fork")
    for round_ in range(20):
        p = ctx.Process(target=_killable_writer, args=(name, round_ % 3))
        p.start()
        time.sleep(0.02 + random.random() * 0.03)
        os.kill(p.pid, signal.SIGKILL)
        p.join()
        assert p.exitcode == -signal.SIGKILL
        # Every read works at once: a dead writer never blocks others.
        c.get(b"last")
        c.put(b"survivor", f"{round_}".encode())
    assert c.verify() == []
    assert c.get(b"survivor") == b"19"
    assert int(c.get(b"count") or b"0") > 0


def test_rust_and_python_share_keys_byte_for_byte(store):
    kvcli = os.environ.get("KVCLI")
    if not kvcli:
        pytest.skip("KVCLI (path of the kvcli binary) not set")
    name, _ = store
    c = kvshm.Client(name)
    value = bytes(range(256)) * 4
    subprocess.run([kvcli, "--name", name, "set", "from-rust", "-"], input=value, check=True,
                   capture_output=True)
    assert c.get(b"from-rust") == value
    c.put(b"from-python", value[::-1])
    out = subprocess.run([kvcli, "--name", name, "get", "from-python"], check=True,
                         capture_output=True).stdout
    assert out == value[::-1]
    assert subprocess.run([kvcli, "--name", name, "incr", "n", "5"], check=True,
                          capture_output=True).stdout == b"5\n"
    assert c.incr(b"n") == 6


def test_random_operations_match_a_dict(store):
    name, _ = store
    c = kvshm.Client(name)
    rng = random.Random(20261130)
    model = {}
    for _ in range(20_000):
        k = bytes([rng.randrange(256) for _ in range(rng.randrange(1, 6))])
        op = rng.randrange(6)
        if op == 0:
            v = bytes([rng.randrange(256) for _ in range(rng.randrange(0, 300))])
            c.put(k, v)
            model[k] = v
        elif op == 1:
            assert c.remove(k) == (k in model)
            model.pop(k, None)
        elif op == 2:
            assert c.put_if_absent(k, b"pa") == (k not in model)
            model.setdefault(k, b"pa")
        elif op == 3:
            ks = list(model)[:3] + [k]
            assert c.get_many(ks) == [model.get(x) for x in ks]
        else:
            assert c.get(k) == model.get(k)
    assert len(c) == len(model)
    assert dict(c.scan()) == model
    assert c.verify() == []
