"""kvhost's RESP server driven by the `redis` client from PyPI, as an application would use it,
in RESP2 and RESP3; keys cross to `import kvshm` (shared memory) and back."""

import time

import pytest
import redis

import kvshm

@pytest.fixture(scope="module")
def host(resp_host):
    return resp_host


@pytest.fixture(params=[2, 3], ids=["resp2", "resp3"])
def r(host, request):
    _, port = host
    c = redis.Redis(host="127.0.0.1", port=port, protocol=request.param)
    c.flushdb()
    yield c
    c.close()


def test_strings_and_counters(r):
    assert r.ping() is True
    assert r.set("k", "v") is True
    assert r.get("k") == b"v"
    assert r.set("k", "w", nx=True) is None
    assert r.set("k", "w", xx=True, get=True) == b"v"
    assert r.incr("n") == 1
    assert r.incrby("n", 41) == 42
    assert r.decr("n") == 41
    assert r.incrbyfloat("f", 1.5) == 1.5
    assert r.append("k", "xyz") == 4
    assert r.getrange("k", 0, 1) == b"wx"
    assert r.mset({"a": 1, "b": 2}) is True
    assert r.mget("a", "b", "nope") == [b"1", b"2", None]
    assert r.msetnx({"a": 9, "c": 3}) is False
    assert r.getdel("a") == b"1"
    assert r.exists("a", "b") == 1
    with pytest.raises(redis.ResponseError, match="not an integer"):
        r.incr("k")


def test_expiry(r):
    r.set("t", "v", ex=100)
    assert 98 <= r.ttl("t") <= 100
    assert r.pexpire("t", 50) is True
    time.sleep(0.1)
    assert r.get("t") is None
    r.set("p", "v", px=100000)
    assert r.persist("p") is True
    assert r.ttl("p") == -1
    assert r.ttl("none") == -2
    assert r.expire("p", 100, nx=True) is True
    assert r.expire("p", 50, gt=True) is False


def test_binary_keys_and_values(r):
    key = bytes(range(256))
    val = bytes(range(255, -1, -1)) * 100
    r.set(key, val)
    assert r.get(key) == val
    assert r.strlen(key) == len(val)


def test_pipeline_and_transactions(r):
    p = r.pipeline(transaction=False)
    for i in range(1000):
        p.set(f"pl:{i}", i)
    assert all(p.execute())
    assert r.dbsize() == 1000
    with r.pipeline(transaction=True) as p:
        p.incr("tx").incr("tx").get("tx")
        assert p.execute() == [1, 2, b"2"]

    # redis-py's optimistic-locking helper (WATCH/MULTI/EXEC, retried on WatchError).
    def double(pipe):
        v = int(pipe.get("dbl") or 1)
        pipe.multi()
        pipe.set("dbl", v * 2)

    for _ in range(5):
        r.transaction(double, "dbl")
    assert r.get("dbl") == b"32"


def test_watch_aborts_when_another_client_writes(r, host):
    _, port = host
    other = redis.Redis(host="127.0.0.1", port=port)
    with r.pipeline() as p:
        p.watch("w")
        other.set("w", "changed")
        p.multi()
        p.set("w", "mine")
        with pytest.raises(redis.WatchError):
            p.execute()
    assert r.get("w") == b"changed"


def test_scan_iter_sees_every_key_once(r):
    for i in range(5000):
        r.set(f"s:{i}", "x")
    r.set("other", "x")
    keys = list(r.scan_iter(match="s:*", count=100))
    assert len(keys) == 5000 and len(set(keys)) == 5000
    assert sorted(r.keys("s:1?9")) == sorted(f"s:1{d}9".encode() for d in range(10))


def test_server_commands_parse(r):
    info = r.info()
    assert info["redis_version"] and info["connected_clients"] >= 1
    assert "used_memory" in r.info("memory")
    assert r.client_setname("pytest") is True
    assert r.client_getname() in ("pytest", b"pytest")
    assert any(c["name"] == "pytest" for c in r.client_list())
    assert r.config_get("maxmemory")["maxmemory"] != ""
    t = r.time()
    assert abs(t[0] - time.time()) < 5
    with pytest.raises(redis.ResponseError, match="unknown command"):
        r.execute_command("LPUSH", "l", "x")


def test_keys_cross_to_shared_memory(r, host):
    name, _ = host
    local = kvshm.Store(name)
    r.set(b"from-redis-py", b"\x00\x01binary")
    assert local[b"from-redis-py"] == b"\x00\x01binary"
    local[b"from-kvshm"] = b"local write"
    assert r.get(b"from-kvshm") == b"local write"
    del local[b"from-redis-py"]
    assert r.exists(b"from-redis-py") == 0
