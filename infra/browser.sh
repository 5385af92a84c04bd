#!/usr/bin/env bash
# Debian's Chromium and ChromeDriver, for the end-to-end test that opens the trace viewer in a
# headless browser. Idempotent.
set -euo pipefail
YW_NAME=browser
# shellcheck source=infra/env.sh
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"

if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    yw_apt_install chromium chromium-driver
fi
