#!/usr/bin/env bash
# The Rust tests of the whole workspace (release, the committed Cargo.lock). Extra arguments go to cargo test.
# PYO3_PYTHON points the binding crate's build at the venv's interpreter. Usage: scripts/test-rust.sh [ARGS]
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${TRACEFORGE_VENV:-.venv}"
case "${venv}" in /*) ;; *) venv="${PWD}/${venv}" ;; esac  # absolute: build scripts run elsewhere
export PYO3_PYTHON="${PYO3_PYTHON:-${venv}/bin/python}"
exec cargo test --workspace --release --locked "$@"
