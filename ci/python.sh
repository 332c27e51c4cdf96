#!/usr/bin/env bash
# Gate: the Python package (bindings/python, PyO3 + maturin). Builds it into a venv with
# `pip install ./bindings/python` (crates from the registry, maturin and pytest from PyPI), runs
# clippy and fmt on its crate, then pytest (with the kvcli binary for the cross-language test).
set -euo pipefail
# shellcheck source=ci/lib.sh
source "$(dirname "$0")/lib.sh"
root="$(pwd)"
venv="$root/target/pyvenv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --upgrade pip
"$venv/bin/pip" install --quiet "maturin>=1.5,<2" pytest
(cd bindings/python && cargo fmt -- --check && cargo clippy --quiet -- -D warnings)
"$venv/bin/pip" install --quiet --force-reinstall --no-deps ./bindings/python
cargo build --quiet --release -p kvcli
KVCLI="$root/target/release/kvcli" "$venv/bin/python" -m pytest -q bindings/python/tests
