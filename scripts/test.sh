#!/usr/bin/env bash
# The one gate: formatting, lints and every test. CI runs this (see .ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
cargo test --all-targets
# The benchmark harness (its own crate, bench/) has unit tests too. Its etcd client
# compiles etcd's .proto files at build time, which needs protoc (Debian package
# protobuf-compiler, installed here if missing and possible).
if ! command -v protoc >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (timeout 300 apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq protobuf-compiler >/dev/null) ||
        echo "scripts/test.sh: installing protobuf-compiler failed" >&2
fi
if command -v protoc >/dev/null; then
    cargo clippy -p corekv-bench --all-targets -- -D warnings
    cargo test -p corekv-bench
else
    echo "scripts/test.sh: protoc is missing: the harness tests (bench/) did NOT run" >&2
fi
