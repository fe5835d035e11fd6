#!/usr/bin/env bash
# WAL benchmark: raw O_DIRECT write+fdatasync limit vs the WAL, batch sizes 1..1024,
# 1..1024 concurrent appenders, fallocate vs zero-fill, fdatasync vs O_DSYNC.
# Usage: scripts/wal-bench.sh [DIR]   (DIR must not be tmpfs; default /var/tmp/corekv-wal-bench)
# WAL_BENCH_SECS=n sets the length of each measurement (default 1.5).
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-/var/tmp/corekv-wal-bench}"
mkdir -p "$dir"
echo "file system of $dir: $(stat -f -c %T "$dir")"
cargo build --release --bin wal-bench
exec target/release/wal-bench "$dir"
