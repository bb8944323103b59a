#!/usr/bin/env bash
# The Python client in a virtualenv at the repository root: creates .venv (if missing), installs
# the pinned build and test dependencies (tests/python/requirements.txt), builds the rusk binary
# (target/release/rusk, linked as .venv/bin/rusk so that `rusk` is on the venv's PATH) and
# installs the `rusk` Python package (the pyo3 extension built by maturin, release mode, with
# python/rusk as an editable source). Idempotent: run it again after changing Rust code.
#
#   bash scripts/setup-python.sh && . .venv/bin/activate
#
# PYTHON picks the interpreter that creates the venv (default: python3, 3.9 or newer).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
python=${PYTHON:-python3}

if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv with $("$python" --version 2>&1)"
  "$python" -m venv .venv
fi
venv_python=$root/.venv/bin/python
"$venv_python" -c 'import sys; sys.exit(sys.version_info < (3, 9))' || {
  echo "setup-python: .venv has $("$venv_python" --version 2>&1); rusk needs Python 3.9+" >&2
  exit 1
}

echo "== pip install -r tests/python/requirements.txt"
"$venv_python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$venv_python" -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt

echo "== cargo build --release -p rusk"
cargo build --release --locked -p rusk
ln -sfn ../../target/release/rusk .venv/bin/rusk

echo "== maturin develop --release (rusk-py -> rusk._rusk)"
# PYO3_PYTHON: build the extension against the venv's interpreter.
VIRTUAL_ENV=$root/.venv PYO3_PYTHON=$venv_python PATH=$root/.venv/bin:$PATH \
  "$root/.venv/bin/maturin" develop --release --locked
"$venv_python" -c 'import rusk, rusk._rusk; print("== rusk", rusk.__version__, "installed; binary:", rusk.find_rusk_binary())'
