#!/usr/bin/env bash
# The one gate: formatting, lints and every test. CI runs this (see .ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
cargo test --all-targets
