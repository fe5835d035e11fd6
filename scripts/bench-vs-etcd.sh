#!/usr/bin/env bash
# Puts corekv beside etcd on this machine under the same workload, and writes a report.
#
# usage: scripts/bench-vs-etcd.sh [--quick] [--rounds N] [--duration SECS] [--warmup SECS]
#                                 [--workloads W,..] [--inflight N,..] [--keys N]
# env:   TARGETS="corekv etcd" targets to compare, alternating in this order
#        TOPOLOGIES="single cluster"
#        SERVER_CPUS / CLIENT_CPUS   taskset CPU lists (default: split the machine)
#        BENCH_TMP=/var/tmp    where the servers' data dirs go (must be a real disk)
#
# For every round, topology and target (targets alternate A B A B), the script starts
# fresh servers pinned to SERVER_CPUS, fills the key space, runs every workload at every
# in-flight count (closed loop) with corekv-bench pinned to CLIENT_CPUS, and stops the
# servers. Then `corekv-bench report` takes medians over rounds, and plot_cdf.py draws a
# latency CDF per workload. Output: bench/results/<date>-<host>.{md,jsonl} and PNGs.
# The last line printed is the corekv/etcd ratio line.
#
# Adding a target X: write start_X_single and start_X_cluster (each starts servers in
# the directory given, appends their pids to PIDS and sets ENDPOINTS), and teach
# corekv-bench `--target X`. Nothing else changes.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

QUICK=0
ROUNDS=3
DURATION=5
WARMUP=1
WORKLOADS=put,get,get-serializable,range,mix,cas
INFLIGHT=1,64,256
KEYS=100000
VALUE_SIZE=256
CONNS=16
TARGETS=${TARGETS:-"corekv etcd"}
TOPOLOGIES=${TOPOLOGIES:-"single cluster"}
BASE_PORT=${BASE_PORT:-23790}

while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --rounds) ROUNDS=$2; shift ;;
        --duration) DURATION=$2; shift ;;
        --warmup) WARMUP=$2; shift ;;
        --workloads) WORKLOADS=$2; shift ;;
        --inflight) INFLIGHT=$2; shift ;;
        --keys) KEYS=$2; shift ;;
        -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
        *) echo "bench-vs-etcd: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
if [ "$QUICK" = 1 ]; then
    DURATION=2
    WARMUP=0.5
    WORKLOADS=put,get
    KEYS=10000
fi
[ "$ROUNDS" -ge 1 ] || { echo "bench-vs-etcd: --rounds must be at least 1" >&2; exit 2; }

log() { echo "[bench-vs-etcd $(date +%H:%M:%S)] $*" >&2; }

# --- tools -------------------------------------------------------------------------
APT_UPDATED=0
apt_install() {
    if [ "$APT_UPDATED" = 0 ]; then
        log "apt-get update"
        timeout 300 apt-get update -qq
        APT_UPDATED=1
    fi
    log "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq "$@" >/dev/null
}
command -v etcd >/dev/null || apt_install etcd-server
command -v etcdctl >/dev/null || apt_install etcd-client
command -v protoc >/dev/null || apt_install protobuf-compiler
command -v taskset >/dev/null || apt_install util-linux
export ETCDCTL_API=3

log "building corekv and corekv-bench (release)"
timeout 1800 cargo build --release -q --bin corekv
timeout 1800 cargo build --release -q -p corekv-bench
BENCH=$ROOT/target/release/corekv-bench

# --- CPUs: servers and client on disjoint CPUs when there are at least two ---------
NCPU=$(nproc)
if [ -z "${SERVER_CPUS:-}" ] || [ -z "${CLIENT_CPUS:-}" ]; then
    if [ "$NCPU" -ge 4 ]; then
        SERVER_CPUS=$((NCPU / 2))-$((NCPU - 1))
        CLIENT_CPUS=0-$((NCPU / 2 - 1))
    elif [ "$NCPU" -eq 3 ]; then
        SERVER_CPUS=1-2
        CLIENT_CPUS=0
    elif [ "$NCPU" -eq 2 ]; then
        SERVER_CPUS=1
        CLIENT_CPUS=0
    else
        SERVER_CPUS=0
        CLIENT_CPUS=0
    fi
