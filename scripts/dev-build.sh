#!/usr/bin/env bash
# Rebuild the Rust extension into the development virtualenv (.venv), one build at a time
# (several people and agents share this checkout; cargo and maturin must not race).
set -euo pipefail
cd "$(dirname "$0")/.."
export VIRTUAL_ENV="$PWD/.venv" PATH="$PWD/.venv/bin:$PATH"
exec flock /tmp/traceforge-build.lock maturin develop --release --skip-install -q "$@"
