#!/usr/bin/env bash
# Gate: lints, warnings are errors, every target of every crate.
set -euo pipefail
# shellcheck source=ci/lib.sh
source "$(dirname "$0")/lib.sh"
cargo clippy --workspace --all-targets -- -D warnings
