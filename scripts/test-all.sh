#!/usr/bin/env bash
# Every test of the project, as CI runs it: each gate is its own script under ci/ (runnable
# alone), called here in order. A gate that fails stops the run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/install-deps.sh
leak_base="$(mktemp)"
trap 'rm -f "$leak_base"' EXIT
bash ci/shm-leak.sh record "$leak_base"
gate() {
  echo "== ci/$*"
  bash "ci/$1" "${@:2}"
}
gate fmt.sh
gate clippy.sh
gate no-test-hooks.sh
gate shellcheck.sh
gate test.sh debug
gate test.sh release
gate csharp.sh
gate python.sh
gate resp.sh
gate cluster.sh
gate replication.sh
gate loom.sh
gate bench-smoke.sh
gate demo.sh
gate windows.sh
gate shm-leak.sh check "$leak_base"
echo "== all tests passed"
