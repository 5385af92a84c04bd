#!/usr/bin/env bash
# RabbitMQ broker for Yiwang (Debian's rabbitmq-server package, no Docker).
#
#   infra/rabbitmq.sh start    install if missing, start on loopback, wait for AMQP + management API
#   infra/rabbitmq.sh stop     shut the node down (fine if it is not running)
#   infra/rabbitmq.sh status   exit 0 if AMQP port and management API both answer
#
# Settings (see infra/env.sh): YIWANG_AMQP_PORT, YIWANG_RABBIT_MGMT_PORT,
# YIWANG_RABBIT_NODENAME, YIWANG_RABBIT_TIMEOUT, YIWANG_STATE_DIR.
#
# The node runs as the `rabbitmq` user through Debian's wrappers in /usr/sbin, with
# Debian's default directories (/var/lib/rabbitmq, /var/log/rabbitmq) and the
# cookie in /var/lib/rabbitmq/.erlang.cookie, so plain `rabbitmqctl` (as root)
# keeps working. Ports/addresses are passed through the environment, not config files.
set -euo pipefail
YW_NAME=rabbitmq
# shellcheck source=infra/env.sh
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"

AMQP_PORT="$YIWANG_AMQP_PORT"
MGMT_PORT="$YIWANG_RABBIT_MGMT_PORT"
SHORT_HOST="$(hostname -s 2>/dev/null || hostname)"
NODE="${YIWANG_RABBIT_NODENAME:-rabbit}"
[[ "$NODE" == *@* ]] || NODE="$NODE@$SHORT_HOST"
LOG_DIR="${RABBITMQ_LOG_BASE:-/var/log/rabbitmq}"
NODE_LOG="$LOG_DIR/$NODE.log"
STARTUP_LOG="$YIWANG_STATE_DIR/rabbitmq-$NODE-startup.log"
PLUGINS_FILE="${RABBITMQ_ENABLED_PLUGINS_FILE:-/etc/rabbitmq/enabled_plugins}"

sbin() { # path of a RabbitMQ command (the Debian wrappers live in /usr/sbin)
    command -v "$1" 2>/dev/null || echo "/usr/sbin/$1"
}

ctl() { timeout 120 "$(sbin rabbitmqctl)" -q -n "$NODE" "$@"; }

amqp_up() { yw_port_open "$AMQP_PORT"; }
mgmt_up() { curl -fsS -m 5 -o /dev/null -u guest:guest "http://127.0.0.1:$MGMT_PORT/api/overview" 2>/dev/null; }
node_running() { ctl ping >/dev/null 2>&1; }

ensure_installed() {
    if ! command -v rabbitmq-server >/dev/null 2>&1 && [ ! -x /usr/sbin/rabbitmq-server ]; then
        # policy-rc.d may forbid starting the service during install; that is fine,
        # the node is started below.
        yw_apt_install rabbitmq-server
        [ -x "$(sbin rabbitmq-server)" ] || yw_die "rabbitmq-server still missing after apt-get install"
    fi
    # On a machine run by systemd the package starts a broker of its own, on every interface and at
    # every boot (whoever installed it): stop and disable it, so the node started here, on
    # 127.0.0.1, is used. Our own node is not systemd's: `is-active` does not see it.
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1 &&
        { systemctl is-active --quiet rabbitmq-server || systemctl is-enabled --quiet rabbitmq-server; } 2>/dev/null; then
        systemctl disable --now rabbitmq-server >/dev/null 2>&1 ||
            yw_warn "could not stop and disable the packaged rabbitmq-server service"
    fi
    yw_need_cmd curl
}

mgmt_enabled() { [ -f "$PLUGINS_FILE" ] && grep -qw rabbitmq_management "$PLUGINS_FILE"; }

LAUNCH_MARK="$YIWANG_STATE_DIR/rabbitmq-$NODE.launched"
LOG_OFFSET=0 # size of the node log before we launched, so errors show only this boot

