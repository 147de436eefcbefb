#!/usr/bin/env bash
# The one command that runs every test: installs what the tests need, checks formatting
# and lints, runs unit and integration tests, and builds the benchmarks (benchmarks are
# measured separately, never asserted here).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh

echo "== fmt";    cargo fmt --all -- --check
echo "== clippy"; cargo clippy --all-targets --locked -- -D warnings
echo "== tests";  cargo test --locked -- --test-threads "${TOKENGATE_TEST_THREADS:-4}"
echo "== benches build"; cargo bench --locked --no-run
