#!/usr/bin/env bash
# Stop the services started by infra/provision.sh (fine if they are not running).
# Settings: see infra/env.sh.
set -euo pipefail
INFRA_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

rc=0
bash "$INFRA_DIR/trace_viewer.sh" stop || rc=1
bash "$INFRA_DIR/docserver.sh" stop || rc=1
bash "$INFRA_DIR/rabbitmq.sh" stop || rc=1
exit $rc
