#!/usr/bin/env bash
# Starts, stops or shows a local corekv cluster of N nodes on 127.0.0.1.
#
# usage: scripts/cluster.sh up [N]      start N nodes (default 3); prints where the data
#                                       is, and the client endpoints on its LAST line
#                                       (comma-separated shard-0 addresses)
#        scripts/cluster.sh down        SIGTERM every node, wait for it to exit
#        scripts/cluster.sh status      which nodes run, the `corekvctl status` table
#                                       (node x group: role, term, leader, commit,
#                                       applied, lag) on stderr, and the endpoints
# env:   CLUSTER_DIR  data, logs and NAME.pid files [default: /tmp/corekv-cluster]
#        SHARDS       shards per node [default: 2]
#        BASE_PORT    node i (1..N) serves clients on BASE_PORT+100*i (+shard) and peers
#                     on BASE_PORT+100*i+50 (+shard) [default: 27000]
#        CPUS         optional taskset CPU list for the servers
#        COREKV       the server binary [default: target/release/corekv, built if missing]
#        COREKVCTL    the command line for `status` [default: target/release/corekvctl;
#                     the table is left out when it is missing]
#
# Nodes run with --cpu-pinning off (several nodes share the machine). Node names are
# n1..nN; `--initial-cluster` names each member's client port too, so every node can
# tell clients where a group's leader is served.
set -euo pipefail
cd "$(dirname "$0")/.."
CLUSTER_DIR=${CLUSTER_DIR:-/tmp/corekv-cluster}
# `up` records its ports; `status` and `down` use what it recorded.
if [ "${1:-}" != up ] && [ -f "$CLUSTER_DIR/cluster.env" ]; then
    # shellcheck disable=SC1091
    . "$CLUSTER_DIR/cluster.env"
fi
SHARDS=${SHARDS:-2}
BASE_PORT=${BASE_PORT:-27000}
COREKV=${COREKV:-target/release/corekv}
cmd=${1:-status}
N=${2:-}
log() { echo "[cluster.sh] $*" >&2; }

# A process that runs (a killed one may linger as a zombie until its parent reaps it).
alive() { kill -0 "$1" 2>/dev/null && [ "$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null)" != Z ]; }

client_port() { echo $((BASE_PORT + 100 * $1)); }
peer_port() { echo $((BASE_PORT + 100 * $1 + 50)); }

nodes_in_dir() {
    ls "$CLUSTER_DIR"/n*.pid 2>/dev/null | sed 's/.*\/n\([0-9]*\)\.pid/\1/' | sort -n
}

endpoints() {
    local eps="" i
    for i in "$@"; do eps+="${eps:+,}127.0.0.1:$(client_port "$i")"; done
    echo "$eps"
}

wait_port() {
    local port=$1 i
    for i in $(seq 1 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.1
    done
    log "nothing listens on 127.0.0.1:$port after 20 s"
    return 1
}

case "$cmd" in
    up)
        N=${N:-3}
        [ "$N" -ge 1 ] || { log "N must be at least 1"; exit 2; }
        if [ ! -x "$COREKV" ]; then
            log "building $COREKV"
            cargo build --release --bin corekv >&2
        fi
        mkdir -p "$CLUSTER_DIR"
        printf 'BASE_PORT=%s\nSHARDS=%s\n' "$BASE_PORT" "$SHARDS" >"$CLUSTER_DIR/cluster.env"
        spec=""
        for i in $(seq 1 "$N"); do
            spec+="${spec:+,}n$i=127.0.0.1:$(peer_port "$i")/$(client_port "$i")"
        done
        for i in $(seq 1 "$N"); do
            if [ -f "$CLUSTER_DIR/n$i.pid" ] && alive "$(cat "$CLUSTER_DIR/n$i.pid")"; then
                log "n$i already runs (pid $(cat "$CLUSTER_DIR/n$i.pid"))"
                continue
            fi
            pre=()
            [ -n "${CPUS:-}" ] && pre=(taskset -c "$CPUS")
            "${pre[@]}" "$COREKV" --name "n$i" --data-dir "$CLUSTER_DIR/n$i" \
                --listen-client "127.0.0.1:$(client_port "$i")" \
                --listen-peer "127.0.0.1:$(peer_port "$i")" \
                --initial-cluster "$spec" --shards "$SHARDS" --cpu-pinning off \
                >>"$CLUSTER_DIR/n$i.log" 2>&1 </dev/null &
            echo $! >"$CLUSTER_DIR/n$i.pid"
        done
        for i in $(seq 1 "$N"); do
            for s in $(seq 0 $((SHARDS - 1))); do wait_port $(($(client_port "$i") + s)); done
        done
        # Leaders are elected within about a second of a quorum running.
        sleep 1.5
        log "cluster of $N nodes x $SHARDS shards up; data and logs in $CLUSTER_DIR"
        endpoints $(seq 1 "$N")
        ;;
    down)
        for i in $(nodes_in_dir); do
            pid=$(cat "$CLUSTER_DIR/n$i.pid")
            if kill -TERM "$pid" 2>/dev/null; then
                for _ in $(seq 1 300); do alive "$pid" || break; sleep 0.1; done
                alive "$pid" && { log "n$i (pid $pid) ignored SIGTERM; killing"; kill -KILL "$pid"; }
            fi
            rm -f "$CLUSTER_DIR/n$i.pid"
            log "n$i stopped"
        done
        ;;
    status)
        up=()
        for i in $(nodes_in_dir); do
            pid=$(cat "$CLUSTER_DIR/n$i.pid")
            if alive "$pid"; then
                log "n$i: running (pid $pid), clients on 127.0.0.1:$(client_port "$i")"
                up+=("$i")
            else
                log "n$i: not running (stale pid file)"
            fi
        done
        log "data and logs in $CLUSTER_DIR"
        COREKVCTL=${COREKVCTL:-target/release/corekvctl}
        if [ "${#up[@]}" -gt 0 ] && [ -x "$COREKVCTL" ]; then
            "$COREKVCTL" --endpoints "$(endpoints "${up[@]}")" --timeout 3 status >&2 ||
                log "corekvctl status failed"
        fi
        endpoints "${up[@]}"
        ;;
    *)
        sed -n '2,22p' "$0"
        exit 2
        ;;
esac
