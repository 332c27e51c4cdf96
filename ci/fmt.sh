#!/usr/bin/env bash
# Gate: formatting (cargo fmt --check over the workspace).
set -euo pipefail
# shellcheck source=ci/lib.sh
source "$(dirname "$0")/lib.sh"
cargo fmt --all -- --check
