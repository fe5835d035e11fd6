#!/usr/bin/env bash
# Failover time of a local 3-node corekv cluster: SIGKILL the leader of one group under a
# write load, N times, and time each from the kill to the first write that group
# acknowledges.
#
# usage: scripts/failover.sh [--rounds N] [--group G] [--probe-timeout SECS]
# env:   CLUSTER_DIR  data and logs [default: a fresh /tmp/corekv-failover.XXXXXX, removed]
#        BASE_PORT    ports as in scripts/cluster.sh [default: 27500]
#        SHARDS       shards per node [default: 2]
#        LOAD_INFLIGHT  writes in flight of the background load [default: 16]
#
# Each round: wait until all three nodes answer `corekvctl status`, every group has a
# leader and no replica lags more than LAG_MAX entries (the node killed last round has
# caught up); find group G's leader in that table; SIGKILL it; then probe: one
# `corekvctl put` of a key of group G after another, each a fresh process bootstrapping
# from the two survivors with --timeout PROBE_TIMEOUT (a fresh client learns the new
# leader from the survivors' topology; a probe that times out is followed by the next).
# The time is from just before the kill to the exit of the first probe that succeeded,
# so it includes the probe's own start-up (a few ms) and is resolved to about one
# probe timeout (PROBE_TIMEOUT, 0.1 s by default). Then the killed node is restarted
# (`scripts/cluster.sh up`, which starts only the nodes that are down).
#
# The background load is corekv-bench (puts of 256-byte values over 10k keys, closed loop,
# LOAD_INFLIGHT in flight, bounded by a duration that covers every round; requests that
# fail during a failover count as its errors), or, without target/release/corekv-bench,
# a loop of corekvctl puts bounded in count.
#
# Output: one line per round, then the last line
#   failover: median <ms> ms over <n> rounds (min <ms>, max <ms>)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

ROUNDS=10
GROUP=0
PROBE_TIMEOUT=0.1
LAG_MAX=200
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS=$2; shift ;;
        --group) GROUP=$2; shift ;;
        --probe-timeout) PROBE_TIMEOUT=$2; shift ;;
        -h|--help) sed -n '2,31p' "$0"; exit 0 ;;
        *) echo "failover: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
[ "$ROUNDS" -ge 1 ] || { echo "failover: --rounds must be at least 1" >&2; exit 2; }

export SHARDS=${SHARDS:-2}
export BASE_PORT=${BASE_PORT:-27500}
[ "$GROUP" -lt "$SHARDS" ] || { echo "failover: --group $GROUP of $SHARDS shards" >&2; exit 2; }
LOAD_INFLIGHT=${LOAD_INFLIGHT:-16}
log() { echo "[failover $(date +%H:%M:%S)] $*" >&2; }

if [ ! -x target/release/corekv ] || [ ! -x target/release/corekvctl ]; then
    log "building corekv and corekvctl (release)"
    cargo build --release -q --bin corekv --bin corekvctl
fi
CTL=$ROOT/target/release/corekvctl
BENCH=$ROOT/target/release/corekv-bench
export COREKV=$ROOT/target/release/corekv

OWN_DIR=0
if [ -z "${CLUSTER_DIR:-}" ]; then
    CLUSTER_DIR=$(mktemp -d /tmp/corekv-failover.XXXXXX)
    OWN_DIR=1
fi
export CLUSTER_DIR
LOAD_PID=
cleanup() {
    set +e
    if [ -n "$LOAD_PID" ]; then
        kill "$LOAD_PID" 2>/dev/null
        wait "$LOAD_PID" 2>/dev/null
    fi
    scripts/cluster.sh down >/dev/null 2>&1
    [ "$OWN_DIR" = 1 ] && rm -rf "$CLUSTER_DIR"
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# cluster.sh waits for its ports to listen: they must not be someone else's already.
for n in 1 2 3; do
    for p in $((BASE_PORT + 100 * n)) $((BASE_PORT + 100 * n + 50)); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            log "port $p is in use: choose another BASE_PORT"
            exit 1
        fi
    done
done
ENDPOINTS=$(scripts/cluster.sh up 3 | tail -n 1)
log "cluster up: $ENDPOINTS (data in $CLUSTER_DIR)"
endpoint_of() { echo "127.0.0.1:$((BASE_PORT + 100 * $1))"; }

# `corekvctl status` rows as "node group role lag" (unreachable nodes: role unreachable).
status_rows() {
    "$CTL" --endpoints "$1" --timeout 2 status 2>/dev/null |
        awk -F'|' 'NF > 10 && $2 ~ /^ *[0-9]+ *$/ {
            gsub(/ /, "", $2); gsub(/ /, "", $4); gsub(/ /, "", $5); gsub(/ /, "", $10)
            print $2, $4, $5, $10 }'
}