fi
CLIENT_THREADS=$(taskset -c "$CLIENT_CPUS" nproc)

# --- state and cleanup -------------------------------------------------------------
WORK=$(mktemp -d "${BENCH_TMP:-/var/tmp}/corekv-bench.XXXXXX")
PIDS=()
BENCH_PID=
ENDPOINTS=
JSONL=$WORK/runs.jsonl
COMMANDS=$WORK/commands.txt
SERVER_CPU_LOG=$WORK/server-cpu.txt
: >"$JSONL" >"$COMMANDS" >"$SERVER_CPU_LOG"

stop_servers() {
    local pid i
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    PIDS=()
}
cleanup() {
    if [ -n "$BENCH_PID" ]; then
        kill "$BENCH_PID" 2>/dev/null || true
        wait "$BENCH_PID" 2>/dev/null || true
    fi
    stop_servers
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Records a command line for the report.
record_cmd() {
    printf '%q ' "$@" >>"$COMMANDS"
    echo >>"$COMMANDS"
}

# spawn LOG CMD...: records CMD, starts it in the background with output to LOG, and
# remembers its pid (taskset execs the server, so the pid is the server's).
spawn() {
    local out=$1
    shift
    record_cmd "$@"
    "$@" >"$out" 2>&1 &
    PIDS+=($!)
}

# CPU seconds (user + system) of the running servers, from /proc.
server_cpu_seconds() {
    local pid total=0 ticks
    ticks=$(getconf CLK_TCK)
    for pid in "${PIDS[@]}"; do
        if [ -r "/proc/$pid/stat" ]; then
            # Fields after the parenthesised command name: utime is 12th, stime 13th.
            total=$((total + $(sed 's/.*) //' "/proc/$pid/stat" | awk '{print $12 + $13}')))
        fi
    done
    awk -v t="$total" -v k="$ticks" 'BEGIN { printf "%.2f", t / k }'
}

# --- etcd --------------------------------------------------------------------------
wait_etcd() {
    local dir=$1 i
    for i in $(seq 1 120); do
        if timeout 5 etcdctl --endpoints "$ENDPOINTS" endpoint health >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.5
    done
    log "etcd at $ENDPOINTS did not become healthy in 60 s; its log:"
    tail -n 20 "$dir"/*.log >&2 || true
    exit 1
}

start_etcd_single() {
    local dir=$1 client=$((BASE_PORT)) peer=$((BASE_PORT + 10))
    mkdir -p "$dir"
    spawn "$dir/s1.log" taskset -c "$SERVER_CPUS" etcd --name s1 --data-dir "$dir/s1" \
        --listen-client-urls "http://127.0.0.1:$client" \
        --advertise-client-urls "http://127.0.0.1:$client" \
        --listen-peer-urls "http://127.0.0.1:$peer" \
        --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
        --initial-cluster "s1=http://127.0.0.1:$peer"
    ENDPOINTS=127.0.0.1:$client
    wait_etcd "$dir"
}

start_etcd_cluster() {
    local dir=$1 i cluster="" eps=""
    mkdir -p "$dir"
    for i in 1 2 3; do
        cluster+="${cluster:+,}n$i=http://127.0.0.1:$((BASE_PORT + 10 + i))"
        eps+="${eps:+,}127.0.0.1:$((BASE_PORT + i))"
    done
    for i in 1 2 3; do
        spawn "$dir/n$i.log" taskset -c "$SERVER_CPUS" etcd --name "n$i" --data-dir "$dir/n$i" \
            --listen-client-urls "http://127.0.0.1:$((BASE_PORT + i))" \
            --advertise-client-urls "http://127.0.0.1:$((BASE_PORT + i))" \
            --listen-peer-urls "http://127.0.0.1:$((BASE_PORT + 10 + i))" \
            --initial-advertise-peer-urls "http://127.0.0.1:$((BASE_PORT + 10 + i))" \
            --initial-cluster "$cluster" --initial-cluster-token corekv-bench \
            --initial-cluster-state new
    done
    ENDPOINTS=$eps
    wait_etcd "$dir"
}

# --- corekv ---------------------------------------------------------------------------
wait_port() {
    local port=$1 i
    for i in $(seq 1 120); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.5
    done
    log "nothing listens on 127.0.0.1:$port after 60 s"
    exit 1
}

start_corekv_single() {
    local dir=$1 port=$((BASE_PORT + 100))
    mkdir -p "$dir"
    spawn "$dir/corekv.log" taskset -c "$SERVER_CPUS" "$ROOT/target/release/corekv" \
        --data-dir "$dir/data" --listen-client "127.0.0.1:$port" \
        --shards "$(taskset -c "$SERVER_CPUS" nproc)" --cpu-pinning off
    ENDPOINTS=127.0.0.1:$port
    wait_port "$port"
}

start_corekv_cluster() {
    # Assumed interface (cluster.sh is being written elsewhere): it starts 3 nodes under
    # CLUSTER_DIR pinned to CPUS, prints the client endpoints (comma-separated) as its last
    # line and leaves one NAME.pid file per node there.
    local dir=$1
    mkdir -p "$dir"
    record_cmd env CLUSTER_DIR="$dir" CPUS="$SERVER_CPUS" scripts/cluster.sh up 3
    ENDPOINTS=$(CLUSTER_DIR="$dir" CPUS="$SERVER_CPUS" scripts/cluster.sh up 3 | tail -n 1)
    PIDS+=($(cat "$dir"/*.pid))
}

# --- one target, one topology, one round ---------------------------------------------
seconds_bound() {
    # Upper bound for one bench invocation: every run at most duration + warm-up + timeout,
    # plus the fill and connection set-up.
    local runs
    runs=$(( $(echo "$WORKLOADS" | tr ',' '\n' | wc -l) * $(echo "$INFLIGHT" | tr ',' '\n' | wc -l) ))
    awk -v r="$runs" -v d="$DURATION" -v w="$WARMUP" 'BEGIN { printf "%d", r * (d + w + 6) + 180 }'
}

bench_one() {
    local target=$1 topology=$2 round=$3
    local dir=$WORK/$target-$topology-$round cpu0 cpu1 t0 t1
    log "round $round: $target $topology"
    "start_${target}_${topology}" "$dir"
    cpu0=$(server_cpu_seconds)
    t0=$(date +%s.%N)
    local cmd=(timeout --foreground "$(seconds_bound)" taskset -c "$CLIENT_CPUS" "$BENCH" --target "$target"
        --endpoints "$ENDPOINTS" --workload "$WORKLOADS" --inflight "$INFLIGHT" --conns "$CONNS"
        --duration "${DURATION}s" --warmup "${WARMUP}s" --keys "$KEYS" --value-size "$VALUE_SIZE"
        --fill --client-threads "$CLIENT_THREADS" --label "topology=$topology"
        --label "round=$round" --json "$JSONL" --server-pids "$(IFS=,; echo "${PIDS[*]}")")
    record_cmd "${cmd[@]}"
    # In the background, so that a signal to this script runs its trap at once (bash
    # defers traps while a foreground command runs); --foreground keeps the bench in our
    # process group, so Ctrl-C reaches it too.
    "${cmd[@]}" >"$dir/bench-table.md" &
    BENCH_PID=$!
    wait "$BENCH_PID"
    BENCH_PID=
    cpu1=$(server_cpu_seconds)
    t1=$(date +%s.%N)
    awk -v t="$target" -v tp="$topology" -v r="$round" -v c0="$cpu0" -v c1="$cpu1" \
        -v t0="$t0" -v t1="$t1" 'BEGIN { printf "| %s | %s | %s | %.1f | %.1f | %.2f |\n",
        t, tp, r, c1 - c0, t1 - t0, (c1 - c0) / (t1 - t0) }' >>"$SERVER_CPU_LOG"
    stop_servers
    rm -rf "$dir"
}

START=$(date +%s)
for round in $(seq 1 "$ROUNDS"); do
    for topology in $TOPOLOGIES; do
        for target in $TARGETS; do
            bench_one "$target" "$topology" "$round"
        done
    done
done

# --- report ----------------------------------------------------------------------------
STAMP=$(date -u +%Y-%m-%d-%H%M)-$(hostname -s)
OUTDIR=$ROOT/bench/results
mkdir -p "$OUTDIR"
cp "$JSONL" "$OUTDIR/$STAMP.jsonl"
"$BENCH" report --input "$JSONL" --md "$WORK/table.md" --cdf "$WORK/cdf.json" --ratio-line \
    >"$WORK/ratio.txt"
RATIO=$(tail -n 1 "$WORK/ratio.txt")

VENV=$ROOT/target/bench-venv
if ! "$VENV/bin/python" -c 'import matplotlib' 2>/dev/null; then
    log "installing matplotlib into $VENV (PyPI)"
    python3 -m venv "$VENV"
    timeout 600 "$VENV/bin/pip" install -q matplotlib
fi
PLOTS=$(timeout 300 "$VENV/bin/python" scripts/plot_cdf.py "$WORK/cdf.json" "$OUTDIR/$STAMP")

ELAPSED=$(($(date +%s) - START))
{
    echo "# corekv vs etcd: $STAMP"
    echo
    echo "Medians over $ROUNDS rounds (targets alternated A B A B, fresh servers and data each"
    echo "round). Closed loop; $KEYS keys of 16 bytes, $VALUE_SIZE-byte values, uniform keys;"
    echo "${DURATION}s measured after ${WARMUP}s warm-up per run; $CONNS connections (fewer"
    echo "when fewer in flight). Latency in ms. **client busy** = client CPU seconds / wall"
    echo "seconds, in cores: near $CLIENT_THREADS (the client's CPUs) means the client, not the"
    echo "server, was the limit. **server CPU µs/op** = CPU time of all server processes"
    echo "(user + system, from /proc) during the measured phase / successful ops; the servers"
    echo "share CPUs $SERVER_CPUS. Runs took ${ELAPSED}s in all."
    echo
    cat "$WORK/table.md"
    echo
    echo '```'
    echo "$RATIO"
    echo '```'
    echo
    echo "## Server CPU (whole invocation: fill and every run)"
    echo
    echo "| target | topology | round | server CPU s | wall s | cores busy |"
    echo "|---|---|---|---|---|---|"
    cat "$SERVER_CPU_LOG"
    echo
    echo "## Latency CDFs"
    echo
    for p in $PLOTS; do echo "![$(basename "$p")]($(basename "$p"))"; done
    echo
    echo "## Machine and versions"
    echo
    echo "- host: $(hostname -s), $NCPU CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(uname -sr)"
    echo "- servers pinned to CPUs $SERVER_CPUS, client to CPUs $CLIENT_CPUS ($CLIENT_THREADS client threads)"
    echo "- data dirs under ${BENCH_TMP:-/var/tmp} ($(df -T "${BENCH_TMP:-/var/tmp}" | awk 'NR==2 {print $2}'))"
    echo "- etcd: $(etcd --version | head -n 1 | sed 's/etcd Version: //'); etcdctl: $(etcdctl version | head -n 1)"
    echo "- corekv-bench: git $(git rev-parse --short HEAD)$(git diff --quiet || echo '+dirty'), $(rustc --version)"
    echo "- matplotlib $("$VENV/bin/python" -c 'import matplotlib; print(matplotlib.__version__)')"
    echo "- raw runs (JSON lines with histograms): $STAMP.jsonl"
    echo
    echo "## Exact commands"
    echo
    echo '```'
    echo "scripts/bench-vs-etcd.sh $([ "$QUICK" = 1 ] && echo --quick) # TARGETS=\"$TARGETS\" TOPOLOGIES=\"$TOPOLOGIES\""
    sed "s#$WORK#\$WORK#g" "$COMMANDS"
    echo '```'
} >"$OUTDIR/$STAMP.md"

cat "$WORK/table.md"
log "report: bench/results/$STAMP.md (${ELAPSED}s of runs)"
echo "$RATIO"
