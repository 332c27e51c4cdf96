#!/usr/bin/env bash
# Installs the system tools the tests drive as a user would: redis-server (the reference the
# RESP server is compared with), redis-tools (redis-cli, redis-benchmark), netcat (inline
# commands as typed into nc/telnet), nutcracker (twemproxy, for the cluster demo) and iproute2
# (its network namespaces), chromium (the dashboard test, headless). Idempotent; needs root or sudo when something is missing.
set -euo pipefail
pkgs=(redis-server redis-tools netcat-openbsd nutcracker iproute2 chromium)
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian starts redis-server as a service on install; the tests start their own on free
  # ports, so stop this one (nothing of ours runs yet).
  if command -v systemctl >/dev/null 2>&1; then
    systemctl stop redis-server nutcracker 2>/dev/null || true
  fi
  pkill -x redis-server 2>/dev/null || true
  pkill -x nutcracker 2>/dev/null || true
fi
echo "test tools: $(redis-server --version | cut -d' ' -f3), $(redis-cli --version), nc $(command -v nc)"
