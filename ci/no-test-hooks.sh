#!/usr/bin/env bash
# Gate: test hooks do not ship. The crash points (feature `crash-points`, which SIGKILL a
# process when KVSHM_CRASH_AT is set) are enabled only through a dev-dependency of the tests
# crate, so neither `cargo build --release` nor `cargo build --release --workspace` may put
# them into kvhost, kvcli or libkvshm.so.
set -euo pipefail
# shellcheck source=ci/lib.sh
source "$(dirname "$0")/lib.sh"
for build in "" "--workspace"; do
  # shellcheck disable=SC2086 # an empty $build adds no argument
  cargo build --release $build
  for bin in kvhost kvcli libkvshm.so; do
    if grep -q -a KVSHM_CRASH_AT "target/release/$bin"; then
      echo "target/release/$bin (cargo build --release $build) contains the crash-point hook" >&2
      exit 1
    fi
  done
done
echo "no crash-point hook in release binaries"
