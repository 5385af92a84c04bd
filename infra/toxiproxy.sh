#!/usr/bin/env bash
# Toxiproxy (github.com/Shopify/toxiproxy), the TCP proxy the fault tests put between the services
# and the broker or the store to inject latency and connection resets. Built from the Go module proxy.
#
#   infra/toxiproxy.sh build   install the server binary into the cache (skipped if present)
#   infra/toxiproxy.sh path    print the binary's path (building it first if needed)
#
# The fault tests start and stop their own server on a free port; nothing runs in the background.
# Settings (see infra/env.sh): YIWANG_CACHE_DIR, YIWANG_GO; YIWANG_TOXIPROXY_VERSION.
set -euo pipefail
YW_NAME=toxiproxy
# shellcheck source=infra/env.sh
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"

VERSION="${YIWANG_TOXIPROXY_VERSION:-v2.12.0}"
BIN="$YIWANG_CACHE_DIR/toxiproxy-$VERSION/toxiproxy-server"


cmd_build() {
    [ -x "$BIN" ] && return 0
    local go tmp
    go="$(yw_find_go)"
    tmp="$(mktemp -d "$YIWANG_CACHE_DIR/toxiproxy-build.XXXXXX" 2>/dev/null || { mkdir -p "$YIWANG_CACHE_DIR" && mktemp -d "$YIWANG_CACHE_DIR/toxiproxy-build.XXXXXX"; })"
    echo "toxiproxy: building $VERSION (go install, about 10 seconds with a warm module cache)" >&2
    # `go install pkg@version` resolves the module on its own, checked against the checksum database.
    if ! (cd "$tmp" && CGO_ENABLED=0 GOBIN="$tmp" "$go" install "github.com/Shopify/toxiproxy/v2/cmd/server@$VERSION") >"$tmp/build.log" 2>&1; then
        cat "$tmp/build.log" >&2
        rm -rf "$tmp"
        yw_die "go install of Toxiproxy $VERSION failed (output above)"
    fi
    mkdir -p "$(dirname "$BIN")"
    mv -f "$tmp/server" "$BIN"
    rm -rf "$tmp"
}

case "${1:-}" in
build) cmd_build ;;
path) cmd_build && echo "$BIN" ;;
*)
    echo "usage: $0 build|path" >&2
    exit 2
    ;;
esac
