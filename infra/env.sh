# shellcheck shell=bash
# Shared settings and helpers for the infra/*.sh scripts.
# Source it:  . infra/env.sh   (every variable can be overridden from the environment)

# Where pid files, logs and the docserver data live. Deliberately outside the
# repository so that a fresh clone on the same machine (CI) reuses them.
export YIWANG_STATE_DIR="${YIWANG_STATE_DIR:-$HOME/.local/state/yiwang}"
# Where build artefacts (the docserver binary) are cached.
export YIWANG_CACHE_DIR="${YIWANG_CACHE_DIR:-$HOME/.cache/yiwang}"

export YIWANG_AMQP_PORT="${YIWANG_AMQP_PORT:-5672}"
export YIWANG_RABBIT_MGMT_PORT="${YIWANG_RABBIT_MGMT_PORT:-15672}"
# Erlang node name of the broker; empty = Debian's default (rabbit@<short hostname>).
export YIWANG_RABBIT_NODENAME="${YIWANG_RABBIT_NODENAME:-}"
export YIWANG_RABBIT_TIMEOUT="${YIWANG_RABBIT_TIMEOUT:-60}"

export YIWANG_MONGO_PORT="${YIWANG_MONGO_PORT:-27017}"
export YIWANG_DOCSERVER_DATA="${YIWANG_DOCSERVER_DATA:-$YIWANG_STATE_DIR/docserver-data}"
export YIWANG_DOCSERVER_TIMEOUT="${YIWANG_DOCSERVER_TIMEOUT:-30}"

# The local trace viewer (Zipkin; infra/trace_viewer.sh).
export YIWANG_ZIPKIN_PORT="${YIWANG_ZIPKIN_PORT:-9411}"
export YIWANG_ZIPKIN_VERSION="${YIWANG_ZIPKIN_VERSION:-3.6.1}"

# Tools.
export YIWANG_PYTHON="${YIWANG_PYTHON:-python3}"
export YIWANG_GO="${YIWANG_GO:-}"

# Repository root (infra/..), whichever directory the caller is in.
YIWANG_REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export YIWANG_REPO_ROOT

# ---------------------------------------------------------------- helpers

yw_die() {
    echo "${YW_NAME:-yiwang}: error: $*" >&2
    exit 1
}

yw_warn() {
    echo "${YW_NAME:-yiwang}: $*" >&2
}

# yw_port_open PORT: true if something accepts TCP connections on 127.0.0.1:PORT.
yw_port_open() {
    # shellcheck disable=SC2016 # $1 expands in the inner shell
    timeout 3 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null
}

# yw_apt_install PKG...: install Debian packages; `apt-get update` runs at most
# once per provisioning run (the flag is exported to child scripts).
yw_apt_install() {
    command -v apt-get >/dev/null 2>&1 ||
        yw_die "need to install $* but apt-get is not available; install it by hand"
    [ "$(id -u)" = 0 ] || yw_die "need to install $* (apt-get) but not running as root"
    if [ "${YIWANG_APT_UPDATED:-}" != 1 ]; then
        echo "${YW_NAME:-yiwang}: apt-get update" >&2
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 ||
            yw_die "apt-get update failed"
        export YIWANG_APT_UPDATED=1
    fi
    echo "${YW_NAME:-yiwang}: apt-get install $*" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null ||
        yw_die "apt-get install $* failed"
}

# yw_need_cmd CMD [PKG]: make sure CMD exists, installing PKG (default CMD) if not.
yw_need_cmd() {
    command -v "$1" >/dev/null 2>&1 && return 0
    yw_apt_install "${2:-$1}"
    command -v "$1" >/dev/null 2>&1 || yw_die "installed ${2:-$1} but '$1' is still not on PATH"
}

# yw_go_wanted: the Go version infra/docserver/go.mod asks for (its `go` line).
yw_go_wanted() {
    sed -n 's/^go \([0-9.]*\).*/\1/p' "$(dirname "${BASH_SOURCE[0]}")/docserver/go.mod"
}

# yw_go_new_enough GO: dies unless GO is at least the version go.mod asks for, or may fetch it
# (GOTOOLCHAIN=auto downloads the toolchain go.mod names; `local`, as some installs set, does not).
yw_go_new_enough() {
    local wanted have toolchain
    wanted="$(yw_go_wanted)"
    have="$("$1" env GOVERSION 2>/dev/null | sed 's/^go//')"
    toolchain="$("$1" env GOTOOLCHAIN 2>/dev/null)"
    if [ -n "$have" ] && [ "$(printf '%s\n%s\n' "$wanted" "$have" | sort -V | head -n1)" != "$wanted" ] &&
        [ "${toolchain%%+*}" = local ]; then
        yw_die "$1 is Go $have, but infra/docserver/go.mod needs Go >= $wanted (and GOTOOLCHAIN=local forbids fetching it): install a newer Go or set YIWANG_GO"
    fi
}

# yw_find_go: path of the Go command (YIWANG_GO, PATH, or /usr/local/go), or die saying how to get one.
yw_find_go() {
    local go
    go="$(yw_go_path)" || exit 1
    yw_go_new_enough "$go"
    echo "$go"
}

yw_go_path() {
    if [ -n "$YIWANG_GO" ]; then
        [ -x "$YIWANG_GO" ] || command -v "$YIWANG_GO" >/dev/null 2>&1 ||
            yw_die "YIWANG_GO=$YIWANG_GO is not an executable"
        echo "$YIWANG_GO"
    elif command -v go >/dev/null 2>&1; then
        command -v go
    elif [ -x /usr/local/go/bin/go ]; then
        echo /usr/local/go/bin/go
    else
        yw_die "Go (>= $(yw_go_wanted), see infra/docserver/go.mod) is needed but 'go' is not on PATH; install it (e.g. /usr/local/go) or set YIWANG_GO"
    fi
}

# yw_tail FILE: last lines of a log, for error messages.
yw_tail() {
    if [ -s "$1" ]; then
        echo "---- last lines of $1 ----" >&2
        tail -n "${2:-30}" "$1" >&2
        echo "----" >&2
    else
        echo "(no log at $1)" >&2
    fi
}
