#!/usr/bin/env bash
# scripts/shard-scaling.sh: how one corekv node's throughput grows with its shard count
# (the thread-per-core claim: shard s on CPU s, nothing shared on the hot path).
#
# usage: scripts/shard-scaling.sh [--shards 1,2,4,8,16] [--workloads put,get]
#                                 [--rounds 2] [--duration 5s] [--inflight-per-shard 256]
#                                 [--keys 100000] [--rate-per-shard OPS] [--pinning on|off]
#                                 [--client-from CPU] [--server-cpus LIST]
# env:   BIN_DIR    folder holding prebuilt `corekv` and `corekv-bench` (default: build
#                   them in release here)
#        DATA_ROOT  where the data directories go; it must allow O_DIRECT, so not a
#                   tmpfs (default /var/tmp)
#        OUT_DIR    where runs.jsonl and scaling.md are written (default: a new folder
#                   under DATA_ROOT, printed at the end)
#
# CPU layout, the same for every shard count so that the load generator's capacity does
# not change with it: the server's shard s is pinned to CPU s (`--cpu-pinning on`), the
# load generators run on the upper half of the machine's CPUs (`--client-from CPU`: on
# CPUs CPU..last instead), one `corekv-bench`
# process (2 client threads) per 2 of those CPUs, all started together and summed. A
# shard count above half the CPUs shares CPUs with the load generators; such rows are
# marked `shared` and measure the machine, not the server alone.
#
# Each (round, shard count) starts a fresh server, fills the key space once, then runs
# each workload closed-loop with `--inflight-per-shard` x shards requests in flight in
# all. Rows: summed ops/s, ops/s per shard, server CPU cores busy and µs per op (from
# /proc over the first generator's measured phase), client cores busy, p50 (median of the
# generators') and p99 (worst generator's). `--rate-per-shard OPS` runs an open loop
# instead, offering OPS x shards ops/s in all (latency from the intended send times): the
# same load on every shard whatever their number, so its server µs/op shows whether a
# shard's cost per request grows with its neighbours (the closed loop's per-shard load
# falls when the load generators saturate). `--pinning off` runs the server unpinned
# (`--cpu-pinning off`) but confined to CPUs 0..n-1 with taskset, so its threads and its
# io_uring kernel workers may move between those CPUs; `--server-cpus LIST` (a taskset
# list) does the same on the CPUs named. The disk columns come from
# /proc/diskstats of the data directory's device over each load phase (warm-up
# included): completed writes per second, KiB per write, and the share of the phase the
# device had I/O in flight. Medians over rounds go to scaling.md; the
# last line is `scaling <workload>: <ops/s at fewest shards> -> <ops/s at most shards>
# (<ratio>x for <shards ratio>x shards)` for each workload. Every run is bounded by
# `timeout`; traffic stays on 127.0.0.1.
set -euo pipefail

SHARDS=1,2,4,8,16
WORKLOADS=put,get
ROUNDS=2
DURATION=5s
PER_SHARD=256
KEYS=100000
RATE_PER_SHARD=
PINNING=on
CLIENT_FROM=
SERVER_CPUS=
while [ $# -gt 0 ]; do
    case $1 in
    --shards) SHARDS=$2; shift 2 ;;
    --workloads) WORKLOADS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --inflight-per-shard) PER_SHARD=$2; shift 2 ;;
    --keys) KEYS=$2; shift 2 ;;
    --rate-per-shard) RATE_PER_SHARD=$2; shift 2 ;;
    --pinning) PINNING=$2; shift 2 ;;
    --client-from) CLIENT_FROM=$2; shift 2 ;;
    --server-cpus) SERVER_CPUS=$2; PINNING=off; shift 2 ;;
    -h | --help) sed -n '2,30p' "$0"; exit 0 ;;
    *) echo "shard-scaling: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
log() { echo "[shard-scaling $(date +%H:%M:%S)] $*" >&2; }

