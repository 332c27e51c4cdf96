#!/usr/bin/env bash
# Build the KvShm wrapper and its tests with mono's mcs and run them against the freshly
# built libkvshm.so. Installs mono-devel (Debian) when mcs is missing.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
profile="${1:-debug}"
if ! command -v mcs >/dev/null || ! command -v mono >/dev/null; then
  echo "installing mono-devel for the C# tests"
  if [ "$(id -u)" -ne 0 ]; then echo "mono is missing and we are not root: apt-get install mono-devel" >&2; exit 1; fi
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mono-devel >/dev/null
fi
flag=""; [ "$profile" = release ] && flag="--release"
(cd "$root" && cargo build --quiet $flag -p kvshm-ffi -p kvshm-tests)
lib="$root/target/$profile"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
mcs -nologo -warnaserror -target:library -out:"$out/KvShm.dll" "$here"/KvShm/*.cs
mcs -nologo -warnaserror -out:"$out/Tests.exe" -r:"$out/KvShm.dll" -r:System.Core.dll "$here/tests/Tests.cs"
LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" mono "$out/Tests.exe" "$lib/kvshm-child"
