#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests, the deterministic simulator
# (RUSK_SIM_SEEDS seeds, default 1000) and the end-to-end tests with real processes.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== tests (unit, simulator, end-to-end)"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
