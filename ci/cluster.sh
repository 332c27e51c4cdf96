#!/usr/bin/env bash
# Gate: scripts/cluster-demo.sh - three kvhost shards in their own network namespaces behind
# twemproxy (nutcracker), driven with redis-cli and redis-benchmark; checks every key lands on
# exactly one shard. Needs root (ip netns), as CI has.
set -euo pipefail
# shellcheck source=ci/lib.sh
source "$(dirname "$0")/lib.sh"
bash scripts/cluster-demo.sh
