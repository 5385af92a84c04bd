#!/usr/bin/env bash
# The local trace viewer: the Zipkin server's executable jar from Maven Central (UI included),
# on Java 17. Services send it their spans when OTEL_TRACES_EXPORTER=zipkin (make run and the
# end-to-end tests do); with Docker, docker-compose runs Jaeger instead.
#
#   infra/trace_viewer.sh start    download (once, checksum verified) and start on 127.0.0.1:$YIWANG_ZIPKIN_PORT
#   infra/trace_viewer.sh stop     stop the server started by this script
#   infra/trace_viewer.sh status   exit 0 if it answers /health
#
# Settings (see infra/env.sh): YIWANG_ZIPKIN_PORT, YIWANG_ZIPKIN_VERSION, YIWANG_STATE_DIR, YIWANG_CACHE_DIR.
set -euo pipefail
YW_NAME=trace-viewer
# shellcheck source=infra/env.sh
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"

PORT="$YIWANG_ZIPKIN_PORT"
VERSION="$YIWANG_ZIPKIN_VERSION"
JAR="$YIWANG_CACHE_DIR/zipkin-server-$VERSION-exec.jar"
URL="https://repo1.maven.org/maven2/io/zipkin/zipkin-server/$VERSION/zipkin-server-$VERSION-exec.jar"
PID_FILE="$YIWANG_STATE_DIR/zipkin-$PORT.pid"
LOG_FILE="$YIWANG_STATE_DIR/zipkin-$PORT.log"

healthy() {
    curl -fsS -m 3 "http://127.0.0.1:$PORT/health" 2>/dev/null | grep -q '"UP"'
}

fetch() {
    [ -s "$JAR" ] && return 0
    mkdir -p "$YIWANG_CACHE_DIR"
    echo "trace-viewer: downloading zipkin-server $VERSION from Maven Central" >&2
    # Bounded: a stalled connection must not hold provisioning (and CI) until its time limit.
    curl -fsSL --retry 3 --connect-timeout 10 -m 300 -o "$JAR.part" "$URL" || yw_die "download of $URL failed"
    local want got
    want="$(curl -fsSL --retry 3 --connect-timeout 10 -m 30 "$URL.sha1" | cut -c1-40)" || yw_die "no checksum at $URL.sha1"
    got="$(sha1sum "$JAR.part" | cut -c1-40)"
    [ "$want" = "$got" ] || { rm -f "$JAR.part"; yw_die "checksum mismatch for $URL ($got, expected $want)"; }
    mv -f "$JAR.part" "$JAR"
}

cmd_start() {
    if healthy; then
        return 0
    fi
    if yw_port_open "$PORT"; then
        # A Zipkin that does not answer (a full heap, say): replace it. Anything else: refuse.
        local pid
        pid="$(ss -Hltnp "sport = :$PORT" 2>/dev/null | grep -o 'pid=[0-9]*' | head -n1 | cut -d= -f2 || true)"
        if [ -n "$pid" ] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q zipkin-server; then
            yw_warn "zipkin (pid $pid) does not answer; restarting it"
            echo "$pid" >"$PID_FILE"
            cmd_stop
        else
            yw_die "port 127.0.0.1:$PORT is in use by something that is not our Zipkin; set YIWANG_ZIPKIN_PORT"
        fi
    fi
    yw_need_cmd java openjdk-17-jre-headless
    fetch
    mkdir -p "$YIWANG_STATE_DIR"
    # In-memory storage keeps the newest $MEM_MAX_SPANS spans (a restart forgets them); the heap
    # is sized for that, load tests included. G1, not the serial collector: with the heap full of
    # spans, each of the serial collector's full collections held a core for 1.5-3 s about once a
    # minute during a 10-minute load test (jstat), and the submissions waiting for that core made
    # its submit p99 (loadtests/MEASUREMENTS.md). On 127.0.0.1 only, as everything else here: the
    # traces name every case (Zipkin listens on every interface by default).
    QUERY_PORT="$PORT" MEM_MAX_SPANS="${YIWANG_ZIPKIN_MAX_SPANS:-150000}" \
        nohup java -Xms128m -Xmx1g -XX:+UseG1GC -jar "$JAR" --armeria.ports[0].ip=127.0.0.1 \
        --armeria.ports[0].port="$PORT" --armeria.ports[0].protocols[0]=http >"$LOG_FILE" 2>&1 &
    echo $! >"$PID_FILE"
    local deadline=$((SECONDS + 90))
    until healthy; do
        if ! kill -0 "$(cat "$PID_FILE")" 2>/dev/null; then
            rm -f "$PID_FILE"
            yw_tail "$LOG_FILE"
            yw_die "zipkin exited during startup"
        fi
        [ $SECONDS -lt $deadline ] || { yw_tail "$LOG_FILE"; yw_die "zipkin did not answer on port $PORT within 90s"; }
        sleep 1
    done
    echo "trace-viewer: Zipkin at http://127.0.0.1:$PORT/zipkin/" >&2
}

cmd_stop() {
    local pid
    pid="$(cat "$PID_FILE" 2>/dev/null || true)"
    if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$PID_FILE"
}

case "${1:-}" in
start) cmd_start ;;
stop) cmd_stop ;;
status) healthy ;;
*) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
