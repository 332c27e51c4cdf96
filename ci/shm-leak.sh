#!/usr/bin/env bash
# Gate: no test leaves a store behind in /dev/shm.
#   ci/shm-leak.sh record FILE   remember the test stores that exist now
#   ci/shm-leak.sh check FILE    fail if a test store exists that was not in FILE
# Test stores are named kvshm.{t-,unit-,bench-,demo-,compare-}*.
set -euo pipefail
stores() { find /dev/shm -maxdepth 1 -regextype posix-extended -regex '.*/kvshm\.(t-|unit-|bench-|demo-|compare-).*' -printf '%f\n' 2>/dev/null | sort || true; }
case "${1:-}" in
  record) stores >"$2" ;;
  check)
    leftover="$(comm -13 "$2" <(stores) | grep . || true)"
    if [ -n "$leftover" ]; then
      echo "tests left stores behind in /dev/shm: $leftover" >&2
      exit 1
    fi
    ;;
  *) echo "usage: ci/shm-leak.sh record|check FILE" >&2; exit 2 ;;
esac
