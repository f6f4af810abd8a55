#!/usr/bin/env bash
# The whole test suite, from a clean checkout: system test dependencies (Debian's nsys 2022.4 as the
# oracle, headless Chromium for the report), the package with its test extras (editable, release build),
# lints, `cargo test` for the Rust crates, then pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${TRACEFORGE_VENV:-.venv}"

bash scripts/install-nsys.sh
if [ -f scripts/install-chromium.sh ]; then bash scripts/install-chromium.sh; fi

[ -x "${venv}/bin/python" ] || "${PYTHON:-python3}" -m venv "${venv}"
"${venv}/bin/python" -m pip install -q --upgrade pip
MATURIN_PEP517_ARGS="--profile release" "${venv}/bin/python" -m pip install -q -e ".[test]"

"${venv}/bin/python" -m ruff check python tests bench runners
cargo fmt --all --check
cargo clippy --release --locked -p traceforge-core -p traceforge-synth --all-targets -- -D warnings
cargo test --release --locked -p traceforge-core -p traceforge-synth
"${venv}/bin/python" -m pytest -q "$@"
