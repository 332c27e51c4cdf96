#!/usr/bin/env bash
# cargo's runner for --target x86_64-pc-windows-gnu (CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER):
# runs a test binary under Wine, in the prefix ci/windows.sh made, with the test-only
# ProcessPrng shim (bcryptprimitives.dll, see bcryptprimitives.c) next to it. Ten minutes at
# most per binary. ci/windows/test.sh sets it up.
set -euo pipefail
exe="$1"
shift
: "${KVSHM_WINE_SHIM:?set by ci/windows.sh}"
dir="$(dirname "$exe")"
[ -f "$dir/bcryptprimitives.dll" ] || cp "$KVSHM_WINE_SHIM" "$dir/"
# Test binaries live in deps/; the binaries they start (CARGO_BIN_EXE_*) one level up.
if [ "$(basename "$dir")" = deps ] && [ ! -f "$dir/../bcryptprimitives.dll" ]; then
  cp "$KVSHM_WINE_SHIM" "$dir/.."
fi
exec timeout 600 wine "$exe" "$@"
