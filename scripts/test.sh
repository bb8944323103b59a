#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests, the deterministic simulator
# (RUSK_SIM_SEEDS seeds, default 1000), the end-to-end tests with real processes (Rust), the
# dashboard in headless Chromium, and the Python client's tests (pytest).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== Python environment (.venv: the rusk package, the rusk binary, test dependencies)"
bash scripts/setup-python.sh
# The end-to-end Python tests and the executors use the venv's interpreter (it has cloudpickle).
export PATH="$PWD/.venv/bin:$PATH"
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== dashboard in a real browser (headless Chromium + playwright-core, tests/browser)"
# Needs Debian's chromium and `npm ci` in tests/browser (.ci/run installs both). Saves
# target/test-artifacts/dashboard.png.
if [ -x "${CHROMIUM:-/usr/bin/chromium}" ] && [ -d tests/browser/node_modules/playwright-core ]; then
  cargo test -p rusk --locked --test dashboard_browser -- --ignored
elif [ "${CI:-}" = "true" ]; then
  echo "chromium or tests/browser/node_modules missing: .ci/run should have installed them" >&2
  exit 1
else
  echo "skipped: apt-get install chromium; (cd tests/browser && npm ci)"
fi
echo "== tests (unit, simulator, end-to-end)"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
echo "== Python client tests (pytest, real clusters)"
.venv/bin/python -m pytest -q tests/python
