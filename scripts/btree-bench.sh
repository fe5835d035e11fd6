#!/usr/bin/env bash
# B+tree benchmark: corekv's btree vs LMDB (heed) and redb on the same data, one run.
# Usage: scripts/btree-bench.sh [N keys, default 1000000] [DIR, default under /tmp]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p corekv-bench --bin btree-bench
exec target/release/btree-bench "$@"
