#!/usr/bin/env bash
# Puts corekv beside etcd on this machine under the same workload, and writes a report.
#
# usage: scripts/bench-vs-etcd.sh [--quick] [--rounds N] [--duration SECS] [--warmup SECS]
#                                 [--workloads W,..] [--inflight N,..] [--keys N]
#                                 [--open-rounds N] [--no-open]
# env:   TARGETS="corekv etcd" targets to compare, alternating in this order
#        TOPOLOGIES="single cluster"
#        SERVER_CPUS / CLIENT_CPUS   taskset CPU lists (default: split the machine)
#        COREKV_SHARDS  shards per corekv node [default: CPUs in SERVER_CPUS]
#        BENCH_TMP=/var/tmp    where the servers' data dirs go (must be a real disk)
#        BASE_PORT=32100       ports BASE_PORT..BASE_PORT+460 (above the integration
#                              tests' 20000-32000, below the ephemeral range)
#        OPEN_FACTOR=0.8       open loop offered rate = this x etcd's closed put256 ops/s
#
# Closed loop: for every round, topology and target (targets alternate A B A B), the
# script starts fresh servers pinned to SERVER_CPUS (single: one etcd / one corekv node;
# cluster: three etcd members / three corekv nodes through scripts/cluster.sh, all on
# the same SERVER_CPUS), fills the key space, runs every workload at every in-flight
# count with corekv-bench pinned to CLIENT_CPUS, and stops the servers.
# Open loop (when put ran at 256 in flight): for every topology, the offered rate is
# OPEN_FACTOR x etcd's median closed-loop put throughput at 256 in flight (its best
# sustainable rate, with headroom); both targets then run puts open-loop at that rate on
# fresh servers (latency from the intended send time), alternating, --open-rounds times.
# Then `corekv-bench report` takes medians over rounds (and lists the put and get rows at
# 256 in flight round by round, with each round's ratio), and plot_cdf.py draws a latency
# CDF per workload. Output: bench/results/<date>-<host>.{md,jsonl} and PNGs. The last
# lines printed are the open-loop p99 comparisons and then the corekv/etcd ratio line.
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
OPEN=1
OPEN_ROUNDS=
OPEN_DURATION=5
OPEN_WARMUP=1
OPEN_INFLIGHT=1024
OPEN_FACTOR=${OPEN_FACTOR:-0.8}
TARGETS=${TARGETS:-"corekv etcd"}
TOPOLOGIES=${TOPOLOGIES:-"single cluster"}
BASE_PORT=${BASE_PORT:-32100}

while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --rounds) ROUNDS=$2; shift ;;
        --duration) DURATION=$2; shift ;;
        --warmup) WARMUP=$2; shift ;;
        --workloads) WORKLOADS=$2; shift ;;
        --inflight) INFLIGHT=$2; shift ;;
        --keys) KEYS=$2; shift ;;
        --open-rounds) OPEN_ROUNDS=$2; shift ;;
        --no-open) OPEN=0 ;;
        -h|--help) sed -n '2,34p' "$0"; exit 0 ;;
        *) echo "bench-vs-etcd: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
if [ "$QUICK" = 1 ]; then
    # The targets' rows only (put and linearizable get at 1 and 256 in flight), short
    # runs, one open-loop round: under 4 minutes on a 2-core machine.
    DURATION=1
    WARMUP=0.5
    WORKLOADS=put,get
    INFLIGHT=1,256
    KEYS=5000
    OPEN_DURATION=2
    OPEN_WARMUP=0.5
    OPEN_ROUNDS=${OPEN_ROUNDS:-1}
fi
OPEN_ROUNDS=${OPEN_ROUNDS:-$ROUNDS}
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
COREKV_SHARDS=${COREKV_SHARDS:-$(taskset -c "$SERVER_CPUS" nproc)}

# Every port this script listens on must be free (another run, a test, a server left
# behind would otherwise be measured instead).
for port in $(seq "$BASE_PORT" $((BASE_PORT + 460))); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "bench-vs-etcd: something already listens on 127.0.0.1:$port (set BASE_PORT)" >&2
        exit 1
    fi
done

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
    local dir=$1 port=$((BASE_PORT + 100)) s
    mkdir -p "$dir"
    spawn "$dir/corekv.log" taskset -c "$SERVER_CPUS" "$ROOT/target/release/corekv" \
        --data-dir "$dir/data" --listen-client "127.0.0.1:$port" \
        --listen-peer "127.0.0.1:$((port + 50))" \
        --shards "$COREKV_SHARDS" --cpu-pinning off
    ENDPOINTS=127.0.0.1:$port
    for s in $(seq 0 $((COREKV_SHARDS - 1))); do wait_port $((port + s)); done
}

