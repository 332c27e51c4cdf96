#!/usr/bin/env bash
# Gate: the benchmarks build, and the peer comparison harness runs in --quick mode against
# kvshm, its C ABI and the in-process maps (it fails on any get that misses a loaded key).
# Peers (LMDB, RocksDB, Redis...) are not built here: scripts/bench-compare.sh does that.
set -euo pipefail
# shellcheck source=ci/lib.sh
source "$(dirname "$0")/lib.sh"
cargo bench --workspace --no-run
cargo build --release -p kvshm-ffi
cargo run --release -p kvshm-compare -- --quick --systems kvshm,kvshm-c,hashmap,dashmap \
  --json target/compare-quick.json
