#!/usr/bin/env bash
# Gate: the library's demo example runs (host, clients in child processes, release).
set -euo pipefail
# shellcheck source=ci/lib.sh
source "$(dirname "$0")/lib.sh"
cargo run --release -p kvshm --example demo
