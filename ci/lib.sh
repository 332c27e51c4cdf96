#!/usr/bin/env bash
# Shared by the gates: run from the repository root with the same cargo settings as CI.
# Sourced, not run.
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
export CARGO_TERM_COLOR=never
