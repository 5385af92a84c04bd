#!/usr/bin/env bash
# Provision everything Yiwang needs on this machine (Debian, run as root):
# python3 with a working `-m venv`, curl, make, RabbitMQ (with management API)
# the MongoDB-wire docserver, the Zipkin trace viewer, Chromium for the browser test and
# Toxiproxy for the fault tests.
# Idempotent: running services are reused.
# Settings: see infra/env.sh.
set -euo pipefail
YW_NAME=provision
INFRA_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=infra/env.sh
. "$INFRA_DIR/env.sh"

# python3 -m venv needs ensurepip, which Debian ships separately in python3-venv.
if ! command -v "$YIWANG_PYTHON" >/dev/null 2>&1; then
    yw_apt_install python3 python3-venv
fi
if ! "$YIWANG_PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    yw_apt_install python3-venv
    "$YIWANG_PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1 ||
        yw_die "'$YIWANG_PYTHON -m venv' still lacks ensurepip after installing python3-venv ($(command -v "$YIWANG_PYTHON") is probably not Debian's python3); fix that interpreter or set YIWANG_PYTHON"
fi
yw_need_cmd curl
yw_need_cmd make

bash "$INFRA_DIR/rabbitmq.sh" start
bash "$INFRA_DIR/docserver.sh" start
bash "$INFRA_DIR/trace_viewer.sh" start
bash "$INFRA_DIR/browser.sh"
bash "$INFRA_DIR/toxiproxy.sh" build # the fault tests start their own
