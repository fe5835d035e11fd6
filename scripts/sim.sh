#!/usr/bin/env bash
# Runs the deterministic Raft simulator in release mode.
#   scripts/sim.sh --seeds N [--start S]   run N seeds
#   scripts/sim.sh --seed S                replay one seed (what a failure prints)
#   scripts/sim.sh --minutes M             run consecutive seeds for M minutes
# Options: --profile mixed|stormy|partitions, --nodes 3|5.
# Last line: "sim: <seeds> seeds, <ops> client ops, <violations> violations"; exit 1 on
# any violation.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin corekv-sim
exec target/release/corekv-sim "$@"
