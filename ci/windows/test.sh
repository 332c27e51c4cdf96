#!/usr/bin/env bash
# `cargo test` of the Windows build under Wine, with cargo's arguments:
#   bash ci/windows/test.sh -p kvshm --lib segment::
# Needs the target, mingw and wine (ci/windows.sh installs them). Builds the test-only
# ProcessPrng shim once; the Wine prefix lives in the target directory.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
target_dir="$(realpath -m "${CARGO_TARGET_DIR:-$here/../../target}")"
export WINEPREFIX="${WINEPREFIX:-$target_dir/wine-prefix}" WINEDEBUG=-all
export KVSHM_WINE_SHIM="$target_dir/bcryptprimitives.dll"
mkdir -p "$target_dir"
[ -f "$KVSHM_WINE_SHIM" ] ||
  x86_64-w64-mingw32-gcc -shared -O2 -o "$KVSHM_WINE_SHIM" "$here/bcryptprimitives.c" -ladvapi32
export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER="$here/wine-run.sh"
cargo test --target x86_64-pc-windows-gnu "$@"
