#!/usr/bin/env bash
# Gate: scripts/replication-demo.sh - a kvhost primary and replica in their own network
# namespaces (AUTH, snapshots), replication lag of local writes, kill -9 of the primary under
# load, promotion, the old primary back as a replica, restarts from snapshots. Needs root
# (ip netns), as CI has.
set -euo pipefail
# shellcheck source=ci/lib.sh
source "$(dirname "$0")/lib.sh"
bash scripts/replication-demo.sh
