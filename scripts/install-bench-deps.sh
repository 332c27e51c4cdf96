#!/usr/bin/env bash
# Installs what the peer comparison (kvshm-compare --features peers) needs: the peers' Debian
# libraries and servers, and the C toolchain the leveldb crate builds with. Not needed for the
# main test command; CI runs the harness against kvshm and the in-process reference only.
set -euo pipefail
pkgs=(redis-server memcached librocksdb-dev libleveldb-dev libsqlite3-dev cmake clang pkg-config)
missing=()
for p in "${pkgs[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# The Debian servers start themselves as services on install; the harness starts its own on
# other ports, so stop them to keep the machine quiet while measuring.
for s in redis-server memcached; do
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$s" 2>/dev/null; then
        systemctl stop "$s" || true
    fi
    pkill -x "$s" 2>/dev/null || true
done
echo "bench peers installed: ${pkgs[*]}"
