#!/usr/bin/env bash
# The one command that runs every test: installs what the tests need, checks formatting
# and lints (clippy --all-targets also type-checks the benchmarks and examples), and runs
# unit and integration tests. Benchmarks are measured separately (`cargo bench`,
# bench/run.sh), never asserted here; building them in release would double CI's
# compile time.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh

echo "== fmt";    cargo fmt --all -- --check
cargo fmt --manifest-path bench/loadgen/Cargo.toml -- --check
echo "== clippy"; cargo clippy --all-targets --locked -- -D warnings
# bench/loadgen, the benchmark's load generator: its own crate and workspace.
echo "== loadgen"
cargo clippy --locked --manifest-path bench/loadgen/Cargo.toml --all-targets -- -D warnings
cargo test --locked --manifest-path bench/loadgen/Cargo.toml
echo "== tests";  cargo test --locked -- --test-threads "${TOKENGATE_TEST_THREADS:-4}"