fail() {
    local new dump
    if [ -s "$STARTUP_LOG" ]; then yw_tail "$STARTUP_LOG" 10; fi
    if [ -s "$NODE_LOG" ]; then
        new="$(tail -c +$((LOG_OFFSET + 1)) "$NODE_LOG" 2>/dev/null || true)"
        if [ -z "$new" ]; then
            echo "(nothing new in $NODE_LOG for this start)" >&2
        elif grep -q '\[error\]' <<<"$new"; then
            echo "---- first [error] lines of $NODE_LOG (this start) ----" >&2
            grep '\[error\]' <<<"$new" | head -n 40 | cut -c1-300 >&2
            echo "----" >&2
        else
            echo "---- last lines of $NODE_LOG (this start) ----" >&2
            tail -n 40 <<<"$new" | cut -c1-300 >&2
            echo "----" >&2
        fi
    else
        yw_tail "$NODE_LOG"
    fi
    # Failures before logging is set up (e.g. Erlang distribution port taken) only
    # leave a crash dump; its "Slogan" line says why.
    for dump in /var/lib/rabbitmq/erl_crash.dump "$LOG_DIR/erl_crash.dump"; do
        if [ -f "$LAUNCH_MARK" ] && [ "$dump" -nt "$LAUNCH_MARK" ]; then
            echo "crash dump $dump:" >&2
            grep -m1 '^Slogan:' "$dump" | cut -c1-400 >&2 || true
        fi
    done
    yw_die "$*"
}

wait_ready() {
    local launched="${1:-0}" start=$SECONDS deadline=$((SECONDS + YIWANG_RABBIT_TIMEOUT)) checked=0
    while [ $SECONDS -lt $deadline ]; do
        if amqp_up && mgmt_up; then
            return 0
        fi
        # A node that failed to boot goes away; do not wait for the full timeout.
        if [ "$launched" = 1 ] && [ $((SECONDS - start)) -ge 10 ] && ! node_running; then
            fail "RabbitMQ node $NODE exited during startup"
        fi
        # Once the broker reports itself fully booted, a missing listener will not appear.
        if [ $checked = 0 ] && [ $SECONDS -gt $((deadline - YIWANG_RABBIT_TIMEOUT + 5)) ] &&
            timeout 30 "$(sbin rabbitmq-diagnostics)" -q -n "$NODE" check_running >/dev/null 2>&1; then
            checked=1
            sleep 3 # listeners start at the very end of the boot
            if ! amqp_up || ! mgmt_up; then
                echo "listeners of $NODE:" >&2
                timeout 30 "$(sbin rabbitmq-diagnostics)" -q -n "$NODE" listeners >&2 || true
                yw_die "node $NODE is running but not answering on AMQP 127.0.0.1:$AMQP_PORT and management 127.0.0.1:$MGMT_PORT (started with other ports?). Stop it with the ports it was started with (infra/rabbitmq.sh stop), or pick another YIWANG_RABBIT_NODENAME"
            fi
        fi
        sleep 1
    done
    if node_running; then
        fail "node $NODE is up but AMQP 127.0.0.1:$AMQP_PORT / management http://127.0.0.1:$MGMT_PORT/api/overview not answering after ${YIWANG_RABBIT_TIMEOUT}s"
    fi
    fail "RabbitMQ node $NODE did not come up within ${YIWANG_RABBIT_TIMEOUT}s"
}

