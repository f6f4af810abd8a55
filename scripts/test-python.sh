#!/usr/bin/env bash
# The pytest suite against the installed package (the venv of scripts/test.sh). Extra arguments go to
# pytest, e.g. `scripts/test-python.sh -m "not slow"` for a quick run, `-k ncu` for one area.
# A test whose tool (nsys 2022.4, Chromium, xxh128sum) is missing fails; TRACEFORGE_ALLOW_SKIPS=1 skips it
# instead, for local runs only. Usage: scripts/test-python.sh [PYTEST ARGS]
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${TRACEFORGE_VENV:-.venv}"
exec "${venv}/bin/python" -m pytest -q "$@"
