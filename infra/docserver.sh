#!/usr/bin/env bash
# MongoDB-wire document server (FerretDB embedded, SQLite backend) for Yiwang.
#
#   infra/docserver.sh build    compile infra/docserver into the cache (skipped if up to date)
#   infra/docserver.sh start    build if needed, start on 127.0.0.1:$YIWANG_MONGO_PORT, wait for ping
#   infra/docserver.sh stop     stop the server started by this script
#   infra/docserver.sh status   exit 0 if a server answers a MongoDB ping on the port
#   infra/docserver.sh patched DIR   FerretDB's module, patched as built, into DIR/ferretdb (for
#                               tests; DIR must be empty or absent)
#   infra/docserver.sh go       the Go command it builds with
#
# Settings (see infra/env.sh): YIWANG_MONGO_PORT, YIWANG_DOCSERVER_DATA,
# YIWANG_STATE_DIR (pid file + log), YIWANG_CACHE_DIR (binary), YIWANG_GO,
# YIWANG_DOCSERVER_TIMEOUT, YIWANG_PYTHON.
set -euo pipefail
YW_NAME=docserver
# shellcheck source=infra/env.sh
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"

SRC_DIR="$YIWANG_REPO_ROOT/infra/docserver"
PORT="$YIWANG_MONGO_PORT"
PID_FILE="$YIWANG_STATE_DIR/docserver-$PORT.pid"
LOG_FILE="$YIWANG_STATE_DIR/docserver-$PORT.log"
# Clients on this machine may connect here instead of TCP (infra/system.py does): less CPU per
# command. A Unix socket's path holds at most 107 bytes; a longer state directory goes without.
SOCKET_FILE="$YIWANG_STATE_DIR/docserver-$PORT.sock"
[ "${#SOCKET_FILE}" -le 100 ] || SOCKET_FILE=""
BIN_PREFIX="$YIWANG_CACHE_DIR/yiwang-docserver"
KEEP_BINARIES=5