# Waits until every node answers, every group has a leader and no replica lags more than
# LAG_MAX; prints group GROUP's leader (node number). Bounded: 60 s.
healthy_leader() {
    local deadline=$((SECONDS + 60)) rows
    while [ "$SECONDS" -lt "$deadline" ]; do
        rows=$(status_rows "$ENDPOINTS" || true)
        if [ "$(echo "$rows" | grep -c .)" -eq $((3 * SHARDS)) ] &&
            ! echo "$rows" | grep -q unreachable &&
            [ "$(echo "$rows" | awk '$3 == "leader"' | wc -l)" -eq "$SHARDS" ] &&
            echo "$rows" | awk -v m="$LAG_MAX" '$4 > m { bad = 1 } END { exit bad }'; then
            echo "$rows" | awk -v g="$GROUP" '$2 == g && $3 == "leader" { print $1 }'
            return 0
        fi
        sleep 0.2
    done
    log "the cluster did not become healthy in 60 s; last status:"
    "$CTL" --endpoints "$ENDPOINTS" --timeout 2 status >&2 || true
    return 1
}

# A key of group GROUP (the put's JSON header names the group).
KEY=
for i in $(seq 0 999); do
    g=$("$CTL" --endpoints "$ENDPOINTS" put "failover-probe-$i" x -w json |
        sed -n 's/.*"group":\([0-9]*\).*/\1/p')
    if [ "$g" = "$GROUP" ]; then KEY=failover-probe-$i; break; fi
done
[ -n "$KEY" ] || { log "no key of group $GROUP among 1000 tries"; exit 1; }
log "probe key $KEY (group $GROUP)"

# Background load, bounded in time (and in count for the fallback).
LOAD_SECS=$((ROUNDS * 40 + 60))
if [ -x "$BENCH" ]; then
    "$BENCH" --target corekv --endpoints "$ENDPOINTS" --workload put --inflight "$LOAD_INFLIGHT" \
        --conns 4 --duration "${LOAD_SECS}s" --warmup 0s --keys 10000 --timeout 2s \
        --progress 1s >"$CLUSTER_DIR/load.out" 2>&1 &
    LOAD_PID=$!
    log "load: corekv-bench put x$LOAD_INFLIGHT for at most ${LOAD_SECS}s"
else
    (
        for i in $(seq 1 200000); do
            [ "$SECONDS" -lt "$LOAD_SECS" ] || break
            "$CTL" --endpoints "$ENDPOINTS" --timeout 2 put "load-$((i % 10000))" "v$i" \
                >/dev/null 2>&1 || true
        done
    ) &
    LOAD_PID=$!
    log "load: a loop of corekvctl puts (no $BENCH)"
fi

now_ns() { date +%s%N; }
TIMES=()
for round in $(seq 1 "$ROUNDS"); do
    leader=$(healthy_leader)
    [ -n "$leader" ] || { log "round $round: group $GROUP has no leader"; exit 1; }
    survivors=""
    for n in 1 2 3; do
        [ "$n" = "$leader" ] || survivors+="${survivors:+,}$(endpoint_of "$n")"
    done
    pid=$(cat "$CLUSTER_DIR/n$leader.pid")
    t0=$(now_ns)
    kill -KILL "$pid"
    ok=0
    probes=0
    while [ $(($(now_ns) - t0)) -lt 30000000000 ]; do
        probes=$((probes + 1))
        if "$CTL" --endpoints "$survivors" --timeout "$PROBE_TIMEOUT" put "$KEY" "round-$round" \
            >/dev/null 2>&1; then
            ok=1
            break
        fi
    done
    t1=$(now_ns)
    [ "$ok" = 1 ] || { log "round $round: no write to group $GROUP within 30 s of the kill"; exit 1; }
    ms=$(((t1 - t0) / 1000000))
    # Gone before its restart (it is not our child: cluster.sh started it).
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null && [ "$(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null)" != Z ] ||
            break
        sleep 0.05
    done
    TIMES+=("$ms")
    new=$(status_rows "$survivors" | awk -v g="$GROUP" '$2 == g && $3 == "leader" { print $1 }' | head -n 1)
    echo "round $round: SIGKILL of n$leader (leader of group $GROUP): first write after $ms ms ($probes probes; new leader n${new:-?})"
    scripts/cluster.sh up 3 >/dev/null 2>&1
done

if [ -x "$BENCH" ]; then
    log "load, last progress line: $(grep -v '^$' "$CLUSTER_DIR/load.out" | tail -n 1)"
fi
printf '%s\n' "${TIMES[@]}" | sort -n | awk '
    { t[NR] = $1 }
    END {
        med = (NR % 2) ? t[(NR + 1) / 2] : (t[NR / 2] + t[NR / 2 + 1]) / 2
        printf "failover: median %d ms over %d rounds (min %d, max %d)\n", med, NR, t[1], t[NR]
    }'
