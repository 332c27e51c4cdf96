#!/usr/bin/env bash
# Gate: loom model checks of the lock word, the seqlock and the transaction states. The
# preemption bound keeps the search finite and short (LOOM_MAX_PREEMPTIONS overrides it).
set -euo pipefail
# shellcheck source=ci/lib.sh
source "$(dirname "$0")/lib.sh"
export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-3}"
RUSTFLAGS="--cfg kvshm_loom" CARGO_TARGET_DIR=target/loom cargo test -p kvshm --release --lib loom