if [ -z "${BIN_DIR:-}" ]; then
    # corekv-bench compiles etcd's .proto files, which needs protoc.
    if ! command -v protoc >/dev/null; then
        log "apt-get install protobuf-compiler"
        (timeout 300 apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq protobuf-compiler >/dev/null) ||
            { echo "shard-scaling: protoc is missing and could not be installed" >&2; exit 1; }
    fi
    log "building corekv and corekv-bench (release)"
    (cd "$ROOT" && cargo build --release -q --bin corekv && cargo build --release -q -p corekv-bench)
    BIN_DIR=$ROOT/target/release
fi
for b in corekv corekv-bench; do
    [ -x "$BIN_DIR/$b" ] || { echo "shard-scaling: no executable $BIN_DIR/$b" >&2; exit 1; }
done
case $PINNING in on | off) ;; *) echo "shard-scaling: --pinning is on|off" >&2; exit 2 ;; esac
command -v python3 >/dev/null || { echo "shard-scaling: needs python3 for the summary" >&2; exit 1; }

NCPU=$(nproc)
HALF=$((NCPU / 2 > 0 ? NCPU / 2 : 1))
CLIENT_LO=${CLIENT_FROM:-$((NCPU - HALF))}
[ "$CLIENT_LO" -ge 0 ] && [ "$CLIENT_LO" -lt "$NCPU" ] ||
    { echo "shard-scaling: --client-from $CLIENT_LO is not in 0..$((NCPU - 1))" >&2; exit 2; }
NGEN=$(((NCPU - CLIENT_LO + 1) / 2))
IFS=, read -ra SHARD_LIST <<<"$SHARDS"
for n in "${SHARD_LIST[@]}"; do
    [ "$n" -ge 1 ] && [ "$n" -le "$NCPU" ] ||
        { echo "shard-scaling: shard count $n is not in 1..$NCPU (this machine's CPUs)" >&2; exit 2; }
done

DATA_ROOT=${DATA_ROOT:-/var/tmp}
WORK=$(mktemp -d "$DATA_ROOT/corekv-scaling.XXXXXX")
OUT_DIR=${OUT_DIR:-$WORK}
mkdir -p "$OUT_DIR"
RUNS=$OUT_DIR/runs.jsonl
: >"$RUNS"
DISK_TSV=$OUT_DIR/disk.tsv
: >"$DISK_TSV"
# The block device under the data directory, as /proc/diskstats names it (empty if none).
DISK=$(basename "$(findmnt -n -o SOURCE --target "$WORK" 2>/dev/null || true)")
grep -qw "$DISK" /proc/diskstats 2>/dev/null || DISK=
SERVER_PID=
cleanup() {
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
    rm -rf "$WORK/data"
}
trap cleanup EXIT

# Each run's time limit: the duration (250ms, 10s, 2m or plain seconds, as corekv-bench
# reads it) plus a minute.
BOUND=$(awk -v d="$DURATION" 'BEGIN { s = d + 0; if (d ~ /ms$/) s /= 1000; else if (d ~ /m$/) s *= 60
    printf "%d", s + 61 }')
PORT=27379
PEER=28379

# The CPUs of generator g: two of the upper half (one when the half is odd at its end).
gen_cpus() {
    local lo=$((CLIENT_LO + 2 * $1))
    local hi=$((lo + 1 < NCPU ? lo + 1 : lo))
    echo "$lo-$hi"
}

wait_ports() {
    local n=$1 s t
    for t in $(seq 1 200); do
        for s in $(seq 0 $((n - 1))); do
            (exec 3<>"/dev/tcp/127.0.0.1/$((PORT + s))") 2>/dev/null || { sleep 0.05; continue 2; }
        done
        return 0
    done
    echo "shard-scaling: the server did not open its $n client ports" >&2
    return 1
}

# Writes completed, sectors written and ms with I/O in flight of $DISK ("0 0 0" if none).
disk_sample() {
    [ -n "$DISK" ] || { echo "0 0 0"; return; }
    awk -v d="$DISK" '$3 == d { print $8, $10, $13 }' /proc/diskstats
}

