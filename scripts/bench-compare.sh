#!/usr/bin/env bash
# The full peer comparison: installs the peers (Debian packages), builds the C ABI library and
# the harness with every peer, and runs it. Arguments go to the harness, e.g.
#   bash scripts/bench-compare.sh                      # full run (~15-20 min on 2 cores)
#   bash scripts/bench-compare.sh --quick              # a minute
#   bash scripts/bench-compare.sh --json results.json  # also write every cell as JSON
# Run it on a quiet machine: other load moves every figure.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-bench-deps.sh
cargo build --release -p kvshm-ffi
cargo build --release -p kvshm-compare --features peers
exec ./target/release/kvshm-compare "$@"