# Content hash of the sources: a changed *.go/go.mod/go.sum or patch gives a new binary name.
src_hash() {
    local f
    for f in main.go go.mod go.sum patch_ferretdb.sh; do
        [ -f "$SRC_DIR/$f" ] || yw_die "missing $SRC_DIR/$f"
    done
    (cd "$SRC_DIR" && sha256sum ./*.go go.mod go.sum patch_ferretdb.sh) | sha256sum | cut -c1-16
}

# patched_modfile GO DIR: FerretDB's module (downloaded and verified against go.sum) copied into DIR
# and patched (patch_ferretdb.sh), and DIR/go.mod: our go.mod with a replace pointing there.
patched_modfile() {
    local go="$1" dir="$2" module source
    module="github.com/FerretDB/FerretDB@$(awk '$1 == "github.com/FerretDB/FerretDB" {print $2}' "$SRC_DIR/go.mod")"
    source="$(cd "$SRC_DIR" && GOFLAGS=-mod=readonly "$go" mod download -json "$module" |
        sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
    [ -d "$source" ] || yw_die "go mod download $module gave no directory"
    rm -rf "$dir" && mkdir -p "$dir"
    cp -R "$source" "$dir/ferretdb" && chmod -R u+w "$dir/ferretdb"
    "$SRC_DIR/patch_ferretdb.sh" "$dir/ferretdb" || yw_die "patching FerretDB failed"
    cp "$SRC_DIR/go.mod" "$dir/go.mod" && cp "$SRC_DIR/go.sum" "$dir/go.sum"
    echo "replace github.com/FerretDB/FerretDB => $dir/ferretdb" >>"$dir/go.mod"
}

bin_path() {
    echo "$BIN_PREFIX-$(src_hash)"
}


cmd_build() {
    local bin go tmp start
    bin="$(bin_path)"
    if [ -x "$bin" ]; then
        return 0
    fi
    go="$(yw_find_go)"
    mkdir -p "$YIWANG_CACHE_DIR"
    tmp="$(mktemp "$bin.tmp.XXXXXX")"
    echo "docserver: building $bin (a cold build, incl. module downloads, takes about a minute)" >&2
    start=$SECONDS
    # -mod=readonly: go.mod/go.sum are committed and must not be rewritten by the build;
    # missing modules are downloaded from the module proxy and verified against go.sum.
    # -modfile: the same, with FerretDB replaced by its patched copy (patch_ferretdb.sh).
    if ! (patched_modfile "$go" "$tmp.src" && cd "$SRC_DIR" &&
        CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false" \
            "$go" build -modfile="$tmp.src/go.mod" -trimpath -o "$tmp" .) >"$tmp.log" 2>&1; then
        cat "$tmp.log" >&2
        rm -rf "$tmp" "$tmp.log" "$tmp.src"
        yw_die "go build in $SRC_DIR failed (output above)"
    fi
    rm -rf "$tmp.log" "$tmp.src"
    chmod 755 "$tmp"
    mv -f "$tmp" "$bin"
    echo "docserver: built in $((SECONDS - start))s" >&2
    # Keep only the most recent few binaries.
    # shellcheck disable=SC2010
    ls -1t "$BIN_PREFIX"-* 2>/dev/null | grep -v '\.tmp\.' | tail -n +$((KEEP_BINARIES + 1)) |
        while IFS= read -r old; do rm -f "$old"; done
}

# True if a MongoDB server on the port answers {ping: 1} with ok: 1.
mongo_ping() {
    if ! command -v "$YIWANG_PYTHON" >/dev/null 2>&1; then
        yw_port_open "$PORT" # no python: TCP only
        return
    fi
    "$YIWANG_PYTHON" - "$PORT" <<'PY' 2>/dev/null
import socket, struct, sys

def bson(doc):
    body = b""
    for key, val in doc.items():
        k = key.encode() + b"\0"
        if isinstance(val, int):
            body += b"\x10" + k + struct.pack("<i", val)
        else:
            s = val.encode() + b"\0"
            body += b"\x02" + k + struct.pack("<i", len(s)) + s
    return struct.pack("<i", len(body) + 5) + body + b"\0"

# OP_MSG (opcode 2013): flagBits, section kind 0 with the command document.
msg = struct.pack("<I", 0) + b"\0" + bson({"ping": 1, "$db": "admin"})
sock = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=3)
sock.settimeout(3)
sock.sendall(struct.pack("<iiii", 16 + len(msg), 1, 0, 2013) + msg)

def recv(n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf

length, _, _, opcode = struct.unpack("<iiii", recv(16))
reply = recv(length - 16)
if opcode != 2013:
    sys.exit(1)
i = reply.find(b"\x01ok\x00")  # ok as double
if i >= 0 and struct.unpack("<d", reply[i + 4:i + 12])[0] == 1.0:
    sys.exit(0)
i = reply.find(b"\x10ok\x00")  # ok as int32
if i >= 0 and struct.unpack("<i", reply[i + 4:i + 8])[0] == 1:
    sys.exit(0)
sys.exit(1)
PY
}

# Pid from the pid file if that process is alive and is a yiwang-docserver.
our_pid() {
    local pid
    [ -f "$PID_FILE" ] || return 1
    pid="$(cat "$PID_FILE" 2>/dev/null || true)"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    is_docserver_pid "$pid" || return 1
    echo "$pid"
}

is_docserver_pid() {
    [ -r "/proc/$1/cmdline" ] && tr '\0' ' ' <"/proc/$1/cmdline" | grep -q 'yiwang-docserver'
}

# Pid of the process listening on the port, if ss can tell.
listener_pid() {
    command -v ss >/dev/null 2>&1 || return 1
    ss -Hltnp "sport = :$PORT" 2>/dev/null | grep -o 'pid=[0-9]*' | head -n1 | cut -d= -f2 | grep .
}

wait_ready() {
    local pid="$1" deadline=$((SECONDS + YIWANG_DOCSERVER_TIMEOUT))
    while [ $SECONDS -lt $deadline ]; do
        if mongo_ping; then
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            yw_tail "$LOG_FILE"
            yw_die "docserver (pid $pid) exited during startup"
        fi
        sleep 0.3
    done
    yw_tail "$LOG_FILE"
    yw_die "docserver (pid $pid) did not answer a MongoDB ping on 127.0.0.1:$PORT within ${YIWANG_DOCSERVER_TIMEOUT}s"
}

cmd_start() {
    local pid bin
    # Already running (ours, or someone else's server on the port): reuse it, unless it is ours and
    # runs another build (an older checkout's: the tests would test the old server).
    if mongo_ping; then
        if ! pid="$(our_pid)" || [ "$(readlink -f "/proc/$pid/exe" 2>/dev/null)" = "$(readlink -f "$(bin_path)")" ]; then
            return 0
        fi
        yw_warn "docserver (pid $pid) runs another build than $(bin_path); restarting it"
        cmd_stop
    fi
    # Ours but still starting up (e.g. concurrent invocation): wait for it.
    if pid="$(our_pid)"; then
        wait_ready "$pid"
        return 0
    fi
    if yw_port_open "$PORT"; then
        pid="$(listener_pid || true)"
        yw_die "port 127.0.0.1:$PORT is in use${pid:+ by pid $pid ($(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-120))} but does not answer a MongoDB ping; free it or set YIWANG_MONGO_PORT"
    fi

    cmd_build
    bin="$(bin_path)"
    mkdir -p "$YIWANG_STATE_DIR" "$YIWANG_DOCSERVER_DATA"
    # setsid: own session, so it survives the calling shell/CI step; nohup: ignore SIGHUP.
    nohup setsid "$bin" --listen "127.0.0.1:$PORT" --listen-unix "$SOCKET_FILE" --data-dir "$YIWANG_DOCSERVER_DATA" \
        >"$LOG_FILE" 2>&1 </dev/null 9>&- &
    pid=$!
    echo "$pid" >"$PID_FILE"
    wait_ready "$pid"
}

cmd_stop() {
    local pid i
    if ! pid="$(our_pid)"; then
        rm -f "$PID_FILE"
        # Not started by us (no pid file), but a yiwang-docserver holds the port: stop that one.
        pid="$(listener_pid || true)"
        if [ -z "$pid" ] || ! is_docserver_pid "$pid"; then
            if yw_port_open "$PORT"; then
                yw_warn "port $PORT is served by something this script did not start${pid:+ (pid $pid)}; leaving it alone"
            fi
            return 0
        fi
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        yw_warn "pid $pid did not exit after SIGTERM; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.2
    fi
    rm -f "$PID_FILE"
}

cmd_status() {
    local pid
    if mongo_ping; then
        if pid="$(our_pid)"; then
            echo "docserver: running on 127.0.0.1:$PORT (pid $pid, data $YIWANG_DOCSERVER_DATA, log $LOG_FILE)"
        else
            pid="$(listener_pid || true)"
            echo "docserver: a MongoDB server answers on 127.0.0.1:$PORT${pid:+ (pid $pid)}, not started by this script"
        fi
        return 0
    fi
    if pid="$(our_pid)"; then
        echo "docserver: pid $pid alive but not answering on 127.0.0.1:$PORT (see $LOG_FILE)"
    else
        echo "docserver: not running on 127.0.0.1:$PORT"
    fi
    return 1
}

# Serialise start/stop for this port (concurrent CI jobs, double invocations).
lock() {
    mkdir -p "$YIWANG_STATE_DIR"
    exec 9>"$YIWANG_STATE_DIR/docserver-$PORT.lock"
    if command -v flock >/dev/null 2>&1; then
        flock -w 300 9 || yw_die "timed out waiting for $YIWANG_STATE_DIR/docserver-$PORT.lock"
    fi
}

case "${1:-}" in
build) cmd_build ;;
start) lock && cmd_start ;;
stop) lock && cmd_stop ;;
status) cmd_status ;;
path) bin_path ;;
patched)
    # patched_modfile empties its directory first: never a directory that holds anything.
    [ -z "$(ls -A "${2:?usage: $0 patched DIR}" 2>/dev/null)" ] || yw_die "patched: $2 is not empty"
    patched_modfile "$(yw_find_go)" "$2"
    ;;
go) yw_find_go ;;
*)
    echo "usage: $0 build|start|stop|status|path|patched DIR|go" >&2
    exit 2
    ;;
esac