# run_one SHARDS ROUND: one fresh server, a fill, then every workload.
run_one() {
    local n=$1 round=$2 wl g pids shared=no ep
    [ "$n" -gt "$CLIENT_LO" ] && shared=yes
    rm -rf "$WORK/data"
    local server=("$BIN_DIR/corekv")
    [ "$PINNING" = off ] && server=(taskset -c "${SERVER_CPUS:-0-$((n - 1))}" "$BIN_DIR/corekv")
    "${server[@]}" --data-dir "$WORK/data" --listen-client "127.0.0.1:$PORT" \
        --listen-peer "127.0.0.1:$PEER" --shards "$n" --cpu-pinning "$PINNING" \
        >"$WORK/server-$n-$round.log" 2>&1 &
    SERVER_PID=$!
    wait_ports "$n" || { cat "$WORK/server-$n-$round.log" >&2; exit 1; }
    ep=127.0.0.1:$PORT
    timeout "$BOUND" taskset -c "$CLIENT_LO-$((NCPU - 1))" "$BIN_DIR/corekv-bench" --target corekv \
        --endpoints "$ep" --workload put --inflight 256 --duration 1s --warmup 0s --fill \
        --keys "$KEYS" --progress 0 >"$WORK/fill.log" 2>&1
    IFS=, read -ra wls <<<"$WORKLOADS"
    for wl in "${wls[@]}"; do
        pids=()
        local d0 d1 t0 t1
        d0=$(disk_sample)
        t0=$(date +%s.%N)
        for g in $(seq 0 $((NGEN - 1))); do
            local extra=()
            [ "$g" -eq 0 ] && extra=(--server-pids "$SERVER_PID")
            [ -n "$RATE_PER_SHARD" ] && extra+=(--mode open --rate $((RATE_PER_SHARD * n / NGEN)))
            timeout "$BOUND" taskset -c "$(gen_cpus "$g")" "$BIN_DIR/corekv-bench" --target corekv \
                --endpoints "$ep" --workload "$wl" --inflight $((PER_SHARD * n / NGEN > 0 ? PER_SHARD * n / NGEN : 1)) \
                --conns 16 --client-threads 2 --duration "$DURATION" --warmup 1s \
                --keys "$KEYS" --seed $((g + 1)) --progress 0 --json "$WORK/gen-$g.jsonl" \
                --label shards="$n" --label round="$round" --label gen="$g" \
                --label shared="$shared" "${extra[@]}" >/dev/null 2>"$WORK/gen-$g.err" &
            pids+=($!)
        done
        for g in "${!pids[@]}"; do
            wait "${pids[$g]}" || { echo "shard-scaling: generator $g failed:" >&2; cat "$WORK/gen-$g.err" >&2; exit 1; }
        done
        d1=$(disk_sample)
        t1=$(date +%s.%N)
        echo "$wl $n $round $d0 $d1 $t0 $t1" | awk '{ w = $7 - $4; s = $8 - $5; t = $11 - $10
            printf "%s\t%s\t%s\t%.0f\t%.1f\t%.3f\n", $1, $2, $3, w / t, w ? s / 2 / w : 0, ($9 - $6) / 1000 / t }' >>"$DISK_TSV"
        for g in $(seq 0 $((NGEN - 1))); do
            cat "$WORK/gen-$g.jsonl" >>"$RUNS"
            rm -f "$WORK/gen-$g.jsonl"
        done
        log "shards $n round $round $wl: $(tail -n "$NGEN" "$RUNS" | python3 -c '
import json, sys
print(round(sum(json.loads(l)["ops_per_s"] for l in sys.stdin)), "ops/s")')"
    done
    kill "$SERVER_PID"
    wait "$SERVER_PID" || { echo "shard-scaling: the server did not exit cleanly:" >&2; tail "$WORK/server-$n-$round.log" >&2; exit 1; }
    SERVER_PID=
}

log "$NCPU CPUs; shards on CPUs 0..n-1, $NGEN load generators on CPUs $CLIENT_LO-$((NCPU - 1)); data in $WORK"
for round in $(seq 1 "$ROUNDS"); do
    for n in "${SHARD_LIST[@]}"; do
        run_one "$n" "$round"
    done
done

python3 - "$RUNS" "$OUT_DIR/scaling.md" "$NCPU" "$NGEN" "$DISK_TSV" "$PINNING" "$CLIENT_LO" "$SERVER_CPUS" <<'EOF'
import json, statistics, sys
from collections import defaultdict