# Three nodes through scripts/cluster.sh (node i: clients on BASE_PORT+100+100*i, peers
# 50 above), shards unpinned, every node on SERVER_CPUS. It prints the client endpoints
# (comma-separated) as its last line and leaves one n<i>.pid file per node in the
# directory; group s's leader prefers node s mod 3, so with several shards the leaders
# are spread over the nodes and the client talks to all of them.
start_corekv_cluster() {
    local dir=$1 pid
    mkdir -p "$dir"
    local cmd=(env CLUSTER_DIR="$dir" CPUS="$SERVER_CPUS" SHARDS="$COREKV_SHARDS"
        BASE_PORT=$((BASE_PORT + 100)) COREKV="$ROOT/target/release/corekv"
        scripts/cluster.sh up 3)
    record_cmd "${cmd[@]}"
    if ! ENDPOINTS=$("${cmd[@]}" 2>"$dir/cluster-sh.log" | tail -n 1); then
        log "scripts/cluster.sh up 3 failed:"
        tail -n 20 "$dir/cluster-sh.log" "$dir"/n*.log >&2 || true
        for pid in $(cat "$dir"/n*.pid 2>/dev/null); do PIDS+=("$pid"); done
        exit 1
    fi
    for pid in $(cat "$dir"/n*.pid); do PIDS+=("$pid"); done
}

# --- one target, one topology, one round ---------------------------------------------
seconds_bound() {
    # Upper bound for one bench invocation: every run at most duration + warm-up + timeout,
    # plus the fill and connection set-up.
    local runs
    runs=$(( $(echo "$WORKLOADS" | tr ',' '\n' | wc -l) * $(echo "$INFLIGHT" | tr ',' '\n' | wc -l) ))
    awk -v r="$runs" -v d="$DURATION" -v w="$WARMUP" 'BEGIN { printf "%d", r * (d + w + 6) + 180 }'
}

# bench_one TARGET TOPOLOGY ROUND [open RATE]: one server start, one corekv-bench
# invocation (closed loop: fill, then every workload at every in-flight count; open: puts
# at RATE ops/s), one stop.
bench_one() {
    local target=$1 topology=$2 round=$3 mode=${4:-closed} rate=${5:-}
    local dir=$WORK/$target-$topology-$round-$mode cpu0 cpu1 t0 t1
    log "round $round: $target $topology $mode${rate:+ at $rate ops/s}"
    "start_${target}_${topology}" "$dir"
    cpu0=$(server_cpu_seconds)
    t0=$(date +%s.%N)
    local load
    if [ "$mode" = open ]; then
        load=(--workload put --mode open --rate "$rate" --inflight "$OPEN_INFLIGHT"
            --duration "${OPEN_DURATION}s" --warmup "${OPEN_WARMUP}s"
            --timeout "$(awk -v d="$OPEN_DURATION" 'BEGIN { print d + 5 }')s")
    else
        load=(--workload "$WORKLOADS" --inflight "$INFLIGHT" --duration "${DURATION}s"
            --warmup "${WARMUP}s" --fill)
    fi
    local cmd=(timeout --foreground "$(seconds_bound)" taskset -c "$CLIENT_CPUS" "$BENCH" --target "$target"
        --endpoints "$ENDPOINTS" "${load[@]}" --conns "$CONNS" --keys "$KEYS" --value-size "$VALUE_SIZE"
        --client-threads "$CLIENT_THREADS" --label "topology=$topology"
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
        -v t0="$t0" -v t1="$t1" -v m="$mode" 'BEGIN { printf "| %s | %s | %s | %s | %.1f | %.1f | %.2f |\n",
        t, tp, m, r, c1 - c0, t1 - t0, (c1 - c0) / (t1 - t0) }' >>"$SERVER_CPU_LOG"
    stop_servers
    rm -rf "$dir"
}

START=$(date +%s)
log "closed loop: $ROUNDS rounds x topologies ($TOPOLOGIES) x targets ($TARGETS); corekv: $COREKV_SHARDS shards per node"
for round in $(seq 1 "$ROUNDS"); do
    for topology in $TOPOLOGIES; do
        for target in $TARGETS; do
            bench_one "$target" "$topology" "$round"
        done
    done
done

