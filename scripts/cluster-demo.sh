#!/usr/bin/env bash
# Three kvhost instances, each in its own network namespace (a stand-in for a machine, with
# its own address), each hosting its own store and serving it over RESP; twemproxy
# (Debian's nutcracker) in front of them with ketama hashing, listening on loopback. Drives
# redis-cli and redis-benchmark through the proxy and checks that every key lives on exactly
# one shard, and that a shard's local clients see its keys through shared memory.
#
#   sudo bash scripts/cluster-demo.sh          # needs root (ip netns), nutcracker, redis-tools
#
# Everything it creates (namespaces, veth pairs, processes, stores, files) is removed on exit,
# also when a step fails. What works through twemproxy and what does not: docs/RESP.md.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "cluster-demo: needs root for ip netns" >&2; exit 2; }
for t in ip nutcracker redis-cli redis-benchmark; do
  command -v "$t" >/dev/null || { echo "cluster-demo: $t is missing (ci/install-deps.sh)" >&2; exit 2; }
done
cargo build --quiet --release -p kvhost -p kvcli
kvhost="$(pwd)/target/release/kvhost"
kvcli="$(pwd)/target/release/kvcli"
tag="kvd$$"
work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  for i in 1 2 3; do
    ip netns del "${tag}n$i" 2>/dev/null || true
    ip link del "${tag}h$i" 2>/dev/null || true
    rm -f "/dev/shm/kvshm.${tag}s$i"
  done
  rm -rf "$work"
}
trap cleanup EXIT

echo "== three 'machines': network namespaces with their own addresses"
for i in 1 2 3; do
  ns="${tag}n$i"
  ip netns add "$ns"
  ip link add "${tag}h$i" type veth peer name "${tag}p$i"
  ip link set "${tag}p$i" netns "$ns"
  ip addr add "10.77.$i.1/24" dev "${tag}h$i"
  ip link set "${tag}h$i" up
  ip netns exec "$ns" ip addr add "10.77.$i.2/24" dev "${tag}p$i"
  ip netns exec "$ns" ip link set "${tag}p$i" up
  ip netns exec "$ns" ip link set lo up
  # A shard serves a non-loopback address: protected mode needs a password or an explicit no.
  ip netns exec "$ns" "$kvhost" --name "${tag}s$i" --resp "10.77.$i.2:6379" \
    --requirepass "demo-secret" --release-on-exit --log-file "$work/kvhost$i.log" >/dev/null &
  pids+=($!)
done
for i in 1 2 3; do
  for _ in $(seq 100); do
    redis-cli -h "10.77.$i.2" -a demo-secret --no-auth-warning ping 2>/dev/null | grep -q PONG && break
    sleep 0.1
  done
  echo "shard $i: kvhost on 10.77.$i.2:6379 (store ${tag}s$i): $(redis-cli -h "10.77.$i.2" -a demo-secret --no-auth-warning ping)"
done

echo "== twemproxy (nutcracker) on 127.0.0.1:22121, ketama over the three shards"
cat >"$work/nutcracker.yml" <<EOF
kvshm:
  listen: 127.0.0.1:22121
  hash: fnv1a_64
  distribution: ketama
  redis: true
  redis_auth: demo-secret
  auto_eject_hosts: false
  server_connections: 1
  servers:
   - 10.77.1.2:6379:1 shard1
   - 10.77.2.2:6379:1 shard2
   - 10.77.3.2:6379:1 shard3
EOF
nutcracker -t -c "$work/nutcracker.yml" >/dev/null 2>&1 || { echo "cluster-demo: bad nutcracker config" >&2; exit 1; }
nutcracker -c "$work/nutcracker.yml" -o "$work/nutcracker.log" -s 22222 &
pids+=($!)
for _ in $(seq 100); do
  redis-cli -p 22121 -a demo-secret --no-auth-warning ping 2>/dev/null | grep -q PONG && break
  sleep 0.1
done
cli() { redis-cli -p 22121 -a demo-secret --no-auth-warning "$@"; }

echo "== through the proxy"
fail() { echo "cluster-demo: FAILED: $*" >&2; exit 1; }
[ "$(cli set user:1 alice)" = OK ] || fail "SET"
[ "$(cli get user:1)" = alice ] || fail "GET"
[ "$(cli mset a 1 b 2 c 3 d 4)" = OK ] || fail "MSET (split per shard by the proxy)"
[ "$(cli mget a b c d nope | tr '\n' ' ')" = "1 2 3 4  " ] || fail "MGET"
[ "$(cli del a b)" = 2 ] || fail "DEL"
[ "$(cli incr visits)" = 1 ] || fail "INCR"
[ "$(cli set s v EX 100)" = OK ] || fail "SET EX"
[ "$(cli ttl s)" -gt 98 ] || fail "TTL"
echo "SET, GET, MSET, MGET, DEL, INCR, SET EX, TTL: ok"
echo "MULTI through the proxy: $(cli multi 2>&1 | head -1) (twemproxy does not forward transactions)"
echo "KEYS through the proxy: $(cli keys '*' 2>&1 | head -1)"

echo "== redis-benchmark through the proxy (10,000 keys)"
redis-benchmark -p 22121 -a demo-secret -t set,get -n 50000 -r 10000 -c 20 -q 2>/dev/null \
  | grep -oE "[A-Z]+: [0-9.]+ requests per second.*"
cli set bench:probe x >/dev/null

echo "== every key on exactly one shard; a shard's keys are local through shared memory"
total=0
declare -A seen=()
for i in 1 2 3; do
  keys="$("$kvcli" --name "${tag}s$i" keys '*')"
  n=$(printf '%s\n' "$keys" | grep -c . || true)
  echo "shard $i holds $n keys ($("$kvcli" --name "${tag}s$i" get user:1 2>/dev/null || echo 'no user:1'))"
  total=$((total + n))
  while IFS= read -r k; do
    [ -n "$k" ] || continue
    [ -z "${seen[$k]:-}" ] || fail "key $k on two shards"
    seen[$k]=1
  done <<<"$keys"
  [ "$n" -gt 0 ] || fail "shard $i got no keys (ketama should spread 10,000)"
done
for k in user:1 bench:probe; do
  [ -n "${seen[$k]:-}" ] || fail "$k, written through the proxy, is on no shard"
done
echo "$total keys in all, each on one shard"
echo "cluster demo: ok"
