#!/usr/bin/env bash
# Gate: the C# wrapper compiled with mono's mcs and run against libkvshm.so (installs
# mono-devel if it is missing).
set -euo pipefail
# shellcheck source=ci/lib.sh
source "$(dirname "$0")/lib.sh"
bash bindings/csharp/run-tests.sh debug
