#!/usr/bin/env bash
# Gate: every Rust test (unit, cross-process, crash points, storm, fuzz, C and C++ programs),
# in a debug build (overflow checks, debug asserts) and a release build (real timings, the
# optimiser's reorderings). `ci/test.sh debug` or `ci/test.sh release` runs one profile.
set -euo pipefail
# shellcheck source=ci/lib.sh
source "$(dirname "$0")/lib.sh"
profiles=(debug release)
[ $# -gt 0 ] && profiles=("$@")
for p in "${profiles[@]}"; do
  case "$p" in
    debug) cargo test --workspace ;;
    release) cargo test --workspace --release ;;
    *) echo "ci/test.sh: unknown profile $p (debug, release)" >&2; exit 2 ;;
  esac
done
