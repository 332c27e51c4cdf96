#!/usr/bin/env bash
# Gate: the RESP server with the `redis` Python client from PyPI (RESP2 and RESP3), in the
# same venv as the Python package, so keys written by redis-py are read through shared memory
# by `import kvshm` and the other way; the HTTP API's /metrics through Prometheus's Python
# parser and its dashboard in headless Chromium (screenshot: target/dashboard.png).
set -euo pipefail
# shellcheck source=ci/lib.sh
source "$(dirname "$0")/lib.sh"
root="$(pwd)"
venv="$root/target/pyvenv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet "redis>=5,<7" "prometheus-client>=0.17" pytest
# (`import kvshm` alone also finds the repository's kvshm/ directory, a namespace package.)
if ! "$venv/bin/python" -c "import kvshm; kvshm.Store" 2>/dev/null; then
  "$venv/bin/pip" install --quiet "maturin>=1.5,<2"
  "$venv/bin/pip" install --quiet --force-reinstall --no-deps ./bindings/python
fi
cargo build --quiet --release -p kvhost
KVHOST="$root/target/release/kvhost" "$venv/bin/python" -m pytest -q tests/resp
