#!/usr/bin/env bash
# Primary/backup across two "machines": each a network namespace with its own address on a
# private veth link between them (10.78.0.x), each with its own kvhost, store directory and
# snapshot file.
# Local processes write the primary's store through shared memory; the replica follows over
# RESP replication (AUTH on both). Then the primary is killed (-9) under load, the replica
# promoted, the acknowledged writes it lacks counted, the old primary brought back as the new
# one's replica, and both restarted from their snapshots.
#
#   sudo bash scripts/replication-demo.sh      # needs root (ip netns) and redis-tools
#   KVSHM_DEMO_WRITES=200000 KVSHM_DEMO_RATE=50000 ... for a longer lag measurement
#
# Prints `demo: lag ...` (replication lag of acknowledged local writes, one clock for both
# ends: the probe reads both stores through shared memory) and `demo: failover ...`. Everything
# it creates is removed on exit, also when a step fails.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "replication-demo: needs root for ip netns" >&2; exit 2; }
for t in ip redis-cli; do
  command -v "$t" >/dev/null || { echo "replication-demo: $t is missing (ci/install-deps.sh)" >&2; exit 2; }
done
cargo build --quiet --release -p kvhost -p kvcli
cargo build --quiet --release -p kvshm-tests --bin kvshm-repl-probe
bin="$(pwd)/target/release"
writes="${KVSHM_DEMO_WRITES:-20000}"
rate="${KVSHM_DEMO_RATE:-20000}"
tag="kvr$$"
work="$(mktemp -d)"
pw="demo-secret"
declare -A pid=()
cleanup() {
  for p in "${pid[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for p in "${pid[@]}"; do wait "$p" 2>/dev/null || true; done
  # Deleting a namespace deletes the veth end in it, and with it the pair.
  for m in a b; do ip netns del "${tag}$m" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

addr_a=10.78.0.1
addr_b=10.78.0.2
echo "== two 'machines': namespaces ${tag}a ($addr_a) and ${tag}b ($addr_b) on one private link"
# One veth pair between the two namespaces: nothing of the host's network is touched.
ip netns add "${tag}a"
ip netns add "${tag}b"
ip link add "${tag}va" netns "${tag}a" type veth peer name "${tag}vb" netns "${tag}b"
for m in a b; do
  addr_var="addr_$m"
  ip netns exec "${tag}$m" ip addr add "${!addr_var}/24" dev "${tag}v$m"
  ip netns exec "${tag}$m" ip link set "${tag}v$m" up
  ip netns exec "${tag}$m" ip link set lo up
  mkdir -p "$work/$m"
done

# kvhost on machine $1 ($2 = its address), more flags after.
start() {
  local m="$1" addr="$2"
  shift 2
  ip netns exec "${tag}$m" "$bin/kvhost" --dir "$work/$m" --name demo --stripes 256 \
    --changelog 64MiB --resp "$addr:6379" --requirepass "$pw" --masterauth "$pw" \
    --snapshot "$work/$m/demo.snap" --log-file "$work/$m/kvhost.log" "$@" >/dev/null &
  pid[$m]=$!
  for _ in $(seq 200); do
    cli "$m" "$addr" ping 2>/dev/null | grep -q PONG && return 0
    sleep 0.05
  done
  echo "kvhost on $m did not start:" >&2
  tail -5 "$work/$m/kvhost.log" >&2
  exit 1
}
cli() {
  local m="$1" addr="$2"
  shift 2
  ip netns exec "${tag}$m" redis-cli -h "$addr" -a "$pw" --no-auth-warning "$@"
}
field() { tr -d '\r' | sed -n "s/^$1://p"; }
wait_link() {
  local m="$1" addr="$2"
  for _ in $(seq 400); do
    [ "$(cli "$m" "$addr" info replication | field master_link_status)" = up ] && return 0
    sleep 0.05
  done
  echo "the replica on $m never linked up" >&2
  tail -5 "$work/$m/kvhost.log" >&2
  exit 1
}
same() {
  local na nb
  for _ in $(seq 200); do
    na="$(cli a "$addr_a" dbsize)"
    nb="$(cli b "$addr_b" dbsize)"
    [ "$na" = "$nb" ] && { echo "$na"; return 0; }
    sleep 0.05
  done
  echo "the stores differ: $na keys on a, $nb on b" >&2
  exit 1
}

echo "== primary on a, replica on b (--replica-of $addr_a:6379)"
start a "$addr_a"
"$bin/kvcli" --dir "$work/a" --name demo set before-replica "written before b existed" >/dev/null
start b "$addr_b" --replica-of "$addr_a:6379"
wait_link b "$addr_b"
[ "$(cli b "$addr_b" get before-replica)" = "written before b existed" ]
echo "b is a replica: $(cli b "$addr_b" role | head -1), link up; a full sync brought the existing key"
out="$(cli b "$addr_b" set x 1 2>&1 || true)"
echo "b refuses writes: $out"
case "$out" in READONLY*) ;; *) echo "expected READONLY" >&2; exit 1 ;; esac

