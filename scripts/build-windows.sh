#!/usr/bin/env bash
# Cross-build the Windows artefacts here: `scripts/build-windows.sh [release|debug]` puts
# kvshm.dll, its import libraries (libkvshm.dll.a for mingw, kvshm.lib + kvshm.def for MSVC,
# made with dlltool), kvshm.h, kvhost.exe and kvcli.exe into target/windows/<profile>/.
# Needs the Rust target and mingw (installed here if missing: rustup, Debian's
# gcc-mingw-w64-x86-64).
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${1:-release}"
target=x86_64-pc-windows-gnu
if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
  rustup target add "$target"
fi
if ! command -v x86_64-w64-mingw32-gcc >/dev/null || ! command -v x86_64-w64-mingw32-dlltool >/dev/null; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends gcc-mingw-w64-x86-64 binutils-mingw-w64-x86-64 >/dev/null
fi
flag=()
[ "$profile" = release ] && flag=(--release)
cargo build "${flag[@]}" --target "$target" -p kvshm-ffi -p kvhost -p kvcli
built="target/$target/$profile"
out="target/windows/$profile"
mkdir -p "$out"
cp "$built/kvshm.dll" "$built/libkvshm.dll.a" "$built/kvhost.exe" "$built/kvcli.exe" \
  bindings/ffi/include/kvshm.h "$out/"
# The exports of the DLL, as a .def file, and an MSVC import library made from it.
{
  echo "LIBRARY kvshm.dll"
  echo "EXPORTS"
  x86_64-w64-mingw32-objdump -p "$out/kvshm.dll" |
    sed -n '/\[Ordinal\/Name Pointer\] Table/,/^$/p' | awk '/\]/ && $NF ~ /^kvshm_/ {print "    " $NF}'
} >"$out/kvshm.def"
x86_64-w64-mingw32-dlltool -d "$out/kvshm.def" -D kvshm.dll -l "$out/kvshm.lib" -m i386:x86-64
n=$(grep -c '^    kvshm_' "$out/kvshm.def")
hdr=$(grep -cE '^kvshm_status kvshm_|^const char \*kvshm_|^size_t kvshm_' bindings/ffi/include/kvshm.h)
if [ "$n" -ne "$hdr" ]; then
  echo "build-windows: kvshm.dll exports $n kvshm_ functions, kvshm.h declares $hdr" >&2
  exit 1
fi
echo "windows artefacts in $out ($n exported functions):"
ls -l "$out"
