#!/usr/bin/env bash
# Set up traceforge in ./.venv: its Python dependencies and the Rust extension (release build, abi3 wheel).
# Needs python3 (3.9+) with venv and pip, and a Rust toolchain (cargo). Usage: scripts/install.sh
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${TRACEFORGE_VENV:-.venv}"
[ -x "${venv}/bin/python" ] || "${PYTHON:-python3}" -m venv "${venv}"
"${venv}/bin/python" -m pip install -q --upgrade pip
MATURIN_PEP517_ARGS="--profile release" "${venv}/bin/python" -m pip install -q ".[plots,scale]"
echo "traceforge installed in ${venv}: $("${venv}/bin/traceforge" --version)"
