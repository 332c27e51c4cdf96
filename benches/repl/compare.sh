#!/usr/bin/env bash
# Replication, kvhost -> kvhost next to redis-server -> redis-server, measured the same way in
# one run (issue 18), on loopback:
#   1. full sync of N keys of 100 bytes (default 1,000,000): from REPLICAOF to the replica
#      holding every key;
#   2. throughput: redis-benchmark SET (100-byte values, -P 16) against the primary while the
#      replica follows; then how long the replica needs to catch up (offsets equal);
#   3. lag at a fixed rate: SET on the primary over RESP, GET polled on the replica
#      (kvshm-repl-probe resp-lag), p50/p99; for kvhost also local writes through shared
#      memory timed until the replica's store has them (kvshm-repl-probe lag).
#
#   bash benches/repl/compare.sh [KEYS]      (needs redis-server, redis-cli, redis-benchmark)
set -euo pipefail
cd "$(dirname "$0")/../.."
keys="${1:-1000000}"
cargo build --quiet --release -p kvhost -p kvcli
cargo build --quiet --release -p kvshm-tests --bin kvshm-repl-probe
bin="$(pwd)/target/release"
work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
echo "machine: $(nproc) cpus ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)), $(free -g | awk '/Mem:/{print $2}') GiB, kernel $(uname -r)"
echo "redis: $(redis-server --version | awk '{print $3}')"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
field() { redis-cli -p "$1" info replication | tr -d '\r' | sed -n "s/^$2://p"; }
wait_up() {
  for _ in $(seq 6000); do
    [ "$(field "$1" master_link_status)" = up ] && return 0
    sleep 0.01
  done
  echo "replica on $1 never came up" >&2
  exit 1
}
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.2f", b-a}'; }

run() {
  local sys="$1" pp pr t
  pp="$(free_port)"
  pr="$(free_port)"
  if [ "$sys" = kvhost ]; then
    "$bin/kvhost" --dir "$work" --name p --changelog 256MiB --resp "127.0.0.1:$pp" \
      --log-file "$work/p.log" >/dev/null &
    pids+=($!)
    sleep 0.5
    "$bin/kvshm-repl-probe" fill "$work" p "$keys" >/dev/null
    start_replica() {
      "$bin/kvhost" --dir "$work" --name r --changelog 256MiB --resp "127.0.0.1:$pr" \
        --replica-of "127.0.0.1:$pp" --log-file "$work/r.log" >/dev/null &
      pids+=($!)
    }
  else
    redis-server --port "$pp" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" \
      --enable-debug-command yes --repl-backlog-size 16mb >/dev/null &
    pids+=($!)
    sleep 0.5
    redis-cli -p "$pp" debug populate "$keys" key 100 >/dev/null
    start_replica() {
      redis-server --port "$pr" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" \
        --replicaof 127.0.0.1 "$pp" >/dev/null &
      pids+=($!)
    }
  fi
  t="$(now)"
  start_replica
  for _ in $(seq 6000); do
    redis-cli -p "$pr" ping >/dev/null 2>&1 && break
    sleep 0.01
  done
  wait_up "$pr"
  until [ "$(redis-cli -p "$pr" dbsize)" -ge "$keys" ]; do sleep 0.01; done
  echo "$sys: full sync of $keys keys x 100 B: $(since "$t") s"
  local rps
  rps="$(redis-benchmark -p "$pp" -t set -n 2000000 -r 1000000 -d 100 -P 16 -q 2>/dev/null |
    tr '\r' '\n' | sed -n 's/^SET: \([0-9.]*\) requests per second.*/\1/p' | tail -1)"
  t="$(now)"
  until [ "$(field "$pp" master_repl_offset)" = "$(field "$pr" slave_repl_offset)" ]; do sleep 0.005; done
  echo "$sys: redis-benchmark SET -P 16 on the primary: $rps writes/s; the replica caught up $(since "$t") s after the last"
  # Three runs each: on this VM one run moves a lot (scheduling of 2 vCPUs).
  for _ in 1 2 3; do
    echo "$sys: $("$bin/kvshm-repl-probe" resp-lag "$pp" "$pr" 20000 20000)"
  done
  if [ "$sys" = kvhost ]; then
    for n in 20000 20000 20000 200000; do
      echo "$sys: local writes (shared memory): $("$bin/kvshm-repl-probe" lag "$work" p "$work" r "$n" "$n")"
    done
  fi
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
  rm -f /dev/shm/kvshm.p /dev/shm/kvshm.r "$work"/kvshm.* 2>/dev/null || true
}
run kvhost
run redis
