#!/usr/bin/env bash
# Gate: every shell script of the repository passes shellcheck (installs it if missing).
set -euo pipefail
# shellcheck source=ci/lib.sh
source "$(dirname "$0")/lib.sh"
if ! command -v shellcheck >/dev/null; then
  if [ "$(id -u)" -ne 0 ]; then echo "shellcheck is missing and we are not root: apt-get install shellcheck" >&2; exit 1; fi
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck >/dev/null
fi
mapfile -t scripts < <(git ls-files '*.sh' .ci/run)
shellcheck -x "${scripts[@]}"