launch() {
    local erl_args ip
    # Management (web + HTTP API) listener: loopback, configured port.
    erl_args="-rabbitmq_management tcp_config [{ip,\"127.0.0.1\"},{port,$MGMT_PORT}]"
    # Erlang distribution (used by rabbitmqctl) on loopback too, but only when the node's
    # host name resolves to 127.0.0.1, otherwise the CLI tools could not reach the node.
    ip="$(getent ahostsv4 "$SHORT_HOST" 2>/dev/null | awk 'NR==1{print $1}')"
    if [ "$ip" = 127.0.0.1 ]; then
        erl_args="$erl_args -kernel inet_dist_use_interface {127,0,0,1}"
        export ERL_EPMD_ADDRESS=127.0.0.1 # only matters if epmd is not running yet
    fi
    export RABBITMQ_NODENAME="$NODE"
    export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
    export RABBITMQ_NODE_PORT="$AMQP_PORT"
    # No spaces inside a single argument: rabbitmq-server word-splits this variable.
    export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="${RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS:+$RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS }$erl_args"
    mkdir -p "$YIWANG_STATE_DIR"
    # The wrapper switches to the rabbitmq user (su keeps these variables); setsid so the
    # daemon is not tied to the caller's session; fd 9 (our lock) must not leak into it.
    if ! setsid "$(sbin rabbitmq-server)" -detached >"$STARTUP_LOG" 2>&1 </dev/null 9>&-; then
        fail "rabbitmq-server -detached failed"
    fi
}

cmd_start() {
    ensure_installed
    if amqp_up && mgmt_up; then
        return 0 # already running (ours or not): reuse
    fi
    if node_running; then
        # Running (or still booting) but not answering on both ports yet.
        if ! mgmt_enabled; then
            "$(sbin rabbitmq-plugins)" -q -n "$NODE" enable rabbitmq_management >/dev/null ||
                fail "could not enable rabbitmq_management on running node $NODE"
        fi
        wait_ready 0
        return 0
    fi
    if amqp_up; then
        yw_die "port 127.0.0.1:$AMQP_PORT is in use but node $NODE is not running (another broker or program without the management API on $MGMT_PORT?); free it or set YIWANG_AMQP_PORT"
    fi
    if yw_port_open "$MGMT_PORT"; then
        yw_die "port 127.0.0.1:$MGMT_PORT (management) is already in use; free it or set YIWANG_RABBIT_MGMT_PORT"
    fi
    if ! mgmt_enabled; then
        "$(sbin rabbitmq-plugins)" -q -n "$NODE" enable --offline rabbitmq_management >/dev/null ||
            yw_die "rabbitmq-plugins enable --offline rabbitmq_management failed"
    fi
    LOG_OFFSET="$(stat -c %s "$NODE_LOG" 2>/dev/null || echo 0)"
    mkdir -p "$YIWANG_STATE_DIR" && touch "$LAUNCH_MARK"
    sleep 1 # so that -nt against the marker is reliable
    launch
    wait_ready 1
}

cmd_stop() {
    command -v rabbitmqctl >/dev/null 2>&1 || [ -x /usr/sbin/rabbitmqctl ] || return 0
    if ! node_running; then
        if amqp_up; then
            yw_warn "port $AMQP_PORT answers but node $NODE is not running; leaving that server alone"
        fi
        return 0
    fi
    # `shutdown` = `stop` that also waits for the Erlang VM to exit, so the ports are free afterwards.
    local out
    if ! out="$(ctl shutdown 2>&1)"; then
        if node_running; then
            echo "$out" >&2
            yw_die "rabbitmqctl -n $NODE shutdown failed"
        fi
    fi
}

cmd_status() {
    local a=down m=down rc=0
    amqp_up && a=up || rc=1
    mgmt_up && m=up || rc=1
    echo "rabbitmq: node $NODE; AMQP 127.0.0.1:$AMQP_PORT $a; management http://127.0.0.1:$MGMT_PORT $m"
    return $rc
}

# Serialise start/stop of this node.
lock() {
    mkdir -p "$YIWANG_STATE_DIR"
    exec 9>"$YIWANG_STATE_DIR/rabbitmq-$NODE.lock"
    if command -v flock >/dev/null 2>&1; then
        flock -w 300 9 || yw_die "timed out waiting for $YIWANG_STATE_DIR/rabbitmq-$NODE.lock"
    fi
}

case "${1:-}" in
start) lock && cmd_start ;;
stop) lock && cmd_stop ;;
status) cmd_status ;;
*)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
