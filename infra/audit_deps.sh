#!/usr/bin/env bash
# Known-vulnerability check of every pin in requirements.lock with pip-audit (in a tool venv of
# its own, so its dependencies never touch the product's lock).
#
#   infra/audit_deps.sh          fail (exit 1) when any pin has a known vulnerability
#
# pip-audit asks a vulnerability service (PyPI's per-release JSON, or OSV). When that service
# cannot be reached or answers for no pin at all, nothing was checked: this says so loudly and
# exits 0 unless YIWANG_AUDIT_REQUIRED=1 (then 2), so an offline CI run stays green but honest.
set -euo pipefail
YW_NAME=audit-deps
# shellcheck source=infra/env.sh
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"

VERSION="${YIWANG_PIP_AUDIT_VERSION:-2.10.1}"
TOOLS="$YIWANG_CACHE_DIR/pip-audit-$VERSION"
SERVICE="${YIWANG_AUDIT_SERVICE:-pypi}" # or osv

if [ ! -x "$TOOLS/bin/pip-audit" ]; then
    "$YIWANG_PYTHON" -m venv "$TOOLS"
    "$TOOLS/bin/pip" install --quiet "pip-audit==$VERSION" || yw_die "could not install pip-audit $VERSION"
fi

report="$(mktemp)"
trap 'rm -f "$report"' EXIT
# --no-deps: the lock already lists every package, pinned; --disable-pip: nothing is installed.
"$TOOLS/bin/pip-audit" -r "$YIWANG_REPO_ROOT/requirements.lock" --no-deps --disable-pip \
    -s "$SERVICE" -f json -o "$report" --progress-spinner off 2>/dev/null || true

"$YIWANG_PYTHON" - "$report" "$SERVICE" <<'PY'
import json, os, sys

path, service = sys.argv[1], sys.argv[2]
try:
    deps = json.load(open(path))["dependencies"]
except (OSError, ValueError, KeyError):
    print(f"audit-deps: pip-audit produced no report (service {service} unreachable?)")
    sys.exit(2 if os.environ.get("YIWANG_AUDIT_REQUIRED") == "1" else 0)
audited = [d for d in deps if "skip_reason" not in d]
vulnerable = [d for d in audited if d.get("vulns")]
for dep in vulnerable:
    for vuln in dep["vulns"]:
        fixed = ", ".join(vuln.get("fix_versions") or []) or "no fix yet"
        print(f"audit-deps: {dep['name']} {dep['version']}: {vuln['id']} (fixed in {fixed})")
print(f"audit-deps: {len(audited)} of {len(deps)} pins audited against {service}, {len(vulnerable)} vulnerable")
if vulnerable:
    sys.exit(1)
if not audited:
    print(f"audit-deps: NOT CHECKED: {service} answered for no pin ({deps[0]['skip_reason'] if deps else 'empty lock'})")
    sys.exit(2 if os.environ.get("YIWANG_AUDIT_REQUIRED") == "1" else 0)
PY
