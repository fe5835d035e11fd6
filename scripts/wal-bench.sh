#!/usr/bin/env bash
# WAL benchmark: raw O_DIRECT write+fdatasync limit vs the WAL, batch sizes 1..1024,
# 1..1024 concurrent appenders, fallocate vs zero-fill, fdatasync vs O_DSYNC.
# Usage: scripts/wal-bench.sh [DIR]   (DIR must not be tmpfs; default /var/tmp/corekv-wal-bench)
# WAL_BENCH_SECS=n: measured seconds per side of each comparison (default 1.5);
# WAL_BENCH_ROUNDS=n: interleaved raw/WAL rounds they are split into (default 20);
# WAL_BENCH_ONLY=prep,batch,concurrent, WAL_BENCH_SIZES=1,1024 and WAL_BENCH_MODES=dsync
# (or fdatasync) pick what runs; WAL_BENCH_RAW_FILES=n: raw rotates through n 64 MiB files
# instead of one (a diagnostic; the baseline is 1); WAL_BENCH_RAW_FILL=each|ahead|none: when
# raw fills its buffers (a diagnostic; the baseline is each, see src/bin/wal-bench.rs).
# See src/bin/wal-bench.rs for what "raw" is and why the comparison is fair.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-/var/tmp/corekv-wal-bench}"
mkdir -p "$dir"
echo "file system of $dir: $(stat -f -c %T "$dir")"
cargo build --release --bin wal-bench
exec target/release/wal-bench "$dir"
