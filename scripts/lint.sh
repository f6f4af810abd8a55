#!/usr/bin/env bash
# Every lint, Python and Rust: ruff (check and format --check), cargo fmt, clippy over the whole workspace
# with warnings as errors, mypy (configured in pyproject.toml) and mypy.stubtest of the extension's stub
# (python/traceforge/_core.pyi against the built traceforge._core). Runs them all, then fails if any failed.
# Needs the venv that scripts/test.sh sets up (TRACEFORGE_VENV, default .venv). Usage: scripts/lint.sh
set -uo pipefail
cd "$(dirname "$0")/.."
venv="${TRACEFORGE_VENV:-.venv}"
case "${venv}" in /*) ;; *) venv="${PWD}/${venv}" ;; esac  # absolute: build scripts run elsewhere
py="${venv}/bin/python"
export PYO3_PYTHON="${PYO3_PYTHON:-${py}}"

failed=()
step() {
    echo "lint: $*"
    "$@" || failed+=("$*")
}

step "${py}" -m ruff check python tests bench runners
step "${py}" -m ruff format --check python tests bench runners
step cargo fmt --all --check
step cargo clippy --workspace --all-targets --release --locked -- -D warnings
step "${py}" -m mypy
step "${py}" -m mypy.stubtest traceforge._core

if [ "${#failed[@]}" -ne 0 ]; then
    printf 'lint: FAILED: %s\n' "${failed[@]}" >&2
    exit 1
fi
echo "lint: all passed"
