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
echo "== clippy"; cargo clippy --all-targets --locked -- -D warnings
echo "== tests";  cargo test --locked -- --test-threads "${TOKENGATE_TEST_THREADS:-4}"
