#!/usr/bin/env bash
# Every test of the project, as CI runs it: formatting, lints, unit + cross-process + crash
# tests (debug and release), C and C# binding tests, loom, benchmark build, a demo run.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
shm_stores() { ls /dev/shm 2>/dev/null | grep -E '^kvshm\.(t-|unit-|bench-|demo-|compare-)' | sort || true; }
stores_before="$(shm_stores)"
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
echo "== tests (debug)"
cargo test --workspace
echo "== tests (release)"
cargo test --workspace --release
echo "== C# wrapper (mono; installs mono-devel if missing)"
bash bindings/csharp/run-tests.sh debug
echo "== loom model checks (lock word, seqlock, transaction states)"
RUSTFLAGS="--cfg kvshm_loom" CARGO_TARGET_DIR=target/loom cargo test -p kvshm --release --lib loom
echo "== benchmarks build"
cargo bench --workspace --no-run
echo "== peer comparison harness, quick (kvshm, its C ABI, in-process reference; peers are optional)"
cargo build --release -p kvshm-ffi
cargo run --release -p kvshm-compare -- --quick --systems kvshm,kvshm-c,hashmap,dashmap --json target/compare-quick.json
echo "== demo"
cargo run --release -p kvshm --example demo
leftover="$(comm -13 <(printf '%s\n' "$stores_before") <(shm_stores) | grep . || true)"
if [ -n "$leftover" ]; then
  echo "tests left stores behind in /dev/shm: $leftover" >&2
  exit 1
fi
echo "== all tests passed"