echo "== replication lag: $writes local writes on a at $rate/s, each timed until b has it"
lag="$("$bin/kvshm-repl-probe" lag "$work/a" demo "$work/b" demo "$writes" "$rate")"
echo "demo: $lag"
echo "keys on both: $(same)"

echo "== failover: kill -9 the primary (and its writer) under load, promote b"
ack="$work/acks"
"$bin/kvshm-repl-probe" load "$work/a" demo "$ack" &
pid[load]=$!
sleep 1
# Every write acknowledged before a WAIT that returned 1 must survive the failover.
before_wait=$(wc -l <"$ack")
[ "$(cli a "$addr_a" wait 1 2000)" = 1 ]
sleep 0.5
kill -9 "${pid[a]}" "${pid[load]}"
wait "${pid[a]}" "${pid[load]}" 2>/dev/null || true
unset 'pid[a]' 'pid[load]'
cli b "$addr_b" replicaof no one >/dev/null
[ "$(cli b "$addr_b" role | head -1)" = master ]
missing="$("$bin/kvshm-repl-probe" missing "$work/b" demo "$ack")"
echo "demo: failover: $missing; acknowledged before a WAIT that returned 1: $before_wait"
case "$missing" in *" tail=yes"*) ;; *) echo "b lacks writes that later ones reached it after" >&2; exit 1 ;; esac
first="$(sed -n 's/.*first_missing=\([0-9]*\).*/\1/p' <<<"$missing")"
if [ -n "$first" ] && [ "$first" -lt "$before_wait" ]; then
  echo "a write acknowledged by WAIT is missing on b" >&2
  exit 1
fi
cli b "$addr_b" set after-failover yes >/dev/null

echo "== the old primary comes back as b's replica (its extra writes are replaced by b's data)"
start a "$addr_a" --replica-of "$addr_b:6379"
wait_link a "$addr_a"
[ "$(cli a "$addr_a" get after-failover)" = yes ]
echo "keys on both: $(same)"

echo "== snapshots and restarts keep the data on both sides"
keys="$(same)"
cli b "$addr_b" save >/dev/null
kill "${pid[a]}" "${pid[b]}"
wait "${pid[a]}" "${pid[b]}" 2>/dev/null || true
unset 'pid[a]' 'pid[b]'
"$bin/kvhost" release demo --dir "$work/a" >/dev/null
"$bin/kvhost" release demo --dir "$work/b" >/dev/null
start b "$addr_b"
start a "$addr_a" --replica-of "$addr_b:6379"
wait_link a "$addr_a"
[ "$(cli b "$addr_b" dbsize)" = "$keys" ] || { echo "b lost keys over its snapshot" >&2; exit 1; }
echo "keys on both after restarting from snapshots: $(same)"
echo "demo: ok"