OPEN_RATES=
if [ "$OPEN" = 1 ] && [ "$OPEN_ROUNDS" -ge 1 ] && echo ",$WORKLOADS," | grep -q ',put,' \
    && echo ",$INFLIGHT," | grep -q ',256,'; then
    for topology in $TOPOLOGIES; do
        if ! etcd_put=$("$BENCH" report --input "$JSONL" --median-ops "put:$topology:256:etcd"); then
            log "open loop: no etcd put256 runs in $topology; skipped"
            continue
        fi
        rate=$(awk -v x="$etcd_put" -v f="$OPEN_FACTOR" 'BEGIN { printf "%d", x * f }')
        OPEN_RATES+="${OPEN_RATES:+, }$topology: $rate ops/s ($OPEN_FACTOR x $etcd_put)"
        [ "$rate" -ge 1 ] || { log "open loop: etcd's put256 rate in $topology is 0; skipped"; continue; }
        for round in $(seq 1 "$OPEN_ROUNDS"); do
            for target in $TARGETS; do
                bench_one "$target" "$topology" "$round" open "$rate"
            done
        done
    done
fi

# --- report ----------------------------------------------------------------------------
STAMP=$(date -u +%Y-%m-%d-%H%M)-$(hostname -s)
OUTDIR=$ROOT/bench/results
mkdir -p "$OUTDIR"
cp "$JSONL" "$OUTDIR/$STAMP.jsonl"
"$BENCH" report --input "$JSONL" --md "$WORK/table.md" --cdf "$WORK/cdf.json" --ratio-line \
    >"$WORK/ratio.txt"
RATIO=$(tail -n 1 "$WORK/ratio.txt")
OPEN_LINES=$(grep '^open ' "$WORK/ratio.txt" || true)

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
    echo "round). **single**: one etcd member / one corekv node; **cluster**: three etcd members /"
    echo "three corekv nodes (scripts/cluster.sh; raft group s led by node s mod 3) on 127.0.0.1;"
    echo "corekv nodes run $COREKV_SHARDS shard(s) each (one per server CPU unless COREKV_SHARDS is"
    echo "set), unpinned; every server process is pinned to CPUs $SERVER_CPUS."
    echo "Closed loop: $KEYS keys of 16 bytes, $VALUE_SIZE-byte values, uniform keys;"
    echo "${DURATION}s measured after ${WARMUP}s warm-up per run; $CONNS connections (fewer"
    echo "when fewer in flight; corekv's share min(2, client CPUs) client threads). Latency in ms."
    echo "The client's threads run under SCHED_BATCH for both targets (corekv-bench"
    echo "\`--client-sched batch\`): its workers and I/O threads share the client CPU and hand"
    echo "each other work; under the default policy every hand-off was a context switch."
    echo "**client busy** = client CPU seconds / wall seconds, in cores: near $CLIENT_THREADS (the"
    echo "client's CPUs: $CLIENT_CPUS) means the client, not the server, was the limit."
    echo "**client CPU µs/op** = client process CPU time / successful ops (its cost per request)."
    echo "**server CPU µs/op** = CPU time of all server processes (user + system, from /proc)"
    echo "during the measured phase / successful ops. Runs took ${ELAPSED}s in all."
    echo
    cat "$WORK/table.md"
    echo
    echo "## Open loop"
    echo
    if [ -n "$OPEN_RATES" ]; then
        echo "Puts at a fixed offered rate of $OPEN_FACTOR x etcd's median closed-loop put throughput"
        echo "at 256 in flight (its best sustainable rate, with headroom) — $OPEN_RATES —"
        echo "${OPEN_DURATION}s after ${OPEN_WARMUP}s warm-up, up to $OPEN_INFLIGHT requests in flight,"
        echo "latency from each request's intended send time (no coordinated omission); medians"
        echo "over $OPEN_ROUNDS round(s). Rows with mode **open** in the table above; \"unsent\" = due"
        echo "but never sent because all $OPEN_INFLIGHT were in flight."
        echo
        echo '```'
        echo "$OPEN_LINES"
        echo '```'
    else
        echo "Not run (needs put at 256 in flight, and not --no-open)."
    fi
    echo
    echo "## Ratios (corekv / etcd ops/s, medians)"
    echo
    echo '```'
    echo "$RATIO"
    echo '```'
    echo
    echo "## Server CPU (whole invocation: start-up, fill and every run)"
    echo
    echo "| target | topology | mode | round | server CPU s | wall s | cores busy |"
    echo "|---|---|---|---|---|---|---|"
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
[ -n "$OPEN_LINES" ] && echo "$OPEN_LINES"
echo "$RATIO"