runs, md_path, ncpu, ngen, disk_tsv, pinning, client_lo, server_cpus = sys.argv[1:9]
ncpu, ngen = int(ncpu), int(ngen)
disk = defaultdict(list)  # (workload, shards) -> (writes/s, KiB/write, busy share) per round
for line in open(disk_tsv):
    wl, n, _rnd, wps, kib, busy = line.split("\t")
    disk[(wl, int(n))].append((float(wps), float(kib), float(busy)))
groups = defaultdict(list)  # (workload, shards, round) -> records
for line in open(runs):
    r = json.loads(line)
    lab = r["labels"]
    groups[(r["workload"], int(lab["shards"]), lab["round"])].append(r)

rows = defaultdict(list)  # (workload, shards) -> per-round dicts
shared = {}
for (wl, n, rnd), recs in groups.items():
    ops = sum(r["ops_per_s"] for r in recs)
    first = next(r for r in recs if r["labels"]["gen"] == "0")
    scpu = first.get("server_cpu_s")
    rows[(wl, n)].append({
        "ops": ops,
        "server_cores": scpu / first["wall_s"] if scpu else float("nan"),
        "server_us": scpu / first["wall_s"] / ops * 1e6 if scpu and ops else float("nan"),
        "client_cores": sum(r["client_busy"] for r in recs),
        "p50": statistics.median(r["latency_us"]["p50"] for r in recs),
        "p99": max(r["latency_us"]["p99"] for r in recs),
        "errors": sum(r["errors"] + r["timeouts"] + r["missed"] for r in recs),
        "offered": sum(r["rate"] or 0 for r in recs),
    })
    shared[(wl, n)] = first["labels"]["shared"]

med = lambda xs: statistics.median(xs)
def disk_cols(wl, n):
    d = disk.get((wl, n))
    if not d or not any(x[0] for x in d):
        return "- | - | -"
    return " | ".join(f"{med([x[i] for x in d]):{f}}" for i, f in ((0, ".0f"), (1, ".1f"), (2, ".2f")))
offered = lambda xs: f"{med([x['offered'] for x in xs]):.0f}" if xs[0]["offered"] else "closed"
lines = [
    f"{ncpu} CPUs; " + ("shard s pinned to CPU s" if pinning == "on" else f"shards unpinned on CPUs {server_cpus or '0..n-1'}")
    + f"; {ngen} load generators on the last {ncpu - int(client_lo)} CPUs.",
    "Medians over rounds; p50 is the median generator's, p99 the worst generator's (µs);",
    "errors include timeouts and, in an open loop, ops never sent (missed).",
    "",
    "| workload | shards | shared CPUs | rounds | offered ops/s | ops/s | ops/s per shard | x 1st row | server cores busy | server µs/op | client cores busy | p50 µs | p99 µs | errors | disk writes/s | KiB/write | disk busy |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
]
last = []
for wl in sorted({k[0] for k in rows}):
    ns = sorted(n for (w, n) in rows if w == wl)
    base = med([x["ops"] for x in rows[(wl, ns[0])]])
    for n in ns:
        xs = rows[(wl, n)]
        ops = med([x["ops"] for x in xs])
        lines.append(
            f"| {wl} | {n} | {shared[(wl, n)]} | {len(xs)} | {offered(xs)} | {ops:.0f} | {ops / n:.0f} | {ops / base:.2f} | "
            f"{med([x['server_cores'] for x in xs]):.2f} | {med([x['server_us'] for x in xs]):.2f} | "
            f"{med([x['client_cores'] for x in xs]):.2f} | {med([x['p50'] for x in xs]):.0f} | "
            f"{med([x['p99'] for x in xs]):.0f} | {sum(x['errors'] for x in xs)} | {disk_cols(wl, n)} |")
    top = med([x["ops"] for x in rows[(wl, ns[-1])]])
    last.append(f"scaling {wl}: {base:.0f} -> {top:.0f} ops/s ({top / base:.2f}x for {ns[-1] / ns[0]:.0f}x shards)")
open(md_path, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
print()
print("\n".join(last))
EOF
log "results in $OUT_DIR (runs.jsonl, scaling.md)"
