#!/usr/bin/env bash
# Gate (Windows): kvshm.dll, kvhost.exe and kvcli.exe cross-built here (x86_64-pc-windows-gnu,
# Debian's mingw) and run under Wine:
#   1. the kvshm unit tests and the portable cross-process tests (tests/portable: processes
#      sharing a store, clients terminated inside a put at each crash point of the put path,
#      writers terminated at random, a host restart);
#   2. the C test program built with mingw against kvshm.dll (CreateProcess children,
#      TerminateProcess in the middle of writes);
#   3. kvhost.exe and kvcli.exe end to end: set/get/stats from other processes, redis-cli
#      from Linux to kvhost.exe's RESP port, the host killed and restarted with the data kept,
#      a snapshot written and loaded, release.
# Wine 8 lacks ProcessPrng (bcryptprimitives.dll), which Rust's std imports: a test-only shim
# (ci/windows/bcryptprimitives.c) goes next to the binaries. Installs the target, mingw and
# wine if missing; if they cannot be had, says so loudly and skips.
set -euo pipefail
# shellcheck source=ci/lib.sh
source "$(dirname "$0")/lib.sh"
target=x86_64-pc-windows-gnu
skip() {
  echo "########################################################################"
  echo "## WINDOWS GATE SKIPPED: $*"
  echo "########################################################################"
  exit 0
}
if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
  rustup target add "$target" || skip "the Rust target $target cannot be installed"
fi
if ! command -v wine >/dev/null || ! command -v x86_64-w64-mingw32-gcc >/dev/null; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  { $sudo apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
      gcc-mingw-w64-x86-64 binutils-mingw-w64-x86-64 wine wine64 >/dev/null; } ||
    skip "wine or mingw cannot be installed"
fi
command -v wine >/dev/null || skip "no wine after installing it"

echo "-- 0. clippy of the Windows code (segment/windows.rs and every cfg(windows) branch)"
cargo clippy --target "$target" -p kvshm -p kvhost -p kvcli -p kvshm-ffi -p kvshm-portable-tests \
  --all-targets -- -D warnings
bash scripts/build-windows.sh debug
root="$PWD"
dist="$root/target/windows/debug"
export WINEPREFIX="$root/target/wine-prefix" WINEDEBUG=-all
shim="$root/target/bcryptprimitives.dll"
x86_64-w64-mingw32-gcc -shared -O2 -o "$shim" ci/windows/bcryptprimitives.c -ladvapi32
cp "$shim" "$dist/"
stop_wine() { wineserver -k 2>/dev/null || true; }
trap stop_wine EXIT
wine cmd /c exit 2>/dev/null || true # create the prefix once, quietly
echo "wine: $(wine --version)"

echo "-- 1. kvshm unit tests and portable cross-process tests under Wine"
bash ci/windows/test.sh -p kvshm -p kvshm-portable-tests
echo "   what a contended lock costs here (polling waits; docs/ARCHITECTURE.md, Windows):"
cargo build --release --target "$target" -p kvshm-portable-tests
cp "$shim" "$root/target/$target/release/"
timeout 300 wine "$root/target/$target/release/kvshm-pbench.exe" 200000

echo "-- 2. the C test program (mingw, kvshm.dll) under Wine"
work="$(mktemp -d)"
trap 'stop_wine; rm -rf "$work"' EXIT
x86_64-w64-mingw32-gcc -std=c11 -Wall -Wextra -Werror -O1 -I bindings/ffi/include \
  bindings/ffi/tests/c/test_kvshm_windows.c -L "$dist" -l:libkvshm.dll.a \
  -o "$work/test_kvshm_windows.exe"
cp "$dist/kvshm.dll" "$shim" "$work/"
timeout 300 wine "$work/test_kvshm_windows.exe" "c-windows-$$"

echo "-- 3. kvhost.exe and kvcli.exe end to end under Wine"
name="e2e-$$"
port=$((20000 + $$ % 20000))
snap="$(winepath -w "$work/e2e.snap")"
cli() { timeout 60 wine "$dist/kvcli.exe" --name "$name" "$@"; }
start_host() {
  wine "$dist/kvhost.exe" --name "$name" --max-size 64MiB --resp "127.0.0.1:$port" \
    --snapshot "$snap" >"$work/host.log" 2>&1 &
  host_pid=$!
  for _ in $(seq 1 100); do
    if cli stats 2>/dev/null | grep -q '^host  *pid'; then
      return 0
    fi
    sleep 0.2
  done
  cat "$work/host.log"
  echo "kvhost.exe did not come up" >&2
  exit 1
}
expect() { # expect WHAT GOT WANT
  if [ "$2" != "$3" ]; then
    echo "windows e2e: $1: got '$2', want '$3'" >&2
    cat "$work/host.log" >&2
    exit 1
  fi
}
start_host
cli set greeting "hello from kvcli.exe" >/dev/null
expect "get" "$(cli get greeting)" "hello from kvcli.exe"
expect "stats keys" "$(cli stats | awk '$1 == "keys" {print $2}')" "1"
expect "redis-cli GET" "$(redis-cli -p "$port" get greeting)" "hello from kvcli.exe"
redis-cli -p "$port" set from-redis-cli "over RESP" >/dev/null
expect "kvcli get of a RESP write" "$(cli get from-redis-cli)" "over RESP"
expect "kvhost status" "$(timeout 60 wine "$dist/kvhost.exe" status "$name" | grep -c "^host: *running, pid")" "1"
# The host dies (its process killed, as TerminateProcess would): the data stays, a new host
# adopts it.
kill -9 "$host_pid"
wait "$host_pid" 2>/dev/null || true
expect "after the host died" "$(cli stats | awk '$1 == "host" {print $2, $3}')" "not running"
expect "get without a host" "$(cli get greeting)" "hello from kvcli.exe"
start_host
expect "get after a host restart" "$(cli get from-redis-cli)" "over RESP"
# A snapshot on request, then the store released and re-created from it.
cli snapshot >/dev/null
for _ in $(seq 1 100); do
  [ -s "$work/e2e.snap" ] && break
  sleep 0.2
done
[ -s "$work/e2e.snap" ] || { echo "no snapshot written" >&2; exit 1; }
kill -9 "$host_pid"
wait "$host_pid" 2>/dev/null || true
timeout 60 wine "$dist/kvhost.exe" release "$name"
if cli get greeting >/dev/null 2>&1; then
  echo "windows e2e: the store is still there after release" >&2
  exit 1
fi
start_host
expect "get after loading the snapshot" "$(cli get greeting)" "hello from kvcli.exe"
kill -9 "$host_pid"
wait "$host_pid" 2>/dev/null || true
timeout 60 wine "$dist/kvhost.exe" release "$name"
echo "windows: all passed"
